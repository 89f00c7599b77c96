// Another process filling a filesystem to its last byte: the full-disk fault.
import { open, rm } from 'node:fs/promises';

/** Writes `path` until its filesystem has no byte left; resolves with a function that frees that space again. */
export async function fillUp(path: string): Promise<() => Promise<void>> {
  const fh = await open(path, 'a');
  try {
    const block = Buffer.alloc(1 << 20);
    // Smaller and smaller writes once a block no longer fits, down to one byte.
    for (let size = block.length; size >= 1; size >>= 1) {
      try {
        for (;;) await fh.write(block, 0, size);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      }
    }
  } finally {
    await fh.close();
  }
  return () => rm(path, { force: true });
}
