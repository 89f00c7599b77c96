// FUSE passthrough for the native driver. A read-only open of a big file
// whose whole content is on disk as a local copy (cache/local-copies.ts) is
// passed through to that copy: the kernel then reads it like a local file
// (its page cache, its readahead, mmap) and the mount hears nothing until
// the release. The kernel's rules shape the rest (fs/fuse/iomode.c):
// - while any open of an inode is passed through, every open of it must be,
//   to the same backing file, or the kernel fails it with EIO; and an inode
//   with opens through the page cache takes no passthrough open. So a node
//   is passed through only while it has no other open, and later opens of it
//   follow, writers included;
// - a writer is passed through with direct I/O: its reads and writes still
//   come to the mount (the write-back sees every byte), and each write is
//   also applied to the copy, so readers see it as they would on a local
//   file. Its mmap goes to the copy: at its flush, bytes that differ there
//   are written through the mount too. The copy leaves the store first
//   (it no longer holds the content it is named for), and a copy backs one
//   node at a time, so no other file shares what the writer changes;
// - content that changed on a node (the change feed) gives the name a new
//   node: readers keep what they opened, as with a file replaced on disk.
import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writeSync, constants as C } from 'node:fs';
import type { LocalCopies } from '../../cache/local-copies.js';
import type { ChunkRef } from '../../content/manifest.js';
import type { Attr } from '../../content/attr.js';
import type { NativeAddon, SessionHandle } from '../../native/addon.js';
import { log } from '../../log.js';

/** Files smaller than this are read the usual way (a copy would double their cache for little gain). */
export const PASSTHROUGH_MIN_BYTES = 4 << 20;
/** Bytes compared at a time when a writer's flush looks for changes made through its mmap. */
const COMPARE_STEP = 4 << 20;

/** What assembling a file's local copy takes. */
type CopySource = { digest: Buffer; chunks: ChunkRef[]; size: number };

/** A node passed through to a backing file. */
interface Through {
  id: number;
  fd: number;
  digest: Buffer;
  /** Opens passed through to it (readers and writers). */
  opens: number;
  /** A writer's changes reach the copy: it is out of the store and follows this node's content. */
  writable: boolean;
  /** The file's attributes when it was passed through (answered once its name leads elsewhere). */
  attr?: Attr;
}

/** What the driver needs to hand a writer's mmap changes to the VFS. */
export interface WriterIo {
  read(fh: number, offset: number, length: number): Promise<Buffer[]>;
  write(fh: number, offset: number, data: Buffer): Promise<number>;
}

export interface PassthroughStats {
  passedThrough: number;
  writersMirrored: number;
  mmapFixes: number;
  refused?: string;
}

export class Passthrough {
  private readonly byNode = new Map<number, Through>();
  /** Opens of a node read through the FUSE inode's own page cache. */
  private readonly cachedOpens = new Map<number, number>();
  /** Every open handle: its node, whether passed through, and for a read-only one what a copy needs. */
  private readonly handles = new Map<number, { node: number; through: boolean; writer: boolean; copyOf?: CopySource }>();
  /** Digests (latin1) whose copy backs a node now. */
  private readonly backing = new Set<string>();
  private readonly counts: PassthroughStats = { passedThrough: 0, writersMirrored: 0, mmapFixes: 0 };

  constructor(
    private readonly addon: NativeAddon,
    private readonly session: () => SessionHandle | undefined,
    private readonly copies: LocalCopies,
  ) {}

  /**
   * A read-only open of a file a node holds: the backing id to pass it
   * through to, or undefined (read it the usual way).
   */
  openRead(node: number, fh: number, content: (Omit<CopySource, 'digest'> & { digest?: Buffer; attr?: Attr }) | undefined): number | undefined {
    const t = this.byNode.get(node);
    if (t) {
      t.opens++;
      this.handles.set(fh, { node, through: true, writer: false });
      return t.id;
    }
    const copyOf = content?.digest && content.size >= PASSTHROUGH_MIN_BYTES ? { digest: content.digest, chunks: content.chunks, size: content.size } : undefined;
    const id = copyOf && !this.cachedOpens.get(node) ? this.start(node, copyOf.digest, content?.attr) : undefined;
    if (id !== undefined) {
      this.handles.set(fh, { node, through: true, writer: false });
      return id;
    }
    this.cached(node, fh, false, copyOf);
    return undefined;
  }

  /**
   * A write open (or one with O_TRUNC). Passed through (with direct I/O)
   * only when the node is now: the backing id, and from here on every write
   * is applied to the copy as well.
   */
  openWrite(node: number, fh: number, truncated: boolean): number | undefined {
    const t = this.byNode.get(node);
    if (!t) {
      this.cached(node, fh, true);
      return undefined;
    }
    t.opens++;
    this.handles.set(fh, { node, through: true, writer: true });
    if (!t.writable) this.counts.writersMirrored++;
    this.takeOver(t);
    if (truncated) ftruncateSync(t.fd, 0);
    return t.id;
  }

  /** An open read through the FUSE inode's page cache (the node is not passed through, and this open does not start it). */
  private cached(node: number, fh: number, writer: boolean, copyOf?: CopySource): void {
    this.cachedOpens.set(node, (this.cachedOpens.get(node) ?? 0) + 1);
    this.handles.set(fh, { node, through: false, writer, copyOf });
  }

  private start(node: number, digest: Buffer, attr: Attr | undefined): number | undefined {
    const s = this.session();
    const key = digest.toString('latin1');
    const file = this.backing.has(key) || !s || this.counts.refused ? undefined : this.copies.path(digest);
    if (!file) return undefined;
    let fd: number | undefined;
    try {
      // Read-write: a writer that opens the file while it is passed through changes the copy too.
      fd = openSync(file, C.O_RDWR); // (libuv opens with O_CLOEXEC)
      const id = this.addon.backingOpen(s!, fd);
      this.byNode.set(node, { id, fd, digest, opens: 1, writable: false, attr });
      this.backing.add(key);
      this.copies.hold(digest);
      this.counts.passedThrough++;
      return id;
    } catch (err) {
      if (fd !== undefined) closeSync(fd);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined; // evicted just now
      // The kernel will not (not root, no passthrough): files are read the usual way from now on.
      this.counts.refused = `${code ?? ''} ${(err as Error).message}`.trim();
      log.info({ err: this.counts.refused }, 'FUSE passthrough is not available: files are read through the mount');
      return undefined;
    }
  }

  /** Whether a handle's writes must reach a backing file too (its node is passed through). */
  mirrored(fh: number): boolean {
    const h = this.handles.get(fh);
    return !!h && h.writer && h.through;
  }

  /** A write through the mount to a node passed through: the copy gets the same bytes. */
  mirrorWrite(fh: number, offset: number, data: Buffer, n: number): void {
    const t = this.throughOf(fh);
    if (t) for (let done = 0; done < n; ) done += writeSync(t.fd, data, done, n - done, offset + done);
  }

  /** A node's size changed through the mount (truncate): the copy follows. */
  mirrorSize(node: number, size: number): void {
    const t = this.byNode.get(node);
    if (!t) return;
    this.takeOver(t); // (a truncate by path, with no writer open, changes the copy too)
    ftruncateSync(t.fd, size);
  }

  /** The copy is about to change: named for content it will no longer hold, it leaves the store first. */
  private takeOver(t: Through): void {
    if (t.writable) return;
    t.writable = true;
    this.backing.delete(t.digest.toString('latin1'));
    this.copies.take(t.digest);
  }

  private throughOf(fh: number): Through | undefined {
    const h = this.handles.get(fh);
    return h?.through ? this.byNode.get(h.node) : undefined;
  }

  /**
   * Before a passed-through writer's flush: what its mmap changed in the
   * copy is written through the mount, so the write-back has it.
   */
  async catchUp(fh: number, io: WriterIo): Promise<void> {
    const t = this.throughOf(fh);
    if (!t || !this.handles.get(fh)?.writer) return;
    const size = fstatSync(t.fd).size;
    const buf = Buffer.allocUnsafe(COMPARE_STEP);
    let fixed = false;
    for (let off = 0; off < size; off += COMPARE_STEP) {
      const n = readSync(t.fd, buf, 0, Math.min(COMPARE_STEP, size - off), off);
      const mine = Buffer.concat(await io.read(fh, off, n));
      if (mine.length === n && mine.equals(buf.subarray(0, n))) continue;
      await io.write(fh, off, Buffer.from(buf.subarray(0, n)));
      fixed = true;
    }
    // (Sizes match: an mmap cannot change one, and truncates come through the mount.)
    if (fixed) this.counts.mmapFixes++;
  }

  /**
   * The node's content changed on a node. True when the node is passed
   * through to other content: the caller gives the name a new node, so new
   * opens read the new content while open ones keep theirs.
   */
  stale(node: number, digest: Buffer | undefined): boolean {
    const t = this.byNode.get(node);
    return !!t && !t.writable && !(digest && digest.equals(t.digest));
  }

  /** Attributes of a node passed through that lost its name (see `stale`). */
  keptAttr(node: number): Attr | undefined {
    const t = this.byNode.get(node);
    return t && !t.writable ? t.attr : undefined; // a copy a writer changed is no longer what they say
  }

  /** A handle was released. Returns a copy worth assembling (a big file read the usual way), if any. */
  release(fh: number): CopySource | undefined {
    const h = this.handles.get(fh);
    if (!h) return undefined;
    this.handles.delete(fh);
    if (!h.through) {
      const n = (this.cachedOpens.get(h.node) ?? 1) - 1;
      if (n > 0) this.cachedOpens.set(h.node, n);
      else this.cachedOpens.delete(h.node);
      return h.copyOf;
    }
    const t = this.byNode.get(h.node);
    if (t && --t.opens === 0) this.end(h.node, t);
    return undefined;
  }

  private end(node: number, t: Through): void {
    this.byNode.delete(node);
    const s = this.session();
    try {
      if (s) this.addon.backingClose(s, t.id);
    } catch (err) {
      log.debug({ err: (err as Error).message }, 'backing file id not closed');
    }
    closeSync(t.fd);
    if (!t.writable) {
      this.backing.delete(t.digest.toString('latin1'));
      this.copies.release(t.digest);
    }
  }

  stats(): PassthroughStats & { nodes: number } {
    return { ...this.counts, nodes: this.byNode.size };
  }
}
