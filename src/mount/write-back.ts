// Write-back: a closed file's content becomes the node's file. close()
// returns once a node committed it or, when none does, once the content is
// durable in a dirty copy and journaled. The content is
// chunked (content-defined, on a hashing thread), the node is asked which
// chunks it lacks, only those are uploaded, and the node commits atomically
// against the digest the writer started from (small files ride inside the
// commit; queued ones travel in CommitMany batches). A node that cannot be
// reached leaves the record queued and retried with back-off; a mount that
// died replays its journal on the next start, committing each file exactly once.
import { copyFile, constants, open, readFile, readdir, rename, unlink, mkdir, stat, writeFile } from 'node:fs/promises';
import { chunkBuffer, isZeroRun } from '../content/chunk-file.js';
import { rangesIn, type FileRange } from '../mesh/connection.js';
import { WriteAhead, type DraftOf, type SendChunks } from './write-ahead.js';
import { DEFAULT_CHUNKING } from '../content/chunker.js';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import type { HashPool } from '../content/hash-pool.js';
import { hex, type ChunkRef, type Manifest } from '../content/manifest.js';
import type { WCommitManyReplyOut, WCommitReplyOut, WCommitRequest, WEntryOut } from '../wire/types.js';
import { MAX_COMMIT_BATCH, MAX_COMMIT_BATCH_BYTES, MAX_MESSAGE_BYTES } from '../wire/proto.js';
import { isDir, S_IFREG, toTimespec } from '../content/attr.js';
import type { ChunkStore } from '../cache/chunk-store.js';
import { hasOwner, laterOwner, type Journal, type JournalEntry, type Owner } from '../cache/journal.js';
import { changeKind, type ChangeKind, type MetaEntry, type MetaStore } from '../cache/meta-store.js';
import { SLOW_NODE_BYTES_PER_MS, type MeshClient } from '../mesh/mesh-client.js';
import { errnoOf, FsError, isUnimplemented, lacksChunk } from '../wire/errors.js';
import { chunksToWire } from '../wire/convert.js';
import { log, onceThenDebug } from '../log.js';
import { PathLocks } from '../util/path-locks.js';
import { SetMap } from '../util/set-map.js';
import { isWithin, parentOf } from '../wire/rel-path.js';
import { entryFromWire } from './vfs-entry.js';
import { isLocalIno } from './local-ino.js';

/** A pending record as status and a refused unmount show it. */
export interface PendingRecord {
  seq: number;
  path: string;
  /** Since the writer closed it. */
  ageMs: number;
  /** What its commit is doing now ("uploading", "committing"...), or "queued" between attempts. */
  state: string;
  attempts: number;
  lastError?: string;
}

export interface WriteBackStats {
  committed: number;
  conflicts: number;
  failed: number;
  uploadedChunks: number;
  uploadedBytes: number;
}

/**
 * A chunk's size in a commit's list, encoded: 2 (field and length) + 34
 * (hash) + 7 (offset: a varint of at most 6 bytes below 2^42, which any
 * list under MAX_MESSAGE_BYTES keeps to) + 5 (length, at most 4 MiB).
 */
const WIRE_BYTES_PER_CHUNK = 48;

/** Files up to this size travel inside the commit call: one round trip, not three. */
export const INLINE_BYTES = 1024 * 1024;

/** Small files' bytes stay in memory from close to commit (they are on disk too): up to this much per file, and in all. */
export const HOLD_BYTES = 256 * 1024;
const HOLD_TOTAL = 64 * 1024 * 1024;

/**
 * A file queued by an asynchronous close with up to this many bytes is kept
 * in its journal record (a database write the close makes anyway) instead
 * of a dirty copy, which was created on the mount's thread: 0.15–0.55 ms
 * per file measured here, with the kernel's replies waiting behind it.
 */
export const IN_RECORD_BYTES = 64 * 1024;

/** A commit's deadline grows with its bytes (see SLOW_NODE_BYTES_PER_MS) and by this much per extra file of a batch. */
const COMMIT_MS_PER_FILE = 100;

/**
 * Asynchronous write-back: how long a closed file waits for attribute
 * changes, commit calls running at once (of them, CommitMany batches),
 * records queued before close() waits.
 */
const LINGER_MS = 20;
const ASYNC_RUNNING = 16;
const ASYNC_BATCHES = 2;
const ASYNC_QUEUE = 1024;
/** Uploads and commits of one big file when the node that commits lacks chunks sent (to a replica since gone). */
const COMMIT_UPLOAD_ATTEMPTS = 3;
/** Fewer files than this make a batch only once they have lingered twice as long (more close meanwhile). */
const GATHER_FILES = 8;

/** A directory's attributes whose files before them are not all on the node yet: they stay queued, untried. */
class Waiting extends Error {
  constructor(path: string) {
    super(`files in "${path}" are still queued`);
  }
}

/** A record below a directory the node does not have yet (no node took the directory): it was not sent. */
class DirNotThere extends FsError {
  constructor(dir: string) {
    super('EHOSTDOWN', `the directory "${dir}" is not on the node yet`);
  }
}

/** A record dropped for a newer version of its file before its turn came. */
class Superseded extends Error {
  constructor() {
    super('superseded by a newer version of the file');
  }
}

/** A close's content whose file was unlinked meanwhile: it is committed nowhere. */
class Removed extends Error {
  constructor(path: string) {
    super(`"${path}" was removed while it was being closed`);
  }
}

/**
 * A close under way: its content was taken from the file and is not yet
 * committed or queued. An unlink of the path that the node takes meanwhile
 * marks it `removed`: its bytes went with the file, as on a local disk, and
 * committing them after the unlink would bring the file back.
 */
export interface Closing {
  readonly path: string;
  removed: boolean;
  /** Its content was sent to the node (straight from close()): it may be there, its answer lost. */
  sent?: boolean;
  /** Settles when the close is over: its content committed, queued, or gone with the file. */
  readonly ended: Promise<void>;
}

/** Errors that mean "try again later", as opposed to the node refusing the write. */
const RETRYABLE = new Set(['EHOSTDOWN', 'ETIMEDOUT', 'ECONNREFUSED', 'EAGAIN', 'EBUSY']);
/**
 * A node out of room: a writer waiting in close() is told (nothing was
 * acknowledged), but a closed file the journal holds is retried until the
 * node has room, never set aside for that.
 */
const NODE_FULL = new Set(['ENOSPC', 'EDQUOT']);

export class WriteBack {
  /** Records not yet confirmed by a node, by sequence number. */
  private readonly pending = new Map<number, JournalEntry>();
  /** The same records by path (a record changes path only in renameQueued, before its commit may start). */
  private readonly byPath = new SetMap<string, JournalEntry>();
  /** Records that may not start their commit yet, by seq: renamed in the queue, until the journal has the new name on disk (see renameQueued). */
  private readonly holds = new Map<number, Promise<void>>();
  /**
   * The file records by the directory they are in (see filesIn): with
   * thousands queued (tar -x while no node answered), looking through all of
   * them for each directory's attributes made the queue drain at a few
   * records a second once a node was back.
   */
  private readonly filesByDir = new SetMap<string, JournalEntry>();
  /** Pending directories made through the mount (one per path at most: a second mkdir there fails EEXIST first). */
  private readonly mkdirs = new Map<string, JournalEntry>();
  /** Queued directories are made on the node one after another (the node makes them one at a time anyway). */
  private mkdirChain: Promise<unknown> = Promise.resolve();
  private readonly running = new Map<number, Promise<Buffer>>();
  /** Per pending record: attempts made, the step of the one under way (shown while it runs), and how the last one failed. */
  private readonly progress = new Map<number, { attempts: number; step: string; lastError?: string }>();
  /** Records the node may already hold (found in the journal at start, or after a commit attempt that timed out). */
  private readonly replayed = new Set<number>();
  /** One write-back of a file at a time, in the order they were asked for. */
  private readonly locks = new PathLocks();
  /** Digests of records that landed, by seq: the base of records made from them (bounded). */
  private readonly landed = new Map<number, Buffer>();
  /** Digests of our own versions of a path whose commits may have landed unconfirmed (answer lost, then superseded). */
  private readonly mayHold = new Map<string, Buffer[]>();
  /** Closes under way, by path (see Closing). */
  private readonly closings = new SetMap<string, Closing>();
  private readonly closeEnds = new Map<Closing, () => void>();
  private supersededListeners: ((seq: number, inheritedBaseSeq: number | undefined) => void)[] = [];
  /** Records queued by asynchronous closes, oldest first, until their commit starts. */
  private lingering: JournalEntry[] = [];
  private pumpTimer: NodeJS.Timeout | undefined;
  /** Commit calls the pump has under way, and how many of them are batches. */
  private pumped = 0;
  private pumpedBatches = 0;
  /** Bytes of `data` held by pending records. */
  private heldBytes = 0;
  /** The node has no CommitMany (an older node): one call per file. */
  private batchUnsupported = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = 500;
  private retrying: Promise<void> | undefined;
  /** Set when a commit found no node reachable; the retry pass under way stops starting more. */
  private unreachable = false;
  private quietUntilDrained = false;
  private closed = false;
  readonly stats: WriteBackStats = { committed: 0, conflicts: 0, failed: 0, uploadedChunks: 0, uploadedBytes: 0 };
  /** A file that did not get its owner (see giveOwner). */
  private readonly ownerNotGiven = onceThenDebug('warn');

  constructor(
    private readonly meta: MetaStore,
    private readonly mesh: MeshClient,
    private readonly journal: Journal,
    private readonly chunkStore: ChunkStore,
    private readonly hasher: HashPool,
    readonly dirtyDir: string,
    /** `lingerMs`: in place of LINGER_MS (tests that must act on a record before its commit starts). */
    private readonly opts: { clientId: string; deadlineMs: number; lingerMs?: number },
  ) {
    // A node is back: what waits in the queue goes now, not after the back-off (up to 30 s).
    mesh.onReachable(() => {
      this.retryMs = 500;
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      // A pass under way may have given up before the node came back: another follows it.
      if (this.retrying) void this.retrying.then(() => this.scheduleRetry(0));
      else this.scheduleRetry(0);
    });
  }

  async init(): Promise<JournalEntry[]> {
    await mkdir(this.dirtyDir, { recursive: true, mode: 0o700 });
    const replay = await this.usable(await this.journal.load());
    // Dirty copies no record names were never acknowledged to a writer (the
    // mount died before their close returned, or their fsync): nothing to keep.
    const named = new Set(replay.map((e) => e.dirty));
    for (const f of await readdir(this.dirtyDir)) {
      if (!named.has(f) && !f.endsWith('.failed')) await unlink(this.dirtyPath(f)).catch(() => undefined);
    }
    for (const e of replay) {
      this.hold(e);
      this.replayed.add(e.seq);
    }
    if (replay.length) {
      log.info({ pending: replay.length }, 'replaying write-back journal');
      this.scheduleRetry(0);
    }
    return replay;
  }

  /**
   * The records found at start that are still to commit. Of a file's
   * versions only the newest: a close drops the older ones as it is
   * journaled, but a mount may die between the two, and an fsync's record
   * of a file still open (checkpoint) stays until its close. The older
   * ones' digests are kept to recognize them should one have landed
   * unheard. A record whose dirty copy is gone (handed over and committed
   * before the crash; the record's removal was not on disk yet) is dropped;
   * one whose copy was not yet synced when the machine went down is kept
   * aside (see JournalEntry.unsyncedBoot).
   */
  private async usable(found: JournalEntry[]): Promise<JournalEntry[]> {
    // Copies journaled before they were synced, in a boot before this one:
    // they may hold zeros where the writes were, and the node must never get
    // a file the writer did not write. Every record naming one (an fsync's
    // record of the same copy too: the copy changed after that fsync) is
    // dropped, and the copy kept aside.
    const distrusted = new Set(found.filter((e) => e.dirty && e.unsyncedBoot && e.unsyncedBoot !== this.journal.bootId).map((e) => e.dirty));
    for (const dirty of distrusted) {
      const kept = `${this.dirtyPath(dirty)}.failed`;
      const moved = await rename(this.dirtyPath(dirty), kept).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return false;
          throw new Error(`cannot keep aside the dirty copy ${dirty}, journaled before it was synced: ${err.message}`);
        },
      );
      const paths = found.filter((e) => e.dirty === dirty).map((e) => e.path);
      if (moved) log.error({ paths, keptAt: kept }, 'a write-back journaled just before the machine went down cannot be trusted (its dirty copy had not been synced); not committed, its copy kept in the cache dir');
      else log.warn({ paths }, 'a write-back journaled just before the machine went down has no dirty copy; dropped');
    }
    const present: JournalEntry[] = [];
    const syncNow: { entry: JournalEntry; copy: string }[] = [];
    for (const e of found) {
      if (distrusted.has(e.dirty)) {
        await this.journal.remove(e.seq);
        continue;
      }
      // Of this boot and not synced (the mount was killed): its copy is whole; synced now, it stays trusted after a reboot.
      if (e.dirty && e.unsyncedBoot) syncNow.push({ entry: e, copy: this.dirtyPath(e.dirty) });
      if (!e.dirty || (await stat(this.dirtyPath(e.dirty)).then(() => true, () => false))) present.push(e);
      else {
        log.warn({ path: e.path, dirty: e.dirty }, 'a journaled write-back has no dirty copy any more (handed over and committed before the mount stopped, or lost with the machine); dropped');
        await this.journal.remove(e.seq);
      }
    }
    const newest = new Map<string, JournalEntry>();
    for (const e of present) if (!e.dirAttrs && !e.mkdir) newest.set(e.path, e); // oldest first: the last one stays
    // An owner given to an older version is the newest one's too (whose own wins): written before the older records go.
    const owners = new Map<string, Owner>();
    for (const e of present) {
      if (e.dirAttrs || e.mkdir) continue;
      const o = laterOwner(owners.get(e.path), e.owner);
      if (o) owners.set(e.path, o);
    }
    for (const [path, owner] of owners) {
      const latest = newest.get(path)!;
      if (owner.uid === latest.owner?.uid && owner.gid === latest.owner?.gid) continue;
      latest.owner = owner;
      await this.updateOwner(latest);
    }
    const out: JournalEntry[] = [];
    for (const e of present) {
      const latest = newest.get(e.path);
      if (e.dirAttrs || e.mkdir || latest === e) {
        out.push(e);
        continue;
      }
      await this.rememberMayHold(e);
      await this.journal.remove(e.seq);
      if (e.dirty && e.dirty !== latest!.dirty) await unlink(this.dirtyPath(e.dirty)).catch(() => undefined);
    }
    const kept = new Set(out);
    await this.journal
      .syncFound(syncNow.filter(({ entry }) => kept.has(entry)))
      .catch((err) => log.warn({ err: (err as Error).message }, 'cannot sync the dirty copies of replayed write-backs; they are trusted in this boot only'));
    return out;
  }

  /**
   * An fsync of a file still open: a record of its dirty copy, on disk
   * before the fsync returns. A mount killed before the close replays it,
   * committing the copy as the crash left it (what the fsync wrote, at
   * least, as a local disk keeps it). Not pending while the mount runs: the
   * close, or a rename's commit, hands the content over in a record of its
   * own, and this one goes (dropCheckpoint).
   */
  async checkpoint(rec: Omit<JournalEntry, 'seq' | 'closedAt'>): Promise<number> {
    return (await this.journal.add({ ...rec, closedAt: Date.now() }, 'now', this.copyOf(rec.dirty))).seq;
  }

  /**
   * An fsync's record is superseded (the content was handed over) or void
   * (the file was unlinked): gone from the disk before this resolves, as
   * after a power loss it would bring back an unlinked file, or a copy
   * handed over and committed since.
   */
  async dropCheckpoint(seq: number): Promise<void> {
    // Not an error of the call that drops it (the content is handed over, the file unlinked): a start
    // after a crash drops it if its copy is gone, and otherwise commits the same content again.
    await this.journal.remove(seq, { durable: true }).catch((err) => log.warn({ seq, err: (err as Error).message }, "cannot remove an fsync's write-back record from the disk"));
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** The newest pending record for a path (its content is what the mount shows until committed). */
  pendingFor(path: string): JournalEntry | undefined {
    let found: JournalEntry | undefined;
    for (const e of this.byPath.get(path) ?? []) if (!found || e.seq > found.seq) found = e;
    return found;
  }

  /** Settles when the write-back of `path` under way now is over (undefined: none is). */
  busy(path: string): Promise<unknown> | undefined {
    return this.locks.busy(path);
  }

  /** Settles when every write-back under way now is over, and every close under way (one whose commit's answer was lost journals it after). */
  underWay(): Promise<unknown> {
    return Promise.all([this.locks.idle(), ...[...this.closings.values()].flatMap((set) => [...set].map((c) => c.ended))]);
  }

  /** The dirty copy a record names, as the journal is told of it ('': none). */
  private copyOf(dirty: string): string | undefined {
    return dirty ? this.dirtyPath(dirty) : undefined;
  }

  dirtyPath(name: string): string {
    // '' is a record of content kept in memory: it has no copy (and the dir itself is no file to rename or remove).
    if (!name) throw new Error('this content has no dirty copy');
    return join(this.dirtyDir, name);
  }

  /** Removes a dirty copy nobody needs (opened for writing, never changed). */
  async discard(name: string): Promise<void> {
    await unlink(this.dirtyPath(name)).catch(() => undefined);
  }

  /**
   * A new dirty copy's name: a random prefix drawn once for this write-back
   * and a count. As unique across restarts as a random name each time,
   * without asking for randomness per file (~25 us of the JS thread a file
   * in an untar).
   */
  newDirtyName(): string {
    return `${this.dirtyNamePrefix}-${(this.dirtyNames++).toString(36)}`;
  }
  private readonly dirtyNamePrefix = randomBytes(12).toString('hex');
  private dirtyNames = 0;

  /**
   * A writer closed a modified file. With `direct`, the node is asked first:
   * once it confirms, nothing local needs to be durable (close() has not
   * returned yet, so a crash loses nothing acknowledged). When no node
   * answers, or without `direct`, `makeDurable` puts the content in a durable
   * dirty copy (and names it), the record is journaled before this resolves,
   * and it is committed now or queued. While
   * every node is known to be down, none is asked: close() returns as soon
   * as the record is journaled, instead of waiting out a deadline.
   * Resolves with the committed digest, or the queued record's seq, or
   * `removed` when the file was unlinked before anything was committed or
   * queued (an unlink after that drops the record, or removes what landed;
   * the caller sees `closing.removed`: see Closing); rejects
   * with the node's errno when the node refused the write.
   */
  async closeFile(rec: Omit<JournalEntry, 'seq' | 'closedAt'>, closing: Closing, opts: { direct: boolean; makeDurable: () => Promise<string> }): Promise<{ digest: Buffer } | { queued: number } | { removed: true }> {
    let failed: unknown;
    await this.beforeNameChange([rec.path]);
    const reachable = this.mesh.reachable;
    // An older version of this file still queued goes through the journal
    // with this one, which orders them: it may have landed without an answer
    // (then this one's base is that version, not the one it names) or be on
    // its way now. Committed straight from here, this version would meet it
    // on the node as someone else's change and become a conflict copy.
    if (opts.direct && reachable && !this.byPath.has(rec.path)) {
      try {
        const digest = await this.commit({ ...rec, seq: 0, closedAt: Date.now() }, false, closing);
        await this.supersede(rec.path, Infinity);
        return { digest };
      } catch (err) {
        if (err instanceof Removed) return this.removedWhileClosing(rec);
        if (!RETRYABLE.has(errnoOf(err))) {
          await this.refused({ ...rec, dirty: await opts.makeDurable(), seq: 0, closedAt: Date.now() }, err);
          throw err;
        }
        failed = err;
      }
    }
    // Nobody confirmed this version: close() returns once its record is on disk.
    const dirty = await opts.makeDurable();
    const entry = await this.journal.add({ ...rec, dirty, closedAt: Date.now() }, 'now', this.copyOf(dirty));
    if (closing.removed) return this.removedWhileClosing(entry);
    // Pending from the moment it has its seq: a directory's attributes queued after it wait for it.
    this.hold(entry);
    await this.supersede(rec.path, entry.seq);
    if (failed || !reachable) {
      // No node took it just now (or none is up): trying at once would only
      // make close() wait out a deadline. The retries take it from here.
      if (failed) this.progressOf(entry).attempts = 1;
      this.queuedAfter(entry, failed ?? new FsError('EHOSTDOWN', 'no node is reachable'), !!failed);
      return { queued: entry.seq };
    }
    const digest = await this.commitOrQueue(entry, true);
    return digest ? { digest } : { queued: entry.seq };
  }

  /** A close begins: see Closing. Ended by `endClose` whatever happens. */
  beginClose(path: string): Closing {
    let end!: () => void;
    const c: Closing = { path, removed: false, ended: new Promise<void>((resolve) => (end = resolve)) };
    this.closings.add(path, c);
    this.closeEnds.set(c, end);
    return c;
  }

  endClose(c: Closing): void {
    this.closings.remove(c.path, c);
    this.closeEnds.get(c)?.();
    this.closeEnds.delete(c);
  }

  /** A close's content that will be committed nowhere: its record (if it was journaled) and dirty copy go. */
  private async removedWhileClosing(rec: { seq?: number; dirty: string }): Promise<{ removed: true }> {
    if (rec.seq) await this.journal.remove(rec.seq);
    if (rec.dirty) await unlink(this.dirtyPath(rec.dirty)).catch(() => undefined);
    return { removed: true };
  }

  /**
   * Asynchronous write-back: the closed file is journaled and close()
   * returns; its commit starts after a short linger (attribute changes made
   * right after close, as tar and cp -p make them, join the record instead
   * of costing a round trip each) with a bounded number in flight. Waits
   * only while the queue is full.
   */
  async queueFile(rec: Omit<JournalEntry, 'seq' | 'closedAt'>, closing: Closing): Promise<{ queued: number } | { removed: true }> {
    const entry = await this.enqueue(rec, closing);
    if (!entry) return { removed: true };
    await this.supersede(rec.path, entry.seq);
    this.lingering.push(entry);
    this.pump();
    return { queued: entry.seq };
  }

  /**
   * Asynchronous write-back: a new name's record joins the journal and the
   * pending ones once the queue has room (close() or mkdir() waits only
   * while it is full and a node takes work), after times queued for its
   * directory are settled. With no node answering, the queue grows: a node
   * that hangs (accepts connections, answers nothing) keeps a retry running
   * at all times, and waiting on that held close() until the node came back.
   */
  private async enqueue(rec: Omit<JournalEntry, 'seq' | 'closedAt'>, closing?: Closing): Promise<JournalEntry | undefined> {
    while (this.pending.size >= ASYNC_QUEUE && this.running.size > 0 && this.mesh.reachable) await Promise.race(this.running.values()).catch(() => undefined);
    await this.beforeNameChange([rec.path]);
    const entry = await this.journal.add({ ...rec, closedAt: Date.now() }, 'soon', this.copyOf(rec.dirty));
    if (closing?.removed) return void (await this.removedWhileClosing(entry));
    this.hold(entry);
    return entry;
  }

  /**
   * Asynchronous write-back: a directory's mode and times given while files
   * directly in it are still queued (tar sets them as it leaves the
   * directory) are journaled and applied after those files' commits, which
   * would otherwise move its mtime again; nobody waits for the commits.
   * So are those of a directory made through the mount and still queued
   * itself: it is not on the node yet (tar -x of an empty directory while
   * no node answered failed with EROFS). False otherwise: the change can go
   * to the node now.
   */
  async queueDirAttrs(path: string, a: { mode?: number; mtimeNs?: bigint; atimeNs?: bigint }): Promise<boolean> {
    if (this.filesIn(path).length === 0 && !this.mkdirs.has(path)) return false;
    if (await this.amend(path, a)) return true;
    const entry = await this.journal.add(
      {
        path,
        dirty: '',
        expectAbsent: false,
        mode: a.mode ?? 0,
        dirAttrs: { setsMode: a.mode !== undefined },
        mtimeNs: a.mtimeNs,
        atimeNs: a.mtimeNs !== undefined ? (a.atimeNs ?? a.mtimeNs) : undefined,
        closedAt: Date.now(),
      },
      'soon',
    );
    this.hold(entry);
    this.lingering.push(entry);
    this.pump();
    return true;
  }

  /**
   * Asynchronous write-back: a directory made through the mount is journaled
   * and mkdir() returns; the node makes it at once, in the background, and
   * whatever is queued below it waits for that. tar made each directory in
   * a round trip to the node (4–7 ms while commits ran).
   */
  /** `owner`: the one its maker has, for the node to give (see Vfs.madeBy). */
  async queueMkdir(path: string, mode: number, owner?: Owner): Promise<void> {
    const entry = (await this.enqueue({ path, dirty: '', expectAbsent: true, mode: mode & 0o7777, mkdir: true, owner }))!; // (no close: never removed)
    // While no node answers, the retries take it (with what waits below it).
    if (!this.mesh.reachable) return void this.scheduleRetry();
    const run = async (): Promise<unknown> => {
      // Made already (a commit below it needed it first), or the mount stops.
      if (this.pending.get(entry.seq) !== entry || this.closed) return;
      // Not tried once the node stopped answering: the retries take it then (a try would wait out a deadline).
      if (!this.mesh.reachable) return this.scheduleRetry();
      return this.commitOrQueue(entry, false);
    };
    this.mkdirChain = this.mkdirChain.then(run, run);
  }

  /** Whether `path` is a directory made through the mount that the node does not have yet. */
  pendingMkdir(path: string): boolean {
    return this.mkdirs.has(path);
  }

  /** Queued directories at or above `path` made before record `seq`, outermost first. */
  private mkdirsAbove(path: string, seq: number): JournalEntry[] {
    if (this.mkdirs.size === 0) return [];
    const out: JournalEntry[] = [];
    for (let p = path; p !== ''; p = parentOf(p)) {
      const m = this.mkdirs.get(p);
      if (m && m.seq < seq) out.push(m);
    }
    return out.reverse();
  }

  /**
   * The directories queued above a record go to the node first (started
   * now if they wait); throws, retryably, while one of them stays queued. A
   * refused one no longer holds anything up: the node then refuses what was
   * to go in it, which is kept aside.
   */
  private async mkdirsFirst(path: string, seq: number): Promise<void> {
    for (const m of this.mkdirsAbove(path, seq || Infinity)) {
      await this.commitOrQueue(m, false);
      if (this.pending.get(m.seq) === m) throw new DirNotThere(m.path);
    }
  }

  /** Pending file records directly in `dir` queued between two seqs (exclusive): before a directory's attributes, or after them. */
  private filesIn(dir: string, after = 0, before = Infinity): JournalEntry[] {
    const out: JournalEntry[] = [];
    for (const e of this.filesByDir.get(dir) ?? []) if (e.seq > after && e.seq < before) out.push(e);
    return out;
  }

  /** Waits for the commits under way of the files a directory's attributes come after; true once none of them is pending. */
  private async filesBeforeLanded(r: JournalEntry): Promise<boolean> {
    await Promise.all(this.filesIn(r.path, 0, r.seq).map((x) => this.running.get(x.seq)?.catch(() => undefined)));
    return this.filesIn(r.path, 0, r.seq).length === 0;
  }

  /**
   * Names in these paths' directories are about to change (a file closed
   * there, a mkdir, an unlink...): the directory's mtime moves to now, so
   * times queued for it before must not land after the change. Under way,
   * the change waits for them; else they are dropped (a mode stays queued).
   * Every file record and namespace change comes through here first, so a
   * file record never lands before times queued ahead of it.
   */
  async beforeNameChange(paths: readonly string[]): Promise<void> {
    if (this.byPath.size === 0) return;
    for (const dir of new Set(paths.map(parentOf))) {
      for (const r of [...(this.byPath.get(dir) ?? [])]) {
        if (!r.dirAttrs || r.mtimeNs === undefined) continue;
        await this.running.get(r.seq)?.catch(() => undefined);
        // Landed meanwhile, or dropped: nothing left to order.
        if (this.pending.get(r.seq) !== r || r.mtimeNs === undefined) continue;
        r.mtimeNs = undefined;
        r.atimeNs = undefined;
        if (r.dirAttrs.setsMode) await this.journal.update(r);
        else await this.drop(r, false);
      }
    }
  }

  /** A record joins the pending ones; its bytes stay in memory while there is room for them. */
  private hold(e: JournalEntry): void {
    if (log.isLevelEnabled('debug')) log.debug({ path: e.path, ...this.trace(e) }, 'write-back pending');
    this.pending.set(e.seq, e);
    this.indexPath(e);
    if (e.mkdir) this.mkdirs.set(e.path, e);
    if (!e.data) return;
    // Bytes stored in the record are its only content here: always held.
    if (e.dirty && this.heldBytes + e.data.length > HOLD_TOTAL) e.data = undefined;
    else this.heldBytes += e.data.length;
  }

  /** Whether an asynchronously closed file of this size can be queued with its bytes in its record (no dirty copy). */
  takesInRecord(bytes: number): boolean {
    return bytes <= IN_RECORD_BYTES && this.heldBytes + bytes <= HOLD_TOTAL;
  }

  /** A pending record's content: from its record or its dirty copy. */
  async pendingContent(e: Pick<JournalEntry, 'path' | 'dirty' | 'data'>): Promise<Buffer> {
    if (!e.dirty && !e.data) throw new FsError('EISDIR', `"${e.path}" is a directory`);
    if (!e.dirty) return e.data!;
    return readFile(this.dirtyPath(e.dirty));
  }

  /** Puts a pending record's content in a new file (0600, never over an existing one). */
  async copyPending(e: Pick<JournalEntry, 'path' | 'dirty' | 'data'>, file: string): Promise<void> {
    if (!e.dirty) await writeFile(file, await this.pendingContent(e), { flag: 'wx', mode: 0o600 });
    else await copyFile(this.dirtyPath(e.dirty), file, constants.COPYFILE_EXCL);
  }

  /** A pending record under its path (byPath) and, a file's, under its directory (filesByDir). */
  private indexPath(e: JournalEntry): void {
    this.byPath.add(e.path, e);
    if (!e.dirAttrs) this.filesByDir.add(parentOf(e.path), e);
  }

  private unindexPath(e: JournalEntry): void {
    this.byPath.remove(e.path, e);
    if (!e.dirAttrs) this.filesByDir.remove(parentOf(e.path), e);
  }

  /** A record is done with (committed, dropped or refused). */
  private forget(e: JournalEntry): void {
    if (this.pending.get(e.seq) !== e) return;
    this.pending.delete(e.seq);
    // A directory's attributes waiting for this file may go now, whoever committed it (fsync, a flush).
    if (!e.dirAttrs && this.lingering.length && this.byPath.has(parentOf(e.path))) queueMicrotask(() => this.pump());
    this.progress.delete(e.seq);
    this.unindexPath(e);
    if (this.mkdirs.get(e.path) === e) this.mkdirs.delete(e.path);
    if (e.data) this.heldBytes -= e.data.length;
    e.data = undefined;
    e.manifest = undefined;
    e.sentAhead = undefined;
    e.draft = undefined;
  }

  /**
   * Starts the lingering records whose time has come, as many calls as may
   * run at once: small files in CommitMany batches, the others one by one.
   */
  private pump(): void {
    if (this.pumpTimer || this.closed) return;
    const now = Date.now();
    let gatherUntil: number | undefined;
    while (this.pumped < ASYNC_RUNNING) {
      while (this.lingering.length) {
        const e = this.lingering[0]!;
        if (this.pending.has(e.seq) && !this.running.has(e.seq)) break;
        this.lingering.shift();
      }
      const first = this.lingering[0];
      if (!first || first.closedAt + this.linger > now) break;
      const ready: JournalEntry[] = [];
      let attrs: JournalEntry | undefined;
      for (let i = 0; i < this.lingering.length && ready.length < MAX_COMMIT_BATCH; i++) {
        const e = this.lingering[i]!;
        if (e.closedAt + this.linger > now) break;
        if (!this.pending.has(e.seq) || this.running.has(e.seq)) continue;
        // A directory's attributes go on their own once the files before them
        // are done (the pump runs again as each call ends); the files after
        // them in the queue found them without times (beforeNameChange).
        if (e.dirAttrs) attrs ??= this.filesIn(e.path, 0, e.seq).length ? undefined : e;
        else ready.push(e);
      }
      // Small files wait while few calls carry them: what closes meanwhile goes in the next batch.
      let filesWait = ready.length === 0 || (this.batchable(ready[0]!) && this.pumpedBatches >= ASYNC_BATCHES);
      // A few files, with more closing behind them, wait one linger more: one call for many (the
      // timer fires as the first of them becomes due, when it alone is).
      if (!filesWait && ready.length < GATHER_FILES && this.batchable(ready[0]!) && this.lingering.length > ready.length + (attrs ? 1 : 0) && ready[0]!.closedAt + 2 * this.linger > now) {
        filesWait = true;
        gatherUntil = ready[0]!.closedAt + 2 * this.linger;
      }
      if (filesWait && !attrs) break;
      const unit = filesWait ? [attrs!] : this.units(ready)[0]!;
      const taken = new Set(unit);
      this.lingering = this.lingering.filter((e) => !taken.has(e));
      const isBatch = this.batchable(unit[0]!);
      this.pumped++;
      if (isBatch) this.pumpedBatches++;
      void Promise.allSettled(this.startUnit(unit)).finally(() => {
        this.pumped--;
        if (isBatch) this.pumpedBatches--;
        this.pump();
      });
    }
    // A record that is due but waits (a directory's attributes) sets no timer: the commits it waits for run the pump as they end.
    const next = this.lingering.find((e) => e.closedAt + this.linger > now);
    const due = gatherUntil ?? (next ? next.closedAt + this.linger : undefined);
    if (due !== undefined && this.pumped < ASYNC_RUNNING) {
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = undefined;
        this.pump();
      }, due - now);
      this.pumpTimer.unref();
    }
  }

  private get linger(): number {
    return this.opts.lingerMs ?? LINGER_MS;
  }

  /** A record that can go in a CommitMany: its small content is in memory and nothing about it is uncertain. */
  private batchable(e: JournalEntry): boolean {
    return !!e.data && !this.batchUnsupported && !this.replayed.has(e.seq);
  }

  /**
   * Splits records (in order) into what one call commits: runs of batchable
   * records, within a batch's limits and one version per path, or a single
   * record.
   */
  private units(list: JournalEntry[]): JournalEntry[][] {
    const out: JournalEntry[][] = [];
    let batch: JournalEntry[] = [];
    let bytes = 0;
    const paths = new Set<string>();
    const close = (): void => {
      if (batch.length) out.push(batch);
      batch = [];
      bytes = 0;
      paths.clear();
    };
    for (const e of list) {
      if (!this.batchable(e)) {
        close();
        out.push([e]);
        continue;
      }
      if (batch.length >= MAX_COMMIT_BATCH || bytes + e.data!.length > MAX_COMMIT_BATCH_BYTES || paths.has(e.path)) close();
      batch.push(e);
      bytes += e.data!.length;
      paths.add(e.path);
    }
    close();
    return out;
  }

  /** Starts one call's worth of records; one outcome per record (its digest, or undefined when it stays queued). */
  private startUnit(unit: JournalEntry[]): Promise<Buffer | undefined>[] {
    // Records started meanwhile by someone else have that attempt as their outcome.
    const fresh = unit.filter((e) => !this.running.has(e.seq));
    if (fresh.length < 2) return unit.map((e) => this.commitOrQueue(e, false));
    const started = unit.filter((e) => this.running.has(e.seq)).map((e) => this.commitOrQueue(e, false));
    const all = this.commitBatch(fresh);
    const batched = fresh.map((e) => {
      const p = this.run(
        e,
        all.then((m) => {
          const r = m.get(e.seq)!;
          if (r instanceof Error) throw r;
          return r;
        }),
      );
      return this.outcome(e, p, false);
    });
    return [...started, ...batched];
  }

  /**
   * Attribute changes to a closed file whose commit has not started yet join
   * its record. Undefined when there is no such record (none, or its commit
   * is under way): the change must then go to the node.
   */
  async amend(path: string, a: { mode?: number; owner?: Owner; mtimeNs?: bigint; atimeNs?: bigint }): Promise<JournalEntry | undefined> {
    const e = this.pendingFor(path);
    // A queued directory's times must land after what goes in it: a record of their own (queueDirAttrs).
    if (!e || e.mkdir || this.running.has(e.seq)) return undefined;
    // An owner joins a file's record only (a directory's is given by a chown of its own).
    if (a.owner && e.dirAttrs) return undefined;
    // A directory's record older than a file queued in it: newer times must land after that file, in a record of their own.
    if (e.dirAttrs && this.filesIn(path, e.seq).length) return undefined;
    const mode = a.mode !== undefined ? a.mode & 0o7777 : e.mode;
    const mtimeNs = a.mtimeNs ?? e.mtimeNs;
    const atimeNs = a.atimeNs ?? e.atimeNs;
    // A directory's record that set no mode holds a placeholder there: a mode given now is news.
    const newMode = !!e.dirAttrs && a.mode !== undefined && !e.dirAttrs.setsMode;
    const owner = a.owner ? laterOwner(e.owner, a.owner) : e.owner;
    // The record says so already (tar's chmod to the mode the file was created with): no write.
    if (!newMode && mode === e.mode && mtimeNs === e.mtimeNs && atimeNs === e.atimeNs && owner?.uid === e.owner?.uid && owner?.gid === e.owner?.gid) return e;
    // Changed before any await: a commit that starts from here on sends the new values.
    if (newMode) e.dirAttrs!.setsMode = true;
    e.mode = mode;
    e.owner = owner;
    e.mtimeNs = mtimeNs;
    e.atimeNs = atimeNs;
    await this.journal.update(e);
    return e;
  }

  private conflictListeners: ((path: string) => void)[] = [];
  private landedListeners: ((path: string, what: ChangeKind) => void)[] = [];
  private refusedListeners: ((seq: number, path: string, err: Error) => void)[] = [];

  /** Called when the node refused a journaled file's record (its bytes were set aside). */
  onRefused(fn: (seq: number, path: string, err: Error) => void): void {
    this.refusedListeners.push(fn);
  }

  /**
   * Called with the path a file's write-back landed at once the mount shows
   * the node's entry ('attrs'; a new conflict copy: 'entry'), and with each
   * other path the commit changed (see CommitReply.also).
   */
  onLanded(fn: (path: string, what: ChangeKind) => void): void {
    this.landedListeners.push(fn);
  }

  /** Called with a path whose write-back became a conflict copy (the node kept its own version there). */
  onConflict(fn: (path: string) => void): void {
    this.conflictListeners.push(fn);
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
    const older = [...(this.byPath.get(path) ?? [])].filter((e) => e.seq < seq && !e.dirAttrs && !e.mkdir);
    if (older.length === 0) return;
    // Under the path's lock: a commit under way ends first, and the newer
    // version's commit waits until the digests of versions that may have
    // landed unheard are known (they are the bases it may meet on the node).
    await this.locks.with(path, async () => {
      // An owner given to a version that never went is the newer one's too (whose own, given later,
      // wins): written into its record before the older records go. (Superseded by a version
      // committed straight from close, none was pending when that went.)
      const newer = this.pending.get(seq);
      const owner = older.filter((e) => this.pending.has(e.seq)).reduce<Owner | undefined>((o, e) => laterOwner(o, e.owner), undefined);
      if (newer && owner) {
        newer.owner = laterOwner(owner, newer.owner);
        await this.updateOwner(newer);
      }
      for (const e of older) await this.dropOne(e);
    });
  }

  /**
   * dropOlder for a close whose version is safe already (committed, or its
   * record journaled): a failure there (the database refusing a removal) is
   * logged, not the close's. An older record left in the journal is
   * superseded again when the next mount starts.
   */
  private async supersede(path: string, seq: number): Promise<void> {
    await this.dropOlder(path, seq).catch((err: unknown) => log.warn({ path, err: (err as Error).message }, 'older versions of a closed file could not be dropped from the journal'));
  }

  /** A record given the owner of older ones (see dropOlder): the database refusing it (a full disk) leaves it in memory only, as said. */
  private async updateOwner(e: JournalEntry): Promise<void> {
    await this.journal.update(e).catch((err: unknown) => log.warn({ path: e.path, err: (err as Error).message }, 'the owner given to an older version of a queued file is not journaled with the newer one: a mount killed before its commit loses it'));
  }

  /** A superseded version goes (see dropOlder): what was made from it inherits its base. */
  private async dropOne(e: JournalEntry): Promise<void> {
    if (!this.pending.has(e.seq)) return;
    // Out of the pending ones before anything is awaited: no retry picks it up
    // (it would read a dirty copy about to go).
    const content = { path: e.path, dirty: e.dirty, data: e.data };
    if (log.isLevelEnabled('debug')) log.debug({ path: e.path, ...this.trace(e) }, 'write-back superseded by a newer version');
    this.forget(e);
    // Tried already, answer lost: the node may hold it. Keep its digest to recognize it.
    if (this.replayed.has(e.seq)) await this.rememberMayHold(content);
    await this.drop(e, true);
    for (const r of this.pending.values()) if (r.baseSeq === e.seq) r.baseSeq = e.baseSeq;
    for (const fn of this.supersededListeners) fn(e.seq, e.baseSeq);
  }

  private async rememberMayHold(e: Pick<JournalEntry, 'path' | 'dirty' | 'data'>): Promise<void> {
    const digest = await (async () => {
      if (!e.dirty) return chunkBuffer(e.data!, DEFAULT_CHUNKING).digest;
      const dirty = this.dirtyPath(e.dirty);
      if ((await stat(dirty)).size <= INLINE_BYTES) return chunkBuffer(await readFile(dirty), DEFAULT_CHUNKING).digest;
      return (await this.hasher.hash(dirty)).manifest.digest;
    })().catch(() => undefined);
    if (!digest) return;
    this.mayHold.set(e.path, [...(this.mayHold.get(e.path) ?? []), digest]);
  }

  /** The digest a queued record had once it landed on a node (undefined: not landed, or long ago). */
  landedDigest(seq: number): Buffer | undefined {
    return this.landed.get(seq);
  }

  /** The base to commit against: a record made from a queued version that has landed since is based on that version. */
  private baseOf(e: JournalEntry): { baseDigest?: Buffer; expectAbsent: boolean } {
    const landed = e.baseSeq !== undefined ? this.landed.get(e.baseSeq) : undefined;
    return landed ? { baseDigest: landed, expectAbsent: false } : { baseDigest: e.baseDigest, expectAbsent: e.expectAbsent };
  }

  /** The node refused (permissions, no space, a directory in the way): keep the bytes aside where an admin can find them. */
  private async refused(e: JournalEntry, err: unknown): Promise<void> {
    this.stats.failed++;
    const data = e.data;
    // Out of the pending ones at once: what waits for it (its directory's attributes) goes on.
    this.forget(e);
    if (e.dirAttrs || e.mkdir) {
      await this.journal.remove(e.seq);
      log.error({ path: e.path, errno: errnoOf(err), err: (err as Error).message }, e.mkdir ? 'the node refused to make a directory made through the mount; what was written in it is kept in the cache dir' : "the node refused a directory's mode or times");
      if (e.mkdir) {
        // It is not shown any more; what the node has at that path is (as after a conflict).
        this.meta.dropShownOnly(e.path);
        for (const fn of this.conflictListeners) fn(e.path);
      }
      return;
    }
    const kept = `${this.dirtyPath(e.dirty || this.newDirtyName())}.failed`;
    if (e.dirty) await rename(this.dirtyPath(e.dirty), kept).catch(() => undefined);
    else await writeFile(kept, data!, { mode: 0o600 }).catch((err) => log.error({ path: e.path, err: (err as Error).message }, 'the refused bytes could not be kept aside'));
    if (e.seq) await this.journal.remove(e.seq);
    const why = errnoOf(err) === 'EFBIG' ? 'write-back refused: the file is too large' : 'write-back refused by the node';
    log.error({ path: e.path, errno: errnoOf(err), keptAt: kept, err: (err as Error).message }, `${why}; the written bytes are kept in the cache dir`);
    if (e.seq) for (const fn of this.refusedListeners) fn(e.seq, e.path, err as Error);
    if (!this.pendingFor(e.path)) {
      // Not shown any more (a new file the node refused was never there): what the node has at that path is.
      this.meta.dropShownOnly(e.path);
      for (const fn of this.conflictListeners) fn(e.path);
    }
  }

  /** Resolves with the committed digest, or undefined when the record stays queued. */
  private commitOrQueue(e: JournalEntry, surfaceRefusal: boolean): Promise<Buffer | undefined> {
    const p = this.running.get(e.seq) ?? this.run(e, this.commit(e, this.replayed.has(e.seq)));
    return this.outcome(e, p, surfaceRefusal);
  }

  /** Marks a record as being committed until `p` settles. */
  private run(e: JournalEntry, p: Promise<Buffer>): Promise<Buffer> {
    const pr = this.progressOf(e);
    pr.attempts++;
    pr.step = 'waiting for its turn';
    const q = p.finally(() => this.running.delete(e.seq));
    this.running.set(e.seq, q);
    return q;
  }

  private progressOf(e: JournalEntry): { attempts: number; step: string; lastError?: string } {
    let pr = this.progress.get(e.seq);
    if (!pr) {
      pr = { attempts: 0, step: '' };
      // A direct commit (seq 0) and a record already done with are not shown.
      if (e.seq && this.pending.get(e.seq) === e) this.progress.set(e.seq, pr);
    }
    return pr;
  }

  private step(e: JournalEntry, step: string): void {
    const pr = this.progress.get(e.seq);
    if (pr) pr.step = step;
  }

  /** Pending records, oldest first (at most `limit`): what each waits for and how its last attempt failed. */
  pendingRecords(limit = 20): PendingRecord[] {
    const now = Date.now();
    return [...this.pending.values()]
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit)
      .map((e) => {
        const pr = this.progress.get(e.seq);
        return { seq: e.seq, path: e.path, ageMs: now - e.closedAt, state: this.running.has(e.seq) ? pr?.step || 'committing' : 'queued', attempts: pr?.attempts ?? 0, lastError: pr?.lastError };
      });
  }

  /** What a commit attempt means for its record: landed, still queued (no node), or refused by the node. */
  private outcome(e: JournalEntry, p: Promise<Buffer>, surfaceRefusal: boolean): Promise<Buffer | undefined> {
    return p.catch(async (err) => {
      if (err instanceof Superseded) return undefined;
      if (err instanceof Waiting) {
        // The pump takes it again once they are (its timer, or the end of the commits it waits for).
        this.lingering.push(e);
        this.pump();
        return undefined;
      }
      if (RETRYABLE.has(errnoOf(err)) || (e.seq && NODE_FULL.has(errnoOf(err)))) {
        // Held back by its directory: never sent, so it cannot have landed.
        this.queuedAfter(e, err, !(err instanceof DirNotThere));
        return undefined;
      }
      await this.refused(e, err);
      if (surfaceRefusal) throw err;
      return undefined;
    });
  }

  /** No node took the record (an attempt failed, or none was made): it stays queued for the retries. */
  private queuedAfter(e: JournalEntry, err: unknown, attempted = true): void {
    const errno = errnoOf(err);
    this.progressOf(e).lastError = `${errno}: ${(err as Error).message}`;
    // A node out of room may still take a smaller file: the retries go on to the next record.
    if (!NODE_FULL.has(errno)) this.unreachable = true;
    // The attempt may have landed without an answer: the next one checks first.
    if (e.seq && attempted) this.replayed.add(e.seq);
    // Once per outage at warn level; status shows the queue as it grows.
    if (this.quietUntilDrained) log.debug({ path: e.path, errno, pending: this.pending.size }, 'write-back still queued');
    else log.warn({ path: e.path, errno, pending: this.pending.size }, `write-back queued: ${NODE_FULL.has(errno) ? 'the node has no room for it' : 'no node reachable'}; it will be retried`);
    this.quietUntilDrained = true;
    this.scheduleRetry();
  }

  private async commit(e: JournalEntry, replayed: boolean, closing?: Closing): Promise<Buffer> {
    await this.holds.get(e.seq);
    // Directories queued above it first, before its path lock is taken: a
    // directory's attributes hold that directory's lock while they wait for
    // the files in it.
    await this.mkdirsFirst(e.path, e.seq);
    return this.locks.with(e.path, async () => {
      // Dropped while it waited for its turn: a newer version went (or goes) instead.
      if (e.seq && !this.pending.has(e.seq)) throw new Superseded();
      // Unlinked while it waited (the unlink holds this lock while the node takes it).
      if (closing?.removed) throw new Removed(e.path);
      if (closing) closing.sent = true;
      return e.dirAttrs ? this.commitDirAttrs(e) : e.mkdir ? this.commitMkdir(e) : this.commitNow(e, replayed);
    });
  }

  /** A directory's queued mode and times, once the files queued before them are on the node. */
  private async commitDirAttrs(e: JournalEntry): Promise<Buffer> {
    if (!(await this.filesBeforeLanded(e))) throw new Waiting(e.path);
    this.step(e, 'setting attributes');
    const replies = [];
    if (e.dirAttrs!.setsMode) replies.push(await this.mesh.mutate({ chmod: { path: e.path, mode: e.mode & 0o7777 } }));
    if (e.mtimeNs !== undefined) replies.push(await this.mesh.mutate({ utimens: { path: e.path, mtime: toTimespec(e.mtimeNs), atime: toTimespec(e.atimeNs ?? e.mtimeNs), atimeNow: false, mtimeNow: false } }));
    await this.answered(e, replies.flatMap((r) => this.meta.fromAnswer(r.entries.map((x) => [x.name, entryFromWire(x)] as const), r.by, r.generation)));
    return Buffer.alloc(0);
  }

  /** A directory's record is done: it leaves the journal in the write that records what the node answered. */
  private async answered(e: JournalEntry, entries: readonly (readonly [string, MetaEntry])[]): Promise<void> {
    this.forget(e);
    await this.meta.putMany(entries, (b) => this.journal.removeIn(b, e.seq));
  }

  /** A directory made through the mount, made on the node. */
  private async commitMkdir(e: JournalEntry): Promise<Buffer> {
    this.step(e, 'making the directory');
    let r: { entries: WEntryOut[]; by: string; generation: number };
    let existed = false;
    try {
      r = await this.mesh.mutate({ mkdir: { path: e.path, mode: e.mode & 0o7777, owner: e.owner } });
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw err;
      // Made before the mount died (its answer lost) or by someone else meanwhile: a directory there is as good.
      const there = await this.mesh.stat(e.path);
      if (!there.attr || !isDir(there.attr.mode)) throw err;
      r = { entries: [{ ...there, name: e.path }], by: '', generation: 0 };
      existed = true;
    }
    // Entries showing changes of ours still queued (its directory's times) stay as shown.
    const entries = this.meta.fromAnswer(
      r.entries.map((x) => [x.name, entryFromWire(x)] as const).filter(([path]) => path === e.path || !this.byPath.has(path)),
      r.by,
      r.generation,
    );
    for (const [path, entry] of entries) {
      const was = this.meta.get(path);
      // Shown with a number of the mount's until now: it keeps it (tar compares them), and
      // like its directory, the times it was shown with (see keepDirTimes).
      if (path === e.path) this.meta.keepIno(path, was, entry);
      this.meta.keepDirTimes(path, was, entry);
    }
    await this.answered(e, entries);
    // Someone else's directory may hold entries this mount has never seen: listed again when next looked in.
    if (existed) await this.meta.unlist(e.path);
    return Buffer.alloc(0);
  }

  private rememberLanded(seq: number, digest: Buffer): void {
    this.landed.set(seq, digest);
    if (this.landed.size > 10_000) this.landed.delete(this.landed.keys().next().value as number);
  }

  private async commitNow(e: JournalEntry, replayed: boolean): Promise<Buffer> {
    this.step(e, 'reading its content');
    const { manifest, data } = await this.content(e);
    // A replayed record may have been committed just before the mount died:
    // if the node already holds exactly this content, it is done (the node
    // would also accept it again; this saves the upload).
    if (replayed) this.step(e, 'checking what the node holds');
    const current = replayed ? await this.mesh.stat(e.path).catch((err) => (errnoOf(err) === 'ENOENT' ? undefined : Promise.reject(err))) : undefined;
    const currentDigest = current?.digest?.length ? Buffer.from(current.digest) : undefined;
    let reply: WCommitReplyOut;
    let by = ''; // the node that answered: its generations are the ones that count
    if (currentDigest?.equals(manifest.digest)) {
      reply = { conflict: false, conflictPath: '', entry: current!, also: [], generation: 0, ownerErrno: '' };
    } else {
      // Told before its upload and commit: a chunk list one message cannot hold (about 1.3 TiB of holes, or 340 GiB of data).
      if (manifest.chunks.length * WIRE_BYTES_PER_CHUNK + 64 * 1024 > MAX_MESSAGE_BYTES) {
        throw new FsError('EFBIG', `"${e.path}" has ${manifest.chunks.length} chunks: more than one commit can carry`);
      }
      const req = this.request(e, manifest, data);
      if (!data) {
        this.step(e, 'uploading');
        await this.upload(this.dirtyPath(e.dirty), manifest, { sent: e.sentAhead, to: e.draft ? { draft: e.draft, path: e.path } : undefined });
      }
      // After a node said it lacks chunks: the node they were sent to, asked again.
      let at: string | undefined;
      let lackedNone = false;
      for (let attempt = 1; ; attempt++) {
        this.step(e, 'committing');
        try {
          reply = await this.mesh.call(
            `commit ${e.path}`,
            (c) => {
              by = c.endpoint;
              return c.commit(req, this.commitDeadline(1, manifest.size));
            },
            { at },
          );
          break;
        } catch (err) {
          if (data || errnoOf(err) !== 'ENOENT') throw err;
          // An ENOENT the node says is about a chunk is never a refusal of the
          // file. From an older node, one after it said it lacks none is about
          // the file (its directory gone).
          if (lackedNone && !lacksChunk(err)) throw err;
          // The chunks went to a replica that died, and the commit to another,
          // which lacks some. Asked again, that node names them, they go to
          // it, and the commit goes to it again. Asking any node instead
          // asked one that had them (the other replica, back), and the file
          // was refused. When it lacks none, the commit is sent to it once
          // more (they may have come meanwhile, or it counted a chunk it then
          // could not read).
          this.step(e, 'uploading again');
          at = by;
          // (That node gone meanwhile: EHOSTDOWN, and the record is tried again later, unpinned.)
          lackedNone = (await this.upload(this.dirtyPath(e.dirty), manifest, { at })) === 0;
          // Still lacking them after that: tried again later, never set aside for it.
          if (attempt >= COMMIT_UPLOAD_ATTEMPTS) throw new FsError('EAGAIN', `the node keeps losing the chunks of "${e.path}": ${(err as Error).message}`);
          if (!lackedNone) log.info({ path: e.path, node: at, err: (err as Error).message }, 'the node committing lacks chunks uploaded before: sent them again');
        }
      }
    }
    return this.settleLanded(e, manifest, reply, by);
  }

  /**
   * Commits several small files in one call, holding each one's path lock.
   * One result per record: its digest, or the error it met (the node's
   * errno for that file, or the call's failure for all of them).
   */
  private async commitBatch(all: JournalEntry[]): Promise<Map<number, Buffer | Error>> {
    // Before any path lock is taken (see commit()).
    const early = new Map<number, Buffer | Error>();
    const batch: JournalEntry[] = [];
    for (const e of all) {
      try {
        await this.holds.get(e.seq);
        await this.mkdirsFirst(e.path, e.seq);
        batch.push(e);
      } catch (err) {
        early.set(e.seq, err as Error);
      }
    }
    if (batch.length === 0) return early;
    return this.locks.withMany(
      batch.map((e) => e.path),
      async () => {
        const out = new Map<number, Buffer | Error>(early);
        const live: { e: JournalEntry; manifest: Manifest; data?: Buffer }[] = [];
        for (const e of batch) {
          // Dropped while it waited for its turn: a newer version went (or goes) instead.
          if (!this.pending.has(e.seq)) out.set(e.seq, new Superseded());
          else live.push({ e, ...(await this.content(e)) });
        }
        if (live.length === 0) return out;
        let reply: WCommitManyReplyOut;
        let by = '';
        try {
          for (const x of live) this.step(x.e, `committing (a batch of ${live.length})`);
          const reqs = live.map((x) => this.request(x.e, x.manifest, x.data));
          reply = await this.mesh.call(`commit of ${live.length} files`, (c) => {
            by = c.endpoint;
            return c.commitMany(reqs, this.commitDeadline(live.length, live.reduce((n, x) => n + x.manifest.size, 0)));
          });
        } catch (err) {
          if (!isUnimplemented(err)) {
            for (const x of live) out.set(x.e.seq, err as Error);
            return out;
          }
          // An older node: one call per file from now on.
          this.batchUnsupported = true;
          log.info('the node has no CommitMany: committing one file per call');
          for (const x of live) {
            try {
              out.set(x.e.seq, await this.commitNow(x.e, false));
            } catch (err2) {
              out.set(x.e.seq, err2 as Error);
            }
          }
          return out;
        }
        // Settled side by side: their database writes go together.
        await Promise.all(
          live.map(async (x, i) => {
            const o = reply.outcomes[i];
            try {
              if (!o?.reply) throw new FsError(o?.errno || 'EIO', o?.message || 'the node sent no outcome for this file');
              out.set(x.e.seq, await this.settleLanded(x.e, x.manifest, o.reply, by));
            } catch (err) {
              out.set(x.e.seq, err as Error);
            }
          }),
        );
        return out;
      },
    );
  }

  /**
   * A commit may take the configured deadline plus the time the node needs
   * to assemble and fsync what it writes (at a slow disk's pace) and a
   * little per file of a batch. Not a fixed 30 s floor: a small file's close
   * with an unreachable node then queues after `--deadline`, as every other
   * call gives up after it.
   */
  private commitDeadline(files: number, bytes: number): number {
    return this.opts.deadlineMs + Math.ceil(bytes / SLOW_NODE_BYTES_PER_MS) + COMMIT_MS_PER_FILE * (files - 1);
  }

  /**
   * Follows a file written front to back from empty: its chunk list is made
   * as it is written and its chunks are sent ahead of the close.
   */
  writeAhead(file: () => string, path: () => string): WriteAhead {
    // A copy of content the node holds (cp within the workspace) sends nothing.
    const send: SendChunks = (chunks, bodyOf, to) => this.sendMissing(' ahead', chunks, bodyOf, to);
    return new WriteAhead(DEFAULT_CHUNKING, send, file, path);
  }

  /** The record's content: its chunk list, and its bytes when small enough to travel inside the commit. */
  private async content(e: JournalEntry): Promise<{ manifest: Manifest; data?: Buffer }> {
    if (e.data) return { manifest: chunkBuffer(e.data, DEFAULT_CHUNKING), data: e.data };
    if (e.manifest) return { manifest: e.manifest }; // made while it was written
    const dirty = this.dirtyPath(e.dirty);
    // Small files are chunked here (one chunk, microseconds); big ones on the hashing thread.
    const data = (await stat(dirty)).size <= INLINE_BYTES ? await readFile(dirty) : undefined;
    return { manifest: data ? chunkBuffer(data, DEFAULT_CHUNKING) : (await this.hasher.hash(dirty)).manifest, data };
  }

  private request(e: JournalEntry, manifest: Manifest, data: Buffer | undefined): Omit<WCommitRequest, 'workspace'> {
    const base = this.baseOf(e);
    return {
      path: e.path,
      baseDigest: base.baseDigest ?? Buffer.alloc(0),
      expectAbsent: base.expectAbsent,
      digest: manifest.digest,
      size: manifest.size,
      chunks: chunksToWire(manifest.chunks),
      mode: S_IFREG | (e.mode & 0o7777), // with its type: 0000 is a mode too (CommitRequest.mode)
      mtime: e.mtimeNs !== undefined ? toTimespec(e.mtimeNs) : undefined,
      atime: e.atimeNs !== undefined ? toTimespec(e.atimeNs) : undefined,
      clientId: this.opts.clientId,
      inline: data ? manifest.chunks.map((c) => ({ hash: c.hash, data: data.subarray(c.offset, c.offset + c.length) })) : [],
      // Versions of ours whose commit answers were lost may be what the node holds now: not a conflict.
      alsoBases: this.mayHold.get(e.path) ?? [],
      draft: e.draft ?? '',
      // A node that takes it gives the file this owner before it takes its name (an older one ignores it).
      owner: e.owner,
    };
  }

  /** A record's place in its file's history, for the logs: what it was made from, and whether it came from an earlier run. */
  private trace(e: JournalEntry): Record<string, unknown> {
    const base = this.baseOf(e);
    return { seq: e.seq, baseSeq: e.baseSeq, based: base.expectAbsent ? 'no file' : base.baseDigest?.length ? hex(base.baseDigest).slice(0, 16) : 'nothing said', replayed: this.replayed.has(e.seq) };
  }

  /** The node took the record (or kept it as a conflict copy): metadata, journal and cache follow. */
  private async settleLanded(e: JournalEntry, manifest: Manifest, reply: WCommitReplyOut, by: string): Promise<Buffer> {
    // Content kept in memory has no dirty copy: the cache keeps its chunks from the bytes.
    const from = e.dirty ? { file: this.dirtyPath(e.dirty) } : { data: e.data! };
    const committedPath = reply.conflict ? reply.conflictPath : e.path;
    // The owner went with the commit. A file without it (an older node ignores it; a replayed
    // record found its content on the node, with no commit made) gets it by a chown now, before
    // the record goes: a mount killed meanwhile gives it again after its replay. One the node
    // said it cannot give is not asked for again.
    if (e.owner && reply.ownerErrno) this.ownerNotGiven({ path: committedPath, ...e.owner, errno: reply.ownerErrno }, 'the node cannot give a written-back file the owner given to it');
    const owned = !e.owner || reply.ownerErrno || hasOwner(reply.entry?.attr ?? undefined, e.owner) ? undefined : await this.giveOwner(e, committedPath, reply.conflict);
    this.step(e, 'recording the commit');
    const landed = entryFromWire(owned?.entry ?? reply.entry!);
    // A version whose close returned before it landed: what programs saw of it then stays (see keepIno).
    const shown = this.meta.get(committedPath);
    if (e.seq && !reply.conflict && shown && isLocalIno(shown.attr.ino)) this.meta.keepIno(committedPath, shown, landed);
    const settling = this.meta.settle(committedPath, landed, { digest: manifest.digest, chunks: manifest.chunks }, (b) => {
      if (e.seq) this.journal.removeIn(b, e.seq);
    });
    // A journaled record leaves the journal in that write: the commit counts
    // once it is on disk. A record committed straight from close() was never
    // journaled, and the entry is in memory already: close() need not wait
    // for the disk. A mount that dies before the write lands hears of the
    // file again from the change feed, whose position is written after it.
    const recorded = e.seq ? await settling : (this.track(settling.then(() => undefined)), true);
    if (by) this.meta.markOwnCommit(committedPath, by, reply.generation);
    if (owned) this.meta.markOwnCommit(committedPath, owned.by, owned.generation);
    // What else the commit changed (the file's other names, the directories); a path with a change of ours still queued shows that.
    // Only under directories the mount knows, as the change feed does.
    const carried = (reply.also ?? []).filter((x) => !this.byPath.has(x.name) && this.meta.get(parentOf(x.name)) !== undefined);
    const also = this.meta.fromAnswer(carried.map((x) => [x.name, entryFromWire(x)] as const), by, reply.generation).map(([path, entry]) => ({ path, entry, was: this.meta.get(path) }));
    if (also.length > 0) {
      // Landed after its close returned: the directories keep the times they were shown with (see keepDirTimes).
      if (e.seq) for (const x of also) this.meta.keepDirTimes(x.path, x.was, x.entry);
      this.track(this.meta.putMany(also.map((x) => [x.path, x.entry] as const)));
    }
    for (const fn of this.landedListeners) fn(committedPath, reply.conflict ? 'entry' : 'attrs');
    for (const x of also) for (const fn of this.landedListeners) fn(x.path, x.was ? changeKind(x.was, x.entry) : 'entry');
    this.forget(e);
    this.mayHold.delete(e.path);
    if (e.seq) this.rememberLanded(e.seq, manifest.digest);
    // Until its record's removal is on disk, a mount killed now replays the record from its dirty
    // copy (and finds the node holds it): the copy stays, and the next start removes it.
    if (recorded) this.track(this.keepChunks(from, manifest.chunks, manifest.size));
    if (reply.conflict) {
      this.stats.conflicts++;
      for (const fn of this.conflictListeners) fn(e.path);
      log.warn({ path: e.path, conflictPath: reply.conflictPath, ...this.trace(e) }, 'write-back conflict: the file changed on the node since it was opened; this version was kept beside it');
    } else {
      this.stats.committed++;
      if (log.isLevelEnabled('debug')) log.debug({ path: e.path, size: manifest.size, chunks: manifest.chunks.length, digest: hex(manifest.digest).slice(0, 16), ...this.trace(e) }, 'written back');
    }
    return manifest.digest;
  }

  /**
   * The owner given to a file while it was written, to a committed file
   * that does not have it (see settleLanded), and then its set-id bits
   * again, which the node's chown cleared (one served with --allow-setid
   * keeps them). The content has landed whatever happens here: a node that
   * does not answer leaves the record for another attempt (see below), and
   * a refusal is logged (once at warning level), the record done all the
   * same.
   */
  private async giveOwner(e: JournalEntry, path: string, conflict: boolean): Promise<{ entry?: WEntryOut; by: string; generation: number } | undefined> {
    if (!e.owner) return undefined;
    this.step(e, 'giving it its owner');
    let r: Awaited<ReturnType<MeshClient['mutate']>> | undefined;
    try {
      r = await this.mesh.mutate({ chown: { path, ...e.owner } });
      if (e.mode & 0o6000) r = await this.mesh.mutate({ chmod: { path, mode: e.mode & 0o7777 } });
    } catch (err) {
      // No node now: the record stays, and its next attempt finds the content on the node and gives
      // the owner again. (Not after a conflict: the next attempt would find the other version at the
      // path and make a second conflict copy.)
      if (RETRYABLE.has(errnoOf(err)) && !conflict) throw err;
      this.ownerNotGiven({ path, ...e.owner, errno: errnoOf(err), err: (err as Error).message }, 'a written-back file did not get the owner given to it');
    }
    return r && { entry: r.entries.find((x) => x.name === path), by: r.by, generation: r.generation };
  }

  /** Uploads the chunks the node lacks, sent from the dirty copy (into the file's draft, if it has one); returns how many it lacked. */
  private async upload(dirty: string, m: Manifest, ahead?: { sent?: Promise<void>; to?: DraftOf; at?: string }): Promise<number> {
    await ahead?.sent; // what was sent early is not asked about while still on its way
    const fh = await open(dirty, 'r');
    try {
      return await this.sendMissing('', m.chunks, rangesIn(fh, `dirty copy ${dirty}`), ahead?.to, ahead?.at);
    } finally {
      await fh.close();
    }
  }

  /**
   * Asks the node (the one at `at` only, when given) which of these chunks it
   * lacks and sends those, their bytes where `bodyOf` says; returns how many.
   */
  private async sendMissing(what: string, chunks: readonly ChunkRef[], bodyOf: (c: ChunkRef) => FileRange, to?: DraftOf, at?: string): Promise<number> {
    // Asked about each hash once (a sparse file names the chunk of its holes thousands of times).
    const hashes = [...new Map(chunks.map((c) => [c.hash.toString('latin1'), c.hash])).values()];
    const missingIdx = await this.mesh.call(`has-chunks${what}`, (c) => c.hasChunks(hashes), { at });
    if (missingIdx.length === 0) return 0;
    const missing = new Set(missingIdx.map((i) => hashes[i]!.toString('latin1')));
    // Into a draft, a chunk goes to each of its offsets; staged by hash, once.
    // A run of zeros (a sparse file's holes) is always staged: the node leaves
    // it a hole wherever its draft holds nothing else, and writes it otherwise.
    const wanted: { ch: ChunkRef; into?: DraftOf }[] = [];
    for (const ch of chunks) {
      const k = ch.hash.toString('latin1');
      if (!missing.has(k)) continue;
      const into = to && !isZeroRun(ch, DEFAULT_CHUNKING) ? to : undefined;
      if (!into) missing.delete(k); // staged: this hash goes once
      wanted.push({ ch, into });
    }
    await this.mesh.call(`put-chunks${what}`, (c) =>
      c.putChunks(
        (async function* () {
          for (const { ch, into } of wanted) yield { hash: ch.hash, data: bodyOf(ch), draft: into?.draft, path: into?.path, offset: ch.offset };
        })(),
        Math.max(this.opts.deadlineMs, 60_000),
      ),
      { at },
    );
    this.stats.uploadedChunks += wanted.length;
    this.stats.uploadedBytes += wanted.reduce((n, x) => n + x.ch.length, 0);
    return wanted.length;
  }

  /**
   * The committed content is local already: its chunks go into the cache so
   * reads need no fetch, then the dirty copy goes. Runs after close() has
   * returned (nothing waits for it); a one-chunk file is renamed in whole.
   */
  private async keepChunks(from: { file: string } | { data: Buffer }, chunks: ChunkRef[], size: number): Promise<void> {
    if ('data' in from) {
      for (const c of chunks) {
        await this.chunkStore.put(c.hash, from.data.subarray(c.offset, c.offset + c.length)).catch((err) => log.debug({ err: (err as Error).message }, 'committed chunk not kept in the cache'));
      }
      return;
    }
    const dirty = from.file;
    try {
      // The whole file is one chunk: the copy itself becomes the cached chunk.
      if (chunks.length === 1 && chunks[0]!.length === size) {
        await this.chunkStore.adopt(chunks[0]!.hash, dirty, size);
        return;
      }
      await this.chunkStore.putFrom(dirty, chunks);
      await unlink(dirty).catch(() => undefined);
    } catch (err) {
      log.debug({ dirty, err: (err as Error).message }, 'committed chunks not kept in the cache');
      await unlink(dirty).catch(() => undefined);
    }
  }

  /** Work left running after a commit returned; waited for on stop. */
  private readonly background = new Set<Promise<void>>();
  private track(p: Promise<void>): void {
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  /**
   * Closes under way at these paths (or below them) are over: their content
   * is committed or pending. One may have taken the content and not yet
   * queued it: its record would miss a flush, and land after the change it
   * must come before (a rename's, say: it would bring the old name back).
   * Those under way now are waited for; later ones are not.
   */
  async closesSettled(paths: string[]): Promise<void> {
    const closing = [...this.closings].filter(([p]) => paths.some((dir) => isWithin(p, dir))).flatMap(([, set]) => [...set].map((c) => c.ended));
    if (closing.length) await Promise.all(closing);
  }

  /**
   * Commits pending records for these paths (or below them), and directories
   * queued above them or above `above`, now, batched like the queue; throws
   * if one is left pending (no node took it). One the node refuses no longer
   * holds anything up: it is logged and kept aside.
   */
  async flushPaths(paths: string[], above: string[] = []): Promise<void> {
    await this.closesSettled(paths);
    const hit = [...this.pending.values()].filter((e) => paths.some((dir) => isWithin(e.path, dir)));
    // A change on the node below a directory it does not have yet would fail there.
    for (const p of [...paths, ...above]) for (const m of this.mkdirsAbove(p, Infinity)) if (!hit.includes(m)) hit.push(m);
    if (hit.length === 0) return;
    await this.commitAll(hit, false);
    const left = hit.find((e) => this.pending.has(e.seq));
    if (left) throw Object.assign(new Error(`write-back of "${left.path}" is still pending`), { code: 'EHOSTDOWN' });
  }

  /**
   * Commits these records, oldest first, several calls at once and small
   * files in batches (one file's versions still go in turn: commits hold a
   * lock per path). Those under way already are waited for. With
   * `stopWhenUnreachable`, no more are started once one found no node.
   */
  private async commitAll(records: JournalEntry[], stopWhenUnreachable: boolean): Promise<void> {
    const inFlight = new Set<Promise<unknown>>();
    const batches = new Set<Promise<unknown>>();
    const underWay = records.filter((e) => this.running.has(e.seq)).map((e) => this.commitOrQueue(e, false));
    const waiting = records.filter((e) => !this.running.has(e.seq)).sort((a, b) => a.seq - b.seq);
    for (const unit of this.units(waiting)) {
      // More batches at once than this only make each one slower (measured here: same throughput, longer waits).
      const isBatch = this.batchable(unit[0]!);
      while (inFlight.size >= ASYNC_RUNNING || (isBatch && batches.size >= ASYNC_BATCHES)) await Promise.race(isBatch && batches.size >= ASYNC_BATCHES ? batches : inFlight);
      // No node answers: the rest would only fail the same way (each after a deadline, if the link is a black hole).
      if (this.closed || (stopWhenUnreachable && this.unreachable)) break;
      // A directory's attributes go once the files before them are done; if one stays queued, so do they.
      if (unit[0]!.dirAttrs && !(await this.filesBeforeLanded(unit[0]!))) continue;
      const p = Promise.allSettled(this.startUnit(unit)).finally(() => {
        inFlight.delete(p);
        batches.delete(p);
      });
      inFlight.add(p);
      if (isBatch) batches.add(p);
    }
    await Promise.all([...inFlight, ...underWay]);
  }

  /** Whether a pending version of this path may be on the node unheard: sent now, or sent before with its answer lost. */
  private maySit(path: string): boolean {
    if (this.mayHold.has(path)) return true;
    for (const e of this.byPath.get(path) ?? []) if (this.running.has(e.seq) || this.replayed.has(e.seq)) return true;
    for (const c of this.closings.get(path) ?? []) if (c.sent) return true;
    return false;
  }

  /**
   * A file is removed, by an unlink or by a rename onto its name: `onNode`
   * makes the change on the node (told whether a version of ours may be
   * there unheard) while no commit of the file runs or can start (one under
   * way lands first). Once that succeeded, what its closes had still to
   * commit goes with it, as on a local disk: a close under way commits
   * nothing and its pending versions go. Committed later, a version would
   * bring back an unlinked file, or meet the file a rename put there and
   * become a conflict copy of a file that is gone. If `onNode` fails, they
   * stay: nothing closed is lost by a change the node did not take.
   */
  async removeFile<T>(path: string, onNode: (maySit: boolean) => Promise<T>): Promise<T> {
    return this.locks.with(path, async () => {
      const r = await onNode(this.maySit(path));
      for (const c of this.closings.get(path) ?? []) c.removed = true;
      for (const e of [...(this.byPath.get(path) ?? [])]) await this.drop(e, true);
      this.mayHold.delete(path);
      return r;
    });
  }

  private async drop(e: JournalEntry, removeDirty: boolean): Promise<void> {
    // Out of pending first: nothing may start committing it while the journal is written.
    this.forget(e);
    await this.journal.remove(e.seq);
    if (removeDirty && e.dirty) await unlink(this.dirtyPath(e.dirty)).catch(() => undefined);
  }

  private scheduleRetry(delay = this.retryMs): void {
    if (this.closed || this.retryTimer || this.pending.size === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.retryAll();
    }, delay);
    this.retryTimer.unref();
  }

  /** One pass over the queue at a time; a pass asked for while one runs joins it. */
  private retryAll(): Promise<void> {
    this.retrying ??= this.retryPass().finally(() => (this.retrying = undefined));
    return this.retrying;
  }

  private async retryPass(): Promise<void> {
    const before = this.pending.size;
    this.unreachable = false;
    // Records being committed already (by the pump) are left to that attempt.
    await this.commitAll(
      [...this.pending.values()].filter((e) => !this.running.has(e.seq)),
      true,
    );
    if (this.closed) return;
    if (this.pending.size === 0) {
      if (before) log.info({ committed: before }, 'write-back queue drained');
      this.quietUntilDrained = false;
      this.retryMs = 500;
    } else {
      this.retryMs = Math.min(this.retryMs * 2, 30_000);
      this.scheduleRetry();
    }
  }

  /**
   * Asynchronous write-back: a new file closed here whose commit has not
   * started, renamed before it, takes its new name in the queue; the node
   * never sees the old one. rsync (and tools like it) writes each file under
   * a temporary name and renames it: each rename waited for the file's
   * commit, often in a batch, then made a call of its own (6.6 ms a file).
   * The record takes the new name at once (in memory, so that a journal
   * write of it from now on, a sync's or an attribute change's, has it),
   * and its commit may not start until the journal has it on disk: a node
   * holding the file under a name the journal does not give would, after a
   * power loss, get it again under the old one. False when the file does
   * not qualify (a version of it may be on a node, or is being sent; `to`
   * has records or closes of its own, or a directory's attributes queued
   * that must come after it; a directory above `to` is queued after it) or
   * `blocked()` says so (a rename of a directory above either name is under
   * way): the rename then goes to the node. `moved` is called in the same
   * turn as the record moves (and with `back` if the journal refused it), so
   * that what the mount shows moves with it. The caller has checked that
   * nothing is shown at `to` and that no writer has the file open.
   */
  async renameQueued(from: string, to: string, how: { blocked: () => boolean; moved: (back: boolean) => void }): Promise<boolean> {
    const records = this.byPath.get(from);
    if (records?.size !== 1) return false;
    const e = [...records][0]!;
    if (e.dirAttrs || e.mkdir || !e.expectAbsent || e.baseDigest || e.baseSeq !== undefined) return false;
    if (this.running.has(e.seq) || this.replayed.has(e.seq) || this.holds.has(e.seq) || this.maySit(from) || this.closings.get(from)?.size) return false;
    if (this.byPath.get(to)?.size || this.closings.get(to)?.size || this.mayHold.has(to)) return false;
    if ([...(this.byPath.get(parentOf(to)) ?? [])].some((r) => r.dirAttrs)) return false;
    if (this.mkdirsAbove(to, Infinity).some((m) => m.seq > e.seq)) return false;
    // Checked with the move, in the same turn: a directory rename that starts later finds the record under its new name.
    if (how.blocked()) return false;
    let release!: () => void;
    this.holds.set(e.seq, new Promise<void>((resolve) => (release = resolve)));
    const move = (b: string): void => {
      this.unindexPath(e);
      e.path = b;
      this.indexPath(e);
    };
    move(to);
    how.moved(false);
    try {
      await this.journal.update(e);
    } catch (err) {
      log.warn({ path: from, to, err: (err as Error).message }, 'cannot rename a queued file in the journal; the rename goes to the node');
      if (this.pending.get(e.seq) === e) {
        move(from);
        how.moved(true);
      }
      this.holds.delete(e.seq);
      release();
      return false;
    }
    // Unlinked (or replaced by a newer close) while the update was written: the update wrote the record back.
    if (this.pending.get(e.seq) !== e) await this.journal.remove(e.seq).catch((err: Error) => log.warn({ path: to, err: err.message }, 'cannot remove a dropped record renamed in the queue'));
    this.track(this.syncedThenRelease(e, release));
    return true;
  }

  /** Lets a record renamed in the queue go once the journal has its new name on disk (asking again while the disk refuses). */
  private async syncedThenRelease(e: JournalEntry, release: () => void): Promise<void> {
    try {
      for (let attempt = 1; !this.closed && this.pending.get(e.seq) === e; attempt++) {
        try {
          await this.journal.sync();
          break;
        } catch (err) {
          log.warn({ path: e.path, attempt, err: (err as Error).message }, 'cannot sync the journal after a rename in the queue; its commit waits');
          await sleep(Math.min(100 * attempt, 5000));
        }
      }
    } finally {
      this.holds.delete(e.seq);
      release();
    }
  }

  /** Every record journaled so far is on disk when this resolves (fsync(), `ghostfs sync` with no node to take them). */
  syncJournal(): Promise<void> {
    return this.journal.sync();
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
    await this.journal.removeLeftover();
    await this.journal.close();
  }
}
