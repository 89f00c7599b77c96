// The native addon (native/build/ghostfs.node), when it was built: the
// libfuse3 low-level driver and the filesystem calls Node lacks. Everything
// that uses it has a fallback, so a machine without libfuse3's headers
// still runs ghostfs (on fuse-native and Node's own calls).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../util/project-root.js';
import type { Attr } from '../content/attr.js';

/** Opaque handle of a mounted session. */
export type SessionHandle = { readonly __session: unique symbol };
/** Opaque handle of an inotify instance read by the addon's thread (tree_watch.c). */
export type TreeWatchHandle = { readonly __treeWatch: unique symbol };

export interface MountOptions {
  fsname: string;
  /** Where chunk files live (chunks/ab/<hash>), for the read fast path. */
  chunkDir: string;
  attrTimeout: number;
  entryTimeout: number;
  maxWrite?: number;
  maxReadahead?: number;
  writebackCache?: boolean;
  /** Ask the kernel for FUSE passthrough (opens then may name a backing file). */
  passthrough?: boolean;
  autoUnmount?: boolean;
  allowOther?: boolean;
  debug?: boolean;
}

/** Called once per kernel request, in arrival order, on the JS thread. */
export type Dispatcher = (
  op: number,
  id: number,
  ino: number,
  ino2: number,
  fh: number,
  off: number,
  size: number,
  flags: number,
  mode: number,
  name: string | undefined,
  name2: string | undefined,
  data: Buffer | undefined,
  set: number[] | undefined,
  uid: number,
  gid: number,
) => void;

export interface DriverStats {
  forwarded: number;
  batches: number;
  /** Hand-offs to JS cut short after 8 MiB of written data, the rest left for the next turn of its event loop (native/src/fuse_driver.c, gfs_drain). */
  drainSplits: number;
  outstanding: number;
  reads: number;
  readBytes: number;
  readMax: number;
  fastReads: number;
  fastBytes: number;
  fastFallbacks: number;
  /** Fast-path reads of chunk files not in the page cache, and direct writes: handed to the bulk pool (native/src/bulk_pool.c). */
  poolReads: number;
  poolWrites: number;
  /** Requests read by the helper thread that reads beside the JS thread (native/src/request_loop.c). */
  helperRequests: number;
  writes: number;
  writeBytes: number;
  writeMax: number;
  /** Writes made in C straight into a dirty copy (native/src/direct_write.c). */
  directWrites: number;
  notifications: number;
  notifyErrors: number;
  /** Opendir requests the kernel sent (none once it opens directories itself). */
  opendirs: number;
  /** Files registered as backing files, and opens passed through to one. */
  backingFiles: number;
  passthroughOpens: number;
  /** 1 when passthrough was asked for at INIT (the kernel offered it). */
  passthrough: number;
  /** 1 when the kernel offered passthrough at INIT. */
  kernelPassthrough: number;
  /** 1 when lookups and readdirs of one directory may run side by side (asked for at INIT, which libfuse 3.14 leaves to the driver). */
  parallelDirops: number;
  maxWrite: number;
  maxReadahead: number;
  capable: number;
  want: number;
  readSizes: Record<string, number>;
  writeSizes: Record<string, number>;
}

export interface NativeAddon {
  mount(mountpoint: string, options: MountOptions, dispatch: Dispatcher): SessionHandle;
  unmount(h: SessionHandle): void;
  finish(h: SessionHandle): void;
  replyErr(id: number, errno: number): void;
  replyEntry(id: number, attr: Float64Array | null): void;
  replyAttr(id: number, attr: Float64Array): void;
  /** With `backingId`, the open file's reads go to that backing file in the kernel, not to the mount. */
  replyOpen(id: number, fh: number, bits: number, backingId?: number): void;
  /** Registers an open file (a descriptor) as a backing file; its id names it in replyOpen. Throws (EPERM, EOPNOTSUPP...) when the kernel will not. */
  backingOpen(h: SessionHandle, fd: number): number;
  /** The id names the file no more; opens made with it keep their backing. */
  backingClose(h: SessionHandle, id: number): void;
  replyCreate(id: number, attr: Float64Array, fh: number, bits: number): void;
  replyBuf(id: number, buf: Buffer, length: number): void;
  /** A read's data in pieces (at most 64), sent in one gathering write. */
  replyBufs(id: number, parts: Buffer[]): void;
  replyWrite(id: number, count: number): void;
  replyLseek(id: number, offset: number): void;
  replyReadlink(id: number, target: string): void;
  replyStatfs(id: number, values: Float64Array): void;
  /** Returns how many entries fitted in the kernel's buffer. */
  replyDir(id: number, size: number, plus: 0 | 1, firstOffset: number, names: string[], attrs: Float64Array): number;
  stats(h: SessionHandle): DriverStats;
  /** The supplementary groups of the process that made request `id`; null when they cannot be had. Only while the request is unanswered (Reply.groups sees to that): the request is freed by its answer. */
  reqGroups(id: number): number[] | null;
  fastOpen(h: SessionHandle, fh: number, size: number, hashes: Buffer, offsets: Float64Array, lengths: Float64Array, local: Uint8Array): void;
  fastMark(h: SessionHandle, fh: number, index: number): void;
  fastClose(h: SessionHandle, fh: number): void;
  /** Writes to `fh` are made into `fd` in C from now on (native/src/direct_write.c), each then told to the dispatcher as a WROTE. */
  directWriteStart(h: SessionHandle, fh: number, fd: number): void;
  /** Ends that; returns the writes made there and not told yet, as offset, bytes, offset, bytes, ... in the order they were made. */
  directWriteStop(h: SessionHandle, fh: number): (number | Buffer)[];
  invalInode(h: SessionHandle, ino: number): void;
  /** A directory's attributes and its listing the kernel cached. */
  invalListing(h: SessionHandle, dirIno: number): void;
  invalEntry(h: SessionHandle, parentIno: number, name: string): void;
  notifyDelete(h: SessionHandle, parentIno: number, ino: number, name: string): void;
  /** flags: RENAME_NOREPLACE (1), RENAME_EXCHANGE (2). */
  renameat2(from: string, to: string, flags: number): void;
  /** A fifo, socket or device node at `path` (`mode` holds its type bits; `rdev` a device's number as st_rdev); EEXIST if the name is taken. */
  mknod(path: string, mode: number, rdev: number): void;
  /** Exact nanoseconds; null leaves a time as it is, 'now' sets it to now. Never follows a final symlink. */
  utimensat(path: string, atimeS: number | null | 'now', atimeNs: number, mtimeS: number | null | 'now', mtimeNs: number): void;
  futimens(fd: number, atimeS: number | null | 'now', atimeNs: number, mtimeS: number | null | 'now', mtimeNs: number): void;
  /** Names a file opened with O_TMPFILE (Node opens those itself; it cannot name them). EEXIST if the name is taken. */
  linkTmpfile(fd: number, path: string): void;
  openBeneath(root: string, rel: string, flags: number, mode: number): number;
  /**
   * A new file in `dir` (relative to `root`, resolved beneath it) named
   * `name`: written, given its owner, `mode` and times, fsynced, linked
   * (EEXIST if the name is taken), the directory fsynced; all on a worker
   * thread. A null second leaves that time as the creation set it; a uid or
   * gid of -1 leaves that part of the owner so. An owner the process cannot
   * give does not fail the job: `ownerErrno` says why it was not given.
   * Resolves with the new file's attributes, and (`dir`) its directory's after the name was added.
   */
  writeNewFile(root: string, dir: string, name: string, data: Buffer, mode: number, atimeS: number | null, atimeNs: number, mtimeS: number | null, mtimeNs: number, uid: number, gid: number): Promise<Attr & { ownerErrno?: string; dir?: Attr }>;
  /**
   * Writes `head`, then bytes [offset, offset+length) of the file `fileFd`,
   * to the TCP socket `socketFd` (sendfile, on a worker thread). Nothing
   * else may write to the socket until it settles; after a rejection the
   * connection must be dropped (a frame may be cut short). Setting
   * `cancel[0]` stops a send waiting for room in the socket (ECANCELED).
   */
  sendFileRange(socketFd: number, head: Buffer, fileFd: number, offset: number, length: number, cancel: Int32Array): Promise<void>;
  /**
   * A new file `name` in `dir` holding `data`, made unnamed (O_TMPFILE) and
   * linked whole, not fsynced; all on a worker thread. Resolves false when
   * the name was taken (left as it is).
   */
  writeCacheFile(dir: string, name: string, data: Buffer): Promise<boolean>;
  /**
   * For each i, `lengths[i]` bytes of the file `src` at `offsets[i]` made
   * the cache file `dirs[i]/names[i]` by the kernel, all in one worker job
   * (cache_write.c). `made[i]`: 1 made, 2 the name was taken already, 0 not
   * made: the source ends before that range, or `error` stopped the job at
   * that chunk or before it. No `made` at all if the addon ran out of
   * memory answering.
   */
  cacheFromFile(src: string, dirs: string[], names: string[], offsets: number[], lengths: number[]): Promise<{ made?: Uint8Array; error?: NodeJS.ErrnoException }>;
  /**
   * The whole of each file `paths[i]` (`lengths[i]` bytes) copied into the
   * file `dstFd` at `offsets[i]`, by the kernel (copy_file_range), starting
   * the destination's writeback every 32 MiB and dropping each stretch from
   * the page cache once written; all on a worker thread. EIO
   * when a file is shorter than its length.
   */
  copyChunks(dstFd: number, paths: string[], offsets: number[], lengths: number[]): Promise<void>;
  /** fdatasync of `fd`, then its clean pages dropped from the page cache (write_out.c), on a worker thread. */
  writeOut(fd: number): Promise<void>;
  fsyncPath(path: string): void;
  /** The chunker's gear table (256 values), once; then gearScan finds cuts as src/content/chunker.ts does. */
  gearTable(table: Int32Array): void;
  /** Index just past the first cut in [from, limit) (maskS before `normal`, maskL after), or -1; the hash is h0 at `from`. */
  gearScan(buf: Buffer, from: number, normal: number, limit: number, maskS: number, maskL: number, h0: number): number;
  syncfs(fd: number): void;
  /** lseek(SEEK_DATA): the first byte of data at or after `offset`, or -1 when only a hole follows to the end. */
  seekData(fd: number, offset: number): number;
  lazyUnmount(path: string): void;
  /** glibc's mallopt: allocations below `mmapThreshold` bytes come from the heap, which keeps up to `trimThreshold` free bytes. False elsewhere. */
  keepMallocMemory(mmapThreshold: number, trimThreshold: number): boolean;
  /** glibc's mallinfo2 over all arenas; null elsewhere. */
  mallocStats(): MallocStats | null;
  /** glibc's malloc_trim(0): freed heap pages go back to the kernel; whether any did. */
  mallocTrim(): boolean;
  /**
   * An inotify instance whose events a thread of the addon reads: `onEvents`
   * gets, on the JS thread, the raw `struct inotify_event` records of each
   * burst at once, `delayMs` after its first event (tree_watch.c).
   */
  treeWatchOpen(onEvents: (batch: Buffer) => void, delayMs: number): TreeWatchHandle;
  /** Watches a directory, not through a symlink; its watch descriptor. Throws an errno error (ENOSPC: out of watches). */
  treeWatchAdd(h: TreeWatchHandle, dir: string): number;
  treeWatchRemove(h: TreeWatchHandle, wd: number): void;
  /** The events noticed and not yet handed over, read from the kernel now; undefined if none. */
  treeWatchDrain(h: TreeWatchHandle): Buffer | undefined;
  treeWatchClose(h: TreeWatchHandle): void;
}

export interface MallocStats {
  /** Bytes native code holds (heap blocks in use plus directly mapped blocks). */
  inUseBytes: number;
  /** Free space within the allocator's heaps, kept for reuse (trimmed pages still count). */
  freeBytes: number;
  /** Large blocks mapped directly (part of inUseBytes). */
  mappedBytes: number;
}

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

function addonPath(): string | undefined {
  const p = join(projectRoot(), 'native', 'build', 'ghostfs.node');
  return existsSync(p) ? p : undefined;
}

let loaded: NativeAddon | null | undefined;
let loadError: string | undefined;

/** The addon, or undefined when it was not built here (see `nativeLoadError`). */
export function nativeAddon(): NativeAddon | undefined {
  if (loaded === undefined) {
    loaded = null;
    const p = process.env.GHOSTFS_NO_NATIVE ? undefined : addonPath();
    if (!p) loadError = process.env.GHOSTFS_NO_NATIVE ? 'disabled by GHOSTFS_NO_NATIVE' : 'native/build/ghostfs.node is not built (needs libfuse3-dev; run `bash native/build.sh`)';
    else {
      try {
        loaded = createRequire(import.meta.url)(p) as NativeAddon;
      } catch (err) {
        loadError = `cannot load ${p}: ${(err as Error).message}`;
      }
    }
  }
  return loaded ?? undefined;
}

export function nativeLoadError(): string | undefined {
  nativeAddon();
  return loadError;
}

/**
 * Lets a busy process reuse the memory of its chunk-sized buffers instead of
 * mapping fresh pages for each (see keepMallocMemory in native/src/sys_calls.c):
 * buffers up to 8 MiB (a 4 MiB chunk and its message) stay on the heap, and
 * up to 64 MiB of freed heap is kept. A no-op without the addon or glibc.
 */
export function keepMallocMemory(): boolean {
  return nativeAddon()?.keepMallocMemory(8 << 20, 64 << 20) ?? false;
}

/** Returns the pages of freed heap memory to the kernel (see mallocTrim in native/src/sys_calls.c). */
export function releaseFreedMemory(): boolean {
  return nativeAddon()?.mallocTrim?.() ?? false;
}

/** The allocator's view of native memory, where the addon and glibc give it. */
export function mallocStats(): MallocStats | undefined {
  return nativeAddon()?.mallocStats?.() ?? undefined;
}
