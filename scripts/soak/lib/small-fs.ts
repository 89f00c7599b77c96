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

/**
 * Writes `path` until its filesystem has no byte left (or `budgetMs` has
 * passed); resolves with a function that frees that space again.
 */
export async function fillUp(path: string, budgetMs = 10_000): Promise<() => Promise<void>> {
  const fh = await open(path, 'a');
  const deadline = Date.now() + budgetMs;
  try {
    const block = Buffer.alloc(1 << 20);
    // Half the size after a write that no longer fits, down to one byte, and
    // double it after one that did: another process (a mount evicting its
    // cache) may free megabytes meanwhile, and filling those a byte at a
    // time took minutes.
    for (let size = block.length; size >= 1 && Date.now() < deadline; ) {
      try {
        await fh.write(block, 0, size);
        size = Math.min(size * 2, block.length);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        size >>= 1;
      }
    }
  } finally {
    await fh.close();
  }
  return () => rm(path, { force: true });
}
