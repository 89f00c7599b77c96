// A small filesystem to run out of space on, and another process filling it
// to its last byte: the full-disk fault.
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Mounts a tmpfs of `size` (e.g. "64m"; mounting needs root); `remove()` unmounts and deletes it. */
export async function mountSmallFs(size: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'ghostfs-small-fs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  return {
    dir,
    remove: async () => {
      execFileSync('umount', ['-l', dir]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

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
