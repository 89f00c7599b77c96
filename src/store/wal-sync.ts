// Durable writes for a RocksDB database. rocksdb-native writes its
// write-ahead log with write() and never syncs it (its write calls take no
// WriteOptions): a record survives the process being killed, not the
// machine losing power or the kernel crashing. A write that must survive
// those (a journal record whose close() returns) is followed by an
// fdatasync of the log that holds it, which is what RocksDB's own
// `sync = true` does.
import { fstatSync } from 'node:fs';
import { open, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type RocksDB from 'rocksdb-native';
import { syncPath } from '../util/sync-path.js';

interface OpenLog {
  db: RocksDB;
  number: number;
  fh: FileHandle;
}

/**
 * Finds and syncs the log a write went to. Only the Store's write loop
 * writes to its database, one write at a time, and the log changes only
 * inside a write (a full memtable switches to a new one before the write
 * goes in) or a flush: so if the log known before a write grew, the write
 * is in it; otherwise the database is asked which log is current.
 */
export class WalSync {
  private log?: OpenLog;
  /** fdatasyncs made, and the number of the log last synced (the tests read them). */
  syncs = 0;
  lastSynced = -1;

  constructor(private readonly dir: string) {}

  /** The size of the log known now, to pass to sync() after the write; undefined when none is known for `db`. */
  sizeBefore(db: RocksDB): number | undefined {
    const size = this.log?.db === db ? this.size(this.log) : -1;
    return size < 0 ? undefined : size;
  }

  /** After a write to `db`: resolves once the log holding it is on disk. */
  async sync(db: RocksDB, sizeBefore: number | undefined): Promise<void> {
    const known = this.log;
    if (!(known && known.db === db && sizeBefore !== undefined && this.size(known) > sizeBefore)) {
      const wal = await db.currentWalFile();
      if (!this.log || this.log.db !== db || this.log.number !== wal.number) await this.switchTo(db, wal.number, join(this.dir, wal.path));
    }
    const log = this.log!;
    await log.fh.datasync();
    this.syncs++;
    this.lastSynced = log.number;
  }

  /** The log's size; -1 when it cannot be told. */
  private size(log: OpenLog): number {
    try {
      return fstatSync(log.fh.fd).size;
    } catch {
      return -1;
    }
  }

  /**
   * A new log: the logs before it may hold records written since the last
   * sync (a memtable switch can come between a record and its sync), the
   * log synced last included (written to after that sync), so they are
   * synced too, unless gone (a flushed memtable's log is deleted once its
   * table file is on disk), and so is the directory, which holds the new
   * log's name.
   */
  private async switchTo(db: RocksDB, number: number, path: string): Promise<void> {
    const fh = await open(path, 'r'); // fdatasync needs no write access
    try {
      const earlier = (await readdir(this.dir)).map((f) => /^(\d+)\.log$/.exec(f)).filter((m) => m && Number(m[1]) >= this.lastSynced && Number(m[1]) < number);
      for (const m of earlier) await syncPath(join(this.dir, m![0]), { data: true });
      await syncPath(this.dir);
    } catch (err) {
      // Not known as the current log until those are synced: the next durable write switches, and syncs them, again.
      await fh.close().catch(() => undefined);
      throw err;
    }
    const old = this.log;
    this.log = { db, number, fh };
    await old?.fh.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    const log = this.log;
    this.log = undefined;
    await log?.fh.close().catch(() => undefined);
  }
}
