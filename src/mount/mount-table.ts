// Mounts as the kernel lists them in /proc/self/mountinfo (no I/O on the
// mount itself: a process must never touch the mount it serves, and a dead
// FUSE mount would hang a stat).
import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface MountEntry {
  mountpoint: string;
  /** "major:minor"; for FUSE the minor number names the connection in /sys/fs/fuse/connections. */
  device: string;
  fstype: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export async function mountEntry(mountpoint: string): Promise<MountEntry | undefined> {
  const table = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of table.split('\n')) {
    const f = line.split(' ');
    if (f.length < 10 || unescape(f[4]!) !== mountpoint) continue;
    const sep = f.indexOf('-');
    return { mountpoint, device: f[2]!, fstype: f[sep + 1] ?? '', source: unescape(f[sep + 2] ?? '') };
  }
  return undefined;
}

/** The FUSE connection of a mount: its device's minor number names it in /sys/fs/fuse/connections. */
export function fuseConnection(e: MountEntry): string {
  return e.device.split(':')[1] ?? '';
}

export async function isMounted(mountpoint: string): Promise<boolean> {
  return (await mountEntry(mountpoint)) !== undefined;
}

const FUSECTL = '/sys/fs/fuse/connections';

/**
 * Aborts a FUSE connection: every request in flight fails at once instead
 * of waiting for a dead or stuck daemon. The control filesystem that offers
 * this is not mounted on every machine; it is mounted here when missing
 * (root only, as the abort itself is).
 */
export async function abortFuseConnection(connection: string): Promise<void> {
  if (!(await isMounted(FUSECTL))) {
    const r = spawnSync('mount', ['-t', 'fusectl', 'fusectl', FUSECTL], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${FUSECTL} is not mounted and mounting it failed: ${(r.stderr || r.error?.message || '').trim()}`);
  }
  await writeFile(join(FUSECTL, connection, 'abort'), '1');
}
