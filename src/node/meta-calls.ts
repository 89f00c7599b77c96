// The node's metadata calls on a workspace's disk: lstat, realpath,
// readlink, readdir, and the namespace changes (mkdir, rmdir, unlink, rename, link,
// symlink, mknod, chmod, lchown). They run either inline on the event loop or
// through libuv's thread pool, as the storage profile says.
//
// On a local disk such a call answers in microseconds, and the pool's round
// trip (wake a worker, then wake the event loop again) costs more than the
// call (measured: see the README, on `serve --profile`). On a network
// filesystem one call can wait milliseconds on its server, and inline it
// would hold up every other request of the node meanwhile: there they use
// the pool. So does, on any disk, the removal of a big file's last name
// (an unlink, or a rename over it): the filesystem frees its blocks within
// that call.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { attrFromStats, isLnk, isReg, type Attr } from '../content/attr.js';
import { nativeAddon } from '../native/addon.js';
import { FsError } from '../wire/errors.js';

export interface MetaCalls {
  /** The attributes of what is at `abs`, not following a symlink there. */
  lstat(abs: string): Promise<Attr>;
  /** The same, or null when nothing is there. */
  lstatOrNull(abs: string): Promise<Attr | null>;
  /**
   * Inline calls only: lstatOrNull made now, on the event loop, so nothing
   * else is recorded between it and what the caller does next (see
   * WorkspaceIndex.apply).
   */
  lstatNow?(abs: string): Attr | null;
  realpath(abs: string): Promise<string>;
  readlink(abs: string): Promise<string>;
  readdir(abs: string): Promise<string[]>;
  mkdir(abs: string, mode: number): Promise<void>;
  rmdir(abs: string): Promise<void>;
  unlink(abs: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  link(existing: string, abs: string): Promise<void>;
  symlink(target: string, abs: string): Promise<void>;
  /** A fifo, socket or device node (`mode` with its type bits); needs the native addon (Node has no mknod). */
  mknod(abs: string, mode: number, rdev: number): Promise<void>;
  /** chmod by name (it follows a symlink: callers check first). */
  chmod(abs: string, mode: number): Promise<void>;
  lchown(abs: string, uid: number, gid: number): Promise<void>;
  /**
   * chmod of what was opened, without following a symlink: a path-only
   * descriptor (O_PATH) pins the inode, which a symlink swapped in after a
   * look cannot redirect, and opens nothing (a fifo, a socket or a device
   * node is not opened as one). A symlink fails with ELOOP. The mode is
   * `modeFor` the st_mode of what was opened (its type decides which bits a
   * client may set: set-id.ts).
   */
  chmodNoFollow(abs: string, modeFor: (stMode: number) => number): Promise<void>;
  /** The calls to remove `victim`'s name with (unlink, or a rename over it: null when nothing is there). */
  freeing(victim: Attr | null): MetaCalls;
  /** A rename that replaces what is at `to`, if anything: through the pool when that frees a big file (see `freeing`). */
  renameOver(from: string, to: string): Promise<void>;
}

/** Allocated bytes from which dropping a file's last link is left to the pool: freeing them can take milliseconds. */
const FREE_INLINE_MAX = 64 * 1024 * 1024;

/** Linux's O_PATH (Node does not name it): a descriptor for the inode alone, opened without any access to it. */
const O_PATH = 0o10000000;
const PATH_ONLY = O_PATH | fs.constants.O_NOFOLLOW;
/** chmod through a path-only descriptor goes through its /proc name (as glibc's fchmodat(AT_SYMLINK_NOFOLLOW) does): fchmod refuses such a descriptor. */
const fdPath = (fd: number): string => `/proc/self/fd/${fd}`;
const ELOOP = (): Error => Object.assign(new Error('ELOOP: a symlink\'s mode cannot be changed'), { code: 'ELOOP' });

const mknod = async (abs: string, mode: number, rdev: number): Promise<void> => {
  const addon = nativeAddon();
  if (!addon) throw new FsError('EPERM', 'making a fifo, socket or device node needs the native addon (mknod), which is not built here');
  addon.mknod(abs, mode, rdev);
};

const orNull = (err: unknown): null => {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
  throw err;
};

/** Inline: each call is made on the event loop (async only so that errors arrive as rejections, as from the pool). */
const inline: MetaCalls = {
  lstat: async (abs) => attrFromStats(fs.lstatSync(abs, { bigint: true })),
  lstatOrNull: async (abs) => inline.lstatNow!(abs),
  lstatNow: (abs) => {
    const st = fs.lstatSync(abs, { bigint: true, throwIfNoEntry: false });
    return st ? attrFromStats(st) : null;
  },
  realpath: async (abs) => fs.realpathSync.native(abs),
  readlink: async (abs) => fs.readlinkSync(abs),
  readdir: async (abs) => fs.readdirSync(abs),
  mkdir: async (abs, mode) => void fs.mkdirSync(abs, { mode }),
  rmdir: async (abs) => fs.rmdirSync(abs),
  unlink: async (abs) => fs.unlinkSync(abs),
  rename: async (from, to) => fs.renameSync(from, to),
  link: async (existing, abs) => fs.linkSync(existing, abs),
  symlink: async (target, abs) => fs.symlinkSync(target, abs),
  chmod: async (abs, mode) => fs.chmodSync(abs, mode),
  lchown: async (abs, uid, gid) => fs.lchownSync(abs, uid, gid),
  mknod,
  chmodNoFollow: async (abs, modeFor) => {
    const fd = fs.openSync(abs, PATH_ONLY);
    try {
      const { mode } = fs.fstatSync(fd);
      if (isLnk(mode)) throw ELOOP();
      fs.chmodSync(fdPath(fd), modeFor(mode));
    } finally {
      fs.closeSync(fd);
    }
  },
  freeing: (victim) => (victim && isReg(victim.mode) && victim.nlink <= 1 && victim.blocks * 512 >= FREE_INLINE_MAX ? pooled : inline),
  renameOver: async (from, to) => inline.freeing(await inline.lstatOrNull(to)).rename(from, to),
};

/** Through the thread pool: the event loop never waits on the disk. */
const pooled: MetaCalls = {
  lstat: async (abs) => attrFromStats(await fsp.lstat(abs, { bigint: true })),
  lstatOrNull: (abs) => fsp.lstat(abs, { bigint: true }).then(attrFromStats, orNull),
  realpath: (abs) => fsp.realpath(abs),
  readlink: (abs) => fsp.readlink(abs),
  readdir: (abs) => fsp.readdir(abs),
  mkdir: async (abs, mode) => void (await fsp.mkdir(abs, { mode })),
  rmdir: (abs) => fsp.rmdir(abs),
  unlink: (abs) => fsp.unlink(abs),
  rename: (from, to) => fsp.rename(from, to),
  link: (existing, abs) => fsp.link(existing, abs),
  symlink: (target, abs) => fsp.symlink(target, abs),
  chmod: (abs, mode) => fsp.chmod(abs, mode),
  lchown: (abs, uid, gid) => fsp.lchown(abs, uid, gid),
  // One short call: on the event loop here too (Node's pool has no mknod).
  mknod,
  chmodNoFollow: async (abs, modeFor) => {
    const fh = await fsp.open(abs, PATH_ONLY);
    try {
      const { mode } = await fh.stat();
      if (isLnk(mode)) throw ELOOP();
      await fsp.chmod(fdPath(fh.fd), modeFor(mode));
    } finally {
      await fh.close();
    }
  },
  freeing: () => pooled,
  // Nothing to look at first: every call goes through the pool here.
  renameOver: (from, to) => fsp.rename(from, to),
};

export function metaCalls(mode: 'inline' | 'pool'): MetaCalls {
  return mode === 'inline' ? inline : pooled;
}
