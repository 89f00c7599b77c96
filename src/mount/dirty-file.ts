// A file open for writing: its content lives in a local dirty copy under
// the cache dir until the last writer closes it. The copy is filled from
// the file's chunks only when a change needs the old bytes (O_TRUNC and
// whole rewrites never fetch them).
import { copyFile, open, type FileHandle } from 'node:fs/promises';
import { constants as C } from 'node:fs';
import { S_IFMT, S_IFREG, type Attr } from '../content/attr.js';
import type { ChunkRef } from '../content/manifest.js';
import type { MetaEntry } from '../cache/meta-store.js';
import type { ChunkReader } from './chunk-reader.js';
import type { WriteAhead } from './write-ahead.js';
import { readAt, writeAt } from '../util/positional-io.js';

const nowNs = (): bigint => BigInt(Date.now()) * 1_000_000n;

/** Inode numbers for files that exist only here until their first commit. */
export const LOCAL_INO_BASE = 0xf000_0000;
let localIno = LOCAL_INO_BASE;
export const nextLocalIno = (): number => localIno++;

/** The smallest first write that makes a file's chunks travel ahead of its close (write-ahead.ts). */
const AHEAD_FIRST_WRITE = 64 * 1024;

/** A file created here that no node has seen yet. */
export const isLocalIno = (ino: number): boolean => ino >= LOCAL_INO_BASE;

export class DirtyFile {
  size: number;
  mode: number;
  materialized: boolean;
  modified: boolean;
  /** Made from a still-queued version (that record's seq): its base once it lands. */
  baseSeq: number | undefined;
  /** Open handles on this file (several fds may write one file). */
  handles = 0;
  /** Deleted while open: its content must never be written back. */
  unlinked = false;
  /** Owner asked for while open (-1: unchanged), applied on the node after the commit. */
  owner?: { uid: number; gid: number };
  /** The journal owns the dirty copy (it was closed); a further write needs a copy of its own. */
  handedOver = false;
  /** How to follow a run of writes from an empty file (set by the VFS); `ahead` follows the current run. */
  startAhead?: (read: (offset: number, length: number) => Promise<Buffer>) => WriteAhead;
  private ahead?: WriteAhead;
  /** Set explicitly by utimens while open; otherwise the write time counts. */
  mtimeNs?: bigint;
  atimeNs?: bigint;
  private lastWriteNs = nowNs();

  private constructor(
    public path: string,
    /** The dirty copy's name under the dirty dir. */
    public name: string,
    public fh: FileHandle,
    private readonly attr: Attr,
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

  static async create(path: string, file: string, name: string, mode: number, uid: number, gid: number): Promise<DirtyFile> {
    const fh = await open(file, C.O_RDWR | C.O_CREAT | C.O_EXCL, 0o600);
    const t = nowNs();
    const attr: Attr = { dev: 0, ino: nextLocalIno(), mode: S_IFREG | (mode & 0o7777), nlink: 1, uid, gid, rdev: 0, size: 0, blocks: 0, atimeNs: t, mtimeNs: t, ctimeNs: t };
    const d = new DirtyFile(path, name, fh, attr, undefined, true, undefined);
    d.modified = true; // a new file exists on the node once it is closed, even if empty
    return d;
  }

  static async open(path: string, file: string, name: string, base: MetaEntry, chunks: ChunkRef[]): Promise<DirtyFile> {
    const fh = await open(file, C.O_RDWR | C.O_CREAT | C.O_EXCL, 0o600);
    await fh.truncate(base.attr.size); // sparse until materialized
    return new DirtyFile(path, name, fh, base.attr, base.digest, false, chunks);
  }

  /**
   * Continues from content closed while no node answered (its journal record
   * is still pending): a copy of it, with the record's base, so the next
   * commit carries both changes.
   */
  static async fromPending(path: string, pendingFile: string, file: string, name: string, shown: MetaEntry, pending: { seq: number; baseDigest?: Buffer; expectAbsent: boolean }): Promise<DirtyFile> {
    await copyFile(pendingFile, file, C.COPYFILE_EXCL);
    const fh = await open(file, C.O_RDWR);
    const size = (await fh.stat()).size;
    const d = new DirtyFile(path, name, fh, { ...shown.attr, size }, pending.baseDigest, pending.expectAbsent, undefined);
    d.baseSeq = pending.seq;
    d.modified = false;
    return d;
  }

  /** Brings the old bytes into the dirty copy (once, before the first change that needs them). */
  async materialize(reader: ChunkReader): Promise<void> {
    if (this.materialized) return;
    this.dropAhead(); // these bytes do not go through write()
    const chunks = this.baseChunks!;
    await reader.ensure(chunks, this.path);
    for (const c of chunks) {
      const data = await reader.slice(c, 0, c.length, this.path);
      await writeAt(this.fh, data, c.offset);
    }
    this.materialized = true;
  }

  /** Reads from the dirty copy (only once it holds every byte). */
  async read(offset: number, length: number, into: Buffer): Promise<number> {
    if (offset >= this.size) return 0;
    const n = Math.min(length, this.size - offset);
    const { bytesRead } = await this.fh.read(into, 0, n, offset);
    return bytesRead;
  }

  /** Exactly `length` bytes at `offset` of the dirty copy. */
  private readRange(offset: number, length: number): Promise<Buffer> {
    return readAt(this.fh, length, offset, `dirty copy of "${this.path}"`);
  }

  /** The whole content (small files: the write-back sends it without reading the copy again). */
  readAll(): Promise<Buffer> {
    return this.readRange(0, this.size);
  }

  async write(offset: number, data: Buffer): Promise<number> {
    // Only a run that starts with a large write (cp, dd, a linker) is followed: most files written in small pieces are small.
    if (!this.ahead && offset === 0 && this.size === 0 && data.length >= AHEAD_FIRST_WRITE) this.ahead = this.startAhead?.((o, n) => this.readRange(o, n));
    // Told before the write starts, so it sees writes in the order they were made.
    const ahead = this.ahead;
    ahead?.writeStarts(offset, data);
    try {
      await writeAt(this.fh, data, offset);
    } catch (err) {
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
    await this.fh.truncate(size);
    this.size = size;
    this.touch();
  }

  private touch(): void {
    this.modified = true;
    this.lastWriteNs = nowNs();
    this.mtimeNs = undefined; // a write after utimens moves mtime again, as on any filesystem
  }

  /** The file as stat shows it while it is being written. */
  entry(): MetaEntry {
    const uid = this.owner && this.owner.uid >= 0 ? this.owner.uid : this.attr.uid;
    const gid = this.owner && this.owner.gid >= 0 ? this.owner.gid : this.attr.gid;
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
  finishAhead(wanted: boolean): ReturnType<WriteAhead['finish']> {
    if (!wanted) {
      this.dropAhead();
      return undefined;
    }
    const r = this.ahead?.finish(this.size);
    this.ahead = undefined; // its last chunks may still be on their way
    return r;
  }

  private dropAhead(): void {
    this.ahead?.stop();
    this.ahead = undefined;
  }

  /** Takes a private copy of the content (after the journal took the old copy). */
  async detach(name: string, pathOf: (name: string) => string): Promise<void> {
    const fresh = await open(pathOf(name), C.O_RDWR | C.O_CREAT | C.O_EXCL, 0o600);
    const buf = Buffer.allocUnsafe(4 << 20);
    for (let off = 0; off < this.size; ) {
      const { bytesRead } = await this.fh.read(buf, 0, Math.min(buf.length, this.size - off), off);
      if (bytesRead === 0) break;
      await writeAt(fresh, buf.subarray(0, bytesRead), off);
      off += bytesRead;
    }
    await fresh.truncate(this.size);
    await this.fh.close();
    this.fh = fresh;
    this.name = name;
    this.handedOver = false;
  }

  /** After a commit: the node holds this content; further writes start from it. */
  committed(digest: Buffer): void {
    this.baseDigest = digest;
    this.expectAbsent = false;
    this.baseSeq = undefined;
    this.modified = false;
  }
}
