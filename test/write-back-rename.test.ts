// Asynchronous write-back: a new file renamed while its commit is still
// queued (rsync writes each file under a temporary name, then renames it)
// takes its new name in the queue. The node gets it under that name only,
// with no call for the rename, and a restart commits it there. Driven in
// process against a real node (helpers/write-back-rig.ts).
import t from 'tap';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Journal } from '../src/cache/journal.js';
import { writeBackRig } from './helpers/write-back-rig.js';
import { waitFor } from './helpers/mount-proc.js';

type Rig = Awaited<ReturnType<typeof writeBackRig>>;

/** A new file written and closed: its commit waits in the queue (a moment's linger). */
async function writeClosed(vfs: Rig['vfs'], name: string, body: string): Promise<void> {
  const { handle } = await vfs.create('', name, 0o644);
  await vfs.write(handle.fh, 0, Buffer.from(body));
  await vfs.flush(handle.fh);
  await vfs.release(handle.fh);
}

/** Counts the namespace changes the mount asks of the node (they still go there). */
function countMutations(mesh: Rig['mesh']): { calls: number } {
  const counted = { calls: 0 };
  const mutate = mesh.mutate.bind(mesh);
  mesh.mutate = (...args: Parameters<typeof mutate>) => {
    counted.calls++;
    return mutate(...args);
  };
  return counted;
}

t.test('a new file renamed while its commit is queued: the node gets it under its new name only, and nothing is asked of the node for the rename', async (t) => {
  const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack: true });
  const { root, vfs, wb, mesh } = rig;
  await vfs.list('');
  const mutations = countMutations(mesh);
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
  const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack: true });
  const { root, vfs, wb } = rig;
  await vfs.list('');
  // No answer from the node while the mount runs: the record stays queued.
  rig.proxy.set('blackhole');
  await writeClosed(vfs, '.kept.txt.Q1w2E3', 'kept across a restart\n');
  await vfs.rename('', '.kept.txt.Q1w2E3', '', 'kept.txt');
  t.equal(wb.pendingFor('kept.txt')?.path, 'kept.txt', 'the queued record has the new name');
  t.same((await new Journal(rig.store, 'default').load()).map((e) => e.path), ['kept.txt'], 'and so does the journal');
  // The mount stops (its journal stays), and starts again with the node back.
  rig.proxy.set('pass');
  const again = await rig.restart();
  t.equal(again.pendingCount, 1, 'the restart finds the record');
  await waitFor('nothing queued', async () => (await again.drain()) === 0);
  t.same(await readdir(root), ['kept.txt'], 'the node has the new name only');
  t.equal(await readFile(join(root, 'kept.txt'), 'utf8'), 'kept across a restart\n', 'with the content');
});
