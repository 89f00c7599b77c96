// fsync of a file or directory named by path, for data that must be on disk
// before something that refers to it is.
import { open } from 'node:fs/promises';

/** Syncs `path` (fdatasync with `data`); a path that is gone needs nothing and resolves. */
export async function syncPath(path: string, opts: { data?: boolean } = {}): Promise<void> {
  let fh;
  try {
    fh = await open(path, 'r'); // neither sync needs write access
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    await (opts.data ? fh.datasync() : fh.sync());
  } finally {
    await fh.close();
  }
}
