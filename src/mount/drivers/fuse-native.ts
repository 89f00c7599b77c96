// The fuse-native driver: libfuse2's high-level, path-based API. Each
// kernel request arrives with a path, is resolved to a VFS node and served.
// Known limits of this binding (the native driver lifts them): times travel
// in milliseconds, inode numbers in 32 bits, requests are 128 KiB at most,
// there is no kernel cache invalidation (attribute timeouts bound
// staleness), and its utimens passes atime in place of mtime.
import Fuse, { type Ops, type Stat } from 'fuse-native';
import type { Attr } from '../../content/attr.js';
import { errnoOf } from '../../wire/errors.js';
import { baseName, parentOf } from '../../wire/rel-path.js';
import { log } from '../../log.js';
import type { Node, Vfs } from '../vfs.js';
import { errnoNumber, type Driver, type DriverOptions } from './driver.js';

const O_ACCMODE = 3;
const W_OK = 2;
const READ_ONLY = 'EROFS';

function toStat(n: Node): Stat {
  const a: Attr = n.attr;
  return {
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    dev: 0,
    nlink: a.nlink,
    ino: a.ino, // the node's number, also for the root (the kernel's 1 is only an address)
    rdev: a.rdev,
    blksize: 4096,
    blocks: a.blocks,
    atime: Number(a.atimeNs / 1_000_000n),
    mtime: Number(a.mtimeNs / 1_000_000n),
    ctime: Number(a.ctimeNs / 1_000_000n),
  };
}

const rel = (p: string): string => (p === '/' ? '' : p.slice(1));

export class FuseNativeDriver implements Driver {
  readonly name = 'fuse-native';
  private fuse: Fuse | undefined;

  constructor(
    private readonly vfs: Vfs,
    private readonly opts: DriverOptions,
  ) {}

  /** Runs an async VFS call and answers the kernel with its result or a deliberate errno. */
  private serve<T>(op: string, path: string, fn: () => Promise<T>, reply: (err: number, res?: T) => void): void {
    fn().then(
      (res) => reply(0, res),
      (err) => {
        const errno = errnoOf(err);
        if (errno === 'EIO' || errno === 'EHOSTDOWN' || errno === 'ETIMEDOUT') log.warn({ op, path, errno, err: (err as Error).message }, 'operation failed');
        else log.debug({ op, path, errno }, 'operation failed');
        reply(-errnoNumber(errno));
      },
    );
  }

  private ops(): Ops {
    const vfs = this.vfs;
    const refuse = (cb: (err: number) => void): void => cb(-errnoNumber(READ_ONLY));
    return {
      init: (cb) => cb(0),
      getattr: (p, cb) => this.serve('getattr', p, async () => toStat(await vfs.resolve(rel(p))), cb),
      readdir: (p, cb) =>
        this.serve(
          'readdir',
          p,
          async () => {
            const dir = await vfs.resolve(rel(p));
            const parent = dir.path === '' ? dir : await vfs.resolve(parentOf(dir.path));
            return { dir, parent, children: await vfs.readdir(dir.ino) };
          },
          (err, r) => {
            if (err) return cb(err);
            // libfuse's high-level API leaves "." and ".." to the filesystem.
            const names = ['.', '..', ...r!.children.map((n) => baseName(n.path))];
            cb(0, names, [r!.dir, r!.parent, ...r!.children].map(toStat));
          },
        ),
      open: (p, flags, cb) => {
        if ((flags & O_ACCMODE) !== 0) return refuse(cb);
        this.serve('open', p, async () => (await vfs.open((await vfs.resolve(rel(p))).ino)).fh, cb);
      },
      release: (_p, fd, cb) => {
        vfs.release(fd);
        cb(0);
      },
      read: (p, fd, buf, len, pos, cb) => this.serve('read', p, () => vfs.read(fd, pos, len, buf), (err, n) => cb(err || n!)),
      readlink: (p, cb) => this.serve('readlink', p, async () => vfs.readlink((await vfs.resolve(rel(p))).ino), cb),
      statfs: (_p, cb) => {
        const s = vfs.statfs();
        cb(0, { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: s.namemax });
      },
      access: (p, mode, cb) => {
        if (mode & W_OK) return refuse(cb);
        this.serve('access', p, () => vfs.resolve(rel(p)), (err) => cb(err));
      },
      // The read side: every change is refused with EROFS until write-back lands.
      create: (_p, _m, cb) => refuse(cb),
      truncate: (_p, _s, cb) => refuse(cb),
      ftruncate: (_p, _fd, _s, cb) => refuse(cb),
      utimens: (_p, _a, _m, cb) => refuse(cb),
      chown: (_p, _u, _g, cb) => refuse(cb),
      chmod: (_p, _m, cb) => refuse(cb),
      mknod: (_p, _m, _d, cb) => refuse(cb),
      unlink: (_p, cb) => refuse(cb),
      rename: (_s, _d, cb) => refuse(cb),
      link: (_s, _d, cb) => refuse(cb),
      symlink: (_s, _d, cb) => refuse(cb),
      mkdir: (_p, _m, cb) => refuse(cb),
      rmdir: (_p, cb) => refuse(cb),
    };
  }

  mount(): Promise<void> {
    this.fuse = new Fuse(this.opts.mountpoint, this.ops(), {
      // Longer than any remote deadline, so the VFS always answers first with
      // a deliberate errno; the binding's 15 s default would cut lazy fetches.
      timeout: this.opts.opTimeoutMs,
      // A crashed earlier mount here is unmounted first; the kernel unmounts
      // this one if the process dies.
      force: true,
      mkdir: true,
      autoUnmount: true,
      maxRead: 128 * 1024,
      // The binding passes only a fixed list of options; fsname is the one
      // whose value reaches libfuse verbatim, so the options it lacks ride
      // along there: use_ino (report the node's inode numbers) and big_writes.
      fsname: 'ghostfs,use_ino,big_writes',
      subtype: 'ghostfs',
      autoCache: true,
      attrTimeout: this.opts.attrTimeoutS,
      entryTimeout: this.opts.attrTimeoutS,
      debug: this.opts.debug,
    });
    return new Promise((resolve, reject) => this.fuse!.mount((err) => (err ? reject(err) : resolve())));
  }

  unmount(): Promise<void> {
    const f = this.fuse;
    if (!f) return Promise.resolve();
    this.fuse = undefined;
    return new Promise((resolve, reject) => f.unmount((err) => (err ? reject(err) : resolve())));
  }
}
