// The set-user-ID and set-group-ID bits a client asks for on a regular file.
// A node drops them unless it is served with --allow-setid: a client holding
// the token could otherwise leave a program behind that runs as its owner
// for anyone who can log in on the node, as root when the node runs as root
// and the client chowned the file to root first. Directories keep theirs
// (set-group-ID there only makes new entries inherit the group). A file
// committed from a mount loses them too, as a write by anyone but root
// makes the kernel clear them on a local disk.
import { onceThenDebug } from '../log.js';

const SET_ID = 0o6000;

const dropped = onceThenDebug('info');

/** `mode` (permission bits) as a regular file on this node gets it. */
export function fileModeFrom(mode: number, allowSetId: boolean, path: string): number {
  if (allowSetId || !(mode & SET_ID)) return mode;
  dropped({ path, mode: mode.toString(8) }, 'set-id bits on a file dropped (serve --allow-setid keeps them)');
  return mode & ~SET_ID;
}
