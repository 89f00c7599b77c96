// One pass over a file or buffer: find cut points, hash each chunk, derive
// the file digest. Used by the node's indexer and the mount's write-back.
import { closeSync, constants as C, fstatSync, openSync, readSync } from 'node:fs';
import { CutFinder, type ChunkingParams } from './chunker.js';
import { fileDigest, hashChunk, type ChunkRef, type Manifest } from './manifest.js';
import { nativeAddon } from '../native/addon.js';

const zeroRuns = new Map<string, Buffer | null>();

/**
 * The chunk a run of at least `max` zero bytes starts with, when the cut
 * rule finds no cut in zeros (so with the default parameters): `max` bytes
 * long, always the same hash. A hole of a sparse file is such a run, so it
 * is chunked without being read (chunkFd), and a commit leaves it a hole
 * (node/commit.ts). Undefined for parameters that cut zeros shorter.
 */
export function zeroRunChunk(params: ChunkingParams): { length: number; hash: Buffer } | undefined {
  const key = `${params.min}/${params.avg}/${params.max}`;
  let hash = zeroRuns.get(key);
  if (hash === undefined) {
    // Found by the cut rule itself: a chunk's scan starts afresh at its start, so what came before does not matter.
    const zeros = Buffer.alloc(params.max);
    hash = new CutFinder(params).next(zeros, 0, zeros.length, true) === params.max ? hashChunk(zeros) : null;
    zeroRuns.set(key, hash);
  }
  return hash ? { length: params.max, hash } : undefined;
}

/** Whether `c` is the chunk of a run of zeros (see zeroRunChunk). */
export function isZeroRun(c: ChunkRef, params: ChunkingParams): boolean {
  const z = c.length === params.max ? zeroRunChunk(params) : undefined;
  return !!z && c.hash.equals(z.hash);
}

export function chunkBuffer(data: Buffer, params: ChunkingParams, sink?: (c: ChunkRef, d: Buffer) => void): Manifest {
  const finder = new CutFinder(params);
  const chunks: ChunkRef[] = [];
  let pos = 0;
  while (pos < data.length) {
    const len = finder.next(data, pos, data.length, true);
    const piece = data.subarray(pos, pos + len);
    const ref = { hash: hashChunk(piece), offset: pos, length: len };
    chunks.push(ref);
    sink?.(ref, piece);
    pos += len;
  }
  return { chunks, size: data.length, digest: fileDigest(chunks) };
}

/**
 * Chunks an open file descriptor from offset 0 to EOF with reads of
 * `readSize`. Synchronous on purpose: it runs on hashing threads
 * (hash-worker.ts), where blocking is the point and the shared libuv pool
 * (4 threads, also serving the main thread's I/O) is not involved. Holes of
 * a sparse file are not read: where `max` bytes of hole lie ahead of a cut,
 * the next chunk is the zero-run chunk (the cut points and hashes are the
 * ones reading the zeros would give; `truncate -s 10G` no longer means
 * reading 10 GiB).
 */
export function chunkFd(fd: number, params: ChunkingParams, readSize: number, scratch?: Buffer): Manifest {
  const finder = new CutFinder(params);
  // Room for three max-sized chunks: the window is compacted (at most one
  // chunk's worth of bytes copied) only when fewer than `max` bytes of room
  // remain, so the copy cost stays a fraction of the bytes hashed.
  const buf = scratch && scratch.length >= 3 * params.max ? scratch : Buffer.allocUnsafe(3 * params.max);
  const chunks: ChunkRef[] = [];
  let start = 0;
  let end = 0;
  let fileOff = 0; // file offset of buf[start]
  let readOff = 0;
  let eof = false;
  const seekData = nativeAddon()?.seekData;
  let zero = typeof seekData === 'function' ? zeroRunChunk(params) : undefined;
  let size = 0; // the file's size once no data follows (dataAt -1): where its last hole ends
  let dataAt = -2; // the next data at or after a cut looked at (-1: none to the end; -2: not looked yet)
  for (;;) {
    if (zero) {
      let skipped = false;
      for (;;) {
        if (dataAt !== -1 && dataAt < fileOff) {
          try {
            dataAt = seekData!(fd, fileOff);
            // Now, not when hashing began: a file cut shorter meanwhile ends where it ends now.
            if (dataAt === -1) size = fstatSync(fd).size;
          } catch {
            zero = undefined; // a filesystem that will not say: its holes are read
            break;
          }
        }
        if (fileOff + zero.length > (dataAt === -1 ? size : dataAt)) break;
        chunks.push({ hash: zero.hash, offset: fileOff, length: zero.length });
        fileOff += zero.length;
        skipped = true;
      }
      if (skipped) {
        // What was read ahead lies behind: read on from the chunk after the hole's.
        start = end = 0;
        readOff = fileOff;
        eof = false;
      }
    }
    if (!eof && end - start < params.max) {
      if (buf.length - end < params.max) {
        buf.copy(buf, 0, start, end);
        end -= start;
        start = 0;
      }
      while (!eof && end - start < params.max && end < buf.length) {
        const n = readSync(fd, buf, end, Math.min(readSize, buf.length - end), readOff);
        if (n === 0) eof = true;
        end += n;
        readOff += n;
      }
    }
    if (start === end) break;
    const len = finder.next(buf, start, end, eof);
    if (len === 0) continue; // more data needed (cannot happen with a max-sized window)
    const piece = buf.subarray(start, start + len);
    chunks.push({ hash: hashChunk(piece), offset: fileOff, length: len });
    start += len;
    fileOff += len;
  }
  return { chunks, size: fileOff, digest: fileDigest(chunks) };
}

export function chunkPath(path: string, params: ChunkingParams, readSize: number, scratch?: Buffer): Manifest {
  const fd = openSync(path, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  try {
    return chunkFd(fd, params, readSize, scratch);
  } finally {
    closeSync(fd);
  }
}
