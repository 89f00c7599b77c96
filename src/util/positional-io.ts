// Whole ranges at a position of an open file. A read or write may move
// fewer bytes than asked (a write does so when the disk fills up during it,
// and reports ENOSPC only on the next call), so each is repeated until the
// range is done: a file that ends first, or a disk that is full, is an
// error, never silently short data.
import type { FileHandle } from 'node:fs/promises';

/** Exactly `length` bytes at `position`. */
export async function readAt(fh: FileHandle, length: number, position: number, what: string): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  for (let got = 0; got < length; ) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) throw Object.assign(new Error(`${what} ends before ${position + length}`), { code: 'EIO' });
    got += bytesRead;
  }
  return buf;
}

/** All of `data` at `position`. */
export async function writeAt(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) done += (await fh.write(data, done, data.length - done, position + done)).bytesWritten;
}
