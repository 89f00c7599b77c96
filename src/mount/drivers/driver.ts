// What the mount needs of a kernel driver: attach a VFS at a mountpoint and
// detach it again. Drivers stay thin: every decision lives in the VFS.
import { constants } from 'node:os';
import { errnoOf } from '../../wire/errors.js';
import { log } from '../../log.js';
import { fsOps, fsOpSeconds } from '../../admin/metrics.js';
import type { PathChange } from '../../cache/meta-store.js';

export interface Driver {
  readonly name: string;
  mount(): Promise<void>;
  unmount(): Promise<void>;
  /** These paths changed (on the node, or in a listing from it): drop what the kernel cached of them (drivers that can). */
  invalidate?(changes: readonly PathChange[]): void;
  /** Driver counters for `status` (drivers that keep any). */
  stats?(): Record<string, unknown>;
}

export interface DriverOptions {
  mountpoint: string;
  /** Seconds the kernel may trust attributes and names before asking again. */
  attrTimeoutS: number;
  /** Longest any operation may take before the driver answers EIO itself. */
  opTimeoutMs: number;
  /** Other users may use the mount too (allow_other); the kernel checks each one's permissions. */
  allowOther?: boolean;
  debug?: boolean;
}

/** The positive errno number of an errno name (EIO for names this system lacks). */
export function errnoNumber(name: string): number {
  return (constants.errno as Record<string, number>)[name] ?? constants.errno.EIO;
}

/**
 * Runs one VFS call for a kernel request: counts and times it, and hands
 * the result or a deliberate errno (positive number) to the reply.
 */
export function serveOp<T>(op: string, what: string | number, fn: () => Promise<T>, ok: (res: T) => void, fail: (errno: number) => void): void {
  const end = fsOpSeconds.startTimer({ op });
  fn().then(
    (res) => {
      end();
      fsOps.inc({ op, errno: '0' });
      try {
        ok(res);
      } catch (err) {
        // A reply the driver could not make still answers the kernel.
        log.error({ op, what, err: (err as Error).message }, 'cannot reply to the kernel');
        fail(errnoNumber('EIO'));
      }
    },
    (err) => {
      end();
      const errno = errnoOf(err);
      fsOps.inc({ op, errno });
      if (errno === 'EIO' || errno === 'EHOSTDOWN' || errno === 'ETIMEDOUT') log.warn({ op, what, errno, err: (err as Error).message }, 'operation failed');
      else log.debug({ op, what, errno }, 'operation failed');
      fail(errnoNumber(errno));
    },
  );
}
