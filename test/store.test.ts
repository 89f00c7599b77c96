import t from 'tap';
import { join } from 'node:path';
import { appendFile, readdir, readFile, writeFile } from 'node:fs/promises';
import type RocksDB from 'rocksdb-native';
import { Store, key, prefix, prefixEnd } from '../src/store/db.js';
import { tempDir } from './helpers/node-proc.js';
import { fillUntilRefused, smallFs } from './helpers/small-fs.js';

// The compiled module beside this compiled test: tap resolves a relative name from the source file the source map names, test/*.ts.
const compiled = (rel: string): string => new URL(rel, import.meta.url).href;

t.test('store: get, getMany, atomic batch, prefix scan on a real RocksDB', async (t) => {
  const dir = await tempDir(t);
  const db = await Store.open(join(dir, 'db'));
  await db
    .batch()
    .put(key('ws1', 'e', 'a'), Buffer.from('1'))
    .put(key('ws1', 'e', 'b/c'), Buffer.from('2'))
    .put(key('ws2', 'e', 'a'), Buffer.from('3'))
    .put(key('ws1', 'm', 'x'), Buffer.from('4'))
    .commit();
  t.equal(String(await db.get(key('ws1', 'e', 'a'))), '1');
  t.equal(await db.get(key('ws1', 'e', 'zz')), null);
  const many = await db.getMany([key('ws1', 'e', 'b/c'), key('nope'), key('ws2', 'e', 'a')]);
  t.same(many.map((b) => b && String(b)), ['2', null, '3']);
  const scanned: string[] = [];
  for await (const { key: k, value } of db.scan(prefix('ws1', 'e'))) scanned.push(`${k.subarray(prefix('ws1', 'e').length)}=${value}`);
  t.same(scanned, ['a=1', 'b/c=2'], 'prefix scan stays inside its workspace and kind');
  await db.deletePrefix(prefix('ws1'));
  t.equal(await db.get(key('ws1', 'm', 'x')), null);
  t.equal(String(await db.get(key('ws2', 'e', 'a'))), '3', 'other workspaces untouched');
  t.same([...prefixEnd(Buffer.from([1, 0xff]))], [2]);
  await db.close();

  const again = await Store.open(join(dir, 'db'));
  t.equal(String(await again.get(key('ws2', 'e', 'a'))), '3', 'data persists across reopen');
  await t.rejects(Store.open(join(dir, 'db')), /in use by another ghostfs process/, 'a second opener gets a clear error');
  await again.close();
});

t.test('store: a write that meets a full disk fails with ENOSPC, loses nothing, and writes work again once there is room', async (t) => {
  const fs = await smallFs(t, '32m');
  const db = await Store.open(join(fs, 'db'));
  t.teardown(() => db.close());
  await db.put(key('ws', 'e', 'before'), Buffer.from('kept'));
  const free = await fillUntilRefused(fs, db);
  // RocksDB refuses every write after one that failed: each must fail with a clear errno.
  const big = Buffer.alloc(256 << 10, 7);
  for (let i = 0; i < 3; i++) {
    await t.rejects(db.batch().put(key('ws', 'e', `full${i}`), big).put(key('ws', 'e', `also${i}`), Buffer.from('x')).commit(), { code: 'ENOSPC', message: /filesystem is full/ }, `write ${i} on the full disk`);
  }
  t.equal(String(await db.get(key('ws', 'e', 'before'))), 'kept', 'reads go on while writes are refused');
  t.equal(await db.get(key('ws', 'e', 'also0')), null, 'a failed batch applied nothing');
  await free();
  // Asked for together right after the disk has room: the first one reopens the database, and none overtakes another.
  await Promise.all(['v1', 'v2', 'v3'].map((v) => db.put(key('ws', 'e', 'order'), Buffer.from(v))));
  t.equal(String(await db.get(key('ws', 'e', 'order'))), 'v3', 'writes land in the order they were asked for, across the reopen');
  await db.del(key('ws', 'e', 'order'));
  await db.batch().put(key('ws', 'e', 'after'), Buffer.from('new')).commit();
  t.equal(String(await db.get(key('ws', 'e', 'after'))), 'new', 'the next write after space returned is taken');
  t.equal(String(await db.get(key('ws', 'e', 'before'))), 'kept', 'and what was written before is still there');
  const all: string[] = [];
  await db.forEach(prefix('ws', 'e'), (k) => all.push(String(k.subarray(prefix('ws', 'e').length))));
  t.same(all, ['after', 'before']);
  await db.sync();
  const last = db.put(key('ws', 'e', 'last'), Buffer.from('in time'));
  await db.close();
  await last;
  await t.rejects(db.put(key('ws', 'e', 'late'), Buffer.from('x')), /is closed/, 'a write asked for after close is refused');
  const again = await Store.open(join(fs, 'db'));
  t.equal(String(await again.get(key('ws', 'e', 'last'))), 'in time', 'a write asked for before close is done before it');
  t.equal(String(await again.get(key('ws', 'e', 'after'))), 'new', 'it persists across a reopen');
  await again.close();
});

t.test('store: a durable write fdatasyncs the write-ahead log that holds it; durable writes asked for together share a sync', async (t) => {
  const dir = await tempDir(t);
  const db = await Store.open(join(dir, 'db'));
  t.teardown(() => db.close());
  const logHolding = async (value: Buffer): Promise<number> => {
    for (const f of await readdir(join(dir, 'db'))) {
      if (f.endsWith('.log') && (await readFile(join(dir, 'db', f))).includes(value)) return Number(f.slice(0, -4));
    }
    return -1;
  };

  await db.put(key('ws', 'j', 'plain'), Buffer.from('not-durable-value'));
  t.equal(db.wal.syncs, 0, 'a plain write syncs nothing');

  const v1 = Buffer.from('durable-value-one');
  await db.batch().put(key('ws', 'j', 'a'), v1).commit({ durable: true });
  t.equal(db.wal.syncs, 1, 'a durable write syncs once');
  t.equal(db.wal.lastSynced, await logHolding(v1), 'the log synced is the one holding the record');

  const v2 = Buffer.from('durable-value-two');
  await db.batch().put(key('ws', 'j', 'b'), v2).commit({ durable: true });
  t.equal(db.wal.lastSynced, await logHolding(v2), 'the next one syncs the same log, found without asking the database');

  // A flush of the memtables starts a new log: the next durable write must sync that one.
  await db.sync();
  const v3 = Buffer.from('durable-value-three');
  await db.batch().put(key('ws', 'j', 'c'), v3).commit({ durable: true });
  const holding = await logHolding(v3);
  t.ok(holding > 0, 'the record is in a log');
  t.equal(db.wal.lastSynced, holding, 'after the log changed, the new log is synced');

  // Plain writes fill the memtable until the database switches to a new log (8 MiB): the next durable write finds it.
  for (let i = 0; i < 160; i++) await db.put(key('ws', 'm', `fill${i}`), Buffer.alloc(64 << 10, i));
  const v4 = Buffer.from('durable-value-four');
  await db.batch().put(key('ws', 'j', 'd'), v4).commit({ durable: true });
  t.ok(db.wal.lastSynced > holding, `a log newer than ${holding} was made by the plain writes (${db.wal.lastSynced})`);
  t.equal(db.wal.lastSynced, await logHolding(v4), 'and the one holding the record is synced');

  const before = db.wal.syncs;
  await Promise.all(Array.from({ length: 50 }, (_, i) => db.batch().put(key('ws', 'j', `many${i}`), Buffer.from(`v${i}`)).commit({ durable: true })));
  const shared = db.wal.syncs - before;
  t.ok(shared >= 1 && shared <= 3, `50 durable writes asked for together took ${shared} syncs`);
  t.equal(String(await db.get(key('ws', 'j', 'many49'))), 'v49');
});

t.test('store: a durable write in a new log also syncs the log before it (it may hold writes made after its last sync) and the directory', async (t) => {
  const dir = await tempDir(t);
  const synced: string[] = [];
  const { WalSync } = await t.mockImport<typeof import('../src/store/wal-sync.js')>(compiled('../src/store/wal-sync.js'), {
    [compiled('../src/util/sync-path.js')]: { syncPath: async (path: string) => void synced.push(path) },
  });
  const log = (n: number) => `${String(n).padStart(6, '0')}.log`;
  for (const n of [1, 2, 4, 7]) await writeFile(join(dir, log(n)), 'records');
  // The database's side of it: which log is current. Log 2 was synced last
  // (by an earlier process, say); log 1 before it, and nothing went to it since.
  let current = 4;
  const db = { currentWalFile: async () => ({ number: current, path: log(current) }) } as unknown as RocksDB;
  const wal = new WalSync(dir);
  t.teardown(() => wal.close());
  wal.lastSynced = 2;

  await wal.sync(db, wal.sizeBefore(db));
  t.equal(wal.lastSynced, 4, 'the current log is synced');
  t.same(synced, [join(dir, log(2)), dir], 'with the log synced last before it, and the directory that holds its name');

  // A write nobody waited for goes into log 4; then the database moves to log 7.
  await appendFile(join(dir, log(4)), 'a lazy record');
  current = 7;
  synced.length = 0;
  await wal.sync(db, wal.sizeBefore(db));
  t.equal(wal.lastSynced, 7, 'a durable write in the new log syncs that log');
  t.same(synced, [join(dir, log(4)), dir], 'the log before it too (none older), then the directory');
});
