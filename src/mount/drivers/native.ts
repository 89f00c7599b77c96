// The native driver: ghostfs's own addon on libfuse3's low-level, inode-based
// API (native/src). Kernel requests arrive in batches on the JS thread and
// are answered whenever the VFS is ready, many in flight at once. Requests
// are up to 1 MiB, directory listings carry attributes (readdirplus), times
// are exact to the nanosecond, rename flags arrive, and the change feed
// invalidates exactly what changed in the kernel's caches, so attribute and
// entry timeouts can be long. Reads of fully cached chunks are served in C
// without reaching this file at all.
import { mkdir, stat, writeFile } from 'node:fs/promises';
import type { ChunkRef } from '../../content/manifest.js';
import { isDir, S_IFMT, S_IFREG, type Attr } from '../../content/attr.js';
import { baseName, parentOf } from '../../wire/rel-path.js';
import { FsError } from '../../wire/errors.js';
import { log } from '../../log.js';
import { nativeAddon, nativeLoadError, type NativeAddon, type SessionHandle } from '../../native/addon.js';
import { isMounted, mountEntry } from '../mount-table.js';
import { chunkIndex, ROOT_INO, O_ACCMODE, type Node, type SetAttr, type Vfs } from '../vfs.js';
import { errnoNumber, serveOp, type Driver, type DriverOptions } from './driver.js';

/** Operation codes, as native/src/ghostfs.h numbers them. */
const enum Op {
  EXIT = 0,
  LOOKUP = 1,
  GETATTR = 2,
  SETATTR = 3,
  READLINK = 4,
  MKDIR = 5,
  UNLINK = 6,
  RMDIR = 7,
  SYMLINK = 8,
  RENAME = 9,
  LINK = 10,
  OPEN = 11,
  READ = 12,
  WRITE = 13,
  FLUSH = 14,
  RELEASE = 15,
  FSYNC = 16,
  OPENDIR = 17,
  READDIR = 18,
  READDIRPLUS = 19,
  RELEASEDIR = 20,
  STATFS = 21,
  CREATE = 22,
  MKNOD = 23,
}

// setattr's to_set bits (fuse_lowlevel.h).
const SET_MODE = 1 << 0;
const SET_UID = 1 << 1;
const SET_GID = 1 << 2;
const SET_SIZE = 1 << 3;
const SET_ATIME = 1 << 4;
const SET_MTIME = 1 << 5;
const SET_ATIME_NOW = 1 << 7;
const SET_MTIME_NOW = 1 << 8;

// replyOpen's bits.
const KEEP_CACHE = 1;
const CACHE_READDIR = 8;

const ATTR_LEN = 14;
const NS = 1_000_000_000n;

/**
 * Writes attributes as the addon reads them (see ATTR_LEN in fuse_driver.c).
 * The inode number is the node's, which is also the kernel's node id for
 * every entry; only the root differs (the kernel calls it 1, and stat
 * shows the node's number).
 */
function putAttr(out: Float64Array, at: number, a: Attr): void {
  out[at] = a.ino;
  out[at + 1] = a.mode;
  out[at + 2] = a.nlink;
  out[at + 3] = a.uid;
  out[at + 4] = a.gid;
  out[at + 5] = a.rdev;
  out[at + 6] = a.size;
  out[at + 7] = a.blocks;
  putTime(out, at + 8, a.atimeNs);
  putTime(out, at + 10, a.mtimeNs);
  putTime(out, at + 12, a.ctimeNs);
}

function putTime(out: Float64Array, at: number, ns: bigint): void {
  let s = ns / NS;
  let rest = ns - s * NS;
  if (rest < 0n) {
    s -= 1n;
    rest += NS;
  }
  out[at] = Number(s);
  out[at + 1] = Number(rest);
}

interface DirHandle {
  ino: number;
  /** The listing taken when the reader started at offset 0: names and attributes. */
  names?: string[];
  attrs?: Attr[];
}

/** A read handle registered with the fast path: which chunks the addon knows are on disk. */
interface FastFile {
  chunks: ChunkRef[];
  marked: Uint8Array;
}

export interface NativeDriverOptions extends DriverOptions {
  /** The chunk store's directory, read directly by the fast path. */
  chunkDir: string;
  /** Kernel writeback caching of writes: off unless asked (see README). */
  writebackCache?: boolean;
}

export class NativeDriver implements Driver {
  readonly name = 'native';
  private readonly addon: NativeAddon;
  private session: SessionHandle | undefined;
  private exited: Promise<void> | undefined;
  private markExited: () => void = () => undefined;
  private readonly dirs = new Map<number, DirHandle>();
  private nextDirFh = 1;
  private readonly fast = new Map<number, FastFile>();
  private readonly attr = new Float64Array(ATTR_LEN);

  constructor(
    private readonly vfs: Vfs,
    private readonly opts: NativeDriverOptions,
  ) {
    const a = nativeAddon();
    if (!a) throw new Error(`the native driver is not available: ${nativeLoadError()}`);
    this.addon = a;
  }

  private attrOf(n: Node): Float64Array {
    putAttr(this.attr, 0, n.attr);
    return this.attr;
  }

  async mount(): Promise<void> {
    const mp = this.opts.mountpoint;
    // A mount left by a process that died answers ENOTCONN: detach it first.
    const dead = await stat(mp).then(
      () => false,
      (err: NodeJS.ErrnoException) => err.code === 'ENOTCONN',
    );
    if (dead || (await isMounted(mp))) {
      log.warn({ mountpoint: mp }, 'a previous mount is still attached here: detaching it');
      try {
        this.addon.lazyUnmount(mp);
      } catch (err) {
        throw new Error(`cannot detach the previous mount at ${mp}: ${(err as Error).message}`);
      }
    }
    await mkdir(mp, { recursive: true });
    this.exited = new Promise((r) => (this.markExited = r));
    const t = this.opts.attrTimeoutS;
    this.session = this.addon.mount(
      mp,
      {
        fsname: 'ghostfs',
        chunkDir: this.opts.chunkDir,
        attrTimeout: t,
        entryTimeout: t,
        maxWrite: 1 << 20,
        maxReadahead: 1 << 20,
        writebackCache: this.opts.writebackCache ?? false,
        autoUnmount: true,
        debug: this.opts.debug,
      },
      (...args) => this.dispatch(...args),
    );
    await this.raiseReadahead(mp);
  }

  /**
   * The kernel caps a FUSE mount's readahead at its default 128 KiB
   * whatever the filesystem asks at init; the mount's bdi setting lifts
   * that, so sequential readers get 1 MiB requests. Needs root; without
   * it the mount works with 128 KiB readahead.
   */
  private async raiseReadahead(mp: string): Promise<void> {
    const dev = (await mountEntry(mp))?.device;
    if (!dev) return;
    await writeFile(`/sys/class/bdi/${dev}/read_ahead_kb`, '1024').catch((err: Error) => log.debug({ dev, err: err.message }, 'cannot raise the readahead of the mount'));
  }

  async unmount(): Promise<void> {
    const s = this.session;
    if (!s) return;
    this.addon.unmount(s);
    // The loop ends once the kernel lets go; it says so with EXIT.
    const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 10_000).unref());
    if ((await Promise.race([this.exited, timeout])) === 'timeout') log.warn({ mountpoint: this.opts.mountpoint }, 'the FUSE loop did not end within 10 s of unmounting');
  }

  private finish(): void {
    const s = this.session;
    if (!s) return;
    this.session = undefined;
    this.addon.finish(s);
    this.markExited();
  }

  invalidate(path: string): void {
    const s = this.session;
    if (!s) return;
    if (path === '') {
      this.addon.invalInode(s, ROOT_INO);
      return;
    }
    let parent: number | undefined;
    try {
      parent = this.vfs.inoOf(parentOf(path));
    } catch {
      return; // the kernel cannot have cached what the VFS never knew
    }
    this.addon.invalEntry(s, parent, baseName(path));
    this.addon.invalInode(s, parent); // its listing changed
    const e = this.vfs.meta.get(path);
    if (e) this.addon.invalInode(s, e.attr.ino);
  }

  stats(): Record<string, unknown> {
    return this.session ? { ...this.addon.stats(this.session) } : {};
  }

  private dispatch(op: number, id: number, ino: number, ino2: number, fh: number, off: number, size: number, flags: number, mode: number, name: string | undefined, name2: string | undefined, data: Buffer | undefined, set: number[] | undefined, uid: number, gid: number): void {
    const a = this.addon;
    const vfs = this.vfs;
    const err = (errno: number): void => a.replyErr(id, errno);
    const ok = (): void => a.replyErr(id, 0);
    const entry = (n: Node): void => a.replyEntry(id, this.attrOf(n));
    switch (op) {
      case Op.EXIT:
        this.finish();
        return;
      case Op.LOOKUP:
        // A name that does not exist is cached by the kernel too (negative
        // entry); the change feed invalidates it when the node creates it.
        return serveOp('lookup', name!, () => vfs.lookup(ino, name!), entry, (e) => (e === errnoNumber('ENOENT') ? a.replyEntry(id, null) : err(e)));
      case Op.GETATTR:
        return serveOp('getattr', ino, () => vfs.getattr(ino), (n) => a.replyAttr(id, this.attrOf(n)), err);
      case Op.SETATTR:
        return serveOp('setattr', ino, () => vfs.setattr(ino, setAttrOf(flags, set!)), (n) => a.replyAttr(id, this.attrOf(n)), err);
      case Op.READLINK:
        return serveOp('readlink', ino, () => vfs.readlink(ino), (t) => a.replyReadlink(id, t), err);
      case Op.MKNOD:
        // Regular files only (the kernel uses create for open(O_CREAT)); devices, fifos and sockets have no place on a node.
        if ((mode & S_IFMT) !== S_IFREG) return err(errnoNumber('EPERM'));
        return serveOp(
          'mknod',
          name!,
          async () => {
            const r = await vfs.create(ino, name!, mode & 0o7777, uid, gid);
            await vfs.release(r.handle.fh);
            return vfs.lookup(ino, name!);
          },
          entry,
          err,
        );
      case Op.MKDIR:
        return serveOp('mkdir', name!, () => vfs.mkdir(ino, name!, mode & 0o7777), entry, err);
      case Op.UNLINK:
        return serveOp('unlink', name!, () => vfs.unlink(ino, name!), ok, err);
      case Op.RMDIR:
        return serveOp('rmdir', name!, () => vfs.rmdir(ino, name!), ok, err);
      case Op.SYMLINK:
        return serveOp('symlink', name!, () => vfs.symlink(ino, name!, name2!), entry, err);
      case Op.RENAME:
        return serveOp('rename', name!, () => vfs.rename(ino, name!, ino2, name2!, flags), ok, err);
      case Op.LINK:
        return serveOp('link', name!, () => vfs.link(ino, ino2, name!), entry, err);
      case Op.OPEN:
        return serveOp(
          'open',
          ino,
          () => vfs.open(ino, flags),
          (h) => {
            const readOnly = (flags & O_ACCMODE) === 0 && !h.dirty && !h.pendingData;
            if (readOnly && h.chunks.length > 0) this.registerFast(h.fh, h.size, h.chunks);
            // Read-only opens keep the kernel's pages: the change feed invalidates them when the node changes the file.
            a.replyOpen(id, h.fh, readOnly ? KEEP_CACHE : 0);
          },
          err,
        );
      case Op.READ: {
        const buf = Buffer.allocUnsafe(size);
        return serveOp(
          'read',
          fh,
          () => vfs.read(fh, off, size, buf),
          (n) => {
            a.replyBuf(id, buf, n);
            this.markFast(fh, off, size);
          },
          err,
        );
      }
      case Op.WRITE:
        return serveOp('write', fh, () => vfs.write(fh, off, data!), (n) => a.replyWrite(id, n), err);
      case Op.FLUSH:
        return serveOp('flush', fh, () => vfs.flush(fh), ok, err);
      case Op.RELEASE: {
        const f = this.fast.get(fh);
        if (f) {
          this.fast.delete(fh);
          if (this.session) a.fastClose(this.session, fh);
          vfs.chunks.touch(f.chunks);
        }
        return serveOp('release', fh, () => vfs.release(fh), ok, err);
      }
      case Op.FSYNC:
        return serveOp('fsync', fh, () => vfs.fsync(fh), ok, err);
      case Op.OPENDIR:
        return serveOp(
          'opendir',
          ino,
          async () => {
            const n = await vfs.getattr(ino);
            if (!isDir(n.attr.mode)) throw new FsError('ENOTDIR', `"${n.path}" is not a directory`);
          },
          () => {
            const dfh = this.nextDirFh++;
            this.dirs.set(dfh, { ino });
            // The kernel may keep listings: changes through this mount and
            // invalidations from the change feed both drop them.
            a.replyOpen(id, dfh, KEEP_CACHE | CACHE_READDIR);
          },
          err,
        );
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(id, fh, off, size, op === Op.READDIRPLUS);
      case Op.RELEASEDIR:
        this.dirs.delete(fh);
        return ok();
      case Op.STATFS: {
        const s = vfs.statfs();
        return a.replyStatfs(id, Float64Array.of(s.bsize, s.bsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.ffree, s.namemax));
      }
      case Op.CREATE:
        return serveOp(
          'create',
          name!,
          () => vfs.create(ino, name!, mode & 0o7777, uid, gid),
          (r) => a.replyCreate(id, this.attrOf(r.node), r.handle.fh, 0),
          err,
        );
      default:
        return err(errnoNumber('ENOSYS'));
    }
  }

  private readdir(id: number, fh: number, off: number, size: number, plus: boolean): void {
    const d = this.dirs.get(fh);
    if (!d) return this.addon.replyErr(id, errnoNumber('EBADF'));
    serveOp(
      plus ? 'readdirplus' : 'readdir',
      d.ino,
      async () => {
        if (off === 0 || !d.names) {
          // A listing from the start is taken afresh; later offsets continue it.
          const dir = await this.vfs.getattr(d.ino);
          const parent = dir.path === '' ? dir : await this.vfs.resolve(parentOf(dir.path));
          const children = await this.vfs.readdir(d.ino);
          d.names = ['.', '..', ...children.map((c) => baseName(c.path))];
          d.attrs = [dir, parent, ...children].map((n) => n.attr);
        }
      },
      () => {
        const names = d.names!;
        // No more entries than could fit: a direntplus takes at least 160 bytes, a dirent 32.
        const room = Math.ceil(size / (plus ? 160 : 32)) + 1;
        const slice = names.slice(off, off + room);
        const attrs = new Float64Array(slice.length * ATTR_LEN);
        for (let i = 0; i < slice.length; i++) {
          putAttr(attrs, i * ATTR_LEN, d.attrs![off + i]!);
        }
        this.addon.replyDir(id, size, plus ? 1 : 0, off, slice, attrs);
      },
      (e) => this.addon.replyErr(id, e),
    );
  }

  /** Hands a read handle's chunk list to the fast path, with what is on disk already. */
  private registerFast(fh: number, size: number, chunks: ChunkRef[]): void {
    if (!this.session) return;
    const n = chunks.length;
    const hashes = Buffer.allocUnsafe(n * 32);
    const offsets = new Float64Array(n);
    const lengths = new Float64Array(n);
    const marked = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const c = chunks[i]!;
      c.hash.copy(hashes, i * 32);
      offsets[i] = c.offset;
      lengths[i] = c.length;
      marked[i] = this.vfs.chunks.onDisk(c.hash) ? 1 : 0;
    }
    this.addon.fastOpen(this.session, fh, size, hashes, offsets, lengths, marked);
    this.fast.set(fh, { chunks, marked });
  }

  /**
   * After JS served a read: chunks of that range and the readahead window
   * that reached the disk meanwhile are handed to the fast path. Chunks of
   * the range itself are checked even when marked (the addon unmarks a
   * chunk it found evicted).
   */
  private markFast(fh: number, off: number, size: number): void {
    const f = this.fast.get(fh);
    if (!f || !this.session) return;
    const { chunks, marked } = f;
    const end = off + size;
    let i = chunkIndex(chunks, off);
    for (; i < chunks.length && chunks[i]!.offset < end; i++) {
      if (this.vfs.chunks.onDisk(chunks[i]!.hash)) {
        marked[i] = 1;
        this.addon.fastMark(this.session, fh, i);
      }
    }
    for (const stop = Math.min(chunks.length, i + 16); i < stop; i++) {
      if (!marked[i] && this.vfs.chunks.onDisk(chunks[i]!.hash)) {
        marked[i] = 1;
        this.addon.fastMark(this.session, fh, i);
      }
    }
  }
}

/** setattr's values as the VFS takes them. */
function setAttrOf(valid: number, v: number[]): SetAttr {
  const a: SetAttr = {};
  if (valid & SET_MODE) a.mode = v[0]!;
  if (valid & SET_UID) a.uid = v[1]!;
  if (valid & SET_GID) a.gid = v[2]!;
  if (valid & SET_SIZE) a.size = v[3]!;
  if (valid & SET_ATIME_NOW) a.atimeNs = 'now';
  else if (valid & SET_ATIME) a.atimeNs = BigInt(v[4]!) * NS + BigInt(v[5]!);
  if (valid & SET_MTIME_NOW) a.mtimeNs = 'now';
  else if (valid & SET_MTIME) a.mtimeNs = BigInt(v[6]!) * NS + BigInt(v[7]!);
  return a;
}
