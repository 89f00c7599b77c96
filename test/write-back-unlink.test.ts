// An unlink goes to the node before the file's queued versions are dropped:
// when a version's commit went unanswered (it may be on the node) and no
// node takes the unlink, rm fails and what was closed stays queued, to be
// committed once a node answers. Driven in process against a real node
// behind a fault proxy (helpers/write-back-rig.ts).
import t from 'tap';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoOf } from '../src/wire/errors.js';
import { writeBackRig } from './helpers/write-back-rig.js';
import { waitFor } from './helpers/mount-proc.js';

t.test('an unlink no node takes keeps a file whose commit went unanswered', async (t) => {
  const { root, proxy, vfs, wb } = await writeBackRig(t, {}, 1_500);
  await vfs.list('');
  // The commit reaches the node; its answer never comes back.
  proxy.set('mute');
  const { handle } = await vfs.create('', 'unsure', 0o644);
  await vfs.write(handle.fh, 0, Buffer.from('unsure\n'));
  await vfs.flush(handle.fh);
  await vfs.release(handle.fh);
  t.ok(wb.pendingFor('unsure'), 'close returned with the file queued (its answer was lost)');
  // Nothing reaches the node now: whether it has the file cannot be known.
  proxy.set('blackhole');
  const err = await vfs.unlink('', 'unsure').then(() => undefined, (e: unknown) => e);
  t.equal(errnoOf(err), 'EROFS', 'the unlink fails');
  t.ok(wb.pendingFor('unsure'), 'and what was closed is still queued');
  t.equal((await vfs.entry('unsure')).attr.size, 7, 'and shown');
  proxy.set('pass');
  // (The connections made while nothing passed are given up on and made again.)
  await waitFor('the queued file committed once the node answers', async () => (await wb.drain()) === 0, 60_000);
  t.equal(await readFile(join(root, 'unsure'), 'utf8'), 'unsure\n');
  await vfs.unlink('', 'unsure');
  await t.rejects(stat(join(root, 'unsure')), 'an unlink the node takes removes it there');
});
