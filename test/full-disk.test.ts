// Full disks, filled by another process, under a real node and mount.
// The mount's cache disk: writes through the mount fail with ENOSPC,
// nothing already written is lost or damaged, and everything works again
// once there is room. The node's disk: what was closed is retried until the
// node has room again, never set aside.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { MountProc, run, waitFor } from './helpers/mount-proc.js';
import { smallFs } from './helpers/small-fs.js';
import { fillUp } from '../scripts/soak/lib/small-fs.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('a full cache disk: writes fail with ENOSPC, lose nothing, and work again once there is room', async (t) => {
  const base = await tempDir(t);
  const small = await smallFs(t, '32m');
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  await mkdir(src);
  const content = randomBytes(800 << 10);
  await writeFile(join(src, 'f.bin'), content);
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', join(small, 'cache'), '--min-free', '0', '--deadline', '3s']);
  t.teardown(() => m.kill());
  const M = (p: string) => join(mnt, p);
  t.equal((await run('sha256sum', [M('f.bin')])).stdout.split(' ')[0], sha(content), 'read once: its chunks are in the cache');

  // Full, but for less room than the file: an edit in place must first copy
  // the whole file into its local dirty copy, and that copy ends part way.
  const hog = join(small, 'hog');
  const free = await fillUp(hog);
  await truncate(hog, (await stat(hog)).size - (400 << 10));
  const edit = await run('dd', [`of=${M('f.bin')}`, 'bs=1', 'seek=100', 'conv=notrunc', 'status=none'], { input: 'PATCH' });
  t.not(edit.code, 0, 'the edit fails');
  t.match(edit.stderr, /No space left on device/, 'with ENOSPC');
  t.same(await readFile(join(src, 'f.bin')), content, 'the node keeps the file as it was (no half-copied version is written back)');
  t.equal((await run('sha256sum', [M('f.bin')])).stdout.split(' ')[0], sha(content), 'and the mount shows it as it was');
  // What the node does needs no local room: the mount goes on from memory.
  t.equal((await run('mkdir', [M('made-while-full')])).code, 0, 'mkdir works on a full cache disk');
  t.ok((await stat(join(src, 'made-while-full'))).isDirectory());

  await free();
  const again = await run('dd', [`of=${M('f.bin')}`, 'bs=1', 'seek=100', 'conv=notrunc', 'status=none'], { input: 'PATCH' });
  t.equal(again.code, 0, `with room again, the same edit works ${again.stderr}`);
  const expected = Buffer.from(content);
  expected.write('PATCH', 100);
  t.same(await readFile(join(src, 'f.bin')), expected, 'on the node');
  t.equal((await run('sha256sum', [M('f.bin')])).stdout.split(' ')[0], sha(expected), 'and through the mount');
  t.equal(await m.stop(), 0, 'a clean unmount');
});

t.test("a full node disk: a file closed with asynchronous write-back waits for room on the node, and lands", async (t) => {
  const base = await tempDir(t);
  const small = await smallFs(t, '32m');
  const src = join(small, 'src');
  const mnt = join(base, 'mnt');
  const cache = join(base, 'cache');
  const runDir = join(base, 'run');
  await mkdir(src);
  const node = await NodeProc.start(['--root', src, '--state-dir', join(small, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const env = { GHOSTFS_RUN_DIR: runDir };
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--deadline', '3s', '--write-back', 'async'], env);
  t.teardown(() => m.kill());
  const status = () => m.status();

  const free = await fillUp(join(small, 'hog'));
  const w = await run('dd', [`of=${join(mnt, 'later.bin')}`, 'bs=64k', 'status=none'], { input: 'x'.repeat(256 << 10) });
  t.equal(w.code, 0, `close returns: the file is journaled on the mount ${w.stderr}`);
  await waitFor('the node refusing it for lack of room', async () => /ENOSPC/.test((await status()).pendingWrites[0]?.lastError ?? ''));
  t.equal((await status()).writeBack.failed, 0, 'nothing set aside');

  await free();
  await waitFor('the file on the node once it has room', async () => (await readFile(join(src, 'later.bin'), 'utf8')) === 'x'.repeat(256 << 10), 60_000);
  t.equal((await status()).writeBack.pending, 0, 'nothing pending');
  t.same((await readdir(join(cache, 'dirty'), { recursive: true })).filter((n) => String(n).endsWith('.failed')), [], 'no copy kept aside');
  t.equal(await m.stop(), 0, 'a clean unmount');
});

t.test('a full cache disk: a write after the close of a dup (its copy handed over) fails with ENOSPC and leaves no partial copy behind', async (t) => {
  const base = await tempDir(t);
  const small = await smallFs(t, '32m');
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  await mkdir(src);
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const cache = join(small, 'cache');
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--min-free', '0', '--deadline', '3s']);
  t.teardown(() => m.kill());
  // Writes 4 MiB, closes one of two descriptors (the close commits and hands the copy over), then,
  // told to, writes through the other: that write needs a copy of its own.
  const script = [
    'import os, sys',
    'fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)',
    'os.write(fd, os.urandom(4 << 20))',
    'fd2 = os.dup(fd)',
    'os.close(fd)',
    'print("closed", flush=True)',
    'sys.stdin.readline()',
    'try:',
    '    os.write(fd2, b"more")',
    '    print("written", flush=True)',
    'except OSError as e:',
    '    print(e.strerror, flush=True)',
    'os.close(fd2)',
  ].join('\n');
  const writer = spawn('python3', ['-c', script, join(mnt, 'f.bin')], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  writer.stdout.on('data', (b: Buffer) => lines.push(...b.toString().split('\n').filter(Boolean)));
  const exited = new Promise((resolve) => writer.on('exit', resolve));
  await waitFor('the first close', async () => lines.includes('closed'), 20_000);
  const dirty = join(cache, 'dirty');
  const copies = async () => (await readdir(dirty, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name).sort();
  const before = await copies();
  const free = await fillUp(join(small, 'hog'));
  writer.stdin.end('go\n');
  await exited;
  t.equal(lines[1], 'No space left on device', 'the write fails with ENOSPC');
  // (The copy the first close handed over may be gone by now: its commit landed.)
  t.same((await copies()).filter((name) => !before.includes(name)), [], 'no partial copy is left in the cache dir');
  await free();
  t.equal((await stat(join(src, 'f.bin'))).size, 4 << 20, 'the node has what the first close committed');
  t.equal(await m.stop(), 0, 'a clean unmount');
});
