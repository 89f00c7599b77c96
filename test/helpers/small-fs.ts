// A real, small filesystem to run out of space on: a tmpfs (mounting it
// needs root, as these tests have), removed when the test ends.
import { join } from 'node:path';
import { key, type Store } from '../../src/store/db.js';
import { fillUp, mountSmallFs } from '../../scripts/soak/lib/small-fs.js';

export async function smallFs(t: { teardown(fn: () => unknown): void }, size: string): Promise<string> {
  const fs = await mountSmallFs(size);
  t.teardown(fs.remove);
  return fs.dir;
}

/**
 * Fills the filesystem of `dir`, then writes to `store` (a database on it)
 * until the database refuses: RocksDB has log space allocated ahead (about
 * one write buffer), so writes go on for a while. Reopening the database
 * afterwards replays that log into a new file: the filesystem needs room
 * for both. Resolves with a function that frees the room.
 */
export async function fillUntilRefused(dir: string, store: Store): Promise<() => Promise<void>> {
  const free = await fillUp(join(dir, 'hog'));
  for (let i = 0; ; i++) {
    const err = await store.put(key('junk', String(i)), Buffer.alloc(256 << 10)).catch((e: unknown) => e);
    if (err) break;
  }
  // The failed write may have given back log space it had allocated ahead: take that too.
  const freeRest = await fillUp(join(dir, 'hog2'));
  return async () => {
    await free();
    await freeRest();
  };
}
