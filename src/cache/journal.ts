// The write-back journal: one durable record per closed file whose new
// content has not yet been confirmed by a node. Written before close()
// returns; removed in the same batch that records the committed entry. A
// mount that starts with records here replays them.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Manifest } from '../content/manifest.js';
import { Reader, Writer } from '../store/codec.js';
import { log } from '../log.js';
import { syncPath } from '../util/sync-path.js';
import { key, prefix, u64be, type Batch, type Store } from '../store/db.js';

export interface JournalEntry {
  seq: number;
  /** Workspace path the content is for. */
  path: string;
  /**
   * Name of the dirty copy under the cache's dirty dir; '' for content with
   * no copy: held in memory (committed straight from close(), never
   * journaled) or, journaled, stored in the record itself.
   */
  dirty: string;
  /** Digest the file had when the writer opened it (absent: it was created). */
  baseDigest?: Buffer;
  expectAbsent: boolean;
  /**
   * The pending record whose content this one was made from (a file edited
   * again while its last version was still queued). If that record lands
   * on the node first, it is this one's base. Kept in memory only.
   */
  baseSeq?: number;
  mode: number;
  /**
   * A directory's attributes, not a file's content: a mode (when `setsMode`)
   * and times given while files in it were still queued, applied after them.
   */
  dirAttrs?: { setsMode: boolean };
  /**
   * A directory made through the mount (asynchronous write-back), not yet
   * made on the node: `mode` is its mode. Whatever is queued below it waits
   * for it.
   */
  mkdir?: boolean;
  /**
   * The owner the node is to give (-1: that one as made): a file's,
   * given while it was written or its maker's when another user made it
   * (--allow-other); a queued directory's maker's. It goes in the commit
   * (or the mkdir).
   */
  owner?: Owner;
  /** Set explicitly by the writer (utimens while open); else the node stamps the commit time. */
  mtimeNs?: bigint;
  atimeNs?: bigint;
  closedAt: number;
  /**
   * The content itself, for a small file closed by this process. Stored in
   * the record when it has no dirty copy (then it is what survives a crash);
   * otherwise memory only.
   */
  data?: Buffer;
  /** A big file's chunk list, made while it was written (memory only), the end of its early upload, and its draft on the node. */
  manifest?: Manifest;
  sentAhead?: Promise<void>;
  draft?: string;
  /**
   * A record written before the dirty copy it names was synced ('soon'):
   * the id of the boot it was written in. The kernel may write the record
   * out before the copy (its own writeback, a RocksDB flush), so after the
   * machine restarted the copy may hold zeros where the writes were; in
   * the same boot, the page cache still holds them (the mount was only
   * killed). Cleared once the copy is synced.
   */
  unsyncedBoot?: string;
}

export interface Owner {
  uid: number;
  gid: number;
}

/** Two owner changes of one file, the later one's fields first (-1: not changed). */
export function laterOwner(earlier: Owner | undefined, later: Owner | undefined): Owner | undefined {
  if (!earlier || !later) return later ?? earlier;
  return { uid: later.uid >= 0 ? later.uid : earlier.uid, gid: later.gid >= 0 ? later.gid : earlier.gid };
}

/** Whether `attr` shows the owner (-1: any). */
export function hasOwner(attr: Owner | undefined, owner: Owner): boolean {
  return !!attr && (owner.uid < 0 || attr.uid === owner.uid) && (owner.gid < 0 || attr.gid === owner.gid);
}

/** `attr` with an owner change applied (-1: that one unchanged). */
export function withOwner<T extends Owner>(attr: T, owner: Owner | undefined): T {
  return owner ? { ...attr, ...laterOwner(attr, owner) } : attr;
}

function encode(e: JournalEntry): Buffer {
  const w = new Writer(128 + (e.data?.length ?? 0));
  w.string(e.path).string(e.dirty).bytes(e.baseDigest ?? Buffer.alloc(0)).bool(e.expectAbsent).uint(e.mode).uint(e.closedAt);
  w.bool(e.mtimeNs !== undefined);
  if (e.mtimeNs !== undefined) w.i64(e.mtimeNs).i64(e.atimeNs ?? e.mtimeNs);
  // Added later: records written before it end here (and all have a dirty copy).
  const inRecord = !e.dirty && e.data !== undefined;
  w.bool(inRecord);
  if (inRecord) w.bytes(e.data!);
  w.uint((e.dirAttrs ? 1 | (e.dirAttrs.setsMode ? 2 : 0) : 0) | (e.mkdir ? 4 : 0) | (e.owner ? 8 : 0));
  w.string(e.unsyncedBoot ?? '');
  // Added later, after the boot id (-1: unchanged).
  if (e.owner) w.int(e.owner.uid).int(e.owner.gid);
  return w.done();
}

function decode(seq: number, b: Buffer): JournalEntry {
  const r = new Reader(b);
  const path = r.string();
  const dirty = r.string();
  const base = r.bytes();
  const expectAbsent = r.bool();
  const mode = r.uint();
  const closedAt = r.uint();
  const e: JournalEntry = { seq, path, dirty, baseDigest: base.length ? Buffer.from(base) : undefined, expectAbsent, mode, closedAt };
  if (r.bool()) {
    e.mtimeNs = r.i64();
    e.atimeNs = r.i64();
  }
  // Copied out: the record's buffer belongs to the database read.
  if (!r.done && r.bool()) e.data = Buffer.from(r.bytes());
  const flags = r.done ? 0 : r.uint();
  if (flags & 1) e.dirAttrs = { setsMode: (flags & 2) !== 0 };
  if (flags & 4) e.mkdir = true;
  const boot = r.done ? '' : r.string();
  if (boot) e.unsyncedBoot = boot;
  if (flags & 8) e.owner = { uid: r.int(), gid: r.int() };
  return e;
}

/** This boot's id: a record whose copy was not synced is trusted after a restart of the mount, not of the machine (see unsyncedBoot). */
export function currentBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return `unknown-${randomUUID()}`; // no such file: every start is taken for a new boot, the safe side
  }
}

/** A record written again by a sync (see Journal.syncing). */
type Put = ['put', Buffer, Buffer];

/** Longest a record written without waiting for the disk stays off it. */
export const LAZY_SYNC_MS = 1000;

export class Journal {
  private nextSeq = 1;
  /** Records done with whose removal the database refused (a full disk): removed with the next write. */
  private readonly unremoved = new Set<number>();

  constructor(
    private readonly store: Store,
    private readonly workspace: string,
    /** The boot records are written in (a test gives another). */
    readonly bootId = currentBootId(),
  ) {}

  private k(seq: number): Buffer {
    return key(this.workspace, 'j', u64be(seq));
  }

  /** Every pending record, oldest first. */
  async load(): Promise<JournalEntry[]> {
    const out: JournalEntry[] = [];
    const p = prefix(this.workspace, 'j');
    await this.store.forEach(p, (k, v) => out.push(decode(Number(k.readBigUInt64BE(k.length - 8)), v)));
    if (out.length) this.nextSeq = out[out.length - 1]!.seq + 1;
    return out;
  }

  /**
   * Records a pending write-back. 'now': on disk when this resolves, so it
   * survives the machine losing power (a close() that returns once the
   * record is written: the node did not confirm it; the caller has synced
   * the dirty copy it names). 'soon': it survives the mount being killed at
   * once, and is on disk within LAZY_SYNC_MS, as a local filesystem writes
   * out a closed file within its commit interval (asynchronous write-back,
   * whose close() does not wait for a disk flush; an fsync() waits, see
   * sync()). `copy`: the path of the dirty copy the record names. A 'soon'
   * record's copy is synced before the record is (see syncCopies); a 'now'
   * record's, by the caller. Either way its name, a new entry in its
   * directory, is made durable here before the record is: after a power
   * loss, a record whose copy has no name is dropped at start as if never
   * written.
   */
  async add(e: Omit<JournalEntry, 'seq'>, durability: 'now' | 'soon', copy?: string): Promise<JournalEntry> {
    // Marked unsynced below, only while its copy is (a record made from another must not carry its mark).
    const { unsyncedBoot: _, ...rest } = e;
    const entry: JournalEntry = { ...rest, seq: this.nextSeq++ };
    if (durability === 'now') {
      if (copy) this.unsyncedDirs.add(dirname(copy));
      await this.syncing((synced) => this.write(this.k(entry.seq), encode(entry), true, synced));
      return entry;
    }
    if (copy) {
      // Not between a sync's copies and its log: the log would take this record to the disk without its copy.
      while (this.syncsQueued > 0) await this.syncTail;
      entry.unsyncedBoot = this.bootId;
      this.awaitCopy(copy, entry);
    }
    try {
      await this.write(this.k(entry.seq), encode(entry), false);
    } catch (err) {
      // Not written: no sync may write it later (see syncing).
      if (copy && this.unsyncedCopies.get(copy) === entry) this.unsyncedCopies.delete(copy);
      this.awaitingCopy.delete(entry.seq);
      throw err;
    }
    this.syncSoon();
    return entry;
  }

  /**
   * Records found at start whose copies were not synced, written in this
   * boot (the mount was killed, the page cache kept the writes): their
   * copies are synced now and the records rewritten without the mark, so a
   * restart of the machine later does not take them for untrustworthy.
   */
  async syncFound(found: { entry: JournalEntry; copy: string }[]): Promise<void> {
    if (found.length === 0) return;
    for (const { entry, copy } of found) this.awaitCopy(copy, entry);
    await this.sync();
  }

  /** The next sync syncs `copy` first, and then writes `entry` without its mark. */
  private awaitCopy(copy: string, entry: JournalEntry): void {
    this.unsyncedCopies.set(copy, entry);
    this.awaitingCopy.add(entry.seq);
  }

  /** Rewrites a record whose attributes changed before its commit (on disk within LAZY_SYNC_MS, as a local chmod is). */
  async update(e: JournalEntry): Promise<void> {
    await this.write(this.k(e.seq), encode(e), false);
    this.syncSoon();
  }

  /** Every record written so far is on disk when this resolves, with the dirty copies they name. */
  sync(): Promise<void> {
    return this.syncing((synced) => this.store.apply(synced(), { durable: true }));
  }

  /**
   * A sync makes every record before it durable at once (one log). A record
   * on disk before the copy it names would, after a power loss, replay a
   * copy the kernel had not written out: every sync first syncs the copies
   * of the records written without (a copy committed and gone meanwhile
   * needs nothing), and such records wait while a sync runs.
   */
  private readonly unsyncedCopies = new Map<string, JournalEntry>();
  /** Records whose copies are among those, until the copy is synced or the record removed (see unsyncedBoot). */
  private readonly awaitingCopy = new Set<number>();
  /** Directories holding copies named by records, synced with them (one fsync covers every new name in one). */
  private readonly unsyncedDirs = new Set<string>();
  private syncsQueued = 0;
  private syncTail: Promise<unknown> = Promise.resolve();

  /**
   * A durable write: one at a time, each after the copies written without a
   * sync are synced. `write` writes, with what it writes, the records whose
   * copies that made durable, no longer marked unsynced: `synced()` gives
   * them, to be called in the same step as the write is asked for (a record
   * removed meanwhile is not written again; one removed after is removed
   * after).
   */
  private syncing<T>(write: (synced: () => Put[]) => Promise<T>): Promise<T> {
    this.syncsQueued++;
    const p = this.syncTail
      .then(async () => {
        const records = await this.syncCopies();
        return write(() => {
          const puts: Put[] = [];
          for (const e of records) {
            if (!this.awaitingCopy.delete(e.seq)) continue;
            e.unsyncedBoot = undefined;
            puts.push(['put', this.k(e.seq), encode(e)]);
          }
          return puts;
        });
      })
      .finally(() => this.syncsQueued--);
    this.syncTail = p.catch(() => undefined);
    return p;
  }

  /** Syncs the copies (and their directories) of the records written without; returns those records. */
  private async syncCopies(): Promise<JournalEntry[]> {
    if (this.unsyncedCopies.size === 0 && this.unsyncedDirs.size === 0) return [];
    const copies = [...this.unsyncedCopies];
    const dirs = new Set([...this.unsyncedDirs, ...copies.map(([c]) => dirname(c))]);
    this.unsyncedCopies.clear();
    this.unsyncedDirs.clear();
    try {
      await Promise.all(copies.map(([c]) => syncPath(c, { data: true })));
      await Promise.all([...dirs].map((d) => syncPath(d)));
    } catch (err) {
      // The next sync tries them again.
      for (const [c, e] of copies) this.unsyncedCopies.set(c, e);
      for (const d of dirs) this.unsyncedDirs.add(d);
      throw err;
    }
    return copies.map(([, e]) => e);
  }

  private syncTimer: NodeJS.Timeout | undefined;

  /** What was written so far reaches the disk within LAZY_SYNC_MS. */
  private syncSoon(): void {
    if (this.closed) return;
    this.syncTimer ??= setTimeout(() => {
      this.syncTimer = undefined;
      // Failed (the database refuses writes, a copy cannot be synced): the next record's timer tries again.
      this.sync().catch((err) => log.warn({ err: (err as Error).message }, 'cannot sync the write-back journal to disk'));
    }, LAZY_SYNC_MS);
    this.syncTimer.unref();
  }

  private closed = false;

  /** A last sync, and no timer after it (the database is about to close). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.syncTimer);
    this.syncTimer = undefined;
    await this.sync().catch((err) => log.warn({ err: (err as Error).message }, 'cannot sync the write-back journal to disk'));
  }

  /** A record, with the removals refused earlier. */
  private async write(k: Buffer, v: Buffer, durable: boolean, also: () => Put[] = () => []): Promise<void> {
    const b = this.store.batch();
    for (const [, ak, av] of also()) b.put(ak, av);
    b.put(k, v);
    const leftover = [...this.unremoved];
    for (const seq of leftover) this.removeIn(b, seq);
    await b.commit({ durable });
    for (const seq of leftover) this.unremoved.delete(seq);
  }

  /** Adds the removal of a record to a batch (committed with the metadata it settles). */
  removeIn(b: Batch, seq: number): void {
    this.awaitingCopy.delete(seq); // (never written again: see syncing)
    b.del(this.k(seq));
  }

  /**
   * A record is done with. Its removal does not fail when the database
   * refuses it: the record is removed with the next write (or at close). A
   * mount killed before that replays it, and finds the node holds it.
   */
  async remove(seq: number, opts: { durable?: boolean } = {}): Promise<void> {
    this.awaitingCopy.delete(seq); // (never written again: see syncing)
    this.unremoved.add(seq);
    if (!opts.durable) return this.removeLeftover();
    // Gone for good before this resolves (a record that must not come back after a power loss).
    await this.syncing(async (synced) => {
      await this.removeLeftover(); // (or a removal beside it took this one along)
      if (this.unremoved.has(seq)) throw new Error(`the database refused to remove write-back record ${seq}`);
      await this.store.apply(synced(), { durable: true });
    });
  }

  /** Removals the database refused until now, tried again (with `remove`, and when the mount stops). */
  async removeLeftover(): Promise<void> {
    if (this.unremoved.size === 0) return;
    const b = this.store.batch();
    const seqs = [...this.unremoved];
    for (const s of seqs) this.removeIn(b, s);
    try {
      await b.commit();
      for (const s of seqs) this.unremoved.delete(s);
    } catch (err) {
      if (seqs.length === 1) log.warn({ err: (err as Error).message }, 'the database refused to remove a write-back record that is done with; it is removed with the next write');
    }
  }
}
