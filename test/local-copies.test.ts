// Whole local copies of big files (src/cache/local-copies.ts) on a disk that
// another process fills and frees while a copy is assembled: a copy is
// trusted as it is once named, so it must hold every byte or not exist.
// Real chunk store and a real small filesystem (tmpfs).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { ChunkStore } from '../src/cache/chunk-store.js';
import { LocalCopies } from '../src/cache/local-copies.js';
import { chunkBuffer } from '../src/content/chunk-file.js';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { fillUp } from '../scripts/soak/lib/small-fs.js';
import { tempDir } from './helpers/node-proc.js';
import { smallFs } from './helpers/small-fs.js';

t.test('a disk that fills while a copy is assembled, and has room again a moment later: no copy with a gap', async (t) => {
  const base = await tempDir(t);
  const small = await smallFs(t, '24m');
  const store = new ChunkStore(join(base, 'chunks'));
  await store.init();
  const content = randomBytes(12 << 20);
  const m = chunkBuffer(content, DEFAULT_CHUNKING);
  for (const c of m.chunks) await store.put(c.hash, content.subarray(c.offset, c.offset + c.length));

  // After the first chunk is read: the disk is left with room for half of it,
  // so the copy's write of it takes only part. After the next read: room again.
  const hog = join(small, 'hog');
  let reads = 0;
  const reading = Object.create(store) as ChunkStore;
  reading.read = async (...args: Parameters<ChunkStore['read']>) => {
    const n = await store.read(...args);
    reads++;
    if (reads === 1) {
      await fillUp(hog);
      await truncate(hog, (await stat(hog)).size - Math.floor(m.chunks[0]!.length / 2));
    } else if (reads === 2) {
      await truncate(hog, 0);
    }
    return n;
  };

  const copies = new LocalCopies(join(small, 'copies'), reading, { maxBytes: 64 << 20, minFreeBytes: 0 });
  await copies.init();
  await copies.assemble(m.digest, m.chunks, m.size);
  t.ok(reads >= 1, 'the disk filled during the assembly');
  const copy = copies.path(m.digest);
  if (copy) t.ok((await readFile(copy)).equals(content), 'the copy holds every byte');
  else t.pass('no copy: the assembly gave up when the disk was full');

  // With room, the copy is made, and whole.
  await truncate(hog, 0);
  await copies.assemble(m.digest, m.chunks, m.size);
  const again = copies.path(m.digest);
  t.ok(again && (await readFile(again)).equals(content), 'assembled whole once there is room');
});

t.test('a copy of a file with runs of zeros has holes there, and every byte', async (t) => {
  const base = await tempDir(t);
  const store = new ChunkStore(join(base, 'chunks'));
  await store.init();
  const content = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(40 << 20), randomBytes(1 << 20)]);
  const m = chunkBuffer(content, DEFAULT_CHUNKING);
  for (const c of m.chunks) await store.put(c.hash, content.subarray(c.offset, c.offset + c.length));
  const copies = new LocalCopies(join(base, 'copies'), store, { maxBytes: 256 << 20, minFreeBytes: 0 });
  await copies.init();
  await copies.assemble(m.digest, m.chunks, m.size);
  const copy = copies.path(m.digest);
  t.ok(copy && (await readFile(copy)).equals(content), 'the copy holds every byte');
  const st = await stat(copy!);
  t.ok(st.blocks * 512 < 20 << 20, `in fewer blocks than its ${st.size} bytes (${st.blocks * 512} allocated)`);
});
