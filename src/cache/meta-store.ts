// The mount's memory of the workspace tree: every entry it has seen, with
// attributes, digests, symlink targets and which directories it has listed
// completely; file manifests (chunk lists); the change-feed position. All of
// it persists in RocksDB so a remount serves the known tree at once, even
// with every node down; all of it is held in memory too, because a FUSE
// getattr/lookup must not wait ~30 µs for a database read.
import { isDir, isLnk, isReg, readAttr, sameAttr, writeAttr, type Attr } from '../content/attr.js';
import { HASH_BYTES, readChunkList, writeChunkList, type ChunkRef } from '../content/manifest.js';
import { Reader, Writer } from '../store/codec.js';
import { key, prefix, type Batch, type Store } from '../store/db.js';
import { baseName, joinRel, parentOf } from '../wire/rel-path.js';

export interface MetaEntry {
  attr: Attr;
  digest?: Buffer;
  /** Files of at most one chunk: the whole chunk list, inline. */
  chunks?: ChunkRef[];
  target?: string;
  /** Directories: every child is known (a name not among them does not exist). */
  listed?: boolean;
}

/** Same attributes and, for a file, the same content (symlinks: the same target); `b` brings nothing `a` lacks. The "listed" mark is not compared. */
export function sameEntry(a: MetaEntry, b: MetaEntry): boolean {
  if (!sameAttr(a.attr, b.attr) || a.target !== b.target || (b.chunks && !a.chunks)) return false;
  return a.digest && b.digest ? a.digest.equals(b.digest) : !a.digest && !b.digest;
}

/**
 * A directory listing asked of a node and not applied yet. The node answers
 * with its state when the request reached it; changes this mount makes or
 * hears of meanwhile are newer, and the answer must not undo them.
 */
export interface ListingTicket {
  readonly dir: string;
  /** Children that changed here since the listing was asked for: the answer is older for them. */
  readonly changed: Set<string>;
  /** The directory's own entry changed meanwhile. */
  self: boolean;
  /** Every listing was invalidated meanwhile (a RESET): the answer is applied, not trusted as complete. */
  invalidated: boolean;
}

function newTicket(dir: string): ListingTicket {
  return { dir, changed: new Set(), self: false, invalidated: false };
}

export interface Manifest {
  digest: Buffer;
  chunks: ChunkRef[];
}

function encodeEntry(e: MetaEntry): Buffer {
  const w = new Writer(96);
  writeAttr(w, e.attr);
  w.bool(!!e.listed);
  if (isReg(e.attr.mode)) {
    w.bytes(e.digest ?? Buffer.alloc(0));
    w.bool(!!e.chunks);
    if (e.chunks) writeChunkList(w, e.chunks);
  }
  else if (isLnk(e.attr.mode)) w.string(e.target ?? '');
  return w.done();
}

function decodeEntry(b: Buffer): MetaEntry {
  const r = new Reader(b);
  const attr = readAttr(r);
  const listed = r.bool();
  if (isReg(attr.mode)) {
    const d = r.bytes();
    const chunks = r.bool() ? readChunkList(r) : undefined;
    if (!d.length) return { attr, listed };
    return chunks ? { attr, listed, digest: Buffer.from(d), chunks } : { attr, listed, digest: Buffer.from(d) };
  }
  if (isLnk(attr.mode)) return { attr, listed, target: r.string() };
  return { attr, listed };
}

function encodeManifest(m: Manifest): Buffer {
  const w = new Writer(40 + m.chunks.length * 40);
  w.raw(m.digest);
  writeChunkList(w, m.chunks);
  return w.done();
}

function decodeManifest(b: Buffer): Manifest {
  const r = new Reader(b);
  const digest = Buffer.from(r.raw(HASH_BYTES));
  return { digest, chunks: readChunkList(r) };
}

/** Own commits remembered for the change feed (a reconnect replays at most what happened while it was away). */
const OWN_COMMITS_KEPT = 50_000;

export class MetaStore {
  private readonly entries = new Map<string, MetaEntry>();
  private readonly children = new Map<string, Set<string>>();
  /** Manifests read this session (the database holds all of them). */
  private readonly manifests = new Map<string, Manifest>();
  generation = 0;
  epoch = '';
  /**
   * Files this mount itself committed, with the node that took each and the
   * generation of that commit there (exact, unlike a mutation's reply, which
   * gives the node's generation after it). The change feed, replaying from
   * its position after a reconnect, would otherwise bring older states of
   * them back over what the node answered (memory only, bounded).
   */
  private readonly ownCommits = new Map<string, { endpoint: string; generation: number }>();
  /** Listings under way, by directory. */
  private readonly listings = new Map<string, Set<ListingTicket>>();

  constructor(
    private readonly store: Store,
    readonly workspace: string,
  ) {}

  markOwnCommit(path: string, endpoint: string, generation: number): void {
    if (!(generation > 0)) return;
    this.ownCommits.delete(path); // re-inserted last: the bound drops the oldest
    this.ownCommits.set(path, { endpoint, generation });
    if (this.ownCommits.size > OWN_COMMITS_KEPT) this.ownCommits.delete(this.ownCommits.keys().next().value as string);
  }

  /** Whether an event of `endpoint`'s feed at `generation` is older than this mount's own last commit of `path` there. */
  olderThanOwnCommit(path: string, endpoint: string, generation: number): boolean {
    const own = this.ownCommits.get(path);
    return !!own && own.endpoint === endpoint && generation < own.generation;
  }

  /** A node's generations started over (its feed said RESET): none of them can be compared any more. */
  forgetOwnCommits(): void {
    this.ownCommits.clear();
  }

  private k(kind: string, path: string): Buffer {
    return key(this.workspace, kind, path);
  }

  async load(): Promise<void> {
    const [gen, epoch] = await this.store.getMany([this.k('m', 'generation'), this.k('m', 'epoch')]);
    this.generation = gen ? new Reader(gen).uint() : 0;
    this.epoch = epoch ? epoch.toString() : '';
    const p = prefix(this.workspace, 'e');
    await this.store.forEach(p, (k, v) => this.setMem(k.subarray(p.length).toString('utf8'), decodeEntry(v)));
  }

  get size(): number {
    return this.entries.size;
  }

  get(path: string): MetaEntry | undefined {
    return this.entries.get(path);
  }

  childNames(dir: string): string[] {
    return [...(this.children.get(dir) ?? [])];
  }

  private setMem(path: string, e: MetaEntry | null): void {
    const prev = this.entries.get(path);
    if (this.listings.size) this.noteChange(path, prev, e);
    if (!e) {
      if (!prev) return;
      this.entries.delete(path);
      if (path !== '') this.children.get(parentOf(path))?.delete(baseName(path));
      this.children.delete(path);
      this.manifests.delete(path);
      return;
    }
    this.entries.set(path, e);
    if (path !== '') {
      let set = this.children.get(parentOf(path));
      if (!set) this.children.set(parentOf(path), (set = new Set()));
      set.add(baseName(path));
    }
    if (!isDir(e.attr.mode)) this.children.delete(path);
    if (prev?.digest && !(e.digest && prev.digest.equals(e.digest))) this.manifests.delete(path);
  }

  /** Tells the listings under way of `path`'s directory (and of `path`) that it changed. */
  private noteChange(path: string, prev: MetaEntry | undefined, e: MetaEntry | null): void {
    if (prev && e ? sameEntry(prev, e) : !prev && !e) return; // the "listed" mark alone, or the same state again
    if (path !== '') for (const t of this.listings.get(parentOf(path)) ?? []) t.changed.add(baseName(path));
    for (const t of this.listings.get(path) ?? []) t.self = true;
  }

  /** A listing of `dir` is being asked for now: from here on, what changes there wins over its answer. */
  beginListing(dir: string): ListingTicket {
    const t = newTicket(dir);
    let set = this.listings.get(dir);
    if (!set) this.listings.set(dir, (set = new Set()));
    set.add(t);
    return t;
  }

  /** The listing was applied or failed (idempotent). */
  endListing(t: ListingTicket): void {
    const set = this.listings.get(t.dir);
    if (!set?.delete(t)) return;
    if (set.size === 0) this.listings.delete(t.dir);
  }

  /** Every path at or below `path`. */
  private subtree(path: string): string[] {
    const out: string[] = [];
    if (!this.entries.has(path)) return out;
    const stack = [path];
    while (stack.length) {
      const p = stack.pop()!;
      out.push(p);
      for (const n of this.children.get(p) ?? []) stack.push(joinRel(p, n));
    }
    return out;
  }

  private putIn(b: Batch, path: string, e: MetaEntry): void {
    const prev = this.entries.get(path);
    // A file's manifest is stale once its digest moved.
    if (prev?.digest && !(e.digest && prev.digest.equals(e.digest))) b.del(this.k('c', path));
    this.setMem(path, e);
    b.put(this.k('e', path), encodeEntry(e));
  }

  private removeIn(b: Batch, path: string): void {
    for (const p of this.subtree(path)) {
      b.del(this.k('e', p)).del(this.k('c', p));
      this.setMem(p, null);
    }
  }

  /**
   * A directory's full listing, as a node answered `ticket` (none: known
   * here, as for a directory just made): children not in it are gone.
   * Children that changed here since it was asked for keep their newer
   * state; a directory removed or replaced meanwhile takes nothing from it.
   */
  async putListing(dir: string, dirEntry: MetaEntry, children: { name: string; entry: MetaEntry }[], asked?: ListingTicket): Promise<void> {
    const ticket = asked ?? newTicket(dir);
    this.endListing(ticket);
    const now = this.entries.get(dir);
    if (ticket.self && (!now || !isDir(now.attr.mode) || now.attr.ino !== dirEntry.attr.ino)) return;
    const b = this.store.batch();
    const fresh = new Set(children.map((c) => c.name));
    for (const name of this.childNames(dir)) if (!fresh.has(name) && !ticket.changed.has(name)) this.removeIn(b, joinRel(dir, name));
    for (const { name, entry } of children) {
      if (ticket.changed.has(name)) continue;
      const path = joinRel(dir, name);
      const prev = this.entries.get(path);
      // Keep what we know below a directory that is still a directory.
      const keepListed = prev?.listed && isDir(prev.attr.mode) && isDir(entry.attr.mode);
      this.putIn(b, path, keepListed ? { ...entry, listed: true } : entry);
    }
    const listed = ticket.invalidated ? !!now?.listed : true;
    this.putIn(b, dir, { ...(ticket.self ? now! : dirEntry), listed });
    await b.commit();
  }

  /** One entry changed (null: removed). Its parent's listing stays complete. */
  async put(path: string, e: MetaEntry | null): Promise<void> {
    const b = this.store.batch();
    if (e) {
      const prev = this.entries.get(path);
      const keepListed = prev?.listed && isDir(prev.attr.mode) && isDir(e.attr.mode);
      if (prev && isDir(prev.attr.mode) && !isDir(e.attr.mode)) this.removeIn(b, path);
      this.putIn(b, path, keepListed ? { ...e, listed: true } : e);
    } else {
      this.removeIn(b, path);
    }
    await b.commit();
  }

  /**
   * Records a committed file (its entry and manifest) and whatever else must
   * land with it (the journal record it settles) in one atomic batch.
   */
  async settle(path: string, e: MetaEntry, m: Manifest | undefined, also: (b: Batch) => void): Promise<void> {
    const b = this.store.batch();
    const prev = this.entries.get(path);
    this.putIn(b, path, prev?.listed && isDir(prev.attr.mode) ? { ...e, listed: true } : e);
    if (m) {
      this.manifests.set(path, m);
      b.put(this.k('c', path), encodeManifest(m));
    }
    also(b);
    await b.commit();
  }

  /**
   * An entry known only to this process (a file being created, or closed
   * while no node answered). Never persisted: after a restart, the
   * write-back journal brings back whatever must be shown.
   */
  putVolatile(path: string, e: MetaEntry | null): void {
    this.setMem(path, e);
  }

  /** Forget that directories were listed: after a RESET every listing must be fetched again. */
  async invalidateListings(): Promise<void> {
    for (const set of this.listings.values()) for (const t of set) t.invalidated = true;
    const b = this.store.batch();
    for (const [path, e] of this.entries) if (e.listed) this.putIn(b, path, { ...e, listed: false });
    await b.commit();
  }

  listedDirs(): string[] {
    return [...this.entries].filter(([, e]) => e.listed).map(([p]) => p);
  }

  async getManifest(path: string, digest: Buffer): Promise<Manifest | undefined> {
    let m = this.manifests.get(path);
    if (!m) {
      const b = await this.store.get(this.k('c', path));
      if (b) {
        m = decodeManifest(b);
        this.manifests.set(path, m);
      }
    }
    return m && m.digest.equals(digest) ? m : undefined;
  }

  async putManifest(path: string, m: Manifest): Promise<void> {
    this.manifests.set(path, m);
    await this.store.put(this.k('c', path), encodeManifest(m));
  }

  async setPosition(generation: number, epoch: string): Promise<void> {
    this.generation = generation;
    this.epoch = epoch;
    await this.store
      .batch()
      .put(this.k('m', 'generation'), new Writer().uint(generation).done())
      .put(this.k('m', 'epoch'), Buffer.from(epoch))
      .commit();
  }
}
