// The mount's memory of the workspace tree: every entry it has seen, with
// attributes, digests, symlink targets and which directories it has listed
// completely; file manifests (chunk lists); the change-feed position. All of
// it persists in RocksDB so a remount serves the known tree at once, even
// with every node down; all of it is held in memory too, because a FUSE
// getattr/lookup must not wait ~30 µs for a database read.
import { isDir, isLnk, isReg, readAttr, writeAttr, type Attr } from '../content/attr.js';
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

  /** A directory's full listing: children not in it are gone. */
  async putListing(dir: string, dirEntry: MetaEntry, children: { name: string; entry: MetaEntry }[]): Promise<void> {
    const b = this.store.batch();
    const fresh = new Set(children.map((c) => c.name));
    for (const name of this.childNames(dir)) if (!fresh.has(name)) this.removeIn(b, joinRel(dir, name));
    for (const { name, entry } of children) {
      const path = joinRel(dir, name);
      const prev = this.entries.get(path);
      // Keep what we know below a directory that is still a directory.
      const keepListed = prev?.listed && isDir(prev.attr.mode) && isDir(entry.attr.mode);
      this.putIn(b, path, keepListed ? { ...entry, listed: true } : entry);
    }
    this.putIn(b, dir, { ...dirEntry, listed: true });
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
