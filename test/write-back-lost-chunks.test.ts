// A big file's chunks are uploaded, then committed in a second call. When
// the node that takes the commit lacks some of them (they went to a replica
// that died between the two calls), the write-back uploads them again
// instead of taking the node's ENOENT for a refusal; an ENOENT with no chunk
// missing (the file's directory is gone) is still a refusal, unless the node
// said it is about a chunk. Driven in
// process against a real node (helpers/write-back-rig.ts); the losses are
// made between the upload and the commit.
import t from 'tap';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DirtyFile } from '../src/mount/dirty-file.js';
import type { MeshClient } from '../src/mesh/mesh-client.js';
import type { WriteBack } from '../src/mount/write-back.js';
import { errnoOf } from '../src/wire/errors.js';
import { writeBackRig } from './helpers/write-back-rig.js';
import { NodeProc } from './helpers/node-proc.js';

/**
 * Records the names of the calls made, running `before(name, nth)` ahead of
 * each (`nth`: its count among calls of that name). `answer` may give a
 * call's answer instead of the node: that call is not made.
 */
function hookCalls(mesh: MeshClient, before: (name: string, nth: number) => unknown, answer: (name: string, nth: number) => unknown = () => undefined): string[] {
  const calls: string[] = [];
  const call = mesh.call.bind(mesh);
  (mesh as { call: MeshClient['call'] }).call = (async (what: string, fn: Parameters<MeshClient['call']>[1], opts: Parameters<MeshClient['call']>[2]) => {
    const name = what.split(' ')[0]!;
    calls.push(name);
    const nth = calls.filter((c) => c === name).length;
    await before(name, nth);
    return answer(name, nth) ?? call(what, fn, opts);
  }) as MeshClient['call'];
  return calls;
}

/** Runs `before` ahead of the first commit call, and records the names of the calls made. */
function hookFirstCommit(mesh: MeshClient, before: () => Promise<unknown>): string[] {
  return hookCalls(mesh, (name, nth) => (name === 'commit' && nth === 1 ? before() : undefined));
}

/** A 3 MiB dirty copy (more than travels inside a commit, so its chunks are uploaded first). */
async function bigDirtyCopy(wb: WriteBack): Promise<{ data: Buffer; name: string }> {
  const data = randomBytes(3 << 20);
  const name = wb.newDirtyName();
  await DirtyFile.writeCopy(wb.dirtyPath(name), data, true);
  return { data, name };
}

/** Removes the node's staged chunks; returns how many there were. */
async function removeStaged(staging: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(staging)) if (/^[0-9a-f]{64}$/.test(f)) n += (await rm(join(staging, f)), 1);
  return n;
}

/** Closes the copy as big.bin, committed at once: 'committed', or the errno and message it failed with. */
function closeBig(wb: WriteBack, name: string): Promise<string> {
  return wb.closeFile({ path: 'big.bin', dirty: name, expectAbsent: true, mode: 0o644 }, wb.beginClose('big.bin'), { direct: true, makeDurable: async () => name }).then(
    (r) => ('digest' in r ? 'committed' : JSON.stringify(r)),
    (err: Error) => `${errnoOf(err)}: ${err.message}`,
  );
}

t.test('chunks lost on the node between upload and commit are uploaded again', async (t) => {
  const { base, root, mesh, wb } = await writeBackRig(t, {}, 10_000);
  const staging = join(base, 'state', 'staging', 'default');
  const { data, name } = await bigDirtyCopy(wb);
  let lost = 0;
  const calls = hookFirstCommit(mesh, async () => (lost = await removeStaged(staging)));

  const r = await wb.closeFile({ path: 'big.bin', dirty: name, expectAbsent: true, mode: 0o644 }, wb.beginClose('big.bin'), { direct: true, makeDurable: async () => name });
  t.ok('digest' in r, 'the close is confirmed by the node');
  t.ok(lost > 0, `${lost} staged chunks were removed before the first commit`);
  t.same(calls, ['has-chunks', 'put-chunks', 'commit', 'has-chunks', 'put-chunks', 'commit'], 'uploaded again, then committed again');
  t.ok((await readFile(join(root, 'big.bin'))).equals(data), 'the node has exactly the bytes written');
});

t.test('an ENOENT with every chunk on the node is a refusal, as before', async (t) => {
  const { root, mesh, wb } = await writeBackRig(t, {}, 10_000);
  await mkdir(join(root, 'gone'));
  const { name } = await bigDirtyCopy(wb);
  // The file's directory removed on the node between the upload and the commit.
  const calls = hookFirstCommit(mesh, () => rm(join(root, 'gone'), { recursive: true }));
  const err = await wb.closeFile({ path: 'gone/big.bin', dirty: name, expectAbsent: true, mode: 0o644 }, wb.beginClose('gone/big.bin'), { direct: true, makeDurable: async () => name }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.equal(err && errnoOf(err), 'ENOENT', "the close fails with the node's ENOENT");
  t.same(calls, ['has-chunks', 'put-chunks', 'commit', 'has-chunks', 'commit'], 'asked which chunks the node lacks: none, and the commit, sent once more, meets the ENOENT again');
  t.equal(wb.stats.failed, 1, 'counted as refused');
});

t.test('a node that names a lacking chunk is not taken to refuse the file when it then counts that chunk as held', async (t) => {
  // A node can count a chunk it cannot deliver (one in a draft or a
  // workspace file that goes before the commit reads it). Its answer to
  // the second question is made here: nothing lacking.
  const { base, root, mesh, wb } = await writeBackRig(t, {}, 10_000);
  const staging = join(base, 'state', 'staging', 'default');
  const { data, name } = await bigDirtyCopy(wb);
  const calls = hookCalls(
    mesh,
    (call, nth) => (call === 'commit' && nth === 1 ? removeStaged(staging) : undefined),
    (call, nth) => (call === 'has-chunks' && nth === 2 ? [] : undefined),
  );
  t.equal(await closeBig(wb, name), 'committed', 'the close is confirmed by the node');
  t.same(calls, ['has-chunks', 'put-chunks', 'commit', 'has-chunks', 'commit', 'has-chunks', 'put-chunks', 'commit'], 'told none lack, the commit met the ENOENT of a chunk again: asked again, uploaded, committed');
  t.equal(wb.stats.failed, 0, 'nothing refused');
  t.ok((await readFile(join(root, 'big.bin'))).equals(data), 'the node has exactly the bytes written');
});

t.test('chunks the replica taking the commit lacks go to it, though the node they first went to is back and has them', async (t) => {
  const { base, root, node, proxy, mesh, wb } = await writeBackRig(t, {}, 10_000, {}, { replica: true });
  const { data, name } = await bigDirtyCopy(wb);
  const calls = hookCalls(mesh, async (call, nth) => {
    // The primary dies between the upload and the commit: the commit goes to the replica, which lacks the chunks.
    if (call === 'commit' && nth === 1) await node.stop('SIGKILL');
    // It is back, its staged chunks with it, before the write-back asks again which chunks are lacking.
    if (call === 'has-chunks' && nth === 2) {
      const again = await NodeProc.start(['--root', root, '--state-dir', join(base, 'state')]);
      t.teardown(() => again.stop('SIGKILL'));
      proxy.upstream = again.endpoint;
      await new Promise((r) => setTimeout(r, 50)); // past its back-off: first in the mesh's order again
    }
  });
  t.equal(await closeBig(wb, name), 'committed', 'the close is confirmed by a node');
  t.same(calls, ['has-chunks', 'put-chunks', 'commit', 'has-chunks', 'put-chunks', 'commit'], 'the chunks went to the replica, and the commit again');
  t.equal(wb.stats.failed, 0, 'nothing refused');
  t.ok((await readFile(join(root, 'big.bin'))).equals(data), 'the file has exactly the bytes written');
});
