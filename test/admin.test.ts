// Operating a mount: status, unmount (flush, refuse, force), metrics.
import t from 'tap';
import { mkdir, readFile, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN, NodeProc, tempDir } from './helpers/node-proc.js';
import { MountProc, run, sh } from './helpers/mount-proc.js';
import { isMounted } from '../src/mount/mount-table.js';

t.test('status, unmount and metrics of a running mount', async (t) => {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  const cache = join(base, 'cache');
  const env = { GHOSTFS_RUN_DIR: join(base, 'run') };
  process.env.GHOSTFS_RUN_DIR = env.GHOSTFS_RUN_DIR;
  await mkdir(src);
  await writeFile(join(src, 'hello.txt'), 'hello\n');
  let node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), '--metrics', '127.0.0.1:0']);
  t.teardown(() => node.stop('SIGKILL'));
  let m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--metrics', '127.0.0.1:0'], env);
  t.teardown(() => m.kill());
  const cli = (...args: string[]) => run(process.execPath, [BIN, ...args]);

  await t.test('status reports nodes, cache, write-backs and the feed', async (t) => {
    t.equal((await run('cat', [join(mnt, 'hello.txt')])).stdout, 'hello\n');
    const r = await cli('status', mnt, '--json');
    t.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    t.equal(s.mountpoint, mnt);
    t.equal(s.workspace, 'default');
    t.equal(s.driver, 'fuse-native');
    t.equal(s.endpoints[0].endpoint, node.endpoint);
    t.equal(s.endpoints[0].healthy, true);
    t.ok(s.fetched.chunks >= 1, 'a fetched chunk is counted');
    t.ok(s.cache.chunks >= 1 && s.cache.bytes >= 6, 'and held in the cache');
    t.equal(s.writeBack.pending, 0);
    t.equal(typeof s.changeFeed.generation, 'number');
    const all = await cli('status');
    t.match(all.stdout, new RegExp(`${mnt}.*workspace default`), 'plain status lists the mount');
  });

  await t.test('metrics scrape with the expected names', async (t) => {
    const mountPort = String(m.lines.find((l) => l.msg === 'metrics serving')!.metrics).split(':').pop();
    const body = await (await fetch(`http://127.0.0.1:${mountPort}/metrics`)).text();
    for (const name of ['ghostfs_fs_ops_total', 'ghostfs_fs_op_seconds_bucket', 'ghostfs_cache', 'ghostfs_fetched', 'ghostfs_writeback', 'ghostfs_writeback_pending', 'ghostfs_process_resident_memory_bytes']) {
      t.match(body, new RegExp(`^${name}`, 'm'), `mount exposes ${name}`);
    }
    t.match(body, /ghostfs_fs_ops_total\{op="read",errno="0"\} [1-9]/, 'reads were counted');
    const nodePort = String(node.lines.find((l) => l.msg === 'metrics serving')!.metrics).split(':').pop();
    const nb = await (await fetch(`http://127.0.0.1:${nodePort}/metrics`)).text();
    for (const name of ['ghostfs_node_rpcs_total', 'ghostfs_node_rpc_seconds_bucket', 'ghostfs_hash_queue', 'ghostfs_hashed']) t.match(nb, new RegExp(`^${name}`, 'm'), `node exposes ${name}`);
  });

  await t.test('unmount writes back what is pending, then unmounts', async (t) => {
    await sh(`echo one > '${join(mnt, 'one.txt')}'`);
    const r = await cli('unmount', mnt);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^unmounted /);
    t.equal(await isMounted(mnt), false, 'no longer mounted');
    t.equal(await m.exited, 0, 'the mount process exited cleanly');
    t.equal(await readFile(join(src, 'one.txt'), 'utf8'), 'one\n', 'the file is on the node');
  });

  await t.test('unmount refuses while write-backs cannot complete; --force keeps them for the next mount', async (t) => {
    m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--deadline', '2s'], env);
    const port = node.port;
    await node.stop('SIGKILL');
    t.equal((await sh(`echo queued > '${join(mnt, 'queued.txt')}'`)).code, 0, 'close succeeds with the node down');
    const refused = await cli('unmount', mnt, '--timeout', '2s');
    t.equal(refused.code, 1);
    t.match(refused.stderr, /refusing to unmount .*1 write-back\(s\) pending/, refused.stderr);
    t.equal(await isMounted(mnt), true, 'still mounted');
    const forced = await cli('unmount', mnt, '--force', '--timeout', '1s', '--json');
    t.equal(forced.code, 0, forced.stderr);
    t.same(JSON.parse(forced.stdout), { mountpoint: mnt, ok: true, flushed: 0, pending: 1 });
    t.equal(await isMounted(mnt), false);
    node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), '--listen', `127.0.0.1:${port}`]);
    m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache], env);
    for (let i = 0; i < 100 && !(await readFile(join(src, 'queued.txt'), 'utf8').catch(() => '')); i++) await new Promise((r) => setTimeout(r, 100));
    t.equal(await readFile(join(src, 'queued.txt'), 'utf8'), 'queued\n', 'the next mount replayed the journal');
  });

  await t.test('unmount --force recovers a dead mount', async (t) => {
    await m.kill(); // kill -9, then the helper's own cleanup is skipped below
    await sh(`mountpoint -q '${mnt}' || true`);
    const plain = await cli('unmount', mnt);
    if (await isMounted(mnt)) {
      t.equal(plain.code, 1, 'without --force it says what to do');
      t.match(plain.stderr, /--force/);
      const forced = await cli('unmount', mnt, '--force');
      t.equal(forced.code, 0, forced.stderr);
    } else {
      t.match(plain.stderr, /not mounted/, 'the kernel already dropped the dead mount (auto_unmount)');
    }
    t.equal(await isMounted(mnt), false);
    t.same(await readdir(mnt), [], 'the mountpoint is an ordinary empty directory again');
  });
});
