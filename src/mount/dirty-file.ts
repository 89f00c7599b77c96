// A file open for writing: its content lives in a local dirty copy under
// the cache dir until the last writer closes it. The copy is filled from
// the file's chunks only when a change needs the old bytes (O_TRUNC and
// whole rewrites never fetch them).
//
// A new (or truncated) small file starts in memory instead, and gets a file
// only when it must: it grows past MEM_FILE_BYTES, a writer fsyncs it, or
// its closed content has to survive the process (journaled for a later
// commit). Tools creating many small files (tar, git, compilers) then cost
// no local file calls at all when the node takes the commit at close: each
// such call is a trip through the thread pool, which measured ~1 ms for the
// create alone on a loaded 2-core machine.
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { closeSync, constants as C, openSync, unlinkSync, writeSync } from 'node:fs';
import { S_IFMT, S_IFREG, type Attr } from '../content/attr.js';
import type { ChunkRef } from '../content/manifest.js';
import { isZeroRun } from '../content/chunk-file.js';
import { DEFAULT_CHUNKING } from '../content/chunker.js';
import type { MetaEntry } from '../cache/meta-store.js';
import { withOwner, type Owner } from '../cache/journal.js';
import type { ChunkReader } from './chunk-reader.js';
import type { WriteAhead } from './write-ahead.js';
import { readAt, writeAt } from '../util/positional-io.js';
import { HOLD_BYTES } from './write-back.js';
import { log } from '../log.js';
import { isLocalIno, nextLocalIno } from './local-ino.js';

const nowNs = (): bigint => BigInt(Date.now()) * 1_000_000n;

/** The smallest first write that makes a file's chunks travel ahead of its close (write-ahead.ts). */
const AHEAD_FIRST_WRITE = 64 * 1024;

/**
 * A file kept in memory holds at most what the write-back keeps of a closed
 * file (so its bytes always travel with the commit), and all of them
 * together at most MEM_TOTAL_BYTES.
 */
const MEM_FILE_BYTES = HOLD_BYTES;
const MEM_TOTAL_BYTES = 64 * 1024 * 1024;
let memTotal = 0;

/** Bytes held by files kept in memory (status and tests). */
export const dirtyMemoryBytes = (): number => memTotal;

/**
 * A new dirty copy (0600, never over an existing name) holding `data`,
 * written synchronously: small content only. One that cannot be written
 * whole (a full disk) is removed again.
 */
function createSync(file: string, data: Buffer): void {
  const fd = openSync(file, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600);
  try {
    for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done, done);
  } catch (err) {
    closeSync(fd);
    unlinkSync(file);
    throw err;
  }
  closeSync(fd);
}

export class DirtyFile {
  size: number;
  mode: number;
  materialized: boolean;
  modified: boolean;
  /** Made from a still-queued version (that record's seq): its base once it lands. */
  baseSeq: number | undefined;
  /** Open handles on this file (several fds may write one file; readers see what they write). */
  handles = 0;
  /** Of those, the ones open for writing: the last one's close writes the file back. */
  writers = 0;
  /** Deleted while open: its content must never be written back. */
  unlinked = false;
  /** Owner asked for while open (-1: unchanged), to go in the commit. */
  owner?: Owner;
  /** The journal owns the dirty copy (it was closed); a further write needs a copy of its own. */
  handedOver = false;
  /**
   * Hand-overs of this content that failed (neither on the node nor
   * journaled), and the last one's error: each handle open then hears of it
   * at its next fsync, once, as a local disk tells each open file of a
   * failed writeback.
   */
  failures = 0;
  failure?: Error;
  /** The copy handed over last went nowhere (set aside when the node refused it): an fsync journals a copy of its own. */
  stranded = false;
  /** Settled when the last hand-over asked for (see Vfs.commitDirty) is over, landed or not. */
  handingOver?: Promise<void>;
  /** The last handle went and the copy was closed (Vfs.release, once). */
  released = false;
  /**
   * The journal record an fsync made of the copy `name` while the file is
   * open: what a mount killed before the close replays. It goes once the
   * content is handed over (close, a rename's commit) or the file unlinked.
   */
  checkpoint?: { seq: number; name: string };
  /** An fsync sent it to the node once already (see Vfs.fsync). */
  sentAtFsync = false;
  /** How to follow a run of writes from an empty file (set by the VFS); `ahead` follows the current run. */
  startAhead?: (file: () => string) => WriteAhead;
  private ahead?: WriteAhead;
  /** Set explicitly by utimens while open; otherwise the write time counts. */
  mtimeNs?: bigint;
  atimeNs?: bigint;
  private lastWriteNs = nowNs();
  /** The content while it is kept in memory (its length is the capacity; `size` bytes count, the rest are zeros). */
  private mem: Buffer | undefined;
  /** The dirty copy exists; `fh` once it is opened (or being opened), and its descriptor once it is open. */
  private spilled = false;
  private fh: Promise<FileHandle> | undefined;
  private fd: number | undefined;
  /** Changes queued or under way (exclusive). */
  private busy = 0;
  /** Set while writes are made straight into the dirty copy (directWrites): ends that, and returns them. */
  private direct: (() => [number, Buffer][]) | undefined;

  private constructor(
    public path: string,
    /** The dirty copy's name under the dirty dir. */
    public name: string,
    /** The dirty copy's path (it exists once `onDisk`). */
    private file: string,
    private attr: Attr,
    /** Content the writer started from: digest and chunks (absent for a new or truncated file). */
    public baseDigest: Buffer | undefined,
    public expectAbsent: boolean,
    private readonly baseChunks: ChunkRef[] | undefined,
  ) {
    this.size = attr.size;
    this.mode = attr.mode & 0o7777;
    this.materialized = !baseChunks || baseChunks.length === 0;
    this.modified = false;
  }

  /** A new file: in memory until it must be on disk. */
  static create(path: string, file: string, name: string, mode: number, uid: number, gid: number): DirtyFile {
    const t = nowNs();
    const attr: Attr = { dev: 0, ino: nextLocalIno(), mode: S_IFREG | (mode & 0o7777), nlink: 1, uid, gid, rdev: 0, size: 0, blocks: 0, atimeNs: t, mtimeNs: t, ctimeNs: t };
    const d = new DirtyFile(path, name, file, attr, undefined, true, undefined);
    d.changed(); // a new file exists on the node once it is closed, even if empty (its last descriptor: see Vfs.flush)
    d.keepInMemory(0);
    return d;
  }

  /** An existing file opened for writing; one whose old bytes are not wanted (O_TRUNC) and that is small starts in memory. */
  static async open(path: string, file: string, name: string, base: MetaEntry, chunks: ChunkRef[]): Promise<DirtyFile> {
    const d = new DirtyFile(path, name, file, base.attr, base.digest, false, chunks);
    if (chunks.length === 0 && d.keepInMemory(base.attr.size)) return d;
    const fh = await d.disk();
    await fh.truncate(base.attr.size); // sparse until materialized
    return d;
  }

  /**
   * Continues from content closed while no node answered (its journal record
   * is still pending): a copy of it, with the record's base, so the next
   * commit carries both changes.
   */
  static async fromPending(path: string, copyPending: (file: string) => Promise<void>, file: string, name: string, shown: MetaEntry, pending: { seq: number; baseDigest?: Buffer; expectAbsent: boolean }): Promise<DirtyFile> {
    await copyPending(file);
    const fh = await open(file, C.O_RDWR);
    const size = (await fh.stat()).size;
    const d = new DirtyFile(path, name, file, { ...shown.attr, size }, pending.baseDigest, pending.expectAbsent, undefined);
    d.spilled = true;
    d.fh = Promise.resolve(fh);
    d.fd = fh.fd;
    d.baseSeq = pending.seq;
    d.modified = false;
    return d;
  }

  /** Brings the old bytes into the dirty copy (once, before the first change that needs them). */
  async materialize(reader: ChunkReader): Promise<void> {
    if (this.materialized) return;
    this.dropAhead(); // these bytes do not go through write()
    // Runs of zeros stay holes: the copy is a hole of the file's size until now (open).
    const chunks = this.baseChunks!.filter((c) => !isZeroRun(c, DEFAULT_CHUNKING));
    await reader.ensure(chunks, this.path);
    const fh = await this.disk(); // a file with old bytes to bring in never starts in memory
    for (const c of chunks) {
      const data = await reader.slice(c, 0, c.length, this.path);
      await writeAt(fh, data, c.offset);
    }
    this.materialized = true;
  }

  /** Reads from the dirty copy (only once it holds every byte). */
  async read(offset: number, length: number, into: Buffer): Promise<number> {
    if (offset >= this.size) return 0;
    const n = Math.min(length, this.size - offset);
    if (this.mem) return this.mem.copy(into, 0, offset, offset + n);
    const { bytesRead } = await (await this.disk()).read(into, 0, n, offset);
    return bytesRead;
  }

  /** Exactly `length` bytes at `offset` of the dirty copy. */
  private async readRange(offset: number, length: number): Promise<Buffer> {
    if (this.mem) {
      if (offset + length > this.size) throw Object.assign(new Error(`dirty copy of "${this.path}" ends before ${offset + length}`), { code: 'EIO' });
      return Buffer.from(this.mem.subarray(offset, offset + length));
    }
    return readAt(await this.disk(), length, offset, `dirty copy of "${this.path}"`);
  }

  /** The whole content (small files: the write-back sends it without reading the copy again). */
  readAll(): Promise<Buffer> {
    return this.readRange(0, this.size);
  }

  async write(offset: number, data: Buffer): Promise<number> {
    const end = offset + data.length;
    // Only a run that starts with a large write (cp, dd, a linker) is followed: most files written in small pieces are small.
    const startsRun = !this.ahead && offset === 0 && this.size === 0 && data.length >= AHEAD_FIRST_WRITE;
    if (this.mem && !startsRun && this.keepInMemory(Math.max(this.size, end))) {
      data.copy(this.mem, offset);
      this.size = Math.max(this.size, end);
      this.touch();
      return data.length;
    }
    const fh = await this.disk();
    if (startsRun && !this.ahead && this.size === 0) this.ahead = this.startAhead?.(() => this.file);
    const ahead = this.ahead;
    const written = writeAt(fh, data, offset);
    try {
      // Told in the same tick as the write starts (so it sees writes in the
      // order they were made), while the thread pool writes: cutting and
      // hashing the bytes no longer adds to the writer's wait.
      ahead?.writeStarts(offset, data);
      await written;
    } catch (err) {
      await written.catch(() => undefined); // (when the chunker threw: the write is still under way)
      ahead?.stop();
      if (this.ahead === ahead) this.ahead = undefined;
      throw err;
    } finally {
      ahead?.writeLanded();
    }
    this.size = Math.max(this.size, offset + data.length);
    this.touch();
    return data.length;
  }

  async truncate(size: number): Promise<void> {
    if (size === 0) this.dropAhead(); // a new run may start from the empty file
    else this.ahead?.truncated(size);
    if (this.mem && this.keepInMemory(size)) {
      // Past `size` memory holds zeros: a later write beyond the end leaves a hole that reads as zeros.
      if (size < this.size) this.mem.fill(0, size, this.size);
    } else {
      await (await this.disk()).truncate(size);
    }
    this.size = size;
    this.touch();
  }

  /** Whether a dirty copy exists on disk (a file kept in memory has none). */
  get onDisk(): boolean {
    return this.spilled;
  }

  /**
   * Makes room in memory for `size` bytes. False when the file cannot stay
   * there (too big, or no room left in all): it then goes to disk at its next
   * change, with everything it held.
   */
  private keepInMemory(size: number): boolean {
    if (this.spilled) return false;
    const have = this.mem?.length ?? 0;
    if (size <= have && this.mem) return true;
    const want = Math.min(MEM_FILE_BYTES, Math.max(size, 2 * have, 4096));
    if (size > MEM_FILE_BYTES || memTotal - have + want > MEM_TOTAL_BYTES) return false;
    const grown = Buffer.alloc(want);
    this.mem?.copy(grown, 0, 0, this.size);
    memTotal += want - have;
    this.mem = grown;
    return true;
  }

  private dropMemory(): void {
    memTotal -= this.mem?.length ?? 0;
    this.mem = undefined;
  }

  /**
   * Creates the dirty copy with what memory held. Synchronous: at most
   * MEM_FILE_BYTES to the page cache, cheaper than the trips through the
   * thread pool it replaces. A copy that cannot be written whole (a full
   * disk) is removed, and the content stays in memory.
   */
  private spill(): void {
    if (this.spilled) return;
    createSync(this.file, this.mem ? this.mem.subarray(0, this.size) : Buffer.alloc(0));
    this.spilled = true;
    this.dropMemory();
  }

  /** The dirty copy, open for reading and writing (made on first need). */
  private disk(): Promise<FileHandle> {
    if (!this.fh) {
      try {
        this.spill();
      } catch (err) {
        return Promise.reject(err);
      }
      const fh = open(this.file, C.O_RDWR);
      this.fh = fh;
      fh.then(
        (h) => this.fh === fh && (this.fd = h.fd),
        () => undefined, // awaited by every caller
      );
    }
    return this.fh;
  }

  /** The content made durable in its dirty copy (a writer's fsync). */
  async sync(): Promise<void> {
    await (await this.disk()).sync();
  }

  /**
   * At close of a file that is on disk: makes the copy as it is now durable
   * later, if the commit has to wait (a later write goes to a copy of its own,
   * see detach, so this one stays the closed content).
   */
  syncLater(): () => Promise<void> {
    const fh = this.disk();
    return async () => (await fh).sync();
  }

  /**
   * Closed content of a file kept in memory, written to a dirty copy of its
   * own when it has to outlive the process: durably (fsynced) for a record
   * journaled because no node took it, or only into the page cache (which
   * survives a killed process) for asynchronous write-back.
   */
  static async writeCopy(file: string, data: Buffer, durable: boolean): Promise<void> {
    if (!durable) return createSync(file, data);
    const fh = await open(file, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600);
    try {
      await writeAt(fh, data, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /** Closes the dirty copy, if there is one; memory is given back. */
  async close(): Promise<void> {
    this.stopDirect();
    this.dropMemory();
    this.fd = undefined;
    const fh = this.fh;
    if (fh) await (await fh).close();
  }

  private turn: Promise<unknown> = Promise.resolve();

  /**
   * Runs `fn` once every change and hand-over asked for before it has run
   * (writes, truncates, attribute changes and the write-back's taking of the
   * content go one at a time): a write whose turn comes after a hand-over
   * goes to a copy of its own, and none lands in a copy being handed over.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.stopDirect(); // writes made straight into the copy come first
    this.busy++;
    const run = this.turn.then(async () => {
      try {
        return await fn();
      } finally {
        this.busy--;
      }
    });
    this.turn = run.catch(() => undefined);
    return run;
  }

  /**
   * The dirty copy's descriptor, for writes made straight into it by the
   * driver (native/src/direct_write.c), which `stop` ends and returns: only
   * for a run the write-ahead follows, in a copy on disk, with no change
   * under way. Every change made here afterwards calls `stop` first and
   * applies those writes (wroteDirect) before its own.
   */
  directWrites(stop: () => [number, Buffer][]): number | undefined {
    if (!this.ahead || this.mem || this.handedOver || this.unlinked || this.busy > 0 || this.fd === undefined || this.direct) return undefined;
    this.direct = stop;
    return this.fd;
  }

  /** A write made straight into the dirty copy: what write() does once its bytes are there (in a buffer the driver gave away). */
  wroteDirect(offset: number, data: Buffer): void {
    const ahead = this.ahead;
    try {
      ahead?.writeStarts(offset, data, true);
      ahead?.writeLanded();
    } catch (err) {
      log.debug({ path: this.path, err: (err as Error).message }, 'early upload stopped; the rest travels at close');
      ahead?.stop();
      if (this.ahead === ahead) this.ahead = undefined;
    }
    this.size = Math.max(this.size, offset + data.length);
    this.touch();
  }

  /** Ends writes made straight into the copy (a handle of the file goes, it is changed here), applying those not heard of yet. */
  stopDirect(): void {
    const stop = this.direct;
    this.direct = undefined;
    if (stop) for (const [offset, data] of stop()) this.wroteDirect(offset, data);
  }

  /** Counts changes: a commit of what was closed at one count leaves later changes still to commit. */
  private changes = 0;

  get version(): number {
    return this.changes;
  }

  /** Something to write back: content, mode, times or owner. */
  changed(): void {
    this.modified = true;
    this.changes++;
  }

  private touch(): void {
    this.changed();
    this.lastWriteNs = nowNs();
    this.mtimeNs = undefined; // a write after utimens moves mtime again, as on any filesystem
  }

  /** The owner given while it was written, to go with the content handed over now; it stays shown. */
  takeOwner(): Owner | undefined {
    const o = this.owner;
    if (!o) return undefined;
    this.owner = undefined;
    this.attr = withOwner(this.attr, o);
    return o;
  }

  /** A commit of this content got `mode` on the node: the set-id bits it dropped go here too (see Vfs.handOver). */
  keptSetId(mode: number): void {
    this.mode &= ~(0o6000 & ~mode);
  }

  /** The names the file had when it was opened (more than one: hard links). */
  get links(): number {
    return this.attr.nlink;
  }

  /** The file as stat shows it while it is being written. */
  entry(): MetaEntry {
    const { uid, gid } = withOwner(this.attr, this.owner);
    const mtimeNs = this.mtimeNs ?? (this.modified ? this.lastWriteNs : this.attr.mtimeNs);
    return {
      attr: {
        ...this.attr,
        uid,
        gid,
        mode: (this.attr.mode & S_IFMT) | this.mode,
        size: this.size,
        blocks: Math.ceil(this.size / 512),
        mtimeNs,
        atimeNs: this.atimeNs ?? this.attr.atimeNs,
        ctimeNs: this.modified ? this.lastWriteNs : this.attr.ctimeNs,
      },
    };
  }

  /**
   * At close: the chunk list made while the file was written front to back
   * (undefined otherwise), and the end of its early upload. Without `wanted`
   * (a small file, sent whole) the chunker just stops.
   */
  finishAhead(wanted: boolean): ReturnType<WriteAhead['finish']> | undefined {
    if (!wanted) {
      this.dropAhead();
      return undefined;
    }
    // Its last chunks may still be on their way: sent from the copy handed
    // over (by name: a later writer gets a copy of its own).
    const r = this.ahead?.finish(this.size, this.file);
    this.ahead = undefined;
    return r;
  }

  private dropAhead(): void {
    this.ahead?.stop();
    this.ahead = undefined;
  }

  /** Takes a private copy of the content (after the journal took the old copy). */
  async detach(name: string, pathOf: (name: string) => string): Promise<void> {
    // Content kept in memory was never handed over (readAll copies it): only its future name changes.
    if (this.spilled) {
      const old = await this.disk();
      const fresh = await open(pathOf(name), C.O_RDWR | C.O_CREAT | C.O_EXCL, 0o600);
      try {
        const buf = Buffer.allocUnsafe(4 << 20);
        for (let off = 0; off < this.size; ) {
          const { bytesRead } = await old.read(buf, 0, Math.min(buf.length, this.size - off), off);
          if (bytesRead === 0) break;
          await writeAt(fresh, buf.subarray(0, bytesRead), off);
          off += bytesRead;
        }
        await fresh.truncate(this.size);
      } catch (err) {
        // (A full disk, say.) The file keeps its copy as it was; the partial one goes.
        await fresh.close().catch(() => undefined);
        await unlink(pathOf(name)).catch(() => undefined);
        throw err;
      }
      await old.close();
      this.fh = Promise.resolve(fresh);
      this.fd = fresh.fd;
    }
    this.name = name;
    this.file = pathOf(name);
    this.handedOver = false;
    this.stranded = false;
  }

  /** A hand-over of this content failed: see `failures` and `stranded`. */
  handOverFailed(err: Error): void {
    this.failures++;
    this.failure = err;
    this.stranded = this.handedOver;
  }

  /**
   * After a commit of the content as it was at `version`: the node holds
   * it, and further versions start from it. Changes made since (a writer
   * that opened the file while the commit was on its way) are still to be
   * written back.
   */
  committed(digest: Buffer, version: number): void {
    this.baseDigest = digest;
    this.expectAbsent = false;
    this.baseSeq = undefined;
    if (version === this.changes) this.modified = false;
  }

  /**
   * A version queued for the node becomes a new inode there when it lands:
   * from now on it is shown with a number of the mount's, which it keeps
   * then (MetaStore.keepIno), not with the number of the version before it.
   */
  renumber(): void {
    if (!isLocalIno(this.attr.ino)) this.attr = { ...this.attr, ino: nextLocalIno() };
  }

  /** After the content as it was at `version` was queued as record `seq` (no node took it yet): its base once it lands. */
  queued(seq: number, version: number): void {
    this.baseSeq = seq;
    if (version === this.changes) this.modified = false;
  }
}
