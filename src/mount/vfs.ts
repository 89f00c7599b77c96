// The VFS core: a filesystem of workspace paths over the mount's metadata
// and chunk caches, knowing nothing of FUSE. Drivers translate kernel
// requests into these calls by path: fuse-native is handed paths, the
// native driver keeps its own table from the kernel's node ids to paths
// (and hears when the kernel forgets one). Inode numbers shown are the
// node's own (stable across remounts and the same on every mount); the
// root shows as ROOT_INO, the number the kernel uses for it.
import { stat } from 'node:fs/promises';
import pLimit from 'p-limit';
import { attrFromStats, isDir, isLnk, isReg, S_IFDIR, S_IFREG, S_ISGID, toTimespec, type Attr } from '../content/attr.js';
import { hex, type ChunkRef } from '../content/manifest.js';
import { isZeroRun } from '../content/chunk-file.js';
import { DEFAULT_CHUNKING } from '../content/chunker.js';
import { sameContent, type MetaEntry, type MetaStore, type PathChange } from '../cache/meta-store.js';
import type { MeshClient } from '../mesh/mesh-client.js';
import { attrFromWire, chunksFromWire } from '../wire/convert.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoOf, FsError } from '../wire/errors.js';
import { isWithin, joinRel, NAME_MAX, parentOf } from '../wire/rel-path.js';
import type { WManifestOut, WMutateRequest } from '../wire/types.js';
import { log } from '../log.js';
import type { ChunkReader } from './chunk-reader.js';
import { DirtyFile } from './dirty-file.js';
import { nextLocalIno } from './local-ino.js';
import { entryFromWire } from './vfs-entry.js';
import { HOLD_BYTES, INLINE_BYTES, type WriteBack } from './write-back.js';
import { laterOwner, withOwner, type JournalEntry, type Owner } from '../cache/journal.js';
import { NodeCapacity, type Capacity } from './capacity.js';
import { OwnerMap, type Ids } from './owner-map.js';
import { OwnRenames } from './own-renames.js';

export const ROOT_INO = 1;

/** Bounds of one sibling prefetch: small files of one directory fetched in one call. */
const SIBLING_PREFETCH_BYTES = 8 * 1024 * 1024;
const SIBLING_PREFETCH_FILES = 256;

export interface Node {
  ino: number;
  path: string;
  attr: Attr;
  target?: string;
}

export interface FileHandle {
  fh: number;
  path: string;
  size: number;
  chunks: ChunkRef[];
  /** The content's digest, for a handle reading what a node holds. */
  digest?: Buffer;
  /** The file's attributes when a read handle opened it (fstat of a file unlinked since: see Vfs.handleAttr). */
  attr?: Attr;
  /** Handles opened for writing share the file's dirty copy; read handles read it while a writer changes the file. */
  dirty?: DirtyFile;
  /** Opened without write access: its close commits nothing. */
  readOnly?: boolean;
  /** Content queued for write-back, read from memory, and the queued record it is. */
  pendingData?: Buffer;
  pendingSeq?: number;
  /** Where the last read ended: a read starting there is sequential. */
  lastEnd: number;
  /** Chunks before this index have been asked for by readahead. */
  aheadTo: number;
  /** Made by this open, or truncated by it (O_TRUNC): the file's version then, empty (see flush). */
  emptyAt?: number;
  /** Opened with O_APPEND: every write goes to the end of the file as this mount has it (see write). */
  append?: boolean;
  /** Of its file's failed hand-overs (DirtyFile.failures), those this handle's calls have heard of. */
  failuresSeen?: number;
}

export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  /** undefined: leave as is; 'now': the current time. */
  atimeNs?: bigint | 'now';
  mtimeNs?: bigint | 'now';
}

export const O_ACCMODE = 3;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_EXCL = 0o200;

export interface VfsOptions {
  /** Chunks fetched ahead of a sequential reader. */
  readaheadChunks: number;
  /** Files at most this large are fetched whole on their first read. */
  wholeFileBytes: number;
  /** close() returns once the file is journaled here; the node gets it moments later (--write-back async). */
  asyncWriteBack?: boolean;
}

/** Subdirectory listings asked for ahead of a walker: calls at once, and at most per directory read. */
const LISTINGS_AHEAD = 4;
const LISTINGS_AHEAD_MAX = 64;

// fallocate(2)'s modes (linux/falloc.h) that a mount carries out.
const FALLOC_KEEP_SIZE = 0x01;
const FALLOC_PUNCH_HOLE = 0x02;
const FALLOC_ZERO_RANGE = 0x10;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
/** Zeros written at a time for a punched hole or zeroed range. */
const ZERO_PIECE = 1 << 20;

/**
 * A read answered with fewer bytes than the file has there: the kernel takes
 * that for the end of the file (it shrinks its size to match), so a reader
 * sees the file cut short. Never expected; logged to find out how.
 */
function shortRead(path: string, offset: number, length: number, got: number, size: number, why: string): void {
  log.warn({ path, offset, length, got, size, why }, 'a read came back short of the file: the kernel takes that for its end');
}

/** Times a write open makes its copy again because its name was replaced meanwhile (see Vfs.newDirty). */
const NAME_CHANGE_RETRIES = 10;
/**
 * How long a writer's open keeps starting again from a newer version the
 * node has (see writeBase). Time, not a count: a client committing the file
 * again and again (a log appended to from another mount) can replace each
 * version before its chunks are fetched, several times in a row under load.
 */
const STALE_BASE_BUDGET_MS = 3_000;
/** Times a writer's open asks again while the node still names the version whose chunks it could not fetch (see writeBase). */
const SAME_BASE_RETRIES = 5;

/** Runs a namespace change's call to the node (see Vfs.mutate): as it is, or inside what must hold around it. */
type NodeCall = (call: () => ReturnType<MeshClient['mutate']>) => ReturnType<MeshClient['mutate']>;

/** The time now, in nanoseconds since the epoch (a file's times are kept so). */
const nowNs = (): bigint => BigInt(Date.now()) * 1_000_000n;

export class Vfs {
  private readonly handles = new Map<number, FileHandle>();
  private readonly listing = new Map<string, Promise<void>>();
  /** Listings asked for ahead of a walker, a few at a time (see prefetchListings). */
  private readonly listingAhead = pLimit(LISTINGS_AHEAD);
  private readonly listingsQueued = new Set<string>();
  /** Directories whose small files were fetched together, and when. */
  private readonly prefetchedDirs = new Map<string, number>();
  /** Files open for writing, by path. */
  private readonly dirty = new Map<string, DirtyFile>();
  /** Renames between committing the files they move and giving them their new paths (see rename). */
  private readonly renaming = new Set<{ paths: string[]; done: Promise<void> }>();
  private readonly openingWrite = new Map<string, Promise<DirtyFile>>();
  /** Unlinks and renames counted, and the last one of each name, while write opens are under way (see newDirty). */
  private nameChanges = 0;
  private readonly changedNames = new Map<string, number>();
  private nextFh = 1;
  /** See cutOff. */
  private goingAway = false;
  private followListener: ((fh: number) => void) | undefined;
  private shownChangedListener: ((changes: PathChange[]) => void) | undefined;

  private readonly capacity = new NodeCapacity(() => this.mesh.statFs());
  /** How the kernel's ids and the node's relate (owner-map.ts); everything here holds the node's. */
  owners = OwnerMap.none;
  /** Renames made here a moment ago: the change feed places older events under the new names. */
  readonly ownRenames = new OwnRenames();

  constructor(
    readonly meta: MetaStore,
    private readonly mesh: MeshClient,
    readonly chunks: ChunkReader,
    private readonly writeBack: WriteBack,
    private readonly opts: VfsOptions,
  ) {
    // A queued version dropped for a newer one: files made from it inherit its base.
    writeBack.onSuperseded((seq, inherited) => {
      for (const d of this.dirty.values()) if (d.baseSeq === seq) d.baseSeq = inherited;
    });
    // A version queued by a close that the node then refused: the handles still open on the file hear of it.
    writeBack.onRefused((seq, path, err) => {
      const d = this.dirty.get(path);
      if (d?.baseSeq === seq) d.handOverFailed(err);
    });
  }

  /**
   * Whose a file, directory or symlink `uid`:`gid` makes in `parent` is:
   * theirs, with the directory's group if it has the set-group-ID bit (as
   * the node's filesystem does). The node is asked for that owner unless
   * it is the mount's own user's, whose things the node makes as its own
   * user's (which is what the mount's user is shown as): only others (with
   * --allow-other) ask, and only a node run as root can give it.
   */
  private madeBy(parent: Attr, uid: number, gid: number): { shown: Ids; ask?: Owner } {
    const own = this.owners.maker;
    const dirGroup = (parent.mode & S_ISGID) !== 0;
    const shown = { uid, gid: dirGroup ? parent.gid : gid };
    const ask = { uid: uid === own.uid ? -1 : uid, gid: dirGroup || gid === own.gid ? -1 : gid };
    return { shown, ask: ask.uid < 0 && ask.gid < 0 ? undefined : ask };
  }

  get openFiles(): number {
    return this.handles.size;
  }

  /** The files open now, each once (by the name a file being written has now), those open for writing marked. */
  openFileList(): { path: string; writing: boolean }[] {
    const files = new Map<string, boolean>();
    for (const h of this.handles.values()) {
      const path = h.dirty?.path ?? h.path;
      files.set(path, files.get(path) || !h.readOnly);
    }
    return [...files].map(([path, writing]) => ({ path, writing })).sort((a, b) => a.path.localeCompare(b.path));
  }

  /**
   * The mount is going away with files open: their processes are cut off.
   * From now on a call that would open, make or change a file fails with
   * ENOTCONN, and every handle still open is released as the kernel would
   * at its close, so what writers wrote goes to the write-back (once the
   * kernel's connection is gone it sends no release, and what a write()
   * had accepted was lost). Returns how many handles there were.
   */
  async cutOff(): Promise<number> {
    this.goingAway = true;
    let released = 0;
    // Opens under way finish first (they then hold a handle too).
    for (let round = 0; round < 10 && (this.handles.size > 0 || this.openingWrite.size > 0); round++) {
      await Promise.allSettled([...this.openingWrite.values()]);
      for (const fh of [...this.handles.keys()]) {
        released++;
        await this.release(fh).catch((err: Error) => log.error({ fh, err: err.message }, 'cannot release a handle of a file left open'));
      }
    }
    return released;
  }

  /** Throws once the mount is going away (see cutOff). */
  private stillServing(): void {
    if (this.goingAway) throw new FsError('ENOTCONN', 'the mount is going away');
  }

  private node(path: string, e: MetaEntry): Node {
    return { ino: path === '' ? ROOT_INO : e.attr.ino, path, attr: e.attr, target: e.target };
  }

  /**
   * A path the mount shows (being written, or known to the metadata), as
   * given: ENOENT otherwise. Checked before the calls that name a file or
   * a parent directory, without waiting: the kernel named it moments ago.
   */
  private known(path: string): string {
    if (path !== '' && !this.dirty.has(path) && !this.meta.get(path)) throw new FsError('ENOENT', `"${path}" does not exist`);
    return path;
  }

  /** Lists a directory from the node (once at a time) into the metadata store. */
  list(dir: string): Promise<void> {
    // A directory queued for the node is there only here: it lists as the mount shows it.
    if (this.writeBack.pendingMkdir(dir)) return Promise.resolve();
    let p = this.listing.get(dir);
    if (!p) {
      // Asked for now: what changes here before the answer arrives is newer than it.
      const ticket = this.meta.beginListing(dir);
      p = this.mesh
        .listDir(dir)
        .then(async (r) => {
          // Files closed here and still queued for a node stay as the mount
          // shows them: the listing is the node's older state (or lacks them).
          const queued = this.meta
            .childNames(dir)
            .map((name) => joinRel(dir, name))
            .filter((path) => this.writeBack.pendingFor(path))
            .map((path) => [path, this.meta.get(path)!] as const);
          const changes = await this.meta.putListing(
            dir,
            entryFromWire(r.dir!),
            r.entries.map((e) => ({ name: e.name, entry: entryFromWire(e) })),
            ticket,
          );
          for (const [path, shown] of queued) this.meta.putVolatile(path, shown);
          // (What stays shown as it was is no change for the kernel.)
          const kept = new Set(queued.map(([path]) => path));
          const told = kept.size ? changes.filter((c) => !kept.has(c.path)) : changes;
          if (told.length) this.shownChangedListener?.(told);
        })
        .finally(() => {
          this.meta.endListing(ticket);
          this.listing.delete(dir);
        });
      this.listing.set(dir, p);
    }
    return p;
  }

  /** The entry at a path as the mount has it now, without asking a node: a file being written, then memory. */
  current(path: string): MetaEntry | undefined {
    const d = this.dirty.get(path);
    if (d && !d.unlinked) return d.entry();
    return this.meta.get(path);
  }

  /** The entry at a path: a file being written, then memory, then the node (listing its parent once). */
  async entry(path: string): Promise<MetaEntry> {
    const known = this.current(path);
    if (known) return known;
    if (path === '') {
      await this.list('');
      return this.meta.get('')!;
    }
    const parent = await this.entry(parentOf(path));
    if (!isDir(parent.attr.mode)) throw new FsError('ENOTDIR', `"${parentOf(path)}" is not a directory`);
    if (!parent.listed) {
      await this.list(parentOf(path));
      const e = this.meta.get(path);
      if (e) return e;
    }
    throw new FsError('ENOENT', `"${path}" does not exist`);
  }

  /** What the mount shows at a path (lookup, getattr). */
  async resolve(path: string): Promise<Node> {
    return this.node(path, await this.entry(path));
  }

  async readdir(dir: string): Promise<Node[]> {
    this.known(dir);
    let e = await this.entry(dir);
    if (!isDir(e.attr.mode)) throw new FsError('ENOTDIR', `"${dir}" is not a directory`);
    if (!e.listed) {
      await this.list(dir);
      e = this.meta.get(dir)!;
    }
    const out: Node[] = [];
    for (const name of this.meta.childNames(dir)) {
      const path = joinRel(dir, name);
      const c = this.meta.get(path);
      if (c) out.push(this.node(path, c));
    }
    this.prefetchListings(out);
    return out;
  }

  /**
   * A directory being read is usually walked next (find, ls -R, git status,
   * rg): its subdirectories not listed yet are asked for now, a few calls
   * at a time and at most LISTINGS_AHEAD_MAX of them, so the walker finds
   * them listed instead of waiting for one round trip each. A failed one is
   * asked for again when it is needed; none are while no node answers.
   */
  private prefetchListings(children: Node[]): void {
    // No node answering: each would only wait out its deadline.
    if (!this.mesh.reachable) return;
    let n = 0;
    for (const c of children) {
      if (n >= LISTINGS_AHEAD_MAX) break;
      if (!isDir(c.attr.mode) || this.meta.get(c.path)?.listed || this.listing.has(c.path) || this.listingsQueued.has(c.path)) continue;
      n++;
      this.listingsQueued.add(c.path);
      void this.listingAhead(() => (this.meta.get(c.path)?.listed ? undefined : this.list(c.path)))
        .catch(() => undefined)
        .finally(() => this.listingsQueued.delete(c.path));
    }
  }

  async readlink(path: string): Promise<string> {
    this.known(path);
    const e = await this.entry(path);
    if (!isLnk(e.attr.mode)) throw new FsError('EINVAL', `"${path}" is not a symlink`);
    return e.target ?? '';
  }

  /** Opens a regular file; for writing, its handle shares the file's dirty copy. */
  async open(path: string, flags = 0): Promise<FileHandle> {
    this.stillServing();
    this.known(path);
    // O_TRUNC truncates even a read-only open (Linux does, when permitted).
    if ((flags & O_ACCMODE) !== 0 || (flags & O_TRUNC) !== 0) return this.openWrite(path, flags);
    const d = this.dirty.get(path);
    if (d) return this.handle(path, d, true);
    const pending = this.writeBack.pendingFor(path);
    if (pending) return this.handleOnPending(path, pending);
    let e = await this.entry(path);
    if (isDir(e.attr.mode)) throw new FsError('EISDIR', `"${path}" is a directory`);
    if (!isReg(e.attr.mode)) throw new FsError('EINVAL', `"${path}" is not a regular file`);
    let m = await this.knownManifest(path, e);
    if (!m) {
      const before = this.meta.get(path);
      const r = await this.mesh.getManifest(path);
      m = manifestFromWire(r);
      await this.takeManifest(path, before, r, m);
      // The handle reads the version the manifest is of.
      e = { ...e, attr: attrFromWire(r.attr!), digest: m.digest };
    }
    const h: FileHandle = { fh: this.nextFh++, path, size: e.attr.size, chunks: m.chunks, digest: m.digest, attr: e.attr, lastEnd: 0, aheadTo: 0, readOnly: true };
    this.handles.set(h.fh, h);
    return h;
  }

  private handle(path: string, d: DirtyFile, readOnly = false): FileHandle {
    d.handles++;
    if (!readOnly) d.writers++;
    const h: FileHandle = { fh: this.nextFh++, path, size: d.size, chunks: [], lastEnd: 0, aheadTo: 0, dirty: d, readOnly, failuresSeen: d.failures };
    this.handles.set(h.fh, h);
    return h;
  }

  /** A file closed while no node answered: reads see the queued content. */
  private async handleOnPending(path: string, pending: JournalEntry): Promise<FileHandle> {
    const data = await this.writeBack.pendingContent(pending);
    const h: FileHandle = { fh: this.nextFh++, path, size: data.length, chunks: [], attr: this.meta.get(path)?.attr, lastEnd: 0, aheadTo: 0, readOnly: true };
    h.pendingData = data;
    h.pendingSeq = pending.seq;
    this.handles.set(h.fh, h);
    return h;
  }

  /** Reads up to `length` bytes at `offset` into `into` (for drivers that hand over a buffer to fill); returns the count (0 at EOF). */
  async read(fh: number, offset: number, length: number, into: Buffer): Promise<number> {
    let n = 0;
    for (const part of await this.readSlices(fh, offset, length)) n += part.copy(into, n);
    return n;
  }

  /**
   * Up to `length` bytes at `offset`, in pieces: views of the chunks held in
   * memory where it can (a driver sends them to the kernel as they are).
   */
  async readSlices(fh: number, offset: number, length: number): Promise<Buffer[]> {
    const h = this.handles.get(fh);
    if (!h) throw new FsError('EBADF', `file handle ${fh} is not open`);
    if (h.pendingData) return [h.pendingData.subarray(offset, Math.min(h.pendingData.length, offset + length))];
    if (h.dirty) {
      await h.dirty.materialize(this.chunks);
      const buf = Buffer.allocUnsafe(length);
      const n = await h.dirty.read(offset, length, buf);
      if (n < Math.min(length, h.dirty.size - offset)) shortRead(h.path, offset, length, n, h.dirty.size, 'the dirty copy is shorter than its size');
      return [buf.subarray(0, n)];
    }
    const newer = this.newerThan(h);
    if (newer) await this.refresh(h, newer);
    if (offset >= h.size) return [];
    const end = Math.min(h.size, offset + length);
    const first = chunkIndex(h.chunks, offset);
    let last = first;
    while (last + 1 < h.chunks.length && h.chunks[last + 1]!.offset < end) last++;

    // A small file comes whole, in one call; a sequential reader gets the
    // next chunks fetched ahead, in parallel with what it reads now.
    if (h.size <= this.opts.wholeFileBytes) {
      if (h.chunks.length === 1 && !this.chunks.isLocal(h.chunks[0]!.hash)) this.prefetchSiblings(h.path);
      void this.chunks.ensure(h.chunks, h.path).catch(() => undefined);
    } else if ((offset === h.lastEnd || offset === 0) && last + 1 >= h.aheadTo - this.opts.readaheadChunks / 2) {
      // Refill the window in one call once half of it has been consumed:
      // fewer, longer streams than one call per chunk.
      const to = Math.min(h.chunks.length, last + 1 + this.opts.readaheadChunks);
      void this.chunks.ensure(h.chunks.slice(first, to), h.path).catch(() => undefined);
      h.aheadTo = to;
    }
    h.lastEnd = end;

    const parts: Buffer[] = [];
    for (let i = first; i <= last; i++) {
      const c = h.chunks[i]!;
      const from = Math.max(offset, c.offset);
      const to = Math.min(end, c.offset + c.length);
      const part = await this.chunks.slice(c, from - c.offset, to - from, h.path);
      parts.push(part);
      if (part.length < to - from) {
        // A short chunk file: the read ends there.
        shortRead(h.path, offset, length, parts.reduce((n, p) => n + p.length, 0), h.size, `chunk ${hex(c.hash)} gave ${part.length} of ${to - from} bytes`);
        break;
      }
    }
    return parts;
  }

  /**
   * A reader whose file changed since it opened it (on a node, or here and
   * landed) reads the new content: the kernel keeps one page cache per file,
   * so readers left on different contents would fill it with each other's
   * bytes (a later reader could then read pages of an old version).
   */
  private async refresh(h: FileHandle, e: MetaEntry): Promise<void> {
    if (!isReg(e.attr.mode)) return;
    const m = (await this.knownManifest(h.path, e)) ?? (await this.fetchManifest(h.path));
    const last = m.chunks[m.chunks.length - 1];
    h.digest = m.digest;
    h.chunks = m.chunks;
    h.size = last ? last.offset + last.length : 0;
    h.aheadTo = 0;
  }

  // ---- the write side -------------------------------------------------

  private async openWrite(path: string, flags: number): Promise<FileHandle> {
    let d = this.dirty.get(path);
    if (!d) {
      // Two writers opening at once share one dirty copy.
      let opening = this.openingWrite.get(path);
      if (!opening) {
        opening = this.newDirty(path, flags).finally(() => {
          this.openingWrite.delete(path);
          if (this.openingWrite.size === 0) this.changedNames.clear();
        });
        this.openingWrite.set(path, opening);
      }
      d = await opening;
    }
    // Counted at once: a last release of this copy, under way, must not
    // close it while the truncation below waits for its turn (the writes
    // of this handle then failed with EBADF, and its release lost them).
    const h = this.handle(path, d);
    h.append = (flags & O_APPEND) !== 0;
    if (flags & O_TRUNC) {
      const dirty = d;
      try {
        await dirty.exclusive(async () => {
          await this.ownCopy(dirty); // a copy handed to the write-back keeps what was closed
          dirty.materialized = true;
          await dirty.truncate(0);
        });
      } catch (err) {
        await this.release(h.fh).catch(() => undefined);
        throw err;
      }
      h.emptyAt = d.version;
    }
    return h;
  }

  /**
   * The dirty copy of a file a writer opens. An unlink or rename of the name
   * that lands while it is being made (it waits on the node and the disk)
   * leaves it without a file: committed, it would bring back a removed name
   * or meet the file put there as a conflict. It is then made again for
   * what the name holds now (or the open joins the copy a writer of that
   * file has open), or the open fails as if it came after.
   */
  private async newDirty(path: string, flags: number): Promise<DirtyFile> {
    for (let attempt = 1; ; attempt++) {
      const since = this.nameChanges;
      const d = await this.makeDirty(path, flags);
      if (!this.nameChangedSince(path, since)) {
        this.follow(d);
        return this.track(d);
      }
      await d.close().catch(() => undefined);
      if (d.onDisk) await this.writeBack.discard(d.name);
      // A file renamed onto the name while open for writing, or created there since: one copy per file.
      const live = this.dirty.get(path);
      if (live && !live.unlinked) return live;
      if (!this.meta.get(path)) throw new FsError('ENOENT', `"${path}" was removed or renamed while it was being opened`);
      if (attempt >= NAME_CHANGE_RETRIES) throw new FsError('EAGAIN', `"${path}" was replaced ${attempt} times while it was being opened`);
    }
  }

  /** An unlink or rename took effect on the node: write opens under way of (or below) these names are made again (see newDirty). */
  private namesChanged(...paths: string[]): void {
    if (this.openingWrite.size === 0) return;
    this.nameChanges++;
    for (const p of paths) this.changedNames.set(p, this.nameChanges);
  }

  private nameChangedSince(path: string, since: number): boolean {
    for (let p = path; ; p = parentOf(p)) {
      if ((this.changedNames.get(p) ?? 0) > since) return true;
      if (p === '') return false;
    }
  }

  private async makeDirty(path: string, flags: number): Promise<DirtyFile> {
    const shown = await this.entry(path);
    if (isDir(shown.attr.mode)) throw new FsError('EISDIR', `"${path}" is a directory`);
    if (!isReg(shown.attr.mode)) throw new FsError('EINVAL', `"${path}" is not a regular file`);
    await this.writeBack.flushPaths([path]).catch(() => undefined);
    const name = this.writeBack.newDirtyName();
    const pending = this.writeBack.pendingFor(path);
    let d: DirtyFile;
    if (pending) {
      // Still queued (no node): go on from the queued content, not the node's.
      d = await DirtyFile.fromPending(path, (file) => this.writeBack.copyPending(pending, file), this.writeBack.dirtyPath(name), name, shown, pending);
    } else {
      const [e, chunks] = await this.writeBase(path, flags);
      d = await DirtyFile.open(path, this.writeBack.dirtyPath(name), name, e, chunks);
    }
    return d;
  }

  /**
   * What a writer's copy starts from: the file's entry and chunk list. A
   * small file's chunks are fetched now, while nothing is written yet. The
   * chunk list the mount holds may be of a version another client has
   * replaced on the node since (its change feed has not told yet), and the
   * node no longer has those chunks. Found out now, the writer starts from
   * what the node holds; found out at the first write that needs them, that
   * write failed with EIO (two mounts appending to one log).
   */
  private async writeBase(path: string, flags: number): Promise<[MetaEntry, ChunkRef[]]> {
    const until = Date.now() + STALE_BASE_BUDGET_MS;
    let sameBase = 0;
    for (let attempt = 1; ; attempt++) {
      // Read again: the flush in makeDirty may just have committed a queued
      // version, which is then the base (what was shown before had no digest).
      let e = await this.entry(path);
      if ((flags & O_TRUNC) === 0 && (e.digest || e.attr.size > 0)) {
        const m = (await this.knownManifest(path, e)) ?? (await this.fetchManifest(path));
        const last = m.chunks[m.chunks.length - 1];
        // A manifest fetched from the node may be of a newer version than the entry.
        const stale = (last ? last.offset + last.length : 0) !== e.attr.size;
        try {
          if (stale) throw new FsError('ESTALE', `"${path}": the node has a version the mount has not heard of`);
          if (e.attr.size <= this.opts.wholeFileBytes) await this.chunks.ensure(m.chunks.filter((c) => !isZeroRun(c, DEFAULT_CHUNKING)), path);
        } catch (err) {
          // (No node answering: the open goes on as before, and a write that needs the old bytes fetches them.)
          const inTime = Date.now() < until && sameBase < SAME_BASE_RETRIES;
          const changed = inTime ? await this.changedOnNode(path, e.digest).catch(() => undefined) : undefined;
          log.debug({ path, attempt, changed, err: (err as Error).message }, "a writer's open could not fetch the chunks of the version it knew");
          if (changed) {
            // Replaced again before its chunks came: a pause of random length gets out of step with the other writer's commits.
            if (attempt > 2) await sleep(Math.random() * 10 * Math.min(attempt, 5));
            continue;
          }
          if (changed === false) {
            // The node still names that version: its index is behind its disk (its watcher has not
            // seen the change yet), or the chunks failed for another reason (the local cache, say).
            await sleep(50 * ++sameBase);
            continue;
          }
          if (!inTime) log.warn({ path, attempts: attempt, err: (err as Error).message }, "a writer's open goes on without the content of the version it starts from: a write that needs those bytes fetches them, and fails if they are gone");
        }
        // A manifest the node gave for a version newer than the entry: its own size goes with it.
        const size = last ? last.offset + last.length : 0;
        return [{ ...e, attr: { ...e.attr, size }, digest: m.digest }, m.chunks];
      }
      if (!e.digest) {
        // Listed without its digest (by a node still hashing it): truncated,
        // its content is not needed, but its digest is, as the base the
        // commit is checked against. Without one the node would take the
        // commit over whatever it has by then.
        const m = await this.fetchManifest(path).catch(() => undefined);
        if (m) e = { ...e, digest: m.digest };
      }
      return [e, []];
    }
  }

  /**
   * Whether the node holds other content at `path` than the digest the mount
   * had for it. When it does, the mount takes the node's entry and chunk
   * list (and the kernel is told), unless a newer word came meanwhile (see
   * takeManifest), so the open goes on from what the node holds; a file gone
   * there is dropped by listing its directory again.
   */
  private async changedOnNode(path: string, digest: Buffer | undefined): Promise<boolean> {
    // Asked of the node itself: a listing under way may have been answered before the change.
    const before = this.meta.get(path);
    let r;
    try {
      r = await this.mesh.getManifest(path);
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
      await this.list(parentOf(path)); // gone there: the listing drops it
      return true;
    }
    const m = manifestFromWire(r);
    if (digest && m.digest.equals(digest)) return false;
    if (!this.meta.get(path)) {
      await this.list(parentOf(path));
      return true;
    }
    if (await this.takeManifest(path, before, r, m)) this.shownChangedListener?.([{ path, what: 'attrs' }]);
    return true;
  }

  /**
   * Brings the entry up to a manifest the node answered for `path` (the
   * newest word on the file), unless another version was shown while the
   * node answered (the change feed's or a listing's, as new or newer) or
   * the file went (put back, it would be shown again). `before`: the entry
   * when the node was asked. Whether the entry was brought up to it.
   */
  private async takeManifest(path: string, before: MetaEntry | undefined, r: WManifestOut, m: { digest: Buffer; chunks: ChunkRef[] }): Promise<boolean> {
    const now = this.meta.get(path);
    // (Compared by digest: a listing puts a new entry object for the same version.)
    if (!now || !before || !sameContent(now, before)) return false;
    // (Its chunk list goes with it: a one-chunk file's is kept in the entry.)
    await this.meta.put(path, { ...now, attr: attrFromWire(r.attr!), digest: m.digest, chunks: m.chunks.length <= 1 ? m.chunks : undefined });
    await this.meta.putManifest(path, m);
    return true;
  }

  /**
   * Readers that have the file open when a writer starts changing it read
   * through its dirty copy from now on, as readers of a local file see its
   * writes (left on the content they opened, their reads would also fill the
   * kernel's page cache with old bytes for every later reader). A reader is
   * taken to have this file open when it opened the content the writer
   * starts from, at the same path: the node's version, or a version of ours
   * still queued (or landed since).
   */
  private follow(d: DirtyFile): void {
    const sameBase = (h: FileHandle): boolean => {
      if (h.digest) return !!d.baseDigest?.equals(h.digest);
      if (h.pendingSeq === undefined) return false;
      return h.pendingSeq === d.baseSeq || !!(d.baseDigest && this.writeBack.landedDigest(h.pendingSeq)?.equals(d.baseDigest));
    };
    for (const h of this.handles.values()) {
      if (h.path !== d.path || h.dirty || !sameBase(h)) continue;
      h.pendingData = undefined;
      h.dirty = d;
      h.failuresSeen = d.failures;
      d.handles++;
      this.followListener?.(h.fh);
    }
  }

  /** Whether an open handle still has the content its file had before a change (its next read moves it on: see refresh()). */
  behind(fh: number): boolean {
    const h = this.handles.get(fh);
    return !!h && !!this.newerThan(h);
  }

  /** The entry of a handle's file when its content is no longer what the handle read (a handle of a node's content only). */
  private newerThan(h: FileHandle): MetaEntry | undefined {
    const e = h.digest ? this.meta.get(h.path) : undefined;
    return e?.digest && !e.digest.equals(h.digest!) ? e : undefined;
  }

  /** An entry's chunk list as the metadata has it (undefined: it has none for that content, or the entry no digest). */
  private async knownManifest(path: string, e: MetaEntry): Promise<{ digest: Buffer; chunks: ChunkRef[] } | undefined> {
    if (!e.digest) return undefined;
    return e.chunks ? { digest: e.digest, chunks: e.chunks } : this.meta.getManifest(path, e.digest);
  }

  /** Told of each read handle that starts reading through a dirty copy (a driver's own read path for it must stop). */
  onFollow(fn: (fh: number) => void): void {
    this.followListener = fn;
  }

  /**
   * Told of what the mount shows differently, found out other than by the
   * change feed: a listing from a node (a file gone, or new, while the feed
   * was cut off), a writer's open that met a newer version, an append past
   * the size the kernel holds. Kernel caches filled from the older state
   * must drop it, as for a change the feed reports.
   */
  onShownChanged(fn: (changes: PathChange[]) => void): void {
    this.shownChangedListener = fn;
  }

  /** A file open for writing: the VFS knows it by its path, and its big front-to-back writes travel ahead of the close. */
  private track(d: DirtyFile): DirtyFile {
    d.startAhead = (file) => this.writeBack.writeAhead(file, () => d.path);
    this.dirty.set(d.path, d);
    return d;
  }

  private async fetchManifest(path: string): Promise<{ digest: Buffer; chunks: ChunkRef[] }> {
    const r = await this.mesh.getManifest(path);
    const m = manifestFromWire(r);
    await this.meta.putManifest(path, m);
    return m;
  }

  /**
   * Creates a new file (it reaches the node when its last writer closes it).
   * `flags`: the open's flags, where the driver has them. The kernel creates
   * only after a lookup found nothing, and the name may have appeared since
   * (another client's file, heard of meanwhile). Without O_EXCL the open
   * then opens that file, as open(O_CREAT) does on a local disk: `>>` from
   * two mounts at once failed with EEXIST on one of them. Without flags
   * (fuse-native), EEXIST. `groups`: the caller's supplementary groups as
   * the kernel has them, where the driver can tell (checked only then).
   */
  async create(dir: string, name: string, mode: number, uid = this.owners.maker.uid, gid = this.owners.maker.gid, flags?: number, groups?: () => readonly number[] | undefined): Promise<{ node: Node; handle: FileHandle }> {
    this.stillServing();
    this.known(dir);
    const path = namedPath(dir, name);
    const parent = await this.entry(dir);
    if (!isDir(parent.attr.mode)) throw new FsError('ENOTDIR', `"${dir}" is not a directory`);
    const there = await this.entry(path).catch(() => undefined);
    if (there && flags !== undefined && (flags & O_EXCL) === 0 && isReg(there.attr.mode)) {
      // The kernel checks no permission on a file a create opened: checked here, as an open would be,
      // with the ids the kernel has (its root is the one that may write anything).
      const o = this.owners;
      if (!mayOpen(o.shown(there.attr), o.uid(uid), o.gid(gid), flags, groups)) throw new FsError('EACCES', `"${path}" exists and uid ${o.uid(uid)} may not open it so`);
      const handle = await this.openWrite(path, flags);
      return { node: this.node(path, await this.entry(path)), handle };
    }
    if (there) throw new FsError('EEXIST', `"${path}" exists`);
    const dn = this.writeBack.newDirtyName();
    const made = this.madeBy(parent.attr, uid, gid);
    const d = this.track(DirtyFile.create(path, this.writeBack.dirtyPath(dn), dn, mode, made.shown.uid, made.shown.gid));
    d.owner = made.ask;
    this.meta.putVolatile(path, d.entry());
    // Synchronous write-back: the close's commit moves the directory's times, as its answer says.
    if (this.opts.asyncWriteBack) this.touchDir(dir, d.entry().attr.ctimeNs);
    const handle = this.handle(path, d);
    handle.emptyAt = d.version; // (see flush)
    return { node: this.node(path, d.entry()), handle };
  }

  /**
   * A name made or removed in `dir` here, not on the node yet: the directory
   * shows the time of it (MetaStore.touchDir). The kernel is told: it keeps
   * the directory's attributes it has after such a change of ours.
   */
  private touchDir(dir: string, nowNs: bigint): void {
    this.meta.touchDir(dir, nowNs);
    this.shownChangedListener?.([{ path: dir, what: 'attrs' }]);
  }

  /** Writing after close (a dup'd fd): the journal keeps the closed content, the writer gets a copy. */
  private async ownCopy(d: DirtyFile): Promise<void> {
    if (d.handedOver) await d.detach(this.writeBack.newDirtyName(), (n) => this.writeBack.dirtyPath(n));
  }

  /** `positional`: at `offset` even for an O_APPEND handle (bytes the driver has placed there already: a passed-through writer's). */
  async write(fh: number, offset: number, data: Buffer, positional = false): Promise<number> {
    this.stillServing();
    const h = this.handles.get(fh);
    const d = h?.dirty;
    if (!d) throw new FsError('EBADF', `file handle ${fh} is not open for writing`);
    return d.exclusive(async () => {
      await this.ownCopy(d);
      // O_APPEND: at the end of the file as this mount has it. The kernel
      // gives the size it holds, which is behind when the copy started from
      // a version another client made (writeBase): written there, the
      // append overwrote that version's end, or left a run of zeros. The
      // kernel is told to ask for the file's size again.
      const at = h.append && !positional ? d.size : offset;
      if (at !== offset) this.shownChangedListener?.([{ path: d.path, what: 'attrs' }]);
      // Bytes outside this write are needed as they were: bring them in first.
      if (!(at === 0 && data.length >= d.size)) await d.materialize(this.chunks);
      d.materialized = true;
      return d.write(at, data);
    });
  }

  /**
   * lseek(2) with SEEK_DATA or SEEK_HOLE (the kernel answers the others), so
   * cp, tar and rsync skip the holes of a sparse file instead of reading
   * zeros. The holes are the file's runs of zeros its chunk list shows
   * (zero-run chunks), and the end; a file being written shows none (all
   * data, as a filesystem may say). ENXIO at or past the end, and for
   * SEEK_DATA when only holes follow. The version is the one the handle
   * has (never refreshed here: a reader passed through to a local copy
   * keeps reading that copy, and the kernel holds the inode's lock while it
   * waits for this answer).
   */
  async seek(fh: number, offset: number, whence: number): Promise<number> {
    const h = this.handles.get(fh);
    if (!h) throw new FsError('EBADF', `file handle ${fh} is not open`);
    if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError('EINVAL', `lseek whence ${whence} is answered by the kernel`);
    let size: number;
    let chunks: readonly ChunkRef[] = [];
    if (h.pendingData) size = h.pendingData.length;
    else if (h.dirty) size = h.dirty.size;
    else {
      size = h.size;
      chunks = h.chunks;
    }
    if (offset < 0 || offset >= size) throw new FsError('ENXIO', `offset ${offset} is not before the end (${size})`);
    const wantHole = whence === SEEK_HOLE;
    for (let i = chunks.length ? chunkIndex(chunks, offset) : 0; i < chunks.length; i++) {
      if (isZeroRun(chunks[i]!, DEFAULT_CHUNKING) === wantHole) return Math.max(offset, chunks[i]!.offset);
    }
    if (wantHole) return size; // the end is a hole
    if (chunks.length === 0) return offset; // all data
    throw new FsError('ENXIO', `only holes follow offset ${offset}`);
  }

  /**
   * fallocate(2) on a file open for writing. The node reserves no space
   * ahead, so an allocation only makes the file as long as it asks for (its
   * writes may still meet ENOSPC there, as on any thin-provisioned disk);
   * punching a hole or zeroing a range writes zeros (where they fill whole
   * chunks, the node's copy has a hole again). Collapsing or inserting a range is refused with EOPNOTSUPP.
   * `wrote` hears of each piece of zeros written; returns the file's size after.
   */
  async fallocate(fh: number, mode: number, offset: number, length: number, wrote?: (offset: number, data: Buffer) => void): Promise<number> {
    this.stillServing();
    const h = this.handles.get(fh);
    const d = h?.dirty;
    if (!d || h.readOnly) throw new FsError('EBADF', `file handle ${fh} is not open for writing`);
    if (mode & ~(FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE)) throw new FsError('EOPNOTSUPP', `fallocate mode ${mode} is not supported`);
    const keepSize = (mode & FALLOC_KEEP_SIZE) !== 0;
    const end = offset + length;
    return d.exclusive(async () => {
      await this.ownCopy(d);
      if (mode & (FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE)) {
        const stop = keepSize ? Math.min(end, d.size) : end;
        if (stop <= offset) return d.size;
        await d.materialize(this.chunks);
        d.materialized = true;
        const zeros = Buffer.alloc(Math.min(stop - offset, ZERO_PIECE));
        for (let at = offset; at < stop; at += zeros.length) {
          const piece = zeros.subarray(0, Math.min(zeros.length, stop - at));
          await d.write(at, piece);
          wrote?.(at, piece);
        }
        return d.size;
      }
      if (!keepSize && end > d.size) {
        await d.materialize(this.chunks);
        d.materialized = true;
        await d.truncate(end);
      }
      return d.size;
    });
  }

  /** Whether this handle writes a dirty copy (its attributes are the file's as it is being written). */
  writesCopy(fh: number): boolean {
    return !!this.handles.get(fh)?.dirty;
  }

  /**
   * The dirty copy's descriptor, when the writes to this handle may be made
   * straight into it by the driver (native/src/direct_write.c): a big file
   * written front to back (the write-ahead follows it) by its only opener,
   * with nothing else under way on it. `stop` ends that and returns the
   * writes made meanwhile that this VFS has not heard of (wroteDirect); the
   * file calls it before anything else changes it or its copy.
   */
  directWriteFd(fh: number, stop: () => [number, Buffer][]): number | undefined {
    const h = this.handles.get(fh);
    const d = h?.dirty;
    // (Not O_APPEND: the driver would write where the kernel says, see write().)
    if (!d || h.readOnly || h.append || d.writers !== 1 || d.handles !== 1) return undefined;
    return d.directWrites(stop);
  }

  /** A write the driver made straight into a dirty copy (see directWriteFd). */
  wroteDirect(fh: number, offset: number, data: Buffer): void {
    const d = this.handles.get(fh)?.dirty;
    if (d) d.wroteDirect(offset, data);
    // Cannot happen: the file takes direct writes back before its handle goes.
    else log.error({ fh, offset, bytes: data.length }, 'a write made straight into a dirty copy came after its handle was gone');
  }

  /**
   * close(): the last writer's close writes the file back and returns once
   * the node has it (or it is durably queued). Not a file an open truncated
   * and nothing has changed since: its release does.
   */
  async flush(fh: number): Promise<void> {
    this.stillServing();
    const h = this.handles.get(fh);
    const d = h?.dirty;
    if (!d || h.readOnly || !d.modified || d.unlinked || d.writers > 1) return;
    // Made or truncated by this open and not changed since: not a version
    // of its own. A shell's `cmd > file` opens, dup2()s and closes the first
    // descriptor before cmd writes a byte, and every close() flushes:
    // committed here, the node showed every other client an empty file for
    // as long as cmd ran, and a new file cost two commits (the empty one,
    // then cmd's). The release commits it if nothing follows (`: > file`,
    // an empty file made and closed), moments after the close returned.
    if (h.emptyAt === d.version) return;
    await this.tellingHandle(h, d, this.commitDirty(d, this.closeHandOver(d, 'wait')));
  }

  /**
   * How a close hands a file over: `sync` as synchronous write-back does it
   * (a flush waits for the node; a release journals first). Asynchronous
   * write-back queues the version, and until it lands it is shown under
   * the name it was written through only: a file with other names (hard
   * links) is committed as synchronous write-back commits it, so that
   * every name shows what was written once close() returns, as on a disk.
   */
  private closeHandOver(d: DirtyFile, sync: 'wait' | 'journal'): 'wait' | 'journal' | 'queue' {
    return this.opts.asyncWriteBack && d.links < 2 ? 'queue' : sync;
  }

  /** A hand-over made for handle `h`: one that fails is told to its caller now, not again at its next fsync. */
  private async tellingHandle(h: FileHandle, d: DirtyFile, handOver: Promise<void>): Promise<void> {
    try {
      await handOver;
    } catch (err) {
      h.failuresSeen = d.failures;
      throw err;
    }
  }

  /**
   * What was written through the file is durable when this returns: on the
   * node, or journaled on the local disk (see below). With asynchronous
   * write-back, what this file closed earlier and still queues is sent to
   * the node first, when one answers, and is on the local disk otherwise.
   */
  async fsync(fh: number): Promise<void> {
    this.stillServing();
    const h = this.handles.get(fh);
    if (!h) return;
    // Versions closed earlier go to the node first, when one answers: what is written now is based on them.
    if (this.opts.asyncWriteBack && this.mesh.reachable) await this.writeBack.flushPaths([h.path]).catch(() => undefined);
    const d = h.dirty;
    if (d && !h.readOnly && d.modified && d.materialized && !d.unlinked) {
      // A small file's first fsync sends it to the node (with none answering, into the journal, on
      // disk), as its close would: a file written, fsynced and closed (an editor's save) is sent
      // once. Later fsyncs of it, and a big file's, journal the copy: a file fsynced again and
      // again (a log, a database) is not committed whole each time.
      if (d.size <= HOLD_BYTES && d.writers <= 1 && !d.sentAtFsync) {
        d.sentAtFsync = true;
        await this.tellingHandle(h, d, this.commitDirty(d, 'wait'));
      } else await this.checkpoint(d);
    } else if (d && !d.handedOver) await d.sync(); // (a copy handed over is the write-back's, committed or journaled)
    // Versions closed earlier that no node took yet: their journal records reach the disk now, not within the lazy sync's second.
    if (this.opts.asyncWriteBack && this.writeBack.pendingFor(h.path)) await this.writeBack.syncJournal();
    // A hand-over of what was written that failed since this handle last heard (another
    // handle's close, say): what it wrote was neither on the node nor journaled then.
    if (d && h.failuresSeen !== undefined && h.failuresSeen < d.failures) {
      h.failuresSeen = d.failures;
      throw d.failure;
    }
  }

  /**
   * An fsync of a big file written and still open: its copy is made durable
   * and journaled (once per copy; later fsyncs only sync it), so that a
   * mount killed before the close still commits what was fsynced. (Sent to
   * the node at each fsync instead, a database file would be committed
   * whole at every transaction.)
   */
  private async checkpoint(d: DirtyFile): Promise<void> {
    // A hand-over under way first: what is written since is based on it (as in commitDirty), and
    // until it is over, what it took is neither on the node nor journaled.
    await d.handingOver;
    await d.exclusive(async () => {
      // Its content went with the hand-over, and a copy of its own comes with the next write. (One
      // that failed stranded its copy: the content is journaled from a copy of its own.)
      if (d.handedOver && !d.stranded) return;
      await this.ownCopy(d);
      await d.sync();
      if (!d.modified || d.unlinked || d.checkpoint?.name === d.name) return;
      // A rename of the file on its way to the node: the record names the path it gives (as a close does).
      await this.afterRenamesOf(() => d.path);
      // Made from a version closed here that has landed since: that version is its base now.
      const landed = d.baseSeq !== undefined ? this.writeBack.landedDigest(d.baseSeq) : undefined;
      const seq = await this.writeBack.checkpoint({ path: d.path, dirty: d.name, baseDigest: landed ?? d.baseDigest, expectAbsent: landed ? false : d.expectAbsent, mode: d.mode, owner: d.owner, ...shownTimes(d) });
      const earlier = d.checkpoint;
      d.checkpoint = { seq, name: d.name };
      if (earlier) await this.writeBack.dropCheckpoint(earlier.seq);
      // Unlinked while the record was written (an unlink does not wait for a change under way): it must not come back.
      if (d.unlinked) await this.dropCheckpointOf(d);
    });
  }

  /** The fsync's record of a file, if it has one, goes: superseded, or void. */
  private async dropCheckpointOf(d: DirtyFile): Promise<void> {
    const checkpoint = d.checkpoint;
    d.checkpoint = undefined;
    if (checkpoint) await this.writeBack.dropCheckpoint(checkpoint.seq);
  }

  async release(fh: number): Promise<void> {
    const h = this.handles.get(fh);
    const d = h?.dirty;
    d?.stopDirect(); // the driver may be writing to this handle's copy: not once it is gone
    this.handles.delete(fh);
    if (!d) return;
    d.handles--;
    if (!h.readOnly) d.writers--;
    // What is left unsaved (no flush came, or it failed) goes when the last writer is gone; readers may keep the copy open.
    if (d.handles > 0 && (h.readOnly || d.writers > 0)) return;
    try {
      if (d.modified && !d.unlinked) await this.commitDirty(d, this.closeHandOver(d, 'journal'));
    } catch (err) {
      log.error({ path: d.path, err: (err as Error).message }, 'write-back at release failed');
    }
    // A hand-over of what writers wrote since may be waiting its turn (see
    // commitDirty): it takes the content from the copy, which stays until
    // it is over. Whichever release comes last closes it.
    while (d.handingOver && d.handles === 0) await d.handingOver;
    // (A handle may have opened it while that ran.)
    if (d.handles > 0 || d.released) return;
    d.released = true;
    if (this.dirty.get(d.path) === d) this.dirty.delete(d.path);
    await d.close().catch(() => undefined);
    if (!d.handedOver && d.onDisk) await this.writeBack.discard(d.name);
  }

  /**
   * Resolves once no rename under way (see `renaming`) moves `path`: one
   * that has committed the file and not yet given it its new path.
   */
  private async afterRenamesOf(path: () => string): Promise<void> {
    const renameOf = (p: string) => [...this.renaming].find((r) => r.paths.some((dir) => isWithin(p, dir)));
    for (let r = renameOf(path()); r; r = renameOf(path())) await r.done;
  }

  /**
   * Hands a file's content to the write-back. 'wait': a writer waits in
   * close() (or a rename needs the content on the node first) and the node
   * is asked at once; 'journal' (release, where nobody waits): the record is
   * journaled first; 'queue' (--write-back async): journaled and committed
   * moments later, nobody waits. An owner given while it was written goes
   * in the record, and in the commit.
   */
  private async commitDirty(d: DirtyFile, how: 'wait' | 'journal' | 'queue' = 'wait'): Promise<void> {
    // One hand-over of a file at a time. A version written while the one
    // before is on its way (another writer's last close, then a new writer
    // opens, writes and closes) is made from that one, so it is based on
    // what that one becomes: committed, its digest; queued, its record.
    // Taken at once, it carried the base from before, and met its own
    // earlier version on the node as somebody else's change: a conflict
    // copy for every line two shells appended to one log.
    const before = d.handingOver;
    let over!: () => void;
    const mine = new Promise<void>((resolve) => (over = resolve));
    d.handingOver = mine;
    try {
      await before;
      // What was written went with the one before (landed, or queued), or the file was unlinked meanwhile: nothing to hand over.
      if (before && (!d.modified || d.unlinked)) return;
      await this.handOver(d, how);
    } finally {
      over();
      if (d.handingOver === mine) d.handingOver = undefined;
    }
  }

  private async handOver(d: DirtyFile, how: 'wait' | 'journal' | 'queue'): Promise<void> {
    // Taken between two changes (see DirtyFile.exclusive): a write under way
    // lands before, or after in a copy of its own, never in the copy handed over.
    const { version, name, rec, syncLater, closing, checkpoint } = await d.exclusive(async () => {
      await this.ownCopy(d); // handed over before (a rename's commit while it stays open): that copy is the write-back's
      await d.materialize(this.chunks);
      d.handedOver = true; // the write-back owns the copy now
      d.stranded = false;
      // Its chunk list is wanted only where the content does not ride inside the commit.
      const ahead = d.finishAhead(d.size > INLINE_BYTES);
      // A small file's bytes travel from here: one read now instead of a stat and a whole-file read later.
      const data = d.size <= HOLD_BYTES ? await d.readAll() : undefined;
      // A file kept in memory has no dirty copy ('') until its record must outlive the process.
      const inMemory = !d.onDisk;
      // A rename of the file on its way to the node (it committed the file
      // already): the close names the path the rename gives it. Named before,
      // its record would land under the old name after the rename.
      await this.afterRenamesOf(() => d.path);
      const closing = this.writeBack.beginClose(d.path);
      // Unlinked since the close began: its content goes nowhere (from now on, an unlink marks `closing`).
      if (d.unlinked) closing.removed = true;
      // An fsync's record (of this copy, or of one handed over before whose hand-over failed): this newer content supersedes it.
      const checkpoint = d.checkpoint;
      d.checkpoint = undefined;
      // An owner given while it was written goes with this content (in its record and its commit).
      const owner = d.takeOwner();
      return {
        checkpoint,
        closing,
        // What changes after this (a writer still open, in a copy of its own) is still to commit.
        version: d.version,
        // The copy's name now (a later writer's copy gets a name of its own).
        name: d.name,
        syncLater: inMemory ? undefined : d.syncLater(),
        rec: {
          path: d.path,
          dirty: inMemory ? '' : d.name,
          baseDigest: d.baseDigest,
          expectAbsent: d.expectAbsent,
          baseSeq: d.baseSeq,
          mode: d.mode,
          owner,
          // The times it is shown with: a node taking it later (queued, or down now) would give it the time it did.
          ...shownTimes(d),
          data,
          // A big file written front to back: its chunk list is ready and its chunks are on their way.
          manifest: ahead?.manifest,
          sentAhead: ahead?.sent,
          draft: ahead?.draft,
        },
      };
    }).catch((err: Error) => {
      d.handOverFailed(err);
      throw err;
    });
    let handedOver = false;
    try {
      const inMemory = !rec.dirty;
      const data = rec.data;
      let r: { digest: Buffer } | { queued: number } | { removed: true };
      if (how === 'queue') {
        // Small content travels in its journal record; larger content kept in memory gets a copy (in the page cache).
        const inRecord = inMemory && this.writeBack.takesInRecord(data!.length);
        if (inMemory && !inRecord) await DirtyFile.writeCopy(this.writeBack.dirtyPath(name), data!, false);
        r = await this.writeBack.queueFile({ ...rec, dirty: inRecord ? '' : name }, closing);
      } else {
        const makeDurable = async (): Promise<string> => {
          if (syncLater) await syncLater();
          else await DirtyFile.writeCopy(this.writeBack.dirtyPath(name), data!, true);
          return name;
        };
        r = await this.writeBack.closeFile(rec, closing, { direct: how !== 'journal', makeDurable });
      }
      handedOver = true;
      // Committed, journaled, or gone with an unlink: the fsync's record has no more to keep.
      if (checkpoint) await this.writeBack.dropCheckpoint(checkpoint.seq);
      // Unlinked meanwhile (now, or as this returned): its content went with it.
      if ('removed' in r || closing.removed) return;
      if ('digest' in r) {
        d.committed(r.digest, version);
        // While the file stays open it shows the set-id bits the node dropped as dropped, unless its
        // mode changed since. (Its owner stays as shown: the node's file may belong to the node's
        // user, not the one who made it through the mount, whose chmod of the file still open the
        // kernel would then refuse.)
        const landed = this.meta.get(d.path);
        if (landed?.digest?.equals(r.digest) && d.version === version) d.keptSetId(landed.attr.mode);
      } else {
        // Queued: the mount shows the new content until a node takes it, and
        // a further version written through a handle still open is made from
        // it (its base once it lands).
        d.renumber();
        this.meta.putVolatile(d.path, d.entry());
        d.queued(r.queued, version);
      }
    } catch (err) {
      if (!handedOver) d.handOverFailed(err as Error);
      throw err;
    } finally {
      // Not handed over: the owner goes with the next hand-over (under one given since).
      if (!handedOver && rec.owner) d.owner = laterOwner(rec.owner, d.owner);
      this.writeBack.endClose(closing);
      // Not handed over (the journal refused it, the node refused it): the
      // fsync's record still stands for this content, until a later hand-over
      // of the file supersedes it (or an fsync since made a newer one).
      if (!handedOver && checkpoint) {
        if (d.checkpoint) await this.writeBack.dropCheckpoint(checkpoint.seq);
        else d.checkpoint = checkpoint;
      }
    }
  }

  /**
   * Runs a namespace change on the node and records what it reports.
   * `made`: a directory the change creates, recorded as listed (it is
   * empty; what others add to it arrives on the change feed).
   */
  private async mutate(touched: string[], req: Omit<WMutateRequest, 'workspace'>, removed: string[] = [], made?: string, around: NodeCall = (call) => call()): Promise<void> {
    // A change of names moves its directories' mtimes: times queued for them must not land after it
    // (a link changes the directory of its new name only).
    if (req.mkdir || req.rmdir || req.unlink || req.symlink || req.mknod || req.link || req.rename) {
      await this.writeBack.beforeNameChange(req.link ? touched.filter((p) => p !== req.link!.existing) : [...touched, ...removed]);
    }
    await this.writeBack.flushPaths(touched, removed).catch((err) => {
      throw new FsError('EROFS', `no node reachable to take pending changes first: ${(err as Error).message}`);
    });
    let r;
    try {
      r = await around(() => this.mesh.mutate(req, Number(req.truncate?.size ?? 0))); // a truncate re-hashes the file on the node
    } catch (err) {
      // No node: the tree is read-only until one answers.
      if (errnoOf(err) === 'EHOSTDOWN') throw new FsError('EROFS', (err as Error).message);
      throw err;
    }
    // The change feed may still bring older events for these paths (the
    // echo of a commit just before, say): they must not undo this change, as
    // a late "changed" would bring back a name just renamed away.
    for (const p of new Set([...touched, ...removed])) this.meta.markOwnCommit(p, r.by, r.generation);
    const entry = (e: (typeof r.entries)[number]): MetaEntry => {
      const x = entryFromWire(e);
      return e.name === made && isDir(x.attr.mode) && this.meta.childNames(made).length === 0 ? { ...x, listed: true } : x;
    };
    // One database write: a mkdir's answer carries the new directory and its parent.
    // Memory shows it at once, and the write is queued behind the earlier
    // ones: the answer need not wait for the disk (waiting, an `rm -rf` of
    // 1,768 entries took 3-19 % longer in three interleaved pairs). A mount
    // that dies first hears of the change again from the feed's log, whose
    // saved position waits for this write (the node tells a writer's feed
    // its position past the writer's own changes only half a second later).
    const answered = this.meta.fromAnswer(r.entries.map((e) => [e.name, entry(e)] as const), r.by, r.generation);
    // A rename moves what is known under the old name (the node does not send it back: see MutateRequest.writer).
    if (req.rename) this.ownRenames.add(req.rename.from!, req.rename.to!, !!req.rename.exchange, r.by, r.generation);
    const recorded = req.rename ? this.meta.renamed(req.rename.from!, req.rename.to!, !!req.rename.exchange, answered) : this.meta.putMany([...removed.map((p) => [p, null] as const), ...answered]);
    void recorded.catch((err) => log.error({ err: (err as Error).message, paths: r.entries.length + removed.length }, 'cannot record a change of names in the metadata database'));
    // Parents' listings stay complete: new children were recorded above.
  }

  async mkdir(dir: string, name: string, mode: number, uid = this.owners.maker.uid, gid = this.owners.maker.gid): Promise<Node> {
    const path = namedPath(this.known(dir), name);
    if (await this.entry(path).catch(() => undefined)) throw new FsError('EEXIST', `"${path}" exists`);
    const parent = (await this.entry(parentOf(path))).attr;
    if (!isDir(parent.mode)) throw new FsError('ENOTDIR', `"${parentOf(path)}" is not a directory`);
    const made = this.madeBy(parent, uid, gid);
    if (this.opts.asyncWriteBack) {
      // Journaled, and shown at once as an empty directory; the node makes it moments later.
      // Shown before it is queued: the node's answer, however soon, finds the number it was shown with.
      const e = queuedDirEntry(mode | (parent.mode & S_ISGID), made.shown.uid, made.shown.gid, nowNs());
      this.meta.putVolatile(path, e);
      try {
        await this.writeBack.queueMkdir(path, mode, made.ask);
      } catch (err) {
        this.meta.putVolatile(path, null);
        throw err;
      }
      this.touchDir(parentOf(path), e.attr.ctimeNs);
      return this.node(path, e);
    }
    await this.mutate([path], { mkdir: { path, mode, owner: made.ask } }, [], path);
    return this.node(path, await this.entry(path));
  }

  async unlink(dir: string, name: string): Promise<void> {
    const path = joinRel(this.known(dir), name);
    const e = await this.entry(path);
    if (isDir(e.attr.mode)) throw new FsError('EISDIR', `"${path}" is a directory`);
    // The node first (no commit of the file runs meanwhile), then its pending
    // versions: an unlink the node does not take loses nothing closed.
    await this.writeBack.removeFile(path, async (maySit) => {
      // A file no node has seen is gone with its pending content. Not told by
      // its inode number: a copy still open keeps the one it was created with
      // after the node took it. A version of ours sent with no answer heard may be there.
      if (this.meta.onNode(path) || maySit) {
        await this.mutate([], { unlink: { path } }, [path]).catch((err) => {
          if (errnoOf(err) !== 'ENOENT') throw err; // gone already (removed elsewhere, or it never landed)
        });
      } else {
        this.touchDir(parentOf(path), nowNs());
      }
      // Open writers may go on; nothing of theirs is written back. Set once
      // the node took the unlink: a close taking the content from now on
      // commits nothing (see WriteBack.Closing for one already under way).
      await this.orphan(path);
    });
    await this.meta.put(path, null);
    this.meta.putVolatile(path, null);
    // The name is gone here too. A copy opened meanwhile is orphaned, and a
    // write open still under way learns of the unlink (see newDirty).
    await this.orphan(path);
    this.namesChanged(path);
  }

  /**
   * The file being written at `path` (if one is) lost its name: its open
   * handles go on reading and writing their copy, nothing of it is written
   * back, and the name is free for a new file (which gets a copy of its own).
   */
  private async orphan(path: string): Promise<void> {
    const d = this.dirty.get(path);
    if (!d) return;
    d.unlinked = true;
    this.dirty.delete(path);
    // What an fsync journaled of it must not come back after a crash.
    await this.dropCheckpointOf(d);
  }

  async rmdir(dir: string, name: string): Promise<void> {
    const path = joinRel(this.known(dir), name);
    const e = await this.entry(path);
    if (!isDir(e.attr.mode)) throw new FsError('ENOTDIR', `"${path}" is not a directory`);
    this.mustBeEmpty(path);
    await this.mutate([path], { rmdir: { path } }, [path]);
  }

  /**
   * A directory about to go (rmdir, or replaced by a rename) that shows
   * entries here is not empty, as on a local disk, even when the node has
   * none of them yet: a file being written or closed in it would otherwise
   * find its directory gone when its commit lands.
   */
  private mustBeEmpty(path: string): void {
    const names = this.meta.childNames(path);
    if (names.length) throw new FsError('ENOTEMPTY', `"${path}" is not empty (it holds "${names[0]}")`);
  }

  async rename(oldDir: string, oldName: string, newDir: string, newName: string, flags = 0): Promise<void> {
    const from = joinRel(this.known(oldDir), oldName);
    const to = namedPath(this.known(newDir), newName);
    const source = await this.entry(from);
    const NOREPLACE = 1;
    const EXCHANGE = 2;
    const exchange = (flags & EXCHANGE) !== 0;
    const target = this.meta.get(to);
    // Two names of one file (hard links): rename(2) leaves both and succeeds.
    if (!exchange && target && !isDir(source.attr.mode) && target.attr.ino === source.attr.ino && target.attr.dev === source.attr.dev) {
      if (flags & NOREPLACE) throw new FsError('EEXIST', `"${to}" exists`);
      return;
    }
    if (!exchange && target && isDir(target.attr.mode) && isDir(source.attr.mode)) this.mustBeEmpty(to);
    /** Where a path is after the rename; undefined: replaced by it. */
    const moved = (p: string): string | undefined => (isWithin(p, from) ? to + p.slice(from.length) : !isWithin(p, to) ? p : exchange ? from + p.slice(to.length) : undefined);
    /** Whether a file being written there moves with the rename (both sides of an exchange do). */
    const moves = (p: string): boolean => isWithin(p, from) || (exchange && isWithin(p, to));
    // Files still being written move with their writers; their content must reach the node first.
    // A close under way queues its version first: one committed here would be newer, and overwritten by it.
    await this.writeBack.closesSettled(exchange ? [from, to] : [from]);
    // A new file still queued: renamed in the queue, the node gets it under its new name only. Not over
    // a file another client has at `from`, shown under it, nor with RENAME_NOREPLACE: the node's rename would tell.
    if (this.opts.asyncWriteBack && !exchange && (flags & NOREPLACE) === 0 && isReg(source.attr.mode) && !this.meta.get(to) && !this.meta.onNode(from) && !this.dirty.has(from) && !this.dirty.has(to)) {
      const shown = this.meta.get(from);
      const show = (a: string, b: string): void => {
        if (shown) this.meta.putVolatile(b, shown);
        this.meta.putVolatile(a, null);
        for (const h of this.handles.values()) if (h.path === a) h.path = b;
      };
      const inQueue = await this.writeBack.renameQueued(from, to, {
        blocked: () => [...this.renaming].some((r) => r.paths.some((dir) => isWithin(from, dir) || isWithin(to, dir))),
        moved: (back) => (back ? show(to, from) : show(from, to)),
      });
      if (inQueue) {
        this.namesChanged(from, to);
        return;
      }
    }
    for (const d of [...this.dirty.values()]) {
      if (moves(d.path) && d.modified && !d.unlinked) await this.commitDirty(d);
    }
    // From here until the files have their new paths, a close of one waits (see handOver).
    let renamed!: () => void;
    const renaming = { paths: exchange ? [from, to] : [from], done: new Promise<void>((resolve) => (renamed = resolve)) };
    this.renaming.add(renaming);
    try {
      // A file the rename replaces: a close of it under way lands first or commits nothing (see WriteBack.removeFile).
      const replacing: NodeCall = (call) =>
        this.writeBack.removeFile(to, async () => {
          const r = await call();
          // Its writers go on with their copy, for their open handles only (a close from now on commits nothing).
          await this.orphan(to);
          return r;
        });
      await this.mutate([from, to], { rename: { from, to, noReplace: (flags & NOREPLACE) !== 0, exchange } }, [to, from], undefined, exchange ? undefined : replacing);
      // The names now say what the node holds. A copy of the replaced file opened meanwhile is orphaned,
      // copies under `from` move, and a write open still under way learns of the rename (see newDirty).
      if (!exchange) await this.orphan(to);
      this.namesChanged(from, to);
      const moving = [...this.dirty.values()].filter((d) => moves(d.path));
      for (const d of moving) this.dirty.delete(d.path);
      for (const d of moving) {
        d.path = moved(d.path)!;
        this.dirty.set(d.path, d);
      }
      // Open handles move too: a reader goes on reading its file under the new name (see refresh()).
      for (const h of this.handles.values()) {
        const p = moved(h.path);
        if (p !== undefined) h.path = p;
        else if (!h.dirty) h.digest = undefined; // its file was replaced by the rename: it keeps what it opened
      }
    } finally {
      this.renaming.delete(renaming);
      renamed();
    }
  }

  async symlink(dir: string, name: string, target: string, uid = this.owners.maker.uid, gid = this.owners.maker.gid): Promise<Node> {
    return this.makeOnNode(dir, name, uid, gid, (path, owner) => ({ symlink: { path, target, owner } }));
  }

  /** A new name made by the node at once (a symlink, a fifo...): refused if taken, made with its maker's owner (see madeBy). */
  private async makeOnNode(dir: string, name: string, uid: number, gid: number, req: (path: string, owner: Owner | undefined) => Omit<WMutateRequest, 'workspace'>): Promise<Node> {
    const path = namedPath(this.known(dir), name);
    if (await this.entry(path).catch(() => undefined)) throw new FsError('EEXIST', `"${path}" exists`);
    const { ask } = this.madeBy((await this.entry(dir)).attr, uid, gid);
    await this.mutate([path], req(path, ask));
    return this.node(path, await this.entry(path));
  }

  /**
   * A fifo, a socket (what bind() of a unix socket makes) or a device node,
   * made on the node (`mode` with its type bits). The kernel keeps what
   * goes through one to itself: a fifo or socket here is a meeting point
   * for processes of this machine only, as on NFS; the mount is `nodev`.
   */
  async mknod(dir: string, name: string, mode: number, rdev: number, uid = this.owners.maker.uid, gid = this.owners.maker.gid): Promise<Node> {
    return this.makeOnNode(dir, name, uid, gid, (path, owner) => ({ mknod: { path, mode, rdev, owner } }));
  }

  async link(existing: string, newDir: string, newName: string): Promise<Node> {
    this.known(existing);
    const path = namedPath(this.known(newDir), newName);
    const d = this.dirty.get(existing);
    if (d?.modified) await this.commitDirty(d);
    await this.mutate([existing, path], { link: { existing, path } });
    // The kernel holds each name as a node of its own (node-ids.ts), and
    // keeps the link count it has for `existing` after a link: it is told.
    this.shownChangedListener?.([{ path: existing, what: 'attrs' }]);
    return this.node(path, await this.entry(path));
  }

  /** chmod, truncate, utimens (and a chown, for the commit) on a file being written: its dirty copy changes. */
  private async changeCopy(d: DirtyFile, a: SetAttr): Promise<void> {
    await d.exclusive(async () => {
      await this.ownCopy(d);
      if (a.size !== undefined) {
        if (a.size > 0) await d.materialize(this.chunks);
        d.materialized = true;
        await d.truncate(a.size);
      }
      if (a.mode !== undefined) {
        d.mode = a.mode & 0o7777;
        d.changed();
      }
      if (a.mtimeNs !== undefined || a.atimeNs !== undefined) {
        d.mtimeNs = a.mtimeNs === 'now' ? nowNs() : (a.mtimeNs ?? d.entry().attr.mtimeNs);
        d.atimeNs = a.atimeNs === 'now' ? nowNs() : (a.atimeNs ?? d.entry().attr.atimeNs);
        d.changed();
      }
      if (changesOwner(a, d.entry().attr)) {
        // Applied on the node right after the file's commit (it may not exist there yet).
        d.owner = laterOwner(d.owner, { uid: a.uid ?? -1, gid: a.gid ?? -1 });
        // A change of owner clears the set-id bits, as on a local disk (the kernel usually sends
        // the cleared mode with it); set again after it, they are this mode's.
        if (a.mode === undefined) d.mode &= ~0o6000;
        d.changed();
      }
    });
  }

  /**
   * setattr through an open handle whose file lost its name while open
   * (unlinked, or replaced by a rename): only the handle's copy changes,
   * since no node has that file any more.
   */
  async setattrHandle(fh: number, a: SetAttr): Promise<Attr> {
    const d = this.handles.get(fh)?.dirty;
    if (!d) throw new FsError('ENOENT', `file handle ${fh}: its file was removed`);
    await this.changeCopy(d, a);
    return d.entry().attr;
  }

  /**
   * The attributes of what an open handle holds, for a file that lost its
   * name while open: fstat on it still answers, with the file as the
   * handle sees it.
   */
  handleAttr(fh: number): Attr | undefined {
    const h = this.handles.get(fh);
    if (!h) return undefined;
    if (h.dirty) return h.dirty.entry().attr;
    return h.attr && { ...h.attr, size: h.pendingData?.length ?? h.size };
  }

  /** chmod, chown, truncate, utimens: on a file being written they change the dirty copy; otherwise the node. */
  async setattr(path: string, a: SetAttr): Promise<Node> {
    this.known(path);
    const d = this.dirty.get(path);
    if (d && !d.unlinked) {
      await this.changeCopy(d, a);
      return this.node(path, d.entry());
    }
    // tar, cp -p and rsync restore owner and mode that are usually already
    // right: such no-op changes cost a round trip each and are skipped (a
    // chown still goes through when set-id bits are there for it to clear).
    const shown = await this.entry(path);
    const cur = shown.attr;
    const ownerChange = changesOwner(a, cur);
    const times = a.mtimeNs !== undefined || a.atimeNs !== undefined;
    // Nothing left to change (a chown to the owner it has): nothing to ask anyone.
    if (a.size === undefined && a.mode === undefined && !times && !ownerChange) return this.node(path, shown);
    // A closed file still queued for the node: mode, owner and times join its
    // record. So do a directory's mode and times while files in it, or the
    // directory itself, are queued (asynchronous write-back), when its mtime
    // is given (an atime alone would send the older mtime the mount shows
    // with it) and it keeps its search bit (deeper commits go on through it).
    if (a.size === undefined && (!ownerChange || !isDir(cur.mode))) {
      const owner = ownerChange ? { uid: a.uid ?? -1, gid: a.gid ?? -1 } : undefined;
      // A change of owner clears the set-id bits (unless this request gives the mode), as on a local disk.
      const mode = owner && a.mode === undefined && cur.mode & 0o6000 ? cur.mode & 0o7777 & ~0o6000 : a.mode;
      const mtimeNs = a.mtimeNs === 'now' ? nowNs() : (a.mtimeNs ?? cur.mtimeNs);
      const atimeNs = a.atimeNs === 'now' ? nowNs() : (a.atimeNs ?? cur.atimeNs);
      const dir = isDir(cur.mode);
      const dirQueues = dir && !!this.opts.asyncWriteBack && (!times || a.mtimeNs !== undefined) && ((a.mode ?? cur.mode) & 0o100) !== 0;
      const newTimes = times ? { mtimeNs, atimeNs } : {};
      // A directory's new record carries a mode only when it changes one.
      const newMode = a.mode !== undefined && (a.mode & 0o7777) !== (cur.mode & 0o7777) ? a.mode & 0o7777 : undefined;
      const queued =
        (!dir || dirQueues) &&
        ((await this.writeBack.amend(path, { mode, owner, ...newTimes })) ||
          (dirQueues && (newMode !== undefined || times) && (await this.writeBack.queueDirAttrs(path, { mode: newMode, ...newTimes }))));
      if (queued) {
        const attr = { ...withOwner(cur, owner), ...(mode !== undefined ? { mode: (cur.mode & ~0o7777) | (mode & 0o7777) } : {}), ...newTimes, ctimeNs: nowNs() };
        this.meta.putVolatile(path, { ...this.meta.get(path), attr });
        return this.node(path, this.meta.get(path)!);
      }
    }
    if (a.size !== undefined) await this.mutate([path], { truncate: { path, size: a.size } });
    if (a.mode !== undefined && (a.mode & 0o7777) !== (cur.mode & 0o7777)) await this.mutate([path], { chmod: { path, mode: a.mode & 0o7777 } });
    if (ownerChange) {
      await this.mutate([path], { chown: { path, uid: a.uid ?? -1, gid: a.gid ?? -1 } });
    }
    if (times) {
      const t = (v: bigint | 'now' | undefined) => (v === undefined || v === 'now' ? undefined : toTimespec(v));
      await this.mutate([path], { utimens: { path, atime: t(a.atimeNs), mtime: t(a.mtimeNs), atimeNow: a.atimeNs === 'now', mtimeNow: a.mtimeNs === 'now' } });
    }
    return this.node(path, await this.entry(path));
  }

  /** Brings every file under `path` into the cache (warmup); returns files and bytes covered. */
  async warm(path: string, into = { files: 0, bytes: 0 }): Promise<{ files: number; bytes: number }> {
    const e = await this.entry(path);
    if (isDir(e.attr.mode)) {
      for (const child of await this.readdir(path)) await this.warm(child.path, into);
    } else if (isReg(e.attr.mode) && !this.dirty.has(path)) {
      const h = await this.open(path);
      try {
        for (let i = 0; i < h.chunks.length; i += 32) await this.chunks.ensure(h.chunks.slice(i, i + 32), path);
      } finally {
        await this.release(h.fh);
      }
      into.files++;
      into.bytes += h.size;
    }
    return into;
  }

  /** After a restart: files closed while no node answered show their queued content. */
  async showPending(records: JournalEntry[]): Promise<void> {
    const maker = this.owners.maker;
    // Whose a new one is: its maker's (another user's, if its record names one), as madeBy
    // says in its directory (shown already: records come in order, a directory before what is in it).
    const madeAs = (r: JournalEntry): { shown: Ids; parentMode: number } => {
      const by = withOwner(maker, r.owner);
      const parent = this.meta.get(parentOf(r.path))?.attr;
      return parent ? { shown: this.madeBy(parent, by.uid, by.gid).shown, parentMode: parent.mode } : { shown: by, parentMode: 0 };
    };
    for (const r of records) {
      const closedNs = BigInt(r.closedAt) * 1_000_000n;
      if (r.mkdir) {
        const { shown, parentMode } = madeAs(r);
        if (!this.meta.get(r.path)) {
          this.meta.putVolatile(r.path, queuedDirEntry(r.mode | (parentMode & S_ISGID), shown.uid, shown.gid, closedNs));
          this.meta.touchDir(parentOf(r.path), closedNs); // as when it was queued (the kernel has nothing yet)
        }
        continue;
      }
      const st = r.dirty ? await stat(this.writeBack.dirtyPath(r.dirty), { bigint: true }).catch(() => undefined) : undefined;
      const attr = st ? attrFromStats(st) : r.data ? inRecordAttr(r, r.data.length) : undefined;
      if (!attr) continue;
      const base = this.meta.get(r.path);
      // Shown as before the restart: with a number of the mount's, kept once it lands (see
      // keepIno), and the times it lands with. A new file is its maker's (its copy in the
      // cache dir is this process's, whatever the map).
      const times = { mtimeNs: r.mtimeNs ?? attr.mtimeNs, atimeNs: r.atimeNs ?? attr.atimeNs, ctimeNs: attr.ctimeNs };
      const shown = base ? { ...base.attr, ino: nextLocalIno(), size: attr.size, ...times } : { ...attr, ...madeAs(r).shown, ino: nextLocalIno(), mode: (attr.mode & ~0o7777) | r.mode, ...times };
      if (!base) this.meta.touchDir(parentOf(r.path), closedNs); // made here: its directory's time moved then
      // With the owner given to it, still to be given on the node.
      this.meta.putVolatile(r.path, { attr: withOwner(shown, r.owner) });
    }
  }

  /**
   * A small file missing from the cache is usually read with its siblings
   * (grep -r, compilers, git add): fetch the directory's other small files
   * in the same call, up to a bound, once a minute at most per directory.
   * One round trip then serves what would have taken one per file.
   */
  private prefetchSiblings(path: string): void {
    const dir = parentOf(path);
    const last = this.prefetchedDirs.get(dir);
    if (last !== undefined && Date.now() - last < 60_000) return;
    this.prefetchedDirs.set(dir, Date.now());
    const wanted: ChunkRef[] = [];
    let bytes = 0;
    for (const name of this.meta.childNames(dir)) {
      const e = this.meta.get(joinRel(dir, name));
      const c = e?.chunks?.length === 1 ? e.chunks[0]! : undefined;
      if (!c || this.chunks.isLocal(c.hash)) continue;
      if (bytes + c.length > SIBLING_PREFETCH_BYTES || wanted.length >= SIBLING_PREFETCH_FILES) break;
      wanted.push(c);
      bytes += c.length;
    }
    if (wanted.length > 1) void this.chunks.ensure(wanted, path).catch(() => undefined);
  }


  /** The node's filesystem, as statfs(2) on the mount reports it (see capacity.ts). */
  statfs(): Promise<Capacity> {
    return this.capacity.get();
  }
}

/** A directory made through the mount while the node has not made it yet: empty, and its listing complete. */
function queuedDirEntry(mode: number, uid: number, gid: number, t: bigint): MetaEntry {
  return { attr: { dev: 0, ino: nextLocalIno(), mode: S_IFDIR | (mode & 0o7777), nlink: 2, uid, gid, rdev: 0, size: 4096, blocks: 8, atimeNs: t, mtimeNs: t, ctimeNs: t }, listed: true };
}

/**
 * The times a written file is committed with: those it is shown with (its
 * last write's, or those given). Left to the node, they would be the time of
 * the commit, which for a version that waited in the queue, or for a node
 * that was down, is later, maybe by hours.
 */
function shownTimes(d: DirtyFile): { mtimeNs?: bigint; atimeNs?: bigint } {
  if (!d.modified) return { mtimeNs: d.mtimeNs, atimeNs: d.atimeNs };
  const { mtimeNs, atimeNs } = d.entry().attr;
  return { mtimeNs, atimeNs };
}

/** What a file queued with its bytes in its journal record shows after a restart (it has no dirty copy to stat); owner set by the caller. */
function inRecordAttr(r: JournalEntry, size: number): Attr {
  const t = r.mtimeNs ?? BigInt(r.closedAt) * 1_000_000n;
  return { dev: 0, ino: 0, mode: S_IFREG | r.mode, nlink: 1, uid: 0, gid: 0, rdev: 0, size, blocks: Math.ceil(size / 512), atimeNs: r.atimeNs ?? t, mtimeNs: t, ctimeNs: t };
}

/**
 * Whether a chown asks for anything: another uid or gid, or any chown of a
 * file with set-id bits (which it clears). tar, cp -p and rsync restore the
 * owner a file already has; those calls change nothing.
 */
function changesOwner(a: SetAttr, cur: Attr): boolean {
  if (a.uid === undefined && a.gid === undefined) return false;
  return (a.uid !== undefined && a.uid !== cur.uid) || (a.gid !== undefined && a.gid !== cur.gid) || (cur.mode & 0o6000) !== 0;
}

/** The index of the chunk holding `offset` (chunks are sorted and contiguous). */
export function chunkIndex(chunks: readonly ChunkRef[], offset: number): number {
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (chunks[mid]!.offset <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** A path for a name being made (create, mkdir, symlink, link, a rename's target): refused at once when the name is longer than a node can take. */
function namedPath(dir: string, name: string): string {
  if (Buffer.byteLength(name) > NAME_MAX) throw new FsError('ENAMETOOLONG', `"${name.slice(0, 32)}...": a name is at most ${NAME_MAX} bytes`);
  return joinRel(dir, name);
}

/**
 * Permission by mode bits to open with `flags` (read, write or both; O_TRUNC
 * writes), for the caller's uid and gid (root may always). FUSE passes no
 * other group: `groups` gives the caller's supplementary ones where the
 * driver can have them (the native driver, from /proc).
 */
function mayOpen(attr: Attr, uid: number, gid: number, flags: number, groups?: () => readonly number[] | undefined): boolean {
  if (uid === 0) return true;
  const acc = flags & O_ACCMODE;
  const want = (acc === 0 ? 4 : acc === 1 ? 2 : 6) | (flags & O_TRUNC ? 2 : 0);
  // The group's bits for a member, by its own group or a supplementary one (asked for only when it matters).
  const member = (): boolean => gid === attr.gid || (groups?.() ?? []).includes(attr.gid);
  const bits = uid === attr.uid ? (attr.mode >> 6) & 7 : member() ? (attr.mode >> 3) & 7 : attr.mode & 7;
  return (bits & want) === want;
}

/** A node's manifest answer as the mount keeps it: digest and chunk list. */
function manifestFromWire(r: WManifestOut): { digest: Buffer; chunks: ChunkRef[] } {
  return { digest: Buffer.from(r.digest), chunks: chunksFromWire(r.chunks) };
}
