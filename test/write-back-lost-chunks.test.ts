// A big file's chunks are uploaded, then committed in a second call. When
// the node that takes the commit lacks some of them (they went to a replica
// that died between the two calls), the write-back uploads them again
// instead of taking the node's ENOENT for a refusal; an ENOENT with no chunk
// missing (the file's directory is gone) is still a refusal. Driven in
// process against a real node (helpers/write-back-rig.ts); the losses are
// made between the upload and the commit.
import t from 'tap';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DirtyFile } from '../src/mount/dirty-file.js';
import type { MeshClient } from '../src/mesh/mesh-client.js';
import { errnoOf } from '../src/wire/errors.js';
import { writeBackRig } from './helpers/write-back-rig.js';

/** Runs `before` ahead of the first commit call, and records the names of the calls made. */
function hookFirstCommit(mesh: MeshClient, before: () => Promise<void>): string[] {
  const calls: string[] = [];
  let done = false;
  const call = mesh.call.bind(mesh);
  (mesh as { call: MeshClient['call'] }).call = (async (what: string, fn: Parameters<MeshClient['call']>[1]) => {
    calls.push(what.split(' ')[0]!);
    if (what.startsWith('commit ') && !done) {
      done = true;
      await before();
    }
    return call(what, fn);
  }) as MeshClient['call'];
  return calls;
}

t.test('chunks lost on the node between upload and commit are uploaded again', async (t) => {
  const { base, root, mesh, wb } = await writeBackRig(t, {}, 10_000);
  const staging = join(base, 'state', 'staging', 'default');
  // 3 MiB: more than travels inside a commit, so its chunks are uploaded first.
  const data = randomBytes(3 << 20);
  const name = wb.newDirtyName();
  await DirtyFile.writeCopy(wb.dirtyPath(name), data, true);
  let lost = 0;
  const calls = hookFirstCommit(mesh, async () => {
    for (const f of await readdir(staging)) if (/^[0-9a-f]{64}$/.test(f)) lost += (await rm(join(staging, f)), 1);
  });

  const r = await wb.closeFile({ path: 'big.bin', dirty: name, expectAbsent: true, mode: 0o644 }, wb.beginClose('big.bin'), { direct: true, makeDurable: async () => name });
  t.ok('digest' in r, 'the close is confirmed by the node');
  t.ok(lost > 0, `${lost} staged chunks were removed before the first commit`);
  t.same(calls, ['has-chunks', 'put-chunks', 'commit', 'has-chunks', 'put-chunks', 'commit'], 'uploaded again, then committed again');
  t.ok((await readFile(join(root, 'big.bin'))).equals(data), 'the node has exactly the bytes written');
});

t.test('an ENOENT with every chunk on the node is a refusal, as before', async (t) => {
  const { root, mesh, wb } = await writeBackRig(t, {}, 10_000);
  await mkdir(join(root, 'gone'));
  const data = randomBytes(3 << 20);
  const name = wb.newDirtyName();
  await DirtyFile.writeCopy(wb.dirtyPath(name), data, true);
  // The file's directory removed on the node between the upload and the commit.
  const calls = hookFirstCommit(mesh, () => rm(join(root, 'gone'), { recursive: true }));
  const err = await wb.closeFile({ path: 'gone/big.bin', dirty: name, expectAbsent: true, mode: 0o644 }, wb.beginClose('gone/big.bin'), { direct: true, makeDurable: async () => name }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.equal(err && errnoOf(err), 'ENOENT', "the close fails with the node's ENOENT");
  t.same(calls, ['has-chunks', 'put-chunks', 'commit', 'has-chunks'], 'asked once more which chunks the node lacks: none, so no second commit');
  t.equal(wb.stats.failed, 1, 'counted as refused');
});
