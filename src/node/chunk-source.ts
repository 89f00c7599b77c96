// Where the node finds chunk bytes: in the workspace's own files (located
// through the index and re-validated by stat tuple before every read, so a
// file changed since it was indexed is never served stale) or among chunks
// uploaded for a commit (staged under the state dir, or placed in a file's
// draft: drafts.ts; each verified once on arrival).
import { readFile, rename, unlink, readdir, stat, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { attrFromStats, sameTuple, type Attr } from '../content/attr.js';
import { hashChunk, hex } from '../content/manifest.js';
import { ChunkMissing, FsError } from '../wire/errors.js';
import { log } from '../log.js';
import type { WorkspaceIndex } from './workspace-index.js';
import { checkChildPath, type RootFile } from './paths.js';
import { Drafts } from './drafts.js';

/** A chunk's bytes in a workspace file. */
export interface FileRange {
  file: RootFile;
  offset: number;
  length: number;
}

/**
 * The workspace file a request is served from, kept open from one chunk to
 * the next: the chunks of one request are mostly those of one file, and
 * opening and closing it were two of each chunk's five calls.
 */
export class OpenFile {
  private cur: { path: string; file: Promise<RootFile> } | undefined;

  constructor(private readonly open: (path: string) => Promise<RootFile>) {}

  get(path: string): Promise<RootFile> {
    if (this.cur?.path === path) return this.cur.file;
    void this.drop();
    const file = this.open(path);
    const cur = { path, file };
    file.catch(() => {
      if (this.cur === cur) this.cur = undefined;
    });
    this.cur = cur;
    return file;
  }

  /** Closes the file held (before a change of file, after a mismatch, at the end). */
  async drop(): Promise<void> {
    const c = this.cur;
    this.cur = undefined;
    if (c) await c.file.then((f) => f.close()).catch(() => undefined);
  }
}

/** Chunks of one request read ahead of the one being sent (at most 4 × 4 MiB in memory). */
const READ_AHEAD = 3;

export class ChunkSource {
  readonly drafts: Drafts;

  constructor(
    private readonly index: WorkspaceIndex,
    private readonly stagingDir: string,
  ) {
    this.drafts = new Drafts(async (path) => dirname(await index.paths.safeAbs(checkChildPath(path))));
  }

  async init(): Promise<void> {
    await mkdir(this.stagingDir, { recursive: true, mode: 0o700 });
  }

  private stagedPath(hash: Buffer): string {
    return join(this.stagingDir, hex(hash));
  }

  /** Where in the workspace a chunk can be read, preferring the hinted file. */
  private locate(hash: Buffer, hint?: string): { path: string; offset: number; length: number } | undefined {
    if (hint) {
      const c = this.index.entries.get(hint)?.chunks?.find((x) => x.hash.equals(hash));
      if (c) return { path: hint, offset: c.offset, length: c.length };
    }
    return this.index.locateChunk(hash);
  }

  /**
   * The staged file of a chunk that no workspace file is known to hold (a
   * new file's uploaded chunks): a commit may copy that file whole. Whether
   * it exists is for the copy to find out.
   */
  stagedOnly(hash: Buffer, hint?: string): string | undefined {
    return this.locate(hash, hint) || this.drafts.has(hash) ? undefined : this.stagedPath(hash);
  }

  async has(hash: Buffer): Promise<boolean> {
    if (this.locate(hash) || this.drafts.has(hash)) return true;
    try {
      await stat(this.stagedPath(hash));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Where the index places a chunk in a workspace file, re-validated first
   * (a changed file is hashed again), with the attributes its bytes belong
   * to. The chunk may then live elsewhere or nowhere, and a caller may find
   * the file changed once more: a second place is offered after the first.
   */
  private async *indexedRanges(hash: Buffer, hint?: string): AsyncGenerator<{ path: string; offset: number; length: number; attr: Attr }> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const loc = this.locate(hash, hint);
      if (!loc) return;
      const entry = await this.index.validate(loc.path).catch(() => undefined);
      const c = entry?.chunks?.find((x) => x.hash.equals(hash) && x.offset === loc.offset);
      if (entry && c) yield { path: loc.path, offset: c.offset, length: c.length, attr: entry.attr };
    }
  }

  /**
   * A chunk's bytes. With `reserve`, the returned buffer has that many
   * unused bytes in front of the data (room for a message header).
   */
  async read(hash: Buffer, hint?: string, reserve = 0): Promise<Buffer> {
    for await (const at of this.indexedRanges(hash, hint)) {
      const data = await this.readAt(at.path, at.offset, at.length, at.attr, reserve);
      if (data) return data;
    }
    let staged: Buffer | undefined;
    try {
      staged = await readFile(this.stagedPath(hash));
    } catch {
      staged = await this.drafts.read(hash);
    }
    if (!staged) throw new ChunkMissing(`chunk ${hex(hash)} is not on this node`);
    return reserve ? Buffer.concat([Buffer.alloc(reserve), staged]) : staged;
  }

  /**
   * Chunks in the order asked, each as `read` gives it, with the next few
   * read while the caller sends one: a chunk's read (open, read, stat,
   * close: thread-pool hops, and a disk read when cold) would otherwise
   * leave the connection idle between chunks. On loopback with a fast disk
   * the gain is within this machine's noise; a slow disk (NFS, spinning) is
   * where it counts. Stops at the first chunk that cannot be read.
   */
  async *readMany(hashes: Buffer[], hint: string | undefined, reserve: number): AsyncGenerator<{ hash: Buffer; buf: Buffer }> {
    const reads: Promise<Buffer>[] = [];
    let next = 0;
    const readAhead = (): void => {
      while (reads.length < READ_AHEAD && next < hashes.length) {
        const p = this.read(hashes[next++]!, hint, reserve);
        p.catch(() => undefined); // the one awaited reports it; later ones are dropped
        reads.push(p);
      }
    };
    readAhead();
    for (const hash of hashes) {
      const buf = await reads.shift()!;
      readAhead();
      yield { hash, buf };
    }
  }

  /**
   * A chunk as a range of a workspace file, open (through `files`), whose
   * attributes match what the index hashed: for sending it straight from
   * the file. Undefined when the chunk is only among the staged uploads or
   * its file keeps changing: the caller then `read`s it.
   */
  async rangeOf(hash: Buffer, hint: string | undefined, files: OpenFile): Promise<FileRange | undefined> {
    for await (const at of this.indexedRanges(hash, hint)) {
      const file = await files.get(at.path).catch(() => undefined);
      if (!file) continue;
      // The descriptor may name another file than the one validated (renamed over since), or the file was written to.
      if (sameTuple(attrFromStats(await file.stat()), at.attr)) return { file, offset: at.offset, length: at.length };
      await files.drop();
    }
    return undefined;
  }

  /** A holder for the file a request is being served from (see `rangeOf`). */
  openFiles(): OpenFile {
    return new OpenFile((path) => this.index.paths.openForRead(path));
  }

  /** Reads a chunk, or undefined when the file changed under the read. */
  private async readAt(path: string, offset: number, length: number, expected: Attr, reserve: number): Promise<Buffer | undefined> {
    let fh;
    try {
      fh = await this.index.paths.openForRead(path);
    } catch {
      return undefined;
    }
    try {
      const buf = Buffer.allocUnsafe(reserve + length);
      let got = 0;
      while (got < length) {
        const bytesRead = await fh.read(buf, reserve + got, length - got, offset + got);
        if (bytesRead === 0) return undefined;
        got += bytesRead;
      }
      const after = attrFromStats(await fh.stat());
      return sameTuple(after, expected) ? buf : undefined;
    } finally {
      await fh.close();
    }
  }

  /**
   * Keeps an uploaded chunk after checking its hash, in the draft of the
   * file `at` names if it can; returns false if it was known already.
   */
  async put(hash: Buffer, data: Buffer, at?: { draft: string; path: string; offset: number }): Promise<boolean> {
    if (!hashChunk(data).equals(hash)) throw new FsError('EIO', `uploaded chunk does not match its hash ${hex(hash)}`);
    // Placed even when known: the commit then need not copy it in.
    if (at && (await this.drafts.place(at.draft, at.path, at.offset, { hash, data }))) return true;
    if (await this.has(hash)) return false;
    const tmp = join(this.stagingDir, `.tmp-${randomBytes(6).toString('hex')}`);
    await writeFile(tmp, data, { mode: 0o600 });
    await rename(tmp, this.stagedPath(hash));
    return true;
  }

  /** Forgets a staged chunk once a committed file holds it. */
  async dropStaged(hash: Buffer): Promise<void> {
    await unlink(this.stagedPath(hash)).catch(() => undefined);
  }

  /** Removes staged chunks (and interrupted uploads), and drafts, older than `ttlMs`. */
  async collect(ttlMs: number): Promise<number> {
    let removed = await this.drafts.collect(ttlMs);
    const now = Date.now();
    for (const name of await readdir(this.stagingDir).catch(() => [] as string[])) {
      const p = join(this.stagingDir, name);
      try {
        const st = await stat(p);
        if (now - st.mtimeMs >= ttlMs) {
          await unlink(p);
          removed++;
        }
      } catch {
        // raced with a commit or another collector
      }
    }
    if (removed > 0) log.info({ workspace: this.index.id, removed }, 'removed staged chunks and drafts past their TTL');
    return removed;
  }

  /** Discards the drafts (at shutdown: no commit can take them any more). */
  close(): Promise<void> {
    return this.drafts.close();
  }
}
