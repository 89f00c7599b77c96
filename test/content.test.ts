import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { chunkBuffer, chunkPath } from '../src/content/chunk-file.js';
import { checkChunkList, fileDigest, hashChunk } from '../src/content/manifest.js';
import { HashPool } from '../src/content/hash-pool.js';
import { Reader, Writer } from '../src/store/codec.js';
import { readAttr, writeAttr, toTimespec, fromTimespec, type Attr } from '../src/content/attr.js';
import { tempDir } from './helpers/node-proc.js';

/** Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
function prng(size: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, Math.min(i, size - 4));
  }
  return b;
}

t.test('chunk sizes stay within bounds and tile the file', async (t) => {
  const data = prng(24 * 1024 * 1024);
  const m = chunkBuffer(data, DEFAULT_CHUNKING);
  t.equal(checkChunkList(m.chunks, data.length), null);
  for (const c of m.chunks.slice(0, -1)) {
    t.ok(c.length >= DEFAULT_CHUNKING.min && c.length <= DEFAULT_CHUNKING.max, `chunk of ${c.length} within bounds`);
  }
  const avg = data.length / m.chunks.length;
  t.ok(avg > DEFAULT_CHUNKING.avg / 2 && avg < DEFAULT_CHUNKING.avg * 2, `average chunk ${avg} near ${DEFAULT_CHUNKING.avg}`);
  t.ok(m.chunks.every((c) => c.hash.equals(hashChunk(data.subarray(c.offset, c.offset + c.length)))), 'each hash is BLAKE3 of its bytes');
});

t.test('an insertion in the middle changes only nearby chunks', async (t) => {
  const data = prng(32 * 1024 * 1024, 7);
  const edited = Buffer.concat([data.subarray(0, 16_000_000), Buffer.from('inserted bytes'), data.subarray(16_000_000)]);
  const a = chunkBuffer(data, DEFAULT_CHUNKING);
  const b = chunkBuffer(edited, DEFAULT_CHUNKING);
  const known = new Set(a.chunks.map((c) => c.hash.toString('hex')));
  const fresh = b.chunks.filter((c) => !known.has(c.hash.toString('hex')));
  t.ok(fresh.length <= 2, `${fresh.length} of ${b.chunks.length} chunks are new`);
  t.not(a.digest.toString('hex'), b.digest.toString('hex'), 'digests differ');
});

t.test('small and empty files are one chunk (or none); file and buffer agree', async (t) => {
  const dir = await tempDir(t);
  t.same(chunkBuffer(Buffer.alloc(0), DEFAULT_CHUNKING).chunks, []);
  t.ok(fileDigest([]).equals(chunkBuffer(Buffer.alloc(0), DEFAULT_CHUNKING).digest));
  const small = randomBytes(1000);
  t.equal(chunkBuffer(small, DEFAULT_CHUNKING).chunks.length, 1);
  const big = prng(9 * 1024 * 1024 + 17, 3);
  await writeFile(join(dir, 'big'), big);
  const fromFile = chunkPath(join(dir, 'big'), DEFAULT_CHUNKING, 1024 * 1024);
  const fromBuf = chunkBuffer(big, DEFAULT_CHUNKING);
  t.ok(fromFile.digest.equals(fromBuf.digest), 'same digest through a file with small reads');
  t.equal(fromFile.chunks.length, fromBuf.chunks.length);
});

t.test('the hashing pool bounds concurrency and reports errors', async (t) => {
  const dir = await tempDir(t);
  const pool = new HashPool(2, DEFAULT_CHUNKING, 1024 * 1024);
  t.teardown(() => pool.close());
  const files = await Promise.all(
    Array.from({ length: 10 }, async (_, i) => {
      const p = join(dir, `f${i}`);
      await writeFile(p, prng(300_000 + i, i + 1));
      return p;
    }),
  );
  const jobs = files.map((f) => pool.hash(f));
  t.ok(pool.queued === 10, 'all queued');
  const results = await Promise.all(jobs);
  for (const [i, r] of results.entries()) t.ok(r.manifest.digest.equals(chunkBuffer(prng(300_000 + i, i + 1), DEFAULT_CHUNKING).digest));
  await t.rejects(pool.hash(join(dir, 'missing')), { code: 'ENOENT' });
});

t.test('codec round-trips numbers, bytes, strings and attributes', async (t) => {
  const w = new Writer(1);
  w.uint(0).uint(127).uint(128).uint(2 ** 53 - 1).int(-5).int(7).bytes(Buffer.from([1, 2, 3])).string('héllo').bool(true);
  const r = new Reader(w.done());
  t.same([r.uint(), r.uint(), r.uint(), r.uint(), r.int(), r.int()], [0, 127, 128, 2 ** 53 - 1, -5, 7]);
  t.same([...r.bytes()], [1, 2, 3]);
  t.equal(r.string(), 'héllo');
  t.equal(r.bool(), true);
  t.ok(r.done);
  t.throws(() => new Writer().uint(-1));
  t.throws(() => new Reader(Buffer.from([0x80])).uint(), /truncated/);
  const attr: Attr = { dev: 2049, ino: 123456789, mode: 0o100755, nlink: 2, uid: 1000, gid: 1000, rdev: 0, size: 42, blocks: 8, atimeNs: 1_700_000_000_123_456_789n, mtimeNs: -1_000_000_001n, ctimeNs: 0n };
  const aw = new Writer();
  writeAttr(aw, attr);
  t.same(readAttr(new Reader(aw.done())), attr, 'attributes exact to the nanosecond, negative times too');
  t.equal(fromTimespec(toTimespec(-1_000_000_001n)), -1_000_000_001n);
});
