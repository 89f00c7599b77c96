// MetaCalls: the inline and the thread-pool variants answer alike, on a
// real directory: same results, and the same errors as rejections (callers
// match on `code`).
import t from 'tap';
import { mkdtemp, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { metaCalls } from '../src/node/meta-calls.js';

const code = (p: Promise<unknown>): Promise<string | undefined> =>
  p.then(
    () => undefined,
    (err: NodeJS.ErrnoException) => err.code,
  );

for (const mode of ['inline', 'pool'] as const) {
  t.test(`${mode}: results and errors`, async (t) => {
    const fs = metaCalls(mode);
    const dir = await mkdtemp(join(tmpdir(), 'ghostfs-test-meta-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const at = (n: string): string => join(dir, n);

    await fs.mkdir(at('d'), 0o750);
    t.equal((await fs.lstat(at('d'))).mode & 0o7777, 0o750 & ~process.umask(), 'mkdir makes the directory with the mode asked (less the umask)');
    t.equal(await code(fs.mkdir(at('d'), 0o755)), 'EEXIST', 'mkdir over a name: EEXIST');

    await writeFile(at('d/f'), 'x');
    t.equal(await fs.lstatOrNull(at('nothing')), null, 'lstatOrNull of nothing: null');
    t.equal((await fs.lstatOrNull(at('d/f')))?.size, 1, 'lstatOrNull of a file: its attributes');
    t.equal(await code(fs.lstat(at('nothing'))), 'ENOENT', 'lstat of nothing rejects with ENOENT');
    t.equal(await code(fs.lstatOrNull(at('d/f/x'))), 'ENOTDIR', 'lstatOrNull rejects what is not a plain absence');
    t.equal(await code(fs.rmdir(at('d'))), 'ENOTEMPTY', 'rmdir of a full directory: ENOTEMPTY');

    await fs.symlink('d', at('l'));
    t.equal(await fs.readlink(at('l')), 'd', 'symlink and readlink');
    t.equal(await fs.realpath(at('l')), await fs.realpath(at('d')), 'realpath follows the link');
    t.ok(((await fs.lstat(at('l'))).mode & 0o170000) === 0o120000, 'lstat does not follow the link');
    t.equal(await code(fs.chmodNoFollow(at('l'), () => 0o600)), 'ELOOP', 'chmodNoFollow refuses a symlink with ELOOP');
    let typeSeen = 0;
    await fs.chmodNoFollow(at('d/f'), (stMode) => ((typeSeen = stMode & 0o170000), 0o604));
    t.equal((await stat(at('d/f'))).mode & 0o7777, 0o604, 'chmodNoFollow changes a file');
    t.equal(typeSeen, 0o100000, 'to the mode chosen for the type of what it opened');
    await fs.chmod(at('d/f'), 0o640);
    t.equal((await stat(at('d/f'))).mode & 0o7777, 0o640, 'chmod changes a file');
    const me = await stat(at('d/f'));
    await fs.lchown(at('l'), me.uid, me.gid);
    t.equal((await fs.lstat(at('l'))).uid, me.uid, 'lchown on a symlink');

    await fs.link(at('d/f'), at('h'));
    t.equal((await fs.lstat(at('h'))).nlink, 2, 'link adds a name');
    t.equal(await code(fs.link(at('d/f'), at('h'))), 'EEXIST', 'link over a name: EEXIST');
    await fs.rename(at('h'), at('h2'));
    t.equal(await fs.lstatOrNull(at('h')), null, 'rename: the old name is gone');
    t.same((await fs.readdir(dir)).sort(), ['d', 'h2', 'l'], 'readdir lists the names');
    t.equal(await code(fs.readdir(at('nothing'))), 'ENOENT', 'readdir of nothing: ENOENT');
    await writeFile(at('r'), 'replacement');
    await fs.renameOver(at('r'), at('h2'));
    t.equal((await fs.lstat(at('h2'))).size, 11, 'renameOver replaces the file at the target');
    t.equal((await fs.lstat(at('d/f'))).nlink, 1, 'and the name it replaced is gone from the file');
    await fs.link(at('d/f'), at('h2b'));
    await fs.rename(at('h2b'), at('h2'));
    await fs.unlink(at('h2'));
    t.equal((await fs.lstat(at('d/f'))).nlink, 1, 'unlink drops a name');
    t.equal(await code(fs.unlink(at('h2'))), 'ENOENT', 'unlink of nothing: ENOENT');
    await fs.unlink(at('d/f'));
    await fs.rmdir(at('d'));
    t.equal(await fs.lstatOrNull(at('d')), null, 'rmdir of an empty directory');
  });
}

t.test("a big file's last name goes through the pool, whatever the mode: freeing its blocks takes time", async (t) => {
  const inline = metaCalls('inline');
  const pool = metaCalls('pool');
  const dir = await mkdtemp(join(tmpdir(), 'ghostfs-test-meta-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const big = join(dir, 'big');
  await writeFile(join(dir, 'small'), 'x');
  const sparse = join(dir, 'sparse');
  await writeFile(sparse, '');
  await truncate(sparse, 1 << 30);
  t.equal(inline.freeing(await inline.lstat(sparse)), inline, 'a sparse file of 1 GiB frees next to nothing: inline');
  t.equal(inline.freeing(await inline.lstat(join(dir, 'small'))), inline, 'a small file: inline');
  t.equal(inline.freeing(null), inline, 'nothing there (a rename onto a free name): inline');
  t.equal(inline.freeing(await inline.lstat(dir)), inline, 'a directory: inline');
  // Blocks allocated, not a sparse file: they are what the filesystem frees at the unlink.
  await writeFile(big, Buffer.alloc(64 << 20, 2));
  const bigAttr = await inline.lstat(big);
  t.equal(inline.freeing(bigAttr), pool, 'a file with 64 MiB allocated: the pool');
  await inline.link(big, join(dir, 'big2'));
  t.equal(inline.freeing(await inline.lstat(big)), inline, 'the same file with a second name frees nothing yet: inline');
  t.equal(pool.freeing(bigAttr), pool, 'the pool variant always stays the pool');
  await writeFile(join(dir, 'new'), 'n');
  await inline.renameOver(join(dir, 'new'), join(dir, 'big2'));
  t.equal((await inline.lstat(big)).nlink, 1, 'renameOver replaces a name of the big file');
  await inline.freeing(await inline.lstat(join(dir, 'big2'))).unlink(join(dir, 'big2'));
  await inline.freeing(await inline.lstat(big)).unlink(big);
  t.equal(await inline.lstatOrNull(big), null, 'and the unlink through it works');
});
