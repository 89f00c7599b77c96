// The mount's chunk cache on a real filesystem: chunk files written in one
// addon job (O_TMPFILE, then linked), what they hold, and a full disk.
import t from 'tap';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ChunkStore } from '../src/cache/chunk-store.js';
import { hashChunk, hex } from '../src/content/manifest.js';
import { nativeAddon } from '../src/native/addon.js';
import { fillUp } from '../scripts/soak/lib/small-fs.js';
import { tempDir } from './helpers/node-proc.js';
import { smallFs } from './helpers/small-fs.js';

const addon = nativeAddon();

t.test('chunk files hold their bytes, private to the owner, with nothing left beside them', async (t) => {
  const dir = join(await tempDir(t), 'chunks');
  const store = new ChunkStore(dir);
  await store.init();
  const chunks = [randomBytes(1), randomBytes(4096), randomBytes(1 << 20)];
  for (const c of chunks) await store.put(hashChunk(c), c);
  for (const c of chunks) {
    const h = hex(hashChunk(c));
    const file = join(dir, h.slice(0, 2), h);
    t.ok((await readFile(file)).equals(c), `${c.length} bytes read back`);
    t.equal((await stat(file)).mode & 0o777, 0o600, 'mode 0600');
  }
  const names = (await Promise.all((await readdir(dir)).map((d) => readdir(join(dir, d))))).flat();
  t.equal(names.length, chunks.length, 'one file per chunk, no temporary files');
  t.same(store.stats().chunks, chunks.length);
  // A new store over the same dir finds them.
  const again = new ChunkStore(dir);
  await again.init();
  t.equal(again.stats().chunks, chunks.length, 'found again at the next start');
  t.equal(again.stats().bytes, chunks.reduce((n, c) => n + c.length, 0));
});

t.test('writeCacheFile: a taken name is left as it is; a name must be one component', async (t) => {
  t.ok(addon, 'the addon is built');
  if (!addon) return;
  const dir = await tempDir(t);
  t.equal(await addon.writeCacheFile(dir, 'x', Buffer.from('first')), true, 'made');
  t.equal(await addon.writeCacheFile(dir, 'x', Buffer.from('second')), false, 'the name was taken');
  t.equal(await readFile(join(dir, 'x'), 'utf8'), 'first', 'and kept its bytes');
  t.throws(() => addon.writeCacheFile(dir, '../y', Buffer.from('z')), /one path component/);
  await t.rejects(addon.writeCacheFile(join(dir, 'missing'), 'z', Buffer.from('z')), { code: 'ENOENT' }, 'no such directory');
  t.same(await readdir(dir), ['x'], 'nothing else left in the directory');
});

t.test('writeCacheFileSync: the same answers, in the calling thread', async (t) => {
  t.ok(addon, 'the addon is built');
  if (!addon) return;
  const dir = await tempDir(t);
  t.equal(addon.writeCacheFileSync(dir, 'x', Buffer.from('first')), true, 'made');
  t.equal(addon.writeCacheFileSync(dir, 'x', Buffer.from('second')), false, 'the name was taken');
  t.equal(await readFile(join(dir, 'x'), 'utf8'), 'first', 'and kept its bytes');
  t.throws(() => addon.writeCacheFileSync(dir, '../y', Buffer.from('z')), /one path component/);
  t.throws(() => addon.writeCacheFileSync(join(dir, 'missing'), 'z', Buffer.from('z')), { code: 'ENOENT' }, 'no such directory');
  t.same(await readdir(dir), ['x'], 'nothing else left in the directory');
});

// A big chunk is written by a worker thread, a small one in the calling thread: both paths meet the full disk.
for (const [kind, size] of [['', 1 << 20], [', a small chunk (written in the calling thread)', 16 << 10]] as const) {
  t.test(`a full disk${kind}: the store evicts older chunks and writes the new one`, async (t) => {
    const fs = await smallFs(t, '16m');
    const dir = join(fs, 'chunks');
    const store = new ChunkStore(dir);
    await store.init();
    const old = [randomBytes(2 << 20), randomBytes(2 << 20)];
    for (const c of old) await store.put(hashChunk(c), c);
    await fillUp(join(fs, 'hog'));
    if (addon) {
      await t.rejects(addon.writeCacheFile(join(dir, '00'), 'probe', randomBytes(1 << 20)), { code: 'ENOSPC' }, 'the addon reports ENOSPC');
      t.throws(() => addon.writeCacheFileSync(join(dir, '00'), 'probe', randomBytes(64 << 10)), { code: 'ENOSPC' }, 'so does its calling-thread variant');
    }
    const fresh = randomBytes(size);
    await store.put(hashChunk(fresh), fresh);
    const h = hex(hashChunk(fresh));
    t.ok((await readFile(join(dir, h.slice(0, 2), h))).equals(fresh), 'the new chunk is whole');
    t.ok(store.stats().evictedChunks >= 1, `older chunks were evicted (${store.stats().evictedChunks})`);
  });
}
