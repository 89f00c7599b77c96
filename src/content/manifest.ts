// What a file's content is: its chunk list and the digest derived from it.
// A digest is BLAKE3 over (chunk hash || u32le length)* || u64le size, so it
// follows from the chunk list without a second pass over the bytes.
import { blake3 } from '@napi-rs/blake-hash';
import type { Reader, Writer } from '../store/codec.js';

export const HASH_ALGORITHM = 'blake3';
export const HASH_BYTES = 32;

export interface ChunkRef {
  hash: Buffer;
  offset: number;
  length: number;
}

export interface Manifest {
  digest: Buffer;
  size: number;
  chunks: ChunkRef[];
}

export function hashChunk(data: Buffer): Buffer {
  return blake3(data);
}

export function fileDigest(chunks: readonly ChunkRef[]): Buffer {
  // One buffer hashed in one call: a hasher object per file costs more than the hashing.
  const buf = Buffer.allocUnsafe(chunks.reduce((n, c) => n + c.hash.length + 4, 8));
  let at = 0;
  let size = 0;
  for (const c of chunks) {
    at += c.hash.copy(buf, at);
    at = buf.writeUInt32LE(c.length, at);
    size += c.length;
  }
  buf.writeBigUInt64LE(BigInt(size), at);
  return blake3(buf.subarray(0, at + 8));
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** Checks that a chunk list tiles [0, size) with no gap or overlap. */
export function checkChunkList(chunks: readonly ChunkRef[], size: number): string | null {
  let off = 0;
  for (const [i, c] of chunks.entries()) {
    if (c.hash.length !== HASH_BYTES) return `chunk ${i} hash is ${c.hash.length} bytes, expected ${HASH_BYTES}`;
    if (c.offset !== off) return `chunk ${i} starts at ${c.offset}, expected ${off}`;
    if (!(c.length > 0)) return `chunk ${i} is empty`;
    off += c.length;
  }
  return off === size ? null : `chunks cover ${off} bytes, file size is ${size}`;
}

/** A chunk list in a database value: (hash, length) pairs; offsets follow from the lengths. */
export function writeChunkList(w: Writer, chunks: readonly ChunkRef[]): void {
  w.uint(chunks.length);
  for (const c of chunks) w.raw(c.hash).uint(c.length);
}

export function readChunkList(r: Reader): ChunkRef[] {
  const n = r.uint();
  const chunks: ChunkRef[] = [];
  let offset = 0;
  for (let i = 0; i < n; i++) {
    const hash = Buffer.from(r.raw(HASH_BYTES));
    const length = r.uint();
    chunks.push({ hash, offset, length });
    offset += length;
  }
  return chunks;
}
