// The benchmark's working directory: a fresh temp dir, or a named --dir that
// must be new, empty, or one of ours (it holds our marker file); and removing
// exactly what the benchmark put there.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';

/** The parsed marker file `name` in `dir`, or null when there is none (or it is not JSON). */
export async function readMarkerFile<T>(dir: string, name: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(join(dir, name), 'utf8')) as T;
  } catch {
    return null;
  }
}

/**
 * The directory to work in: `named` (resolved), or a fresh one under the OS
 * temp dir starting with `prefix`. Never delete what we did not make: a named
 * directory must be new, empty, or `isOurs`.
 */
export async function openWorkDir(named: string | undefined, prefix: string, marker: string, isOurs: (dir: string) => Promise<boolean>): Promise<{ dir: string; madeDir: boolean }> {
  const dir = named ? resolve(named) : await mkdtemp(join(tmpdir(), prefix));
  if (named && existsSync(dir) && !(await isOurs(dir)) && (await readdir(dir)).length > 0) {
    throw new Error(`${dir} is not empty and was not made by this benchmark (no ${marker}); give a new or empty --dir`);
  }
  await mkdir(dir, { recursive: true });
  return { dir, madeDir: !named };
}

/** Removes the work dir when we made it; in a directory the user named, only `ours` (then the dir itself if empty). */
export async function removeWorkDir(dir: string, madeDir: boolean, ours: string[]): Promise<void> {
  if (madeDir) await rm(dir, { recursive: true, force: true });
  else {
    for (const p of ours) await rm(p, { recursive: true, force: true });
    await rmdir(dir).catch(() => undefined);
  }
}

/**
 * What a benchmark is done with, moved aside (renamed into `dir`, on the same
 * filesystem) while measurements go on, and deleted once they are over. A
 * delete is not free for what comes after it: ext4 without a journal (the
 * disk of this project's machines) passes over inodes freed in the last
 * minutes when it makes new ones, one check each, so a file created after a
 * big rm -rf costs up to ten times more (the kernel's recently_deleted()).
 * Deleting between samples would charge that to whatever is measured next.
 */
export class SetAside {
  private n = 0;

  constructor(readonly dir: string) {}

  /** Moves `path` (when it exists) out of the way; mkdirs `recreate` in its place. */
  async put(path: string, opts: { recreate?: boolean } = {}): Promise<void> {
    if (existsSync(path)) {
      await mkdir(this.dir, { recursive: true });
      // Named by process too: a killed run's leftovers may still be there (deleted with these).
      await rename(path, join(this.dir, `${process.pid}.${++this.n}-${basename(path)}`));
    }
    if (opts.recreate) await mkdir(path, { recursive: true });
  }

  /** Deletes everything set aside (when measurements are over). */
  async empty(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Writes the JSON report to `file` and returns its absolute path. */
export async function writeJsonReport(file: string, report: unknown): Promise<string> {
  await writeFile(resolve(file), JSON.stringify(report, null, 2) + '\n');
  return resolve(file);
}
