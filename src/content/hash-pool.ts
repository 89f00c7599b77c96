// A bounded pool of hashing threads. At most `size` files are read and
// hashed at once, whatever the caller queues: indexing must never starve
// the rest of the machine's I/O (the system ghostfs replaces ran 32).
import { Worker } from 'node:worker_threads';
import type { ChunkingParams } from './chunker.js';
import type { Manifest } from './manifest.js';
import type { Attr } from './attr.js';

export interface HashJob {
  id: number;
  path: string;
  params: ChunkingParams;
  readSize: number;
}

export interface HashReply {
  id: number;
  manifest?: Manifest;
  attr?: Attr;
  stable?: boolean;
  error?: { code: string; message: string };
}

export interface HashResult {
  manifest: Manifest;
  attr: Attr;
  /** false when the file kept changing while it was hashed. */
  stable: boolean;
}

export class HashError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Pending {
  job: HashJob;
  resolve: (r: HashResult) => void;
  reject: (e: Error) => void;
}

export class HashPool {
  private readonly idle: Worker[] = [];
  private readonly workers: Worker[] = [];
  private readonly queue: Pending[] = [];
  private readonly running = new Map<number, Pending & { worker: Worker }>();
  private nextId = 1;
  private closed = false;
  /** Bytes hashed since start, for progress and metrics. */
  hashedBytes = 0;
  hashedFiles = 0;

  constructor(
    readonly size: number,
    private readonly params: ChunkingParams,
    private readonly readSize: number,
  ) {
    if (!(size >= 1)) throw new RangeError('hash pool size must be at least 1');
    for (let i = 0; i < size; i++) this.spawn();
  }

  private spawn(): void {
    const w = new Worker(new URL('./hash-worker.js', import.meta.url));
    w.on('message', (r: HashReply) => this.onReply(w, r));
    w.on('error', (err) => this.onWorkerError(w, err));
    w.unref();
    this.workers.push(w);
    this.idle.push(w);
  }

  get queued(): number {
    return this.queue.length + this.running.size;
  }

  hash(path: string): Promise<HashResult> {
    if (this.closed) return Promise.reject(new Error('hash pool is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ job: { id: this.nextId++, path, params: this.params, readSize: this.readSize }, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const w = this.idle.pop()!;
      const p = this.queue.shift()!;
      this.running.set(p.job.id, { ...p, worker: w });
      w.ref(); // a busy thread keeps the process alive; an idle one does not
      w.postMessage(p.job);
    }
  }

  private onReply(w: Worker, r: HashReply): void {
    const p = this.running.get(r.id);
    this.running.delete(r.id);
    w.unref();
    this.idle.push(w);
    if (p) {
      if (r.error) p.reject(new HashError(r.error.code, r.error.message));
      else {
        const m = r.manifest!;
        // Buffers arrive as Uint8Arrays after the structured clone.
        const manifest: Manifest = {
          digest: Buffer.from(m.digest),
          size: m.size,
          chunks: m.chunks.map((c) => ({ hash: Buffer.from(c.hash), offset: c.offset, length: c.length })),
        };
        this.hashedBytes += manifest.size;
        this.hashedFiles++;
        p.resolve({ manifest, attr: r.attr!, stable: !!r.stable });
      }
    }
    this.pump();
  }

  /** A thread that died fails its job and is replaced, so the pool keeps its size. */
  private onWorkerError(w: Worker, err: Error): void {
    for (const [id, p] of this.running) {
      if (p.worker === w) {
        this.running.delete(id);
        p.reject(err);
      }
    }
    this.workers.splice(this.workers.indexOf(w), 1);
    const i = this.idle.indexOf(w);
    if (i >= 0) this.idle.splice(i, 1);
    if (!this.closed) {
      this.spawn();
      this.pump();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.queue.splice(0)) p.reject(new Error('hash pool is closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
