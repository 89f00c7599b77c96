// Asynchronous write-back: a new file renamed while its commit is still
// queued (rsync writes each file under a temporary name, then renames it)
// takes its new name in the queue. The node gets it under that name only,
// with no call for the rename, and a restart commits it there. Driven in
// process against a real node (helpers/write-back-rig.ts), with commits
// held back a minute after close (they start when the test drains the
// queue) so that each rename comes before its file's commit.
import t from 'tap';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Journal } from '../src/cache/journal.js';
import { writeBackRig } from './helpers/write-back-rig.js';
import { waitFor } from './helpers/mount-proc.js';

type Rig = Awaited<ReturnType<typeof writeBackRig>>;
const LINGER = 60_000;

/** A new file written and closed: its commit waits in the queue (a moment's linger). */
async function writeClosed(vfs: Rig['vfs'], name: string, body: string): Promise<void> {
  const { handle } = await vfs.create('', name, 0o644);
  await vfs.write(handle.fh, 0, Buffer.from(body));
  await vfs.flush(handle.fh);
  await vfs.release(handle.fh);
}

/** Counts the renames the mount asks of the node (they still go there). */
function countRenames(mesh: Rig['mesh']): { calls: number } {
  const counted = { calls: 0 };
  const mutate = mesh.mutate.bind(mesh);
  mesh.mutate = (...args: Parameters<typeof mutate>) => {
    if (args[0].rename) counted.calls++;
    return mutate(...args);
  };
  return counted;
}

t.test('a new file renamed while its commit is queued: the node gets it under its new name only, and nothing is asked of the node for the rename', async (t) => {
  const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack: true }, { lingerMs: LINGER });
  const { root, vfs, wb, mesh } = rig;
  await vfs.list('');
  const mutations = countRenames(mesh);
  await writeClosed(vfs, '.data.txt.XyZ123', 'the content\n');
  await vfs.rename('', '.data.txt.XyZ123', '', 'data.txt');
  t.equal(mutations.calls, 0, 'the rename asked nothing of the node');
  t.ok(vfs.meta.get('data.txt'), 'the mount shows the new name');
  t.equal(vfs.meta.get('.data.txt.XyZ123'), undefined, 'and not the old one');
  t.equal(wb.pendingFor('data.txt')?.path, 'data.txt', 'the queued record has the new name');
  const h = await vfs.open('data.txt');
  t.equal((await vfs.readSlices(h.fh, 0, 100)).map((b) => b.toString()).join(''), 'the content\n', 'it reads under the new name before the node has it');
  await vfs.release(h.fh);
  await waitFor('nothing queued', async () => (await wb.drain()) === 0);
  t.same(await readdir(root), ['data.txt'], 'the node has the new name only');
  t.equal(await readFile(join(root, 'data.txt'), 'utf8'), 'the content\n', 'with the content');

  // Over a file the node has, the rename goes to the node as before.
  await writeClosed(vfs, '.data.txt.Abc456', 'the second version\n');
  await vfs.rename('', '.data.txt.Abc456', '', 'data.txt');
  t.equal(mutations.calls, 1, 'a rename over an existing file asks the node');
  await waitFor('nothing queued', async () => (await wb.drain()) === 0);
  t.same(await readdir(root), ['data.txt'], 'the node has one name');
  t.equal(await readFile(join(root, 'data.txt'), 'utf8'), 'the second version\n', 'with the newer content');
});

t.test('a restart after a rename in the queue commits the file under its new name', async (t) => {
  const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack: true }, { lingerMs: LINGER });
  const { root, vfs, wb } = rig;
  await vfs.list('');
  await writeClosed(vfs, '.kept.txt.Q1w2E3', 'kept across a restart\n');
  await vfs.rename('', '.kept.txt.Q1w2E3', '', 'kept.txt');
  t.equal(wb.pendingFor('kept.txt')?.path, 'kept.txt', 'the queued record has the new name');
  t.same((await new Journal(rig.store, 'default').load()).map((e) => e.path), ['kept.txt'], 'and so does the journal');
  // The mount stops (its journal stays), and starts again.
  const again = await rig.restart();
  t.equal(again.pendingCount, 1, 'the restart finds the record');
  await waitFor('nothing queued', async () => (await again.drain()) === 0);
  t.same(await readdir(root), ['kept.txt'], 'the node has the new name only');
  t.equal(await readFile(join(root, 'kept.txt'), 'utf8'), 'kept across a restart\n', 'with the content');
});

t.test("a renamed record's commit waits until the journal has the new name on disk", async (t) => {
  let holdSync: Promise<void> | undefined;
  const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack: true }, {
    lingerMs: LINGER,
    journal: (j) => {
      const sync = j.sync.bind(j);
      j.sync = async () => {
        await holdSync;
        return sync();
      };
      return j;
    },
  });
  const { root, vfs, wb } = rig;
  await vfs.list('');
  await writeClosed(vfs, '.late.txt.R4t5Y6', 'synced first\n');
  let letSync!: () => void;
  holdSync = new Promise<void>((r) => (letSync = r));
  await vfs.rename('', '.late.txt.R4t5Y6', '', 'late.txt');
  const draining = wb.drain();
  await new Promise((r) => setTimeout(r, 500));
  t.same(await readdir(root), [], 'the node has nothing while the journal sync is held');
  letSync();
  t.equal(await draining, 0, 'committed once it is on disk');
  t.same(await readdir(root), ['late.txt'], 'under the new name');
});

t.test('a rename in the queue is not made where the node must come first: times queued for the new directory, a directory queued after the file', async (t) => {
  const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack: true }, { lingerMs: LINGER });
  const { root, vfs, wb, mesh } = rig;
  await vfs.list('');
  await vfs.mkdir('', 'dir', 0o755);
  await waitFor('nothing queued', async () => (await wb.drain()) === 0);
  const mutations = countRenames(mesh);
  // Times queued for the directory the file goes to (as tar sets them): they must land after it, which the queue cannot promise.
  await writeClosed(vfs, 'dir/.a.XyZ', 'a\n');
  await writeClosed(vfs, 'dir/other', 'o\n');
  await vfs.setattr('dir', { mtimeNs: 1_000_000_000n * 1_000_000_000n });
  await writeClosed(vfs, '.b.XyZ', 'b\n');
  await vfs.rename('', '.b.XyZ', 'dir', 'b');
  t.equal(mutations.calls, 1, 'into a directory with times queued: asked of the node');
  // A directory made after the file: the file would go there before the node has it.
  await writeClosed(vfs, '.c.XyZ', 'c\n');
  await vfs.mkdir('', 'later', 0o755);
  await vfs.rename('', '.c.XyZ', 'later', 'c');
  t.equal(mutations.calls, 2, 'into a directory queued after the file: asked of the node');
  await waitFor('nothing queued', async () => (await wb.drain()) === 0);
  t.same((await readdir(join(root, 'dir'))).sort(), ['.a.XyZ', 'b', 'other'], 'the node has each file where it was renamed to');
  t.same(await readdir(join(root, 'later')), ['c'], 'and the directory made later');
  t.same((await readdir(root)).sort(), ['dir', 'later'], 'and no old name');
});
