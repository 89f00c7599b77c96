// FUSE passthrough in the native driver, end to end through a real mount
// driven from child processes: a big file read once gets a whole local copy,
// and later readers are passed through to it (the kernel reads the copy; no
// read reaches the mount). What must not change with it: a writer opening
// the file while a reader holds it sees and changes the one content (the
// reader sees the writer's bytes, the node gets them, mmap writes included),
// and a change on the node reaches new readers while open ones keep theirs.
import t from 'tap';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { nativeAddon, nativeLoadError } from '../src/native/addon.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { MountProc, run, sh, waitFor } from './helpers/mount-proc.js';
import { Holder } from './helpers/holder.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MiB = 1 << 20;

t.test('FUSE passthrough to whole local copies', async (t) => {
  if (!nativeAddon()) return t.fail(`the native addon is built (${nativeLoadError()})`);
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  await mkdir(src);
  let content = randomBytes(12 * MiB);
  await writeFile(join(src, 'big.bin'), content);
  await writeFile(join(src, 'small.txt'), 'small files are read the usual way');
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const env = { GHOSTFS_RUN_DIR: join(base, 'run') };
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', join(base, 'cache'), '--driver', 'native'], env);
  t.teardown(() => m.kill());
  const stats = async () => (await m.status()).driverStats;
  const file = join(mnt, 'big.bin');
  const shaOf = async (p: string) => (await sh(`sha256sum < '${p}'`)).stdout.split(' ')[0];

  if (!(await stats()).kernelPassthrough) {
    // A kernel without FUSE passthrough (before 6.9, or built without it): files are read through the mount.
    t.equal((await stats()).passthrough, 0, 'not asked for: this kernel does not offer it');
    for (let i = 0; i < 2; i++) t.equal(await shaOf(file), sha(content), `read ${i + 1} through the mount is byte-identical`);
    t.equal((await stats()).passthroughOpens, 0, 'and nothing was passed through');
    t.comment('this kernel has no FUSE passthrough: the passthrough cases did not run');
    return;
  }
  t.equal((await stats()).passthrough, 1, 'passthrough was asked for at INIT (the kernel offers it)');
  t.equal(await shaOf(file), sha(content), 'a first read (through the mount) is byte-identical');
  await waitFor('a local copy of it', async () => (await stats()).localCopies.copies === 1);
  t.equal(await shaOf(join(mnt, 'small.txt')), sha(Buffer.from('small files are read the usual way')), 'a small file reads as usual');
  const before = await stats();
  t.equal(await shaOf(file), sha(content), 'the next read is byte-identical');
  const after = await stats();
  t.equal(after.passthroughOpens - before.passthroughOpens, 1, 'its open was passed through');
  t.equal(after.reads, before.reads, 'and no read request reached the mount');
  const mapped = await run('python3', ['-c', 'import hashlib,mmap,sys; f=open(sys.argv[1],"rb"); print(hashlib.sha256(mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)).hexdigest())', file]);
  t.equal(mapped.stdout.trim(), sha(content), 'mmap reads the same bytes');
  // The kernel's RELEASE comes after the reader exited, not before.
  await waitFor('the backing files to be let go', async () => (await stats()).passthroughFiles.nodes === 0).catch(() => undefined);
  t.equal((await stats()).passthroughFiles.nodes, 0, 'every backing file is let go once its opens are released');

  await t.test('a writer while a reader holds the file: one content for both, and the node gets it', async (t) => {
    const { h, first } = await Holder.open(file);
    t.equal(first, `${sha(content)} ${content.length}`, 'the reader (passed through) reads the file');
    t.equal((await stats()).passthroughFiles.nodes, 1, 'the file is passed through now');
    // A write into the middle and an append, by other processes, while the reader holds it.
    const patch = Buffer.from('written while a reader holds the file');
    t.equal((await sh(`printf '%s' '${patch.toString()}' | dd of='${file}' bs=1 seek=${3 * MiB} conv=notrunc status=none`)).code, 0, 'a write into the middle');
    const tail = randomBytes(5000);
    await writeFile(join(base, 'tail'), tail);
    t.equal((await sh(`cat '${join(base, 'tail')}' >> '${file}'`)).code, 0, 'an append');
    content = Buffer.concat([content.subarray(0, 3 * MiB), patch, content.subarray(3 * MiB + patch.length), tail]);
    t.equal(sha(await readFile(join(src, 'big.bin'))), sha(content), 'the node has both changes (each close committed)');
    t.equal(await h.read(), `${sha(content)} ${content.length}`, 'the reader sees both through the descriptor it held all along');
    t.equal(await shaOf(file), sha(content), 'so does a new reader');
    // A writer that changes the file through mmap, with the reader still there.
    const mm = await run('python3', ['-c', 'import mmap,sys; f=open(sys.argv[1],"r+b"); m=mmap.mmap(f.fileno(),0); m[100:105]=b"MMAP!"; m.flush(); m.close(); f.close()', file]);
    t.equal(mm.code, 0, mm.stderr);
    content = Buffer.concat([content.subarray(0, 100), Buffer.from('MMAP!'), content.subarray(105)]);
    t.equal(sha(await readFile(join(src, 'big.bin'))), sha(content), 'the node has what the mmap wrote');
    t.equal(await h.read(), `${sha(content)} ${content.length}`, 'and the reader sees it');
    // A hole punched and the file made longer by fallocate, with the reader still there.
    const punch = await run('fallocate', ['-p', '-o', String(5 * MiB), '-l', '8192', file]);
    t.equal(punch.code, 0, `a hole punched: ${punch.stderr.trim() || 'ok'}`);
    content = Buffer.concat([content.subarray(0, 5 * MiB), Buffer.alloc(8192), content.subarray(5 * MiB + 8192)]);
    t.equal(sha(await readFile(join(src, 'big.bin'))), sha(content), 'the node has the hole, as zeros');
    t.equal(await h.read(), `${sha(content)} ${content.length}`, 'and the reader sees it');
    const grow = await run('fallocate', ['-l', String(content.length + 4096), file]);
    t.equal(grow.code, 0, `the file made longer: ${grow.stderr.trim() || 'ok'}`);
    content = Buffer.concat([content, Buffer.alloc(4096)]);
    t.equal(sha(await readFile(join(src, 'big.bin'))), sha(content), 'the node has the longer file');
    t.equal(await h.read(), `${sha(content)} ${content.length}`, 'and the reader sees its new size');
    const s = await stats();
    t.ok(s.passthroughFiles.writersMirrored >= 1, `writers were passed through with their writes copied (${JSON.stringify(s.passthroughFiles)})`);
    await h.close();
    await waitFor('the backing file to be let go', async () => (await stats()).passthroughFiles.nodes === 0).catch(() => undefined);
    t.equal((await stats()).passthroughFiles.nodes, 0, 'released');
    t.equal(await shaOf(file), sha(content), 'read again after all that: the new content');
  });

  await t.test('a change on the node: new readers get it, a reader that holds the file keeps what it opened', async (t) => {
    await waitFor('a local copy of the new content', async () => {
      await shaOf(file); // read the usual way, then copied at release
      return (await stats()).localCopies.assembled >= 2;
    });
    const { h, first } = await Holder.open(file);
    t.equal(first, `${sha(content)} ${content.length}`, 'the reader holds the current content');
    t.equal((await stats()).passthroughFiles.nodes, 1, 'passed through');
    const old = content;
    content = randomBytes(9 * MiB);
    await writeFile(join(src, 'big.bin'), content);
    await waitFor('the node\'s change to reach new readers', async () => (await shaOf(file)) === sha(content));
    t.pass('a new reader gets the new content');
    t.equal(await h.read(), `${sha(old)} ${old.length}`, 'the holder keeps reading what it opened');
    await h.close();
  });
});

t.test('--passthrough off: big files are read through the mount every time', async (t) => {
  if (!nativeAddon()) return t.fail(`the native addon is built (${nativeLoadError()})`);
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  await mkdir(src);
  const content = randomBytes(6 * MiB);
  await writeFile(join(src, 'big.bin'), content);
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', join(base, 'cache'), '--driver', 'native', '--passthrough', 'off'], { GHOSTFS_RUN_DIR: join(base, 'run') });
  t.teardown(() => m.kill());
  for (let i = 0; i < 2; i++) t.equal((await sh(`sha256sum < '${join(mnt, 'big.bin')}'`)).stdout.split(' ')[0], sha(content), `read ${i + 1} is byte-identical`);
  const s = (await m.status()).driverStats;
  t.equal(s.passthrough, 0, 'not asked for');
  t.equal(s.passthroughOpens, 0, 'no open passed through');
  t.notOk(s.localCopies, 'and no local copies kept');
});
