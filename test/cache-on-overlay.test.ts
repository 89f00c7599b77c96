// A chunk cache on overlayfs (a container's own root): overlayfs refuses
// reads that must not wait (RWF_NOWAIT), so the native driver hands every
// cached read to its read pool there. Reads must be right all the same, and
// the mount says at start that the cache is in a slow place.
import t from 'tap';
import { mkdir, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { nativeAddon, nativeLoadError } from '../src/native/addon.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { MountProc, run, sh } from './helpers/mount-proc.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('a chunk cache on overlayfs: cached reads are right, made by the pool, and the mount warns', async (t) => {
  t.ok(nativeAddon(), `the addon is built (${nativeLoadError() ?? 'loaded'})`);
  const base = await tempDir(t);
  const ovl = join(base, 'ovl');
  for (const d of ['lower', 'upper', 'work', 'merged']) await mkdir(join(ovl, d), { recursive: true });
  const merged = join(ovl, 'merged');
  const made = await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${join(ovl, 'lower')},upperdir=${join(ovl, 'upper')},workdir=${join(ovl, 'work')}`, merged]);
  if (made.code !== 0) {
    // Mounting one needs root and the kernel's overlay module: a machine without them cannot run this.
    t.ok(false, 'an overlayfs mounted for the cache', { skip: `no overlayfs could be mounted here: ${made.stderr.trim()}` });
    return;
  }
  t.teardown(() => run('umount', ['-l', merged]));
  t.equal((await statfs(merged)).type, 0x794c7630, 'statfs reports overlayfs there');

  const src = join(base, 'src');
  await mkdir(src);
  const data = randomBytes(6 * 1024 * 1024);
  await writeFile(join(src, 'data.bin'), data);
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const mnt = join(base, 'mnt');
  const env = { GHOSTFS_RUN_DIR: join(base, 'run') };
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', join(merged, 'cache'), '--driver', 'native', '--passthrough', 'off'], env);
  t.teardown(() => m.kill());
  process.env.GHOSTFS_RUN_DIR = env.GHOSTFS_RUN_DIR;

  const warned = await m.waitFor((l) => /chunk cache is on overlayfs/.test(l.msg), 5000).catch(() => undefined);
  t.ok(warned, 'the mount warns that the chunk cache is on overlayfs');

  const cold = await sh(`sha256sum < '${join(mnt, 'data.bin')}'`);
  t.equal(cold.stdout.split(' ')[0], sha(data), 'a cold read (fetched into the cache) is byte-identical');
  const before = (await m.status()).driverStats;
  // O_DIRECT keeps the kernel's own copy out of it: every request reaches the driver, which reads the chunk files.
  const direct = await sh(`dd if='${join(mnt, 'data.bin')}' iflag=direct bs=1M status=none | sha256sum`);
  t.equal(direct.stdout.split(' ')[0], sha(data), 'an O_DIRECT re-read from the cache is byte-identical');
  const after = (await m.status()).driverStats;
  t.ok(after.fastReads - before.fastReads >= data.length >> 20, `served from the chunk files in C (${after.fastReads - before.fastReads} requests)`);
  t.ok(after.poolReads - before.poolReads >= data.length >> 20, `each by the read pool (${after.poolReads - before.poolReads} requests)`);
});
