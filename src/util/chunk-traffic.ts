// Process-wide memory settings for the two processes that move chunks (the
// node serving them, the mount fetching and writing them): each 1 MiB chunk
// passes through a few short-lived buffers, a gigabyte of them per GiB read.
import v8 from 'node:v8';
import { keepMallocMemory, releaseFreedMemory } from '../native/addon.js';
import { log } from '../log.js';

/**
 * V8 lets old space grow by at most 4× its live size before a full
 * collection; it picks a smaller factor on its own while collections look
 * cheap, and this small heap (~13 MB) then sits so close to its limit that
 * every ~15 MiB of chunk traffic started a full marking: ~75 per GiB read
 * cold, a third of the mount's CPU on V8's marking threads. Pinning the
 * factor at 4× (V8's own maximum) cut that to ~30, and the node's CPU per
 * GiB served by half (measured with a cold 1 GiB read). The price is a
 * heap that may reach 4× what is live between collections (V8 still keeps
 * it under half of its limit): GHOSTFS_HEAP_GROWING_PERCENT sets another
 * figure, 0 leaves the choice to V8.
 */
const HEAP_GROWING_PERCENT = 300;

/**
 * How often freed heap memory goes back to the kernel. Between two trims
 * the allocator reuses what was freed (keepMallocMemory's point); without
 * them what it keeps only grows. A trim costs a few milliseconds, and the
 * pages taken again afterwards a few tens of milliseconds of page faults.
 */
const TRIM_INTERVAL_MS = 60_000;

export function tuneForChunkTraffic(): void {
  // Chunk buffers reuse memory instead of fresh pages each; once a minute
  // what is not in use goes back.
  if (keepMallocMemory()) setInterval(releaseFreedMemory, TRIM_INTERVAL_MS).unref();
  const asked = process.env.GHOSTFS_HEAP_GROWING_PERCENT;
  const percent = asked === undefined || asked === '' ? HEAP_GROWING_PERCENT : Number(asked);
  if (!Number.isInteger(percent) || percent < 0) {
    log.warn({ GHOSTFS_HEAP_GROWING_PERCENT: asked }, 'not a whole number of percent: the heap grows as V8 chooses');
    return;
  }
  if (percent > 0) v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
}
