// Owners a client names for what it makes: a committed file, a directory, a
// symlink. Only a node run as root may give them. One that may not (EPERM:
// not root; EINVAL: an id its user namespace does not map, as in rootless
// containers) makes the thing all the same, as its own, and says so once:
// what was made must not be lost over who owns it.
import { isId } from '../content/attr.js';
import { FsError } from '../wire/errors.js';
import { onceThenDebug } from '../log.js';
import type { MetaCalls } from './meta-calls.js';

export interface Owner {
  /** -1: as made. */
  uid: number;
  gid: number;
}

/** The owner a request names: each part a user or group id, or -1 (kept). */
export function checkOwner(o: Owner): Owner {
  const ok = (id: number) => id === -1 || isId(id);
  if (!ok(o.uid) || !ok(o.gid)) throw new FsError('EINVAL', `owner ${o.uid}:${o.gid}: each must be -1 or an id below 2^32 - 1`);
  return { uid: o.uid, gid: o.gid };
}

const notSaid = onceThenDebug('warn');

export function ownerNotGiven(path: string, uid: number, gid: number, errno: string): void {
  notSaid({ path, uid, gid, errno }, "something made for a client did not get the owner it named, and is the node's (EPERM: the node does not run as root; EINVAL: its user namespace does not map that id)");
}

/** Gives a directory or symlink just made at `abs` its maker's owner (not following a symlink); a refusal is logged, not thrown. */
export async function giveMadeOwner(calls: MetaCalls, abs: string, path: string, owner: Owner | undefined): Promise<void> {
  if (!owner || (owner.uid < 0 && owner.gid < 0)) return;
  try {
    await calls.lchown(abs, owner.uid, owner.gid);
  } catch (err) {
    // Made all the same: the reply's entry shows whose it is.
    ownerNotGiven(path, owner.uid, owner.gid, (err as NodeJS.ErrnoException).code ?? 'EIO');
  }
}
