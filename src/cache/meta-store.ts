// The mount's memory of the workspace tree: every entry it has seen, with
// attributes, digests, symlink targets and which directories it has listed
// completely; file manifests (chunk lists); the change-feed position. All of
// it persists in RocksDB so a remount serves the known tree at once, even
// with every node down; all of it is held in memory too, because a FUSE
// getattr/lookup must not wait ~30 µs for a database read.
import { isDir, isLnk, isReg, readAttr, S_IFMT, sameAttr, writeAttr, type Attr } from '../content/attr.js';
import { HASH_BYTES, readChunkList, writeChunkList, type ChunkRef } from '../content/manifest.js';
import { Reader, Writer } from '../store/codec.js';
import { key, prefix, type Batch, type Store } from '../store/db.js';
import { log } from '../log.js';
import { baseName, joinRel, parentOf } from '../wire/rel-path.js';
import { SetMap } from '../util/set-map.js';

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
  return sameContent(a, b);
}

/** The same content digest, or none on either side. */
export function sameContent(a: Pick<MetaEntry, 'digest'>, b: Pick<MetaEntry, 'digest'>): boolean {
  return a.digest && b.digest ? a.digest.equals(b.digest) : !a.digest && !b.digest;
}

/** What changed at a path: its attributes or content only ('attrs'), or what the name leads to ('entry'). */
export type ChangeKind = 'attrs' | 'entry';

/** A path whose shown state changed, for the kernel's caches. */
export interface PathChange {
  path: string;
  what: ChangeKind;
}

/**
 * How a path's change is told to the kernel. A directory that is still a
 * directory keeps its entry whatever its inode number (each node reports
 * its own disk's: a switch to another replica changes them all): dropping
 * it would cut off the processes working inside it. A file keeps its entry
 * while it is the same file.
 */
export function changeKind(prev: MetaEntry, next: MetaEntry): ChangeKind {
  if ((prev.attr.mode & S_IFMT) !== (next.attr.mode & S_IFMT)) return 'entry';
  return isDir(next.attr.mode) || prev.attr.ino === next.attr.ino ? 'attrs' : 'entry';
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

/** A batch being made, and the paths whose state it writes. */
interface Write {
  b: Batch;
  paths: Set<string>;
}

/** How soon writes the database refused are tried again. */
const CATCH_UP_MS = 1000;

/** Own commits remembered for the change feed (a reconnect replays at most what happened while it was away). */
const OWN_COMMITS_KEPT = 50_000;

/** Files keeping what they were shown with (see keepIno), at most: the oldest go back to their node's. */
const KEPT_FILES = 100_000;

/**
 * What a directory shows of its own besides the node's attributes (see
 * keepIno, keepDirTimes, touchDir): the inode number it was shown with (the
 * node's number `node` is what the node reports for it).
 */
interface KeptDir {
  shown: number;
  node: number;
  /** Times shown while the node's are the ones named here. */
  times?: { mtimeNs: bigint; ctimeNs: bigint; nodeMtimeNs: bigint; nodeCtimeNs: bigint };
}

export class MetaStore {
  private readonly entries = new Map<string, MetaEntry>();
  private readonly children = new Map<string, Set<string>>();
  /** Manifests read this session (the database holds all of them). */
  private readonly manifests = new Map<string, Manifest>();
  generation = 0;
  epoch = '';
  /** The user and group the workspace's node runs as, from its last handshake (a mount started offline maps owners by it). */
  nodeOwner: { uid: number; gid: number } | undefined;
  /**
   * Files this mount itself committed, with the node that took each and the
   * generation of that commit there (exact, as a mutation's reply is from a
   * node that names its change's generation; an older node's gives its
   * generation when it answered, maybe later). The change feed, replaying from
   * its position after a reconnect, would otherwise bring older states of
   * them back over what the node answered (memory only, bounded).
   */
  private readonly ownCommits = new Map<string, { endpoint: string; generation: number; at: number }>();
  /** Listings under way, by directory. */
  private readonly listings = new SetMap<string, ListingTicket>();
  /** Directories listed before a RESET dropped their marks, until listed again (see putListing). */
  private readonly relisting = new Set<string>();
  /** Paths shown from memory only (putVolatile): their last persisted state stays on disk. */
  private readonly volatile = new Set<string>();
  /** Volatile entries shown over an entry the node had (a newer version of ours, still queued). */
  private readonly shadowed = new Set<string>();
  /**
   * What directories show of their own, in memory (see KeptDir): the inode
   * number one made through the mount was shown with before its node had
   * it (keepIno), and times moved by changes of this mount's the node has
   * not taken yet or took later (touchDir, keepDirTimes); the node's are
   * what is written to disk. For this process's life, until the path is
   * removed or holds another directory.
   */
  private readonly keptIno = new Map<string, KeptDir>();
  /**
   * Files' versions that landed after their close returned (see keepIno), by
   * the node's inode number (every name of the file, hard links too, shows
   * it), with the number and change time they were shown with; and the
   * numbers shown, to the node's.
   */
  private readonly keptFiles = new Map<number, { ino: number; ctimeNs: bigint; nodeCtimeNs: bigint }>();
  private readonly keptShown = new Map<number, number>();
  /**
   * Paths whose state in memory the database refused (a full disk), each
   * with a stamp of its latest refusal: memory stays the truth and is
   * written out once the database takes writes again (`catchUp`).
   */
  private readonly unpersisted = new Map<string, number>();
  /** What the refused batches carried besides entries (the journal records they settle): applied with the catch-up. */
  private readonly unpersistedAlso: ((b: Batch) => void)[] = [];
  private stamp = 0;
  private catchUpTimer?: NodeJS.Timeout;
  private catchingUp?: Promise<boolean>;
  private closed = false;
  /** Entry writes under way: the feed position is not written past them (one may yet be refused). */
  private inFlight = 0;
  /** A position not written yet for that reason: written once nothing is under way. */
  private positionOwed = false;
  /** Waiting for the writes under way to end (close). */
  private readonly whenIdle: (() => void)[] = [];

  constructor(
    private readonly store: Store,
    readonly workspace: string,
  ) {}

  markOwnCommit(path: string, endpoint: string, generation: number): void {
    const was = this.ownCommits.get(path);
    this.ownCommits.delete(path); // re-inserted last: the bound drops the oldest
    // (A generation of 0, unknown, is never compared: see olderThanOwnCommit.) An
    // answer handled after a later one there does not make the mark older.
    const latest = was && was.endpoint === endpoint && was.generation > generation ? was.generation : generation;
    this.ownCommits.set(path, { endpoint, generation: latest > 0 ? latest : 0, at: performance.now() });
    if (this.ownCommits.size > OWN_COMMITS_KEPT) this.ownCommits.delete(this.ownCommits.keys().next().value as string);
  }

  /**
   * Of what a node's answer to this mount carries (`by`: the node, at
   * `generation`), the entries no answer to a later change of this mount's
   * there has shown already; each is marked as this mount's. Answers are
   * handled in the order they come back, not in the node's: a commit's,
   * carrying its directory, may come back after that of a mkdir made there
   * later, and would show the directory's older link count and times.
   */
  fromAnswer<T extends readonly [string, MetaEntry]>(entries: readonly T[], by: string, generation: number): T[] {
    if (!by) return [...entries];
    const fresh = generation > 0 ? entries.filter(([path]) => !this.olderThanOwnCommit(path, by, generation)) : [...entries];
    for (const [path] of fresh) this.markOwnCommit(path, by, generation);
    return fresh;
  }

  /** Whether an event of `endpoint`'s feed at `generation` is older than this mount's own last commit of `path` there. */
  olderThanOwnCommit(path: string, endpoint: string, generation: number): boolean {
    const own = this.ownCommits.get(path);
    return !!own && own.endpoint === endpoint && own.generation > 0 && generation < own.generation;
  }

  /**
   * The node that took this mount's last commit of `path`, if it is another
   * than `endpoint` and that was less than `withinMs` ago: an event of
   * `endpoint`'s feed about the path cannot be ordered against that commit
   * (see ChangeFeed.apply).
   */
  committedElsewhere(path: string, endpoint: string, withinMs: number): string | undefined {
    const own = this.ownCommits.get(path);
    return own && own.endpoint !== endpoint && performance.now() - own.at < withinMs ? own.endpoint : undefined;
  }

  /** A node's generations started over (its feed said RESET): none of them can be compared any more (which node took each commit, and when, still counts). */
  forgetOwnCommits(): void {
    for (const own of this.ownCommits.values()) own.generation = 0;
  }

  private k(kind: string, path: string): Buffer {
    return key(this.workspace, kind, path);
  }

  async load(): Promise<void> {
    const [gen, epoch, owner] = await this.store.getMany([this.k('m', 'generation'), this.k('m', 'epoch'), this.k('m', 'nodeOwner')]);
    this.generation = gen ? new Reader(gen).uint() : 0;
    this.epoch = epoch ? epoch.toString() : '';
    if (owner) {
      const r = new Reader(owner);
      this.nodeOwner = { uid: r.uint(), gid: r.uint() };
    }
    const p = prefix(this.workspace, 'e');
    await this.store.forEach(p, (k, v) => this.setMem(k.subarray(p.length).toString('utf8'), decodeEntry(v)));
  }

  get size(): number {
    return this.entries.size;
  }

  /** Paths whose state the database refused and a catch-up has yet to write (the disk was full). */
  get unwritten(): number {
    return this.unpersisted.size;
  }

  get(path: string): MetaEntry | undefined {
    return this.entries.get(path);
  }

  childNames(dir: string): string[] {
    return [...(this.children.get(dir) ?? [])];
  }

  private setMem(path: string, e: MetaEntry | null): void {
    if ((this.keptIno.size || this.keptFiles.size) && e) e = this.shown(path, e);
    else if (!e) {
      this.keptIno.delete(path);
      this.shadowed.delete(path);
    }
    if (!e || !isDir(e.attr.mode)) this.relisting.delete(path);
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

  /**
   * A path made or written through the mount keeps what it was shown with,
   * now that its node has it (`shownAs`: the entry shown until now;
   * `nodeEntry`: the node's):
   * - a directory, its inode number, whatever the node reports later (tar
   *   checks that a directory it made is the one whose times it sets);
   * - a file's version that lands after its close returned (asynchronous
   *   write-back, a node that was down), shown meanwhile with a number of
   *   the mount's: that number and its change time, for as long as the node
   *   reports that version. A program that looked at the file meanwhile
   *   would otherwise see it change with nobody writing to it: vim then
   *   refuses to save it ("changed since reading"), tar warns that it
   *   changed as it was read, git hashes it again. Another version shows the
   *   node's number. (Only a number of the mount's is kept: a node's number
   *   is free for the node to give another file once that version is gone.)
   */
  keepIno(path: string, shownAs: MetaEntry | undefined, nodeEntry: MetaEntry): void {
    if (!shownAs || shownAs.attr.ino === nodeEntry.attr.ino) return;
    if (isDir(shownAs.attr.mode) && isDir(nodeEntry.attr.mode)) {
      this.keptIno.set(path, { ...this.keptDir(path, shownAs.attr.ino), shown: shownAs.attr.ino, node: nodeEntry.attr.ino });
    } else if (isReg(shownAs.attr.mode) && isReg(nodeEntry.attr.mode)) {
      // The number's earlier version is gone: the node may give its inode to another file.
      const earlier = this.keptShown.get(shownAs.attr.ino);
      if (earlier !== undefined) this.keptFiles.delete(earlier);
      // The node's number named an earlier version (its inode freed and given again): that one is gone.
      const reused = this.keptFiles.get(nodeEntry.attr.ino);
      if (reused) this.keptShown.delete(reused.ino);
      this.keptFiles.delete(nodeEntry.attr.ino); // re-inserted last: the bound drops the oldest
      this.keptFiles.set(nodeEntry.attr.ino, { ino: shownAs.attr.ino, ctimeNs: shownAs.attr.ctimeNs, nodeCtimeNs: nodeEntry.attr.ctimeNs });
      this.keptShown.set(shownAs.attr.ino, nodeEntry.attr.ino);
      if (this.keptFiles.size > KEPT_FILES) {
        const [node, oldest] = this.keptFiles.entries().next().value as [number, { ino: number }];
        this.keptFiles.delete(node);
        this.keptShown.delete(oldest.ino);
      }
    }
  }

  /**
   * A directory whose times moved on its node only because versions this
   * mount had closed before landed there (asynchronous write-back) keeps the
   * times it was shown with, while the node's are those: a program that
   * looked at it meanwhile would see it change with nobody changing it (tar
   * reading it says it "changed as we read it", and fails). Any other change
   * shows the node's times.
   */
  keepDirTimes(path: string, shownAs: MetaEntry | undefined, nodeEntry: MetaEntry): void {
    if (!shownAs || !isDir(shownAs.attr.mode) || !isDir(nodeEntry.attr.mode)) return;
    const a = shownAs.attr;
    const b = nodeEntry.attr;
    const k = this.keptDir(path, a.ino);
    const times = a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs ? undefined : { mtimeNs: a.mtimeNs, ctimeNs: a.ctimeNs, nodeMtimeNs: b.mtimeNs, nodeCtimeNs: b.ctimeNs };
    if (k) k.times = times;
    else if (times) this.keptIno.set(path, { shown: b.ino, node: b.ino, times });
  }

  /**
   * A name made or removed in a directory through this mount before its node
   * heard of it (a file created, written at close; a directory or a removal
   * queued): the directory shows the time of that change, as on a disk,
   * while its node's times are the ones it has now; the landing keeps it
   * (keepDirTimes). Memory only.
   */
  touchDir(path: string, nowNs: bigint): void {
    const e = this.entries.get(path);
    // Never back: a queued record shown after a restart carries the time of its close.
    if (!e || !isDir(e.attr.mode) || nowNs <= e.attr.mtimeNs) return;
    const node = this.asOnNode(path, e).attr;
    const k = this.keptDir(path, e.attr.ino) ?? { shown: e.attr.ino, node: node.ino };
    k.times = { mtimeNs: nowNs, ctimeNs: nowNs, nodeMtimeNs: node.mtimeNs, nodeCtimeNs: node.ctimeNs };
    this.keptIno.set(path, k);
    this.setMem(path, { ...e, attr: { ...e.attr, mtimeNs: nowNs, ctimeNs: nowNs } });
  }

  /**
   * What is kept of the directory at `path` shown with number `ino`; none for
   * another directory by that name (replaced on the node, and heard of as a
   * change, not a removal), whose kept state goes.
   */
  private keptDir(path: string, ino: number): KeptDir | undefined {
    const k = this.keptIno.get(path);
    if (!k || ino === k.shown || ino === k.node) return k;
    this.keptIno.delete(path);
    return undefined;
  }

  /** An entry as this mount shows it (see keepIno): what the node reports, with what is kept of what was shown. */
  shown(path: string, e: MetaEntry): MetaEntry {
    if (isReg(e.attr.mode)) {
      const k = this.keptFiles.get(e.attr.ino);
      return k ? { ...e, attr: { ...e.attr, ino: k.ino, ctimeNs: e.attr.ctimeNs === k.nodeCtimeNs ? k.ctimeNs : e.attr.ctimeNs } } : e;
    }
    const k = this.keptIno.get(path);
    // Another directory by that name (replaced on the node) shows what the node says of it.
    if (!k || !isDir(e.attr.mode) || (e.attr.ino !== k.node && e.attr.ino !== k.shown)) return e;
    const t = k.times && e.attr.mtimeNs === k.times.nodeMtimeNs && e.attr.ctimeNs === k.times.nodeCtimeNs ? k.times : undefined;
    if (e.attr.ino === k.shown && !t) return e;
    return { ...e, attr: { ...e.attr, ino: k.shown, ...(t ? { mtimeNs: t.mtimeNs, ctimeNs: t.ctimeNs } : {}) } };
  }

  /** What is written to disk: the node's inode number and times (what is kept means nothing to the next process). */
  private asOnNode(path: string, e: MetaEntry): MetaEntry {
    if (isReg(e.attr.mode)) {
      const node = this.keptShown.get(e.attr.ino);
      const k = node === undefined ? undefined : this.keptFiles.get(node);
      return k ? { ...e, attr: { ...e.attr, ino: node!, ctimeNs: e.attr.ctimeNs === k.ctimeNs ? k.nodeCtimeNs : e.attr.ctimeNs } } : e;
    }
    const k = this.keptIno.get(path);
    if (!k || e.attr.ino !== k.shown) return e;
    const t = k.times && e.attr.mtimeNs === k.times.mtimeNs && e.attr.ctimeNs === k.times.ctimeNs ? k.times : undefined;
    return { ...e, attr: { ...e.attr, ino: k.node, ...(t ? { mtimeNs: t.nodeMtimeNs, ctimeNs: t.nodeCtimeNs } : {}) } };
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
    this.listings.add(dir, t);
    return t;
  }

  /** The listing was applied or failed (idempotent). */
  endListing(t: ListingTicket): void {
    this.listings.remove(t.dir, t);
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

  private begin(): Write {
    return { b: this.store.batch(), paths: new Set() };
  }

  private putIn(w: Write, path: string, e: MetaEntry): void {
    const prev = this.entries.get(path);
    // A file's manifest is stale once its digest moved.
    if (prev?.digest && !(e.digest && prev.digest.equals(e.digest))) w.b.del(this.k('c', path));
    this.setMem(path, e);
    this.volatile.delete(path);
    this.shadowed.delete(path);
    w.paths.add(path);
    w.b.put(this.k('e', path), encodeEntry(this.asOnNode(path, e)));
  }

  private removeIn(w: Write, path: string): void {
    for (const p of this.subtree(path)) {
      w.b.del(this.k('e', p)).del(this.k('c', p));
      this.setMem(p, null);
      this.volatile.delete(p);
      w.paths.add(p);
    }
  }

  /**
   * Commits a write whose changes memory already shows. A database that
   * refuses it (its disk is full) does not fail the caller: the mount goes
   * on from memory, and the paths are written out once the database takes
   * writes again. Only a crash before that loses them, and then the mount
   * starts from its older state and position, as after any crash. True
   * when the write is on disk; false when it waits for a catch-up.
   */
  private async commit(w: Write, also?: (b: Batch) => void): Promise<boolean> {
    also?.(w.b);
    this.inFlight++;
    try {
      await w.b.commit();
      return true;
    } catch (err) {
      const stamp = ++this.stamp;
      for (const p of w.paths) this.unpersisted.set(p, stamp);
      if (also) this.unpersistedAlso.push(also);
      if (!this.catchUpTimer) log.warn({ err: (err as Error).message, paths: w.paths.size }, 'the metadata database refused a write; the mount goes on from memory and writes it out once the database takes writes again');
      this.scheduleCatchUp();
      return false;
    } finally {
      this.inFlight--;
      if (this.inFlight === 0) {
        for (const fn of this.whenIdle.splice(0)) fn();
        if (this.positionOwed && !this.closed) void this.setPosition(this.generation, this.epoch);
      }
    }
  }

  private scheduleCatchUp(): void {
    if (this.closed) return;
    this.catchUpTimer ??= setTimeout(() => {
      this.catchUpTimer = undefined;
      void this.catchUp();
    }, CATCH_UP_MS).unref();
  }

  /**
   * Writes out what the database refused: each path's state in memory now
   * (never an older one, so it cannot undo a later change), the records
   * those writes settled, and the feed position. True when nothing is left.
   */
  catchUp(): Promise<boolean> {
    this.catchingUp ??= this.catchUpNow().finally(() => (this.catchingUp = undefined));
    return this.catchingUp;
  }

  private async catchUpNow(): Promise<boolean> {
    if (this.unpersisted.size === 0 && this.unpersistedAlso.length === 0) return true;
    const paths = [...this.unpersisted];
    const also = this.unpersistedAlso.splice(0);
    const b = this.store.batch();
    for (const [path] of paths) {
      if (this.volatile.has(path)) continue; // its persisted state stays what it was
      const e = this.entries.get(path);
      if (!e) {
        b.del(this.k('e', path)).del(this.k('c', path));
        continue;
      }
      b.put(this.k('e', path), encodeEntry(this.asOnNode(path, e)));
      const m = this.manifests.get(path);
      if (m && e.digest?.equals(m.digest)) b.put(this.k('c', path), encodeManifest(m));
    }
    for (const fn of also) fn(b);
    if (this.inFlight === 0) this.positionIn(b);
    else this.positionOwed = true;
    try {
      await b.commit();
    } catch {
      this.unpersistedAlso.unshift(...also);
      this.scheduleCatchUp();
      return false;
    }
    // A path refused again meanwhile has a newer state to write.
    for (const [path, stamp] of paths) if (this.unpersisted.get(path) === stamp) this.unpersisted.delete(path);
    log.info({ paths: paths.length }, 'the metadata refused earlier is written out');
    if (this.unpersisted.size || this.unpersistedAlso.length) this.scheduleCatchUp();
    return this.unpersisted.size === 0 && this.unpersistedAlso.length === 0;
  }

  /** One last catch-up, and no timer after it (the mount is stopping). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.catchUpTimer);
    this.catchUpTimer = undefined;
    // Writes nobody waited for (a change of names, a commit's record) land first: the position is written after them.
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.whenIdle.push(resolve));
    await this.catchingUp;
    if (!(await this.catchUp())) log.warn({ paths: this.unpersisted.size }, 'metadata the database refused is not written out; the next mount starts from the state before it');
    else if (this.positionOwed) await this.setPosition(this.generation, this.epoch);
  }

  /**
   * A directory's full listing, as a node answered `ticket` (none: known
   * here, as for a directory just made): children not in it are gone.
   * Children that changed here since it was asked for keep their newer
   * state; a directory removed or replaced meanwhile takes nothing from it.
   * Returns what it changed in what the mount shows: removed and changed
   * children, and new ones in a directory listed before (the kernel may
   * hold that they do not exist).
   */
  async putListing(dir: string, dirEntry: MetaEntry, children: { name: string; entry: MetaEntry }[], asked?: ListingTicket): Promise<PathChange[]> {
    const ticket = asked ?? newTicket(dir);
    this.endListing(ticket);
    const now = this.entries.get(dir);
    if (ticket.self && (!now || !isDir(now.attr.mode) || now.attr.ino !== this.shown(dir, dirEntry).attr.ino)) return [];
    // A directory listed before (now listed again after a RESET) may have
    // names the kernel was told do not exist: the new ones are changes too.
    const relisted = this.relisting.delete(dir);
    const shownBefore = relisted || !!now?.listed;
    const out: PathChange[] = [];
    const w = this.begin();
    const fresh = new Set(children.map((c) => c.name));
    // What only this mount shows (closed or made here, still queued) is not the node's to remove.
    for (const name of this.childNames(dir)) {
      if (fresh.has(name) || ticket.changed.has(name) || this.volatile.has(joinRel(dir, name))) continue;
      this.removeIn(w, joinRel(dir, name));
      out.push({ path: joinRel(dir, name), what: 'entry' });
    }
    for (const { name, entry } of children) {
      if (ticket.changed.has(name)) continue;
      const path = joinRel(dir, name);
      const prev = this.entries.get(path);
      // Keep what we know below a directory that is still a directory.
      const keepListed = prev?.listed && isDir(prev.attr.mode) && isDir(entry.attr.mode);
      this.putIn(w, path, keepListed ? { ...entry, listed: true } : entry);
      const e = this.entries.get(path)!;
      if (prev ? !sameEntry(prev, e) : shownBefore) out.push({ path, what: prev ? changeKind(prev, e) : 'entry' });
    }
    const listed = ticket.invalidated ? !!now?.listed : true;
    if (!listed && shownBefore) this.relisting.add(dir); // listed again later, with the same care
    const self = ticket.self ? now! : this.shown(dir, dirEntry);
    if (now && !sameEntry(now, self)) out.push({ path: dir, what: changeKind(now, self) });
    this.putIn(w, dir, { ...self, listed });
    await this.commit(w);
    return out;
  }

  /**
   * A rename made through this mount: what is known under `from` is known
   * under `to` from now on (entries, listings, the manifests held in
   * memory, kept inode numbers), and what was at `to` goes; with
   * `exchange` the two trade places. Then `changed` (the node's answer: the
   * new name, the directories) as putMany takes it. One write, shown in
   * memory before this returns. The kernel keeps the nodes of a renamed
   * directory's contents and asks for them under their new names at once:
   * a mount that forgot them answered ENOENT until they were listed again.
   */
  async renamed(from: string, to: string, exchange: boolean, changed: readonly (readonly [string, MetaEntry | null])[]): Promise<void> {
    const take = (root: string) =>
      this.subtree(root).map((p) => ({ rel: p.slice(root.length), e: this.entries.get(p)!, m: this.manifests.get(p), kept: this.keptIno.get(p), volatile: this.volatile.has(p), shadowed: this.shadowed.has(p), relisting: this.relisting.has(p) }));
    const fromTree = take(from);
    const toTree = exchange ? take(to) : [];
    const w = this.begin();
    this.removeIn(w, to);
    this.removeIn(w, from);
    const place = (root: string, tree: ReturnType<typeof take>): void => {
      for (const { rel, e, m, kept, volatile, shadowed, relisting } of tree) {
        const p = root + rel;
        if (kept) this.keptIno.set(p, kept);
        // Shown only here (made here, still queued): in memory only, as putVolatile keeps it.
        if (volatile) this.putVolatile(p, e);
        else this.putIn(w, p, e);
        if (shadowed) this.shadowed.add(p);
        if (relisting) this.relisting.add(p);
        if (m && e.digest?.equals(m.digest)) {
          this.manifests.set(p, m);
          w.b.put(this.k('c', p), encodeManifest(m));
        }
      }
    };
    place(to, fromTree);
    place(from, toTree);
    this.changedIn(w, changed);
    await this.commit(w);
  }

  /** One entry changed (null: removed). Its parent's listing stays complete. */
  async put(path: string, e: MetaEntry | null): Promise<void> {
    await this.putMany([[path, e]]);
  }

  /** Several entries (null: removed) in one database write, in order, with whatever `also` adds to it. */
  async putMany(changes: readonly (readonly [string, MetaEntry | null])[], also?: (b: Batch) => void): Promise<void> {
    const w = this.begin();
    this.changedIn(w, changes);
    await this.commit(w, also);
  }

  private changedIn(w: Write, changes: readonly (readonly [string, MetaEntry | null])[]): void {
    for (const [path, e] of changes) {
      if (e) {
        const prev = this.entries.get(path);
        const keepListed = prev?.listed && isDir(prev.attr.mode) && isDir(e.attr.mode);
        if (prev && isDir(prev.attr.mode) && !isDir(e.attr.mode)) this.removeIn(w, path);
        this.putIn(w, path, keepListed ? { ...e, listed: true } : e);
      } else {
        this.removeIn(w, path);
      }
    }
  }

  /**
   * Records a committed file (its entry and manifest) and whatever else must
   * land with it (the journal record it settles) in one atomic batch. False
   * when the database refused it (it is written out later, by a catch-up).
   */
  async settle(path: string, e: MetaEntry, m: Manifest | undefined, also: (b: Batch) => void): Promise<boolean> {
    const w = this.begin();
    const prev = this.entries.get(path);
    this.putIn(w, path, prev?.listed && isDir(prev.attr.mode) ? { ...e, listed: true } : e);
    if (m) {
      this.manifests.set(path, m);
      w.b.put(this.k('c', path), encodeManifest(m));
    }
    return this.commit(w, also);
  }

  /**
   * An entry known only to this process (a file being created, or closed
   * while no node answered). Never persisted: after a restart, the
   * write-back journal brings back whatever must be shown.
   */
  putVolatile(path: string, e: MetaEntry | null): void {
    if (e && !this.volatile.has(path) && this.entries.has(path)) this.shadowed.add(path);
    this.setMem(path, e);
    // A removal is what the disk should hold too (a catch-up writes it); an entry is not.
    if (e) this.volatile.add(path);
    else this.volatile.delete(path);
  }

  /** Forgets what is shown at and below `path` in memory only (a directory the node refused to make: nothing of it was written). */
  dropShownOnly(path: string): void {
    for (const p of this.subtree(path).reverse()) {
      this.setMem(p, null);
      this.volatile.delete(p);
    }
  }

  /** A directory's listing is no longer taken as complete (one made here turned out to be someone else's). */
  async unlist(path: string): Promise<void> {
    const e = this.entries.get(path);
    if (!e?.listed) return;
    const w = this.begin();
    this.putIn(w, path, { ...e, listed: false });
    await this.commit(w);
  }

  /**
   * Whether the node had this path when it was last heard of: an entry
   * from it is shown, or one of ours over it. A file created here and never
   * committed has neither.
   */
  onNode(path: string): boolean {
    return this.shadowed.has(path) || (this.entries.has(path) && !this.volatile.has(path));
  }

  /** Forget that directories were listed: after a RESET every listing must be fetched again. */
  async invalidateListings(): Promise<void> {
    for (const set of this.listings.values()) for (const t of set) t.invalidated = true;
    const w = this.begin();
    // A directory only this mount has (made, not yet on a node) stays complete: no node knows more of it.
    for (const [path, e] of this.entries) {
      if (!e.listed || this.volatile.has(path)) continue;
      this.putIn(w, path, { ...e, listed: false });
      this.relisting.add(path);
    }
    await this.commit(w);
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

  /** A manifest fetched from a node (only a cache: one the database refuses is fetched again when needed). */
  async putManifest(path: string, m: Manifest): Promise<void> {
    this.manifests.set(path, m);
    await this.store.put(this.k('c', path), encodeManifest(m)).catch(() => undefined);
  }

  /**
   * The change feed's position. Not written while entries the database
   * refused wait to be written out: a crash must not leave a position past
   * changes the disk does not hold (the catch-up writes it with them).
   */
  async setPosition(generation: number, epoch: string): Promise<void> {
    this.generation = generation;
    this.epoch = epoch;
    if (this.unpersisted.size || this.unpersistedAlso.length) return; // the catch-up writes it
    if (this.inFlight > 0) {
      this.positionOwed = true;
      return;
    }
    this.positionOwed = false;
    const b = this.store.batch();
    this.positionIn(b);
    await b.commit().catch(() => undefined); // written again with the next position
  }

  /** Remembers the node's user and group from its handshake, if they changed (undefined: a node that does not say). */
  async setNodeOwner(o: { uid: number; gid: number } | undefined): Promise<void> {
    if (this.nodeOwner?.uid === o?.uid && this.nodeOwner?.gid === o?.gid) return;
    this.nodeOwner = o;
    const b = this.store.batch();
    if (o) b.put(this.k('m', 'nodeOwner'), new Writer().uint(o.uid).uint(o.gid).done());
    else b.del(this.k('m', 'nodeOwner'));
    // Not written (a full disk): known for this process's life, and written at the next start's handshake.
    await b.commit().catch(() => undefined);
  }

  private positionIn(b: Batch): void {
    b.put(this.k('m', 'generation'), new Writer().uint(this.generation).done()).put(this.k('m', 'epoch'), Buffer.from(this.epoch));
  }
}
