// The node's persistent index of one workspace: every path with its lstat
// attributes, and for regular files the digest and chunk list. It lives in
// RocksDB (so a restart re-hashes only what changed) and in memory (so
// requests are answered without a database read). Every change bumps the
// workspace's generation and is logged, which is what `Watch` replays.
import { EventEmitter } from 'node:events';
import { readdir, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pLimit from 'p-limit';
import { isDir, isLnk, isReg, sameAttr, sameTuple, type Attr } from '../content/attr.js';
import type { HashPool } from '../content/hash-pool.js';
import { key, prefix, u64be, type Batch, type Store } from '../store/db.js';
import { Reader, Writer } from '../store/codec.js';
import { FsError } from '../wire/errors.js';
import { log } from '../log.js';
import { decodeEntry, encodeEntry, type IndexEntry } from './index-entry.js';
import { baseName, Confinement, joinRel, parentOf } from './paths.js';
import { metaCalls, type MetaCalls } from './meta-calls.js';
import { SetMap } from '../util/set-map.js';
import { fileModeFrom } from './set-id.js';

/** Name prefix of the node's own temp files (commits in progress). Never indexed. */
export const TEMP_PREFIX = '.ghostfs-tmp-';

export interface Change {
  generation: number;
  path: string;
  /** null: the path was removed. */
  entry: IndexEntry | null;
  /** The writer whose commit or change made it (CommitRequest.writer, MutateRequest.writer), if one was named. */
  origin?: string;
}

/**
 * The writer a change is made for, when it named itself: a Watch naming the
 * same writer is not sent the change (its reply told the writer), only the
 * position past it. With `named`, only changes of those paths are the
 * writer's, and a removal only when `removes` has it (what the writer
 * removes itself): the rest (a path found gone meanwhile, say) goes to
 * every feed.
 */
export interface Origin {
  origin?: string;
  named?: ReadonlySet<string>;
  removes?: ReadonlySet<string>;
  /**
   * Set by apply(): the generation of the last change made for this
   * request. The workspace's generation when the answer goes out may be
   * later (other writers' commits do not wait for a change of names).
   */
  last?: number;
}

/** Whether a change is the writer's own (see Origin). */
const ownChange = (o: Origin, path: string, entry: IndexEntry | null): boolean => !!o.origin && (!o.named || (o.named.has(path) && (entry !== null || !!o.removes?.has(path))));

export interface ScanStats {
  files: number;
  dirs: number;
  others: number;
  hashedFiles: number;
  hashedBytes: number;
  removed: number;
  tempsRemoved: number;
  durationMs: number;
}

/** What a relink record holds of a file: enough to tell it is the same file, unchanged. */
export type RelinkFile = Pick<Attr, 'dev' | 'ino' | 'mtimeNs' | 'size' | 'mode' | 'uid' | 'gid'>;

/** A commit's re-pointing of its file's other names, recorded (WorkspaceIndex.relinkDue). */
export interface RelinkDue {
  path: string;
  /** The file the names are on. */
  was: RelinkFile;
  /** The version the commit put at `path`. */
  now: RelinkFile;
  names: string[];
}

/** The relink record's format (its first number). */
const RELINK_RECORD = 1;

export interface IndexOptions {
  statConcurrency: number;
  /** Local disks: metadata calls made inline, a walk's a directory at a time (see meta-calls.ts, listDir). */
  inlineMetadata: boolean;
  tempTtlMs: number;
  /** Generations kept in the change log; a watcher further behind gets RESET. */
  logRetention: number;
  /** Absolute paths under the root that are not part of the workspace (a state dir inside it). */
  excluded: string[];
  /** Keep the set-user-ID and set-group-ID bits clients ask for on regular files (set-id.ts). */
  allowSetId?: boolean;
  /** Make the device nodes clients ask for (mutations.ts, checkMknodType). */
  allowDevices?: boolean;
  onProgress?: (s: ScanStats) => void;
}

/** Identity of an inode: the key under which hard links meet. */
const inodeKey = (a: Attr): string => `${a.dev}:${a.ino}`;
/** Paths whose last change apply() remembers, for stats that may be older (a minute of a busy untar). */
const LAST_CHANGED_KEPT = 65_536;
/** Times a stale stat is taken again through the pool before it is recorded as it is (the watcher still looks after it). */
const STAT_AGAIN_ROUNDS = 3;
const tryOrNull = <T>(fn: () => T): T | null => {
  try {
    return fn();
  } catch {
    return null;
  }
};

interface ChunkLocation {
  path: string;
  offset: number;
  length: number;
}

export class WorkspaceIndex extends EventEmitter {
  readonly entries = new Map<string, IndexEntry>();
  private readonly children = new Map<string, Set<string>>();
  /**
   * Where each known chunk can be read (keyed by the hash's latin1 string).
   * Built on first use, not at load: start-up stays a plain scan, and most
   * reads name their file (path hint) and never need it.
   */
  private chunkLocMap: Map<string, ChunkLocation> | undefined;
  private readonly validating = new Map<string, Promise<IndexEntry>>();
  /** Names of files (anything but a directory) with more than one link, by "dev:ino": they share one set of attributes. */
  private readonly links = new Map<string, Set<string>>();
  /** Looks for unindexed paths under way, by the directory walked (see findUnindexed). */
  private readonly finding = new Map<string, Promise<void>>();
  private flushChain: Promise<void> = Promise.resolve();
  /**
   * Called with each directory a walk is about to read (the watcher watches
   * it first: whatever changes there after the walk looked has an event).
   */
  beforeList: ((dir: string) => void) | undefined;
  readonly paths: Confinement;
  /** Metadata calls on the workspace's disk, inline or through the pool (see meta-calls.ts). */
  readonly calls: MetaCalls;
  generation = 0;
  /**
   * Paths changed lately, with the generation of their last change, for
   * stats that may be older than it (see apply's `statAt`); bounded: a
   * path dropped counts as changed at the newest generation dropped.
   */
  private readonly lastChanged = new Map<string, number>();
  private lastChangedFloor = 0;
  epoch = '';
  /** Watchers at or beyond this generation can be served from the log. */
  logFloor = 0;
  /** No one can know an older state of a fresh index: its first scan is not logged. */
  private fresh = false;

  constructor(
    readonly id: string,
    readonly root: string,
    private readonly store: Store,
    private readonly pool: HashPool,
    private readonly opts: IndexOptions,
  ) {
    super();
    this.setMaxListeners(0);
    this.calls = metaCalls(opts.inlineMetadata ? 'inline' : 'pool');
    this.paths = new Confinement(root, this.calls);
  }

  /** Whether device nodes clients ask for are made (mutations.ts, checkMknodType). */
  get allowDevices(): boolean {
    return this.opts.allowDevices ?? false;
  }

  /** The permission bits a client's `mode` gives a regular file at `path` here (set-id.ts). */
  fileMode(mode: number, path: string): number {
    return fileModeFrom(mode & 0o7777, this.opts.allowSetId ?? false, path);
  }

  private entryKey(path: string): Buffer {
    return key(this.id, 'e', path);
  }

  private logKey(gen: number): Buffer {
    return key(this.id, 'l', u64be(gen));
  }

  private metaKey(name: string): Buffer {
    return key(this.id, 'm', name);
  }

  /** Loads the persisted index into memory. */
  async load(): Promise<void> {
    const [epoch, gen] = await this.store.getMany([this.metaKey('epoch'), this.metaKey('generation')]);
    if (epoch) {
      this.epoch = epoch.toString();
      this.generation = gen ? new Reader(gen).uint() : 0;
    } else {
      this.epoch = randomBytes(8).toString('hex');
      this.fresh = true;
      await this.store.batch().put(this.metaKey('epoch'), Buffer.from(this.epoch)).put(this.metaKey('generation'), new Writer().uint(0).done()).commit();
    }
    this.logFloor = this.generation;
    for await (const { key: k } of this.store.scan(prefix(this.id, 'l'), { limit: 1, keysOnly: true })) {
      this.logFloor = Number(k.readBigUInt64BE(k.length - 8)) - 1;
    }
    const p = prefix(this.id, 'e');
    await this.store.forEach(p, (k, value) => this.setMem(k.subarray(p.length).toString('utf8'), decodeEntry(value)));
  }

  private setMem(path: string, entry: IndexEntry | null): void {
    const prev = this.entries.get(path);
    if (prev && prev.attr.nlink > 1 && !isDir(prev.attr.mode)) {
      const k = inodeKey(prev.attr);
      this.links.get(k)?.delete(path);
      if (this.links.get(k)?.size === 0) this.links.delete(k);
    }
    if (entry && entry.attr.nlink > 1 && !isDir(entry.attr.mode)) {
      const k = inodeKey(entry.attr);
      let set = this.links.get(k);
      if (!set) this.links.set(k, (set = new Set()));
      set.add(path);
    }
    const locs = this.chunkLocMap;
    if (prev?.chunks && locs) {
      for (const c of prev.chunks) {
        const k = c.hash.toString('latin1');
        if (locs.get(k)?.path === path) locs.delete(k);
      }
    }
    if (entry === null) {
      if (!prev) return;
      this.entries.delete(path);
      if (path !== '') this.children.get(parentOf(path))?.delete(baseName(path));
      if (isDir(prev.attr.mode)) this.children.delete(path);
      return;
    }
    this.entries.set(path, entry);
    if (path !== '') {
      let set = this.children.get(parentOf(path));
      if (!set) this.children.set(parentOf(path), (set = new Set()));
      set.add(baseName(path));
    }
    if (isDir(entry.attr.mode)) {
      if (!this.children.has(path)) this.children.set(path, new Set());
    } else if (prev && isDir(prev.attr.mode)) {
      this.children.delete(path);
    }
    if (entry.chunks && locs) {
      for (const c of entry.chunks) locs.set(c.hash.toString('latin1'), { path, offset: c.offset, length: c.length });
    }
  }

  /** Commits under way, by path (see committing). */
  private readonly commits = new Map<string, Promise<unknown>>();
  /** The same, by the directory their file is in (see refreshAll's `dirsToCommits`). */
  private readonly commitsIn = new SetMap<string, Promise<unknown>>();

  /** Runs a commit of `path`: until it is over, refreshes leave the path to it (refreshAll). */
  async committing<T>(path: string, commit: () => Promise<T>): Promise<T> {
    const run = commit();
    const over = run.then(
      () => undefined,
      () => undefined,
    );
    this.commits.set(path, over);
    this.commitsIn.add(parentOf(path), over);
    try {
      return await run;
    } finally {
      if (this.commits.get(path) === over) this.commits.delete(path);
      this.commitsIn.remove(parentOf(path), over);
    }
  }

  /** Settles once the commit of `path` under way is over (or those of files in directory `path`); undefined when none is. */
  commitUnderWay(path: string): Promise<unknown> | undefined {
    const inDir = this.commitsIn.get(path);
    return this.commits.get(path) ?? (inDir ? Promise.all(inDir) : undefined);
  }

  /** Other indexed names of the same inode (hard links). */
  linksOf(path: string): string[] {
    const e = this.entries.get(path);
    if (!e || e.attr.nlink < 2) return [];
    return [...(this.links.get(inodeKey(e.attr)) ?? [])].filter((p) => p !== path);
  }

  private relinkKey(path: string): Buffer {
    return key(this.id, 'r', path);
  }

  /**
   * Records durably that the other names of the file at `path` are to name
   * the version a commit is putting there (relink.ts): `was`, the file they
   * name, and `now`, the new version, each with what tells it has not
   * changed since. False, logged, when the database refuses: the commit
   * goes on without the record.
   */
  async relinkDue(path: string, was: RelinkFile, now: RelinkFile, names: readonly string[]): Promise<boolean> {
    try {
      const w = new Writer().uint(RELINK_RECORD);
      for (const a of [was, now]) w.uint(a.dev).uint(a.ino).string(String(a.mtimeNs)).uint(a.size).uint(a.mode).uint(a.uid).uint(a.gid);
      w.uint(names.length);
      for (const n of names) w.string(n);
      await this.store.batch().put(this.relinkKey(path), w.done()).commit({ durable: true });
      return true;
    } catch (err) {
      log.warn({ workspace: this.id, path, err: (err as Error).message }, "a commit's hard links are re-pointed without a record: a node killed meanwhile leaves them on the version before");
      return false;
    }
  }

  /** The relink of `path` is over. A record left behind is finished at the next start, finding nothing to do. */
  async relinkDone(path: string): Promise<void> {
    await this.store.del(this.relinkKey(path)).catch((err: Error) => log.warn({ workspace: this.id, path, err: err.message }, 'a finished relink stays recorded until the next start'));
  }

  /** The relinks recorded and not over (a node stopped in the middle of one). A record it cannot read is dropped, and said. */
  async relinksDue(): Promise<RelinkDue[]> {
    const out: RelinkDue[] = [];
    const unreadable: string[] = [];
    const p = prefix(this.id, 'r');
    await this.store.forEach(p, (k, value) => {
      const path = k.subarray(p.length).toString('utf8');
      try {
        const r = new Reader(value);
        if (r.uint() !== RELINK_RECORD) throw new Error('not a record this node writes');
        const file = () => ({ dev: r.uint(), ino: r.uint(), mtimeNs: BigInt(r.string()), size: r.uint(), mode: r.uint(), uid: r.uint(), gid: r.uint() });
        const was = file();
        const now = file();
        const names = Array.from({ length: r.uint() }, () => r.string());
        out.push({ path, was, now, names });
      } catch (err) {
        log.warn({ workspace: this.id, path, err: (err as Error).message }, 'a relink record that cannot be read is dropped');
        unreadable.push(path);
      }
    });
    for (const path of unreadable) await this.relinkDone(path);
    return out;
  }

  /**
   * Records changes durably, bumps the generation per change, and announces
   * them once they are on disk. Changes asked for while a write is under way
   * go together in the next write (group commit): concurrent commits share
   * one database write, and announcements keep generation order.
   *
   * `statAt`: the generation when a directory's stat was asked for. Stats
   * are taken off this thread and come back in any order: a commit's stat
   * of its directory, taken before a mkdir there, may come back after the
   * mkdir's was recorded, and would record the directory's older link count
   * and times (the watcher, finding the index as the mkdir left it, has
   * nothing to correct). A stat asked for before the path's last change is
   * taken again; one asked for after it sees every change recorded before.
   */
  async apply(list: { path: string; entry: IndexEntry | null; statAt?: number }[], opts: { log?: boolean } & Origin = {}): Promise<Change[]> {
    if (list.length === 0) return [];
    const staleOnes = () => list.filter((c) => c.statAt !== undefined && (this.lastChanged.get(c.path) ?? this.lastChangedFloor) > c.statAt);
    const restat = (c: (typeof list)[number], attr: Attr | null): void => {
      // Gone, or no longer a directory, since: whoever changed it records that.
      if (!attr || !c.entry || !isDir(attr.mode)) list.splice(list.indexOf(c), 1);
      else c.entry = { ...c.entry, attr };
    };
    const now = this.calls.lstatNow;
    let stale = staleOnes();
    if (now) {
      // Inline calls (a local disk): taken here, nothing is recorded before this write.
      for (const c of stale) restat(c, tryOrNull(() => now(this.paths.abs(c.path))));
    } else {
      // Through the pool, a stat taken again may come back stale too: a few rounds, then as it is (the watcher looks after it).
      for (let round = 0; stale.length > 0 && round < STAT_AGAIN_ROUNDS; round++) {
        for (const c of stale) {
          c.statAt = this.generation;
          restat(c, await this.calls.lstatOrNull(this.paths.abs(c.path)).catch(() => null));
        }
        stale = staleOnes();
      }
    }
    if (list.length === 0) return [];
    // The writer knows what it asked for; the other names of a hard link changed all the same.
    const asked = list.length;
    // Hard links share one inode: new attributes for one name are the
    // attributes of every name, or the others would look changed later.
    const named = new Set(list.map((c) => c.path));
    for (const { entry } of [...list]) {
      if (!entry || entry.attr.nlink < 2 || isDir(entry.attr.mode)) continue;
      for (const other of this.links.get(inodeKey(entry.attr)) ?? []) {
        if (!named.has(other)) {
          named.add(other);
          list.push({ path: other, entry: { ...entry } });
        }
      }
    }
    const logIt = opts.log ?? true;
    const group = this.openGroup();
    const changes: Change[] = [];
    for (const [i, { path, entry }] of list.entries()) {
      const generation = ++this.generation;
      this.changedAt(path, generation);
      this.setMem(path, entry);
      if (entry) group.batch.put(this.entryKey(path), encodeEntry(entry));
      else group.batch.del(this.entryKey(path));
      if (logIt) group.batch.put(this.logKey(generation), new Writer().string(path).bool(entry === null).done());
      changes.push(i < asked && ownChange(opts, path, entry) ? { generation, path, entry, origin: opts.origin } : { generation, path, entry });
    }
    group.changes.push(...changes);
    group.generation = this.generation;
    opts.last = this.generation;
    if (!logIt) this.logFloor = this.generation;
    await group.written;
    return changes;
  }

  private changedAt(path: string, generation: number): void {
    this.lastChanged.delete(path); // re-inserted last: the bound drops the oldest
    this.lastChanged.set(path, generation);
    if (this.lastChanged.size > LAST_CHANGED_KEPT) {
      const [oldest, g] = this.lastChanged.entries().next().value as [string, number];
      this.lastChanged.delete(oldest);
      this.lastChangedFloor = g;
    }
  }

  /** Changes waiting for the next database write, and the write under way. */
  private group: { batch: Batch; changes: Change[]; generation: number; written: Promise<void> } | undefined;
  private writing: Promise<void> = Promise.resolve();
  /**
   * Writes the database refused (its disk was full), oldest first. What they
   * record has happened on disk already (a file is in place): memory is
   * the truth, they go ahead of the next write, and one is tried every
   * second until they land. A node killed meanwhile finds those files
   * changed when it walks its tree at the next start.
   */
  private unwritten: Batch | undefined;
  /** The changes those writes log: a subscriber catching up from the log gets them from here. */
  private unwrittenChanges: Change[] = [];
  private retryTimer?: NodeJS.Timeout;

  private openGroup(): NonNullable<WorkspaceIndex['group']> {
    if (this.group) return this.group;
    const g = { batch: this.store.batch(), changes: [] as Change[], generation: this.generation, written: Promise.resolve() };
    g.written = this.writing.then(async () => {
      if (this.group === g) this.group = undefined; // later changes go to the next write
      g.batch.put(this.metaKey('generation'), new Writer().uint(g.generation).done());
      const batch = this.unwritten ? this.unwritten.followedBy(g.batch) : g.batch;
      try {
        await batch.commit();
        if (this.unwritten) log.info({ workspace: this.id }, 'index changes the database refused earlier are written');
        this.unwritten = undefined;
        this.unwrittenChanges = [];
      } catch (err) {
        if (!this.unwritten) log.warn({ workspace: this.id, err: (err as Error).message }, 'the database refused an index write; the node goes on from memory and writes it once the database takes writes again');
        this.unwritten = batch;
        this.unwrittenChanges.push(...g.changes);
        this.retryTimer ??= setTimeout(() => {
          this.retryTimer = undefined;
          if (this.unwritten) void this.openGroup().written;
        }, 1000).unref();
      }
      // Subscribers hear of changes made on disk whether or not the index could record them yet.
      for (const c of g.changes) this.emit('change', c);
    });
    this.writing = g.written.catch(() => undefined);
    this.group = g;
    return g;
  }

  /** One more try at writing what the database refused (the node is stopping). */
  async writeOut(): Promise<void> {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.unwritten) await this.openGroup().written;
    clearTimeout(this.retryTimer);
  }

  /** Paths changed after `gen`, oldest first, each once (its latest state is in `entries`). */
  async *changedSince(gen: number): AsyncGenerator<{ generation: number; path: string }> {
    const seen = new Map<string, number>();
    for await (const { key: k, value } of this.store.range(this.logKey(gen + 1), this.logKey(this.generation + 1))) {
      seen.set(new Reader(value).string(), Number(k.readBigUInt64BE(k.length - 8)));
    }
    for (const c of this.unwrittenChanges) if (c.generation > gen && c.generation > (seen.get(c.path) ?? 0)) seen.set(c.path, c.generation);
    // Map iteration is insertion order; re-inserting moves nothing, so sort by generation.
    yield* [...seen].sort((a, b) => a[1] - b[1]).map(([path, generation]) => ({ path, generation }));
  }

  /** Drops change-log records older than the retention window. */
  async pruneLog(): Promise<void> {
    const floor = this.generation - this.opts.logRetention;
    if (floor <= this.logFloor) return;
    const b = this.store.batch();
    for await (const { key: k } of this.store.range(this.logKey(0), this.logKey(floor + 1), { limit: 100_000 })) b.del(k);
    await b.commit();
    this.logFloor = floor;
  }

  listChildren(dir: string): string[] | undefined {
    const set = this.children.get(dir);
    return set ? [...set] : undefined;
  }

  /**
   * Brings a directory's names up to date with the disk when the directory
   * changed since it was indexed, before it is listed: the watcher hears of
   * another writer's files a moment late (a node serving a replica of the
   * workspace hears of every file the other node commits that way), and a
   * listing taken meanwhile would leave them out. A directory unchanged
   * since indexed costs one lstat.
   */
  async syncNames(dir: string): Promise<void> {
    const prev = this.entries.get(dir);
    const attr = await this.calls.lstat(this.paths.abs(dir)).catch(() => undefined);
    if (!prev || !attr || !isDir(prev.attr.mode) || sameAttr(prev.attr, attr)) return;
    await this.recheck(dir);
  }

  /**
   * Compares an indexed directory's names with the disk (one readdir) and
   * refreshes the directory and the names that differ: for what no event
   * reports (see TreeWatcher.onChange).
   */
  async recheck(dir: string): Promise<void> {
    if (!isDir(this.entries.get(dir)?.attr.mode ?? 0)) return;
    const names = await readdir(this.paths.abs(dir)).catch(() => undefined);
    if (!names) return;
    const onDisk = new Set(names.filter((n) => !n.startsWith(TEMP_PREFIX) && !this.isExcluded(join(this.paths.abs(dir), n))));
    const known = this.children.get(dir) ?? new Set<string>();
    const changed = [...[...onDisk].filter((n) => !known.has(n)), ...[...known].filter((n) => !onDisk.has(n))].map((n) => joinRel(dir, n));
    await this.refreshAll([dir, ...changed]);
  }

  /**
   * `rel` as the disk has it this moment, for an answer that cannot wait
   * for the index to take a change the watcher is still applying (hashing
   * a big file, say: see caughtUp in service.ts): the indexed entry while
   * its stat still matches, else what its stat alone tells. A regular file
   * then has no digest, and whoever wants its content asks for its
   * manifest, which waits for the hash. Undefined when nothing is there, or
   * nothing the index would hold (a temp file, an excluded path).
   */
  async asOnDisk(rel: string): Promise<IndexEntry | undefined> {
    const abs = await this.paths.safeAbs(rel);
    if (rel !== '' && (baseName(rel).startsWith(TEMP_PREFIX) || this.isExcluded(abs))) return undefined;
    const attr = await this.calls.lstatOrNull(abs);
    return attr ? await this.withStat(rel, abs, attr) : undefined;
  }

  /**
   * A directory's names with their entries as the disk has them this
   * moment (see asOnDisk), `statConcurrency` lstats at once. A name gone
   * meanwhile is left out; any other failure fails the listing rather
   * than leave a name out, which a mount would take for gone.
   */
  async listOnDisk(dir: string): Promise<{ path: string; entry: IndexEntry }[]> {
    const dirAbs = await this.paths.safeAbs(dir);
    const before = await this.calls.lstat(dirAbs);
    const names = await this.calls.readdir(dirAbs);
    // The directory itself, not a symlink put in its place while it was read: its names could be from outside the root.
    const after = await this.calls.lstat(dirAbs);
    if (!isDir(before.mode) || !isDir(after.mode) || before.ino !== after.ino || before.dev !== after.dev) {
      throw new FsError('ESTALE', `"${dir}" was replaced while it was listed`);
    }
    const limit = pLimit(this.opts.statConcurrency);
    const found = await Promise.all(
      names
        .filter((n) => !n.startsWith(TEMP_PREFIX) && !this.isExcluded(join(dirAbs, n)))
        .map((name) =>
          limit(async () => {
            const path = joinRel(dir, name);
            const abs = join(dirAbs, name);
            const attr = await this.calls.lstatOrNull(abs);
            const entry = attr && (await this.withStat(path, abs, attr));
            return entry ? { path, entry } : undefined;
          }),
        ),
    );
    return found.filter((f) => f !== undefined);
  }

  /** The entry for what an lstat found at `rel`; undefined when it went meanwhile (a symlink whose target cannot be read: ENOENT). */
  private async withStat(rel: string, abs: string, attr: Attr): Promise<IndexEntry | undefined> {
    const prev = this.entries.get(rel);
    if (isReg(attr.mode)) return prev?.digest && sameTuple(prev.attr, attr) ? prev : { attr };
    if (!isLnk(attr.mode)) return { attr };
    if (prev?.target !== undefined && sameAttr(prev.attr, attr)) return prev;
    try {
      return { attr, target: await this.calls.readlink(abs) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  locateChunk(hash: Buffer): ChunkLocation | undefined {
    if (!this.chunkLocMap) {
      this.chunkLocMap = new Map();
      for (const [path, e] of this.entries) {
        for (const c of e.chunks ?? []) this.chunkLocMap.set(c.hash.toString('latin1'), { path, offset: c.offset, length: c.length });
      }
    }
    return this.chunkLocMap.get(hash.toString('latin1'));
  }

  private isExcluded(abs: string): boolean {
    return this.opts.excluded.some((x) => abs === x || abs.startsWith(x + '/'));
  }

  /** Walks the whole tree and brings the index up to date. */
  async scan(): Promise<ScanStats> {
    const stats = await this.reconcile('', { log: !this.fresh });
    this.fresh = false;
    return stats;
  }

  /**
   * Brings the index of the subtree at `rel` up to date: lstat everything,
   * re-hash only regular files whose stat tuple changed, drop what is gone.
   */
  async reconcile(rel: string, opts: { log?: boolean } = {}): Promise<ScanStats> {
    const started = performance.now();
    const stats: ScanStats = { files: 0, dirs: 0, others: 0, hashedFiles: 0, hashedBytes: 0, removed: 0, tempsRemoved: 0, durationMs: 0 };
    /** `was`: the index's entry when the walk looked at the path; one changed since (the watcher's, newer) is left as it is. */
    const pending: { path: string; entry: IndexEntry | null; was: IndexEntry | undefined }[] = [];
    const flush = (force: boolean): Promise<void> => {
      if (pending.length === 0 || (!force && pending.length < 2000)) return this.flushChain;
      const list = pending.splice(0);
      this.flushChain = this.flushChain.then(() => this.apply(list.filter((p) => this.entries.get(p.path) === p.was), opts).then(() => undefined));
      return this.flushChain;
    };
    const record = (path: string, entry: IndexEntry | null, was = this.entries.get(path)): void => {
      pending.push({ path, entry, was });
      void flush(false);
    };
    const seen = new Set<string>();
    const hashing: Promise<void>[] = [];
    const limit = pLimit(this.opts.statConcurrency);
    let lastProgress = 0;

    const consider = async (path: string, attr: Attr): Promise<void> => {
      seen.add(path);
      const prev = this.entries.get(path);
      if (isReg(attr.mode)) {
        stats.files++;
        if (prev?.digest && sameTuple(prev.attr, attr)) {
          if (!sameAttr(prev.attr, attr)) record(path, { ...prev, attr });
          return;
        }
        const abs = this.paths.abs(path);
        hashing.push(
          this.pool.hash(abs).then(
            async (r) => {
              // Replaced while hashed (see validateNow): the file there now is looked at instead.
              if (!(await this.stillThere(abs, r.attr))) {
                await this.validate(path).then(
                  () => undefined,
                  () => void seen.delete(path),
                );
                return;
              }
              stats.hashedFiles++;
              stats.hashedBytes += r.manifest.size;
              record(path, { attr: r.attr, digest: r.manifest.digest, chunks: r.manifest.chunks }, prev);
            },
            (err: NodeJS.ErrnoException) => {
              if (err.code !== 'ENOENT') log.warn({ workspace: this.id, path, err: err.message }, 'cannot hash file; left out of the index');
              seen.delete(path);
            },
          ),
        );
      } else if (isLnk(attr.mode)) {
        stats.others++;
        if (prev && prev.target !== undefined && sameAttr(prev.attr, attr)) return;
        try {
          record(path, { attr, target: await this.calls.readlink(this.paths.abs(path)) });
        } catch {
          seen.delete(path);
        }
      } else {
        if (isDir(attr.mode)) stats.dirs++;
        else stats.others++;
        if (!prev || !sameAttr(prev.attr, attr) || (prev.digest && !isReg(attr.mode))) record(path, { attr });
      }
      if (this.opts.onProgress && stats.files - lastProgress >= 5000) {
        lastProgress = stats.files;
        this.opts.onProgress({ ...stats, durationMs: performance.now() - started });
      }
    };

    const reclaimTemp = async (abs: string, attr: Attr): Promise<void> => {
      const ageMs = Date.now() - Number(attr.mtimeNs / 1_000_000n);
      if (ageMs < this.opts.tempTtlMs) return;
      try {
        await unlink(abs);
        stats.tempsRemoved++;
        log.info({ workspace: this.id, path: abs, ageMs }, 'removed stale temp file');
      } catch (err) {
        log.warn({ workspace: this.id, path: abs, err: (err as Error).message }, 'cannot remove stale temp file');
      }
    };

    const visitDir = async (dir: string): Promise<void> => {
      const subdirs: string[] = [];
      for (const { path, abs, attr } of await this.listDir(dir, limit)) {
        if (baseName(path).startsWith(TEMP_PREFIX)) {
          await reclaimTemp(abs, attr);
          continue;
        }
        await consider(path, attr);
        if (isDir(attr.mode)) subdirs.push(path);
      }
      await Promise.all(subdirs.map(visitDir));
    };

    let top: Attr | undefined;
    try {
      top = await this.calls.lstat(this.paths.abs(rel));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || rel === '') throw err;
    }
    if (top) {
      await consider(rel, top);
      if (isDir(top.mode)) await visitDir(rel);
    }
    await Promise.all(hashing);
    // Not seen by the walk: gone, or made after the walk read its directory
    // (and indexed meanwhile from the watcher's event): that one stays.
    // Below an unseen path that is gone everything is gone, so a subtree
    // removed while the node was down costs one look, not one per path.
    const unseen = this.subtree(rel).filter((path) => !seen.has(path));
    const topOf = new Map<string, string>();
    for (const path of unseen) topOf.set(path, topOf.get(parentOf(path)) ?? path); // (parents come before their children)
    const there = new Map<string, boolean>();
    const look = (paths: string[]): Promise<unknown> => Promise.all(paths.map((path) => limit(async () => there.set(path, await this.madeSince(path)))));
    await look(unseen.filter((path) => topOf.get(path) === path));
    await look(unseen.filter((path) => topOf.get(path) !== path && there.get(topOf.get(path)!)));
    for (const path of unseen) {
      if (there.get(path)) continue;
      stats.removed++;
      record(path, null);
    }
    await flush(true);
    stats.durationMs = Math.round(performance.now() - started);
    return stats;
  }

  /** Whether a path a walk did not see is on disk now, with no symlink on the way to it (a directory swapped for one leads elsewhere). */
  private async madeSince(rel: string): Promise<boolean> {
    const abs = this.paths.abs(rel);
    try {
      await this.calls.lstat(abs);
      return (await this.calls.realpath(dirname(abs))) === dirname(abs);
    } catch {
      return false;
    }
  }

  /**
   * A directory's entries with their lstat attributes (excluded and
   * vanished names left out). On local disks (`inlineMetadata`) the calls
   * are made inline, one directory at a time (see meta-calls.ts); the event
   * loop gets a turn after each directory. On network filesystems they go
   * through the pool, `statConcurrency` at once.
   */
  private async listDir(dir: string, limit: ReturnType<typeof pLimit>): Promise<{ path: string; abs: string; attr: Attr }[]> {
    const out: { path: string; abs: string; attr: Attr }[] = [];
    const dirAbs = this.paths.abs(dir);
    this.beforeList?.(dir);
    let names: string[];
    try {
      names = await this.calls.readdir(dirAbs);
    } catch (err) {
      this.warnUnlistable(dir, err);
      return out;
    }
    const wanted = names.map((name) => ({ path: joinRel(dir, name), abs: join(dirAbs, name) })).filter((n) => !this.isExcluded(n.abs));
    if (this.opts.inlineMetadata) {
      for (const { path, abs } of wanted) {
        const attr = await this.calls.lstatOrNull(abs);
        if (attr) out.push({ path, abs, attr });
      }
      await new Promise((r) => setImmediate(r));
      return out;
    }
    await Promise.all(
      wanted.map(({ path, abs }) =>
        limit(async () => {
          try {
            out.push({ path, abs, attr: await this.calls.lstat(abs) });
          } catch {
            // vanished between readdir and lstat
          }
        }),
      ),
    );
    return out;
  }

  private warnUnlistable(dir: string, err: unknown): void {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') log.warn({ workspace: this.id, path: dir, err: (err as Error).message }, 'cannot list directory');
  }

  /** `rel` and every indexed path below it, parents before children. */
  subtree(rel: string): string[] {
    const out: string[] = [];
    if (!this.entries.has(rel)) return out;
    const stack = [rel];
    while (stack.length > 0) {
      const p = stack.pop()!;
      out.push(p);
      for (const name of this.children.get(p) ?? []) stack.push(joinRel(p, name));
    }
    return out;
  }

  /**
   * Where a path not in the index is looked for on disk: its topmost
   * ancestor the index does not know, else the path itself. The index stays
   * a tree, its new directories walked and then watched: a file indexed
   * under a directory not indexed yet was outside every later walk of that
   * directory, and its removal went unnoticed.
   */
  private unindexedTop(rel: string): string {
    let top = rel;
    while (top !== '' && !this.entries.has(parentOf(top))) top = parentOf(top);
    return top;
  }

  /**
   * Looks for a path the index does not have (see unindexedTop); stats
   * asking under the same new directory at once share one walk of it.
   * Nothing under an excluded directory (the node's own state) is looked for.
   */
  findUnindexed(rel: string): Promise<void> {
    const top = this.unindexedTop(rel);
    // Nothing the index leaves out: an excluded path, a temp file (a commit under way, or one a crash left).
    if (this.isExcluded(this.paths.abs(top)) || baseName(top).startsWith(TEMP_PREFIX)) return Promise.resolve();
    let p = this.finding.get(top);
    if (!p) {
      p = this.refresh(top).finally(() => this.finding.delete(top));
      this.finding.set(top, p);
    }
    return p;
  }

  /** Re-checks one path after a filesystem event: cheap when nothing changed. */
  async refresh(rel: string, opts: Origin = {}): Promise<void> {
    await this.refreshAll([rel], undefined, opts);
  }

  /**
   * Re-checks paths, lstat'ed side by side; what their stats alone tell is
   * recorded in one database write (a namespace change's name and its
   * directory: a mkdir paid two writes and a walk of the new directory
   * before). `madeDir` is a directory this node just created: it is taken as
   * empty (the watcher compares its names with the disk once it watches it,
   * so an entry made in it meanwhile is still found). A path whose news
   * needs more than its stat (a new or replaced path to walk, a file to
   * hash, a symlink to read) is handled after that, one by one.
   *
   * A path this node is committing is left to the commit, which records it
   * (looked at now, its file would be hashed a second time and announced
   * without the commit's writer). Returns those paths: one whose change
   * must not be missed (the watcher's) is looked at once the commit is over.
   *
   * `origin`: the writer whose change this looks at (see Origin); what a
   * walk or a re-hash finds goes to every subscriber all the same.
   *
   * `dirsToCommits` (the watcher): a directory with commits under way in it
   * is left to them too. Looked at between a commit's link and its record,
   * it would be recorded for everyone, the writer too, whose reply said
   * that the directory's times were its own: they would move on its mount
   * after its writes were over.
   */
  async refreshAll(paths: readonly string[], madeDir?: string, opts: Origin = {}, dirsToCommits = false): Promise<string[]> {
    const statAt = this.generation;
    const attrs = await Promise.all(paths.map((rel) => this.calls.lstat(this.paths.abs(rel)).catch(() => undefined)));
    // By path: a directory removed with what was in it names each of those once.
    const list = new Map<string, IndexEntry | null>();
    const deeper: { rel: string; attr: Attr; known: boolean }[] = [];
    const leftToCommits: string[] = [];
    paths.forEach((rel, i) => {
      if (this.commits.has(rel) || (dirsToCommits && this.commitsIn.has(rel))) {
        leftToCommits.push(rel);
        return;
      }
      const attr = attrs[i];
      const prev = this.entries.get(rel);
      if (!attr) {
        if (prev) for (const path of this.subtree(rel)) list.set(path, null);
      } else if (isDir(attr.mode) && (prev ? isDir(prev.attr.mode) : rel === madeDir)) {
        // A directory's own attributes; its children report their own events.
        if (!prev || !sameAttr(prev.attr, attr)) list.set(rel, { attr });
      } else {
        deeper.push({ rel, attr, known: prev !== undefined });
      }
    });
    // A directory's own attributes may have been recorded newer meanwhile (see apply).
    await this.apply([...list].map(([path, entry]) => ({ path, entry, statAt: entry && isDir(entry.attr.mode) ? statAt : undefined })), opts);
    for (const { rel, attr, known } of deeper) {
      const prev = this.entries.get(rel);
      // Indexed meanwhile by the walk of a new directory above it: that entry is newer than `attr`.
      if (!known && prev) continue;
      if (!prev || (attr.mode & 0o170000) !== (prev.attr.mode & 0o170000)) {
        await this.reconcile(rel); // new (or replaced) path: walk what is there now
      } else if (isReg(attr.mode)) {
        // Unchanged since indexed (the usual case: the event was this node's own commit): nothing to do.
        if (!prev.digest || !sameTuple(prev.attr, attr)) await this.validate(rel).catch(() => undefined);
      } else if (!sameAttr(prev.attr, attr)) {
        const target = isLnk(attr.mode) ? await this.calls.readlink(this.paths.abs(rel)).catch(() => prev.target) : undefined;
        await this.apply([{ path: rel, entry: target === undefined ? { attr } : { attr, target } }], opts);
      }
    }
    return leftToCommits;
  }

  /**
   * After the node itself changed `rel` without touching its content
   * (rename, chmod, utimens, link), keep the known digest: the stat tuple
   * moved (ctime, mtime) but the bytes did not, and re-hashing would be waste.
   */
  async adopt(rel: string, known: IndexEntry | undefined, opts: Origin = {}): Promise<IndexEntry | null> {
    let attr: Attr;
    try {
      attr = await this.calls.lstat(this.paths.abs(rel));
    } catch {
      if (this.entries.has(rel)) await this.apply(this.subtree(rel).map((path) => ({ path, entry: null })), opts);
      return null;
    }
    if (known && isReg(attr.mode) && known.digest && known.attr.ino === attr.ino && known.attr.dev === attr.dev && known.attr.size === attr.size) {
      const entry = { ...known, attr };
      await this.apply([{ path: rel, entry }], opts);
      return entry;
    }
    await this.refresh(rel, opts);
    return this.entries.get(rel) ?? null;
  }

  /** After the node renamed `from` to `to` itself: move the indexed subtree instead of re-hashing it. */
  async moved(from: string, to: string, opts: Origin = {}): Promise<IndexEntry | null> {
    const movedEntries = this.subtree(from).map((p) => ({ path: to + p.slice(from.length), entry: this.entries.get(p)! }));
    const list: { path: string; entry: IndexEntry | null }[] = [];
    for (const path of this.subtree(to)) list.push({ path, entry: null });
    for (const path of this.subtree(from)) list.push({ path, entry: null });
    list.push(...movedEntries);
    await this.apply(list, opts);
    return this.adopt(to, movedEntries[0]?.entry, opts);
  }

  /** After renameat2(RENAME_EXCHANGE): the two paths (and what is under them) trade places. */
  async exchanged(a: string, b: string, opts: Origin = {}): Promise<[IndexEntry | null, IndexEntry | null]> {
    const move = (from: string, to: string) => this.subtree(from).map((p) => ({ path: to + p.slice(from.length), entry: this.entries.get(p)! }));
    const toB = move(a, b);
    const toA = move(b, a);
    const list: { path: string; entry: IndexEntry | null }[] = [...this.subtree(a), ...this.subtree(b)].map((path) => ({ path, entry: null }));
    list.push(...toB, ...toA);
    await this.apply(list, opts);
    return [await this.adopt(a, toA[0]?.entry, opts), await this.adopt(b, toB[0]?.entry, opts)];
  }

  /**
   * The index entry of a regular file, checked against the file as it is
   * now: if its stat tuple moved, it is re-hashed (once, whoever asks).
   */
  validate(rel: string): Promise<IndexEntry> {
    // One look at a path at a time. A caller arriving while one runs may
    // have changed the file since it started (the bulk-lane test wrote a
    // file and asked for its manifest while the watcher's hash of the
    // version before ran, and got that version's): it looks again once that
    // one ends, a stat that re-hashes only if the file moved.
    const running = this.validating.get(rel);
    const p: Promise<IndexEntry> = (running ? running.catch(() => undefined).then(() => this.validateNow(rel)) : this.validateNow(rel)).finally(() => {
      if (this.validating.get(rel) === p) this.validating.delete(rel);
    });
    this.validating.set(rel, p);
    return p;
  }

  /** Whether the file hashed with `hashed` is still the one at `abs` (not replaced by another, nor removed). */
  private async stillThere(abs: string, hashed: Attr): Promise<boolean> {
    const now = await this.calls.lstat(abs).catch(() => undefined);
    return !!now && now.ino === hashed.ino && now.dev === hashed.dev;
  }

  private async validateNow(rel: string, tries = 1): Promise<IndexEntry> {
    const abs = this.paths.abs(rel);
    let attr: Attr;
    try {
      attr = await this.calls.lstat(abs);
    } catch (err) {
      if (this.entries.has(rel)) await this.apply(this.subtree(rel).map((path) => ({ path, entry: null })));
      throw new FsError((err as NodeJS.ErrnoException).code ?? 'EIO', `"${rel}" is gone`);
    }
    const prev = this.entries.get(rel);
    if (!isReg(attr.mode)) {
      await this.reconcile(rel);
      throw new FsError(isDir(attr.mode) ? 'EISDIR' : 'EINVAL', `"${rel}" is not a regular file`);
    }
    if (prev?.digest && sameTuple(prev.attr, attr)) return prev;
    const r = await this.pool.hash(abs);
    // Replaced while it was hashed (a commit through another node sharing this disk
    // renames a new file over the name): what was hashed is not there any more, and
    // the change feed would hand a mount that older version after the newer one it
    // committed. Looked at again instead (twice at most: a name replaced without
    // end keeps the last hash, as before).
    if (tries < 3 && !(await this.stillThere(abs, r.attr))) return this.validateNow(rel, tries + 1);
    const entry: IndexEntry = { attr: r.attr, digest: r.manifest.digest, chunks: r.manifest.chunks };
    await this.apply([{ path: rel, entry }]);
    return entry;
  }
}
