import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Store } from '../src/store/db.js';
import { MetaStore, type MetaEntry } from '../src/cache/meta-store.js';
import { Journal, LAZY_SYNC_MS } from '../src/cache/journal.js';
import { S_IFDIR, S_IFREG } from '../src/content/attr.js';
import { fillUntilRefused, smallFs } from './helpers/small-fs.js';
import { tempDir } from './helpers/node-proc.js';

// The compiled module beside this compiled test: tap resolves a relative name from the source file the source map names, test/*.ts.
const compiled = (rel: string): string => new URL(rel, import.meta.url).href;

const attr = (mode: number, size: number, ino: number) => ({ dev: 0, ino, mode, nlink: 1, uid: 0, gid: 0, rdev: 0, size, blocks: 0, atimeNs: 1n, mtimeNs: 1n, ctimeNs: 1n });
const file = (size: number, ino: number, digestByte: number): MetaEntry => ({ attr: attr(S_IFREG | 0o644, size, ino), digest: Buffer.alloc(32, digestByte) });
const dir = (ino: number): MetaEntry => ({ attr: attr(S_IFDIR | 0o755, 0, ino) });

/** What a mount starting on this database now would know. */
async function reload(store: Store): Promise<MetaStore> {
  const m = new MetaStore(store, 'ws');
  await m.load();
  return m;
}

t.test('metadata the database refuses on a full disk is kept in memory and written out once there is room', async (t) => {
  const fs = await smallFs(t, '32m');
  const store = await Store.open(join(fs, 'db'));
  t.teardown(() => store.close());
  const meta = new MetaStore(store, 'ws');
  const journal = new Journal(store, 'ws');
  await meta.put('', dir(1));
  await meta.put('a', file(10, 2, 1));
  await meta.put('gone', file(3, 3, 9));
  await meta.setPosition(4, 'e1');
  const rec = await journal.add({ path: 'a', dirty: 'd1', expectAbsent: false, mode: 0o644, closedAt: 1 }, 'now');
  const done = await journal.add({ path: 'b', dirty: 'd2', expectAbsent: true, mode: 0o644, closedAt: 2 }, 'now');

  const free = await fillUntilRefused(fs, store);
  // None of these fail the caller: the node took these changes already, memory shows them.
  await meta.put('b', file(20, 4, 2));
  await meta.put('gone', null);
  await meta.settle('a', file(30, 2, 3), { digest: Buffer.alloc(32, 3), chunks: [] }, (b) => journal.removeIn(b, rec.seq));
  await journal.remove(done.seq);
  await meta.setPosition(7, 'e1');
  t.equal(meta.get('b')?.attr.size, 20, 'memory shows the refused put');
  t.equal(meta.get('gone'), undefined, 'and the refused removal');
  t.equal(meta.get('a')?.attr.size, 30, 'and the refused settle');
  t.equal(meta.unwritten, 3, 'status counts the entries waiting to be written');
  // What must be durable before it is acknowledged still fails, with a clear errno.
  await t.rejects(journal.add({ path: 'c', dirty: 'd3', expectAbsent: true, mode: 0o644, closedAt: 3 }, 'now'), { code: 'ENOSPC' }, 'a new write-back record is refused');
  t.equal(await meta.catchUp(), false, 'no catch-up while the disk is full');

  const before = await reload(store);
  t.equal(before.get('b'), undefined, 'the disk still holds the older state');
  t.equal(before.get('a')?.attr.size, 10);
  t.equal(before.generation, 4, 'and the older position: a crash now replays the feed from there');
  t.same((await journal.load()).map((e) => e.seq), [rec.seq, done.seq], 'the settled records are still journaled');

  await free();
  t.equal(await meta.catchUp(), true, 'written out once there is room');
  t.equal(meta.unwritten, 0);
  const after = await reload(store);
  t.equal(after.get('b')?.attr.size, 20);
  t.equal(after.get('gone'), undefined);
  t.equal(after.get('a')?.attr.size, 30);
  t.same(await after.getManifest('a', Buffer.alloc(32, 3)), { digest: Buffer.alloc(32, 3), chunks: [] }, 'with its manifest');
  t.equal(after.generation, 7, 'the position is written with them');
  t.same((await journal.load()).map((e) => e.seq), [done.seq], 'the settled record is removed with them');
  const next = await journal.add({ path: 'c', dirty: 'd3', expectAbsent: true, mode: 0o644, closedAt: 3 }, 'now');
  t.same((await journal.load()).map((e) => e.seq), [next.seq], 'a refused removal goes with the next journal write');
  await meta.close();
});

t.test('a catch-up writes the newest state of a path, never the one that was refused', async (t) => {
  const fs = await smallFs(t, '32m');
  const store = await Store.open(join(fs, 'db'));
  t.teardown(() => store.close());
  const meta = new MetaStore(store, 'ws');
  await meta.put('', dir(1));
  const free = await fillUntilRefused(fs, store);
  await meta.put('x', file(1, 2, 1));
  await meta.put('y', file(4, 3, 4));
  t.equal(meta.unwritten, 2, 'both writes were refused');
  // Before the room comes back: a catch-up (one is due every second) may run as soon as it has.
  meta.putVolatile('y', file(5, 3, 5)); // a version closed here and not yet taken by a node: memory only
  await free();
  await meta.put('x', file(2, 2, 2)); // taken: the disk has room again
  await meta.close(); // the last catch-up
  const after = await reload(store);
  t.equal(after.get('x')?.attr.size, 2);
  t.equal(after.get('y'), undefined, 'a volatile entry stays off the disk (the journal brings it back after a restart)');
});

t.test("what only this mount shows: a node's listing leaves it; the node's inode numbers go to disk; onNode tells the node's paths", async (t) => {
  const base = await tempDir(t);
  const store = await Store.open(join(base, 'db'));
  t.teardown(() => store.close());
  const meta = new MetaStore(store, 'ws');
  await meta.putListing('', dir(1), [{ name: 'old', entry: file(1, 2, 1) }]);
  // A directory made here (queued for the node), a file closed in it, and a newer version of ours over the node's file.
  meta.putVolatile('q', { ...dir(0xf000_0001), listed: true });
  meta.putVolatile('q/f', file(5, 0xf000_0002, 2));
  meta.putVolatile('old', file(7, 0xf000_0003, 3));
  t.same([meta.onNode('q'), meta.onNode('q/f'), meta.onNode('old')], [false, false, true], 'onNode: the node had only "old"');
  // The node lists the root without them (their commits have not landed).
  await meta.putListing('', dir(1), [{ name: 'old', entry: file(1, 2, 1) }]);
  t.ok(meta.get('q') && meta.get('q/f'), "the node's listing leaves the queued directory and what is in it");
  // The directory lands: it keeps the number it was shown with; the disk gets the node's.
  meta.keepIno('q', meta.get('q'), dir(77));
  await meta.putMany([['q', dir(77)]]);
  t.equal(meta.get('q')!.attr.ino, 0xf000_0001, 'shown with the number it had');
  t.equal(meta.onNode('q'), true, 'and the node has it now');
  t.equal((await reload(store)).get('q')!.attr.ino, 77, "the disk holds the node's number");
  await meta.put('q', null);
  await meta.putMany([['q', dir(78)]]);
  t.equal(meta.get('q')!.attr.ino, 78, 'a directory made at that path after a removal shows its own number');
});

t.test('a listing reports what it changed in what the mount shows (the kernel must drop those), and a first listing nothing new', async (t) => {
  const base = await tempDir(t);
  const store = await Store.open(join(base, 'db'));
  t.teardown(() => store.close());
  const meta = new MetaStore(store, 'ws');
  await meta.put('', dir(1));
  const first = await meta.putListing('d', dir(2), [
    { name: 'same', entry: file(1, 3, 1) },
    { name: 'edited', entry: file(1, 4, 1) },
    { name: 'gone', entry: file(1, 5, 1) },
  ]);
  t.same(first, [], 'a first listing: nothing shown before it');
  // Unchanged while listed: the same listing again changes nothing.
  t.same(await meta.putListing('d', dir(2), [{ name: 'same', entry: file(1, 3, 1) }, { name: 'edited', entry: file(1, 4, 1) }, { name: 'gone', entry: file(1, 5, 1) }]), [], 'the same listing: no change');

  // A RESET: listed again, with one file edited, one removed, one new, and one replaced by another file.
  await meta.invalidateListings();
  const changes = await meta.putListing('d', dir(2), [
    { name: 'same', entry: file(1, 3, 1) },
    { name: 'edited', entry: file(9, 4, 2) },
    { name: 'new', entry: file(1, 6, 1) },
  ]);
  const byPath = Object.fromEntries(changes.map((c) => [c.path, c.what]));
  t.same(byPath, { 'd/edited': 'attrs', 'd/gone': 'entry', 'd/new': 'entry' }, 'the edit, the removal and the new name; not the unchanged file');
  await meta.invalidateListings();
  const replaced = await meta.putListing('d', dir(2), [{ name: 'same', entry: file(1, 7, 1) }, { name: 'edited', entry: file(9, 4, 2) }, { name: 'new', entry: file(1, 6, 1) }]);
  t.same(replaced, [{ path: 'd/same', what: 'entry' }], 'a name that leads to another file now is a new entry');
});

t.test('close() lets writes nobody waited for land, then writes the feed position after them', async (t) => {
  const dirPath = await tempDir(t);
  const store = await Store.open(join(dirPath, 'db'));
  const meta = new MetaStore(store, 'ws');
  await meta.put('', dir(1));
  // As a change of names does: the write goes, the caller does not wait, and the feed moves on.
  const writes = Array.from({ length: 20 }, (_, i) => meta.putMany([[`f${i}`, file(i, 10 + i, i)]]));
  await meta.setPosition(9, 'e1');
  // As a mount stops: the metadata store, then the database (which refuses what is asked after).
  await meta.close();
  await store.close();
  await Promise.all(writes);
  const again = await Store.open(join(dirPath, 'db'));
  t.teardown(() => again.close());
  const after = await reload(again);
  t.equal(after.get('f19')?.attr.size, 19, 'the last write landed before the database closed');
  t.equal(after.generation, 9, 'and the position asked for while they were under way was written after them');
  t.equal(after.epoch, 'e1');
});

t.test("journal: a 'soon' record the database refused is not written later by a sync", async (t) => {
  const fs = await smallFs(t, '32m');
  const store = await Store.open(join(fs, 'db'));
  t.teardown(() => store.close());
  const journal = new Journal(store, 'ws');
  await writeFile(join(fs, 'copy'), 'a closed file');
  const free = await fillUntilRefused(fs, store);
  await t.rejects(journal.add({ path: 'refused', dirty: 'copy', expectAbsent: true, mode: 0o644, closedAt: 1 }, 'soon', join(fs, 'copy')), 'the close is told');
  await free();
  await journal.sync();
  t.same((await new Journal(store, 'ws').load()).map((e) => e.path), [], 'the refused record never reaches the journal');
});

t.test("journal: a record added 'now' is synced before add() returns; 'soon' by the lazy timer; sync() and close() sync at once", async (t) => {
  const store = await Store.open(join(await tempDir(t), 'db'));
  t.teardown(() => store.close());
  const journal = new Journal(store, 'ws');
  const rec = { dirty: '', expectAbsent: true, mode: 0o644, closedAt: 1 };

  await journal.add({ ...rec, path: 'confirmed-by-nobody' }, 'now');
  t.equal(store.wal.syncs, 1, "'now': synced when add() resolves");

  await journal.add({ ...rec, path: 'queued' }, 'soon');
  t.equal(store.wal.syncs, 1, "'soon': not waited for");
  const start = Date.now();
  while (store.wal.syncs < 2 && Date.now() - start < 10 * LAZY_SYNC_MS) await new Promise((r) => setTimeout(r, 20));
  t.equal(store.wal.syncs, 2, `'soon': synced by the lazy timer (after ${Date.now() - start} ms)`);

  await journal.add({ ...rec, path: 'queued-2' }, 'soon');
  await journal.sync();
  t.equal(store.wal.syncs, 3, 'sync() does not wait for the timer');

  await journal.add({ ...rec, path: 'queued-3' }, 'soon');
  await journal.close();
  t.equal(store.wal.syncs, 4, 'close() syncs what the timer had still to sync');
  await new Promise((r) => setTimeout(r, LAZY_SYNC_MS + 200));
  t.equal(store.wal.syncs, 4, 'and the timer is gone');
  t.same((await new Journal(store, 'ws').load()).map((e) => e.path), ['confirmed-by-nobody', 'queued', 'queued-2', 'queued-3']);
});

t.test("journal: a record's dirty copy, and its name in its directory, are on disk before the record is", async (t) => {
  const store = await Store.open(join(await tempDir(t), 'db'));
  t.teardown(() => store.close());
  // Which paths were synced, and how many log syncs had happened by then.
  const synced: { path: string; data: boolean; logSyncs: number }[] = [];
  const { Journal: Recorded } = await t.mockImport<typeof import('../src/cache/journal.js')>(compiled('../src/cache/journal.js'), {
    [compiled('../src/util/sync-path.js')]: {
      syncPath: async (path: string, opts: { data?: boolean } = {}) => void synced.push({ path, data: !!opts.data, logSyncs: store.wal.syncs }),
    },
  });
  const journal = new Recorded(store, 'ws');
  t.teardown(() => journal.close());
  const rec = { expectAbsent: true, mode: 0o644, closedAt: 1 };

  await journal.add({ ...rec, path: 'async-closed', dirty: 'a' }, 'soon', '/cache/dirty/a');
  t.same(synced, [], "a 'soon' record's copy is not synced at once");
  await journal.sync();
  t.same(
    synced,
    [
      { path: '/cache/dirty/a', data: true, logSyncs: 0 },
      { path: '/cache/dirty', data: false, logSyncs: 0 },
    ],
    'then its data, then its directory, and only then the log that holds the record',
  );
  t.equal(store.wal.syncs, 1);

  synced.length = 0;
  await journal.add({ ...rec, path: 'nobody-confirmed', dirty: 'b' }, 'now', '/cache/dirty/b');
  t.same(synced, [{ path: '/cache/dirty', data: false, logSyncs: 1 }], "a 'now' record's copy (synced by its writer): its directory before the log");
  t.equal(store.wal.syncs, 2);

  synced.length = 0;
  await journal.add({ ...rec, path: 'in-the-record', dirty: '', data: Buffer.from('x') }, 'now');
  t.same(synced, [], 'a record without a copy syncs only the log');
  t.equal(store.wal.syncs, 3);

  // Its mark (see JournalEntry.unsyncedBoot): set while its copy is not synced, gone once it is.
  const onDisk = async () => new Map((await new Recorded(store, 'ws').load()).map((e) => [e.path, e]));
  t.equal((await onDisk()).get('async-closed')?.unsyncedBoot, undefined, "a 'soon' record synced with its copy is rewritten without its mark");
  const queued = await journal.add({ ...rec, path: 'queued', dirty: 'c' }, 'soon', '/cache/dirty/c');
  t.equal((await onDisk()).get('queued')?.unsyncedBoot, journal.bootId, 'one not synced yet has it');
  // Committed (its removal in the commit's batch) before the sync: the sync does not write it again.
  const b = store.batch();
  journal.removeIn(b, queued.seq);
  await b.commit();
  await journal.sync();
  t.notOk((await onDisk()).has('queued'), 'a record removed before the sync stays removed');
});

t.test('a rename through the mount moves what is known under the old name: entries, listings, manifests; an exchange swaps two trees', async (t) => {
  const base = await tempDir(t);
  const store = await Store.open(join(base, 'db'));
  t.teardown(() => store.close());
  const meta = new MetaStore(store, 'ws');
  const m = { digest: Buffer.alloc(32, 1), chunks: [{ hash: Buffer.alloc(32, 7), offset: 0, length: 10 }] };
  await meta.putMany([
    ['', { ...dir(1), listed: true }],
    ['a', { ...dir(2), listed: true }],
    ['a/x', file(10, 3, 1)],
    ['a/s', { ...dir(4), listed: true }],
    ['a/s/y', file(5, 5, 2)],
    ['b', file(1, 6, 3)],
    ['c', { ...dir(7), listed: true }],
    ['c/z', file(2, 8, 4)],
  ]);
  await meta.putManifest('a/x', m);

  // mv a b: b (a file) is replaced; the answer names the new name and the directory.
  await meta.renamed('a', 'b', false, [['b', dir(2)], ['', dir(1)]]);
  t.equal(meta.get('a'), undefined, 'nothing under the old name');
  t.equal(meta.get('a/s/y'), undefined);
  t.equal(meta.get('b/s/y')?.attr.ino, 5, 'the tree under the new name');
  t.equal(meta.get('b')?.listed, true, 'still listed: its names are known');
  t.equal(meta.get('b/s')?.listed, true);
  t.same(meta.childNames('b').sort(), ['s', 'x']);
  t.same(meta.childNames('').sort(), ['b', 'c'], "the directory's names");
  t.same((await meta.getManifest('b/x', m.digest))?.chunks, m.chunks, 'the manifest moved with its file');

  // An exchange (renameat2 RENAME_EXCHANGE) of two trees.
  await meta.renamed('b', 'c', true, [['b', dir(7)], ['c', dir(2)], ['', dir(1)]]);
  t.equal(meta.get('c/s/y')?.attr.ino, 5, 'one tree under the other name');
  t.equal(meta.get('b/z')?.attr.ino, 8, 'and the other under the first');
  t.equal(meta.get('b/s'), undefined);
  t.equal(meta.get('c/z'), undefined);

  const after = await reload(store);
  t.equal(after.get('c/s/y')?.attr.ino, 5, 'on disk as in memory');
  t.equal(after.get('b/z')?.attr.ino, 8);
  t.equal(after.get('a/x'), undefined);
  t.equal(after.get('b/x'), undefined);
  t.same((await after.getManifest('c/x', m.digest))?.chunks, m.chunks, 'the manifest too');
});

t.test("answers handled out of the node's order: an older one does not take back what a later one showed", async (t) => {
  const base = await tempDir(t);
  const store = await Store.open(join(base, 'db'));
  t.teardown(() => store.close());
  const meta = new MetaStore(store, 'ws');
  const d = (nlink: number): MetaEntry => ({ attr: { ...dir(5).attr, nlink } });
  // A mkdir's answer (generation 20) comes back before that of a commit in the same directory (generation 12).
  await meta.putMany(meta.fromAnswer([['d', d(3)] as const, ['d/sub', dir(6)] as const], 'node-a', 20));
  const late = meta.fromAnswer([['d', d(2)] as const, ['d/f', file(1, 7, 1)] as const], 'node-a', 12);
  t.same(late.map(([p]) => p), ['d/f'], "the commit's older state of the directory is left out; its file is not");
  await meta.putMany(late);
  t.equal(meta.get('d')!.attr.nlink, 3, "the directory still shows the mkdir's link count");
  t.ok(meta.olderThanOwnCommit('d', 'node-a', 15), 'the mark stayed at the later answer');
  t.same(meta.fromAnswer([['d', d(4)] as const], 'node-a', 21).length, 1, 'a later answer is taken');
  t.same(meta.fromAnswer([['d', d(2)] as const], 'node-b', 1).length, 1, "another node's answer is not compared with this one's generations");
  t.same(meta.fromAnswer([['d', d(2)] as const], 'node-a', 0).length, 1, 'nor is an answer of unknown generation');
});

t.test('a directory shows the time a name was made in it here, and keeps it when the node has it; another directory by that name shows its own', async (t) => {
  const base = await tempDir(t);
  const store = await Store.open(join(base, 'db'));
  t.teardown(() => store.close());
  const meta = new MetaStore(store, 'ws');
  await meta.putMany([['d', dir(5)]]);
  // A file created in it through the mount, not yet on the node.
  meta.touchDir('d', 1_000n);
  t.same([meta.get('d')!.attr.mtimeNs, meta.get('d')!.attr.ctimeNs], [1_000n, 1_000n], 'the directory shows the time of the create');
  t.equal((await reload(store)).get('d')!.attr.mtimeNs, 1n, "the disk holds the node's times");
  // The file lands later: the node's directory has other times, which only that landing moved.
  const landed: MetaEntry = { attr: { ...dir(5).attr, mtimeNs: 2_000n, ctimeNs: 2_000n } };
  meta.keepDirTimes('d', meta.get('d'), landed);
  await meta.putMany([['d', landed]]);
  t.equal(meta.get('d')!.attr.mtimeNs, 1_000n, 'it keeps the time it was shown with');
  t.equal((await reload(store)).get('d')!.attr.mtimeNs, 2_000n, "the disk holds the node's");
  // The node replaces the directory (another inode): what was kept of the old one does not apply.
  await meta.putMany([['d', { attr: { ...dir(9).attr, mtimeNs: 2_000n, ctimeNs: 2_000n } }]]);
  t.equal(meta.get('d')!.attr.ino, 9, "another directory at that path shows the node's inode number");
  t.equal(meta.get('d')!.attr.mtimeNs, 2_000n, 'and its times');
  // What was kept of the old one is not the new one's: a create in it, then its landing.
  meta.touchDir('d', 3_000n);
  const landedAgain: MetaEntry = { attr: { ...dir(9).attr, mtimeNs: 4_000n, ctimeNs: 4_000n } };
  meta.keepDirTimes('d', meta.get('d'), landedAgain);
  await meta.putMany([['d', landedAgain]]);
  t.same([meta.get('d')!.attr.ino, meta.get('d')!.attr.mtimeNs], [9, 3_000n], 'the new directory keeps its number and the time of the create in it as that lands');
  t.equal((await reload(store)).get('d')!.attr.mtimeNs, 4_000n, "the disk holds the node's");
  meta.touchDir('d', 2_500n);
  t.equal(meta.get('d')!.attr.mtimeNs, 3_000n, 'a time before the one shown does not take it back');
});
