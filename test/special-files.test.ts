// What POSIX conformance suites (pjdfstest) probe beyond plain files, end to
// end through a real mount driven by child processes, checked on the node's
// own disk: fifos, unix sockets and device nodes; modes asked for under a
// umask of 0 (0777 directories, 0000 files); names longer than NAME_MAX;
// link counts of hard links as renames and links change them.
import t from 'tap';
import { lstat, mkdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { MountProc, run, sh, waitFor } from './helpers/mount-proc.js';

process.env.GHOSTFS_DRIVER = 'native';

/** st_rdev of a device number as glibc makes it (small numbers). */
const makedev = (major: number, minor: number): number => (major << 8) | minor;

async function rig(t: { teardown(fn: () => unknown): void }, nodeArgs: string[] = [], mountArgs: string[] = []) {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  await mkdir(src);
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), ...nodeArgs]);
  t.teardown(() => node.stop('SIGKILL'));
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', join(base, 'cache'), ...mountArgs]);
  t.teardown(() => m.kill());
  return { M: (p: string) => join(mnt, p), S: (p: string) => join(src, p), mnt, m };
}

/** The link count the mount shows for a name (as `stat` asks the kernel: its cache counts). */
const nlinkShown = async (path: string): Promise<number> => Number((await run('stat', ['-c', '%h', path])).stdout.trim());

t.test('special files and what conformance suites probe', async (t) => {
  const { M, S, mnt } = await rig(t);

  await t.test('mkfifo makes a fifo on the node with the mode asked for, and processes here meet through it', async (t) => {
    t.equal((await sh(`umask 0 && mkfifo -m 0640 '${M('pipe')}'`)).code, 0);
    const st = await lstat(S('pipe'));
    t.ok(st.isFIFO(), 'a fifo on the node');
    t.equal(st.mode & 0o7777, 0o640, 'its mode as asked');
    t.ok((await lstat(M('pipe'))).isFIFO(), 'a fifo on the mount');
    const r = await sh(`cat pipe > got & echo through > pipe; wait; cat got`, { cwd: mnt });
    t.equal(r.stdout, 'through\n', 'a writer and a reader meet through it');
    // mkfifo(1) without -m makes no chmod after: 0666 reaches the node with the mknod alone.
    t.equal((await sh(`umask 0 && mkfifo '${M('open-pipe')}'`)).code, 0);
    t.equal((await lstat(S('open-pipe'))).mode & 0o7777, 0o666, 'under umask 0 a fifo is 0666 on the node (not its umask 022 taken off)');
  });

  await t.test('bind() of a unix socket makes a socket on the node, and a client here connects to it', async (t) => {
    const py = `
import socket
s = socket.socket(socket.AF_UNIX); s.bind('sock'); s.listen(1)
c = socket.socket(socket.AF_UNIX); c.connect('sock'); a, _ = s.accept()
c.send(b'hello'); print(a.recv(5).decode())`;
    const r = await run('python3', ['-c', py], { cwd: mnt });
    t.equal(r.stdout.trim(), 'hello', r.stderr);
    t.ok((await lstat(S('sock'))).isSocket(), 'a socket on the node');
    // A socket cannot be opened: the node changes its mode through a path-only descriptor.
    t.equal((await run('chmod', ['600', M('sock')])).code, 0);
    t.equal((await lstat(S('sock'))).mode & 0o7777, 0o600, 'chmod of a socket on the node');
  });

  await t.test('a device node is refused by default (EPERM), and nothing is made', async (t) => {
    const r = await run('mknod', [M('dev'), 'c', '1', '3']);
    t.not(r.code, 0);
    t.match(r.stderr, /Operation not permitted/);
    await t.rejects(lstat(S('dev')), { code: 'ENOENT' });
  });

  await t.test("a fifo's mode, owner, links and renames reach the node, and every name shows its link count at once", async (t) => {
    t.equal((await run('chmod', ['600', M('pipe')])).code, 0);
    if (process.getuid?.() === 0) {
      t.equal((await run('chown', ['65534:65533', M('pipe')])).code, 0);
      t.same([(await lstat(S('pipe'))).uid, (await lstat(S('pipe'))).gid], [65534, 65533], 'chown on the node');
    }
    const st = await lstat(S('pipe'));
    t.equal(st.mode & 0o7777, 0o600, 'chmod on the node');
    t.equal((await run('ln', [M('pipe'), M('pipe2')])).code, 0);
    // The kernel holds each name as a node of its own: the one linked from must not keep showing 1.
    t.equal(await nlinkShown(M('pipe')), 2, 'the name linked from shows 2 links at once');
    t.equal(await nlinkShown(M('pipe2')), 2, 'the new name shows 2');
    t.equal((await lstat(S('pipe2'))).ino, st.ino, 'the node holds one fifo under two names');
    t.equal((await run('mv', [M('pipe2'), M('pipe3')])).code, 0);
    t.ok((await lstat(S('pipe3'))).isFIFO(), 'renamed on the node');
    t.equal((await run('rm', [M('pipe3')])).code, 0);
    await waitFor('the remaining name to show one link', async () => (await nlinkShown(M('pipe'))) === 1);
    t.equal((await lstat(S('pipe'))).nlink, 1);
  });

  await t.test('renaming a file over one of its other names (a hard link) leaves both, as rename(2) does', async (t) => {
    await sh(`echo same > '${M('h1')}' && ln '${M('h1')}' '${M('h2')}'`);
    const r = await run('python3', ['-c', "import os; os.rename('h1', 'h2')"], { cwd: mnt });
    t.equal(r.code, 0, r.stderr);
    t.ok(await lstat(S('h1')), 'h1 is still on the node');
    t.ok(await lstat(S('h2')), 'h2 too');
    t.equal((await run('cat', [M('h1')])).stdout, 'same\n', 'and the mount still shows h1');
    t.equal(await nlinkShown(M('h2')), 2);
  });

  await t.test('a rename over one name of a file with two names: the other shows one link less', async (t) => {
    await sh(`echo old > '${M('dst')}' && ln '${M('dst')}' '${M('dstlink')}' && echo new > '${M('src')}'`);
    t.equal(await nlinkShown(M('dstlink')), 2);
    t.equal((await run('mv', [M('src'), M('dst')])).code, 0);
    t.equal((await lstat(S('dstlink'))).nlink, 1, 'one link on the node');
    await waitFor('the other name to show one link', async () => (await nlinkShown(M('dstlink'))) === 1);
    t.equal((await run('cat', [M('dstlink')])).stdout, 'old\n', 'and keeps its content');
  });

  await t.test('modes asked for under umask 0 are what the node gives: a 0777 directory, a 0000 file', async (t) => {
    // mkdir(1) without -m makes no chmod after: the mode reaches the node with the mkdir alone.
    t.equal((await sh(`umask 0 && mkdir '${M('open-dir')}'`)).code, 0);
    t.equal((await stat(S('open-dir'))).mode & 0o7777, 0o777, 'the directory is 0777 on the node (not its umask 022 taken off)');
    t.equal((await run('stat', ['-c', '%a', M('open-dir')])).stdout.trim(), '777', 'and on the mount');
    // A directory in a set-group-ID directory inherits the bit, as mkdir(2) gives it.
    await sh(`mkdir -m 2775 '${M('sgid')}' && umask 0 && mkdir '${M('sgid/child')}'`);
    t.equal((await stat(S('sgid/child'))).mode & 0o7777, 0o2777, 'set-group-ID inherited, mode as asked');
    // open(O_CREAT, 0000): the file is made with no permission bits at all.
    const r = await run('python3', ['-c', "import os; fd = os.open('nobody-reads', os.O_CREAT | os.O_WRONLY, 0); os.write(fd, b'x'); os.close(fd)"], { cwd: mnt });
    t.equal(r.code, 0, r.stderr);
    t.equal((await stat(S('nobody-reads'))).mode & 0o7777, 0, 'mode 0000 on the node (not 0644)');
    t.equal((await run('stat', ['-c', '%a', M('nobody-reads')])).stdout.trim(), '0', 'and on the mount');
  });

  await t.test('a name longer than 255 bytes gets ENAMETOOLONG; a symlink may point at one', async (t) => {
    const long = 'n'.repeat(256);
    const looked = await run('stat', [M(long)]);
    t.match(looked.stderr, /File name too long/, 'a lookup says ENAMETOOLONG, not ENOENT');
    const made = await run('touch', [M(long)]);
    t.match(made.stderr, /File name too long/, 'so does a create');
    t.equal((await run('touch', [M('n'.repeat(255))])).code, 0, '255 bytes is a name');
    t.equal((await run('ln', ['-s', long, M('to-long')])).code, 0, 'a symlink target is not a name');
    t.equal(await readlink(S('to-long')), long);
  });
});

const notRoot = process.getuid?.() !== 0 && 'making a device node needs root (CAP_MKNOD), on the mount as on the node';

t.test('a node served with --allow-devices makes the device nodes asked for, with their numbers', { skip: notRoot }, async (t) => {
  const { M, S } = await rig(t, ['--allow-devices']);
  t.equal((await run('mknod', [M('chr'), 'c', '1', '3'])).code, 0);
  t.equal((await run('mknod', ['-m', '0600', M('blk'), 'b', '7', '200'])).code, 0);
  const chr = await lstat(S('chr'));
  const blk = await lstat(S('blk'));
  t.ok(chr.isCharacterDevice(), 'a character device on the node');
  t.equal(chr.rdev, makedev(1, 3), 'numbered 1, 3');
  t.ok(blk.isBlockDevice(), 'a block device on the node');
  t.equal(blk.rdev, makedev(7, 200), 'numbered 7, 200');
  t.equal(blk.mode & 0o7777, 0o600);
  t.equal((await run('stat', ['-c', '%t,%T', M('chr')])).stdout.trim(), '1,3', 'the mount shows its numbers');
});

t.test('the fuse-native driver makes fifos and device nodes too, and refuses names over 255 bytes', { skip: notRoot }, async (t) => {
  const { M, S } = await rig(t, ['--allow-devices'], ['--driver', 'fuse-native']);
  t.equal((await sh(`umask 0 && mkfifo -m 0620 '${M('pipe')}'`)).code, 0);
  const st = await lstat(S('pipe'));
  t.ok(st.isFIFO(), 'a fifo on the node');
  t.equal(st.mode & 0o7777, 0o620);
  t.equal((await run('mknod', [M('chr'), 'c', '1', '3'])).code, 0);
  t.equal((await lstat(S('chr'))).rdev, makedev(1, 3), 'a character device numbered 1, 3 on the node');
  t.match((await run('stat', [M('n'.repeat(256))])).stderr, /File name too long/, 'a name longer than 255 bytes: ENAMETOOLONG here too');
});
