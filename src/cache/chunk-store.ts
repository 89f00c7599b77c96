// Content-addressed chunk files under the cache dir (chunks/ab/abcd...).
// A chunk is written here only after its hash was verified (by the mesh
// client, as it arrived), so it is trusted from then on and never hashed
// again on read. Writes are temp + rename: a crash leaves no half chunk
// under a real name.
import { mkdir, open, readdir, rename, stat, statfs, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { log } from '../log.js';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hex, type ChunkRef } from '../content/manifest.js';
import { nativeAddon } from '../native/addon.js';

/** What the addon's O_TMPFILE open answers on a filesystem without O_TMPFILE. */
const noTmpfile = (code: string | undefined): boolean => code === 'EOPNOTSUPP' || code === 'EISDIR' || code === 'EINVAL';
/** Bytes putFrom has the kernel copy in one job, between two checks of the cache's limits. */
const PUT_FROM_BATCH_BYTES = 64 << 20;

export interface ChunkStoreStats {
  chunks: number;
  bytes: number;
  evictedChunks: number;
  evictedBytes: number;
}

export interface CacheLimits {
  /** Most bytes of chunks to keep. */
  quotaBytes: number;
  /** Free space to leave on the cache's filesystem. */
  minFreeBytes: number;
}

export class ChunkStore {
  /** Size of every chunk on disk, by hash (latin1 key), least recently used first. */
  private readonly sizes = new Map<string, number>();
  private readonly fds = new Map<string, Promise<FileHandle>>();
  private bytes = 0;
  private evictedChunks = 0;
  private evictedBytes = 0;
  private lastFreeCheck = 0;
  private enforcing: Promise<void> | undefined;
  /** Chunk files are written in one addon job (until the filesystem turns out to lack O_TMPFILE). */
  private oneJobWrites = true;

  constructor(
    readonly dir: string,
    private readonly limits: CacheLimits = { quotaBytes: Infinity, minFreeBytes: 0 },
    private readonly maxOpenFiles = 128,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    // All 256 fan-out directories up front: no mkdir on the fetch path.
    await Promise.all(Array.from({ length: 256 }, (_, i) => mkdir(join(this.dir, i.toString(16).padStart(2, '0')), { recursive: true, mode: 0o700 })));
    const found: { hash: Buffer; size: number; used: number }[] = [];
    for (const sub of await readdir(this.dir)) {
      if (sub.length !== 2) continue;
      for (const name of await readdir(join(this.dir, sub)).catch(() => [] as string[])) {
        if (name.startsWith('.tmp-')) {
          await unlink(join(this.dir, sub, name)).catch(() => undefined);
          continue;
        }
        if (!/^[0-9a-f]{64}$/.test(name)) continue;
        const st = await stat(join(this.dir, sub, name)).catch(() => undefined);
        if (st) found.push({ hash: Buffer.from(name, 'hex'), size: st.size, used: Math.max(st.atimeMs, st.mtimeMs) });
      }
    }
    // The last use before this start is the file's access time: oldest first.
    for (const f of found.sort((a, b) => a.used - b.used)) this.track(f.hash, f.size);
    await this.enforce();
  }

  private path(hash: Buffer): string {
    const h = hex(hash);
    return join(this.dir, h.slice(0, 2), h);
  }

  private track(hash: Buffer, size: number): void {
    const k = hash.toString('latin1');
    const prev = this.sizes.get(k);
    if (prev !== undefined) this.bytes -= prev;
    this.sizes.set(k, size);
    this.bytes += size;
  }

  has(hash: Buffer): boolean {
    return this.sizes.has(hash.toString('latin1'));
  }

  stats(): ChunkStoreStats {
    return { chunks: this.sizes.size, bytes: this.bytes, evictedChunks: this.evictedChunks, evictedBytes: this.evictedBytes };
  }

  /**
   * Stores a verified chunk; on a full disk it evicts and tries once more.
   * Until its file is in place (a worker thread writes it), its bytes are
   * served from memory (writingNow): a file committed a moment ago reads
   * locally, as it did when small chunks were written on the JS thread,
   * instead of asking a node, which may not have it (a replica behind).
   */
  async put(hash: Buffer, data: Buffer): Promise<void> {
    const k = hash.toString('latin1');
    if (this.has(hash) || this.writing.has(k)) return;
    this.writing.set(k, data);
    try {
      try {
        await this.write(hash, data);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        const freed = await this.evict(Math.max(64 << 20, this.bytes / 10), 'disk full');
        if (freed === 0) throw err;
        await this.write(hash, data);
      }
      this.added(hash, data.length);
    } finally {
      this.writing.delete(k);
    }
  }

  /** Chunks put() is writing now, by hash (latin1), with their bytes. */
  private readonly writing = new Map<string, Buffer>();

  /** A chunk's bytes while put() writes its file; undefined otherwise. */
  writingNow(hash: Buffer): Buffer | undefined {
    return this.writing.get(hash.toString('latin1'));
  }

  /** A chunk is on disk under its name: count it, and evict if that went over a limit. */
  private added(hash: Buffer, size: number): void {
    this.track(hash, size);
    if (this.bytes > this.limits.quotaBytes || Date.now() - this.lastFreeCheck > 1000) void this.enforce();
  }

  /**
   * Takes a file whose whole content is one verified chunk (a committed
   * small file's dirty copy) by renaming it in: no copy. The file is gone
   * afterwards either way.
   */
  async adopt(hash: Buffer, file: string, size: number): Promise<void> {
    if (this.has(hash)) return void (await unlink(file).catch(() => undefined));
    await rename(file, this.path(hash));
    this.added(hash, size);
  }

  /**
   * Stores these chunks of `file`, which holds them at their offsets (a
   * committed dirty copy: its chunks were hashed from it). The kernel copies
   * them where the addon can; otherwise (and on a full disk, where put()
   * makes room) they are read and put one by one. Chunks held already, and
   * repeats, are skipped.
   */
  async putFrom(file: string, chunks: readonly ChunkRef[]): Promise<void> {
    // Each chunk once: a file repeats some (a sparse file's holes are one zero chunk many times over).
    const seen = new Set<string>();
    const wanted = chunks.filter((c) => {
      const k = c.hash.toString('latin1');
      if (seen.has(k) || this.has(c.hash)) return false;
      seen.add(k);
      return true;
    });
    let from = 0; // wanted[from...]: not copied yet
    const addon = nativeAddon();
    while (addon && this.oneJobWrites && from < wanted.length) {
      // A batch at a time, the cache's limits enforced after each (as put() does after each chunk):
      // a big file must not run the disk below its floor before eviction has a say.
      let to = from;
      for (let bytes = 0; to < wanted.length && (to === from || bytes + wanted[to]!.length <= PUT_FROM_BATCH_BYTES); to++) bytes += wanted[to]!.length;
      const batch = wanted.slice(from, to);
      const names = batch.map((c) => hex(c.hash));
      const { made, error } = await addon.cacheFromFile(
        file,
        names.map((h) => join(this.dir, h.slice(0, 2))),
        names,
        batch.map((c) => c.offset),
        batch.map((c) => c.length),
      );
      batch.forEach((c, i) => made?.[i] && this.added(c.hash, c.length));
      if (error) {
        const code = error.code;
        if (noTmpfile(code)) this.oneJobWrites = false;
        else if (code !== 'ENOSPC') throw error; // a full disk: put() below makes room
        break;
      }
      from = to;
      await this.enforce();
    }
    if (from === wanted.length) return;
    const fh = await open(file, 'r');
    try {
      for (const c of wanted.slice(from)) {
        if (this.has(c.hash)) continue;
        const data = Buffer.allocUnsafe(c.length);
        const { bytesRead } = await fh.read(data, 0, c.length, c.offset);
        if (bytesRead === c.length) await this.put(c.hash, data);
      }
    } finally {
      await fh.close();
    }
  }

  private async write(hash: Buffer, data: Buffer): Promise<void> {
    // One job on a worker thread where the addon can (four thread-pool trips
    // otherwise). Small chunks too: made on the JS thread, each file creation
    // held it about 250 us in an untar (12-33 us when nothing else runs), and
    // async untar and small files were 8-10 % faster once they left it.
    const addon = this.oneJobWrites ? nativeAddon() : undefined;
    if (addon) {
      const h = hex(hash);
      try {
        await addon.writeCacheFile(join(this.dir, h.slice(0, 2)), h, data);
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (!noTmpfile(code)) throw err;
        this.oneJobWrites = false; // this filesystem has no O_TMPFILE
      }
    }
    const tmp = join(this.dir, hex(hash).slice(0, 2), `.tmp-${randomBytes(6).toString('hex')}`);
    try {
      await writeFile(tmp, data, { mode: 0o600 });
      await rename(tmp, this.path(hash));
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  /** Keeps the cache under its quota and above the free-space floor (one pass at a time). */
  enforce(): Promise<void> {
    // Cleared in a later tick, so a pass that finishes at once cannot leave itself behind.
    this.enforcing ??= this.enforceNow().finally(() => (this.enforcing = undefined));
    return this.enforcing;
  }

  private async enforceNow(): Promise<void> {
    // Chunks keep arriving while a pass evicts: go round until under the line.
    for (;;) {
      this.lastFreeCheck = Date.now();
      const overQuota = this.bytes - this.limits.quotaBytes;
      let excess = overQuota;
      if (this.limits.minFreeBytes > 0) {
        const fs = await statfs(this.dir);
        excess = Math.max(excess, this.limits.minFreeBytes - fs.bavail * fs.bsize);
      }
      if (excess <= 0) return;
      // Evict a little below the line so that eviction is not per chunk.
      const freed = await this.evict(excess + Math.min(this.bytes / 20, 256 << 20), excess > overQuota ? 'free-space floor' : 'quota');
      if (freed === 0) return;
    }
  }

  /**
   * Removes least recently used chunks until `want` bytes are freed. Data
   * not yet written back is never here (dirty copies live beside the
   * chunk store), and a reader whose chunk goes simply fetches it again.
   */
  async evict(want: number, reason: string): Promise<number> {
    let freed = 0;
    let count = 0;
    for (const k of [...this.sizes.keys()]) {
      if (freed >= want) break;
      freed += await this.remove(Buffer.from(k, 'latin1'));
      count++;
    }
    if (count) {
      this.evictedChunks += count;
      this.evictedBytes += freed;
      log.info({ chunks: count, bytes: freed, reason, cacheBytes: this.bytes }, 'evicted chunks');
    }
    return freed;
  }

  /** Every chunk, least recently used first (gc, purge). */
  keys(): Buffer[] {
    return [...this.sizes.keys()].map((k) => Buffer.from(k, 'latin1'));
  }

  private handle(hash: Buffer): Promise<FileHandle> {
    const k = hash.toString('latin1');
    let fh = this.fds.get(k);
    if (fh) {
      // Move to the back: the map's order is the LRU order.
      this.fds.delete(k);
      this.fds.set(k, fh);
      return fh;
    }
    fh = open(this.path(hash), 'r');
    fh.catch(() => this.fds.delete(k));
    this.fds.set(k, fh);
    if (this.fds.size > this.maxOpenFiles) {
      const [oldK, old] = this.fds.entries().next().value as [string, Promise<FileHandle>];
      this.fds.delete(oldK);
      void old.then((h) => h.close()).catch(() => undefined);
    }
    return fh;
  }

  /** Marks a chunk as just used (also for reads served outside this store, by the native driver). */
  touch(hash: Buffer): void {
    const k = hash.toString('latin1');
    const size = this.sizes.get(k);
    if (size !== undefined) {
      // Most recently used goes last: the map's order is the eviction order.
      this.sizes.delete(k);
      this.sizes.set(k, size);
    }
  }

  /** Copies chunk bytes [offset, offset+length) into `into` at `at`; returns the count. */
  async read(hash: Buffer, offset: number, length: number, into: Buffer, at: number): Promise<number> {
    this.touch(hash);
    const fh = await this.handle(hash);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(into, at + done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  async remove(hash: Buffer): Promise<number> {
    const k = hash.toString('latin1');
    const size = this.sizes.get(k);
    if (size === undefined) return 0;
    // Uncounted before the unlink: evictions running side by side must not both take it off.
    this.sizes.delete(k);
    this.bytes -= size;
    const fh = this.fds.get(k);
    this.fds.delete(k);
    if (fh) void fh.then((h) => h.close()).catch(() => undefined);
    await unlink(this.path(hash)).catch(() => undefined);
    return size;
  }

  async close(): Promise<void> {
    const all = [...this.fds.values()];
    this.fds.clear();
    await Promise.all(all.map((p) => p.then((h) => h.close()).catch(() => undefined)));
  }
}
