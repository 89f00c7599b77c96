// A big file's chunks are uploaded, then committed in a second call. When
// the node that takes the commit lacks some of them (they went to a replica
// that died between the two calls), the write-back uploads them again
// instead of taking the node's ENOENT for a refusal. Driven in process
// against a real node (helpers/write-back-rig.ts); the loss is made by
// removing the node's staged chunks between the upload and the commit.
import t from 'tap';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DirtyFile } from '../src/mount/dirty-file.js';
import type { MeshClient } from '../src/mesh/mesh-client.js';
import { writeBackRig } from './helpers/write-back-rig.js';

t.test('chunks lost on the node between upload and commit are uploaded again', async (t) => {
  const { base, root, mesh, wb } = await writeBackRig(t, {}, 10_000);
  const staging = join(base, 'state', 'staging', 'default');
  // 3 MiB: more than travels inside a commit, so its chunks are uploaded first.
  const data = randomBytes(3 << 20);
  const name = wb.newDirtyName();
  await DirtyFile.writeCopy(wb.dirtyPath(name), data, true);

  const calls: string[] = [];
  let lost = 0;
  const call = mesh.call.bind(mesh);
  (mesh as { call: MeshClient['call'] }).call = (async (what: string, fn: Parameters<MeshClient['call']>[1]) => {
    calls.push(what.split(' ')[0]!);
    if (what.startsWith('commit ') && lost === 0) {
      for (const f of await readdir(staging)) if (/^[0-9a-f]{64}$/.test(f)) lost += (await rm(join(staging, f)), 1);
    }
    return call(what, fn);
  }) as MeshClient['call'];

  const r = await wb.closeFile({ path: 'big.bin', dirty: name, expectAbsent: true, mode: 0o644 }, { direct: true, makeDurable: async () => name });
  t.ok('digest' in r, 'the close is confirmed by the node');
  t.ok(lost > 0, `${lost} staged chunks were removed before the first commit`);
  t.same(calls, ['has-chunks', 'put-chunks', 'commit', 'has-chunks', 'put-chunks', 'commit'], 'uploaded again, then committed again');
  t.ok((await readFile(join(root, 'big.bin'))).equals(data), 'the node has exactly the bytes written');
});
