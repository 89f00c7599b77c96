// What a mount that died finds in its journal at the next start: of a file's
// records only the newest is committed (an fsync's record of a file still
// open, and the close's record of the same file, can both be there), and a
// record whose dirty copy is gone is dropped. Driven in process against a
// real node behind a fault proxy (helpers/write-back-rig.ts): the write-back
// is stopped and a new one started on the same journal and dirty copies.
import t from 'tap';
import { readdir, readFile, writeFile } from 'node:fs/promises';
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
