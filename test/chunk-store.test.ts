// The mount's chunk cache on a real filesystem: chunk files written in one
// addon job (O_TMPFILE, then linked) or copied from a committed file by the
// kernel, what they hold, and a full disk.
import t from 'tap';
import { readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ChunkStore } from '../src/cache/chunk-store.js';
import { ChunkReader } from '../src/mount/chunk-reader.js';
import { MeshClient } from '../src/mesh/mesh-client.js';
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

t.test('a chunk is readable from memory while its file is written, without asking a node', async (t) => {
  const dir = join(await tempDir(t), 'chunks');
  const store = new ChunkStore(dir);
  await store.init();
  // Nothing listens there: a fetch would fail.
  const mesh = new MeshClient(['127.0.0.1:1'], 'default', { deadlineMs: 2000 });
  t.teardown(() => mesh.close());
  const reader = new ChunkReader(store, mesh);
  const data = randomBytes(5000);
  const hash = hashChunk(data);
  const putting = store.put(hash, data);
  t.notOk(store.has(hash), 'its file is not in place yet');
  t.ok(store.writingNow(hash)?.equals(data), 'its bytes are at hand meanwhile');
  t.ok(reader.isLocal(hash), 'the reader counts it as local');
  const got = await reader.slice({ hash, offset: 0, length: data.length }, 100, 200, 'f');
  t.ok(got.equals(data.subarray(100, 300)), 'a read of it gets its bytes');
  await putting;
  t.ok(store.has(hash), 'then its file is in place');
  t.equal(store.writingNow(hash), undefined, 'and it is no longer held in memory');
  t.equal(reader.stats.misses, 0, 'no read went to a node');
});

t.test('a full disk: the store evicts older chunks and writes the new one', async (t) => {
  const fs = await smallFs(t, '16m');
  const dir = join(fs, 'chunks');
  const store = new ChunkStore(dir);
  await store.init();
  const old = [randomBytes(2 << 20), randomBytes(2 << 20)];
  for (const c of old) await store.put(hashChunk(c), c);
  await fillUp(join(fs, 'hog'));
  if (addon) {
    await t.rejects(addon.writeCacheFile(join(dir, '00'), 'probe', randomBytes(1 << 20)), { code: 'ENOSPC' }, 'the addon reports ENOSPC');
  }
  const fresh = randomBytes(1 << 20);
  await store.put(hashChunk(fresh), fresh);
  const h = hex(hashChunk(fresh));
  t.ok((await readFile(join(dir, h.slice(0, 2), h))).equals(fresh), 'the new chunk is whole');
  t.ok(store.stats().evictedChunks >= 1, `older chunks were evicted (${store.stats().evictedChunks})`);
});

t.test('putFrom: the chunks of a committed file become cache files with their bytes; held ones are left alone', async (t) => {
  const dir = join(await tempDir(t), 'chunks');
  const store = new ChunkStore(dir);
  await store.init();
  const data = randomBytes(3 << 20);
  const file = join(await tempDir(t), 'dirty');
  await writeFile(file, data);
  const cuts = [0, 1 << 20, (1 << 20) + 12345, 3 << 20];
  const chunks = cuts.slice(1).map((end, i) => ({ offset: cuts[i]!, length: end - cuts[i]!, hash: hashChunk(data.subarray(cuts[i]!, end)) }));
  await store.put(chunks[1]!.hash, data.subarray(chunks[1]!.offset, chunks[1]!.offset + chunks[1]!.length));
  const before = store.stats();
  await store.putFrom(file, chunks);
  for (const c of chunks) {
    const h = hex(c.hash);
    t.ok((await readFile(join(dir, h.slice(0, 2), h))).equals(data.subarray(c.offset, c.offset + c.length)), `the chunk at ${c.offset} holds its bytes`);
    t.equal((await stat(join(dir, h.slice(0, 2), h))).mode & 0o777, 0o600, 'mode 0600');
  }
  t.equal(store.stats().chunks, before.chunks + 2, 'the two new chunks are counted');
  t.equal(store.stats().bytes, before.bytes + chunks[0]!.length + chunks[2]!.length, 'with their sizes');
  const names = (await Promise.all((await readdir(dir)).map((d) => readdir(join(dir, d))))).flat();
  t.equal(names.length, 3, 'one file per chunk, no temporary files');
  const again = new ChunkStore(dir);
  await again.init();
  t.equal(again.stats().bytes, store.stats().bytes, 'found again at the next start');
});

t.test('cacheFromFile: what it made, what was there, and where a failure stopped it', async (t) => {
  t.ok(addon, 'the addon is built');
  if (!addon) return;
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await writeFile(src, Buffer.from('0123456789'));
  await writeFile(join(dir, 'taken'), 'before');
  const r = await addon.cacheFromFile(src, [dir, dir, dir], ['a', 'taken', 'b'], [0, 2, 8], [4, 3, 2]);
  t.same([...r.made!], [1, 2, 1], 'made, taken, made');
  t.equal(r.error, undefined);
  t.equal(await readFile(join(dir, 'a'), 'utf8'), '0123');
  t.equal(await readFile(join(dir, 'b'), 'utf8'), '89');
  t.equal(await readFile(join(dir, 'taken'), 'utf8'), 'before', 'a taken name keeps its bytes');

  const stopped = await addon.cacheFromFile(src, [dir, join(dir, 'missing'), dir], ['c', 'd', 'e'], [0, 0, 0], [1, 1, 1]);
  t.same([...stopped.made!], [1, 0, 0], 'the job stops at the first failure');
  t.equal(stopped.error?.code, 'ENOENT', 'and says why');
  const short = await addon.cacheFromFile(src, [dir, dir], ['f', 'g'], [8, 1], [5, 2]);
  t.same([...short.made!], [0, 1], 'a range past the end of the file is not made, and the job goes on');
  t.equal(short.error, undefined, 'that is no error');
  t.equal(await readFile(join(dir, 'g'), 'utf8'), '12');
  const gone = await addon.cacheFromFile(join(dir, 'nothing'), [dir], ['h'], [0], [1]);
  t.equal(gone.error?.code, 'ENOENT', 'a missing source');
  t.throws(() => addon.cacheFromFile(src, [dir], ['../i'], [0], [1]), /one path component/);
  t.throws(() => addon.cacheFromFile(src, [dir, dir], ['i'], [0], [1]), /one length/);
  t.throws(() => addon.cacheFromFile(src, [dir], ['i'], [NaN], [1]), /whole numbers/);
  t.throws(() => addon.cacheFromFile(src, [dir], ['i'], [0], [-1]), /whole numbers/);
  t.same((await readdir(dir)).sort(), ['a', 'b', 'c', 'g', 'src', 'taken'], 'nothing else left in the directory');
});

t.test('putFrom on a full disk: the store evicts older chunks and keeps the new ones', async (t) => {
  const fs = await smallFs(t, '16m');
  const dir = join(fs, 'chunks');
  const store = new ChunkStore(dir);
  await store.init();
  for (const c of [randomBytes(2 << 20), randomBytes(2 << 20)]) await store.put(hashChunk(c), c);
  const data = randomBytes(2 << 20);
  const file = join(await tempDir(t), 'dirty'); // elsewhere: only the cache's filesystem is full
  await writeFile(file, data);
  await fillUp(join(fs, 'hog'));
  const chunks = [0, 1 << 20].map((offset) => ({ offset, length: 1 << 20, hash: hashChunk(data.subarray(offset, offset + (1 << 20))) }));
  await store.putFrom(file, chunks);
  for (const c of chunks) {
    const h = hex(c.hash);
    t.ok((await readFile(join(dir, h.slice(0, 2), h))).equals(data.subarray(c.offset, c.offset + c.length)), `the chunk at ${c.offset} is whole`);
  }
  t.ok(store.stats().evictedChunks >= 1, `older chunks were evicted (${store.stats().evictedChunks})`);
});

// Copying every repeat would write a terabyte of zeros: the timeout catches that.
t.test('putFrom stores a chunk that repeats through a file once (a 1 TiB sparse file)', { timeout: 120_000 }, async (t) => {
  const dir = join(await tempDir(t), 'chunks');
  const store = new ChunkStore(dir);
  await store.init();
  const file = join(await tempDir(t), 'sparse');
  await writeFile(file, '');
  await truncate(file, 1024 ** 4);
  const step = 4 << 20;
  const hash = hashChunk(Buffer.alloc(step));
  const chunks = Array.from({ length: 1024 ** 4 / step }, (_, i) => ({ offset: i * step, length: step, hash }));
  await store.putFrom(file, chunks);
  t.same(store.stats(), { ...store.stats(), chunks: 1, bytes: step }, 'one chunk of zeros kept');
  const h = hex(hash);
  t.ok((await readFile(join(dir, h.slice(0, 2), h))).equals(Buffer.alloc(step)), 'it holds zeros');
});

t.test('putFrom keeps the cache within its quota as it copies a file bigger than the quota', async (t) => {
  const quota = 16 << 20;
  const store = new ChunkStore(join(await tempDir(t), 'chunks'), { quotaBytes: quota, minFreeBytes: 0 });
  await store.init();
  const data = randomBytes(160 << 20);
  const file = join(await tempDir(t), 'dirty');
  await writeFile(file, data);
  const step = 1 << 20;
  const chunks = Array.from({ length: data.length / step }, (_, i) => ({ offset: i * step, length: step, hash: hashChunk(data.subarray(i * step, (i + 1) * step)) }));
  await store.putFrom(file, chunks);
  t.ok(store.stats().bytes <= quota, `${store.stats().bytes} bytes kept for a quota of ${quota}`);
  t.ok(store.stats().evictedChunks > 0, `older chunks made room (${store.stats().evictedChunks} evicted)`);
  const last = chunks[chunks.length - 1]!;
  t.ok(store.has(last.hash), 'the newest chunk is kept');
});
