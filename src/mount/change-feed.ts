// Keeps the mount's metadata current: subscribes to the node's change feed
// from the last generation it applied (persisted), applies each event to the
// metadata store in order, and resumes after a disconnect. A RESET (history
// gone, other epoch, first mount) re-lists every directory known so far, in
// the background, while the cached tree keeps serving.
import pLimit from 'p-limit';
import { isDir } from '../content/attr.js';
import { changeKind, sameEntry, type ChangeKind, type MetaEntry, type MetaStore } from '../cache/meta-store.js';
import type { MeshClient } from '../mesh/mesh-client.js';
import type { WChangeEventOut } from '../wire/types.js';
import { parentOf } from '../wire/rel-path.js';
import { errnoOf } from '../wire/errors.js';
import { log } from '../log.js';
import type { Vfs } from './vfs.js';
import { entryFromWire } from './vfs-entry.js';
import { waitAtMost } from '../util/wait-at-most.js';

/** What the feed needs to know of this mount's own write-backs. */
export interface OwnWrites {
  /** Settles when the write-back of `path` under way now is over (undefined: none is). */
  busy(path: string): Promise<unknown> | undefined;
  /** Settles when every write-back under way now is over. */
  underWay(): Promise<unknown>;
  /** Content closed here for `path` still waits for a node. */
  pending(path: string): boolean;
}

/** How long an event for a path waits for this mount's own commit of it to be answered. */
const OWN_WRITE_WAIT_MS = 1000;

/** How long after this mount committed a path through one node another node's events about it are checked with a stat (see apply). */
const OTHER_NODE_CHECK_MS = 30_000;

export class ChangeFeed {
  private sub: { cancel(): void; endpoint: string } | undefined;
  private chain: Promise<void> = Promise.resolve();
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = 250;
  private stopped = false;
  private generation = 0;
  private epoch = '';
  private persistTimer: NodeJS.Timeout | undefined;
  /** The position being written (see persist). */
  private persisting: Promise<void> = Promise.resolve();
  /** Settles when stop() begins: a position waiting for write-backs is then left to stop(). */
  private readonly stopping: Promise<void>;
  private markStopping!: () => void;
  connected = false;
  /** Events applied since start (status, tests). */
  applied = 0;
  /** Resolves when the feed first reached READY (backlog applied). */
  readonly ready: Promise<void>;
  private markReady!: () => void;
  private readonly listeners = new Set<(path: string, what: ChangeKind) => void>();

  constructor(
    private readonly meta: MetaStore,
    private readonly mesh: MeshClient,
    private readonly vfs: Vfs,
    /** This mount's write-backs: those under way (an event about one waits for its answer), or content closed here that no node has yet. */
    private readonly writes: OwnWrites = { busy: () => undefined, underWay: () => Promise.resolve(), pending: () => false },
  ) {
    this.ready = new Promise((r) => (this.markReady = r));
    this.stopping = new Promise((r) => (this.markStopping = r));
  }

  /** Called with every path the feed changed (drivers that can invalidate kernel caches listen). */
  onChange(fn: (path: string, what: ChangeKind) => void): void {
    this.listeners.add(fn);
  }

  get position(): { generation: number; epoch: string } {
    return { generation: this.generation, epoch: this.epoch };
  }

  start(): void {
    this.generation = this.meta.generation;
    this.epoch = this.meta.epoch;
    this.subscribe();
  }

  private subscribe(): void {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    let gotEvent = false;
    const sub = this.mesh.watch(
      this.generation,
      this.epoch,
      (e) => {
        if (!gotEvent) {
          gotEvent = true;
          this.connected = true;
          this.retryMs = 250;
        }
        if (this.stopped) return; // (cancelled streams can still deliver what was in flight)
        // Judged by the node it came from (a newer subscription may be elsewhere by the time it is applied).
        this.chain = this.chain.then(() => this.apply(e, sub.endpoint)).catch((err) => log.warn({ err: (err as Error).message, path: e.path }, 'cannot apply change event'));
      },
      (err) => {
        if (this.sub !== sub) return; // a subscription replaced already: the newer one goes on
        this.connected = false;
        if (this.stopped) return;
        if (err) log.debug({ err: err.message }, 'change feed disconnected');
        this.retryTimer = setTimeout(() => this.subscribe(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 5000);
      },
    );
    this.sub = sub;
  }

  private async apply(event: WChangeEventOut, from: string): Promise<void> {
    const e = this.placed(event, from);
    if (!e) {
      this.advance(event);
      this.schedulePersist();
      return;
    }
    switch (e.kind) {
      case 'RESET':
        this.meta.forgetOwnCommits();
        this.vfs.ownRenames.clear();
        this.epoch = e.epoch;
        this.generation = e.generation;
        await this.revalidate();
        break;
      case 'READY':
        this.epoch = e.epoch;
        this.generation = Math.max(this.generation, e.generation);
        this.markReady();
        break;
      case 'POSITION':
        // Past this mount's own commits, which the node left out (the write-back applies their replies).
        if (e.epoch === this.epoch) this.generation = Math.max(this.generation, e.generation);
        this.vfs.ownRenames.passed(from, e.generation);
        break;
      case 'REMOVED':
        if (this.heldBack(e, from)) break;
        if (await this.checkedElsewhere(e, from)) break;
        await this.meta.put(e.path, null);
        this.changed(e, 'entry');
        break;
      case 'CHANGED': {
        // The node announces a commit before it answers it: let our own answer land first (briefly: the feed waits meanwhile).
        // (A node leaves this mount's own commits out of its feed; an older one, or a replay of the change log, does not.)
        const own = this.writes.busy(e.path);
        if (own) await waitAtMost(own, OWN_WRITE_WAIT_MS);
        if (this.heldBack(e, from)) break;
        // Only paths whose parent we know: the rest is fetched when asked for.
        const parent = this.meta.get(parentOf(e.path));
        const known = this.meta.get(e.path);
        if (e.path === '' || known || (parent && isDir(parent.attr.mode))) {
          const entry = this.meta.shown(e.path, entryFromWire(e.entry!));
          // (A directory's times and link count differ between nodes all the time, and tell less.)
          const dirs = !!known && isDir(known.attr.mode) && isDir(entry.attr.mode);
          if (!(known && sameEntry(known, entry)) && !dirs && (await this.checkedElsewhere(e, from))) break;
          // The echo of this mount's own commit or mutation is in the store already (the kernel may
          // still hold what it was told while the file was written: it hears of the change all the same).
          if (!known || !sameEntry(known, entry)) await this.meta.put(e.path, entry);
          this.changed(e, known ? changeKind(known, entry) : 'entry');
          break;
        }
        this.changed(e, 'entry');
        break;
      }
    }
    this.schedulePersist();
  }

  /**
   * An event about a path inside a tree this mount renamed after the event
   * was made, under the tree's name now; undefined when the rename replaced
   * what it was about.
   */
  private placed(e: WChangeEventOut, from: string): WChangeEventOut | undefined {
    if (e.kind !== 'CHANGED' && e.kind !== 'REMOVED') return e;
    const path = this.vfs.ownRenames.place(e.path, from, e.generation);
    return path === e.path ? e : path === null ? undefined : { ...e, path };
  }

  /**
   * Events that must not replace what the mount shows for their path:
   * - content closed here and not yet taken by a node is shown until its
   *   commit lands (which records the node's entry, or, on a conflict,
   *   fetches theirs);
   * - an event older than this mount's own last commit of the path on the
   *   same node (replayed after a reconnect): the commit's answer is newer.
   */
  private heldBack(e: WChangeEventOut, from: string): boolean {
    const older = this.meta.olderThanOwnCommit(e.path, from, e.generation);
    if (!older && !this.writes.pending(e.path)) return false;
    this.advance(e);
    return true;
  }

  /**
   * This mount committed the path through another node than the one whose
   * feed this is, a moment ago. The two nodes' orders of events cannot be
   * compared: a node sharing the other's disk learns of that commit from its
   * watcher, and may announce the version before it afterwards (one that
   * ran behind). So what differs from what the mount has is asked of the
   * node that took the commit (then of any), instead of taken as it comes.
   */
  private async checkedElsewhere(e: WChangeEventOut, from: string): Promise<boolean> {
    const committer = this.meta.committedElsewhere(e.path, from, OTHER_NODE_CHECK_MS);
    if (!committer || !(await this.refresh(e.path, committer))) return false; // (no answer: the event as it came)
    this.advance(e);
    return true;
  }

  /**
   * Fetches a path's entry from the nodes now (after a conflict kept the
   * node's version there, or to check an event: see checkedElsewhere), from
   * `at` first when given. False when no node answered.
   */
  async refresh(path: string, at?: string): Promise<boolean> {
    if (this.writes.pending(path)) return true; // a newer version of ours is shown there
    const before = this.meta.get(path);
    let entry: MetaEntry | null;
    try {
      const stat = at ? this.mesh.stat(path, at).catch((err: unknown) => (errnoOf(err) === 'ENOENT' ? Promise.reject(err) : this.mesh.stat(path))) : this.mesh.stat(path);
      entry = entryFromWire(await stat);
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') return false;
      entry = null;
    }
    // Written here again (or answered) while the stat was out: what the mount has now is newer.
    if (this.writes.pending(path) || this.meta.get(path) !== before) return true;
    await this.meta.put(path, entry);
    for (const fn of this.listeners) fn(path, 'entry');
    return true;
  }

  private changed(e: WChangeEventOut, what: ChangeKind): void {
    this.advance(e);
    for (const fn of this.listeners) fn(e.path, what);
  }

  /** The feed's position moves past an event. */
  private advance(e: WChangeEventOut): void {
    this.applied++;
    this.generation = Math.max(this.generation, e.generation);
  }

  /**
   * Re-lists every directory listed before, a few at a time. Their
   * "complete listing" marks are dropped first (durably), so a crash
   * halfway never leaves a stale listing trusted at the new position.
   */
  private async revalidate(): Promise<void> {
    const dirs = this.meta.listedDirs();
    if (dirs.length === 0) return;
    await this.meta.invalidateListings();
    const started = performance.now();
    const limit = pLimit(8);
    let failed = 0;
    await Promise.all(
      dirs.map((d) =>
        limit(() =>
          this.vfs.list(d).catch(() => {
            failed++;
          }),
        ),
      ),
    );
    log.info({ dirs: dirs.length, failed, durationMs: Math.round(performance.now() - started) }, 'revalidated cached tree');
  }

  /** The position is saved at most every 200 ms: after a crash, replaying a few events is harmless. */
  private schedulePersist(): void {
    if (this.persistTimer || this.stopped) return;
    this.persistTimer = setTimeout(() => {
      const at = this.generation;
      this.persisting = this.persisting
        .then(() => this.persist())
        .catch(() => undefined)
        .finally(() => {
          this.persistTimer = undefined;
          if (this.generation !== at) this.schedulePersist(); // moved on while this one waited
        });
    }, 200);
  }

  /**
   * Writes the position reached now, once the write-backs under way have
   * settled. The node leaves this mount's own commits out of its feed, so
   * a commit the node has made, below this position, may not be recorded
   * here yet: a crash after the position was written past it would lose
   * the file from this mount's view. `waitMs` bounds the wait (stopping);
   * past it, the position is not written, and the next start replays from
   * the one before.
   */
  private async persist(waitMs?: number): Promise<void> {
    const { generation, epoch } = this;
    const settled = this.writes.underWay().then(
      () => true,
      () => true,
    );
    // Without a bound (the timer's), it gives way to stop(), which writes the position itself.
    const over = waitMs === undefined ? Promise.race([settled, this.stopping.then(() => false)]) : waitAtMost(settled, waitMs).then((r) => r === true);
    if (!(await over) || (waitMs === undefined && this.stopped)) return;
    await this.meta.setPosition(generation, epoch).catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.markStopping();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.sub?.cancel();
    await this.chain;
    if (this.persistTimer) clearTimeout(this.persistTimer);
    await this.persisting;
    await this.persist(OWN_WRITE_WAIT_MS);
  }
}
