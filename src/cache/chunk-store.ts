// Content-addressed chunk files under the cache dir (chunks/ab/abcd...).
// A chunk is written here only after its hash was verified (by the mesh
// client, as it arrived), so it is trusted from then on and never hashed
// again on read. Writes are temp + rename: a crash leaves no half chunk
// under a real name.
import { mkdir, open, readdir, rename, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hex } from '../content/manifest.js';

export interface ChunkStoreStats {
  chunks: number;
  bytes: number;
}

export class ChunkStore {
  /** Size of every chunk on disk, by hash (latin1 key). */
  private readonly sizes = new Map<string, number>();
  private readonly fds = new Map<string, Promise<FileHandle>>();
  private bytes = 0;

  constructor(
    readonly dir: string,
    private readonly maxOpenFiles = 128,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    // All 256 fan-out directories up front: no mkdir on the fetch path.
    await Promise.all(Array.from({ length: 256 }, (_, i) => mkdir(join(this.dir, i.toString(16).padStart(2, '0')), { recursive: true, mode: 0o700 })));
    for (const sub of await readdir(this.dir)) {
      if (sub.length !== 2) continue;
      for (const name of await readdir(join(this.dir, sub)).catch(() => [] as string[])) {
        if (name.startsWith('.tmp-')) {
          await unlink(join(this.dir, sub, name)).catch(() => undefined);
          continue;
        }
        if (!/^[0-9a-f]{64}$/.test(name)) continue;
        const st = await stat(join(this.dir, sub, name)).catch(() => undefined);
        if (st) this.track(Buffer.from(name, 'hex'), st.size);
      }
    }
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
    return { chunks: this.sizes.size, bytes: this.bytes };
  }

  /** Stores a verified chunk. */
  async put(hash: Buffer, data: Buffer): Promise<void> {
    if (this.has(hash)) return;
    const final = this.path(hash);
    const tmp = join(this.dir, hex(hash).slice(0, 2), `.tmp-${randomBytes(6).toString('hex')}`);
    await writeFile(tmp, data, { mode: 0o600 });
    await rename(tmp, final);
    this.track(hash, data.length);
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

  /** Copies chunk bytes [offset, offset+length) into `into` at `at`; returns the count. */
  async read(hash: Buffer, offset: number, length: number, into: Buffer, at: number): Promise<number> {
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
    const fh = this.fds.get(k);
    this.fds.delete(k);
    if (fh) void fh.then((h) => h.close()).catch(() => undefined);
    await unlink(this.path(hash)).catch(() => undefined);
    this.sizes.delete(k);
    this.bytes -= size;
    return size;
  }

  async close(): Promise<void> {
    const all = [...this.fds.values()];
    this.fds.clear();
    await Promise.all(all.map((p) => p.then((h) => h.close()).catch(() => undefined)));
  }
}
