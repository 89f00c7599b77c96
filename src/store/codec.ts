// A small binary record codec for RocksDB values: unsigned varints, raw
// bytes and strings, in a fixed field order per record type. No JSON on hot
// paths: a file entry decodes in well under a microsecond.

export class Writer {
  private buf: Buffer;
  private pos = 0;

  constructor(initial = 64) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** Unsigned integer up to 2^53 - 1, LEB128. */
  uint(n: number): this {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`codec: not a safe unsigned integer: ${n}`);
    this.room(8);
    while (n >= 0x80) {
      this.buf[this.pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.pos++] = n;
    return this;
  }

  /** Signed integer, zig-zag encoded. */
  int(n: number): this {
    return this.uint(n < 0 ? -n * 2 - 1 : n * 2);
  }

  bool(b: boolean): this {
    return this.uint(b ? 1 : 0);
  }

  /** Signed 64-bit integer, fixed 8 bytes (nanosecond times: one read, no BigInt arithmetic). */
  i64(n: bigint): this {
    this.room(8);
    this.buf.writeBigInt64LE(n, this.pos);
    this.pos += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.uint(b.length);
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** Fixed-length bytes written without a length prefix. */
  raw(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  string(s: string): this {
    return this.bytes(Buffer.from(s, 'utf8'));
  }

  done(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

export class Reader {
  private pos = 0;

  constructor(private readonly buf: Buffer) {}

  uint(): number {
    let n = 0;
    let mul = 1;
    for (;;) {
      if (this.pos >= this.buf.length) throw new RangeError('codec: truncated varint');
      const b = this.buf[this.pos++]!;
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 0x80;
      if (mul > 2 ** 56) throw new RangeError('codec: varint too long');
    }
  }

  int(): number {
    const z = this.uint();
    return z % 2 === 1 ? -(z + 1) / 2 : z / 2;
  }

  bool(): boolean {
    return this.uint() !== 0;
  }

  i64(): bigint {
    if (this.pos + 8 > this.buf.length) throw new RangeError('codec: truncated i64');
    const n = this.buf.readBigInt64LE(this.pos);
    this.pos += 8;
    return n;
  }

  bytes(): Buffer {
    return this.raw(this.uint());
  }

  raw(len: number): Buffer {
    if (this.pos + len > this.buf.length) throw new RangeError('codec: truncated bytes');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  string(): string {
    return this.bytes().toString('utf8');
  }

  get done(): boolean {
    return this.pos >= this.buf.length;
  }
}
