// Chunk messages framed by hand on the hot path. A node reads a chunk's
// bytes straight into a buffer that already has room for the protobuf
// header in front, so serving a 1 MiB chunk costs no copy and no extra
// allocation; the generic encoder would copy every chunk once more.
// Wire form of `Chunk`: field 1 (hash, length-delimited), field 2 (data).
import { HASH_BYTES } from '../content/manifest.js';

/** Room to leave in front of chunk data for the longest header. */
export const CHUNK_FRAME_RESERVE = 2 + HASH_BYTES + 1 + 5;

/** Writes the header just before the data at CHUNK_FRAME_RESERVE; returns the framed message. */
export function frameChunk(hash: Buffer, buf: Buffer, length: number): Buffer {
  let vlen = 1;
  for (let n = length; n >= 0x80; n = Math.floor(n / 0x80)) vlen++;
  const start = CHUNK_FRAME_RESERVE - (2 + HASH_BYTES + 1 + vlen);
  let p = start;
  buf[p++] = 0x0a; // field 1, length-delimited
  buf[p++] = HASH_BYTES;
  hash.copy(buf, p);
  p += HASH_BYTES;
  buf[p++] = 0x12; // field 2, length-delimited
  for (let n = length; ; n = Math.floor(n / 0x80)) {
    if (n < 0x80) {
      buf[p++] = n;
      break;
    }
    buf[p++] = (n % 0x80) | 0x80;
  }
  return buf.subarray(start, CHUNK_FRAME_RESERVE + length);
}

/** A response serializer that passes pre-framed buffers through untouched. */
export function framedOr(serialize: (v: unknown) => Buffer): (v: unknown) => Buffer {
  return (v) => (Buffer.isBuffer(v) ? v : serialize(v));
}
