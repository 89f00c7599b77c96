// The control protocol between the CLI and a running mount: one JSON object
// per line each way over a unix socket, one request per connection.
import type { PendingRecord } from '../mount/write-back.js';

export type ControlRequest =
  | { op: 'status' }
  | { op: 'flush'; deadlineMs: number }
  | { op: 'unmount'; force: boolean; deadlineMs: number }
  /** Drop cached chunks. */
  | { op: 'purge' }
  /** Evict least recently used chunks down to maxBytes. */
  | { op: 'gc'; maxBytes: number }
  /** Fetch everything under these paths (relative to the mountpoint) into the cache. */
  | { op: 'warmup'; paths: string[] };

export interface MountStatus {
  mountpoint: string;
  pid: number;
  workspace: string;
  driver: string;
  cacheDir: string;
  uptimeMs: number;
  offline: boolean;
  /** Each node: its health, and how chunk bytes travel from it (`chunks`, absent from older mounts). */
  endpoints: { endpoint: string; healthy: boolean; failures: number; lastError?: string; corruptChunks: number; renewals: number; chunks?: { over: 'lane' | 'grpc' | 'unknown'; why?: string } }[];
  cache: { chunks: number; bytes: number; quotaBytes: number; evictedChunks: number; evictedBytes: number; hits: number; misses: number; hitRate: number; knownEntries: number; unwrittenEntries: number };
  fetched: { chunks: number; bytes: number; failovers: number; corruptChunks: number };
  writeBack: { pending: number; committed: number; conflicts: number; failed: number; uploadedChunks: number; uploadedBytes: number };
  /** The oldest pending write-backs (up to 20): what each one waits for. */
  pendingWrites: PendingRecord[];
  changeFeed: { connected: boolean; generation: number; applied: number };
  openFiles: number;
  /** The node's user and group, shown as the mount's (--idmap user), when they differ (absent otherwise, and from older mounts). */
  owners?: { node: { uid: number; gid: number }; shownAs: { uid: number; gid: number } };
  /** Content of new small files open for writing that is held in memory, not yet in a dirty copy (absent from older mounts). */
  openFilesInMemoryBytes?: number;
  /**
   * The mount process's memory: resident in all, and the JS heap and buffers
   * within it. The rest is native (RocksDB, the driver, the allocator):
   * `mallocInUseBytes` is what native code holds from the allocator,
   * `mallocFreeBytes` the free space within its heaps, kept for reuse (a
   * trim once a minute gives its pages back to the kernel). Both are absent
   * without the addon or glibc.
   */
  memory: { rssBytes: number; heapUsedBytes: number; buffersBytes: number; mallocInUseBytes?: number; mallocFreeBytes?: number };
  /** Counters of the kernel driver (request sizes, fast-path reads...), when it keeps any. */
  driverStats?: Record<string, unknown>;
}

export type ControlReply =
  | { ok: true; status: MountStatus }
  | { ok: true; flushed: number; pending: number; pendingWrites?: PendingRecord[]; cutOff?: number }
  | { ok: true; chunks: number; bytes: number }
  | { ok: true; files: number; bytes: number; fetchedBytes: number; ms: number }
  | { ok: false; error: string; pending?: number; pendingWrites?: PendingRecord[]; openFiles?: OpenFile[]; openCount?: number };

/** A file open on a mount (see Vfs.openFileList). */
export interface OpenFile {
  path: string;
  writing: boolean;
}
