// Write-back: a closed file's dirty copy becomes the node's file. Before
// close() returns the dirty copy is fsynced and journaled; then it is
// chunked (content-defined, on a hashing thread), the node is asked which
// chunks it lacks, only those are uploaded, and the node commits atomically
// against the digest the writer started from. A node that cannot be reached
// leaves the record queued and retried with back-off; a mount that died
// replays its journal on the next start, committing each file exactly once.
import { open, readFile, readdir, rename, unlink, mkdir, stat } from 'node:fs/promises';
import { chunkBuffer } from '../content/chunk-file.js';
import { DEFAULT_CHUNKING } from '../content/chunker.js';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { HashPool } from '../content/hash-pool.js';
import type { ChunkRef, Manifest } from '../content/manifest.js';
import { toTimespec } from '../content/attr.js';
import type { ChunkStore } from '../cache/chunk-store.js';
import type { Journal, JournalEntry } from '../cache/journal.js';
import type { MetaStore } from '../cache/meta-store.js';
import type { MeshClient } from '../mesh/mesh-client.js';
import { errnoOf } from '../wire/errors.js';
import { chunksToWire } from '../wire/convert.js';
import { log } from '../log.js';
import { PathLocks } from '../util/path-locks.js';
import { entryFromWire } from './vfs-entry.js';

export interface WriteBackStats {
  committed: number;
  conflicts: number;
  failed: number;
  uploadedChunks: number;
  uploadedBytes: number;
}

/** Files up to this size travel inside the commit call: one round trip, not three. */
const INLINE_BYTES = 1024 * 1024;

/** Asynchronous write-back: how long a closed file waits for attribute changes, commits running at once, records queued before close() waits. */
const LINGER_MS = 20;
const ASYNC_RUNNING = 16;
const ASYNC_QUEUE = 1024;

/** A record dropped for a newer version of its file before its turn came. */
class Superseded extends Error {
  constructor() {
    super('superseded by a newer version of the file');
  }
}

/** Errors that mean "try again later", as opposed to the node refusing the write. */
const RETRYABLE = new Set(['EHOSTDOWN', 'ETIMEDOUT', 'ECONNREFUSED', 'EAGAIN', 'EBUSY']);

export class WriteBack {
  /** Records not yet confirmed by a node, by sequence number. */
  private readonly pending = new Map<number, JournalEntry>();
  private readonly running = new Map<number, Promise<Buffer>>();
  /** Records the node may already hold (found in the journal at start, or after a commit attempt that timed out). */
  private readonly replayed = new Set<number>();
  /** One write-back of a file at a time, in the order they were asked for. */
  private readonly locks = new PathLocks();
  /** Digests of records that landed, by seq: the base of records made from them (bounded). */
  private readonly landed = new Map<number, Buffer>();
  /** Digests of our own versions of a path whose commits may have landed unconfirmed (answer lost, then superseded). */
  private readonly mayHold = new Map<string, Buffer[]>();
  private supersededListeners: ((seq: number, inheritedBaseSeq: number | undefined) => void)[] = [];
  /** Records queued by asynchronous closes, oldest first, until their commit starts. */
  private lingering: JournalEntry[] = [];
  private pumpTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = 500;
  private closed = false;
  readonly stats: WriteBackStats = { committed: 0, conflicts: 0, failed: 0, uploadedChunks: 0, uploadedBytes: 0 };

  constructor(
    private readonly meta: MetaStore,
    private readonly mesh: MeshClient,
    private readonly journal: Journal,
    private readonly chunkStore: ChunkStore,
    private readonly hasher: HashPool,
    readonly dirtyDir: string,
    private readonly opts: { clientId: string; deadlineMs: number },
  ) {}

  async init(): Promise<JournalEntry[]> {
    await mkdir(this.dirtyDir, { recursive: true, mode: 0o700 });
    const replay = await this.journal.load();
    // Dirty copies no record names were never acknowledged to a writer (the
    // mount died before their close returned): nothing to keep.
    const named = new Set(replay.map((e) => e.dirty));
    for (const f of await readdir(this.dirtyDir)) {
      if (!named.has(f) && !f.endsWith('.failed')) await unlink(this.dirtyPath(f)).catch(() => undefined);
    }
    for (const e of replay) {
      this.pending.set(e.seq, e);
      this.replayed.add(e.seq);
    }
    if (replay.length) {
      log.info({ pending: replay.length }, 'replaying write-back journal');
      this.scheduleRetry(0);
    }
    return replay;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** The newest pending record for a path (its content is what the mount shows until committed). */
  pendingFor(path: string): JournalEntry | undefined {
    let found: JournalEntry | undefined;
    for (const e of this.pending.values()) if (e.path === path && (!found || e.seq > found.seq)) found = e;
    return found;
  }

  dirtyPath(name: string): string {
    return join(this.dirtyDir, name);
  }

  /** Removes a dirty copy nobody needs (opened for writing, never changed). */
  async discard(name: string): Promise<void> {
    await unlink(this.dirtyPath(name)).catch(() => undefined);
  }

  newDirtyName(): string {
    return randomBytes(12).toString('hex');
  }

  /**
   * A writer closed a modified file. With `direct`, the node is asked first:
   * once it confirms, nothing local needs to be durable (close() has not
   * returned yet, so a crash loses nothing acknowledged). When no node
   * answers, or without `direct`, the dirty copy is fsynced and journaled
   * before this resolves, and the record is committed now or queued.
   * Resolves with the committed digest, or the queued record's seq; rejects
   * with the node's errno when the node refused the write.
   */
  async closeFile(rec: Omit<JournalEntry, 'seq' | 'closedAt'>, opts: { direct: boolean; syncDirty: () => Promise<void> }): Promise<{ digest: Buffer } | { queued: number }> {
    let attempted = false;
    if (opts.direct) {
      attempted = true;
      try {
        const digest = await this.commit({ ...rec, seq: 0, closedAt: Date.now() }, false);
        await this.dropOlder(rec.path, Infinity);
        return { digest };
      } catch (err) {
        if (!RETRYABLE.has(errnoOf(err))) {
          await this.refused({ ...rec, seq: 0, closedAt: Date.now() }, err);
          throw err;
        }
      }
    }
    await opts.syncDirty();
    const entry = await this.journal.add({ ...rec, closedAt: Date.now() });
    await this.dropOlder(rec.path, entry.seq);
    this.pending.set(entry.seq, entry);
    // A commit that timed out may still have landed: check before committing again.
    if (attempted) this.replayed.add(entry.seq);
    const digest = await this.commitOrQueue(entry, true);
    return digest ? { digest } : { queued: entry.seq };
  }

  /**
   * Asynchronous write-back: the closed file is journaled and close()
   * returns; its commit starts after a short linger (attribute changes made
   * right after close, as tar and cp -p make them, join the record instead
   * of costing a round trip each) with a bounded number in flight. Waits
   * only while the queue is full.
   */
  async queueFile(rec: Omit<JournalEntry, 'seq' | 'closedAt'>): Promise<{ queued: number }> {
    while (this.pending.size >= ASYNC_QUEUE && this.running.size > 0) await Promise.race(this.running.values()).catch(() => undefined);
    const entry = await this.journal.add({ ...rec, closedAt: Date.now() });
    await this.dropOlder(rec.path, entry.seq);
    this.pending.set(entry.seq, entry);
    this.lingering.push(entry);
    this.pump();
    return { queued: entry.seq };
  }

  /** Starts the lingering records whose time has come, as many as may run at once. */
  private pump(): void {
    if (this.pumpTimer || this.closed) return;
    const now = Date.now();
    while (this.lingering.length && this.running.size < ASYNC_RUNNING) {
      const e = this.lingering[0]!;
      if (e.closedAt + LINGER_MS > now) break;
      this.lingering.shift();
      if (!this.pending.has(e.seq) || this.running.has(e.seq)) continue;
      void this.commitOrQueue(e, false).finally(() => this.pump());
    }
    const next = this.lingering[0];
    if (next && this.running.size < ASYNC_RUNNING) {
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = undefined;
        this.pump();
      }, next.closedAt + LINGER_MS - now);
      this.pumpTimer.unref();
    }
  }

  /**
   * Attribute changes to a closed file whose commit has not started yet join
   * its record. Undefined when there is no such record (none, or its commit
   * is under way): the change must then go to the node.
   */
  async amend(path: string, a: { mode?: number; mtimeNs?: bigint; atimeNs?: bigint }): Promise<JournalEntry | undefined> {
    const e = this.pendingFor(path);
    if (!e || this.running.has(e.seq)) return undefined;
    // Changed before any await: a commit that starts from here on sends the new values.
    if (a.mode !== undefined) e.mode = a.mode & 0o7777;
    if (a.mtimeNs !== undefined) e.mtimeNs = a.mtimeNs;
    if (a.atimeNs !== undefined) e.atimeNs = a.atimeNs;
    await this.journal.update(e);
    return e;
  }

  /** Called when a queued record is dropped for a newer one: what was made from it takes its base. */
  onSuperseded(fn: (seq: number, inheritedBaseSeq: number | undefined) => void): void {
    this.supersededListeners.push(fn);
  }

  /**
   * Older records for a path are superseded: newer content includes theirs.
   * One that is being committed right now is let finish first (it may land,
   * and then it is the newer one's base).
   */
  private async dropOlder(path: string, seq: number): Promise<void> {
    for (const e of [...this.pending.values()]) {
      if (e.path !== path || e.seq >= seq) continue;
      await this.running.get(e.seq)?.catch(() => undefined);
      if (!this.pending.has(e.seq)) continue;
      // Tried already, answer lost: the node may hold it. Keep its digest to recognize it.
      if (this.replayed.has(e.seq)) await this.rememberMayHold(e);
      await this.drop(e, true);
      for (const r of this.pending.values()) if (r.baseSeq === e.seq) r.baseSeq = e.baseSeq;
      for (const fn of this.supersededListeners) fn(e.seq, e.baseSeq);
    }
  }

  private async rememberMayHold(e: JournalEntry): Promise<void> {
    const dirty = this.dirtyPath(e.dirty);
    const digest = await (async () => {
      if ((await stat(dirty)).size <= INLINE_BYTES) return chunkBuffer(await readFile(dirty), DEFAULT_CHUNKING).digest;
      return (await this.hasher.hash(dirty)).manifest.digest;
    })().catch(() => undefined);
    if (!digest) return;
    this.mayHold.set(e.path, [...(this.mayHold.get(e.path) ?? []), digest]);
  }

  /** The base to commit against: a record made from a queued version that has landed since is based on that version. */
  private baseOf(e: JournalEntry): { baseDigest?: Buffer; expectAbsent: boolean } {
    const landed = e.baseSeq !== undefined ? this.landed.get(e.baseSeq) : undefined;
    return landed ? { baseDigest: landed, expectAbsent: false } : { baseDigest: e.baseDigest, expectAbsent: e.expectAbsent };
  }

  /** The node refused (permissions, no space, a directory in the way): keep the bytes aside where an admin can find them. */
  private async refused(e: JournalEntry, err: unknown): Promise<void> {
    this.stats.failed++;
    const kept = `${this.dirtyPath(e.dirty)}.failed`;
    await rename(this.dirtyPath(e.dirty), kept).catch(() => undefined);
    if (e.seq) {
      await this.journal.remove(e.seq);
      this.pending.delete(e.seq);
    }
    log.error({ path: e.path, errno: errnoOf(err), keptAt: kept, err: (err as Error).message }, 'write-back refused by the node; the written bytes are kept in the cache dir');
  }

  /** Resolves with the committed digest, or undefined when the record stays queued. */
  private commitOrQueue(e: JournalEntry, surfaceRefusal: boolean): Promise<Buffer | undefined> {
    let p = this.running.get(e.seq);
    if (!p) {
      p = this.commit(e, this.replayed.has(e.seq)).finally(() => this.running.delete(e.seq));
      this.running.set(e.seq, p);
    }
    return p.catch(async (err) => {
      if (err instanceof Superseded) return undefined;
      const errno = errnoOf(err);
      if (RETRYABLE.has(errno)) {
        log.warn({ path: e.path, errno, pending: this.pending.size }, 'write-back queued: no node reachable; it will be retried');
        this.scheduleRetry();
        return undefined;
      }
      await this.refused(e, err);
      if (surfaceRefusal) throw err;
      return undefined;
    });
  }

  private commit(e: JournalEntry, replayed: boolean): Promise<Buffer> {
    return this.locks.with(e.path, async () => {
      // Dropped while it waited for its turn: a newer version went (or goes) instead.
      if (e.seq && !this.pending.has(e.seq)) throw new Superseded();
      const digest = await this.commitNow(e, replayed);
      if (e.seq) this.rememberLanded(e.seq, digest);
      return digest;
    });
  }

  private rememberLanded(seq: number, digest: Buffer): void {
    this.landed.set(seq, digest);
    if (this.landed.size > 10_000) this.landed.delete(this.landed.keys().next().value as number);
  }

  private async commitNow(e: JournalEntry, replayed: boolean): Promise<Buffer> {
    const dirty = this.dirtyPath(e.dirty);
    const base = this.baseOf(e);
    const small = (await stat(dirty)).size <= INLINE_BYTES;
    // Small files are chunked here (one chunk, microseconds); big ones on the hashing thread.
    const data = small ? await readFile(dirty) : undefined;
    const manifest = data ? chunkBuffer(data, DEFAULT_CHUNKING) : (await this.hasher.hash(dirty)).manifest;
    // A replayed record may have been committed just before the mount died:
    // if the node already holds exactly this content, it is done (the node
    // would also accept it again; this saves the upload).
    const current = replayed ? await this.mesh.stat(e.path).catch((err) => (errnoOf(err) === 'ENOENT' ? undefined : Promise.reject(err))) : undefined;
    const currentDigest = current?.digest?.length ? Buffer.from(current.digest) : undefined;
    let reply;
    if (currentDigest?.equals(manifest.digest)) {
      reply = { conflict: false, conflictPath: '', entry: current };
    } else {
      const inline = data ? manifest.chunks.map((c) => ({ hash: c.hash, data: data.subarray(c.offset, c.offset + c.length) })) : [];
      if (!data) await this.upload(dirty, manifest);
      reply = await this.mesh.call(`commit ${e.path}`, (c) =>
        c.commit(
          {
            path: e.path,
            baseDigest: base.baseDigest ?? Buffer.alloc(0),
            expectAbsent: base.expectAbsent,
            digest: manifest.digest,
            size: manifest.size,
            chunks: chunksToWire(manifest.chunks),
            mode: e.mode & 0o7777,
            mtime: e.mtimeNs !== undefined ? toTimespec(e.mtimeNs) : undefined,
            atime: e.atimeNs !== undefined ? toTimespec(e.atimeNs) : undefined,
            clientId: this.opts.clientId,
            inline,
            // Versions of ours whose commit answers were lost may be what the node holds now: not a conflict.
            alsoBases: this.mayHold.get(e.path) ?? [],
          },
          Math.max(this.opts.deadlineMs, 30_000),
        ),
      );
    }
    const committedPath = reply.conflict ? reply.conflictPath : e.path;
    await this.meta.settle(committedPath, entryFromWire(reply.entry!), { digest: manifest.digest, chunks: manifest.chunks }, (b) => {
      if (e.seq) this.journal.removeIn(b, e.seq);
    });
    this.pending.delete(e.seq);
    this.mayHold.delete(e.path);
    this.track(this.keepChunks(dirty, manifest.chunks, manifest.size));
    if (reply.conflict) {
      this.stats.conflicts++;
      log.warn({ path: e.path, conflictPath: reply.conflictPath }, 'write-back conflict: the file changed on the node since it was opened; this version was kept beside it');
    } else {
      this.stats.committed++;
      log.debug({ path: e.path, size: manifest.size, chunks: manifest.chunks.length }, 'written back');
    }
    return manifest.digest;
  }

  /** Uploads the chunks the node lacks, read from the dirty copy. */
  private async upload(dirty: string, m: Manifest): Promise<void> {
    const missing = await this.mesh.call('has-chunks', (c) => c.hasChunks(m.chunks.map((x) => x.hash)));
    if (missing.length === 0) return;
    await this.mesh.call('put-chunks', async (c) => {
      const fh = await open(dirty, 'r');
      try {
        const chunks = missing.map((i) => m.chunks[i]!);
        async function* read(): AsyncGenerator<{ hash: Buffer; data: Buffer }> {
          for (const ch of chunks) {
            const data = Buffer.allocUnsafe(ch.length);
            await fh.read(data, 0, ch.length, ch.offset);
            yield { hash: ch.hash, data };
          }
        }
        const r = await c.putChunks(read(), Math.max(this.opts.deadlineMs, 60_000));
        this.stats.uploadedChunks += chunks.length;
        this.stats.uploadedBytes += chunks.reduce((n, x) => n + x.length, 0);
        return r;
      } finally {
        await fh.close();
      }
    });
  }

  /**
   * The committed content is local already: its chunks go into the cache so
   * reads need no fetch, then the dirty copy goes. Runs after close() has
   * returned (nothing waits for it); a one-chunk file is renamed in whole.
   */
  private async keepChunks(dirty: string, chunks: ChunkRef[], size: number): Promise<void> {
    try {
      if (chunks.length === 1 && chunks[0]!.length === size) return await this.chunkStore.adopt(chunks[0]!.hash, dirty, size);
      const fh = await open(dirty, 'r');
      try {
        for (const c of chunks) {
          if (this.chunkStore.has(c.hash)) continue;
          const data = Buffer.allocUnsafe(c.length);
          const { bytesRead } = await fh.read(data, 0, c.length, c.offset);
          if (bytesRead === c.length) await this.chunkStore.put(c.hash, data);
        }
      } finally {
        await fh.close();
      }
    } catch (err) {
      log.debug({ dirty, err: (err as Error).message }, 'committed chunks not kept in the cache');
    } finally {
      await unlink(dirty).catch(() => undefined);
    }
  }

  /** Work left running after a commit returned; waited for on stop. */
  private readonly background = new Set<Promise<void>>();
  private track(p: Promise<void>): void {
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  /** Commits pending records for these paths (or below them) now; throws if that is impossible. */
  async flushPaths(paths: string[]): Promise<void> {
    const hit = [...this.pending.values()].filter((e) => paths.some((p) => e.path === p || e.path.startsWith(p + '/') || p === ''));
    for (const e of hit) {
      await this.commitOrQueue(e, true);
      if (this.pending.has(e.seq)) throw Object.assign(new Error(`write-back of "${e.path}" is still pending`), { code: 'EHOSTDOWN' });
    }
  }

  /** The file was deleted: its pending content must never be written back. */
  async cancel(path: string): Promise<boolean> {
    let any = false;
    for (const e of [...this.pending.values()]) {
      if (e.path === path || e.path.startsWith(path + '/')) {
        await this.running.get(e.seq)?.catch(() => undefined);
        if (this.pending.has(e.seq)) {
          await this.drop(e, true);
          any = true;
        }
      }
    }
    return any;
  }

  private async drop(e: JournalEntry, removeDirty: boolean): Promise<void> {
    // Out of pending first: nothing may start committing it while the journal is written.
    this.pending.delete(e.seq);
    await this.journal.remove(e.seq);
    if (removeDirty) await unlink(this.dirtyPath(e.dirty)).catch(() => undefined);
  }

  private scheduleRetry(delay = this.retryMs): void {
    if (this.closed || this.retryTimer || this.pending.size === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.retryAll();
    }, delay);
    this.retryTimer.unref();
  }

  private async retryAll(): Promise<void> {
    const before = this.pending.size;
    // Oldest first, several at once (one file's versions still go in turn: commits hold a lock per path).
    const inFlight = new Set<Promise<unknown>>();
    for (const e of [...this.pending.values()].sort((a, b) => a.seq - b.seq)) {
      if (this.closed) return;
      const p = this.commitOrQueue(e, false).finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= ASYNC_RUNNING) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (this.pending.size === 0) {
      if (before) log.info({ committed: before }, 'write-back queue drained');
      this.retryMs = 500;
    } else {
      this.retryMs = Math.min(this.retryMs * 2, 30_000);
      this.scheduleRetry();
    }
  }

  /** Tries every pending record once more (unmount, tests). */
  async drain(): Promise<number> {
    await this.retryAll();
    return this.pending.size;
  }

  async stop(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    await Promise.all(this.background);
  }
}
