// Confinement of paths that arrive over the wire. A path is relative to the
// workspace root, '/'-separated, and may not climb out of it: no leading
// '/', no '.' or '..' segment, no empty segment, no NUL, and within the
// kernel's limits. Symlinks are never followed out of the root: metadata is
// served from the index (built without following links) or, while the index
// lags behind the disk, from lstat and readdir of paths whose parent was
// checked as mutations check theirs: every mutation checks that the real
// path of its parent directory is inside the root.
import { open } from 'node:fs/promises';
import { close, constants as C, fstat, read, type BigIntStats } from 'node:fs';
import { dirname, join, sep } from 'node:path';
import { promisify } from 'node:util';
import { FsError } from '../wire/errors.js';
import { nativeAddon } from '../native/addon.js';
import type { MetaCalls } from './meta-calls.js';
import { NAME_MAX } from '../wire/rel-path.js';

/** A file opened for reading inside the root. */
export interface RootFile {
  /** The descriptor, for calls that take one (sendfile); closed by `close`. */
  readonly fd: number;
  read(into: Buffer, at: number, length: number, position: number): Promise<number>;
  stat(): Promise<BigIntStats>;
  close(): Promise<void>;
}

const readP = promisify(read);
const fstatP = promisify(fstat) as (fd: number, o: { bigint: true }) => Promise<BigIntStats>;
const closeP = promisify(close);

export { baseName, joinRel, NAME_MAX, parentOf } from '../wire/rel-path.js';
export const PATH_MAX = 4095;

/** Validates a wire path; returns it unchanged ("" is the root). */
export function checkPath(p: unknown, what = 'path'): string {
  if (typeof p !== 'string') throw new FsError('EINVAL', `${what} is not a string`);
  if (p === '') return p;
  if (p.includes('\0')) throw new FsError('EINVAL', `${what} contains a NUL byte`);
  if (p.startsWith('/')) throw new FsError('EACCES', `${what} "${p}" is absolute; paths are relative to the workspace root`);
  if (Buffer.byteLength(p) > PATH_MAX) throw new FsError('ENAMETOOLONG', `${what} is longer than ${PATH_MAX} bytes`);
  for (const seg of p.split('/')) {
    if (seg === '..') throw new FsError('EACCES', `${what} "${p}" leaves the workspace root`);
    if (seg === '' || seg === '.') throw new FsError('EINVAL', `${what} "${p}" is not in canonical form`);
    if (Buffer.byteLength(seg) > NAME_MAX) throw new FsError('ENAMETOOLONG', `a name in ${what} is longer than ${NAME_MAX} bytes`);
  }
  return p;
}

/** A path that names something other than the root (mutations). */
export function checkChildPath(p: unknown, what = 'path'): string {
  const ok = checkPath(p, what);
  if (ok === '') throw new FsError('EBUSY', `${what} may not be the workspace root`);
  return ok;
}

export class Confinement {
  constructor(
    readonly root: string,
    private readonly calls: Pick<MetaCalls, 'realpath'>,
  ) {}

  abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
  }

  /**
   * The absolute path of `rel` after checking that its parent directory,
   * with every symlink resolved, is still inside the root. The last
   * component itself is never followed by the callers (lstat, rename,
   * unlink, O_NOFOLLOW opens).
   */
  async safeAbs(rel: string): Promise<string> {
    const abs = this.abs(rel);
    if (rel === '') return abs;
    let real: string;
    try {
      real = await this.calls.realpath(dirname(abs));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      throw new FsError(code, `parent of "${rel}": ${(err as Error).message.replace(this.root, '<root>')}`);
    }
    if (real !== this.root && !real.startsWith(this.root + sep)) {
      throw new FsError('EACCES', `"${rel}" resolves outside the workspace root through a symlink`);
    }
    return join(real, abs.slice(dirname(abs).length + 1));
  }

  /**
   * Opens a file of the workspace for reading, never following a symlink
   * anywhere on the way: with the native addon the kernel resolves the path
   * beneath the root itself (openat2 RESOLVE_BENEATH), so even a directory
   * swapped for a symlink after indexing cannot lead outside; without it,
   * the last component is not followed (O_NOFOLLOW) and callers check what
   * they opened by its stat tuple.
   */
  async openForRead(rel: string): Promise<RootFile> {
    const flags = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;
    const addon = nativeAddon();
    if (addon) {
      const fd = addon.openBeneath(this.root, rel, flags, 0);
      return {
        fd,
        read: async (into, at, length, position) => (await readP(fd, into, at, length, position)).bytesRead,
        stat: () => fstatP(fd, { bigint: true }),
        close: () => closeP(fd),
      };
    }
    const fh = await open(this.abs(rel), flags);
    return {
      fd: fh.fd,
      read: async (into, at, length, position) => (await fh.read(into, at, length, position)).bytesRead,
      stat: () => fh.stat({ bigint: true }),
      close: () => fh.close(),
    };
  }
}
