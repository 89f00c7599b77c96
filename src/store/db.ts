// The RocksDB wrapper both the node and the mount use: open, get, getMany,
// atomic batches and prefix scans. Keys are built with `key()` so that every
// key starts with its workspace and record kind: per-workspace and per-kind
// lookups are prefix scans, never full scans.
import RocksDB from 'rocksdb-native';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { statfsSync } from 'node:fs';
import { join } from 'node:path';
import { log } from '../log.js';
import { WalSync } from './wal-sync.js';

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

type Op = ['put', Buffer, Buffer] | ['del', Buffer] | ['delRange', Buffer, Buffer];

/** Operations collected here and applied atomically by `commit()` (one RocksDB write batch). */
export class Batch {
  private readonly ops: Op[] = [];

  constructor(private readonly store: Store) {}

  put(k: Buffer, v: Buffer): this {
    this.ops.push(['put', k, v]);
    return this;
  }

  del(k: Buffer): this {
    this.ops.push(['del', k]);
    return this;
  }

  delPrefix(p: Buffer): this {
    this.ops.push(['delRange', p, prefixEnd(p)]);
    return this;
  }

  get size(): number {
    return this.ops.length;
  }

  /** A batch of this one's operations followed by `later`'s (applied together, in that order). */
  followedBy(later: Batch): Batch {
    const b = new Batch(this.store);
    b.ops.push(...this.ops, ...later.ops);
    return b;
  }

  /** `durable`: on disk when this resolves (see Store.apply). */
  async commit(opts: { durable?: boolean } = {}): Promise<void> {
    if (this.ops.length > 0) await this.store.apply(this.ops, opts);
  }
}

/** Free bytes a reopen wants before it is tried: its write-ahead logs are replayed into new files. */
const REOPEN_MARGIN = 1 << 20;
/** After a reopen that failed, or whose retried write failed again: no new reopen before this. */
const REOPEN_BACKOFF_MS = 1000;
/**
 * Each memtable's size before it is flushed (RocksDB keeps two at most).
 * rocksdb-native's default is 64 MiB: a long-running mount's memory grew
 * toward two full ones. Our records are small, so 8 MiB still gathers
 * thousands of them per flush.
 */
const WRITE_BUFFER_BYTES = 8 << 20;

/** Writes waiting their turn: a batch's operations, or a flush of the memtables. */
type Queued = { resolve: () => void; reject: (err: unknown) => void } & ({ ops: readonly Op[]; durable: boolean } | { flush: true });

/**
 * A RocksDB database. Writes go in the order they were asked for, one
 * database write at a time: those that arrive while one is under way go
 * together in the next (each batch stays atomic; a later one never lands
 * before an earlier one). A database whose write failed (a full disk, most
 * often) refuses every later write until it is opened again; this wrapper
 * then reopens it as soon as its filesystem has room for that, and applies
 * the failed writes once more. Until then writes fail with ENOSPC (or EIO)
 * and reads go on from the database as it was.
 */
export class Store {
  /** Why writes are refused until a reopen (set by a failed write). */
  private broken?: Error;
  private reopening?: Promise<void>;
  private noReopenUntil = 0;
  private closed = false;
  private readonly queue: Queued[] = [];
  /** The write loop, while it runs. */
  private writing?: Promise<void>;

  /** Syncs the write-ahead log after durable writes. */
  readonly wal: WalSync;

  private constructor(
    private db: RocksDB,
    readonly path: string,
  ) {
    this.wal = new WalSync(path);
  }

  static async open(path: string, opts: { readOnly?: boolean } = {}): Promise<Store> {
    if (!opts.readOnly) await mkdir(path, { recursive: true });
    return new Store(await openDb(path, !!opts.readOnly), path);
  }

  /**
   * Applies `ops` atomically, after every write asked for before. A write
   * survives the process being killed once this resolves; a `durable` one
   * survives a power loss too (its log is fdatasynced). Durable writes that
   * arrive while one is under way share the next sync.
   */
  apply(ops: readonly Op[], opts: { durable?: boolean } = {}): Promise<void> {
    return this.enqueue((resolve, reject) => ({ ops, durable: !!opts.durable, resolve, reject }));
  }

  /** Flushes memtables to SST files (after every write asked for before): survives power loss, not only a crash. */
  sync(): Promise<void> {
    return this.enqueue((resolve, reject) => ({ flush: true, resolve, reject }));
  }

  private enqueue(make: (resolve: () => void, reject: (err: unknown) => void) => Queued): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`the database ${this.path} is closed`));
    const p = new Promise<void>((resolve, reject) => this.queue.push(make(resolve, reject)));
    this.kick();
    return p;
  }

  private kick(): void {
    if (this.writing) return;
    this.writing = this.writeLoop().finally(() => {
      this.writing = undefined;
      // Asked for after the loop's last look at the queue.
      if (this.queue.length) this.kick();
    });
  }

  private async writeLoop(): Promise<void> {
    while (this.queue.length) {
      // A flush goes alone; the batches before it go together.
      const first = this.queue[0]!;
      const flushAt = this.queue.findIndex((q) => 'flush' in q);
      const group = this.queue.splice(0, 'flush' in first ? 1 : flushAt === -1 ? this.queue.length : flushAt);
      try {
        const durable = group.some((q) => 'durable' in q && q.durable);
        await this.withReopen(async (db) => {
          if ('flush' in first) return db.flush();
          const before = durable ? this.wal.sizeBefore(db) : undefined;
          const ops = group.flatMap((q) => ('ops' in q ? q.ops : []));
          if (ops.length) await writeOps(db, ops);
          if (durable) await this.wal.sync(db, before);
        });
        for (const q of group) q.resolve();
      } catch (err) {
        for (const q of group) q.reject(err);
      }
    }
  }

  /** Runs a write; after a failure, reopens the database (when there is room) and runs it once more. */
  private async withReopen(write: (db: RocksDB) => Promise<unknown>): Promise<void> {
    if (this.broken) await this.reopen();
    try {
      await write(this.db);
      return;
    } catch (err) {
      if (this.closed) throw err;
      this.broken = err as Error;
    }
    await this.reopen();
    try {
      await write(this.db);
    } catch (err) {
      this.broken = err as Error;
      this.noReopenUntil = Date.now() + REOPEN_BACKOFF_MS;
      throw this.refusal(err as Error);
    }
  }

  /**
   * Reopens a database that refuses writes, when its filesystem has room
   * for the reopen; throws the reason writes are refused when it has not.
   * Only the write loop calls it: one reopen at a time.
   */
  private async reopen(): Promise<void> {
    const why = this.broken!;
    // Checked at every refused write (a statfs and a directory listing): writes work again as soon as there is room.
    if (this.closed || Date.now() < this.noReopenUntil || !(await this.roomToReopen())) throw this.refusal(why);
    this.reopening = (async () => {
      await this.db.close().catch(() => undefined);
      try {
        this.db = await openDb(this.path, false);
      } catch (err) {
        this.noReopenUntil = Date.now() + REOPEN_BACKOFF_MS;
        // Reads at least go on (a read-only open writes nothing); a later write tries again.
        this.db = await openDb(this.path, true).catch(() => this.db);
        throw err;
      }
      this.broken = undefined;
      log.warn({ db: this.path, after: why.message }, 'database reopened after a failed write');
    })();
    try {
      await this.reopening;
    } catch (err) {
      throw this.refusal(err as Error);
    } finally {
      this.reopening = undefined;
    }
  }

  /** The database to read from: after a reopen under way. */
  private async live(): Promise<RocksDB> {
    await this.reopening?.catch(() => undefined);
    return this.db;
  }

  private async roomToReopen(): Promise<boolean> {
    try {
      let logs = 0;
      for (const f of await readdir(this.path)) if (f.endsWith('.log')) logs += (await stat(join(this.path, f))).size;
      return this.freeBytes() >= logs + REOPEN_MARGIN;
    } catch {
      return false;
    }
  }

  /** Free bytes on the database's filesystem; NaN when that cannot be told (neither room to reopen nor full). */
  private freeBytes(): number {
    try {
      const fs = statfsSync(this.path);
      return fs.bavail * fs.bsize;
    } catch {
      return NaN;
    }
  }

  /** The error a refused write gets: ENOSPC when the filesystem is full, EIO otherwise. */
  private refusal(cause: Error): Error {
    const full = this.freeBytes() < REOPEN_MARGIN;
    return Object.assign(new Error(`the database ${this.path} cannot be written${full ? ': its filesystem is full' : ''} (${cause.message})`), { code: full ? 'ENOSPC' : 'EIO', cause });
  }

  get(k: Buffer): Promise<Buffer | null> {
    return this.reopening ? this.live().then((db) => db.get(k)) : this.db.get(k);
  }

  /** Many point reads in one native round trip. */
  async getMany(keys: Buffer[]): Promise<(Buffer | null)[]> {
    if (keys.length === 0) return [];
    const rb = (await this.live()).read({ capacity: keys.length });
    const ps = keys.map((k) => rb.get(k));
    try {
      await rb.flush();
      return await Promise.all(ps);
    } finally {
      rb.destroy();
    }
  }

  batch(): Batch {
    return new Batch(this);
  }

  async put(k: Buffer, v: Buffer): Promise<void> {
    await this.batch().put(k, v).commit();
  }

  async del(k: Buffer): Promise<void> {
    await this.batch().del(k).commit();
  }

  /** Every key/value under a prefix, in key order. */
  async *scan(p: Buffer, opts: { reverse?: boolean; limit?: number; keysOnly?: boolean } = {}): AsyncGenerator<{ key: Buffer; value: Buffer }> {
    const it = (await this.live()).iterator({
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
  async forEach(p: Buffer, fn: (key: Buffer, value: Buffer) => void): Promise<void> {
    // An empty prefix walks the whole database.
    const range = p.length ? { gte: p, lt: prefixEnd(p) } : {};
    const it = (await this.live()).iterator({ ...range, capacity: 8192 }) as unknown as NodeJS.EventEmitter;
    return new Promise((resolve, reject) => {
      it.on('data', (e: { key: Buffer; value: Buffer | null }) => fn(e.key, e.value ?? Buffer.alloc(0)));
      it.on('end', resolve);
      it.on('error', reject);
    });
  }

  /** Keys/values in [from, to). */
  async *range(from: Buffer, to: Buffer, opts: { limit?: number } = {}): AsyncGenerator<{ key: Buffer; value: Buffer }> {
    const it = (await this.live()).iterator({ gte: from, lt: to, limit: opts.limit ?? Infinity, capacity: 1024 });
    for await (const { key: k, value } of it) yield { key: k, value: value ?? Buffer.alloc(0) };
  }

  async deletePrefix(p: Buffer): Promise<void> {
    await this.batch().delPrefix(p).commit();
  }

  async approximateSize(p: Buffer): Promise<number> {
    return (await this.live()).approximateSize(p, prefixEnd(p));
  }

  /** Closes the database once the writes already asked for are done (later ones are refused). */
  async close(): Promise<void> {
    this.closed = true;
    while (this.writing) await this.writing;
    await this.wal.close();
    if (!this.db.closed) await this.db.close();
  }
}

async function openDb(path: string, readOnly: boolean): Promise<RocksDB> {
  const db = new RocksDB(path, { readOnly, createIfMissing: !readOnly, maxBackgroundJobs: 2, writeBufferSize: WRITE_BUFFER_BYTES });
  try {
    await db.ready();
  } catch (err) {
    const msg = (err as Error).message;
    if (/lock/i.test(msg)) throw new Error(`the database ${path} is in use by another ghostfs process (${msg})`);
    throw new Error(`cannot open the database ${path}: ${msg}`);
  }
  return db;
}

async function writeOps(db: RocksDB, ops: readonly Op[]): Promise<void> {
  const wb = db.write();
  try {
    for (const op of ops) {
      if (op[0] === 'put') wb.tryPut(op[1], op[2]);
      else if (op[0] === 'del') wb.tryDelete(op[1]);
      else wb.tryDeleteRange(op[1], op[2]);
    }
    await wb.flush();
  } finally {
    wb.destroy();
  }
}
