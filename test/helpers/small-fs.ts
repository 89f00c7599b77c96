// A real, small filesystem to run out of space on: a tmpfs (mounting it
// needs root, as these tests have).
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function smallFs(t: { teardown(fn: () => unknown): void }, size: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ghostfs-small-fs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  t.teardown(async () => {
    execFileSync('umount', ['-l', dir]);
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}
