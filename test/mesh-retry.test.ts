// A mutation applied by a node whose answer was lost, retried on a replica of
// the same directory: the retry meets its own effect (EEXIST, ENOENT) and
// must report success, while a real clash still fails. Real node, real gRPC,
// a proxy that lets requests through and swallows the answers.
import t from 'tap';
import { mkdir, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MeshClient } from '../src/mesh/mesh-client.js';
import { errnoOf } from '../src/wire/errors.js';
import { FaultProxy } from '../scripts/soak/lib/fault-proxy.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';

t.test('mutations whose answers were lost', async (t) => {
  const base = await tempDir(t);
  const root = join(base, 'ws');
  await mkdir(root);
  await writeFile(join(root, 'a.txt'), 'a\n');
  await writeFile(join(root, 'gone.txt'), 'x\n');
  const node = await NodeProc.start(['--root', root, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const proxy = await FaultProxy.start(node.endpoint);
  t.teardown(() => proxy.close());
  const mesh = new MeshClient([proxy.endpoint, node.endpoint], 'default', { deadlineMs: 600, backoffMs: 1 });
  t.teardown(() => mesh.close());
  await mesh.handshake();

  /** Runs `req` with the primary's answer swallowed: it applies it, the replica gets the retry. */
  const muted = async (req: Parameters<MeshClient['mutate']>[0]) => {
    proxy.set('mute');
    try {
      return await mesh.mutate(req);
    } finally {
      proxy.set('pass');
      await new Promise((r) => setTimeout(r, 5)); // let the primary's back-off (1 ms) pass
    }
  };

  const made = await muted({ mkdir: { path: 'd', mode: 0o750 } });
  t.ok((await stat(join(root, 'd'))).isDirectory(), 'the directory exists once');
  t.equal(made.entries[0]?.name, 'd', 'the reply names the new directory');

  await muted({ symlink: { path: 'l', target: 'a.txt' } });
  t.equal(await readlink(join(root, 'l')), 'a.txt');

  const linked = await muted({ link: { existing: 'a.txt', path: 'b.txt' } });
  t.equal(linked.entries.length, 2, 'both names reported');
  t.equal((await stat(join(root, 'a.txt'))).nlink, 2);

  await muted({ unlink: { path: 'gone.txt' } });
  await t.rejects(stat(join(root, 'gone.txt')), 'unlinked');

  const moved = await muted({ rename: { from: 'b.txt', to: 'c.txt' } });
  t.equal(moved.entries[0]?.name, 'c.txt');

  await muted({ rmdir: { path: 'd' } });
  await t.rejects(stat(join(root, 'd')), 'removed');

  // Real clashes still fail, lost answer or not.
  await writeFile(join(root, 'taken'), 'file, not a directory\n');
  const clash = await muted({ mkdir: { path: 'taken', mode: 0o755 } }).catch((err) => err);
  t.equal(errnoOf(clash), 'EEXIST', 'mkdir over a file is EEXIST');
  const other = await muted({ symlink: { path: 'l', target: 'elsewhere' } }).catch((err) => err);
  t.equal(errnoOf(other), 'EEXIST', 'a symlink with another target is EEXIST');
  const direct = await mesh.mutate({ mkdir: { path: 'c.txt', mode: 0o755 } }).catch((err) => err);
  t.equal(errnoOf(direct), 'EEXIST', 'without a lost answer, EEXIST is EEXIST');
});
