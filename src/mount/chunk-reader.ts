// Chunk bytes for reads: from the recently-fetched memory window, from the
// local chunk store, or from the mesh. Two readers wanting one missing chunk
// cause one fetch (single flight); many missing chunks travel in one
// streaming call. Fetched chunks are already verified by the mesh client.
import type { ChunkRef } from '../content/manifest.js';
import type { ChunkStore } from '../cache/chunk-store.js';
import type { MeshClient } from '../mesh/mesh-client.js';
import { log } from '../log.js';

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined); // a waiter may never come
  return { promise, resolve, reject };
}

export interface ReadStats {
  hits: number;
  misses: number;
  bytesRead: number;
}

export class ChunkReader {
  private readonly inflight = new Map<string, Deferred>();
  /** Chunks fetched lately, kept in memory while they are being read (insertion order = age). */
  private readonly recent = new Map<string, Buffer>();
  private recentBytes = 0;
  readonly stats: ReadStats = { hits: 0, misses: 0, bytesRead: 0 };

  constructor(
    private readonly store: ChunkStore,
    private readonly mesh: MeshClient,
    private readonly memoryBytes = 64 * 1024 * 1024,
  ) {}

  private remember(k: string, data: Buffer): void {
    this.recent.set(k, data);
    this.recentBytes += data.length;
    while (this.recentBytes > this.memoryBytes && this.recent.size > 1) {
      const [oldK, old] = this.recent.entries().next().value as [string, Buffer];
      this.recent.delete(oldK);
      this.recentBytes -= old.length;
    }
  }

  /** A chunk's bytes when memory holds them: fetched lately, or being written to the store. */
  private inMemory(hash: Buffer, k = hash.toString('latin1')): Buffer | undefined {
    return this.recent.get(k) ?? this.store.writingNow(hash);
  }

  isLocal(hash: Buffer): boolean {
    return this.store.has(hash) || this.inMemory(hash) !== undefined;
  }

  /** On disk in the chunk store: what the native driver can read without JS. */
  onDisk(hash: Buffer): boolean {
    return this.store.has(hash);
  }

  get chunkDir(): string {
    return this.store.dir;
  }

  /** Reads served elsewhere (the native fast path) still count as uses for eviction. */
  touch(chunks: readonly ChunkRef[]): void {
    for (const c of chunks) this.store.touch(c.hash);
  }

  /** Makes sure these chunks are local, fetching the missing ones in one call. */
  ensure(chunks: readonly ChunkRef[], pathHint: string): Promise<void> {
    const waits: Promise<void>[] = [];
    const missing: Buffer[] = [];
    for (const c of chunks) {
      const k = c.hash.toString('latin1');
      if (this.store.has(c.hash) || this.inMemory(c.hash, k)) continue;
      let d = this.inflight.get(k);
      if (!d) {
        d = deferred();
        this.inflight.set(k, d);
        missing.push(c.hash);
      }
      waits.push(d.promise);
    }
    if (missing.length > 0) void this.fetch(missing, pathHint);
    return Promise.all(waits).then(() => undefined);
  }

  private async fetch(hashes: Buffer[], pathHint: string): Promise<void> {
    try {
      await this.mesh.fetchChunks(hashes, pathHint, (hash, data) => {
        const k = hash.toString('latin1');
        this.remember(k, data);
        this.store.put(hash, data).catch((err) => log.warn({ chunk: hash.toString('hex'), err: (err as Error).message }, 'cannot store chunk in the cache'));
        this.inflight.get(k)?.resolve();
        this.inflight.delete(k);
      });
    } catch (err) {
      for (const h of hashes) {
        const k = h.toString('latin1');
        this.inflight.get(k)?.reject(err as Error);
        this.inflight.delete(k);
      }
    }
  }

  /**
   * Bytes [offset, offset+length) of a chunk: a view of the chunk when it is
   * in memory (no copy), else read from the chunk store, else fetched.
   */
  async slice(chunk: ChunkRef, offset: number, length: number, pathHint: string): Promise<Buffer> {
    const k = chunk.hash.toString('latin1');
    let mem = this.inMemory(chunk.hash, k);
    if (!mem && !this.store.has(chunk.hash)) {
      this.stats.misses++;
      await this.ensure([chunk], pathHint);
      mem = this.recent.get(k);
    } else {
      this.stats.hits++;
    }
    let out: Buffer;
    if (mem) out = mem.subarray(offset, offset + length);
    else {
      out = Buffer.allocUnsafe(length);
      let n: number;
      try {
        n = await this.store.read(chunk.hash, offset, length, out, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        // Evicted between the check and the read: fetch it again.
        await this.ensure([chunk], pathHint);
        const again = this.inMemory(chunk.hash, k);
        n = again ? again.copy(out, 0, offset, offset + length) : await this.store.read(chunk.hash, offset, length, out, 0);
      }
      out = out.subarray(0, n);
    }
    this.stats.bytesRead += out.length;
    return out;
  }
}
