// Content-defined chunking of a file as it is written front to back, so a
// big file's chunk list is ready the moment it is closed (instead of a
// second pass over the whole file then). It cuts exactly where chunkFd
// would: a cut is looked for only once a full `max` bytes are in hand, or at
// the end. Anything but a straight run of writes from offset 0 (a seek back,
// a gap, a truncate to another size) stops it for good; the file is then
// chunked at close the usual way.
import { CutFinder, type ChunkingParams } from './chunker.js';
import { fileDigest, hashChunk, type ChunkRef, type Manifest } from './manifest.js';

export class StreamChunker {
  private readonly finder: CutFinder;
  /** Bytes fed but not yet cut: buf[start, end). */
  private buf = Buffer.alloc(0);
  private start = 0;
  private end = 0;
  private chunks: ChunkRef[] = [];
  private stopped = false;
  /** Bytes fed so far: the offset the next write must start at. */
  fed = 0;

  /** `onChunk` sees each chunk as it is cut; its bytes are only valid during the call. */
  constructor(
    private readonly params: ChunkingParams,
    private readonly onChunk?: (ref: ChunkRef, data: Buffer) => void,
  ) {
    this.finder = new CutFinder(params);
  }

  get active(): boolean {
    return !this.stopped;
  }

  /** A write of `data` at `offset`, in the order the writes were made. */
  feed(offset: number, data: Buffer): void {
    if (this.stopped) return;
    if (offset !== this.fed) return this.stop();
    const { max } = this.params;
    // At most `max` bytes are added at a time, so the window stays under 2 × max.
    for (let pos = 0; pos < data.length; ) {
      const n = Math.min(max, data.length - pos);
      this.append(data.subarray(pos, pos + n));
      pos += n;
      while (this.end - this.start >= max) this.cut(false);
    }
  }

  /** The file was truncated: only a truncate to exactly what was fed keeps the chunker going. */
  truncated(size: number): void {
    if (size !== this.fed) this.stop();
  }

  /** Gives up: the chunk list will not be known until the file is chunked whole. */
  stop(): void {
    this.stopped = true;
    this.buf = Buffer.alloc(0);
    this.chunks = [];
  }

  /** The manifest of a file of `size` bytes, if every byte of it went through here; the chunker is done either way. */
  finish(size: number): Manifest | undefined {
    if (this.stopped || size !== this.fed) {
      this.stop();
      return undefined;
    }
    while (this.end > this.start) this.cut(true);
    const chunks = this.chunks;
    this.stop();
    return { chunks, size, digest: fileDigest(chunks) };
  }

  private append(piece: Buffer): void {
    if (this.buf.length - this.end < piece.length) {
      const kept = this.end - this.start;
      const room = kept + piece.length;
      if (this.buf.length >= room) this.buf.copyWithin(0, this.start, this.end);
      else {
        const grown = Buffer.allocUnsafe(Math.max(room, Math.min(2 * this.buf.length, 2 * this.params.max)));
        this.buf.copy(grown, 0, this.start, this.end);
        this.buf = grown;
      }
      this.start = 0;
      this.end = kept;
    }
    piece.copy(this.buf, this.end);
    this.end += piece.length;
    this.fed += piece.length;
  }

  private cut(final: boolean): void {
    const len = this.finder.next(this.buf, this.start, this.end, final);
    const piece = this.buf.subarray(this.start, this.start + len);
    // buf[start] is the first byte not cut yet: everything fed but what is still in the window.
    const ref = { hash: hashChunk(piece), offset: this.fed - (this.end - this.start), length: len };
    this.chunks.push(ref);
    this.start += len;
    this.onChunk?.(ref, piece);
  }
}
