// The RocksDB wrapper both the node and the mount use: open, get, getMany,
// atomic batches and prefix scans. Keys are built with `key()` so that every
// key starts with its workspace and record kind: per-workspace and per-kind
// lookups are prefix scans, never full scans.
import RocksDB from 'rocksdb-native';
import { mkdir } from 'node:fs/promises';

const SEP = 0;

/** Key from parts: strings are UTF-8 (never contain 0x00 here), buffers raw. */
export function key(...parts: (string | Uint8Array)[]): Buffer {
  const bufs: Buffer[] = [];
  parts.forEach((p, i) => {
    if (i > 0) bufs.push(Buffer.of(SEP));
    bufs.push(typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p.buffer, p.byteOffset, p.byteLength));
  });
  return Buffer.concat(bufs);
}

/** Prefix covering every key whose leading parts are `parts`. */
export function prefix(...parts: string[]): Buffer {
  return Buffer.concat([key(...parts), Buffer.of(SEP)]);
}

/** Smallest key greater than every key that starts with `p`. */
export function prefixEnd(p: Buffer): Buffer {
  const end = Buffer.from(p);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  throw new Error('store: prefix has no upper bound');
}

/** Big-endian u64 for keys that must sort numerically (generations). */
export function u64be(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

export class Batch {
  private ops = 0;

  constructor(private readonly wb: ReturnType<RocksDB['write']>) {}

  put(k: Buffer, v: Buffer): this {
    this.wb.tryPut(k, v);
    this.ops++;
    return this;
  }

  del(k: Buffer): this {
    this.wb.tryDelete(k);
    this.ops++;
    return this;
  }

  delPrefix(p: Buffer): this {
    this.wb.tryDeleteRange(p, prefixEnd(p));
    this.ops++;
    return this;
  }

  get size(): number {
    return this.ops;
  }

  /** Applies every operation atomically (one RocksDB write batch). */
  async commit(): Promise<void> {
    try {
      if (this.ops > 0) await this.wb.flush();
    } finally {
      this.wb.destroy();
    }
  }
}

export class Store {
  private constructor(
    private readonly db: RocksDB,
    readonly path: string,
  ) {}

  static async open(path: string, opts: { readOnly?: boolean } = {}): Promise<Store> {
    if (!opts.readOnly) await mkdir(path, { recursive: true });
    const db = new RocksDB(path, { readOnly: !!opts.readOnly, createIfMissing: !opts.readOnly, maxBackgroundJobs: 2 });
    try {
      await db.ready();
    } catch (err) {
      const msg = (err as Error).message;
      if (/lock/i.test(msg)) {
        throw new Error(`the database ${path} is in use by another ghostfs process (${msg})`);
      }
      throw new Error(`cannot open the database ${path}: ${msg}`);
    }
    return new Store(db, path);
  }

  get(k: Buffer): Promise<Buffer | null> {
    return this.db.get(k);
  }

  /** Many point reads in one native round trip. */
  async getMany(keys: Buffer[]): Promise<(Buffer | null)[]> {
    if (keys.length === 0) return [];
    const rb = this.db.read({ capacity: keys.length });
    const ps = keys.map((k) => rb.get(k));
    try {
      await rb.flush();
      return await Promise.all(ps);
    } finally {
      rb.destroy();
    }
  }

  batch(): Batch {
    return new Batch(this.db.write());
  }

  async put(k: Buffer, v: Buffer): Promise<void> {
    await this.batch().put(k, v).commit();
  }

  async del(k: Buffer): Promise<void> {
    await this.batch().del(k).commit();
  }

  /** Every key/value under a prefix, in key order. */
  async *scan(p: Buffer, opts: { reverse?: boolean; limit?: number; keysOnly?: boolean } = {}): AsyncGenerator<{ key: Buffer; value: Buffer }> {
    const it = this.db.iterator({
      gte: p,
      lt: prefixEnd(p),
      reverse: !!opts.reverse,
      limit: opts.limit ?? Infinity,
      values: !opts.keysOnly,
      capacity: 1024,
    });
    for await (const { key: k, value } of it) {
      yield { key: k, value: value ?? Buffer.alloc(0) };
    }
  }

  /**
   * Calls `fn` for every key/value under a prefix, in key order. Faster than
   * `scan` for whole-prefix loads: no promise per entry.
   */
  forEach(p: Buffer, fn: (key: Buffer, value: Buffer) => void): Promise<void> {
    // An empty prefix walks the whole database.
    const range = p.length ? { gte: p, lt: prefixEnd(p) } : {};
    const it = this.db.iterator({ ...range, capacity: 8192 }) as unknown as NodeJS.EventEmitter;
    return new Promise((resolve, reject) => {
      it.on('data', (e: { key: Buffer; value: Buffer | null }) => fn(e.key, e.value ?? Buffer.alloc(0)));
      it.on('end', resolve);
      it.on('error', reject);
    });
  }

  /** Keys/values in [from, to). */
  async *range(from: Buffer, to: Buffer, opts: { limit?: number } = {}): AsyncGenerator<{ key: Buffer; value: Buffer }> {
    const it = this.db.iterator({ gte: from, lt: to, limit: opts.limit ?? Infinity, capacity: 1024 });
    for await (const { key: k, value } of it) yield { key: k, value: value ?? Buffer.alloc(0) };
  }

  async deletePrefix(p: Buffer): Promise<void> {
    await this.batch().delPrefix(p).commit();
  }

  async approximateSize(p: Buffer): Promise<number> {
    return this.db.approximateSize(p, prefixEnd(p));
  }

  /** Flushes memtables to SST files: survives power loss, not only a crash. */
  async sync(): Promise<void> {
    await this.db.flush();
  }

  async close(): Promise<void> {
    if (!this.db.closed) await this.db.close();
  }
}
