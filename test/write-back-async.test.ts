// --write-back async end to end: close() returns once the file is journaled
// on the mount and the node has it moments later. Checked on the node's own
// disk: files appear without anyone waiting, `ghostfs sync` waits for them,
// attribute changes right after close (tar) join the pending commit, fsync
// sends the file at once, a write-back survives kill -9 of the mount, and a
// rename waits for the content it moves.
import t from 'tap';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { BIN } from './helpers/logged-proc.js';
import { MountProc, run, sh, waitFor } from './helpers/mount-proc.js';

t.test('mount: asynchronous write-back', async (t) => {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  const cache = join(base, 'cache');
  const runDir = join(base, 'run');
  await mkdir(src);
  const env = { GHOSTFS_RUN_DIR: runDir };
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const args = ['--cache-dir', cache, '--deadline', '3s', '--write-back', 'async'];
  let m = await MountProc.start(node.endpoint, mnt, args, env);
  t.teardown(() => m.kill());
  const M = (p: string) => join(mnt, p);
  const S = (p: string) => join(src, p);
  const ghostfs = (...a: string[]) => run('env', [`GHOSTFS_RUN_DIR=${runDir}`, process.execPath, BIN, ...a], { timeoutMs: 60_000 });
  const sync = () => ghostfs('sync', mnt, '--json');

  await t.test('many small files reach the node by themselves; ghostfs sync waits for the rest', async (t) => {
    const w = await sh(`mkdir '${M('many')}' && for i in $(seq 1 300); do echo "file $i" > '${M('many')}'/f$i; done`);
    t.equal(w.code, 0, w.stderr);
    t.equal((await run('cat', [M('many/f300')])).stdout, 'file 300\n', 'the mount shows what was closed at once');
    const s = await sync();
    t.equal(s.code, 0, s.stderr);
    t.equal(JSON.parse(s.stdout).pending, 0, 'nothing pending after sync');
    const names = await readdir(S('many'));
    t.equal(names.length, 300, 'every file on the node');
    t.equal(await readFile(S('many/f123'), 'utf8'), 'file 123\n');
    await sh(`echo again > '${M('many/f1')}'`);
    await waitFor('a closed file on the node without sync', async () => (await readFile(S('many/f1'), 'utf8')) === 'again\n');
  });

  await t.test('tar -x: modes and mtimes given right after close join the commit', async (t) => {
    const tree = join(base, 'tree');
    await mkdir(join(tree, 'sub'), { recursive: true });
    for (let i = 0; i < 40; i++) await writeFile(join(tree, 'sub', `f${i}.txt`), `content ${i}\n`.repeat(i + 1), { mode: i % 3 ? 0o644 : 0o755 });
    await sh(`touch -d '2001-02-03 04:05:06.123456789' '${tree}'/sub/* && tar --format=posix -C '${tree}' -cf '${base}/t.tar' .`);
    t.equal((await sh(`mkdir '${M('x')}' && tar -C '${M('x')}' -xf '${base}/t.tar'`)).code, 0);
    t.equal((await sync()).code, 0);
    const d = await sh(`tar -C '${S('x')}' -df '${base}/t.tar'`);
    t.equal(d.code, 0, `tar -d clean on the node (content, mode, mtime): ${d.stdout}${d.stderr}`);
    const st = await stat(S('x/sub/f3.txt'), { bigint: true });
    t.equal(st.mtimeNs % 1_000_000_000n, 123456789n, 'mtime to the nanosecond on the node');
    t.equal(Number(st.mode & 0o777n), 0o755, 'mode on the node');
  });

  await t.test('fsync sends a queued file to the node at once', async (t) => {
    // The first close queues the file; dd then opens it again and fsyncs before its close.
    t.equal((await sh(`printf one > '${M('f.txt')}' && dd if=/dev/null of='${M('f.txt')}' oflag=append conv=notrunc,fsync status=none`)).code, 0);
    t.equal(await readFile(S('f.txt'), 'utf8'), 'one', 'on the node when the fsync returned');
  });

  await t.test('a rename waits for the content it moves', async (t) => {
    t.equal((await sh(`echo moved > '${M('a.tmp')}' && mv '${M('a.tmp')}' '${M('a.txt')}'`)).code, 0);
    t.equal(await readFile(S('a.txt'), 'utf8'), 'moved\n', 'the renamed file has its content on the node');
    await t.rejects(stat(S('a.tmp')), 'the old name is gone');
  });

  await t.test('kill -9 right after close: the next mount commits what was closed', async (t) => {
    await m.stop();
    // The node is away: closes are journaled and cannot be committed yet.
    process.kill(node.child.pid!, 'SIGSTOP');
    m = await MountProc.start(node.endpoint, mnt, args, env);
    t.equal((await sh(`for i in 1 2 3; do echo "kept $i" > '${M('kept')}'$i; done`)).code, 0, 'closes return with the node stopped');
    await m.kill();
    process.kill(node.child.pid!, 'SIGCONT');
    m = await MountProc.start(node.endpoint, mnt, args, env);
    await waitFor('the journal replayed', async () => (await readFile(S('kept3'), 'utf8')) === 'kept 3\n');
    t.equal(await readFile(S('kept1'), 'utf8'), 'kept 1\n');
    t.equal(await readFile(S('kept2'), 'utf8'), 'kept 2\n');
  });

  t.equal(await m.stop(), 0, 'clean unmount');
});
