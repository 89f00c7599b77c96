// The fuse-native driver: libfuse2's high-level, path-based API. Each
// kernel request arrives with a path, is resolved to a VFS node and served.
// Known limits of this binding (the native driver lifts them): times travel
// in milliseconds, inode numbers in 32 bits, requests are 128 KiB at most,
// there is no kernel cache invalidation (attribute timeouts bound
// staleness), and its utimens passes atime in place of mtime. The binding
// has no rename flags either: RENAME_NOREPLACE never reaches us.
import Fuse, { type Ops, type Stat } from 'fuse-native';
import { isReg, type Attr } from '../../content/attr.js';
import { baseName, NAME_MAX, parentOf } from '../../wire/rel-path.js';
import { errnoOf, FsError } from '../../wire/errors.js';
import type { Node, Vfs } from '../vfs.js';
import type { OwnerMap } from '../owner-map.js';
import { serveOp, type Driver, type DriverOptions } from './driver.js';


/** `owners`: the ids as shown (owner-map.ts). */
function toStat(n: Node, owners: OwnerMap): Stat {
  const a: Attr = owners.shown(n.attr);
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

/**
 * A lookup that found nothing, for a path with a name longer than a name
 * may be: ENAMETOOLONG, as a local disk answers (the kernel passes such
 * names to FUSE). Looked at only once the lookup failed.
 */
const nameTooLong = (p: string) => (err: unknown): never => {
  if (errnoOf(err) === 'ENOENT' && p.split('/').some((n) => Buffer.byteLength(n) > NAME_MAX)) throw new FsError('ENAMETOOLONG', `"${p.slice(0, 64)}...": a name is at most ${NAME_MAX} bytes`);
  throw err;
};

export class FuseNativeDriver implements Driver {
  readonly name = 'fuse-native';
  private fuse: Fuse | undefined;

  constructor(
    private readonly vfs: Vfs,
    private readonly opts: DriverOptions,
  ) {}

  /** Runs an async VFS call and answers the kernel with its result or a deliberate errno. */
  private serve<T>(op: string, path: string, fn: () => Promise<T>, reply: (err: number, res?: T) => void): void {
    serveOp(op, path, fn, (res) => reply(0, res), (errno) => reply(-errno));
  }

  private ops(): Ops {
    const vfs = this.vfs;
    const parentAndName = async (p: string): Promise<[string, string]> => {
      const r = rel(p);
      const parent = await vfs.resolve(parentOf(r));
      return [parent.path, baseName(r)];
    };
    const done = (cb: (err: number) => void) => (err: number) => cb(err);
    /** An operation on a name in a directory (unlink, mkdir...): resolved, run, answered. */
    const inParent = (op: string, p: string, cb: (err: number) => void, fn: (parent: string, name: string) => Promise<unknown>): void =>
      this.serve(op, p, async () => fn(...(await parentAndName(p))), done(cb));
    return {
      init: (cb) => cb(0),
      getattr: (p, cb) => this.serve('getattr', p, async () => toStat(await vfs.resolve(rel(p)).catch(nameTooLong(p)), vfs.owners), cb),
      readdir: (p, cb) =>
        this.serve(
          'readdir',
          p,
          async () => {
            const dir = await vfs.resolve(rel(p));
            const parent = dir.path === '' ? dir : await vfs.resolve(parentOf(dir.path));
            return { dir, parent, children: await vfs.readdir(dir.path) };
          },
          (err, r) => {
            if (err) return cb(err);
            // libfuse's high-level API leaves "." and ".." to the filesystem.
            const names = ['.', '..', ...r!.children.map((n) => baseName(n.path))];
            cb(0, names, [r!.dir, r!.parent, ...r!.children].map((n) => toStat(n, vfs.owners)));
          },
        ),
      open: (p, flags, cb) => this.serve('open', p, async () => (await vfs.open((await vfs.resolve(rel(p))).path, flags)).fh, cb),
      create: (p, mode, cb) =>
        this.serve(
          'create',
          p,
          async () => {
            const [parent, name] = await parentAndName(p);
            return (await vfs.create(parent, name, mode)).handle.fh;
          },
          cb,
        ),
      read: (p, fd, buf, len, pos, cb) => this.serve('read', p, () => vfs.read(fd, pos, len, buf), (err, n) => cb(err || n!)),
      write: (p, fd, buf, len, pos, cb) => this.serve('write', p, () => vfs.write(fd, pos, buf.subarray(0, len)), (err, n) => cb(err || n!)),
      flush: (p, fd, cb) => this.serve('flush', p, () => vfs.flush(fd), done(cb)),
      fsync: (p, _datasync, fd, cb) => this.serve('fsync', p, () => vfs.fsync(fd), done(cb)),
      release: (p, fd, cb) => this.serve('release', p, () => vfs.release(fd), done(cb)),
      readlink: (p, cb) => this.serve('readlink', p, async () => vfs.readlink((await vfs.resolve(rel(p))).path), cb),
      statfs: (p, cb) =>
        this.serve('statfs', p, () => vfs.statfs(), (err, s) =>
          err ? cb(err) : cb(0, { bsize: s!.bsize, frsize: s!.bsize, blocks: s!.blocks, bfree: s!.bfree, bavail: s!.bavail, files: s!.files, ffree: s!.ffree, favail: s!.ffree, fsid: 0, flag: 0, namemax: s!.namemax }),
        ),
      access: (p, _mode, cb) => this.serve('access', p, () => vfs.resolve(rel(p)), done(cb)),
      truncate: (p, size, cb) => this.serve('truncate', p, async () => vfs.setattr((await vfs.resolve(rel(p))).path, { size }), done(cb)),
      ftruncate: (p, _fd, size, cb) => this.serve('ftruncate', p, async () => vfs.setattr(rel(p), { size }), done(cb)),
      // The binding hands over the atime in both arguments (its C code reads
      // tv[0] twice): mtime cannot be set exactly through this driver.
      utimens: (p, atime, mtime, cb) =>
        this.serve('utimens', p, async () => vfs.setattr((await vfs.resolve(rel(p))).path, { atimeNs: BigInt(Math.round(atime)) * 1_000_000n, mtimeNs: BigInt(Math.round(mtime)) * 1_000_000n }), done(cb)),
      chmod: (p, mode, cb) => this.serve('chmod', p, async () => vfs.setattr((await vfs.resolve(rel(p))).path, { mode }), done(cb)),
      chown: (p, uid, gid, cb) =>
        this.serve('chown', p, async () => vfs.setattr((await vfs.resolve(rel(p))).path, { uid: uid === 0xffffffff ? undefined : vfs.owners.uid(uid), gid: gid === 0xffffffff ? undefined : vfs.owners.gid(gid) }), done(cb)),
      mknod: (p, mode, dev, cb) =>
        inParent('mknod', p, cb, async (parent, name) => {
          if (!isReg(mode)) return vfs.mknod(parent, name, mode, dev);
          const c = await vfs.create(parent, name, mode & 0o7777);
          await vfs.release(c.handle.fh);
        }),
      unlink: (p, cb) => inParent('unlink', p, cb, (parent, name) => vfs.unlink(parent, name)),
      rmdir: (p, cb) => inParent('rmdir', p, cb, (parent, name) => vfs.rmdir(parent, name)),
      mkdir: (p, mode, cb) => inParent('mkdir', p, cb, (parent, name) => vfs.mkdir(parent, name, mode)),
      rename: (src, dest, cb) =>
        this.serve(
          'rename',
          src,
          async () => {
            const [fromParent, fromName] = await parentAndName(src);
            const [toParent, toName] = await parentAndName(dest);
            await vfs.rename(fromParent, fromName, toParent, toName);
          },
          done(cb),
        ),
      symlink: (target, p, cb) => inParent('symlink', p, cb, (parent, name) => vfs.symlink(parent, name, target)),
      link: (src, dest, cb) => inParent('link', dest, cb, async (parent, name) => vfs.link((await vfs.resolve(rel(src))).path, parent, name)),
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
      // Shared with other users, the kernel must check each one's permissions.
      allowOther: this.opts.allowOther ?? false,
      defaultPermissions: this.opts.allowOther ?? false,
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
