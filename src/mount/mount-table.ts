// Mounts as the kernel lists them in /proc/self/mountinfo (no I/O on the
// mount itself: a process must never touch the mount it serves, and a dead
// FUSE mount would hang a stat).
import { readFile } from 'node:fs/promises';

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

export async function isMounted(mountpoint: string): Promise<boolean> {
  return (await mountEntry(mountpoint)) !== undefined;
}
