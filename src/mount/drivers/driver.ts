// What the mount needs of a kernel driver: attach a VFS at a mountpoint and
// detach it again. Drivers stay thin: every decision lives in the VFS.
import { constants } from 'node:os';

export interface Driver {
  readonly name: string;
  mount(): Promise<void>;
  unmount(): Promise<void>;
}

export interface DriverOptions {
  mountpoint: string;
  /** Seconds the kernel may trust attributes and names before asking again. */
  attrTimeoutS: number;
  /** Longest any operation may take before the driver answers EIO itself. */
  opTimeoutMs: number;
  debug?: boolean;
}

/** The positive errno number of an errno name (EIO for names this system lacks). */
export function errnoNumber(name: string): number {
  return (constants.errno as Record<string, number>)[name] ?? constants.errno.EIO;
}
