// What a mount that died finds in its journal at the next start: of a file's
// records only the newest is committed (an fsync's record of a file still
// open, and the close's record of the same file, can both be there), and a
// record whose dirty copy is gone is dropped. Driven in process against a
// real node behind a fault proxy (helpers/write-back-rig.ts): the write-back
// is stopped and a new one started on the same journal and dirty copies.
import t from 'tap';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Journal } from '../src/cache/journal.js';
import { chunkBuffer } from '../src/content/chunk-file.js';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { writeBackRig } from './helpers/write-back-rig.js';

t.test("a restart commits only a file's newest record, and drops a record whose copy is gone", async (t) => {
  const rig = await writeBackRig(t, { 'a.txt': Buffer.from('base\n') }, 3_000);
  const dirty = join(rig.cache, 'dirty');
  const base = chunkBuffer(Buffer.from('base\n'), DEFAULT_CHUNKING).digest;
  const journal = new Journal(rig.store, 'default');
  await journal.load();
  // Two versions of a.txt made from the node's content (an fsync's record, then the close's), and a record of a lost copy.
  await writeFile(join(dirty, 'copy-1'), 'fsynced\n');
  await writeFile(join(dirty, 'copy-2'), 'closed\n');
  await journal.add({ path: 'a.txt', dirty: 'copy-1', baseDigest: base, expectAbsent: false, mode: 0o644, closedAt: 1 }, 'now');
  await journal.add({ path: 'a.txt', dirty: 'copy-2', baseDigest: base, expectAbsent: false, mode: 0o644, closedAt: 2 }, 'now');
  await journal.add({ path: 'lost.txt', dirty: 'copy-gone', expectAbsent: true, mode: 0o644, closedAt: 3 }, 'now');

  const wb = await rig.restart();
  t.equal(wb.pendingCount, 1, 'one record to commit');
  t.equal(await wb.drain(), 0, 'committed');
  t.equal(await readFile(join(rig.root, 'a.txt'), 'utf8'), 'closed\n', 'the newest version is on the node');
  t.same((await readdir(rig.root)).sort(), ['a.txt'], 'no conflict copy of the older version, nothing made for the lost copy');
  t.same(await new Journal(rig.store, 'default').load(), [], 'the journal is empty');
  t.same((await readdir(dirty)).filter((n) => n.startsWith('copy-')), [], "the older version's copy is gone too");
});

t.test('a restart after the machine went down sets aside a record journaled before its copy was synced, and commits one whose copy was', async (t) => {
  const rig = await writeBackRig(t, {}, 3_000);
  const dirty = join(rig.cache, 'dirty');
  // Asynchronous closes' records written in a boot before this one: one
  // whose copy had been synced, and one whose copy had not (its journal
  // closed first, so that no lazy sync follows: as if the machine went down).
  const before = new Journal(rig.store, 'default', 'an-earlier-boot');
  await before.load();
  await writeFile(join(dirty, 'copy-synced'), 'on disk\n');
  await writeFile(join(dirty, 'copy-unsynced'), 'maybe zeros\n');
  await writeFile(join(dirty, 'copy-this-boot'), 'in the page cache\n');
  await before.add({ path: 'synced.txt', dirty: 'copy-synced', expectAbsent: true, mode: 0o644, closedAt: 1 }, 'soon', join(dirty, 'copy-synced'));
  await before.close();
  // An fsync's record of the same copy (synced then, written to after), then the close's.
  await before.add({ path: 'unsynced.txt', dirty: 'copy-unsynced', expectAbsent: true, mode: 0o644, closedAt: 2 }, 'now', join(dirty, 'copy-unsynced'));
  await before.add({ path: 'unsynced.txt', dirty: 'copy-unsynced', expectAbsent: true, mode: 0o644, closedAt: 2 }, 'soon', join(dirty, 'copy-unsynced'));
  // And one of this boot, not synced either: the mount was killed, the machine kept its page cache.
  const killed = new Journal(rig.store, 'default');
  await killed.load();
  await killed.close();
  await killed.add({ path: 'this-boot.txt', dirty: 'copy-this-boot', expectAbsent: true, mode: 0o644, closedAt: 3 }, 'soon', join(dirty, 'copy-this-boot'));
  const marks = (await new Journal(rig.store, 'default').load()).map((e) => [e.path, e.unsyncedBoot ?? null]);
  t.same(
    marks,
    [
      ['synced.txt', null],
      ['unsynced.txt', null],
      ['unsynced.txt', 'an-earlier-boot'],
      ['this-boot.txt', killed.bootId],
    ],
    'a record whose copy was synced lost its mark; the others keep theirs',
  );

  const wb = await rig.restart(); // its journal is this boot's
  t.equal(wb.pendingCount, 2, 'two records to commit');
  t.same(
    (await new Journal(rig.store, 'default').load()).map((e) => [e.path, e.unsyncedBoot ?? null]),
    [
      ['synced.txt', null],
      ['this-boot.txt', null],
    ],
    "this boot's copy was synced at the start, and its record lost its mark; both records of the copy kept aside are gone",
  );
  t.equal(await wb.drain(), 0, 'committed');
  t.equal(await readFile(join(rig.root, 'synced.txt'), 'utf8'), 'on disk\n', 'the synced copy is on the node');
  t.equal(await readFile(join(rig.root, 'this-boot.txt'), 'utf8'), 'in the page cache\n', "so is this boot's");
  t.same((await readdir(rig.root)).sort(), ['synced.txt', 'this-boot.txt'], 'the copy not synced before the restart is not');
  t.same(await readdir(dirty), ['copy-unsynced.failed'], 'it is kept aside in the cache dir');
  t.same(await new Journal(rig.store, 'default').load(), [], 'the journal is empty');
});

t.test("a restart gives a file's newest record the owner an older one of it had", { skip: process.getuid?.() !== 0 && "changing a file's owner needs root" }, async (t) => {
  const rig = await writeBackRig(t, {}, 3_000);
  const dirty = join(rig.cache, 'dirty');
  const journal = new Journal(rig.store, 'default');
  await journal.load();
  // Closed with an owner while no node answered, then opened again, written and fsynced before the mount died.
  await writeFile(join(dirty, 'copy-1'), 'closed with an owner\n');
  await writeFile(join(dirty, 'copy-2'), 'written again, fsynced\n');
  await journal.add({ path: 'b.txt', dirty: 'copy-1', expectAbsent: true, mode: 0o644, owner: { uid: 4321, gid: -1 }, closedAt: 1 }, 'now');
  await journal.add({ path: 'b.txt', dirty: 'copy-2', expectAbsent: true, mode: 0o644, owner: { uid: -1, gid: 4322 }, closedAt: 2 }, 'now');

  const wb = await rig.restart();
  t.same((await new Journal(rig.store, 'default').load()).map((e) => [e.dirty, e.owner]), [['copy-2', { uid: 4321, gid: 4322 }]], 'one record left, with both owner changes');
  t.equal(await wb.drain(), 0, 'committed');
  const st = await stat(join(rig.root, 'b.txt'));
  t.same([await readFile(join(rig.root, 'b.txt'), 'utf8'), st.uid, st.gid], ['written again, fsynced\n', 4321, 4322], 'the node has the newest content and the owner');
});
