// The benchmark's working directory: a fresh temp dir, or a named --dir that
// must be new, empty, or one of ours (it holds our marker file); and removing
// exactly what the benchmark put there.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

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

/** Writes the JSON report to `file` and returns its absolute path. */
export async function writeJsonReport(file: string, report: unknown): Promise<string> {
  await writeFile(resolve(file), JSON.stringify(report, null, 2) + '\n');
  return resolve(file);
}
