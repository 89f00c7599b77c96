// One pass over a file or buffer: find cut points, hash each chunk, derive
// the file digest. Used by the node's indexer and the mount's write-back.
import { closeSync, constants as C, openSync, readSync } from 'node:fs';
import { CutFinder, type ChunkingParams } from './chunker.js';
import { fileDigest, hashChunk, type ChunkRef, type Manifest } from './manifest.js';

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
 * (4 threads, also serving the main thread's I/O) is not involved.
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
  for (;;) {
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
