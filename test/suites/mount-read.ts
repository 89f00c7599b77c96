// The mount's read side end to end: a real node, a real FUSE mount, every
// access made by child processes (sha256sum, find, ls, stat, git, cat).
import t from 'tap';
import { mkdir, writeFile, symlink, chmod, cp, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NodeProc, tempDir } from '../helpers/node-proc.js';
import { MountProc, run, sh, waitFor } from '../helpers/mount-proc.js';
import { RelayProxy } from '../helpers/relay-proxy.js';
import { isFuseNative } from '../helpers/driver.js';

/** Writes `size` random bytes without holding them all in memory. */
async function randomFile(path: string, size: number): Promise<void> {
  const fh = await open(path, 'w');
  for (let done = 0; done < size; ) {
    const n = Math.min(8 << 20, size - done);
    await fh.write(randomBytes(n));
    done += n;
  }
  await fh.close();
}

async function makeTree(src: string): Promise<void> {
  await mkdir(join(src, 'a/b/c/d'), { recursive: true });
  await writeFile(join(src, 'a/b/c/d/deep.txt'), 'deep\n');
  await writeFile(join(src, 'a/b/file.txt'), 'file in b\n');
  await writeFile(join(src, 'empty'), '');
  await writeFile(join(src, 'a/empty2'), '');
  await randomFile(join(src, 'big.bin'), 200 * 1024 * 1024);
  await symlink('a/b/file.txt', join(src, 'link-rel'));
  await symlink('a', join(src, 'link-dir'));
  await symlink('does/not/exist', join(src, 'dangling'));
  await mkdir(join(src, 'ünï'));
  await writeFile(join(src, 'ünï/ćødé ✓.txt'), 'unicode\n');
  await writeFile(join(src, '日本語.txt'), 'nihongo\n');
  await writeFile(join(src, 'run.sh'), '#!/bin/sh\necho ok\n');
  await chmod(join(src, 'run.sh'), 0o755);
  for (let d = 0; d < 50; d++) {
    await mkdir(join(src, `many/d${d}`), { recursive: true });
    await Promise.all(Array.from({ length: 100 }, (_, f) => writeFile(join(src, `many/d${d}/f${f}.txt`), `file ${d}/${f}\n`.repeat((f % 7) + 1))));
  }
  await mkdir(join(src, 'uncached'));
  await writeFile(join(src, 'uncached/secret.txt'), 'never read before the node dies\n');
  // A real git repository with two commits.
  await mkdir(join(src, 'repo/src'), { recursive: true });
  await writeFile(join(src, 'repo/README'), 'repo\n');
  await writeFile(join(src, 'repo/src/main.c'), 'int main(void) { return 0; }\n');
  const git = (...a: string[]) => run('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=t', ...a], { cwd: join(src, 'repo') });
  await git('init', '-q');
  await git('add', '-A');
  await git('commit', '-qm', 'first');
  await writeFile(join(src, 'repo/src/util.c'), 'int util(void) { return 1; }\n');
  await git('add', '-A');
  await git('commit', '-qm', 'second');
}

/** A node serving `src`, and another serving a copy of it (its own inode numbers), each with its own state under `base`. */
async function twoReplicas(t: { teardown(fn: () => unknown): void }, base: string, src: string): Promise<[NodeProc, NodeProc]> {
  await cp(src, join(base, 'src2'), { recursive: true, preserveTimestamps: true });
  const node1 = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state1')]);
  t.teardown(() => node1.stop('SIGKILL'));
  const node2 = await NodeProc.start(['--root', join(base, 'src2'), '--state-dir', join(base, 'state2')]);
  t.teardown(() => node2.stop('SIGKILL'));
  return [node1, node2];
}

t.test('mount: read side', async (t) => {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  const cache = join(base, 'cache');
  await mkdir(src);
  await makeTree(src);
  // Let delayed allocation settle: st_blocks (ls's "total") may move after a
  // write without any other attribute moving, and the node indexes it as is.
  await run('sync', []);
  let node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  let m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--deadline', '3s']);
  t.teardown(() => m.kill());

  await t.test('every file reads back byte-identical', async (t) => {
    const sums = (dir: string) => sh(`cd '${dir}' && find . -type f ! -path './uncached/*' -print0 | sort -z | xargs -0 sha256sum`);
    const [want, got] = [await sums(src), await sums(mnt)];
    t.equal(got.code, 0, got.stderr);
    t.ok(want.stdout.split('\n').length > 5000, 'the tree has more than 5000 files');
    t.equal(got.stdout, want.stdout, 'sha256 of every file through the mount equals the source');
    const big = await run('cmp', [join(src, 'big.bin'), join(mnt, 'big.bin')]);
    t.equal(big.code, 0, 'the 200 MiB file compares equal');
  });

  await t.test('find, ls -lR and stat report what the source reports', async (t) => {
    const listing = (dir: string) => sh(`cd '${dir}' && find . -printf '%y %m %s %n %U %G %i %l %p\\n' | LC_ALL=C sort`);
    const [want, got] = [await listing(src), await listing(mnt)];
    t.equal(got.stdout, want.stdout, 'find: type, mode, size, links, owner, inode, target and path agree');
    const ls = (dir: string) => sh(`cd '${dir}' && ls -lRni --time-style=+%s .`);
    const [lsWant, lsGot] = [await ls(src), await ls(mnt)];
    t.equal(lsGot.stdout, lsWant.stdout, 'ls -lRni agrees (inode numbers are the node\'s own)');
    const st = (dir: string) => sh(`cd '${dir}' && find . -print0 | LC_ALL=C sort -z | xargs -0 stat -c '%n %i %s %a %h %u %g %Y %Z %F'`);
    const [stWant, stGot] = [await st(src), await st(mnt)];
    t.equal(stGot.stdout, stWant.stdout, 'stat agrees to the second on every path');
    // fuse-native carries times in milliseconds; the native driver carries nanoseconds.
    const digits = isFuseNative ? 3 : 9;
    const times = (dir: string) => sh(`cd '${dir}' && find . -type f -printf '%T@ %p\\n' | LC_ALL=C sort -k2 | awk '{ split($1, t, "."); printf "%s.%s %s\\n", t[1], substr(t[2], 1, ${digits}), $2 }'`);
    const [tWant, tGot] = [await times(src), await times(mnt)];
    t.equal(tGot.stdout, tWant.stdout, `mtimes agree to ${isFuseNative ? 'the millisecond (the limit of the fuse-native driver)' : 'the nanosecond'}`);
  });

  await t.test('git works on the mounted repository', async (t) => {
    const status = await run('git', ['-C', join(mnt, 'repo'), 'status', '--porcelain']);
    t.equal(status.code, 0, status.stderr);
    t.equal(status.stdout, '', 'git status is clean');
    const logGot = await run('git', ['-C', join(mnt, 'repo'), 'log', '--format=%H %s']);
    const logWant = await run('git', ['-C', join(src, 'repo'), 'log', '--format=%H %s']);
    t.equal(logGot.stdout, logWant.stdout, 'git log agrees');
    const fsck = await run('git', ['-C', join(mnt, 'repo'), 'fsck', '--no-dangling']);
    t.equal(fsck.code, 0, 'git fsck reads every object intact');
  });

  await t.test('errors are the errnos tools expect', async (t) => {
    const missing = await run('cat', [join(mnt, 'no/such/file')]);
    t.match(missing.stderr, /No such file or directory/);
    const exists = await run('mkdir', [join(mnt, 'a')]);
    t.match(exists.stderr, /File exists/);
    const notDir = await run('ls', [join(mnt, 'empty/x')]);
    t.match(notDir.stderr, /Not a directory/);
  });

  await t.test('a change on the node reaches the mount through the change feed', async (t) => {
    await writeFile(join(src, 'a/b/file.txt'), 'changed on the node\n');
    await writeFile(join(src, 'a/new-on-node.txt'), 'new\n');
    let seen = '';
    for (let i = 0; i < 100 && seen !== 'changed on the node\nnew\n'; i++) {
      await new Promise((r) => setTimeout(r, 200));
      seen = (await sh(`cat '${join(mnt, 'a/b/file.txt')}' '${join(mnt, 'a/new-on-node.txt')}'`)).stdout;
    }
    t.equal(seen, 'changed on the node\nnew\n', 'new content and the new file are visible');
  });

  await t.test('a process inside a directory the node changes keeps its working directory', async (t) => {
    // The directory's attributes change (a file appears in it on the node) while
    // a shell sits in it: its working directory must still resolve, and the new
    // file must show up there.
    const dir = join(mnt, 'a/b');
    const marker = join(src, 'a/b/appeared-on-node.txt');
    const inside = sh(`cd '${dir}' && for i in $(seq 1 300); do [ -e appeared-on-node.txt ] && break; sleep 0.05; done; sleep 0.5; readlink /proc/self/cwd && ls appeared-on-node.txt`);
    await new Promise((r) => setTimeout(r, 300));
    await writeFile(marker, 'x\n');
    const r = await inside;
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, `${dir}\nappeared-on-node.txt\n`, 'getcwd() still answers, and the new file is there');
  });

  await t.test('node down: cached data keeps working, the rest fails fast', async (t) => {
    await node.stop('SIGKILL');
    const cached = await run('cat', [join(mnt, 'a/b/c/d/deep.txt')]);
    t.equal(cached.stdout, 'deep\n', 'a cached file still reads');
    const ls = await run('ls', [join(mnt, 'many/d7')]);
    t.equal(ls.stdout.split('\n').filter(Boolean).length, 100, 'a cached directory still lists');
    const uncached = await run('cat', [join(mnt, 'uncached/secret.txt')], { timeoutMs: 60_000 });
    t.not(uncached.code, 0, 'an uncached file fails');
    t.match(uncached.stderr, /Host is down|Input\/output error/, `with a clear errno: ${uncached.stderr.trim()}`);
    t.ok(uncached.ms < 30_000, `and without hanging (${Math.round(uncached.ms)} ms, deadline 3 s)`);
  });

  await t.test('remount with the node down serves the cached tree', async (t) => {
    const before = (await sh(`cd '${mnt}' && find . | LC_ALL=C sort`)).stdout;
    await m.stop();
    m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', cache, '--deadline', '2s']);
    t.equal(m.lines.find((l) => l.msg === 'mounted')!.offline, true, 'the mount knows it is offline');
    const after = (await sh(`cd '${mnt}' && find . | LC_ALL=C sort`)).stdout;
    t.equal(after, before, 'the whole known tree is listed');
    t.equal((await run('cat', [join(mnt, 'run.sh')])).stdout, '#!/bin/sh\necho ok\n', 'cached content reads');
    // The node comes back: the mount reconnects and sees changes made meanwhile.
    await writeFile(join(src, 'while-offline.txt'), 'back\n');
    node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), '--listen', `127.0.0.1:${node.port}`]);
    let seen = '';
    for (let i = 0; i < 100 && seen !== 'back\n'; i++) {
      await new Promise((r) => setTimeout(r, 200));
      seen = (await run('cat', [join(mnt, 'while-offline.txt')])).stdout;
    }
    t.equal(seen, 'back\n', 'after the node returns, changes made meanwhile appear');
    await m.stop();
  });
});

t.test('replicas: a corrupted chunk is caught, a dying replica is survived', async (t) => {
  const base = await tempDir(t);
  const src = join(base, 'src');
  await mkdir(src);
  await randomFile(join(src, 'big.bin'), 64 * 1024 * 1024);
  await writeFile(join(src, 'small.txt'), 'small\n');
  const [node1, node2] = await twoReplicas(t, base, src);
  const proxy = await RelayProxy.start(node1.endpoint, { corruptChunks: true });
  t.teardown(() => proxy.stop());
  const want = (await run('sha256sum', [join(src, 'big.bin')])).stdout.split(' ')[0];

  await t.test('bad bytes from one node are refused and fetched from another', async (t) => {
    const mnt = join(base, 'mnt-a');
    const m = await MountProc.start(proxy.endpoint, mnt, ['--cache-dir', join(base, 'cache-a'), '--replica', node2.endpoint]);
    t.teardown(() => m.kill());
    const got = await run('sha256sum', [join(mnt, 'big.bin')]);
    t.equal(got.stdout.split(' ')[0], want, 'the file reads intact');
    t.ok(m.lines.some((l) => l.msg.startsWith('chunk failed verification') && l.node === proxy.endpoint), 'the bad chunk was logged with its node');
    await m.stop();
  });

  await t.test('with no intact replica the read fails with EIO', async (t) => {
    const mnt = join(base, 'mnt-b');
    const m = await MountProc.start(proxy.endpoint, mnt, ['--cache-dir', join(base, 'cache-b')]);
    t.teardown(() => m.kill());
    const got = await run('cat', [join(mnt, 'small.txt')]);
    t.not(got.code, 0);
    t.match(got.stderr, /Input\/output error/);
    t.ok(m.lines.some((l) => l.level === 40 && typeof l.chunk === 'string'), 'a warning names the chunk');
    await m.stop();
  });

  await t.test('the primary dies mid-read: the read completes from the replica', async (t) => {
    const mnt = join(base, 'mnt-c');
    const m = await MountProc.start(node1.endpoint, mnt, ['--cache-dir', join(base, 'cache-c'), '--replica', node2.endpoint, '--readahead', '2']);
    t.teardown(() => m.kill());
    const head = await run('dd', [`if=${join(mnt, 'big.bin')}`, 'of=/dev/null', 'bs=1M', 'count=16']);
    t.equal(head.code, 0, 'the first 16 MiB read from the primary');
    await node1.stop('SIGKILL');
    const got = await run('sha256sum', [join(mnt, 'big.bin')]);
    t.equal(got.stdout.split(' ')[0], want, 'the whole file reads intact after the primary died');
    await m.stop();
  });
});

t.test('a directory being read has its subdirectories listed ahead of the walker', async (t) => {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  for (const d of ['top/a', 'top/b', 'top/c']) {
    await mkdir(join(src, d), { recursive: true });
    await writeFile(join(src, d, 'f'), d);
  }
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state'), '--metrics', '127.0.0.1:0']);
  t.teardown(() => node.stop('SIGKILL'));
  await waitFor('the node to serve its metrics', async () => !!node.line('metrics serving'));
  const listings = async (): Promise<number> => {
    const text = await node.scrapeMetrics();
    let n = 0;
    for (const m of text.matchAll(/^ghostfs_node_rpcs_total\{method="ListDir"[^}]*\} (\d+)/gm)) n += Number(m[1]);
    return n;
  };
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', join(base, 'cache')]);
  t.teardown(() => m.kill());
  // The feed's first answer re-lists what the mount knows: let that pass first.
  await waitFor('the change feed to answer', async () => (await m.status()).changeFeed.connected);
  await new Promise((r) => setTimeout(r, 500));
  const before = await listings();
  t.equal((await run('ls', [join(mnt, 'top')])).stdout, 'a\nb\nc\n');
  await waitFor('top and its three subdirectories to be listed', async () => (await listings()) >= before + 4);
  await new Promise((r) => setTimeout(r, 300));
  const ahead = await listings();
  t.equal((await run('cat', [join(mnt, 'top/a/f'), join(mnt, 'top/b/f'), join(mnt, 'top/c/f')])).stdout, 'top/atop/btop/c', 'the walker finds them');
  t.equal((await run('ls', [join(mnt, 'top/a'), join(mnt, 'top/b'), join(mnt, 'top/c')])).code, 0);
  t.equal((await listings()) - ahead, 0, 'without asking the node for their listings again');
  await m.stop();
});

t.test('a switch to a replica keeps the working directories of processes inside the mount', async (t) => {
  // The replica is a copy: every inode number differs from the primary's,
  // so the listings after the switch change every entry the mount shows.
  const base = await tempDir(t);
  const src = join(base, 'src');
  await mkdir(join(src, 'w/inner'), { recursive: true });
  await writeFile(join(src, 'w/inner/here.txt'), 'here\n');
  const [node1, node2] = await twoReplicas(t, base, src);
  const mnt = join(base, 'mnt');
  const m = await MountProc.start(node1.endpoint, mnt, ['--cache-dir', join(base, 'cache'), '--replica', node2.endpoint, '--deadline', '2s']);
  t.teardown(() => m.kill());
  await waitFor('the change feed to answer', async () => (await m.status()).changeFeed.connected);
  const dir = join(mnt, 'w/inner');
  const ready = join(base, 'inside');
  const go = join(base, 'go');
  const inside = sh(`cd '${dir}' && cat here.txt > /dev/null && touch '${ready}' && while [ ! -e '${go}' ]; do sleep 0.05; done; readlink /proc/self/cwd && cat here.txt`);
  await waitFor('the shell to be inside', async () => (await stat(ready).then(() => true, () => false)));
  const revalidations = (): number => m.lines.filter((l) => l.msg === 'revalidated cached tree').length;
  const before = revalidations();
  await node1.stop('SIGKILL');
  await waitFor('the mount to list what it knows from the replica', async () => revalidations() > before);
  await writeFile(go, '');
  const r = await inside;
  t.equal(r.code, 0, r.stderr);
  // (The kernel's own name for the directory: coreutils' pwd would find its way up by ".." even from a dropped entry.)
  t.equal(r.stdout, `${dir}\nhere\n`, 'the working directory still has its name, and a relative path still reads');
  t.equal((await run('ls', [dir])).stdout, 'here.txt\n', 'the directory lists from the replica');
  await m.stop();
});
