// Content-defined chunking (FastCDC style, gear rolling hash with
// normalized cut masks). A cut point depends only on the bytes near it, so
// an edit in the middle of a big file changes only the chunks around it and
// a write-back re-sends only those. Files smaller than `min` are one chunk.
import { blake3 } from '@napi-rs/blake-hash';
import { nativeAddon, type NativeAddon } from '../native/addon.js';

export interface ChunkingParams {
  algorithm: 'fastcdc-gear-v1';
  min: number;
  avg: number;
  max: number;
}

export const DEFAULT_CHUNKING: ChunkingParams = {
  algorithm: 'fastcdc-gear-v1',
  min: 256 * 1024,
  avg: 1024 * 1024,
  max: 4 * 1024 * 1024,
};

// 256 pseudo-random 32-bit values, derived from BLAKE3 so every build and
// every node agrees on them (cut points must be identical everywhere).
const GEAR = (() => {
  const seed = blake3('ghostfs gear table v1');
  const table = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    table[i] = blake3(Buffer.concat([seed, Buffer.of(i)])).readInt32LE(0);
  }
  return table;
})();

/** A gear hash is 32 bits shifted left once a byte: it depends on the last 32 bytes only. */
const GEAR_WINDOW = 32;

/** Mask with `bits` ones in the high end of a 32-bit word (high bits of a gear hash depend on the most bytes). */
function highMask(bits: number): number {
  return bits <= 0 ? 0 : (0xffffffff << (32 - bits)) | 0;
}

/**
 * The native addon's scan when it is built: the same cut points, found
 * several times faster than the JavaScript loop (which stays the fallback).
 */
let nativeScan: NativeAddon['gearScan'] | null | undefined;
function scanner(): NativeAddon['gearScan'] | null {
  if (nativeScan === undefined) {
    const a = nativeAddon();
    if (a && typeof a.gearScan === 'function') {
      a.gearTable(GEAR);
      nativeScan = a.gearScan.bind(a);
    } else nativeScan = null;
  }
  return nativeScan;
}

export class CutFinder {
  private readonly maskS: number;
  private readonly maskL: number;
  private readonly fast: NativeAddon['gearScan'] | null;

  /** `js`: always the JavaScript loop (the tests compare both). */
  constructor(
    readonly params: ChunkingParams,
    use: 'auto' | 'js' = 'auto',
  ) {
    this.fast = use === 'auto' ? scanner() : null;
    const { min, avg, max } = params;
    if (!(min > 0 && min <= avg && avg <= max)) throw new RangeError(`chunking: need 0 < min <= avg <= max, got ${min}/${avg}/${max}`);
    const bits = Math.round(Math.log2(avg));
    // Normalized chunking, level 2: harder to cut before avg, easier after,
    // which narrows the chunk size distribution around avg.
    this.maskS = highMask(bits + 2);
    this.maskL = highMask(bits - 2);
  }

  /**
   * Length of the next chunk of buf[start, end). When `final` is false and
   * no cut is found before `end`, returns 0: more data is needed.
   */
  next(buf: Uint8Array, start: number, end: number, final: boolean): number {
    const { min, avg, max } = this.params;
    const avail = end - start;
    if (avail <= min) return final ? avail : 0;
    const limit = start + Math.min(avail, max);
    const cut = this.scan(buf, start + min, start + Math.min(avail, avg), limit, 0);
    if (cut >= 0) return cut - start;
    if (limit - start === max) return max;
    return final ? avail : 0;
  }

  /**
   * The cut rule over buf[from, limit): the index just past the first byte
   * whose hash has no bit of the small-chunk mask (before `normal`) or of
   * the large-chunk mask (from `normal` on), or -1. The hash is `h0` at
   * `from`: 0 where a chunk's scan starts, or what carry() says it had
   * reached at the end of the bytes before (a scan going on across buffers).
   */
  scan(buf: Uint8Array, from: number, normal: number, limit: number, h0: number): number {
    if (this.fast && Buffer.isBuffer(buf)) return this.fast(buf, from, normal, limit, this.maskS, this.maskL, h0);
    const maskS = this.maskS;
    const maskL = this.maskL;
    let h = h0;
    let i = from;
    for (; i < normal; i++) {
      h = ((h << 1) + GEAR[buf[i]!]!) | 0;
      if ((h & maskS) === 0) return i + 1;
    }
    for (; i < limit; i++) {
      h = ((h << 1) + GEAR[buf[i]!]!) | 0;
      if ((h & maskL) === 0) return i + 1;
    }
    return -1;
  }

  /** The hash a scan of buf[from, to) that started at `h0` ends with: it depends on the last 32 bytes only. */
  carry(buf: Uint8Array, from: number, to: number, h0: number): number {
    let h = to - from > GEAR_WINDOW ? 0 : h0;
    for (let i = Math.max(from, to - GEAR_WINDOW); i < to; i++) h = ((h << 1) + GEAR[buf[i]!]!) | 0;
    return h;
  }
}
