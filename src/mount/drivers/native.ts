// The native driver: ghostfs's own addon on libfuse3's low-level, inode-based
// API (native/src). Kernel requests arrive in batches on the JS thread and
// are answered whenever the VFS is ready, many in flight at once. Requests
// are up to 1 MiB, directory listings carry attributes (readdirplus), times
// are exact to the nanosecond, rename flags arrive, and the change feed
// invalidates exactly what changed in the kernel's caches, so attribute and
// entry timeouts can be long. Reads of fully cached chunks are served in C
// without reaching this file at all.
import { spawnSync } from 'node:child_process';
import { mkdir, statfs, writeFile } from 'node:fs/promises';
import type { ChunkRef } from '../../content/manifest.js';
import { isDir, S_IFMT, S_IFREG, type Attr } from '../../content/attr.js';
import { baseName, joinRel, parentOf } from '../../wire/rel-path.js';
import { errnoOf, FsError } from '../../wire/errors.js';
import { log } from '../../log.js';
import { nativeAddon, nativeLoadError, RENAME_EXCHANGE, type NativeAddon, type SessionHandle } from '../../native/addon.js';
import { abortFuseConnection, fuseConnection, isMounted, mountEntry } from '../mount-table.js';
import { chunkIndex, O_ACCMODE, O_TRUNC, type Node, type SetAttr, type Vfs } from '../vfs.js';
import type { LocalCopies } from '../../cache/local-copies.js';
import { Passthrough } from './passthrough.js';
import { NodeIds, ROOT_ID } from './node-ids.js';
import { SetMap } from '../../util/set-map.js';
import { ATTR_LEN, NS, putAttr, Reply } from './native-reply.js';
import type { OwnerMap } from '../owner-map.js';
import { errnoNumber, serveOp, type Driver, type DriverOptions } from './driver.js';
import type { PathChange } from '../../cache/meta-store.js';

/** statfs(2)'s f_type of overlayfs (linux/magic.h). */
const OVERLAYFS_MAGIC = 0x794c7630;

/** Directories whose listings are kept for readers that continue at an offset (see `readdir`). */
const LISTINGS_KEPT = 256;
/** Listings kept per directory: readers that started at different times continue in their own. */
const GENERATIONS_KEPT = 4;
/**
 * A directory offset is a listing's generation times this, plus the
 * position in it: a reader's offset names the listing it reads. Exact in a
 * double for 2^20 generations (they wrap; only the last few are kept).
 */
const GEN_UNIT = 2 ** 32;
const GEN_WRAP = 2 ** 20;

/** Operation codes, as native/src/ghostfs.h numbers them. */
enum Op {
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
  OPENDIR = 17, // answered in C (fuse_driver.c)
  READDIR = 18,
  READDIRPLUS = 19,
  RELEASEDIR = 20, // answered in C too
  STATFS = 21,
  CREATE = 22,
  MKNOD = 23,
  FORGET = 24,
  WROTE = 25, // a write made in C into a dirty copy (direct_write.c): no reply
  FALLOCATE = 26,
  LSEEK = 27,
}

const OP_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Op).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v, k.toLowerCase()]));

// setattr's to_set bits (fuse_lowlevel.h).
const SET_MODE = 1 << 0;
const SET_UID = 1 << 1;
const SET_GID = 1 << 2;
const SET_SIZE = 1 << 3;
const SET_ATIME = 1 << 4;
const SET_MTIME = 1 << 5;
const SET_ATIME_NOW = 1 << 7;
const SET_MTIME_NOW = 1 << 8;

/** A write's flags (ghostfs.h): the kernel writing back a shared mapping's pages, through whichever handle. */
const WRITE_FROM_CACHE = 1;

// replyOpen's bits.
const KEEP_CACHE = 1;
/** Reads and writes go to the mount, not through the kernel's page cache (a passed-through writer). */
const DIRECT_IO = 2;
/** close() sends no FLUSH: for read-only handles it has nothing to do. */
const NO_FLUSH = 16;

/** A directory listing being read: names and attributes, "." and ".." first. */
interface Listing {
  names: string[];
  attrs: Attr[];
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
  /** Whole local copies of big files: with them, reads are passed through to the kernel (FUSE passthrough). */
  copies?: LocalCopies;
}

export class NativeDriver implements Driver {
  readonly name = 'native';
  private readonly addon: NativeAddon;
  private session: SessionHandle | undefined;
  /** The FUSE connection's number (/sys/fs/fuse/connections/N), to abort it if unmounting stalls. */
  private connection: string | undefined;
  private exited: Promise<void> | undefined;
  private markExited: () => void = () => undefined;
  private readonly ids = new NodeIds();
  /** Listings being read, by directory node id, then generation (oldest first). */
  private readonly listings = new Map<number, Map<number, Listing>>();
  private generation = 0;
  private readonly fast = new Map<number, FastFile>();
  /** Open file handles by node id, and the node id of each: a file that lost its name while open is still known by its handles. */
  private readonly openOn = new SetMap<number, number>();
  private readonly nodeOf = new Map<number, number>();
  private readonly attr = new Float64Array(ATTR_LEN);
  private readonly through: Passthrough | undefined;

  constructor(
    private readonly vfs: Vfs,
    private readonly opts: NativeDriverOptions,
  ) {
    const a = nativeAddon();
    if (!a) throw new Error(`the native driver is not available: ${nativeLoadError()}`);
    this.addon = a;
    this.through = opts.copies && !opts.writebackCache ? new Passthrough(a, () => this.session, opts.copies) : undefined;
    // A reader that starts reading a writer's dirty copy: the C fast path would go on reading the chunks it opened.
    vfs.onFollow((fh) => this.unregisterFast(fh));
  }

  private unregisterFast(fh: number): void {
    if (!this.fast.delete(fh)) return;
    if (this.session) this.addon.fastClose(this.session, fh);
  }

  /** The passthrough whose backing file must follow this handle's writes (its node is passed through), if any. */
  private mirrorOf(fh: number): Passthrough | undefined {
    return this.through?.mirrored(fh) ? this.through : undefined;
  }

  /** An open handle on a node id: one that writes a copy if there is one (it has the file as it is now). */
  private handleOn(id: number): number | undefined {
    const fhs = this.openOn.get(id);
    if (!fhs) return undefined;
    for (const fh of fhs) if (this.vfs.writesCopy(fh)) return fh;
    return fhs.values().next().value;
  }

  /** A handle on a node id was opened (see openOn). */
  private opened(id: number, fh: number): void {
    this.openOn.add(id, fh);
    this.nodeOf.set(fh, id);
  }

  /** `n` with the attributes its path shows now (see LOOKUP). */
  private asNow(n: Node): Node {
    const now = this.vfs.current(n.path);
    return now ? { ...n, attr: now.attr } : n;
  }

  private attrOf(n: Node, nodeId = 0): Float64Array {
    putAttr(this.attr, 0, this.vfs.owners.shown(n.attr), nodeId);
    return this.attr;
  }

  async mount(): Promise<void> {
    const mp = this.opts.mountpoint;
    // A mount left by a process that died: detach it first. Found in the
    // mount table, never by a stat (a stuck mount would hang it).
    if (await isMounted(mp)) {
      log.warn({ mountpoint: mp }, 'a previous mount is still attached here: detaching it');
      this.detach(mp);
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
        passthrough: !!this.through,
        // No fusermount3 helper: after a crash it unmounts by path, and a
        // mount started meanwhile at the same place was seen going with it.
        // A dead mount is detached by the next start (or `ghostfs unmount --force`).
        autoUnmount: false,
        allowOther: this.opts.allowOther ?? false,
        debug: this.opts.debug,
      },
      (...args) => this.dispatch(...args),
    );
    const e = await mountEntry(mp);
    this.connection = e && fuseConnection(e);
    if (e) await this.raiseReadahead(e.device);
    await this.warnIfOverlay();
  }

  /**
   * overlayfs refuses reads that must not wait (RWF_NOWAIT), so every read
   * served from a chunk cache there takes a hop to the read pool: 4 KiB
   * reads of a cached file ran about half as fast as with the cache on ext4.
   */
  private async warnIfOverlay(): Promise<void> {
    const st = await statfs(this.opts.chunkDir).catch(() => undefined);
    if (st?.type === OVERLAYFS_MAGIC) {
      log.warn({ cacheDir: this.opts.chunkDir }, 'the chunk cache is on overlayfs: every cached read takes a hop to another thread there (small reads about half as fast); give --cache-dir its own volume');
    }
  }

  /**
   * The kernel caps a FUSE mount's readahead at its default 128 KiB
   * whatever the filesystem asks at init; the mount's bdi setting lifts
   * that. A 4 MiB window keeps several 1 MiB requests in flight at once, so
   * chunk files are read in parallel (measured here when libfuse's worker
   * threads read them: warm sequential reads 0.7-0.85 GB/s with 1 MiB,
   * 0.85-1.0 GB/s with 4 MiB; the helper thread and the bulk pool now).
   * Needs root; without it the mount works with 128 KiB readahead.
   */
  private async raiseReadahead(dev: string): Promise<void> {
    await writeFile(`/sys/class/bdi/${dev}/read_ahead_kb`, '4096').catch((err: Error) => log.debug({ dev, err: err.message }, 'cannot raise the readahead of the mount'));
  }

  /** Detaches a mount by path: directly as root, else through fusermount3. */
  private detach(mp: string): void {
    try {
      this.addon.lazyUnmount(mp);
    } catch (err) {
      const r = spawnSync('fusermount3', ['-u', '-z', mp], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`cannot detach the mount at ${mp}: ${(err as Error).message}; fusermount3: ${r.stderr?.trim() || r.error?.message}`);
    }
  }

  async unmount(): Promise<void> {
    const s = this.session;
    if (!s) return;
    const mp = this.opts.mountpoint;
    this.addon.unmount(s);
    // Detached, the connection ends once no process uses the mount any
    // more; the loop then reports EXIT. Users that keep it busy are cut off
    // after a grace period (their calls fail with ENOTCONN). A mount already
    // gone (unmounted from outside) needs no detaching, only the cut-off.
    if (await isMounted(mp)) {
      try {
        this.detach(mp);
      } catch (err) {
        log.warn({ mountpoint: mp, err: (err as Error).message }, 'cannot detach the mount; aborting its connection');
      }
    }
    const ended = (ms: number) => Promise.race([this.exited!.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), ms).unref())]);
    if (await ended(5000)) return;
    log.warn({ mountpoint: mp, connection: this.connection }, 'the mount is still in use 5 s after it was detached: aborting its connection');
    if (this.connection) await abortFuseConnection(this.connection).catch((err: Error) => log.warn({ err: err.message }, 'cannot abort the FUSE connection'));
    if (!(await ended(5000))) log.warn({ mountpoint: mp }, 'the FUSE loop did not end within 10 s of unmounting');
  }

  private finish(): void {
    const s = this.session;
    if (!s) return;
    this.session = undefined;
    this.addon.finish(s);
    this.markExited();
  }

  invalidate(changes: readonly PathChange[]): void {
    const s = this.session;
    if (!s) return;
    // Readers of a file that changed read its new content through JS (the C fast path has the old chunk list).
    for (const fh of this.fast.keys()) if (this.vfs.behind(fh)) this.unregisterFast(fh); // (deleting the current key is safe)
    /** Directories whose cached listings are dropped, once each. */
    const listings = new Set<number>();
    for (let { path, what } of changes) {
      if (path === '') {
        this.addon.invalInode(s, ROOT_ID);
        continue;
      }
      // Only what the kernel was told about can be in its caches.
      const parent = this.ids.lookupPath(parentOf(path));
      if (parent === undefined) continue;
      const name = baseName(path);
      const child = this.ids.find(parent, name);
      if (child !== undefined && this.through?.stale(child, this.vfs.meta.get(path)?.digest)) {
        // Passed through to other content: the name gets a new node (see passthrough.ts).
        this.ids.removed(parent, name);
        what = 'entry';
      }
      if (what === 'attrs') {
        // The name still leads to the same file or directory: keep the entry
        // (dropping a directory's would cut off processes working inside it).
        if (child !== undefined) this.addon.invalInode(s, child);
        continue;
      }
      this.addon.invalEntry(s, parent, name); // also a name the kernel holds as missing
      listings.add(parent); // its listing changed (its mtime may have told the kernel already, or not yet)
      if (child !== undefined) this.addon.invalInode(s, child);
    }
    for (const dir of listings) this.addon.invalListing(s, dir);
  }

  stats(): Record<string, unknown> {
    if (!this.session) return {};
    return { ...this.addon.stats(this.session), nodeIds: this.ids.size, ...(this.through ? { passthroughFiles: this.through.stats(), localCopies: this.opts.copies!.stats() } : {}) };
  }

  /**
   * Lets the next writes to `fh` go straight into the dirty copy from C
   * when the VFS allows it (a big file written front to back by its only
   * opener: see Vfs.directWriteFd). The VFS ends it before anything else
   * changes the file, and applies the writes it had not heard of yet.
   */
  private writeDirect(fh: number): void {
    const session = this.session;
    if (!session) return; // (the VFS refuses a handle that has it already)
    const fd = this.vfs.directWriteFd(fh, () => {
      const made = this.addon.directWriteStop(session, fh);
      const out: [number, Buffer][] = [];
      for (let i = 0; i + 1 < made.length; i += 2) out.push([made[i] as number, made[i + 1] as Buffer]);
      return out;
    });
    if (fd === undefined) return;
    this.addon.directWriteStart(session, fh, fd);
  }

  private dispatch(op: number, id: number, ino: number, ino2: number, fh: number, off: number, size: number, flags: number, mode: number, name: string | undefined, name2: string | undefined, data: Buffer | undefined, set: number[] | undefined, uid: number, gid: number): void {
    if (op === Op.EXIT) return this.finish();
    if (op === Op.FORGET) {
      this.ids.forget(ino, size);
      if (!this.ids.has(ino)) this.listings.delete(ino);
      return;
    }
    if (op === Op.WROTE) return this.vfs.wroteDirect(fh, off, data!);
    const r = new Reply(this.addon, id, OP_NAMES[op] ?? String(op));
    try {
      // The caller as the node knows it (owner-map.ts).
      const owners = this.vfs.owners;
      this.serve(r, op, ino, ino2, fh, off, size, flags, mode, name, name2, data, set, owners.uid(uid), owners.gid(gid));
    } catch (err) {
      // Whatever threw before an answer was given (an unknown node id, say), the kernel still gets one.
      if (!r.replied) r.err(errnoNumber(errnoOf(err)));
    }
  }

  private serve(r: Reply, op: number, ino: number, ino2: number, fh: number, off: number, size: number, flags: number, mode: number, name: string | undefined, name2: string | undefined, data: Buffer | undefined, set: number[] | undefined, uid: number, gid: number): void {
    const vfs = this.vfs;
    const ids = this.ids;
    const fail = (e: number): void => r.err(e);
    /** An entry reply for a name in `parent`: the kernel gets (or keeps) its node id. */
    const entryIn = (parent: number, entryName: string) => (n: Node) => r.entry(this.attrOf(n, ids.entry(parent, entryName)));
    switch (op) {
      case Op.LOOKUP: {
        const path = ids.child(ino, name!);
        // A name that does not exist is cached by the kernel too (negative
        // entry); the change feed invalidates it when the node creates it.
        // The reply carries the attributes the mount has as it goes out, not
        // as resolve() found them a few turns earlier: a change applied in
        // between found no node id to invalidate (the kernel learns this name
        // from this very reply), and the kernel would keep the older
        // attributes for the whole timeout.
        return serveOp('lookup', path, () => vfs.resolve(path), (n) => entryIn(ino, name!)(this.asNow(n)), (e) => (e === errnoNumber('ENOENT') ? r.entry(null) : fail(e)));
      }
      case Op.GETATTR: {
        if (!ids.linked(ino)) {
          // A file passed through whose name now leads to newer content: its readers still fstat what they read.
          const kept = this.through?.keptAttr(ino);
          if (kept) return r.attr(this.attrOf({ ino, path: '', attr: kept }));
          // Unlinked, or replaced by a rename, while open: fstat (and the kernel, before a read) asks all the same.
          const fh = this.handleOn(ino);
          const attr = fh === undefined ? undefined : vfs.handleAttr(fh);
          if (attr) return r.attr(this.attrOf({ ino, path: '', attr: { ...attr, nlink: 0 } }));
        }
        const path = ids.path(ino);
        return serveOp('getattr', path, () => vfs.resolve(path), (n) => r.attr(this.attrOf(n)), fail);
      }
      case Op.SETATTR: {
        const s = setAttrOf(flags, set!, vfs.owners);
        const held = fh || this.handleOn(ino);
        // ftruncate, fchmod, futimens of a file that lost its name while open: its copy alone changes.
        const orphan = held !== undefined && !ids.linked(ino);
        const path = orphan ? '' : ids.path(ino);
        return serveOp(
          'setattr',
          orphan ? held : path,
          async (): Promise<Node> => (orphan ? { ino, path: '', attr: { ...(await vfs.setattrHandle(held, s)), nlink: 0 } } : vfs.setattr(path, s)),
          (n) => {
            if (s.size !== undefined) this.through?.mirrorSize(ino, s.size);
            r.attr(this.attrOf(n));
          },
          fail,
        );
      }
      case Op.READLINK: {
        const path = ids.path(ino);
        return serveOp('readlink', path, () => vfs.readlink(path), (t) => r.readlink(t), fail);
      }
      case Op.MKNOD: {
        const dir = ids.path(ino);
        // A fifo, socket or device node (its number comes in `size`); a regular file is made as create() makes one.
        if ((mode & S_IFMT) !== S_IFREG) return serveOp('mknod', name!, () => vfs.mknod(dir, name!, mode, size, uid, gid), entryIn(ino, name!), fail);
        return serveOp(
          'mknod',
          name!,
          async () => {
            const c = await vfs.create(dir, name!, mode & 0o7777, uid, gid);
            await vfs.release(c.handle.fh);
            return vfs.resolve(joinRel(dir, name!));
          },
          entryIn(ino, name!),
          fail,
        );
      }
      case Op.MKDIR: {
        const dir = ids.path(ino);
        return serveOp('mkdir', name!, () => vfs.mkdir(dir, name!, mode & 0o7777, uid, gid), entryIn(ino, name!), fail);
      }
      case Op.UNLINK:
      case Op.RMDIR: {
        const dir = ids.path(ino);
        const rm = op === Op.UNLINK ? () => vfs.unlink(dir, name!) : () => vfs.rmdir(dir, name!);
        return serveOp(
          op === Op.UNLINK ? 'unlink' : 'rmdir',
          joinRel(dir, name!),
          rm,
          () => {
            ids.removed(ino, name!);
            r.ok();
          },
          fail,
        );
      }
      case Op.SYMLINK: {
        const dir = ids.path(ino);
        return serveOp('symlink', name!, () => vfs.symlink(dir, name!, name2!, uid, gid), entryIn(ino, name!), fail);
      }
      case Op.RENAME: {
        const [from, to] = [ids.path(ino), ids.path(ino2)];
        return serveOp(
          'rename',
          joinRel(from, name!),
          () => vfs.rename(from, name!, to, name2!, flags),
          () => {
            ids.renamed(ino, name!, ino2, name2!, (flags & RENAME_EXCHANGE) !== 0);
            r.ok();
          },
          fail,
        );
      }
      case Op.LINK: {
        const [existing, dir] = [ids.path(ino), ids.path(ino2)];
        return serveOp('link', name!, () => vfs.link(existing, dir, name!), entryIn(ino2, name!), fail);
      }
      case Op.OPEN: {
        const path = ids.path(ino);
        return serveOp(
          'open',
          path,
          () => vfs.open(path, flags),
          (h) => {
            this.opened(ino, h.fh);
            const readOnly = (flags & O_ACCMODE) === 0 && !h.dirty && !h.pendingData;
            const writer = (flags & O_ACCMODE) !== 0 || (flags & O_TRUNC) !== 0;
            const t = this.through;
            const backing = !t
              ? undefined
              : writer
                ? t.openWrite(ino, h.fh, (flags & O_TRUNC) !== 0)
                : t.openRead(ino, h.fh, readOnly ? { digest: h.digest, chunks: h.chunks, size: h.size, attr: vfs.meta.get(path)?.attr } : undefined);
            // Passed through: reads never come here; a writer's come and go direct (see passthrough.ts).
            if (backing !== undefined) return r.open(h.fh, writer ? DIRECT_IO : NO_FLUSH, backing);
            if (readOnly && h.chunks.length > 0) this.registerFast(h.fh, h.size, h.chunks);
            // Read-only opens keep the kernel's pages (the change feed
            // invalidates them when the node changes the file) and skip the
            // flush round trip at close.
            r.open(h.fh, readOnly ? KEEP_CACHE | NO_FLUSH : 0);
          },
          fail,
        );
      }
      case Op.READ:
        return serveOp(
          'read',
          fh,
          () => vfs.readSlices(fh, off, size),
          (parts) => {
            r.bufs(parts);
            this.markFast(fh, off, size);
          },
          fail,
        );
      case Op.WRITE: {
        const t = this.mirrorOf(fh);
        return serveOp(
          'write',
          fh,
          async () => {
            // At the offset the kernel gives, even for an O_APPEND handle: a passed-through writer's bytes
            // (the backing file has them there), and a shared mapping's pages the kernel writes back.
            const n = await vfs.write(fh, off, data!, !!t || (flags & WRITE_FROM_CACHE) !== 0);
            // The same bytes in the backing file, before the writer hears back: readers see them as on a local file.
            t?.mirrorWrite(fh, off, data!, n);
            return n;
          },
          (n) => {
            r.write(n);
            if (!t) this.writeDirect(fh);
          },
          fail,
        );
      }
      case Op.FLUSH: {
        const t = this.mirrorOf(fh);
        return serveOp(
          'flush',
          fh,
          async () => {
            await t?.catchUp(fh, { read: (h, o, n) => vfs.readSlices(h, o, n), write: (h, o, d) => vfs.write(h, o, d, true) });
            await vfs.flush(fh);
          },
          () => r.ok(),
          fail,
        );
      }
      case Op.RELEASE: {
        const id = this.nodeOf.get(fh);
        if (id !== undefined) {
          this.nodeOf.delete(fh);
          this.openOn.remove(id, fh);
        }
        const f = this.fast.get(fh);
        if (f) {
          this.fast.delete(fh);
          if (this.session) this.addon.fastClose(this.session, fh);
          vfs.chunks.touch(f.chunks);
        }
        // A big file read the usual way: a local copy, so that the next reader is passed through.
        const copy = this.through?.release(fh);
        if (copy) void this.opts.copies!.assemble(copy.digest, copy.chunks, copy.size);
        return serveOp('release', fh, () => vfs.release(fh), () => r.ok(), fail);
      }
      case Op.FSYNC:
        return serveOp('fsync', fh, () => vfs.fsync(fh), () => r.ok(), fail);
      case Op.FALLOCATE: {
        const t = this.mirrorOf(fh);
        return serveOp(
          'fallocate',
          fh,
          async () => {
            // The backing file follows, as for a write (the flush would otherwise take its old bytes for changes made through an mmap).
            const after = await vfs.fallocate(fh, mode, off, size, t && ((at, zeros) => t.mirrorWrite(fh, at, zeros, zeros.length)));
            t?.mirrorSize(ino, after);
          },
          () => r.ok(),
          fail,
        );
      }
      case Op.LSEEK:
        return serveOp('lseek', fh, () => vfs.seek(fh, off, mode), (pos) => r.lseek(pos), fail);
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(r, ino, off, size, op === Op.READDIRPLUS);
      case Op.STATFS:
        return serveOp('statfs', ino, () => vfs.statfs(), (s) => r.statfs(Float64Array.of(s.bsize, s.bsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.ffree, s.namemax)), fail);
      case Op.CREATE: {
        const dir = ids.path(ino);
        return serveOp(
          'create',
          name!,
          () => vfs.create(dir, name!, mode & 0o7777, uid, gid, flags, () => r.groups()),
          (c) => {
            const id = ids.entry(ino, name!);
            this.opened(id, c.handle.fh);
            r.create(this.attrOf(c.node, id), c.handle.fh);
          },
          fail,
        );
      }
      default:
        return fail(errnoNumber('ENOSYS'));
    }
  }

  /**
   * Directory handles are the addon's (opendir never reaches JS): a listing
   * is taken when a reader starts at offset 0, and later offsets continue
   * that listing. It is kept after its last entry went out: the kernel
   * caches a listing and serves later readers from it, and when it drops
   * that cache part way through a reader (the change feed invalidated it),
   * it asks for the rest at the offset it had reached. Those offsets are
   * positions in the listing the kernel cached; taken afresh, a listing
   * from which an earlier name had gone would skip the name after it. Each
   * listing has a generation, carried in its offsets: a reader that started
   * before another one took a newer listing still continues in its own.
   */
  private readdir(r: Reply, id: number, off: number, size: number, plus: boolean): void {
    const gen = Math.floor(off / GEN_UNIT);
    const kept = off > 0 ? this.listings.get(id)?.get(gen) : undefined;
    serveOp(
      plus ? 'readdirplus' : 'readdir',
      id,
      async () => {
        if (kept) return { d: kept, gen };
        // A new reader, or one whose listing is gone (dropped, or from before a restart): a fresh listing, read from the same position.
        const path = this.ids.path(id);
        const dir = await this.vfs.resolve(path);
        if (!isDir(dir.attr.mode)) throw new FsError('ENOTDIR', `"${path}" is not a directory`);
        const parent = path === '' ? dir : await this.vfs.resolve(parentOf(path));
        const children = await this.vfs.readdir(path);
        const d: Listing = { names: ['.', '..', ...children.map((c) => baseName(c.path))], attrs: [dir, parent, ...children].map((n) => n.attr) };
        this.generation = (this.generation % (GEN_WRAP - 1)) + 1; // never 0: offset 0 is a reader's start
        let gens = this.listings.get(id);
        this.listings.delete(id); // re-inserted last: the bound drops the directory least recently listed
        this.listings.set(id, (gens ??= new Map()));
        gens.set(this.generation, d);
        if (gens.size > GENERATIONS_KEPT) gens.delete(gens.keys().next().value!);
        if (this.listings.size > LISTINGS_KEPT) this.listings.delete(this.listings.keys().next().value!);
        return { d, gen: this.generation };
      },
      ({ d, gen }) => {
        const at = off % GEN_UNIT;
        // No more entries than could fit: a direntplus takes at least 160 bytes, a dirent 32.
        const room = Math.ceil(size / (plus ? 160 : 32)) + 1;
        const slice = d.names.slice(at, at + room);
        const attrs = new Float64Array(slice.length * ATTR_LEN);
        const entryIds: number[] = [];
        // A kept listing may name what is gone since (see above): listed
        // (POSIX allows that for a name removed meanwhile), but without a
        // node id, so the kernel makes no entry for it. What is still there
        // goes with its attributes as they are now: the kernel takes those
        // of a readdirplus entry as fresh for the whole attribute timeout,
        // and the listing's may be older than what it was told since (a
        // fresh one's too: taken a few turns before this reply, a change
        // applied in between found no node id to invalidate for a name the
        // kernel learns from this reply).
        const dirPath = plus ? this.ids.path(id) : '';
        for (let i = 0; i < slice.length; i++) {
          const dots = at + i < 2;
          const now = plus && !dots ? this.vfs.meta.get(joinRel(dirPath, slice[i]!)) : undefined;
          const nodeId = plus && !dots && (at === 0 || now) ? this.ids.reserve(id, slice[i]!) : 0;
          entryIds.push(nodeId);
          putAttr(attrs, i * ATTR_LEN, this.vfs.owners.shown(now?.attr ?? d.attrs[at + i]!), nodeId);
        }
        const fitted = r.dir(size, plus, gen * GEN_UNIT + at, slice, attrs);
        // The kernel holds a reference to every entry of a readdirplus reply that fitted.
        for (let i = 0; i < fitted; i++) if (entryIds[i]) this.ids.ref(entryIds[i]!);
      },
      (e) => r.err(e),
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

/** setattr's values as the VFS takes them (a chown's ids as the node has them). */
function setAttrOf(valid: number, v: number[], owners: OwnerMap): SetAttr {
  const a: SetAttr = {};
  if (valid & SET_MODE) a.mode = v[0]!;
  if (valid & SET_UID) a.uid = owners.uid(v[1]!);
  if (valid & SET_GID) a.gid = owners.gid(v[2]!);
  if (valid & SET_SIZE) a.size = v[3]!;
  if (valid & SET_ATIME_NOW) a.atimeNs = 'now';
  else if (valid & SET_ATIME) a.atimeNs = BigInt(v[4]!) * NS + BigInt(v[5]!);
  if (valid & SET_MTIME_NOW) a.mtimeNs = 'now';
  else if (valid & SET_MTIME) a.mtimeNs = BigInt(v[6]!) * NS + BigInt(v[7]!);
  return a;
}
