// Whole local copies of big files (copies/<digest>), assembled from their
// cached chunks, for the kernel to read directly: the native driver hands
// one to the kernel as a FUSE passthrough backing file, and reads of that
// file then never reach the mount (see drivers/passthrough.ts). A copy is
// named by the file's content digest and assembled only from chunks that
// were verified when they arrived, so it is trusted as it is. Copies are a
// cache on top of the chunk cache: bounded in bytes, least recently used
// first out, and never needed (without one a file is read the usual way).
import { mkdir, open, readdir, rename, stat, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hex, type ChunkRef } from '../content/manifest.js';
import { writeAt } from '../util/positional-io.js';
import { isZeroRun } from '../content/chunk-file.js';
import { DEFAULT_CHUNKING } from '../content/chunker.js';
import type { ChunkStore } from './chunk-store.js';
import { log } from '../log.js';

/** Bytes read from chunk files and written to the copy at a time. */
const STEP = 4 << 20;

export interface LocalCopiesStats {
  copies: number;
  bytes: number;
  assembled: number;
}

export class LocalCopies {
  /** Size of every copy, by digest (hex), least recently used first. */
  private readonly sizes = new Map<string, number>();
  private bytes = 0;
  private assembled = 0;
  /** One copy is assembled at a time, in the background. */
  private busy: Promise<void> | undefined;
  /** Copies handed out (a backing file in use): never evicted meanwhile. */
  private readonly inUse = new Set<string>();
  private closed = false;

  constructor(
    readonly dir: string,
    private readonly chunks: ChunkStore,
    private readonly limits: { maxBytes: number; minFreeBytes: number },
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const found: { name: string; size: number; used: number }[] = [];
    for (const name of await readdir(this.dir)) {
      const p = join(this.dir, name);
      // An assembly cut short, or a copy a writer took over: nothing to keep.
      if (!/^[0-9a-f]{64}$/.test(name)) {
        await unlink(p).catch(() => undefined);
        continue;
      }
      const st = await stat(p).catch(() => undefined);
      if (st) found.push({ name, size: st.size, used: Math.max(st.atimeMs, st.mtimeMs) });
    }
    for (const f of found.sort((a, b) => a.used - b.used)) this.track(f.name, f.size);
    await this.evict(0);
  }

  private track(name: string, size: number): void {
    this.sizes.delete(name);
    this.sizes.set(name, size);
    this.bytes += size;
  }

  /** The copy of this content, if there is one (and it counts as used now). */
  path(digest: Buffer): string | undefined {
    const name = hex(digest);
    const size = this.sizes.get(name);
    if (size === undefined) return undefined;
    this.sizes.delete(name);
    this.sizes.set(name, size);
    return join(this.dir, name);
  }

  /** A copy serves as a backing file until `release`: it is not evicted meanwhile. */
  hold(digest: Buffer): void {
    this.inUse.add(hex(digest));
  }

  release(digest: Buffer): void {
    this.inUse.delete(hex(digest));
  }

  /**
   * The copy leaves the store (a writer's changes are about to reach it):
   * its name is removed, so only descriptors open on it still see it.
   */
  take(digest: Buffer): void {
    const name = hex(digest);
    const size = this.sizes.get(name);
    if (size === undefined) return;
    this.sizes.delete(name);
    this.bytes -= size;
    this.inUse.delete(name);
    // Out of the index at once (no one else is given it); the name goes right after.
    void unlink(join(this.dir, name)).catch(() => undefined);
  }

  /**
   * Assembles a copy from cached chunks, in the background, when every chunk
   * is on disk and there is room; does nothing otherwise (or while another
   * assembly runs). Resolves when done, successful or not.
   */
  assemble(digest: Buffer, chunks: readonly ChunkRef[], size: number): Promise<void> {
    const name = hex(digest);
    if (this.closed || this.busy || this.sizes.has(name) || size > this.limits.maxBytes) return Promise.resolve();
    if (!chunks.every((c) => this.chunks.has(c.hash))) return Promise.resolve();
    this.busy = this.assembleNow(name, chunks, size)
      .catch((err: Error) => log.debug({ digest: name, err: err.message }, 'local copy not assembled'))
      .finally(() => (this.busy = undefined));
    return this.busy;
  }

  private async assembleNow(name: string, chunks: readonly ChunkRef[], size: number): Promise<void> {
    const fs = await statfs(this.dir);
    if (fs.bavail * fs.bsize < size + this.limits.minFreeBytes) return;
    await this.evict(size);
    const tmp = join(this.dir, `.tmp-${randomBytes(6).toString('hex')}`);
    const out = await open(tmp, 'wx', 0o600);
    try {
      const buf = Buffer.allocUnsafe(STEP);
      for (const c of chunks) {
        // Stopping: the unfinished copy goes at once (removed, its pages are never written out).
        if (this.closed) throw new Error('the mount is stopping');
        if (isZeroRun(c, DEFAULT_CHUNKING)) continue; // a hole (the size is set below)
        for (let done = 0; done < c.length; ) {
          const n = Math.min(STEP, c.length - done);
          if ((await this.chunks.read(c.hash, done, n, buf, 0)) !== n) throw new Error(`chunk ${hex(c.hash)} is shorter than its reference`);
          // Every byte or an error: near a full disk a write may take only part (and a later one, with room freed, the rest).
          await writeAt(out, buf.subarray(0, n), c.offset + done);
          done += n;
        }
      }
      await out.truncate(size);
      // Durable before it is named: a copy is trusted without a check after a crash.
      await out.datasync();
    } catch (err) {
      await out.close();
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await out.close();
    await rename(tmp, join(this.dir, name));
    this.track(name, size);
    this.assembled++;
  }

  /** Removes least recently used copies (not in use) until `room` more bytes fit under `maxBytes`. */
  private async evict(room: number, maxBytes = this.limits.maxBytes): Promise<void> {
    for (const [name, size] of this.sizes) {
      if (this.bytes + room <= maxBytes) return;
      if (this.inUse.has(name)) continue;
      this.sizes.delete(name);
      this.bytes -= size;
      await unlink(join(this.dir, name)).catch(() => undefined);
    }
  }

  /** Removes every copy not in use (a purge): they are assembled again when their files are read. */
  async purge(): Promise<{ copies: number; bytes: number }> {
    const before = { copies: this.sizes.size, bytes: this.bytes };
    await this.evict(0, 0);
    return { copies: before.copies - this.sizes.size, bytes: before.bytes - this.bytes };
  }

  /** Stops an assembly under way (its partial copy is removed) and starts no other. */
  async close(): Promise<void> {
    this.closed = true;
    await this.busy;
  }

  stats(): LocalCopiesStats {
    return { copies: this.sizes.size, bytes: this.bytes, assembled: this.assembled };
  }
}
