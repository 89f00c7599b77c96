// Operating a mount: status, unmount (flush, refuse, force), metrics.
import t, { type Test } from 'tap';
import { mkdir, readFile, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { BIN, NodeProc, tempDir } from './helpers/node-proc.js';
import { MountProc, run, sh } from './helpers/mount-proc.js';
import { isMounted } from '../src/mount/mount-table.js';

const cli = (...args: string[]) => run(process.execPath, [BIN, ...args]);
const CUT_OFF = 'files were open when the mount went: their processes are cut off, and what was written to them is written back';

/** A process that opens `file` for writing, writes a line, and keeps it open (killed at the test's end). */
async function holdWritten(t: Test, file: string): Promise<void> {
  const script = `import os, sys, time\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\nos.write(fd, b'written, never closed\\n')\nprint('written', flush=True)\ntime.sleep(300)\n`;
  const holder = spawn('python3', ['-c', script, file], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await Promise.race([
    once(holder.stdout!, 'data'),
    once(holder, 'exit').then(([code]) => {
      throw new Error(`the process holding ${file} exited (${code}) before it had written`);
    }),
  ]);
}

/** A test's directories, with its own runtime dir so that `status` sees only its mounts. */
async function layout(t: Parameters<typeof tempDir>[0]) {
  const base = await tempDir(t);
  const env = { GHOSTFS_RUN_DIR: join(base, 'run') };
  process.env.GHOSTFS_RUN_DIR = env.GHOSTFS_RUN_DIR; // for the CLI children too
  return { base, src: join(base, 'src'), mnt: join(base, 'mnt'), cache: join(base, 'cache'), env };
}

t.test('status, unmount and metrics of a running mount', async (t) => {
  const { base, src, mnt, cache, env } = await layout(t);
  await mkdir(src);
  await writeFile(join(src, 'hello.txt'), 'hello\n');
  let node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), '--metrics', '127.0.0.1:0']);
  t.teardown(() => node.stop('SIGKILL'));
  let m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--metrics', '127.0.0.1:0'], env);
  t.teardown(() => m.kill());

  await t.test('status reports nodes, cache, write-backs and the feed', async (t) => {
    t.equal((await run('cat', [join(mnt, 'hello.txt')])).stdout, 'hello\n');
    const r = await cli('status', mnt, '--json');
    t.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    t.equal(s.mountpoint, mnt);
    t.equal(s.workspace, 'default');
    t.equal(s.driver, 'native', 'the native driver is the default once built');
    t.equal(s.driverStats.reads >= 1 && s.driverStats.maxWrite, 1 << 20, 'its counters are in status: reads seen, 1 MiB writes negotiated');
    t.equal(s.endpoints[0].endpoint, node.endpoint);
    t.equal(s.endpoints[0].healthy, true);
    t.same(s.endpoints[0].chunks, { over: 'lane' }, 'chunks came over the bulk lane');
    t.ok(s.fetched.chunks >= 1, 'a fetched chunk is counted');
    t.ok(s.cache.chunks >= 1 && s.cache.bytes >= 6, 'and held in the cache');
    t.equal(s.writeBack.pending, 0);
    t.equal(typeof s.changeFeed.generation, 'number');
    t.ok(s.memory.rssBytes > s.memory.heapUsedBytes && s.memory.heapUsedBytes > 0, 'and the memory it holds, the JS heap within it');
    // Node's buffers come from malloc, so the allocator holds at least them.
    t.ok(s.memory.mallocInUseBytes >= s.memory.buffersBytes && s.memory.mallocInUseBytes < s.memory.rssBytes, 'and what native code holds from the allocator');
    t.ok(s.memory.mallocFreeBytes >= 0, 'and the free space within its heaps');
    const all = await cli('status');
    t.match(all.stdout, new RegExp(`${mnt}.*workspace default`), 'plain status lists the mount');
    t.match(all.stdout, /node +\S+ +healthy; chunks over the bulk lane/, 'with how chunks travel');
    t.match(all.stdout, /memory +[\d.]+ MiB resident: JS heap [\d.]+ MiB, buffers [\d.]+ MiB; allocator [\d.]+ MiB in use/, 'with its memory');
  });

  await t.test('metrics scrape with the expected names', async (t) => {
    const body = await m.scrapeMetrics();
    for (const name of ['ghostfs_fs_ops_total', 'ghostfs_fs_op_seconds_bucket', 'ghostfs_cache', 'ghostfs_fetched', 'ghostfs_writeback', 'ghostfs_writeback_pending', 'ghostfs_process_resident_memory_bytes']) {
      t.match(body, new RegExp(`^${name}`, 'm'), `mount exposes ${name}`);
    }
    t.match(body, /ghostfs_fs_ops_total\{op="read",errno="0"\} [1-9]/, 'reads were counted');
    const nb = await node.scrapeMetrics();
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
    t.match(refused.stderr, /^ +queued\.txt: closed \d+s ago, [^,;]+, [1-9]\d* attempt\(s\); last: EHOSTDOWN: .*no node reachable/m, 'it names the file and why it waits');
    const st = JSON.parse((await cli('status', mnt, '--json')).stdout) as { writeBack: { pending: number }; pendingWrites: { path: string; attempts: number; lastError?: string }[] };
    t.equal(st.writeBack.pending, 1);
    t.match(st.pendingWrites, [{ path: 'queued.txt', lastError: /^EHOSTDOWN/ }], 'status lists the pending file');
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

  await t.test('unmount refuses while files are open there, naming them; --force cuts their processes off and writes back what was written', async (t) => {
    // A writer that wrote and never closed (its write() returned: the bytes are the mount's to keep).
    await holdWritten(t, join(mnt, 'held.txt'));
    const refused = await cli('unmount', mnt);
    t.equal(refused.code, 1);
    t.match(refused.stderr, /refusing to unmount .*: busy: 1 file\(s\) open, 1 of them for writing/, refused.stderr);
    t.match(refused.stderr, /^ +held\.txt \(open for writing\)$/m, 'it names the file');
    t.same(JSON.parse((await cli('unmount', mnt, '--json')).stdout).openFiles, [{ path: 'held.txt', writing: true }], 'and so does --json');
    t.equal(await isMounted(mnt), true, 'still mounted');
    t.not(await readFile(join(src, 'held.txt'), 'utf8').catch(() => ''), 'written, never closed\n', 'not on the node yet: the file was not closed');
    const forced = await cli('unmount', mnt, '--force');
    t.equal(forced.code, 0, forced.stderr);
    t.match(forced.stdout, /^unmounted .*: 1 open file handle\(s\) cut off, what was written to them written back; \d+ write-back\(s\) flushed$/m, forced.stdout);
    t.equal(await readFile(join(src, 'held.txt'), 'utf8'), 'written, never closed\n', 'what the writer wrote is on the node when the command returns');
    t.equal(await m.exited, 0, 'the mount process exited cleanly');
    t.ok(m.has(CUT_OFF), 'and its log says so');
    m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache], env);
  });

  await t.test('a mount taken away from outside (umount -l) while a file is open there writes back what was written to it', async (t) => {
    await holdWritten(t, join(mnt, 'held2.txt'));
    t.equal((await run('umount', ['-l', mnt])).code, 0, 'umount -l');
    t.equal(await m.exited, 0, 'the mount process exited cleanly');
    t.equal(await readFile(join(src, 'held2.txt'), 'utf8'), 'written, never closed\n', 'what the writer wrote is on the node');
    t.ok(m.has(CUT_OFF), 'and its log says so');
    m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache], env);
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

t.test('cache upkeep: warmup, quota, purge, gc', async (t) => {
  const { base, src, mnt, cache, env } = await layout(t);
  await mkdir(join(src, 'tree/sub'), { recursive: true });
  const { randomBytes } = await import('node:crypto');
  for (let i = 0; i < 4; i++) await writeFile(join(src, `tree/sub/f${i}.bin`), randomBytes(3 * 1024 * 1024));
  await writeFile(join(src, 'big.bin'), randomBytes(48 * 1024 * 1024));
  await mkdir(join(src, 'small'));
  for (let i = 0; i < 50; i++) await writeFile(join(src, `small/s${i}.txt`), `small file ${i}\n`);
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--cache-quota', '24M', '--min-free', '0'], env);
  t.teardown(() => m.kill());
  const status = async () => JSON.parse((await cli('status', mnt, '--json')).stdout);

  await t.test('warmup fetches a subtree; later reads hit the cache', async (t) => {
    const w = await cli('warmup', join(mnt, 'tree'), '--json');
    t.equal(w.code, 0, w.stderr);
    const r = JSON.parse(w.stdout);
    t.equal(r.files, 4);
    t.equal(r.fetchedBytes, 12 * 1024 * 1024, 'every byte fetched once');
    const before = await status();
    t.equal((await sh(`cat '${mnt}'/tree/sub/*.bin | wc -c`)).stdout.trim(), String(12 * 1024 * 1024));
    const after = await status();
    t.equal(after.fetched.bytes, before.fetched.bytes, 'reading the warmed files fetched nothing');
    t.ok(after.cache.hits > before.cache.hits, 'they were cache hits');
  });

  await t.test('reading one small file fetches its small siblings in the same call', async (t) => {
    t.equal((await run('ls', [join(mnt, 'small')])).stdout.split('\n').filter(Boolean).length, 50);
    const before = (await status()).fetched.chunks;
    t.equal((await run('cat', [join(mnt, 'small/s7.txt')])).stdout, 'small file 7\n');
    for (let i = 0; i < 50 && (await status()).fetched.chunks - before < 50; i++) await new Promise((r) => setTimeout(r, 100));
    t.equal((await status()).fetched.chunks - before, 50, 'all 50 small files arrived');
    const all = await sh(`cat '${mnt}'/small/*.txt | wc -l`);
    t.equal(all.stdout.trim(), '50');
    t.equal((await status()).fetched.chunks - before, 50, 'reading the others fetched nothing more');
  });

  await t.test('the cache stays within its quota while reading more than it', async (t) => {
    const sum = await run('sha256sum', [join(mnt, 'big.bin')]);
    t.equal(sum.stdout.split(' ')[0], (await run('sha256sum', [join(src, 'big.bin')])).stdout.split(' ')[0], 'a 48 MiB file reads intact through a 24 MiB cache');
    await new Promise((r) => setTimeout(r, 1500));
    const s = await status();
    t.ok(s.cache.bytes <= 24 * 1024 * 1024, `cache holds ${s.cache.bytes} bytes, quota 24 MiB`);
    t.ok(s.cache.evictedChunks > 0, 'by evicting least recently used chunks');
  });

  await t.test('purge through the live mount frees space, keeps pending writes', async (t) => {
    const p = await cli('purge', '--cache-dir', cache, '--yes', '--json');
    t.equal(p.code, 0, p.stderr);
    t.ok(JSON.parse(p.stdout).chunks > 0, 'chunks were removed');
    t.equal((await status()).cache.chunks, 0, 'the cache is empty');
    t.equal((await run('cat', [join(mnt, 'tree/sub/f1.bin')])).code, 0, 'and refills on demand');
    const refused = await cli('purge', '--cache-dir', cache, '--metadata', '--all', '--yes');
    t.equal(refused.code, 1);
    t.match(refused.stderr, /unmount it to purge metadata/);
  });

  await t.test('offline purge --metadata, gc to a size, orphaned workspace and stale temps', async (t) => {
    // A write-back left pending: the node is down when the file is closed.
    const port = node.port;
    await node.stop('SIGKILL');
    t.equal((await sh(`echo keep-me > '${mnt}/pending.txt'`)).code, 0);
    t.equal((await cli('unmount', mnt, '--force', '--timeout', '1s')).code, 0);
    // A workspace no longer active, and stale leftovers.
    const { Store, key } = await import('../src/store/db.js');
    const db = await Store.open(join(cache, 'db'));
    await db.put(key('old-ws', 'e', 'x'), Buffer.from('stale'));
    await db.close();
    await mkdir(join(cache, 'dirty', 'default'), { recursive: true });
    await writeFile(join(cache, 'dirty', 'default', 'deadbeefdeadbeefdeadbeef'), 'orphan');
    const { utimes } = await import('node:fs/promises');
    await utimes(join(cache, 'dirty', 'default', 'deadbeefdeadbeefdeadbeef'), new Date(0), new Date(0));
    const stRun = await cli('status', '--cache-dir', cache, '--json');
    t.equal(stRun.code, 0, stRun.stderr);
    const st = JSON.parse(stRun.stdout);
    t.ok(st.cache.workspaces.some((w: { id: string }) => w.id === 'old-ws'), 'status without a mount shows what the cache dir holds');
    const g = await cli('gc', '--cache-dir', cache, '--max-size', '1M', '--keep-workspaces', 'default', '--json');
    t.equal(g.code, 0, g.stderr);
    const r = JSON.parse(g.stdout);
    t.same(r.removedWorkspaces, ['old-ws'], 'the orphaned workspace cache is gone');
    t.equal(r.staleFiles, 1, 'the stale temp file is gone');
    const after = JSON.parse((await cli('status', '--cache-dir', cache, '--json')).stdout);
    t.ok(after.cache.chunkBytes <= 1024 * 1024, `chunks down to ${after.cache.chunkBytes} bytes`);
    const p = await cli('purge', '--cache-dir', cache, '--metadata', '--workspace', 'default', '--yes', '--json');
    t.equal(p.code, 0, p.stderr);
    t.same(JSON.parse(p.stdout).workspacesCleared, ['default']);
    t.equal(JSON.parse(p.stdout).keptPending, 1, 'purge kept the pending write-back');
    // The node returns; the next mount replays what purge and gc left alone.
    const node2 = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), '--listen', `127.0.0.1:${port}`]);
    t.teardown(() => node2.stop('SIGKILL'));
    const m2 = await MountProc.start(node2.endpoint, mnt, ['--cache-dir', cache], env);
    t.teardown(() => m2.kill());
    for (let i = 0; i < 100 && !(await readFile(join(src, 'pending.txt'), 'utf8').catch(() => '')); i++) await new Promise((r) => setTimeout(r, 100));
    t.equal(await readFile(join(src, 'pending.txt'), 'utf8'), 'keep-me\n', 'nothing written was lost');
    await m2.stop();
  });
});
