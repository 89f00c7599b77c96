import t from 'tap';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CutFinder, DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { nativeAddon } from '../src/native/addon.js';
import { chunkBuffer, chunkPath, isZeroRun, zeroRunChunk } from '../src/content/chunk-file.js';
import { StreamChunker } from '../src/content/stream-chunker.js';
import { checkChunkList, fileDigest, hashChunk, type ChunkRef } from '../src/content/manifest.js';
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

t.test('a sparse file: its holes are not read, and the chunks are those of its bytes', async (t) => {
  t.ok(zeroRunChunk(DEFAULT_CHUNKING), 'zeros are cut into max-sized chunks with the default parameters');
  const dir = await tempDir(t);
  const MiB = 1024 * 1024;
  // Data and holes of every kind: a hole first, holes shorter and longer than
  // max, data at odd offsets, a hole running to the end (made by truncate).
  const layouts: { name: string; size: number; data: [number, number][] }[] = [
    { name: 'hole only', size: 21 * MiB + 5, data: [] },
    { name: 'hole first', size: 30 * MiB, data: [[13 * MiB + 7, 3 * MiB]] },
    { name: 'holes between', size: 40 * MiB + 123, data: [[0, 2 * MiB + 1], [5 * MiB, 100], [19 * MiB + 4095, MiB], [39 * MiB, MiB + 123]] },
    { name: 'hole to the end', size: 26 * MiB, data: [[0, 3 * MiB - 9]] },
  ];
  for (const l of layouts) {
    const file = join(dir, l.name.replace(/ /g, '-'));
    const bytes = Buffer.alloc(l.size);
    const fh = await open(file, 'w');
    for (const [i, [at, len]] of l.data.entries()) {
      const d = prng(len, 21 + i);
      d.copy(bytes, at);
      await fh.write(d, 0, len, at);
    }
    await fh.truncate(l.size);
    await fh.close();
    const fromFile = chunkPath(file, DEFAULT_CHUNKING, MiB);
    const fromBuf = chunkBuffer(bytes, DEFAULT_CHUNKING);
    t.same(
      fromFile.chunks.map((c) => [c.offset, c.length, c.hash.toString('hex')]),
      fromBuf.chunks.map((c) => [c.offset, c.length, c.hash.toString('hex')]),
      `${l.name}: the same chunks as its bytes give`,
    );
    t.ok(fromFile.digest.equals(fromBuf.digest), `${l.name}: the same digest`);
    t.ok(fromFile.chunks.some((c) => isZeroRun(c, DEFAULT_CHUNKING)), `${l.name}: a zero-run chunk among them`);
  }
  // 8 GiB, a few bytes of it data: what this process read (rchar counts every read(2)) stays small.
  const huge = join(dir, 'huge');
  const fh = await open(huge, 'w');
  await fh.write(Buffer.from('data in the middle'), 0, 18, 4 * 1024 * MiB);
  await fh.truncate(8 * 1024 * MiB);
  await fh.close();
  const rchar = async (): Promise<number> => Number(/^rchar: (\d+)$/m.exec(await readFile('/proc/self/io', 'utf8'))![1]);
  const before = await rchar();
  const m = chunkPath(huge, DEFAULT_CHUNKING, MiB);
  const read = (await rchar()) - before;
  t.equal(m.size, 8 * 1024 * MiB, 'all of the huge file is chunked');
  t.ok(read < 64 * MiB, `and only around its data was read (${(read / MiB).toFixed(1)} MiB)`);
});

/** The chunk lengths `f` cuts the first `bytes` of `data` into. */
function cutsOf(f: CutFinder, data: Buffer, bytes: number): number[] {
  const out: number[] = [];
  for (let pos = 0; pos < bytes; ) pos += out[out.push(f.next(data, pos, bytes, true)) - 1]!;
  return out;
}

t.test('the native scan cuts where the JavaScript loop does', async (t) => {
  t.ok(nativeAddon(), 'the addon is built (its scan is what runs)');
  const data = prng(16 * 1024 * 1024, 11);
  const js = new CutFinder(DEFAULT_CHUNKING, 'js');
  const auto = new CutFinder(DEFAULT_CHUNKING);
  // Whole-buffer passes, and windows of every kind: short, partial (more data needed), long.
  const a = chunkBuffer(data, DEFAULT_CHUNKING);
  t.same(a.chunks.map((c) => c.length), cutsOf(js, data, data.length), 'a whole buffer: the same chunks');
  let x = 5;
  const rnd = (n: number): number => ((x = (x * 1103515245 + 12345) >>> 0) % n);
  let differ = 0;
  for (let i = 0; i < 400; i++) {
    const start = rnd(data.length - 1);
    const end = Math.min(data.length, start + rnd(6 * 1024 * 1024));
    const final = rnd(2) === 0;
    if (js.next(data, start, end, final) !== auto.next(data, start, end, final)) differ++;
  }
  t.equal(differ, 0, '400 random windows: the same answer from both');
});

t.test('the native scan cuts where the JavaScript loop does with cuts in every stretch of its four-way scan', async (t) => {
  t.ok(nativeAddon(), 'the addon is built (its scan is what runs)');
  // The C scan runs four 4 KiB stretches side by side: with a cut expected
  // every 16 KiB after `avg`, cuts land in every stretch, often in a later
  // one before an earlier one (where the earlier one's cut must win). With
  // avg - min under 32 bytes, the first stretch's hash is rebuilt from fewer
  // than 32 bytes; with avg 1 the second mask is 0 (every byte cuts).
  const data = prng(8 * 1024 * 1024, 3);
  for (const [params, bytes] of [
    [{ algorithm: 'fastcdc-gear-v1', min: 16, avg: 64 * 1024, max: 1024 * 1024 }, data.length],
    [{ algorithm: 'fastcdc-gear-v1', min: 1, avg: 4 * 1024, max: 64 * 1024 }, data.length],
    [{ algorithm: 'fastcdc-gear-v1', min: 20_000, avg: 40_000, max: 200_000 }, data.length],
    [{ algorithm: 'fastcdc-gear-v1', min: 20, avg: 32, max: 64 * 1024 }, 1024 * 1024],
    [{ algorithm: 'fastcdc-gear-v1', min: 1, avg: 1, max: 64 * 1024 }, 64 * 1024],
  ] as const) {
    const want = cutsOf(new CutFinder(params, 'js'), data, bytes);
    t.same(cutsOf(new CutFinder(params), data, bytes), want, `min ${params.min}, avg ${params.avg}, max ${params.max}: the same ${want.length} chunks`);
  }
});

t.test('chunking while a file is written front to back cuts where a whole-file pass does', async (t) => {
  const data = prng(23 * 1024 * 1024 + 12_345, 7);
  const whole = chunkBuffer(data, DEFAULT_CHUNKING);
  // Writes of the sizes tools make (dd bs=1M, cp's 128 KiB, odd sizes), and one huge write.
  for (const [sizes, owned] of [[[1 << 20], true], [[128 * 1024], false], [[4096, 65_537, 999_999], true], [[data.length], false]] as const) {
    const seen: ChunkRef[] = [];
    const s = new StreamChunker(DEFAULT_CHUNKING, (ref) => seen.push(ref));
    for (let off = 0, i = 0; off < data.length; i++) {
      const n = Math.min(sizes[i % sizes.length]!, data.length - off);
      // A driver's buffer (not owned) is reused once the write is answered: here, overwritten at once.
      const buf = Buffer.from(data.subarray(off, off + n));
      s.feed(off, buf, owned);
      if (!owned) buf.fill(0xa5);
      off += n;
    }
    const m = s.finish(data.length)!;
    t.ok(m, `writes of ${sizes.join('/')} bytes: a manifest`);
    t.same(m.chunks, whole.chunks, `writes of ${sizes.join('/')} bytes (${owned ? 'kept' : 'copied'}): the same chunks`);
    t.ok(m.digest.equals(whole.digest), 'the same digest');
    t.same(seen, whole.chunks, 'onChunk saw each chunk as it was cut, in order');
  }
  t.same(new StreamChunker(DEFAULT_CHUNKING).finish(0), chunkBuffer(Buffer.alloc(0), DEFAULT_CHUNKING), 'an empty file');

  // Small chunks, written in pieces shorter than the 32 bytes a hash depends
  // on: cuts are looked for across many buffers, and start, end and the
  // switch of masks fall at every place in them.
  const params = { algorithm: 'fastcdc-gear-v1', min: 64, avg: 256, max: 1024 } as const;
  const small = prng(300_000, 11);
  const want = chunkBuffer(small, params);
  t.ok(want.chunks.length > 500, `${want.chunks.length} chunks to find`);
  for (const sizes of [[1], [7, 31, 33], [100, 5000], [1023, 1, 1025]]) {
    const s = new StreamChunker(params);
    for (let off = 0, i = 0; off < small.length; i++) {
      const n = Math.min(sizes[i % sizes.length]!, small.length - off);
      s.feed(off, small.subarray(off, off + n), true);
      off += n;
    }
    t.same(s.finish(small.length)!.chunks, want.chunks, `writes of ${sizes.join('/')} bytes: the same small chunks`);
  }
});

t.test('a scan that goes on from another buffer finds what one scan over both finds', async (t) => {
  // Small chunks: a cut often falls within the first 32 bytes of the second buffer, where the hash carried over counts.
  const data = prng(256 << 10, 5);
  const params = { algorithm: 'fastcdc-gear-v1', min: 64, avg: 256, max: 1024 } as const;
  t.ok(nativeAddon(), 'the addon is built (so the C scan is one of the two compared)');
  const wrong: string[] = [];
  let cuts = 0;
  let tried = 0;
  for (const finder of [new CutFinder(params), new CutFinder(params, 'js')]) {
    for (const split of [1, 31, 32, 33, 100, 300, 700]) {
      for (let from = 0, i = 0; from < data.length - 20_000; from += 997, i++) {
        // Three shapes: a chunk's scan; one too short to find a cut (mostly),
        // carried over whole; and one past `normal` long enough for the C
        // scan's four stretches, the first starting from the hash carried over.
        const [limit, normal] = [
          [from + params.max, from + params.avg],
          [from + params.min + 40, from + params.min + 40],
          [from + 20_000, from],
        ][i % 3]!;
        if (split >= limit - from) continue;
        const whole = finder.scan(data, from, normal, limit, 0);
        // The same bytes as two buffers: the second goes on from the hash the first ended with.
        const a = Buffer.from(data.subarray(from, Math.min(from + split, limit)));
        const b = Buffer.from(data.subarray(from + a.length, limit));
        let cut = finder.scan(a, 0, Math.min(normal - from, a.length), a.length, 0);
        if (cut < 0) {
          const h = finder.carry(a, 0, a.length, 0);
          const c = finder.scan(b, 0, Math.min(Math.max(0, normal - from - a.length), b.length), b.length, h);
          cut = c < 0 ? -1 : c + a.length;
        }
        tried++;
        if (whole >= 0) cuts++;
        if (cut !== (whole < 0 ? -1 : whole - from)) wrong.push(`split at ${split} of the scan from ${from}: ${cut} against ${whole - from}`);
      }
    }
  }
  t.same(wrong, [], `${tried} scans split in two agree with the scan over one buffer`);
  t.ok(cuts > tried / 2 && cuts < tried, `${cuts} of them found a cut, the others none`);
});

t.test('chunking while writing gives up on anything but a straight run of writes', async (t) => {
  const data = prng(3 * 1024 * 1024, 3);
  const feedAll = (s: StreamChunker, upTo = data.length): void => {
    for (let off = 0; off < upTo; off += 1 << 20) s.feed(off, data.subarray(off, Math.min(upTo, off + (1 << 20))));
  };
  let s = new StreamChunker(DEFAULT_CHUNKING);
  feedAll(s);
  s.feed(100, Buffer.from('rewrite'));
  t.equal(s.finish(data.length), undefined, 'a write before the end');
  s = new StreamChunker(DEFAULT_CHUNKING);
  s.feed(0, data.subarray(0, 1000));
  s.feed(5000, data.subarray(5000, 6000));
  t.equal(s.finish(6000), undefined, 'a gap');
  s = new StreamChunker(DEFAULT_CHUNKING);
  feedAll(s);
  s.truncated(data.length - 1);
  t.equal(s.finish(data.length - 1), undefined, 'a truncate below what was written');
  s = new StreamChunker(DEFAULT_CHUNKING);
  feedAll(s);
  s.truncated(data.length);
  t.ok(s.finish(data.length)?.digest.equals(chunkBuffer(data, DEFAULT_CHUNKING).digest), 'a truncate to the same size changes nothing');
  s = new StreamChunker(DEFAULT_CHUNKING);
  feedAll(s, 2 * 1024 * 1024);
  t.equal(s.finish(data.length), undefined, 'a size other than what was fed (bytes written elsewhere)');
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

t.test('a file written while it is hashed is recorded so that the next look hashes it again', async (t) => {
  const dir = await tempDir(t);
  const pool = new HashPool(1, DEFAULT_CHUNKING, 64 * 1024);
  t.teardown(() => pool.close());
  const path = join(dir, 'growing');
  const fh = await open(path, 'w');
  let writing = true;
  const line = Buffer.alloc(256, 'x');
  const writer = (async () => {
    while (writing) await fh.write(line);
  })();
  const results = [];
  try {
    for (let i = 0; i < 20; i++) results.push(await pool.hash(path));
  } finally {
    writing = false;
    await writer;
    // Once more after every hash ended: a writer starved by a busy machine may have landed
    // nothing after the last one, and the size that one recorded would then be the final size.
    await fh.write(line);
    await fh.close();
  }
  const unstable = results.filter((r) => !r.stable);
  t.ok(unstable.length > 0, `the file moved under some hashes (${unstable.length} of ${results.length})`);
  // The tuple recorded must not match the file once its writer is done: an index comparing the two hashes it again.
  const now = await stat(path, { bigint: true });
  t.same(
    unstable.filter((r) => r.attr.size !== r.manifest.size || BigInt(r.attr.size) === now.size),
    [],
    'each records the size it hashed, not the size the file has',
  );
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
