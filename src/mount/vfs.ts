// The VFS core: an inode-based filesystem over the mount's metadata and
// chunk caches, knowing nothing of FUSE. Drivers translate kernel requests
// into these calls. Inode numbers are the node's own (stable across
// remounts and the same on every mount); the root is also reachable as
// ROOT_INO, the number the kernel uses for it.
import { isDir, isLnk, isReg, type Attr } from '../content/attr.js';
import { fileDigest, type ChunkRef } from '../content/manifest.js';
import type { MetaEntry, MetaStore } from '../cache/meta-store.js';
import type { MeshClient } from '../mesh/mesh-client.js';
import { attrFromWire, chunksFromWire } from '../wire/convert.js';
import { FsError } from '../wire/errors.js';
import { joinRel, parentOf } from '../wire/rel-path.js';
import type { WEntryOut } from '../wire/types.js';
import type { ChunkReader } from './chunk-reader.js';

export const ROOT_INO = 1;

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
  /** Where the last read ended: a read starting there is sequential. */
  lastEnd: number;
  /** Chunks before this index have been asked for by readahead. */
  aheadTo: number;
}

export interface VfsOptions {
  /** Chunks fetched ahead of a sequential reader. */
  readaheadChunks: number;
  /** Files at most this large are fetched whole on their first read. */
  wholeFileBytes: number;
}

export function entryFromWire(e: WEntryOut): MetaEntry {
  const attr = attrFromWire(e.attr!);
  if (isReg(attr.mode)) {
    if (!e.digest?.length) return { attr };
    const digest = Buffer.from(e.digest);
    // A small file's chunk list comes with its entry; keep it only if it is the one the digest names.
    const chunks = e.chunks?.length || attr.size === 0 ? chunksFromWire(e.chunks ?? []) : undefined;
    return chunks && fileDigest(chunks).equals(digest) ? { attr, digest, chunks } : { attr, digest };
  }
  if (isLnk(attr.mode)) return { attr, target: e.symlinkTarget };
  return { attr };
}

export class Vfs {
  private readonly paths = new Map<number, string>([[ROOT_INO, '']]);
  private readonly handles = new Map<number, FileHandle>();
  private readonly listing = new Map<string, Promise<void>>();
  private nextFh = 1;

  constructor(
    readonly meta: MetaStore,
    private readonly mesh: MeshClient,
    readonly chunks: ChunkReader,
    private readonly opts: VfsOptions,
  ) {}

  get openFiles(): number {
    return this.handles.size;
  }

  private node(path: string, e: MetaEntry): Node {
    if (path !== '') this.paths.set(e.attr.ino, path);
    return { ino: path === '' ? ROOT_INO : e.attr.ino, path, attr: e.attr, target: e.target };
  }

  private pathOf(ino: number): string {
    const p = this.paths.get(ino);
    if (p === undefined) throw new FsError('ESTALE', `inode ${ino} is not known`);
    return p;
  }

  /** Lists a directory from the node (once at a time) into the metadata store. */
  list(dir: string): Promise<void> {
    let p = this.listing.get(dir);
    if (!p) {
      p = this.mesh
        .listDir(dir)
        .then((r) =>
          this.meta.putListing(
            dir,
            entryFromWire(r.dir!),
            r.entries.map((e) => ({ name: e.name, entry: entryFromWire(e) })),
          ),
        )
        .finally(() => this.listing.delete(dir));
      this.listing.set(dir, p);
    }
    return p;
  }

  /** The entry at a path: from memory, or by listing its parent once. */
  async entry(path: string): Promise<MetaEntry> {
    const known = this.meta.get(path);
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

  /** Path-based entry for drivers whose kernel interface speaks paths. */
  async resolve(path: string): Promise<Node> {
    return this.node(path, await this.entry(path));
  }

  async lookup(parentIno: number, name: string): Promise<Node> {
    const path = joinRel(this.pathOf(parentIno), name);
    return this.node(path, await this.entry(path));
  }

  async getattr(ino: number): Promise<Node> {
    const path = this.pathOf(ino);
    return this.node(path, await this.entry(path));
  }

  async readdir(ino: number): Promise<Node[]> {
    const dir = this.pathOf(ino);
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
    return out;
  }

  async readlink(ino: number): Promise<string> {
    const path = this.pathOf(ino);
    const e = await this.entry(path);
    if (!isLnk(e.attr.mode)) throw new FsError('EINVAL', `"${path}" is not a symlink`);
    return e.target ?? '';
  }

  /** Opens a regular file for reading: its chunk list, from the cache or the node. */
  async open(ino: number): Promise<FileHandle> {
    const path = this.pathOf(ino);
    let e = await this.entry(path);
    if (isDir(e.attr.mode)) throw new FsError('EISDIR', `"${path}" is a directory`);
    if (!isReg(e.attr.mode)) throw new FsError('EINVAL', `"${path}" is not a regular file`);
    let m = e.digest ? (e.chunks ? { digest: e.digest, chunks: e.chunks } : await this.meta.getManifest(path, e.digest)) : undefined;
    if (!m) {
      const r = await this.mesh.getManifest(path);
      m = { digest: Buffer.from(r.digest), chunks: chunksFromWire(r.chunks) };
      // The manifest is the newest word on the file: bring the entry up to it.
      e = { ...e, attr: attrFromWire(r.attr!), digest: m.digest };
      await this.meta.put(path, e);
      await this.meta.putManifest(path, m);
    }
    const h: FileHandle = { fh: this.nextFh++, path, size: e.attr.size, chunks: m.chunks, lastEnd: 0, aheadTo: 0 };
    this.handles.set(h.fh, h);
    return h;
  }

  release(fh: number): void {
    this.handles.delete(fh);
  }

  /** Reads up to `length` bytes at `offset` into `into`; returns the count (0 at EOF). */
  async read(fh: number, offset: number, length: number, into: Buffer): Promise<number> {
    const h = this.handles.get(fh);
    if (!h) throw new FsError('EBADF', `file handle ${fh} is not open`);
    if (offset >= h.size) return 0;
    const end = Math.min(h.size, offset + length);
    const first = chunkIndex(h.chunks, offset);
    let last = first;
    while (last + 1 < h.chunks.length && h.chunks[last + 1]!.offset < end) last++;

    // A small file comes whole, in one call; a sequential reader gets the
    // next chunks fetched ahead, in parallel with what it reads now.
    if (h.size <= this.opts.wholeFileBytes) {
      void this.chunks.ensure(h.chunks, h.path).catch(() => undefined);
    } else if ((offset === h.lastEnd || offset === 0) && last + 1 >= h.aheadTo - this.opts.readaheadChunks / 2) {
      // Refill the window in one call once half of it has been consumed:
      // fewer, longer streams than one call per chunk.
      const to = Math.min(h.chunks.length, last + 1 + this.opts.readaheadChunks);
      void this.chunks.ensure(h.chunks.slice(first, to), h.path).catch(() => undefined);
      h.aheadTo = to;
    }
    h.lastEnd = end;

    let done = 0;
    for (let i = first; i <= last; i++) {
      const c = h.chunks[i]!;
      const from = Math.max(offset, c.offset);
      const to = Math.min(end, c.offset + c.length);
      done += await this.chunks.read(c, from - c.offset, to - from, into, from - offset, h.path);
    }
    return done;
  }

  /** Paths of known inodes go stale when the node removes them. */
  forgetPath(path: string): void {
    const e = this.meta.get(path);
    if (e && this.paths.get(e.attr.ino) === path) this.paths.delete(e.attr.ino);
  }

  statfs(): { bsize: number; blocks: number; bfree: number; bavail: number; files: number; ffree: number; namemax: number } {
    // The node's real capacity is not on the wire yet; report a large,
    // mostly free filesystem so tools that check free space proceed.
    return { bsize: 4096, blocks: 2 ** 31, bfree: 2 ** 30, bavail: 2 ** 30, files: 2 ** 31, ffree: 2 ** 30, namemax: 255 };
  }
}

function chunkIndex(chunks: ChunkRef[], offset: number): number {
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (chunks[mid]!.offset <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
