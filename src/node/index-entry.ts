// What the node's index remembers of one path, and its RocksDB encoding.
import { isLnk, isReg, readAttr, writeAttr, type Attr } from '../content/attr.js';
import { HASH_BYTES, readChunkList, writeChunkList, type ChunkRef } from '../content/manifest.js';
import { Reader, Writer } from '../store/codec.js';

export interface IndexEntry {
  attr: Attr;
  /** Regular files: content digest and chunk list. */
  digest?: Buffer;
  chunks?: ChunkRef[];
  /** Symlinks: the target, never followed by the node. */
  target?: string;
}

export function encodeEntry(e: IndexEntry): Buffer {
  const w = new Writer(96 + (e.chunks?.length ?? 0) * 36);
  writeAttr(w, e.attr);
  if (isReg(e.attr.mode)) {
    w.raw(e.digest!);
    writeChunkList(w, e.chunks!);
  } else if (isLnk(e.attr.mode)) {
    w.string(e.target ?? '');
  }
  return w.done();
}

export function decodeEntry(b: Buffer): IndexEntry {
  const r = new Reader(b);
  const attr = readAttr(r);
  if (isReg(attr.mode)) {
    const digest = Buffer.from(r.raw(HASH_BYTES));
    return { attr, digest, chunks: readChunkList(r) };
  }
  if (isLnk(attr.mode)) return { attr, target: r.string() };
  return { attr };
}
