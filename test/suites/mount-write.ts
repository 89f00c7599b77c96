// The mount's write side end to end: POSIX changes through a real FUSE
// mount, driven by child processes, checked on the node's own disk.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdir, open, readFile, rm, writeFile, stat, lstat, readdir, readlink, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { NodeProc, tempDir } from '../helpers/node-proc.js';
import { MountProc, run, sh, waitFor } from '../helpers/mount-proc.js';
import type { WChangeEventOut } from '../../src/wire/types.js';
import { isFuseNative } from '../helpers/driver.js';
import { RelayProxy } from '../helpers/relay-proxy.js';
import { BIN } from '../helpers/logged-proc.js';
import { Holder } from '../helpers/holder.js';
import { DIR_STABLE_PY, type DirStable } from '../helpers/dir-stable.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** Prints SEEK_DATA and SEEK_HOLE from 0, SEEK_HOLE from argv[2], and SEEK_DATA from 4 MiB past it (or the errno name). */
const SEEKS = `
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
at = int(sys.argv[2])
def seek(off, how):
    try: return str(os.lseek(fd, off, how))
    except OSError as e: return errno.errorcode[e.errno]
print(seek(0, os.SEEK_DATA), seek(0, os.SEEK_HOLE), seek(at, os.SEEK_HOLE), seek(at + 4 * 2**20, os.SEEK_DATA))
`;
const FUSE_NATIVE_FALLOCATE = 'fuse-native has no fallocate operation (the kernel answers EOPNOTSUPP); the native driver has';
const FUSE_NATIVE_O_TRUNC = 'fuse-native does not ask the kernel for atomic O_TRUNC: the kernel truncates with a setattr before the open, and that reaches the node at once; the native driver gets O_TRUNC with the open';
const FUSE_NATIVE_UTIMENS = 'fuse-native passes the atime in place of the mtime (its C code reads tv[0] twice); the native driver fixes this';

t.test('mount: write side', async (t) => {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  const cache = join(base, 'cache');
  await mkdir(src);
  await writeFile(join(src, 'existing.txt'), 'line one\nline two\n');
  let node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), '--metrics', '127.0.0.1:0']);
  t.teardown(() => node.stop('SIGKILL'));
  let m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--deadline', '3s']);
  t.teardown(() => m.kill());
  const M = (p: string) => join(mnt, p);
  const S = (p: string) => join(src, p);

  await t.test('create, write, append, truncate, overwrite in place', async (t) => {
    t.equal((await sh(`echo hello > '${M('new.txt')}'`)).code, 0);
    t.equal(await readFile(S('new.txt'), 'utf8'), 'hello\n', 'on the node once close returned');
    await sh(`echo more >> '${M('new.txt')}'`);
    t.equal(await readFile(S('new.txt'), 'utf8'), 'hello\nmore\n', 'O_APPEND');
    await sh(`echo fresh > '${M('existing.txt')}'`);
    t.equal(await readFile(S('existing.txt'), 'utf8'), 'fresh\n', 'O_TRUNC');
    const excl = await sh(`set -o noclobber; echo x > '${M('new.txt')}'`);
    t.match(excl.stderr, /cannot overwrite existing file|File exists/, 'O_EXCL on an existing file fails');
    await run('dd', [`of=${M('new.txt')}`, 'bs=1', 'seek=2', 'conv=notrunc', 'status=none'], { input: 'XY' });
    t.equal(await readFile(S('new.txt'), 'utf8'), 'heXYo\nmore\n', 'write at an offset keeps the rest');
    await run('truncate', ['-s', '3', M('new.txt')]);
    t.equal(await readFile(S('new.txt'), 'utf8'), 'heX', 'truncate');
    t.equal((await run('cat', [M('new.txt')])).stdout, 'heX', 'the mount reads what it wrote');
    // touch sets the new file's times through its descriptor: a change, committed by the close. (A file made
    // and closed with nothing done to it lands at its release: see the `cmd > file` tests below.)
    t.equal((await run('touch', [M('empty.txt')])).code, 0);
    t.equal((await stat(S('empty.txt'))).size, 0, 'an empty new file exists on the node once touch returns');
  });

  await t.test('processes appending to one file at once: every line lands, and no conflict copy', async (t) => {
    // `echo >> log` from two shells: a close hands over a version made from the one handed over
    // before it (often at the last release of the other shell, still on its way to the node).
    // Whether a close comes while that is on its way is up to timing: a few rounds.
    const [procs, each] = [2, 200];
    const want = Array.from({ length: procs * each }, (_, i) => `p${Math.floor(i / each) + 1}-${(i % each) + 1}`).sort();
    const lines = async (file: string) => (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean).sort();
    for (let round = 1; round <= 4; round++) {
      const log = `appended${round}.log`;
      const r = await sh(`cd '${mnt}' && for p in $(seq ${procs}); do (for i in $(seq ${each}); do echo "p$p-$i" >> ${log} || exit 1; done) & done; wait`);
      t.equal(r.code, 0, `${log}: every append succeeds ${r.stderr}`);
      t.same(await lines(M(log)), want, `${log}: the mount shows every line`);
      // The last version may come from a release, which the kernel sends after close() returned.
      await waitFor('every line on the node', async () => (await lines(S(log))).length === want.length).catch(() => undefined);
      t.same(await lines(S(log)), want, `${log}: the node has every line`);
      t.same((await readdir(src)).filter((n) => n.startsWith(`appended${round}.conflict-`)), [], `${log}: no conflict copy`);
    }
  });

  await t.test('two mounts appending to one file at once: every line appended is kept (the node file or a conflict copy), no zeros', async (t) => {
    // Each mount's version is based on what it last had: the other mount's
    // commits make conflict copies. A writer's open finds the version its
    // mount knew replaced on the node (its chunks gone there), and the
    // kernel gives appends the size it held.
    const mnt2 = join(base, 'mnt2');
    const m2 = await MountProc.start(node.endpoint, mnt2, ['--cache-dir', join(base, 'cache2'), '--deadline', '3s']);
    t.teardown(() => m2.kill());
    const each = 100;
    // Made first, and seen by both: a create racing the other mount's is another matter (write-back-race tests it; fuse-native's create gets no flags and says EEXIST).
    await writeFile(S('both.log'), '');
    await waitFor('both mounts to show it', async () => (await sh(`test -f '${M('both.log')}' && test -f '${join(mnt2, 'both.log')}'`)).code === 0);
    const loop = (dir: string, tag: string) => `(for i in $(seq ${each}); do echo "${tag}$i" >> '${join(dir, 'both.log')}' || echo "failed ${tag}$i" >&2; done)`;
    const seenBefore = m.lines.length;
    const r = await sh(`${loop(mnt, 'a')} & ${loop(mnt2, 'b')}; wait`);
    const failed = new Set([...r.stderr.matchAll(/^failed (\S+)$/gm)].map((x) => x[1]!));
    // What the mounts warned of, to find out why should an append fail.
    const warned = [m, m2].flatMap((p) => p.lines.slice(p === m ? seenBefore : 0).filter((l) => l.level >= 40 && !String(l.msg).startsWith('write-back conflict')).map((l) => JSON.stringify(l)));
    t.same([...failed], [], 'no append failed', failed.size ? { warned } : {});
    t.equal(await m2.stop(), 0, 'the second mount unmounts cleanly (what it had closed is on the node)');
    const bodies = async () => Promise.all((await readdir(src)).filter((n) => n === 'both.log' || n.startsWith('both.conflict-')).map((n) => readFile(S(n))));
    const missing = async () => {
      const found = new Set((await bodies()).flatMap((b) => b.toString().split('\n')));
      // Every append that succeeded: an error told its writer it did not happen.
      return ['a', 'b'].flatMap((tag) => Array.from({ length: each }, (_, i) => `${tag}${i + 1}`)).filter((l) => !found.has(l) && !failed.has(l));
    };
    // The last commits of this mount may come from releases, after the shell is done.
    await waitFor('every line on the node', async () => (await missing()).length === 0).catch(() => undefined);
    t.same(await missing(), [], 'every line appended is in the node file or a conflict copy');
    t.same((await bodies()).filter((b) => b.includes(0)).length, 0, 'no file holds zeros');
  });

  await t.test('`cmd > file` over a file: the node holds the old content until cmd has written, never an empty file', async (t) => {
    await writeFile(S('redirected.txt'), 'old content\n');
    await waitFor('the mount to show it', async () => (await run('cat', [M('redirected.txt')])).stdout === 'old content\n');
    // As a shell does: open with O_TRUNC, dup, close the first descriptor (a flush), then write.
    const during = join(base, 'during.txt');
    const r = await sh(`exec 3>'${M('redirected.txt')}' && exec 4>&3 && exec 3>&- && cat '${S('redirected.txt')}' > '${during}' && echo 'new content' >&4 && exec 4>&-`);
    t.equal(r.code, 0, `the commands succeed ${r.stderr}`);
    const known = isFuseNative ? { todo: FUSE_NATIVE_O_TRUNC } : {};
    t.equal(await readFile(during, 'utf8'), 'old content\n', 'after the first close, the node still holds the old content', known);
    t.equal(await readFile(S('redirected.txt'), 'utf8'), 'new content\n', 'the last close committed the new content');
    // Truncated, and closed with nothing written: committed once its last descriptor is gone.
    t.equal((await sh(`: > '${M('redirected.txt')}'`)).code, 0);
    await waitFor('the truncation on the node', async () => (await stat(S('redirected.txt'))).size === 0).catch(() => undefined);
    t.equal((await stat(S('redirected.txt'))).size, 0, 'a file truncated and closed is empty on the node');
  });

  await t.test('`cmd > file` making a file: one commit, of what cmd wrote; an empty file made and closed lands too', async (t) => {
    t.equal((await run('mkdir', [M('made-by-redirect')])).code, 0);
    const committed = async (): Promise<number> => ((await m.status()).writeBack as { committed: number }).committed;
    const before = await committed();
    // Each `echo > f` opens, dup2()s and closes the first descriptor before echo writes: that close made an empty version too.
    const r = await sh(`for i in $(seq 1 10); do echo $i > '${M('made-by-redirect')}'/f$i; done`);
    t.equal(r.code, 0, r.stderr);
    t.equal(await committed(), before + 10, 'ten files, ten commits');
    t.same(await Promise.all(Array.from({ length: 10 }, (_, i) => readFile(S(`made-by-redirect/f${i + 1}`), 'utf8'))), Array.from({ length: 10 }, (_, i) => `${i + 1}\n`), 'each with what echo wrote');
    // Made and closed with nothing written: committed once its last descriptor is gone (its release).
    t.equal((await sh(`: > '${M('made-by-redirect/empty')}'`)).code, 0);
    await waitFor('the empty file on the node', async () => existsSync(S('made-by-redirect/empty'))).catch(() => undefined);
    t.equal((await stat(S('made-by-redirect/empty')).catch(() => undefined))?.size, 0, 'an empty file made and closed is on the node');
  });

  await t.test('a name longer than 255 bytes is refused at once, and nothing is left of it', async (t) => {
    const long = 'n'.repeat(256);
    for (const [what, cmd] of [
      ['create', `exec 3>'${M(long)}' && echo opened`],
      ['mkdir', `mkdir '${M(long)}'`],
      ['symlink', `ln -s target '${M(long)}'`],
      ['rename', `echo x > '${M('short-name')}' && mv '${M('short-name')}' '${M(long)}'`],
    ]) {
      const r = await sh(cmd!);
      t.match(r.stderr, /File name too long/, `${what}: ENAMETOOLONG`);
      t.notMatch(r.stdout, /opened/, `${what}: refused by the call itself, not later at close`);
    }
    t.same((await readdir(mnt)).filter((n) => n.length > 255), [], 'the mount shows no such name');
    t.same((await readdir(src)).filter((n) => n.length > 255), [], 'the node has none');
    t.equal(await readFile(S('short-name'), 'utf8'), 'x\n', 'the file a rename could not move keeps its name');
  });

  await t.test('a reader holding a file sees an edit made beside it, and so does every later reader', async (t) => {
    // Sizes below and above what a new file keeps in memory; edits that cover parts of pages.
    for (const size of [40_000, 3 << 20]) {
      let content = randomBytes(size);
      await writeFile(S('held.bin'), content); // on the node (this process never touches the mount)
      await waitFor('the node\'s file to show', async () => (await sh(`sha256sum < '${M('held.bin')}'`)).stdout.startsWith(sha(content)));
      const { h, first } = await Holder.open(M('held.bin'));
      t.equal(first, `${sha(content)} ${size}`, `${size} bytes: the reader reads the file`);
      const patch = Buffer.from('an edit beside a reader that holds the file');
      const at = 5000;
      t.equal((await run('dd', [`of=${M('held.bin')}`, 'bs=1', `seek=${at}`, 'conv=notrunc', 'status=none'], { input: patch.toString() })).code, 0, 'another process edits it in place');
      content = Buffer.concat([content.subarray(0, at), patch, content.subarray(at + patch.length)]);
      t.equal(sha(await readFile(S('held.bin'))), sha(content), 'the node has the edit');
      t.equal(await h.read(), `${sha(content)} ${size}`, 'the reader sees it through the descriptor it held all along');
      t.equal((await sh(`sha256sum < '${M('held.bin')}'`)).stdout.split(' ')[0], sha(content), 'so does a new reader');
      await h.close();
      t.equal((await sh(`sha256sum < '${M('held.bin')}'`)).stdout.split(' ')[0], sha(content), 'and one after the reader closed');
    }
  });

  await t.test('a file created here and removed while a reader still holds it is gone from the node too', async (t) => {
    // The reader opened it while its creator still wrote it: the mount's copy stays in use after the commit.
    const w = await sh(`exec 5>'${M('held-new')}' 3<'${M('held-new')}' && echo one >&5 && exec 5>&- && test -f '${S('held-new')}' && rm '${M('held-new')}'; r=$?; exec 3<&-; exit $r`);
    t.equal(w.code, 0, w.stderr);
    await t.rejects(stat(S('held-new')), 'removed on the node');
  });

  await t.test('new small files are kept in memory until they must be on disk', async (t) => {
    const dirtyCopies = async () => (await readdir(join(cache, 'dirty', 'default')).catch(() => [] as string[])).filter((n) => !n.endsWith('.failed'));
    const before = await dirtyCopies();
    // One writer process: each step's content is checked on the node after its close.
    const steps = String.raw`
const fs = require('fs'); const [dir, step] = process.argv.slice(1); const p = (n) => dir + '/' + n;
const block = (i, n = 4096) => Buffer.alloc(n, 65 + (i % 26));
if (step === 'grow') {
  // 80 small writes: past what a file keeps in memory (256 KiB), then a write into its middle and a longer size.
  const fd = fs.openSync(p('grown.bin'), 'w');
  for (let i = 0; i < 80; i++) fs.writeSync(fd, block(i), 0, 4096, i * 4096);
  fs.writeSync(fd, Buffer.from('MIDDLE'), 0, 6, 100000);
  fs.ftruncateSync(fd, 80 * 4096 + 10);
  fs.closeSync(fd);
} else if (step === 'fsync') {
  const fd = fs.openSync(p('synced.txt'), 'w');
  fs.writeSync(fd, 'before fsync\n');
  fs.fsyncSync(fd);
  fs.writeSync(fd, 'after fsync\n');
  fs.closeSync(fd);
} else if (step === 'truncate') {
  // An existing file opened with O_TRUNC starts empty in memory: shrink, then a write past the end leaves zeros between.
  const fd = fs.openSync(p('existing-small.txt'), 'w');
  fs.writeSync(fd, 'abcdef');
  fs.ftruncateSync(fd, 3);
  fs.writeSync(fd, 'Z', 7);
  fs.writeSync(fd, 'Y', 9);
  fs.ftruncateSync(fd, 8);
  fs.closeSync(fd);
}`;
    await writeFile(S('existing-small.txt'), 'old content that is longer\n');
    await waitFor('the node file to show in the mount', async () => (await run('cat', [M('existing-small.txt')])).stdout === 'old content that is longer\n');
    const held = spawn('bash', ['-c', `exec 3>'${M('held.txt')}'; echo 'held open' >&3; read line; exec 3>&-`], { stdio: ['pipe', 'ignore', 'ignore'] });
    const heldExit = new Promise((r) => held.on('exit', r));
    await waitFor('the open file to hold its content in memory', async () => ((await m.status()).openFilesInMemoryBytes ?? 0) > 0);
    t.same(await dirtyCopies(), before, 'a new file open for writing has no dirty copy');
    held.stdin.end('\n');
    t.equal(await heldExit, 0);
    t.equal(await readFile(S('held.txt'), 'utf8'), 'held open\n', 'its close wrote it back from memory');
    const chunksBefore = (await m.status()).cache.chunks as number;
    for (const step of ['grow', 'fsync', 'truncate']) {
      const r = await run(process.execPath, ['-e', steps, mnt, step]);
      t.equal(r.code, 0, `${step}: ${r.stderr}`);
    }
    // Closing one of two descriptors of one open file writes it back; the
    // later write goes to a copy of its own, written back at the last close.
    const dup = await sh(`exec 3>'${M('dup.txt')}'; echo 'first version' >&3; exec 4>&3; exec 3>&-; test "$(cat '${S('dup.txt')}')" = 'first version' || exit 9; printf SECOND >&4; exec 4>&-`);
    t.equal(dup.code, 0, `the first close wrote the file back: ${dup.stderr}`);
    const grown = Buffer.alloc(80 * 4096 + 10);
    for (let i = 0; i < 80; i++) grown.fill(65 + (i % 26), i * 4096, (i + 1) * 4096);
    grown.write('MIDDLE', 100000);
    t.ok((await readFile(S('grown.bin'))).equals(grown), 'a file that outgrew memory: every byte on the node');
    t.equal(await readFile(S('dup.txt'), 'utf8'), 'first version\nSECOND', 'a write after a close, through another descriptor');
    t.equal(await readFile(S('synced.txt'), 'utf8'), 'before fsync\nafter fsync\n', 'a file fsynced while open');
    t.same(await readFile(S('existing-small.txt')), Buffer.from('abc\0\0\0\0Z'), 'O_TRUNC, shrink, writes past the end, shrink: zeros in the holes, no stale bytes');
    // The committed content moves into the chunk cache just after close() returns.
    await waitFor('the last dirty copy to go', async () => (await dirtyCopies()).length === before.length).catch(() => undefined);
    t.same(await dirtyCopies(), before, 'no dirty copy is left behind');
    // Content committed from memory is cached too (dup.txt twice, existing-small.txt; the others went to disk).
    await waitFor('the committed chunks in the cache', async () => ((await m.status()).cache.chunks as number) >= chunksBefore + 3).catch(() => undefined);
    const chunks = (await m.status()).cache.chunks as number;
    t.ok(chunks >= chunksBefore + 3, `the cache keeps the committed chunks (${chunksBefore} -> ${chunks})`);
    t.equal((await m.status()).openFilesInMemoryBytes, 0, 'nothing held in memory once the files are closed');
  });

  await t.test("a directory's times are current once a close returns, and stay: tar archiving it at once does not see it change", async (t) => {
    const r = await run('python3', ['-c', DIR_STABLE_PY, M('stable'), '0.5']);
    t.equal(r.code, 0, r.stderr);
    const seen = JSON.parse(r.stdout) as DirStable;
    const cached = isFuseNative ? { todo: 'fuse-native cannot invalidate the kernel\'s cache: it shows the times it cached before the writes' } : {};
    t.equal(seen.tar, 0, `tar -c right after the writes: ${seen.tarErr}`);
    t.same(seen.after, seen.before, "the directory's mtime and ctime did not move after the last close");
    t.ok(BigInt(seen.before[0]) > BigInt(seen.made[0]), `the writes moved its mtime (${seen.made[0]} → ${seen.before[0]})`, cached);
    t.equal((await stat(S('stable'), { bigint: true })).mtimeNs.toString(), seen.before[0], "they are the node's", cached);
  });

  await t.test('directories, renames, links, modes', async (t) => {
    t.equal((await run('mkdir', ['-p', M('d/e/f')])).code, 0);
    t.ok((await stat(S('d/e/f'))).isDirectory(), 'mkdir -p');
    await sh(`echo in-f > '${M('d/e/f/file')}'`);
    const notEmpty = await run('rmdir', [M('d/e/f')]);
    t.match(notEmpty.stderr, /Directory not empty/, 'rmdir of a non-empty directory: ENOTEMPTY');
    t.equal((await run('mv', [M('d/e/f/file'), M('d/moved')])).code, 0);
    t.equal(await readFile(S('d/moved'), 'utf8'), 'in-f\n', 'rename a file');
    t.equal((await run('mv', [M('d/e'), M('d/e2')])).code, 0);
    t.ok((await stat(S('d/e2/f'))).isDirectory(), 'rename a directory with its contents');
    t.equal((await run('rmdir', [M('d/e2/f')])).code, 0);
    await run('ln', ['-s', 'moved', M('d/sym')]);
    t.equal(await readlink(S('d/sym')), 'moved', 'symlink');
    t.equal((await run('cat', [M('d/sym')])).stdout, 'in-f\n', 'read through the symlink');
    await run('ln', [M('d/moved'), M('d/hard')]);
    t.equal((await stat(S('d/hard'))).ino, (await stat(S('d/moved'))).ino, 'hard link on the node');
    t.equal((await run('stat', ['-c', '%h', M('d/hard')])).stdout.trim(), '2', 'link count through the mount');
    // Written through one name, the file changes under the other too (as written in place on a disk).
    const through = await sh(`mkdir '${M('d/other')}' && ln '${M('d/moved')}' '${M('d/other/third')}' && echo more >> '${M('d/hard')}' && cat '${M('d/moved')}' '${M('d/other/third')}'`);
    // (fuse-native cannot tell the kernel that a name's file changed: it shows what it cached until its attributes time out.)
    const stale = isFuseNative ? { todo: 'fuse-native cannot invalidate the kernel\'s cache: another name shows its cached content for a while' } : {};
    t.equal(through.stdout, 'in-f\nmore\n'.repeat(2), `the other names show what was written through one, at once: ${through.stderr}`, stale);
    const names = await Promise.all(['d/moved', 'd/hard', 'd/other/third'].map((p) => stat(S(p))));
    t.ok(names.every((st) => st.ino === names[0]!.ino && st.nlink === 3), `the node's three names are still one file (inodes ${names.map((st) => st.ino).join(', ')})`);
    t.equal(await readFile(S('d/moved'), 'utf8'), 'in-f\nmore\n', 'with the new content');
    t.equal((await run('rm', [M('d/other/third')])).code, 0);
    t.equal((await run('rmdir', [M('d/other')])).code, 0);
    await run('chmod', ['750', M('d/moved')]);
    t.equal((await stat(S('d/moved'))).mode & 0o777, 0o750, 'chmod');
    await sh(`printf '#!/bin/sh\\necho ran\\n' > '${M('d/tool.sh')}' && chmod +x '${M('d/tool.sh')}'`);
    t.equal((await run(M('d/tool.sh'), [])).stdout, 'ran\n', 'an executable written through the mount runs');
    t.equal((await run('chmod', ['u+s,g+s', M('d/tool.sh')])).code, 0);
    t.equal((await stat(S('d/tool.sh'))).mode & 0o7777, 0o755, 'chmod u+s,g+s: the node drops the set-id bits (serve --allow-setid keeps them)');
    t.equal((await run('stat', ['-c', '%a', M('d/tool.sh')])).stdout.trim(), '755', 'and the mount shows the mode the file got');
    t.equal((await run('rm', [M('d/hard')])).code, 0);
    await t.rejects(lstat(S('d/hard')), 'unlink');
    const rmDir = await run('rm', [M('d')]);
    t.match(rmDir.stderr, /Is a directory/);
  });

  await t.test('a directory renamed with a tree in it: the mount shows the tree under its new name only, as the node has it', async (t) => {
    // Listed through the mount first, so the mount knows the tree under its old name: it moves what
    // it knows to the new name itself (the node's reply names only the two names and the directory).
    t.equal((await sh(`mkdir -p '${M('tree/a/b')}' && echo one > '${M('tree/a/b/one')}' && echo two > '${M('tree/two')}' && ln -s a/b/one '${M('tree/link')}'`)).code, 0);
    const listing = async (dir: string): Promise<string> => {
      const r = await run('find', ['.', '-type', 'f', '-printf', 'f %p %s\n', '-o', '-printf', '%y %p\n'], { cwd: dir });
      t.equal(r.code, 0, r.stderr);
      return r.stdout.split('\n').filter((l) => l && l !== 'd .').sort().join('\n');
    };
    const before = await listing(M('tree'));
    t.match(before, /f \.\/a\/b\/one 4/, 'the tree through the mount');
    let name = 'tree';
    for (const next of ['tree2', 'tree3']) {
      t.equal((await run('mv', [M(name), M(next)])).code, 0, `mv ${name} ${next}`);
      t.equal(await listing(M(next)), before, `${next}: the same tree through the mount`);
      t.equal(await listing(S(next)), before, `${next}: the same tree on the node`);
      t.equal((await run('cat', [M(`${next}/link`)])).stdout, 'one\n', `${next}: read through the moved symlink`);
      t.not((await run('test', ['-e', M(name)])).code, 0, `${name}: gone through the mount`);
      name = next;
    }
    // Right after a rename, the kernel asks for what it holds of the tree under the new name: the
    // mount must know it there already (it used to forget it until the node's feed told it again).
    const race = `import os, sys
fails = []
a, b = sys.argv[1], sys.argv[2]
for i in range(50):
    for x, y in ((a, b), (b, a)):
        os.rename(x, y)
        try:
            assert os.readlink(os.path.join(y, 'link')) == 'a/b/one'
            assert open(os.path.join(y, 'a/b/one')).read() == 'one\\n'
            os.stat(os.path.join(y, 'two'))
        except (OSError, AssertionError) as e:
            fails.append(repr(e))
print(len(fails), fails[:3])`;
    const r = await run('python3', ['-c', race, M(name), M('tree4')]);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout.trim().split(' ')[0], '0', `100 renames, each followed at once by reads under the new name: failures: ${r.stdout.trim()}`);
    t.equal(await listing(S(name)), before, 'the node has the tree where it started');
    t.equal((await run('rm', ['-r', M(name)])).code, 0);
    t.notOk(existsSync(S(name)), 'removed on the node');
  });

  await t.test('a file opened to append and changed through a shared mapping: the mapped bytes stay where they were written', async (t) => {
    // The kernel writes a mapping's dirty pages back through an open handle of the file, this
    // one with O_APPEND: their offset is the page's, not the end of the file.
    t.equal((await sh(`printf 'abcdefghijklmnop\\n' > '${M('mapped.log')}'`)).code, 0);
    const script = 'import mmap,os,sys; fd=os.open(sys.argv[1], os.O_RDWR|os.O_APPEND); m=mmap.mmap(fd,0); m[4:9]=b"MMAP!"; m.flush(); m.close(); os.write(fd, b"tail\\n"); os.close(fd)';
    const r = await run('python3', ['-c', script, M('mapped.log')]);
    t.equal(r.code, 0, r.stderr.trim() || 'mapped, changed, appended to');
    const known = isFuseNative ? { todo: 'fuse-native does not say which writes come from the page cache: an O_APPEND handle appends them' } : {};
    t.equal(await readFile(S('mapped.log'), 'utf8'), 'abcdMMAP!jklmnop\ntail\n', 'the node has the change in place and the append after it', known);
  });

  await t.test('a file grown by truncate -s, or written with long runs of zeros, stays sparse on the node', async (t) => {
    const MiB = 1024 * 1024;
    const grown = await run('truncate', ['-s', '16G', M('sparse.img')]);
    t.equal(grown.code, 0, `truncate -s 16G through the mount: ${grown.stderr.trim() || 'ok'}`);
    const img = await stat(S('sparse.img'));
    t.equal(img.size, 16 * 1024 * MiB, 'the node has its size');
    t.ok(img.blocks * 512 < 16 * MiB, `and next to no blocks (${img.blocks * 512} bytes allocated)`);
    const mid = await sh(`dd if='${M('sparse.img')}' bs=1M skip=9000 count=2 status=none | od -An -tx1 -v | tr -s ' \n' '\n' | sort -u | tr -d '\n'`);
    t.equal(mid.stdout, '00', 'the mount reads zeros from its middle');
    // An edit in its middle: the old bytes brought into the dirty copy are its data, not its holes.
    const edit = await run('dd', [`of=${M('sparse.img')}`, 'bs=1', `seek=${8 * 1024 * MiB}`, 'conv=notrunc', 'status=none'], { input: 'X' });
    t.equal(edit.code, 0, `one byte written in the middle: ${edit.stderr.trim() || 'ok'}`);
    const edited = await stat(S('sparse.img'));
    t.equal(edited.size, 16 * 1024 * MiB, 'the node has the same size');
    t.ok(edited.blocks * 512 < 16 * MiB, `and still next to no blocks (${edited.blocks * 512} bytes allocated)`);
    const at = await open(S('sparse.img'), 'r');
    const byte = Buffer.alloc(3);
    await at.read(byte, 0, 3, 8 * 1024 * MiB - 1);
    await at.close();
    t.same([...byte], [0, 0x58, 0], 'and the byte where it was written');
    // lseek(SEEK_DATA / SEEK_HOLE) through the mount: the holes are where the chunk list has runs of zeros.
    const seeks = await run('python3', ['-c', SEEKS, M('sparse.img'), String(8 * 1024 * MiB)]);
    const known = isFuseNative ? { todo: 'fuse-native has no lseek operation (the kernel reports every byte as data)' } : {};
    t.same(seeks.stdout.trim().split(' '), [String(8 * 1024 * MiB), '0', String(8 * 1024 * MiB + 4 * MiB), 'ENXIO'], `SEEK_DATA from 0, SEEK_HOLE from 0, SEEK_HOLE from the byte, SEEK_DATA past it: ${seeks.stdout.trim()} ${seeks.stderr.trim()}`, known);
    if (!isFuseNative) {
      // (Under fuse-native, cp would read all 16 GiB of zeros: no lseek there.)
      const copied = join(base, 'sparse-copy.img');
      const cp = await run('cp', [M('sparse.img'), copied]);
      t.equal(cp.code, 0, `cp of it out of the mount: ${cp.stderr.trim() || 'ok'}`);
      t.ok((await stat(copied)).blocks * 512 < 16 * MiB, `the copy is sparse too (${(await stat(copied)).blocks * 512} bytes allocated)`);
      await rm(copied);
    }
    // Written front to back (its chunks go ahead of the close, into the file's draft on the node): zeros between data.
    const written = await sh(`{ printf head; head -c 40000000 /dev/zero; printf tail; } > '${M('zeros.bin')}'`);
    t.equal(written.code, 0, `a stream of zeros between data: ${written.stderr.trim() || 'ok'}`);
    const expected = Buffer.concat([Buffer.from('head'), Buffer.alloc(40_000_000), Buffer.from('tail')]);
    t.ok((await readFile(S('zeros.bin'))).equals(expected), 'the node has exactly those bytes');
    const z = await stat(S('zeros.bin'));
    t.ok(z.blocks * 512 < 16 * MiB, `in fewer blocks than its ${z.size} bytes (${z.blocks * 512} allocated)`);
    await rm(S('sparse.img'));
    await rm(S('zeros.bin'));
  });

  await t.test('fallocate: allocate, keep the size, punch a hole, zero a range; collapse refused', async (t) => {
    const known = isFuseNative ? { todo: FUSE_NATIVE_FALLOCATE } : {};
    const want = randomBytes(300_000);
    await writeFile(join(base, 'fa-body'), want);
    t.equal((await run('cp', [join(base, 'fa-body'), M('fa')])).code, 0, 'a file to work on');
    let expected = Buffer.from(want);
    const step = async (args: string[], what: string, change: () => void): Promise<void> => {
      const r = await run('fallocate', [...args, M('fa')]);
      t.equal(r.code, 0, `fallocate ${args.join(' ')}: ${r.stderr.trim() || 'ok'}`, known);
      change();
      t.ok((await readFile(S('fa'))).equals(expected), `${what}: the node's copy`, known);
    };
    await step(['-p', '-o', '1000', '-l', '5000'], 'a punched hole reads as zeros', () => expected.fill(0, 1000, 6000));
    await step(['-z', '-o', '299000', '-l', '5000'], 'a zeroed range past the end extends the file', () => {
      expected = Buffer.concat([expected.subarray(0, 299000), Buffer.alloc(5000)]);
    });
    await step(['-n', '-o', '0', '-l', '1000000'], 'an allocation that keeps the size changes nothing', () => undefined);
    await step(['-l', '400000'], 'an allocation past the end makes the file that long', () => {
      expected = Buffer.concat([expected, Buffer.alloc(400000 - expected.length)]);
    });
    const collapse = await run('fallocate', ['-c', '-o', '0', '-l', '4096', M('fa')]);
    t.match(collapse.stderr, /Operation not supported/, 'collapsing a range is refused');
    t.ok((await readFile(S('fa'))).equals(expected), 'and changes nothing', known);
    t.ok((await readFile(M('fa'))).equals(expected), 'the mount shows what the node has', known);
  });

  await t.test('a file unlinked or replaced while open goes on through its handles, and reaches no node', async (t) => {
    const script = `
      const fs = require('fs');
      const p = (n) => process.argv[1] + '/' + n;
      const read = (fd) => { const b = Buffer.alloc(100); return b.subarray(0, fs.readSync(fd, b, 0, 100, 0)).toString(); };
      const out = {};
      // Just written, opened for reading, then unlinked.
      fs.writeFileSync(p('gone'), 'content of gone');
      let fd = fs.openSync(p('gone'), 'r');
      fs.unlinkSync(p('gone'));
      out.gone = { reads: read(fd), size: fs.fstatSync(fd).size, nlink: fs.fstatSync(fd).nlink };
      fs.closeSync(fd);
      // Being written when unlinked; a new file takes the name; the old one is written, truncated, chmod'ed.
      fd = fs.openSync(p('orphan'), 'w+');
      fs.writeSync(fd, 'old content');
      fs.unlinkSync(p('orphan'));
      fs.writeFileSync(p('orphan'), 'new');
      fs.writeSync(fd, ' more');
      fs.ftruncateSync(fd, 8);
      fs.fchmodSync(fd, 0o600);
      out.orphan = { reads: read(fd), size: fs.fstatSync(fd).size, mode: fs.fstatSync(fd).mode & 0o777 };
      fs.closeSync(fd);
      // Being written when a rename puts another file in its place.
      fd = fs.openSync(p('replaced'), 'w+');
      fs.writeSync(fd, 'writer');
      fs.writeFileSync(p('replacement'), 'replacement');
      fs.renameSync(p('replacement'), p('replaced'));
      fs.writeSync(fd, ' goes on');
      out.replaced = { reads: read(fd) };
      fs.closeSync(fd);
      console.log(JSON.stringify(out));
    `;
    const r = await run(process.execPath, ['-e', script, mnt]);
    t.equal(r.code, 0, `the script ran: ${r.stderr.trim() || 'ok'}`);
    const out = JSON.parse(r.stdout);
    t.same(out.gone, { reads: 'content of gone', size: 15, nlink: 0 }, 'an unlinked file is read and fstat\'ed through the handle that had it open');
    t.same(out.orphan, { reads: 'old cont', size: 8, mode: 0o600 }, 'an unlinked file being written is written, truncated and chmod\'ed through its handle');
    t.same(out.replaced, { reads: 'writer goes on' }, 'a file replaced by a rename is written and read through its handle');
    await t.rejects(stat(S('gone')), 'the unlinked file is not on the node');
    t.equal(await readFile(S('orphan'), 'utf8'), 'new', 'the new file under the name is on the node, untouched by the old one');
    t.equal(await readFile(S('replaced'), 'utf8'), 'replacement', "the rename's file is on the node, not the replaced writer's");
    t.equal((await run('cat', [M('replaced')])).stdout, 'replacement', 'and through the mount');
  });

  await t.test('an exchange of two files both being written swaps them with their writers', async (t) => {
    const known = isFuseNative ? { todo: 'fuse-native drops rename flags: the exchange is refused' } : {};
    await writeFile(S('swap-a'), 'a-old\n');
    await writeFile(S('swap-b'), 'b-old\n');
    const script = `
      const fs = require('fs'), { spawnSync } = require('child_process');
      const [a, b] = process.argv.slice(1);
      const fa = fs.openSync(a, 'r+'), fb = fs.openSync(b, 'r+');
      fs.writeSync(fa, 'a-new\\n', 0);
      fs.writeSync(fb, 'b-new\\n', 0);
      // renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE): 316 on x86_64
      const x = spawnSync('perl', ['-e', 'syscall(316, -100, $ARGV[0], -100, $ARGV[1], 2) == 0 or die "renameat2: $!\\n"', a, b], { encoding: 'utf8' });
      fs.writeSync(fa, 'a-more\\n', 6);
      fs.writeSync(fb, 'b-more\\n', 6);
      fs.closeSync(fa);
      fs.closeSync(fb);
      process.stdout.write(String(x.status) + ' ' + x.stderr.trim());
    `;
    const r = await run(process.execPath, ['-e', script, M('swap-a'), M('swap-b')]);
    t.equal(r.stdout.trim(), '0', `the exchange was made: ${r.stderr.trim() || r.stdout.trim()}`, known);
    t.equal(await readFile(S('swap-a'), 'utf8'), 'b-new\nb-more\n', "swap-a on the node is the file b's writer wrote", known);
    t.equal(await readFile(S('swap-b'), 'utf8'), 'a-new\na-more\n', "swap-b on the node is the file a's writer wrote", known);
    t.equal((await run('cat', [M('swap-a')])).stdout, 'b-new\nb-more\n', 'and so through the mount', known);
  });

  await t.test("statfs through the mount describes the node's filesystem", async (t) => {
    // %S block size, %b blocks, %a blocks available, %c inodes, %d inodes free.
    const r = await run('stat', ['-f', '-c', '%S %b %a %c %d', mnt]);
    t.equal(r.code, 0, 'stat -f answers');
    const [bsize, blocks, avail, files, ffree] = r.stdout.trim().split(' ').map(Number);
    const node = await statfs(S(''));
    t.equal(bsize, node.bsize, 'block size');
    t.equal(blocks, node.blocks, 'total blocks');
    t.equal(files, node.files, 'total inodes');
    // The rest moves with whatever else writes to that disk meanwhile.
    t.ok(Math.abs(avail! - node.bavail) <= node.blocks / 100, `blocks available: ${avail} through the mount, ${node.bavail} on the node`);
    t.ok(Math.abs(ffree! - node.ffree) <= node.files / 100, `inodes free: ${ffree} through the mount, ${node.ffree} on the node`);
    t.equal((await run('df', ['-P', mnt])).code, 0, 'df answers');
  });

  const project = fileURLToPath(new URL('../../../', import.meta.url));
  const archive = join(base, 'src.tar');
  await run('tar', ['-C', project, '-cf', archive, 'src', 'test', 'proto']);

  // Run for real; the assertions that fuse-native fails are marked as its known failures.
  const known = isFuseNative ? { todo: FUSE_NATIVE_UTIMENS } : {};
  await t.test('mtime: touch -m -d, cp -p, tar -d', async (t) => {
    await sh(`echo t > '${M('stamped')}'`);
    await run('touch', ['-m', '-d', '2001-02-03 04:05:06', M('stamped')]);
    t.equal((await stat(S('stamped'))).mtime.toISOString(), new Date('2001-02-03T04:05:06').toISOString(), 'touch -m -d on the node', known);
    await writeFile(join(base, 'orig'), 'orig');
    await run('touch', ['-d', '1999-12-31 23:59:58', join(base, 'orig')]);
    await run('cp', ['-p', join(base, 'orig'), M('copied')]);
    t.equal((await stat(S('copied'))).mtimeMs, (await stat(join(base, 'orig'))).mtimeMs, 'cp -p keeps mtime', known);
    await run('mkdir', [M('untar-times')]);
    await run('tar', ['-C', M('untar-times'), '-xf', archive]);
    const d = await run('tar', ['-C', S('untar-times'), '-df', archive]);
    t.equal(d.code, 0, 'tar -d (mtimes included) finds no difference on the node', known);
  });

  await t.test('git init, add, commit inside the mount; fsck clean on the node', async (t) => {
    const repo = M('repo');
    await run('mkdir', [repo]);
    const git = (...a: string[]) => run('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=t', '-C', repo, ...a]);
    const init = await git('init', '-q');
    t.equal(init.code, 0, init.stderr);
    await sh(`cd '${repo}' && mkdir src && echo 'int main(void){return 0;}' > src/main.c && echo '# r' > README`);
    const add = await git('add', '-A');
    t.equal(add.code, 0, add.stderr);
    const c = await git('commit', '-qm', 'first');
    t.equal(c.code, 0, c.stderr);
    await sh(`echo '// more' >> '${repo}/src/main.c'`);
    const second = await git('commit', '-qam', 'second');
    t.equal(second.code, 0, second.stderr);
    const fsck = await run('git', ['-C', S('repo'), 'fsck', '--full', '--strict']);
    t.equal(fsck.code, 0, `git fsck on the node: ${fsck.stderr}`);
    t.equal((await run('git', ['-C', S('repo'), 'log', '--format=%s'])).stdout, 'second\nfirst\n');
    t.equal((await run('git', ['-C', S('repo'), 'status', '--porcelain'])).stdout, '', 'clean on the node');
  });

  await t.test('tar -x of a real source tree equals the archive on the node', async (t) => {
    await run('mkdir', [M('untar'), join(base, 'reference')]);
    const x = await run('tar', ['-C', M('untar'), '-xf', archive]);
    t.equal(x.code, 0, x.stderr);
    await run('tar', ['-C', join(base, 'reference'), '-xf', archive]);
    // Content, type, mode and size of every path (mtimes: see the known failure above).
    const list = (dir: string) => sh(`cd '${dir}' && find . -printf '%y %m %s %p\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum`);
    const [want, got] = [await list(join(base, 'reference')), await list(S('untar'))];
    t.ok(want.stdout.length > 1000, 'the archive has real content');
    t.equal(got.stdout, want.stdout, 'every path on the node equals the archive');
  });

  await t.test('an edit in the middle of a 100 MiB file uploads only a few chunks', async (t) => {
    const big = randomBytes(100 * 1024 * 1024);
    await writeFile(S('big.bin'), big);
    await waitFor('the mount to see big.bin', async () => (await run('stat', ['-c', '%s', M('big.bin')])).stdout.trim() === String(big.length));
    // Chunks new to the node, whichever way they came (the bulk lane or gRPC).
    const uploaded = async (): Promise<number> => {
      let n = 0;
      for (const m of (await node.scrapeMetrics()).matchAll(/^ghostfs_node_chunks_uploaded_total\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
      return n;
    };
    const before = await uploaded();
    const edit = await run('dd', [`of=${M('big.bin')}`, 'bs=1', 'seek=50000000', 'conv=notrunc', 'status=none'], { input: 'EDITED' });
    t.equal(edit.code, 0, `dd into its middle: ${edit.stderr.trim() || 'ok'}`);
    const stored = (await uploaded()) - before;
    t.ok(stored >= 1 && stored <= 3, `the node received ${stored} chunk(s) of ~100`);
    const onNode = await readFile(S('big.bin'));
    // (If not: what the mount warned of meanwhile says why, e.g. a commit queued for a node it took for down.)
    const warned = m.lines.filter((l) => Number(l.level) >= 40).slice(-5).map((l) => l.msg);
    t.equal(onNode.subarray(50_000_000, 50_000_006).toString(), 'EDITED', `the edit is on the node${warned.length ? ` (the mount's last warnings: ${JSON.stringify(warned)})` : ''}`);
    t.ok(onNode.subarray(0, 50_000_000).equals(big.subarray(0, 50_000_000)) && onNode.subarray(50_000_006).equals(big.subarray(50_000_006)), 'and nothing else changed');
  });

  const staging = join(base, 'state', 'staging', 'default');
  const chunkFiles = async (): Promise<string[]> => (await readdir(staging).catch(() => [] as string[])).filter((n) => /^[0-9a-f]{64}$/.test(n));
  /** A writer that copies 32 MiB of `local` to `target`, waits until `go()` is called, then writes the rest and closes. */
  const halfWriter = async (local: string, target: string): Promise<{ go(): Promise<void> }> => {
    const script = `
      const fs = require('node:fs');
      const src = fs.readFileSync(process.argv[1]);
      const fd = fs.openSync(process.argv[2], 'w');
      const put = (from, to) => { for (let o = from; o < to; o += 1 << 20) fs.writeSync(fd, src, o, Math.min(1 << 20, to - o), o); };
      put(0, 32 << 20);
      console.log('half');
      process.stdin.once('data', () => { put(32 << 20, src.length); fs.closeSync(fd); console.log('closed'); process.exit(0); });`;
    const writer = spawn(process.execPath, ['-e', script, local, target], { stdio: ['pipe', 'pipe', 'inherit'] });
    const said = (word: string) =>
      new Promise<void>((resolve, reject) => {
        const onData = (d: Buffer) => d.toString().includes(word) && resolve();
        writer.stdout!.on('data', onData);
        writer.once('exit', (code) => reject(new Error(`writer exited (${code}) before saying ${word}`)));
      });
    await said('half');
    return {
      go: async () => {
        const closed = said('closed');
        writer.stdin!.write('go\n');
        await closed;
      },
    };
  };

  /** The node's drafts (node/drafts.ts). */
  const drafts = () => node.openUnnamed(src);

  await t.test('a big file written front to back is put together on the node while it is written', async (t) => {
    const data = randomBytes(40 * 1024 * 1024);
    const local = join(base, 'ahead.src');
    await writeFile(local, data);
    t.same(await drafts(), [], 'no draft on the node before');
    const writer = await halfWriter(local, M('ahead.bin'));
    await waitFor("the open file's draft to grow on the node", async () => ((await drafts())[0]?.size ?? 0) > 0, 30_000);
    const [draft, ...more] = await drafts();
    t.equal(more.length, 0, 'one draft');
    t.pass(`${draft!.size} bytes in it while the file is still open`);
    t.notOk(await stat(S('ahead.bin')).catch(() => undefined), 'the file itself appears only at close');
    await writer.go();
    t.ok((await readFile(S('ahead.bin'))).equals(data), 'the node has exactly the bytes written');
    t.equal((await stat(S('ahead.bin'))).ino, draft!.ino, 'the draft became the file (its bytes were not written again)');
    t.same(await drafts(), [], 'no draft left');
    t.same(await chunkFiles(), [], 'and no chunk staged');
  });

  await t.test('chunks sent ahead that the node lost before the close (it restarted) are sent again by the close', async (t) => {
    const data = randomBytes(40 * 1024 * 1024);
    const local = join(base, 'lost.src');
    await writeFile(local, data);
    const writer = await halfWriter(local, M('lost.bin'));
    await waitFor("the open file's draft to grow on the node", async () => ((await drafts())[0]?.size ?? 0) > 0, 30_000);
    // The node dies with the draft, and is back before the close.
    const port = node.port;
    await node.stop('SIGKILL');
    node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), '--listen', `127.0.0.1:${port}`]);
    await writer.go();
    // The close may have come before the mount was back in touch: then it is queued, and lands a moment later.
    await waitFor('lost.bin to reach the node', async () => (await stat(S('lost.bin')).catch(() => undefined))?.size === data.length, 30_000);
    t.ok((await readFile(S('lost.bin'))).equals(data), 'the node has exactly the bytes written');
    t.same(await drafts(), [], 'no draft left');
  });

  await t.test('a file changed on the node between open and close gets a conflict copy', async (t) => {
    await writeFile(S('shared.txt'), 'original\n');
    await waitFor('the mount to see shared.txt', async () => (await run('cat', [M('shared.txt')])).stdout === 'original\n');
    // Open (truncating) through the mount, hold it, let the node change, then write and close.
    const writer = spawn('bash', ['-c', `exec 3>'${M('shared.txt')}'; echo opened; read x; echo mine >&3; exec 3>&-; echo closed`], { stdio: ['pipe', 'pipe', 'inherit'] });
    const writerDone = new Promise((r) => writer.on('exit', r));
    let out = '';
    writer.stdout.on('data', (d) => (out += d));
    await waitFor('the writer to open', async () => out.includes('opened'));
    await writeFile(S('shared.txt'), 'theirs\n');
    writer.stdin.end('go\n');
    await writerDone;
    t.match(out, /closed/);
    t.equal(await readFile(S('shared.txt'), 'utf8'), 'theirs\n', 'the node keeps its version');
    const copies = (await readdir(src)).filter((n) => n.startsWith('shared.conflict-'));
    t.equal(copies.length, 1, `one conflict copy: ${copies.join(', ')}`);
    t.equal(await readFile(S(copies[0]!), 'utf8'), 'mine\n', "the writer's version is beside it");
    t.ok(m.lines.some((l) => l.msg.startsWith('write-back conflict')), 'the mount logged the conflict');
  });

  await t.test('node down during close: data kept, committed when the node returns', async (t) => {
    const port = node.port;
    await node.stop('SIGKILL');
    const w = await sh(`echo 'written while the node was down' > '${M('offline.txt')}'`);
    t.equal(w.code, 0, `close succeeded: ${w.stderr}`);
    t.equal((await run('cat', [M('offline.txt')])).stdout, 'written while the node was down\n', 'the mount shows the queued content');
    t.equal((await sh(`echo 'and appended' >> '${M('offline.txt')}'`)).code, 0, 'a second write while still offline');
    t.equal((await run('cat', [M('offline.txt')])).stdout, 'written while the node was down\nand appended\n', 'it continues from the queued content');
    const mk = await run('mkdir', [M('cannot')]);
    t.match(mk.stderr, /Read-only file system/, 'namespace changes need a node: EROFS');
    t.equal((await sh(`echo 'queued' > '${M('edited.txt')}'`)).code, 0);
    node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), '--listen', `127.0.0.1:${port}`]);
    // At once, before the retry loop: opening for writing commits the queued
    // version first, and the edit must start from it (not from nothing).
    const edit = await sh(`printf 'E' | dd of='${M('edited.txt')}' bs=1 seek=2 conv=notrunc status=none`);
    t.equal(edit.code, 0, edit.stderr);
    await waitFor('the queued write-back to reach the node', async () => (await readFile(S('offline.txt'), 'utf8')) === 'written while the node was down\nand appended\n', 30_000);
    t.pass('committed after the node returned');
    await waitFor('the edit to reach the node', async () => (await readFile(S('edited.txt'), 'utf8').catch(() => '')) === 'quEued\n', 30_000);
    t.pass('an edit made as the node returned kept the queued content around it');
  });

  await t.test('kill -9 of the mount during 1,000 writes loses no closed file', async (t) => {
    await run('mkdir', [M('burst')]);
    // dd reports a failed close() (a shell redirection would not): a number is
    // printed only once close() of that file returned success.
    const writer = spawn('bash', ['-c', `for i in $(seq 1 1000); do echo "content $i" | dd of='${M('burst')}'/f$i status=none || exit 1; echo $i; done`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const writerDone = new Promise((r) => writer.on('exit', r));
    let closed = 0;
    writer.stdout.on('data', (d: Buffer) => {
      const nums = d.toString().trim().split('\n').map(Number);
      closed = Math.max(closed, ...nums.filter((n) => Number.isFinite(n)));
    });
    await waitFor('some files to be written', async () => closed >= 150, 60_000);
    await m.kill();
    const acknowledged = closed;
    await writerDone;
    t.ok(acknowledged >= 150, `${acknowledged} files were closed before the kill`);
    m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--deadline', '3s']);
    await waitFor('the journal to drain', async () => !(await run('ls', [join(cache, 'dirty', 'default')])).stdout.split('\n').some((n) => n !== '' && !n.endsWith('.failed')), 30_000).catch(() => undefined);
    const names = await readdir(S('burst'));
    for (let i = 1; i <= acknowledged; i++) {
      const body = await readFile(S(`burst/f${i}`), 'utf8').catch(() => 'MISSING');
      if (body !== `content ${i}\n`) t.fail(`burst/f${i} after remount: ${JSON.stringify(body)}`);
    }
    t.pass(`all ${acknowledged} acknowledged files are on the node intact`);
    t.same(names.filter((n) => n.includes('conflict') || n.startsWith('.ghostfs-tmp-')), [], 'no conflict copies, no partial temp files');
    // A file whose close never returned may exist empty (its create was
    // acknowledged, as on any filesystem after a crash) but never torn.
    for (const n of names.filter((x) => Number(x.slice(1)) > acknowledged)) {
      const body = await readFile(S(`burst/${n}`), 'utf8');
      t.ok(body === '' || body === `content ${n.slice(1)}\n`, `${n} (close not acknowledged) is empty or whole: ${JSON.stringify(body)}`);
    }
  });

  for (const mode of ['sync', 'async'] as const) {
    await t.test(`--write-back ${mode}: what an fsync made durable survives the mount being killed before the close; an unlinked file stays gone`, async (t) => {
      const dir = `fsync-${mode}`;
      await mkdir(S(dir));
      await writeFile(S(`${dir}/fsync-edit.txt`), 'AAAA\nBBBB\nCCCC\n');
      await m.stop();
      m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--deadline', '3s', '--write-back', mode]);
      await waitFor('the node file to show through the mount', async () => (await readFile(M(`${dir}/fsync-edit.txt`), 'utf8').catch(() => '')) === 'AAAA\nBBBB\nCCCC\n');
      // The writer keeps its files open past the kill: written and fsynced, never closed.
      const writer = spawn(process.execPath, ['-e', FSYNC_WRITER, M(dir)], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      writer.stdout.on('data', (d: Buffer) => (out += d.toString()));
      writer.stderr.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor('the writer to fsync its files', async () => out.includes('synced\n'), 30_000).catch((err: Error) => {
        throw new Error(`${err.message}; the writer said: ${JSON.stringify(out)}`);
      });
      t.equal(out, 'synced\n', 'the writer fsynced its files');
      await m.kill();
      writer.kill('SIGKILL');
      m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--deadline', '3s', '--write-back', mode]);
      const D = (name: string) => S(`${dir}/${name}`);
      await waitFor('the fsynced new file to reach the node', async () => existsSync(D('fsynced-new.txt')), 30_000);
      t.equal(await readFile(D('fsynced-new.txt'), 'utf8'), 'fsynced before the kill\n', 'the small new file holds what its fsync sent to the node (what was written after it was never closed)');
      await waitFor('the fsynced big file to reach the node', async () => (await stat(D('fsynced-big.bin')).catch(() => undefined))?.size === (300 << 10) + 10, 30_000);
      t.ok((await readFile(D('fsynced-big.bin'))).equals(Buffer.concat([Buffer.alloc(300 << 10, 'B'), Buffer.from('and a tail')])), 'the big file holds its journaled copy as the kill left it');
      await waitFor('the fsynced edit to reach the node', async () => (await readFile(D('fsync-edit.txt'), 'utf8')) !== 'AAAA\nBBBB\nCCCC\n', 30_000);
      t.equal(await readFile(D('fsync-edit.txt'), 'utf8'), 'AAAA\nbbbb\nCCCC\n', 'the edit in the middle landed on the old content, nothing else changed');
      await waitFor('the closed file to reach the node', async () => existsSync(D('fsynced-closed.txt')), 30_000);
      t.equal(await readFile(D('fsynced-closed.txt'), 'utf8'), 'closed normally\n', 'a file fsynced and then closed keeps its closed content');
      t.notOk(existsSync(D('fsynced-unlinked.txt')), 'a small file fsynced and then unlinked was not brought back');
      t.notOk(existsSync(D('fsynced-unlinked.bin')), 'nor a big one');
      t.same((await readdir(S(dir))).filter((n) => n.includes('conflict')), [], 'no conflict copies');
      await waitFor('nothing left in the journal', async () => (await m.status()).writeBack?.pending === 0, 30_000).catch(() => undefined);
      t.equal((await m.status()).writeBack?.pending, 0, 'no write-back left pending');
    });

    await t.test(`--write-back ${mode}: an fsync of a small open file puts it on the node; the close then sends nothing more`, async (t) => {
      const file = `fsync-${mode}/sent-at-fsync.txt`;
      const writer = spawn(process.execPath, ['-e', FSYNC_THEN_CLOSE, M(file)], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      writer.stdout.on('data', (d: Buffer) => (out += d.toString()));
      writer.stderr.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor('the writer to fsync', async () => out.includes('synced\n'), 30_000);
      t.equal(await readFile(S(file), 'utf8'), 'sent at fsync\n', 'on the node while the file is still open');
      const ino = (await stat(S(file))).ino;
      writer.stdin.write('close\n');
      await waitFor('the writer to close', async () => out.includes('closed\n'), 30_000);
      t.equal(out, 'synced\nclosed\n', 'fsync and close succeeded');
      t.equal((await stat(S(file))).ino, ino, 'the close committed no new version');
      t.equal(await readFile(S(file), 'utf8'), 'sent at fsync\n');

      // fsync twice, then write and fsync again (journaled, not sent), then close: each call succeeds, the close sends the rest.
      const again = await run(process.execPath, ['-e', FSYNC_AGAIN, M(`fsync-${mode}/fsynced-again.txt`)]);
      t.equal(again.code, 0, again.stderr);
      // (Asynchronous write-back: the close queues what the last fsync journaled.)
      await waitFor('the close to reach the node', async () => (await readFile(S(`fsync-${mode}/fsynced-again.txt`), 'utf8')) === 'first\nmore\n', 30_000).catch(() => undefined);
      t.equal(await readFile(S(`fsync-${mode}/fsynced-again.txt`), 'utf8'), 'first\nmore\n', 'the node has all of it after the close');
      await waitFor('no dirty copy left behind', async () => (await readdir(join(cache, 'dirty', 'default'))).filter((n) => !n.endsWith('.failed')).length === 0, 10_000).catch(() => undefined);
      t.same((await readdir(join(cache, 'dirty', 'default'))).filter((n) => !n.endsWith('.failed')), [], 'no dirty copy left behind');
    });
  }

  await m.stop();
});

/**
 * Writes files under the mount (argv[1]) and fsyncs each, then waits with
 * them open: a new small file and a new big one (more written after each
 * fsync), an edit in the middle of a file, a small and a big file unlinked
 * after their fsync, and one closed normally. A small file's fsync sends it
 * to the node; a big one's journals its dirty copy.
 */
const FSYNC_WRITER = `
  const fs = require('fs'), path = require('path'), dir = process.argv[1];
  const n = fs.openSync(path.join(dir, 'fsynced-new.txt'), 'w');
  fs.writeSync(n, 'fsynced before the kill\\n'); fs.fsyncSync(n); fs.writeSync(n, 'written after the fsync\\n');
  const b = fs.openSync(path.join(dir, 'fsynced-big.bin'), 'w');
  fs.writeSync(b, Buffer.alloc(300 << 10, 'B')); fs.fsyncSync(b); fs.writeSync(b, 'and a tail');
  const e = fs.openSync(path.join(dir, 'fsync-edit.txt'), 'r+');
  fs.writeSync(e, 'bbbb', 5); fs.fsyncSync(e);
  for (const name of ['fsynced-unlinked.txt', 'fsynced-unlinked.bin']) {
    const u = fs.openSync(path.join(dir, name), 'w');
    fs.writeSync(u, name.endsWith('.bin') ? Buffer.alloc(300 << 10, 'U') : 'must not come back\\n'); fs.fsyncSync(u); fs.unlinkSync(path.join(dir, name));
  }
  const c = fs.openSync(path.join(dir, 'fsynced-closed.txt'), 'w');
  fs.writeSync(c, 'fsynced\\n'); fs.fsyncSync(c); fs.ftruncateSync(c, 0); fs.writeSync(c, 'closed normally\\n', 0); fs.closeSync(c);
  process.stdout.write('synced\\n');
  process.stdin.resume();`;

/** Writes a small file (argv[1]) and fsyncs it; closes it when told ("close" on stdin). */
const FSYNC_THEN_CLOSE = `
  const fs = require('fs');
  const fd = fs.openSync(process.argv[1], 'w');
  fs.writeSync(fd, 'sent at fsync\\n'); fs.fsyncSync(fd);
  process.stdout.write('synced\\n');
  process.stdin.on('data', () => { fs.closeSync(fd); process.stdout.write('closed\\n'); process.exit(0); });`;

/** Writes a small file (argv[1]), fsyncs it twice, writes more, fsyncs and closes it. */
const FSYNC_AGAIN = `
  const fs = require('fs');
  const fd = fs.openSync(process.argv[1], 'w');
  fs.writeSync(fd, 'first\\n'); fs.fsyncSync(fd); fs.fsyncSync(fd); fs.fdatasyncSync(fd);
  fs.writeSync(fd, 'more\\n'); fs.fsyncSync(fd); fs.fsyncSync(fd);
  fs.closeSync(fd);`;

/** The change feed as `ghostfs status` reports it. */
async function feedOf(mnt: string): Promise<{ connected: boolean; generation: number }> {
  return JSON.parse((await run(process.execPath, [BIN, 'status', mnt, '--json'])).stdout).changeFeed;
}

/**
 * A node serving `files`, a relay node in front of it and a mount through
 * the relay, once the mount's change feed has answered (its first answer,
 * a RESET for a new cache, forgets what the mount committed: it must not
 * come after what a test does).
 */
async function relayedMount(t: { teardown(fn: () => unknown): void }, files: Record<string, string> = {}): Promise<{ src: string; mnt: string; proxy: RelayProxy; m: MountProc }> {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  await mkdir(src);
  for (const [name, text] of Object.entries(files)) await writeFile(join(src, name), text);
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const proxy = await RelayProxy.start(node.endpoint);
  t.teardown(() => proxy.stop());
  const m = await MountProc.start(proxy.endpoint, mnt, ['--cache-dir', join(base, 'cache')]);
  t.teardown(() => m.kill());
  await waitFor('the change feed to answer', async () => (await feedOf(mnt)).connected);
  return { src, mnt, proxy, m };
}

t.test('a file whose chunk list one message cannot carry fails its close with EFBIG, and the node is not taken for down', async (t) => {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  await mkdir(src);
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', join(base, 'cache')]);
  t.teardown(() => m.kill());
  // 2 TiB of holes: hashed in seconds, but 524,288 chunks, more than one 16 MiB message holds.
  const huge = await run('truncate', ['-s', '2T', join(mnt, 'huge.img')]);
  t.not(huge.code, 0, 'truncate -s 2T fails');
  t.match(huge.stderr, /File too large/, `with EFBIG: ${huge.stderr.trim()}`);
  t.equal(m.lines.filter((l) => l.msg === 'node unreachable; trying another replica').length, 0, 'the node was not taken for unreachable');
  t.notOk(await stat(join(src, 'huge.img')).catch(() => undefined), 'the node has no such file');
  t.equal((await sh(`echo after > '${join(mnt, 'after.txt')}'`)).code, 0, 'the next file is written back');
  t.equal(await readFile(join(src, 'after.txt'), 'utf8'), 'after\n', 'and is on the node');
  await m.stop();
});

t.test('a truncate the node takes longer than the deadline to hash succeeds', async (t) => {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  await mkdir(src);
  // 1.5 GiB of data (not zeros: the holes a truncate makes are hashed without being read).
  const fh = await open(join(src, 'grows'), 'w');
  const block = Buffer.alloc(64 * 1024 * 1024, 0x5a);
  for (let i = 0; i < 24; i++) await fh.write(block, 0, block.length, i * block.length);
  await fh.close();
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  // The node hashes the whole file again before it answers: its 1.5 GiB of data take it far longer than 500 ms
  // (a deadline the mount's own start, under a loaded machine, still keeps).
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', join(base, 'cache'), '--deadline', '500ms']);
  t.teardown(() => m.kill());
  const size = 4 * 1024 ** 3;
  // truncate(2) by name (the truncate tool opens the file: that goes through a dirty copy instead).
  const r = await run('perl', ['-e', 'truncate($ARGV[0], $ARGV[1]) or die "truncate: $!\\n"', join(mnt, 'grows'), String(size)]);
  t.equal(r.code, 0, `truncate(2) to 4 GiB through the mount: ${r.stderr.trim() || 'ok'}`);
  t.equal((await stat(join(src, 'grows'))).size, size, 'the node has it');
  t.equal((await run('stat', ['-c', '%s', join(mnt, 'grows')])).stdout.trim(), String(size), 'the mount shows it');
  t.equal(m.lines.filter((l) => l.msg === 'node unreachable; trying another replica').length, 0, 'the node was not taken for unreachable');
  await m.stop();
});

t.test('a change feed running behind does not bring back an older state of a file written here', async (t) => {
  const { mnt, proxy, m } = await relayedMount(t);
  const feedGeneration = async (): Promise<number> => (await feedOf(mnt)).generation;
  const f = join(mnt, 'behind.txt');
  const v2 = 'version two, longer\n';

  // Both versions are committed while the mount hears nothing of them (as
  // after a reconnect, or with a feed slower than the commits).
  proxy.holdWatch();
  await sh(`echo one > '${f}'`);
  await sh(`printf '${v2}' > '${f}'`);
  const ours = (): WChangeEventOut[] => proxy.held.filter((e) => e.path === 'behind.txt');
  await waitFor('both commits to be announced', async () => ours().length >= 2);
  // (bash's redirection closes a dup of the new file first: its empty state is committed too.)
  const first = ours().find((e) => Number(e.entry?.attr?.size) === 4);
  t.ok(first, 'the first version was announced');
  // The events up to that one reach the mount; the newer ones wait.
  proxy.releaseWatch((e) => e === first);
  await waitFor('the mount to apply them', async () => (await feedGeneration()) >= first!.generation);
  await new Promise((r) => setTimeout(r, 1200)); // past any attribute timeout: the kernel asks the mount again
  t.equal((await run('stat', ['-c', '%s', f])).stdout.trim(), String(v2.length), 'the size committed here, not the older one');
  t.equal((await run('cat', [f])).stdout, v2, 'the content committed here');

  const last = ours().at(-1)!.generation;
  proxy.releaseWatch();
  await waitFor('the mount to apply the rest', async () => (await feedGeneration()) >= last);
  t.equal((await run('cat', [f])).stdout, v2, 'still so once every event is applied');
  await m.stop();
});

t.test('what a listing after a RESET finds changed reaches the kernel at once', async (t) => {
  const { src, mnt, proxy, m } = await relayedMount(t, { 'gone.txt': 'removed on the node\n', 'kept.txt': 'kept\n' });
  // The kernel learns the directory, both names, and that new.txt does not exist.
  t.equal((await run('ls', [mnt])).stdout, 'gone.txt\nkept.txt\n', 'both files listed');
  t.equal((await run('stat', [join(mnt, 'gone.txt')])).code, 0, 'gone.txt found');
  t.not((await run('stat', [join(mnt, 'new.txt')])).code, 0, 'new.txt not found');

  // Changed on the node while the mount hears nothing of it; then the node's
  // history is gone (RESET): only the mount's listing of the root again can
  // tell it, and the kernel has all of the above cached (30 s for the native driver).
  proxy.holdWatch();
  await rm(join(src, 'gone.txt'));
  await writeFile(join(src, 'new.txt'), 'made on the node\n');
  await waitFor('the node to announce both', async () => proxy.held.some((e) => e.path === 'gone.txt') && proxy.held.some((e) => e.path === 'new.txt'));
  const revalidations = (): number => m.lines.filter((l) => l.msg === 'revalidated cached tree').length;
  const before = revalidations();
  proxy.injectReset();
  await waitFor('the mount to list the root again', async () => revalidations() > before);
  await new Promise((r) => setTimeout(r, 1200)); // past fuse-native's attribute timeout: it has no other way to drop them

  t.equal((await run('ls', [mnt])).stdout, 'kept.txt\nnew.txt\n', 'the listing has the change');
  t.not((await run('stat', [join(mnt, 'gone.txt')])).code, 0, 'the removed file is not found');
  t.equal((await run('cat', [join(mnt, 'new.txt')])).stdout, 'made on the node\n', 'the new file is found and reads');
  proxy.releaseWatch();
  await m.stop();
});

t.test('a directory listing answered after changes made here does not undo them', async (t) => {
  const { src, mnt, proxy, m } = await relayedMount(t, { 'gone.txt': 'to be removed\n', 'edited.txt': 'old\n' });
  t.equal((await run('ls', [mnt])).stdout, 'edited.txt\ngone.txt\n', 'both files listed');
  t.equal((await run('cat', [join(mnt, 'edited.txt')])).stdout, 'old\n');

  // The node's history is gone (RESET): the mount lists the root again, and
  // that answer, taken before the changes below, arrives after them. The
  // change events of those changes are held back too: they would repair
  // the damage moments later, and until then the mount must not show it.
  const revalidations = (): number => m.lines.filter((l) => l.msg === 'revalidated cached tree').length;
  const before = revalidations();
  proxy.holdListings();
  proxy.injectReset();
  await waitFor('the mount to list the root again', async () => proxy.heldListings > 0);
  proxy.holdWatch();
  await sh(`rm '${join(mnt, 'gone.txt')}'`);
  await sh(`printf 'new and longer\\n' > '${join(mnt, 'edited.txt')}'`);
  proxy.releaseListings();
  await waitFor('the older listing to be applied', async () => revalidations() > before);
  await new Promise((r) => setTimeout(r, 1200)); // past any attribute timeout: the kernel asks the mount again

  const shown = async (when: string): Promise<void> => {
    t.equal((await run('ls', [mnt])).stdout, 'edited.txt\n', `${when}: the removed file stays removed`);
    t.not((await run('stat', [join(mnt, 'gone.txt')])).code, 0, `${when}: stat of the removed file fails`);
    t.equal((await run('stat', ['-c', '%s', join(mnt, 'edited.txt')])).stdout.trim(), '15', `${when}: the size written here`);
    t.equal((await run('cat', [join(mnt, 'edited.txt')])).stdout, 'new and longer\n', `${when}: the content written here`);
  };
  await shown('before the change events');
  proxy.releaseWatch();
  await new Promise((r) => setTimeout(r, 500));
  await shown('after them');
  t.equal(await readFile(join(src, 'edited.txt'), 'utf8'), 'new and longer\n', 'on the node too');
  await m.stop();
});
