// Attributes and chunk lists between their in-memory form and the wire.
import { fromTimespec, toTimespec, type Attr } from '../content/attr.js';
import type { ChunkRef } from '../content/manifest.js';
import type { WAttr, WAttrOut, WChunkRef, WChunkRefOut } from './types.js';

export function attrToWire(a: Attr): WAttr {
  return {
    ino: a.ino,
    mode: a.mode,
    nlink: a.nlink,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    blocks: a.blocks,
    atime: toTimespec(a.atimeNs),
    mtime: toTimespec(a.mtimeNs),
    ctime: toTimespec(a.ctimeNs),
    dev: a.dev,
    rdev: a.rdev,
  };
}

export function attrFromWire(w: WAttrOut): Attr {
  return {
    ino: w.ino,
    mode: w.mode,
    nlink: w.nlink,
    uid: w.uid,
    gid: w.gid,
    size: w.size,
    blocks: w.blocks,
    atimeNs: fromTimespec(w.atime),
    mtimeNs: fromTimespec(w.mtime),
    ctimeNs: fromTimespec(w.ctime),
    dev: w.dev,
    rdev: w.rdev,
  };
}

export function chunksToWire(chunks: readonly ChunkRef[]): WChunkRef[] {
  return chunks.map((c) => ({ hash: c.hash, offset: c.offset, length: c.length }));
}

export function chunksFromWire(chunks: readonly WChunkRefOut[]): ChunkRef[] {
  return chunks.map((c) => ({ hash: Buffer.from(c.hash), offset: c.offset, length: c.length }));
}
