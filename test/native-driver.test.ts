// What only the native driver does, end to end through a real mount driven
// from child processes: rename flags, nanosecond times, 1 MiB requests, the
// C read fast path (and its fallback when a chunk vanished), kernel cache
// invalidation from the change feed with long timeouts, and a dead mount
// recovered on the next start.
import t from 'tap';
import { chmod, mkdir, readFile, readdir, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { nativeAddon, nativeLoadError } from '../src/native/addon.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { MountProc, run, sh, waitFor } from './helpers/mount-proc.js';
import { BIN } from './helpers/logged-proc.js';
import { Holder } from './helpers/holder.js';

const ADDON = new URL('../../native/build/ghostfs.node', import.meta.url).pathname;
/** Calls the addon's renameat2 from a child process (this process never touches the mount). */
const renameat2 = (from: string, to: string, flags: number) => run(process.execPath, ['-e', `require(${JSON.stringify(ADDON)}).renameat2(process.argv[1], process.argv[2], ${flags})`, from, to]);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/**
 * Lists a directory in two parts: 100 entries, then "ready" and a wait for a
 * line on stdin, then the rest (printed as JSON). Node's Dir reads through
 * readdir(3), which asks for up to 1 MiB of entries per getdents call here
 * (its buffer follows the directory's block size).
 */
const PARTIAL_LISTER = `
  const fs = require('fs');
  const d = fs.opendirSync(process.argv[1]);
  const names = [];
  for (let e; names.length < 100 && (e = d.readSync()); ) names.push(e.name);
  process.stdout.write('ready\\n');
  process.stdin.once('data', () => {
    for (let e; (e = d.readSync()); ) names.push(e.name);
    d.closeSync();
    process.stdout.write(JSON.stringify(names.filter((n) => n.startsWith('n'))));
  });`;

t.test('native driver', async (t) => {
  t.ok(nativeAddon(), `the addon is built (${nativeLoadError() ?? 'loaded'})`);
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  const cache = join(base, 'cache');
  const env = { GHOSTFS_RUN_DIR: join(base, 'run') };
  await mkdir(src);
  const big = randomBytes(24 * 1024 * 1024);
  await writeFile(join(src, 'big.bin'), big);
  await writeFile(join(src, 'a'), 'A');
  await writeFile(join(src, 'b'), 'B');
  // For the listing test below: made before the node starts, which indexes them at once.
  const names = Array.from({ length: 40_000 }, (_, i) => `n${String(i).padStart(5, '0')}`);
  await mkdir(join(src, 'many'));
  for (let i = 0; i < names.length; i += 500) await Promise.all(names.slice(i, i + 500).map((n) => writeFile(join(src, 'many', n), '')));
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  // A long attribute timeout: only invalidation can make node-side changes visible quickly.
  // No passthrough: the reads here are the C fast path's (passthrough.test.ts has its own mount).
  const args = ['--cache-dir', cache, '--driver', 'native', '--attr-timeout', '3600', '--passthrough', 'off'];
  let m = await MountProc.start(node.endpoint, mnt, args, env);
  t.teardown(() => m.kill());
  const status = () => m.status();
  process.env.GHOSTFS_RUN_DIR = env.GHOSTFS_RUN_DIR;

  await t.test('large requests: 1 MiB writes arrive as 1 MiB', async (t) => {
    const dd = await run('dd', ['if=/dev/zero', `of=${join(mnt, 'zeros')}`, 'bs=1M', 'count=16', 'conv=fsync']);
    t.equal(dd.code, 0, dd.stderr);
    const s = (await status()).driverStats;
    t.equal(s.writeMax, 1 << 20, 'the largest write request was 1 MiB');
    t.ok(s.writeSizes['1M'] >= 16, `16 writes of 1 MiB (${JSON.stringify(s.writeSizes)})`);
    t.equal((await stat(join(src, 'zeros'))).size, 16 << 20, 'and the node has the file');
  });

  await t.test('a big file written front to back: its writes are made in C, and a change from another process lands in order', async (t) => {
    const data = randomBytes(40 << 20);
    const local = join(base, 'direct.src');
    await writeFile(local, data);
    const before = (await status()).driverStats;
    const cp = await run('dd', [`if=${local}`, `of=${join(mnt, 'direct.bin')}`, 'bs=1M']);
    t.equal(cp.code, 0, cp.stderr);
    const after = (await status()).driverStats;
    const made = after.directWrites - before.directWrites;
    t.ok(made >= 30, `${made} of the 40 writes made straight into the dirty copy`);
    // JS is busy with each write's bytes meanwhile: the helper thread reads requests beside it.
    t.ok(after.helperRequests > before.helperRequests, `the helper thread read some of the requests (${after.helperRequests - before.helperRequests})`);
    t.equal(sha(await readFile(join(src, 'direct.bin'))), sha(data), 'the node has the bytes');

    // A writer that stops after 16 MiB; meanwhile another process cuts the
    // file to 1 MiB and patches it, then the writer goes on at 16 MiB.
    const script = `
      const fs = require('node:fs');
      const src = fs.readFileSync(process.argv[1]);
      const fd = fs.openSync(process.argv[2], 'w');
      const put = (from, to) => { for (let o = from; o < to; o += 1 << 20) fs.writeSync(fd, src, o, 1 << 20, o); };
      put(0, 16 << 20);
      console.log('half');
      process.stdin.once('data', () => { put(16 << 20, 24 << 20); fs.closeSync(fd); console.log('closed'); process.exit(0); });`;
    const target = join(mnt, 'direct2.bin');
    const writer = spawn(process.execPath, ['-e', script, local, target], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    writer.stdout.on('data', (d: Buffer) => (out += d));
    await waitFor('the writer to write 16 MiB', async () => out.includes('half'), 30_000);
    const mid = (await status()).driverStats.directWrites as number;
    t.equal((await run('stat', ['-c', '%s', target])).stdout.trim(), String(16 << 20), 'another process sees the size the writes made');
    t.equal((await run('truncate', ['-s', '1M', target])).code, 0, 'truncated by another process');
    t.equal((await sh(`printf PATCH | dd of='${target}' bs=1 seek=524288 conv=notrunc status=none`)).code, 0, 'patched by another process');
    writer.stdin!.write('go\n');
    await once(writer, 'exit');
    t.match(out, /closed/);
    t.ok(((await status()).driverStats.directWrites as number) > mid, 'the writer went on through C once alone again');
    const expected = Buffer.alloc(24 << 20);
    data.copy(expected, 0, 0, 1 << 20);
    expected.write('PATCH', 524288);
    data.copy(expected, 16 << 20, 16 << 20, 24 << 20);
    t.equal(sha(await readFile(join(src, 'direct2.bin'))), sha(expected), 'the node has each change in the order it was made');
    t.equal((await run('sha256sum', [target])).stdout.split(' ')[0], sha(expected), 'and so does the mount');
  });

  await t.test('directories: the kernel opens them itself and keeps their listings; a change drops a listing', async (t) => {
    t.equal((await sh(`cd '${mnt}' && mkdir -p tree/a/b tree/c && touch tree/a/1 tree/a/b/2 tree/c/3`)).code, 0);
    const list = async (): Promise<string> => (await sh(`cd '${mnt}' && find tree | sort`)).stdout;
    t.equal(await list(), 'tree\ntree/a\ntree/a/1\ntree/a/b\ntree/a/b/2\ntree/c\ntree/c/3\n', 'the tree as made');
    await sh(`ls -lR '${join(mnt, 'tree')}'`); // (ls -l also asks once for extended attributes)
    await list();
    const warm = (await status()).driverStats;
    t.ok(warm.capable & (1 << 24), 'the kernel offers opening directories without asking (FUSE_CAP_NO_OPENDIR_SUPPORT)');
    t.ok(warm.opendirs <= 1, `at most one opendir request reached the mount (${warm.opendirs})`);
    await list();
    await sh(`ls -lR '${join(mnt, 'tree')}'`);
    const after = (await status()).driverStats;
    // (find asks which filesystem it walks: one statfs per run.)
    t.ok(after.forwarded - warm.forwarded <= 2, `listing again asks the mount nothing but statfs (${after.forwarded - warm.forwarded} requests)`);
    t.equal(after.opendirs, warm.opendirs, 'and no opendir');
    await sh(`touch '${join(mnt, 'tree/c/4')}'; rm '${join(mnt, 'tree/a/1')}'`);
    t.equal(await list(), 'tree\ntree/a\ntree/a/b\ntree/a/b/2\ntree/c\ntree/c/3\ntree/c/4\n', 'changes through the mount show at once');
    await writeFile(join(src, 'tree/a/b/from-node'), 'x');
    await waitFor('the node\'s change to show', async () => (await list()).includes('tree/a/b/from-node'));
    t.pass('a change on the node shows in the cached listing');
  });

  await t.test('a reader part way through a cached listing when the node removes an early name: no other name is skipped', async (t) => {
    // 40,000 names take two getdents calls (readdir(3) asks for 1 MiB). The kernel
    // serves a second listing from its cache; the node's removal drops that
    // cache while the reader is part way, and the kernel asks the mount for
    // the rest at the offset it had reached in the cached listing.
    const dir = join(mnt, 'many');
    await waitFor('the names to show', async () => Number((await sh(`ls '${dir}' | wc -l`)).stdout.trim()) === names.length);
    const first = (await sh(`ls -f '${dir}'`)).stdout.split('\n').filter((n) => n.startsWith('n'));
    const reader = spawn(process.execPath, ['-e', PARTIAL_LISTER, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
    t.teardown(() => reader.kill());
    let out = '';
    reader.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor('the reader to have its first entries', async () => out.includes('ready\n'), 10_000);
    // Removed on the node: an early name in the listing's order (the names after it move up) and a
    // late one (in the part the mount is asked for again); gone through the mount once the feed applied it.
    const gone = first[5]!;
    const goneLate = first[first.length - 5]!;
    await Promise.all([gone, goneLate].map((n) => rm(join(src, 'many', n))));
    for (const n of [gone, goneLate]) await waitFor('the removal to reach the mount', async () => (await run('stat', [join(dir, n)])).code !== 0);
    await new Promise((r) => setTimeout(r, 300)); // the listing's invalidation follows the entry's
    reader.stdin.end('go\n');
    await once(reader, 'exit');
    const seen = JSON.parse(out.slice(out.indexOf('ready\n') + 6)) as string[];
    const count = new Map<string, number>();
    for (const n of seen) count.set(n, (count.get(n) ?? 0) + 1);
    const missing = names.filter((n) => n !== gone && n !== goneLate && !count.has(n));
    const twice = [...count].filter(([, c]) => c > 1).map(([n]) => n);
    t.same(missing, [], 'every name that was there all along was listed');
    t.same(twice, [], 'and none twice');
    t.ok(count.has(goneLate), 'the late removed name is still in the listing the reader started (allowed: removed meanwhile)');
    t.not((await run('stat', [join(dir, goneLate)])).code, 0, 'but it left no entry behind in the kernel');
  });

  await t.test('two readers of one directory, the second starting after a change: each continues in its own listing', async (t) => {
    // Reader A is part way through when the node removes an early name; reader B
    // then lists the directory afresh (a newer listing without that name). When A
    // goes on, the kernel asks the mount at A's offset: a position in A's listing,
    // not in B's (there, every later name moved up one place).
    const dir = join(mnt, 'many');
    const present = (await sh(`ls -f '${dir}'`)).stdout.split('\n').filter((n) => n.startsWith('n'));
    const a = spawn(process.execPath, ['-e', PARTIAL_LISTER, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
    t.teardown(() => a.kill());
    let out = '';
    a.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor('reader A to have its first entries', async () => out.includes('ready\n'), 10_000);
    const gone = present[5]!;
    await rm(join(src, 'many', gone));
    await waitFor('the removal to reach the mount', async () => (await run('stat', [join(dir, gone)])).code !== 0);
    await new Promise((r) => setTimeout(r, 300)); // the listing's invalidation follows the entry's
    const b = (await sh(`ls -f '${dir}'`)).stdout.split('\n').filter((n) => n.startsWith('n'));
    t.notOk(b.includes(gone), 'reader B got a listing taken after the removal');
    t.equal(b.length, present.length - 1, 'with every other name');
    a.stdin.end('go\n');
    await once(a, 'exit');
    const seen = JSON.parse(out.slice(out.indexOf('ready\n') + 6)) as string[];
    const missing = present.filter((n) => n !== gone && !seen.includes(n));
    t.same(missing, [], 'reader A listed every name that was there all along');
    t.equal(new Set(seen).size, seen.length, 'and none twice');
  });

  await t.test("a reader going on in a kept listing gives the kernel each entry's attributes as they are now, not as listed", async (t) => {
    // The kernel takes a readdirplus entry's attributes as fresh for the whole
    // attribute timeout (an hour here): names changed on the node after the
    // listing was taken, and looked at since, must not go back to their older
    // sizes when the reader goes past them.
    const dir = join(mnt, 'many');
    const present = (await sh(`ls -f '${dir}'`)).stdout.split('\n').filter((n) => n.startsWith('n'));
    // A new name drops the kernel's cached listing: the reader's comes from the mount.
    await writeFile(join(src, 'many', 'n-fresh'), '');
    await waitFor('the new name to show', async () => (await run('stat', [join(dir, 'n-fresh')])).code === 0);
    await new Promise((r) => setTimeout(r, 300)); // the listing's invalidation follows the entry's
    const reader = spawn(process.execPath, ['-e', PARTIAL_LISTER, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
    t.teardown(() => reader.kill());
    let out = '';
    reader.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor('the reader to have its first entries', async () => out.includes('ready\n'), 10_000);
    // Names past those the reader has: its first getdents took one reply of readdirplus
    // entries, 1 MiB of them (about 6,500); the next reply is served from the kept listing.
    const changed = present.slice(8000, 10_000).filter((_, i) => i % 50 === 0);
    await Promise.all(changed.map((n) => writeFile(join(src, 'many', n), 'now with content\n')));
    const sizes = async () => (await sh(`cd '${dir}' && stat -c %s ${changed.join(' ')} | sort | uniq -c`)).stdout.trim();
    let seen = '';
    const warned = () => [...node.lines, ...m.lines].filter((l) => l.level >= 40).map((l) => l.msg).join('; ');
    await waitFor('the changes to reach the mount', async () => (seen = await sizes()) === `${changed.length} 17`, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}: sizes through the mount: ${seen}; warnings: ${warned()}`);
    });
    // A name looked up for the first time: the kernel then asks for the rest with attributes (readdirplus).
    await writeFile(join(src, 'many', 'n-fresh2'), '');
    await waitFor('the second new name to show', async () => (await run('stat', [join(dir, 'n-fresh2')])).code === 0);
    await new Promise((r) => setTimeout(r, 300));
    reader.stdin.end('go\n');
    await once(reader, 'exit');
    t.ok(changed.every((n) => out.includes(n)), 'the reader listed the changed names');
    t.equal(await sizes(), `${changed.length} 17`, 'after the reader went past them, they all still show their new size');
  });

  await t.test('reads: cold through JS, then from chunk files in C; an evicted chunk falls back to a fetch', async (t) => {
    const first = await sh(`sha256sum < '${join(mnt, 'big.bin')}'`);
    t.equal(first.stdout.split(' ')[0], sha(big), 'cold read is byte-identical');
    const before = (await status()).driverStats;
    t.ok(before.readMax > 128 * 1024, `read requests larger than fuse-native's 128 KiB (largest ${before.readMax})`);
    await sh('sync; echo 3 > /proc/sys/vm/drop_caches');
    const again = await sh(`sha256sum < '${join(mnt, 'big.bin')}'`);
    t.equal(again.stdout.split(' ')[0], sha(big), 'warm read is byte-identical');
    const after = (await status()).driverStats;
    t.ok(after.fastReads > before.fastReads, `served by the fast path (${after.fastReads - before.fastReads} requests)`);
    // Every byte of it; the kernel may ask for a few pages twice (its readahead racing the reader after the cache drop).
    const fastBytes = after.fastBytes - before.fastBytes;
    t.ok(fastBytes >= big.length && fastBytes <= big.length + (1 << 20), `every byte of it (${fastBytes} bytes for ${big.length})`);
    // With the chunk files in the page cache (and O_DIRECT keeping the kernel's own copy of big.bin
    // out of it), whichever thread reads a request answers it from there, none is handed to the pool.
    // This VM's host takes pages back from files on its own, a few MiB at a time, even from one read
    // a moment before: the chunk files are read just before, and a read that met an evicted page
    // anyway (it went to the pool) is tried again, up to three times in all.
    // overlayfs refuses RWF_NOWAIT reads: with the cache there, every cached read is the pool's.
    const overlay = (await statfs(cache)).type === 0x794c7630 ? `${cache} is on overlayfs, which has no RWF_NOWAIT reads` : false;
    let ahead = (await status()).driverStats;
    let warm = ahead;
    let tries = 0;
    do {
      ahead = warm;
      await sh(`find '${join(cache, 'chunks')}' -type f -exec cat {} + > /dev/null`);
      const direct = await sh(`dd if='${join(mnt, 'big.bin')}' iflag=direct bs=1M status=none | sha256sum`);
      t.equal(direct.stdout.split(' ')[0], sha(big), 'an O_DIRECT read is byte-identical');
      warm = (await status()).driverStats;
      t.ok(warm.fastReads - ahead.fastReads >= big.length >> 20, `served by the fast path (${warm.fastReads - ahead.fastReads} requests)`);
    } while (!overlay && warm.poolReads !== ahead.poolReads && ++tries < 3);
    t.equal(warm.poolReads, ahead.poolReads, `from the page cache, without the pool (read ${tries + 1} time${tries ? 's' : ''})`, { skip: overlay });
    // Chunks vanish from the cache directory behind the mount's back: reads must still be right.
    for (const sub of await readdir(join(cache, 'chunks'))) await rm(join(cache, 'chunks', sub), { recursive: true, force: true });
    for (let i = 0; i < 256; i++) await mkdir(join(cache, 'chunks', i.toString(16).padStart(2, '0')), { recursive: true });
    await sh('sync; echo 3 > /proc/sys/vm/drop_caches');
    const third = await sh(`sha256sum < '${join(mnt, 'big.bin')}'`);
    t.equal(third.stdout.split(' ')[0], sha(big), 'still byte-identical after the chunk files vanished');
    t.ok((await status()).driverStats.fastFallbacks > after.fastFallbacks, 'the fast path handed those reads back to JS');
  });

  await t.test('a reader holding a file the node rewrites reads the new content, and leaves no old pages to later readers', async (t) => {
    let content = randomBytes(3 << 20);
    await writeFile(join(src, 'held.bin'), content);
    const shaThrough = async () => (await sh(`sha256sum < '${join(mnt, 'held.bin')}'`)).stdout.split(' ')[0];
    await waitFor('the file to show', async () => (await shaThrough()) === sha(content));
    const { h, first } = await Holder.open(join(mnt, 'held.bin'));
    t.equal(first, `${sha(content)} ${content.length}`, 'the reader reads the file (its pages are now cached)');
    content = randomBytes(3 << 20); // the same size: only the mtime tells the kernel
    await writeFile(join(src, 'held.bin'), content);
    // Seen through stat only: no new reader may fill the page cache before the holder reads.
    const mtime = async (p: string) => (await run('stat', ['-c', '%y', p])).stdout;
    const want = await mtime(join(src, 'held.bin'));
    await waitFor('the change to reach the mount', async () => (await mtime(join(mnt, 'held.bin'))) === want);
    t.equal(await h.read(), `${sha(content)} ${content.length}`, 'the holder reads the new content');
    t.equal(await shaThrough(), sha(content), 'and a reader after it finds no old pages');
    await h.close();
  });

  await t.test('rename flags reach the node', async (t) => {
    const nr = await renameat2(join(mnt, 'a'), join(mnt, 'b'), 1);
    t.match(nr.stderr, /EEXIST/, 'RENAME_NOREPLACE onto an existing name fails with EEXIST');
    t.same([await readFile(join(src, 'a'), 'utf8'), await readFile(join(src, 'b'), 'utf8')], ['A', 'B'], 'and changes nothing');
    const ex = await renameat2(join(mnt, 'a'), join(mnt, 'b'), 2);
    t.equal(ex.code, 0, ex.stderr);
    t.same([await readFile(join(src, 'a'), 'utf8'), await readFile(join(src, 'b'), 'utf8')], ['B', 'A'], 'RENAME_EXCHANGE swaps the files on the node');
    t.equal((await run('cat', [join(mnt, 'a'), join(mnt, 'b')])).stdout, 'BA', 'and the mount shows them swapped');
  });

  await t.test('times to the nanosecond', async (t) => {
    await sh(`echo t > '${join(mnt, 'stamped')}'`);
    const r = await run('touch', ['-m', '-d', '2001-02-03 04:05:06.123456789', join(mnt, 'stamped')]);
    t.equal(r.code, 0, r.stderr);
    t.equal((await stat(join(src, 'stamped'), { bigint: true })).mtimeNs, BigInt(Date.parse('2001-02-03T04:05:06')) * 1_000_000n + 123_456_789n, 'the node has the exact mtime');
    t.equal((await run('stat', ['-c', '%y', join(mnt, 'stamped')])).stdout.trim().slice(0, 29), '2001-02-03 04:05:06.123456789', 'and the mount reports it');
  });

  await t.test("a directory's attributes: answered in C when asked again, and never stale after a change", async (t) => {
    const dir = join(mnt, 'dattr');
    t.equal((await run('mkdir', [dir])).code, 0);
    // Files created in it: each create marks the directory's attributes stale in the kernel, and each commit's
    // reply brings its new times (the kept attributes go, and the next GETATTR is JS's).
    const made = await sh(`for i in $(seq 1 200); do echo $i > '${dir}'/f$i; done`);
    t.equal(made.code, 0, made.stderr);
    // Then GETATTRs with nothing changed in between: stat --cached=never asks the filesystem each time
    // (AT_STATX_FORCE_SYNC), past the kernel's own cache. The first is JS's, the rest are answered in C
    // (any invalidation racing an answer keeps it from being kept: some may go to JS again).
    const before = (await status()).driverStats.dirAttrHits;
    const asked = await sh(`for i in $(seq 1 20); do stat --cached=never -c %h '${dir}'; done`);
    t.equal(asked.stdout, '2\n'.repeat(20), 'each shows the right link count');
    const hits = (await status()).driverStats.dirAttrHits - before;
    t.ok(hits > 0, `GETATTRs of the directory answered in C: ${hits} of 20`);
    // Changed through the mount: the kept attributes go, and the node's answer to the mkdir brings the directory's new count.
    t.equal((await run('mkdir', [join(dir, 'sub')])).code, 0);
    t.equal((await run('stat', ['-c', '%h', dir])).stdout.trim(), '3', 'a subdirectory made through the mount counts at once');
    t.equal((await run('rmdir', [join(dir, 'sub')])).code, 0);
    t.equal((await run('stat', ['-c', '%h', dir])).stdout.trim(), '2', 'and one removed stops counting at once');
    t.equal((await run('chmod', ['750', dir])).code, 0);
    t.equal((await run('stat', ['-c', '%a', dir])).stdout.trim(), '750', 'a mode set through the mount shows at once');
    // Changed on the node: the change feed's invalidation reaches the kept attributes too (the timeout here is an hour).
    await sh(`stat --cached=never '${dir}'; stat --cached=never '${dir}'`); // kept again, and answered from there
    await chmod(join(src, 'dattr'), 0o705);
    let mode = '';
    await waitFor('the mount to show the mode set on the node', async () => (mode = (await run('stat', ['-c', '%a', dir])).stdout.trim()) === '705', 10_000).catch(() => undefined);
    t.equal(mode, '705', 'a mode set on the node shows through the mount');
  });

  await t.test('node-side changes are invalidated in the kernel despite a one-hour timeout', async (t) => {
    t.equal((await run('cat', [join(mnt, 'later.txt')])).code, 1, 'a missing name (now cached as missing)');
    t.equal((await run('cat', [join(mnt, 'a')])).stdout, 'B');
    await writeFile(join(src, 'later.txt'), 'appeared');
    await writeFile(join(src, 'a'), 'rewritten on the node');
    const until = Date.now() + 10_000;
    let seen = '';
    while (Date.now() < until) {
      seen = (await run('cat', [join(mnt, 'later.txt'), join(mnt, 'a')])).stdout;
      if (seen === 'appearedrewritten on the node') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.equal(seen, 'appearedrewritten on the node', 'the new name and the new content are visible');
    t.ok((await status()).driverStats.notifications > 0, 'through kernel notifications');
  });

  await t.test('directories made and removed in parallel: node inode numbers reused at once never confuse the kernel', async (t) => {
    // The node's filesystem hands a removed directory's inode number to the
    // next mkdir, while the kernel may still hold the old one.
    const loops = Array.from({ length: 6 }, (_, w) => sh(`mkdir '${join(mnt, `p${w}`)}' && for i in $(seq 1 80); do mkdir '${join(mnt, `p${w}`)}'/d$i && rmdir '${join(mnt, `p${w}`)}'/d$i || exit 1; done`));
    const results = await Promise.all(loops);
    t.same(results.map((r) => r.code), [0, 0, 0, 0, 0, 0], results.map((r) => r.stderr).join('') || 'every mkdir and rmdir succeeded');
  });

  await t.test('lookups in one directory run side by side, and each finds its own name', async (t) => {
    // libfuse 3.14 never passes FUSE_PARALLEL_DIROPS on to the kernel; the driver does (passthrough.c).
    const s = (await status()).driverStats;
    const offered = ((s.capable as number) >>> 18) & 1; // FUSE_CAP_PARALLEL_DIROPS
    t.equal(s.parallelDirops, offered, offered ? 'asked for at INIT: the kernel offered it' : 'not asked for: this kernel does not offer it');
    // Names the kernel has not looked up yet (made on the node, then announced by the feed): 8 processes stat them at once.
    // Written outside the workspace and moved in whole: written in place, a name could be
    // announced while still empty and looked up before its bytes were (a size of 0).
    const side = Array.from({ length: 1200 }, (_, i) => `s${i}`);
    await mkdir(join(base, 'side'));
    await Promise.all(side.map((n) => writeFile(join(base, 'side', n), n)));
    await rename(join(base, 'side'), join(src, 'side'));
    // (Not listed through the mount: a listing would hand the kernel every name, and no lookup would be left.)
    await waitFor('the last name on the mount', async () => (await run('stat', ['-c', '%s', join(mnt, 'side', side.at(-1)!)])).code === 0, 30_000);
    const r = await sh(`cd '${join(mnt, 'side')}' && printf '%s\\n' ${side.join(' ')} | xargs -P 8 -n 50 stat -c '%n %s'`);
    t.equal(r.code, 0, r.stderr || 'every stat succeeded');
    const lines = r.stdout.split('\n').filter(Boolean).sort();
    t.same(lines, side.map((n) => `${n} ${n.length}`).sort(), 'each name has its own size');
  });

  await t.test('a mount that answers nothing is taken over by the next start; a live one is not', async (t) => {
    const second = await run(process.execPath, [BIN, 'mount', node.endpoint, mnt, '--foreground', ...args], { timeoutMs: 60_000 });
    t.equal(second.code, 1, 'a second mount over a live one fails');
    t.match(second.stderr, /already mounted by a running ghostfs/, second.stderr);
    t.equal((await run('cat', [join(mnt, 'a')])).stdout, 'rewritten on the node', 'the live mount still serves');
    // Stopped, the process keeps its FUSE connection and answers nothing: a
    // killed process with a thread stuck in the kernel does the same.
    const old = m;
    process.kill(old.child.pid!, 'SIGSTOP');
    t.teardown(() => {
      old.child.kill('SIGKILL');
      old.child.kill('SIGCONT');
    });
    const waiting = run('stat', [join(mnt, 'never-looked-up')], { timeoutMs: 120_000 });
    await new Promise((r) => setTimeout(r, 500));
    // Its own cache dir: the stopped process still holds the first one (a dead one would not).
    m = await MountProc.start(node.endpoint, mnt, [...args, '--cache-dir', join(base, 'cache-2')], env);
    const r = await waiting;
    t.not(r.code, 0, 'the request left waiting on the old mount failed');
    t.ok(r.ms < 60_000, `and did not wait for ever (${Math.round(r.ms)} ms)`);
    t.ok(m.lines.some((l) => /aborted its FUSE connection/.test(String(l.msg))), 'the new mount says what it did');
    t.equal((await run('cat', [join(mnt, 'a')])).stdout, 'rewritten on the node', 'the new mount serves');
    old.child.kill('SIGKILL');
    old.child.kill('SIGCONT');
    await old.exited;
  });

  await t.test('a dead mount is recovered by the next start', async (t) => {
    m.child.kill('SIGKILL');
    await m.exited;
    m = await MountProc.start(node.endpoint, mnt, args, env);
    t.equal((await run('cat', [join(mnt, 'a')])).stdout, 'rewritten on the node', 'the new mount serves');
  });
});

t.test('glibc keeps chunk-sized buffers on the heap when asked', async (t) => {
  // In a child process: the setting is process-wide.
  const ask = async (mmap: number, trim: number): Promise<string> =>
    (await run(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(ADDON)}).keepMallocMemory(${mmap}, ${trim})))`])).stdout;
  t.equal(await ask(8 << 20, 64 << 20), 'true', 'the values ghostfs uses are taken');
});

t.test("glibc's allocator reports what native code holds and what it keeps freed", async (t) => {
  // Node's buffers are malloc'd: holding 64 MiB of them shows in "in use"
  // (less a little: Node's own threads may free something meanwhile).
  const script = `const a = require(${JSON.stringify(ADDON)}); const before = a.mallocStats(); const held = Buffer.alloc(64 << 20, 1); const after = a.mallocStats(); process.stdout.write(JSON.stringify({ before, after, n: held.length }))`;
  const { before, after } = JSON.parse((await run(process.execPath, ['-e', script])).stdout);
  t.ok(after.inUseBytes - before.inUseBytes >= 60 << 20, `a 64 MiB buffer shows as in use (${before.inUseBytes} → ${after.inUseBytes})`);
  t.ok(before.freeBytes >= 0 && before.mappedBytes >= 0 && after.mappedBytes <= after.inUseBytes, 'free held and mapped are counted');
});

t.test('freed heap memory the allocator kept goes back to the kernel when trimmed', async (t) => {
  // 96 MiB of 1 MiB buffers on the heap (as keepMallocMemory has it), freed,
  // with a small buffer after them so the heap's top cannot shrink by itself.
  const script = `
    const a = require(${JSON.stringify(ADDON)});
    a.keepMallocMemory(8 << 20, 1 << 30);
    const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
    let bufs = Array.from({ length: 96 }, () => Buffer.alloc(1 << 20, 1));
    const pin = Buffer.alloc(64 << 10, 1);
    bufs = null; gc(); gc();
    const held = rss(), kept = a.mallocStats().freeBytes;
    const released = a.mallocTrim();
    process.stdout.write(JSON.stringify({ held, kept, after: rss(), released, pin: pin.length }));`;
  const r = JSON.parse((await run(process.execPath, ['--expose-gc', '-e', script])).stdout);
  t.ok(r.kept >= 64 << 20, `the allocator kept the freed buffers (${r.kept >> 20} MiB)`);
  t.equal(r.released, true, 'the trim released memory');
  t.ok(r.held - r.after >= 64 << 20, `resident memory fell by ${(r.held - r.after) >> 20} MiB`);
});
