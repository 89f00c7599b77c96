// Exactly `length` bytes at `position` of an open file: a read may return
// fewer than asked (it is allowed to), so it is repeated until the range
// is in, and a file that ends first is an error, never silently short data.
import type { FileHandle } from 'node:fs/promises';

export async function readAt(fh: FileHandle, length: number, position: number, what: string): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  for (let got = 0; got < length; ) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) throw Object.assign(new Error(`${what} ends before ${position + length}`), { code: 'EIO' });
    got += bytesRead;
  }
  return buf;
}
