// Process-wide memory settings for the two processes that move chunks (the
// node serving them, the mount fetching and writing them): each 1 MiB chunk
// passes through a few short-lived buffers, a gigabyte of them per GiB read.
import v8 from 'node:v8';
import { keepMallocMemory } from '../native/addon.js';

/**
 * V8 lets old space grow by at most 4× its live size before a full
 * collection; it picks a smaller factor on its own while collections look
 * cheap, and this small heap (~13 MB) then sits so close to its limit that
 * every ~15 MiB of chunks traffic started a full marking: ~75 per GiB read
 * cold, a third of the mount's CPU on V8's marking threads. Pinning the
 * factor at 4× (V8's own maximum) cut that to ~30, and the node's CPU per
 * GiB served by half (measured with a cold 1 GiB read; see the issue note).
 */
const HEAP_GROWING_PERCENT = 300;

export function tuneForChunkTraffic(): void {
  keepMallocMemory(); // chunk buffers reuse memory instead of fresh pages each
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
