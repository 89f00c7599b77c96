// Where running mounts can be found: one control socket per mount in a
// runtime directory, named after the mountpoint. `status` and `unmount`
// look here; nothing else is shared between mount processes.
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

export function runDir(): string {
  if (process.env.GHOSTFS_RUN_DIR) return process.env.GHOSTFS_RUN_DIR;
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'ghostfs');
  return join(tmpdir(), `ghostfs-${process.getuid?.() ?? 0}`);
}

/** The control socket of the mount at this (absolute) mountpoint. */
export function socketFor(mountpoint: string): string {
  // Socket paths are limited to ~108 bytes: a hash, not the path itself.
  return join(runDir(), `${createHash('sha256').update(mountpoint).digest('hex').slice(0, 24)}.sock`);
}

export async function allSockets(): Promise<string[]> {
  const names = await readdir(runDir()).catch(() => [] as string[]);
  return names.filter((n) => n.endsWith('.sock')).map((n) => join(runDir(), n));
}
