// Notices changes made on the node by other programs: one inotify watch per
// directory (not recursive, so the number of watches is the number of
// directories: dir-watches.ts), events gathered over a delay and turned into
// index refreshes. A periodic reconcile (see agent.ts) is the safety net for
// anything missed; a watch that lost events walks the tree at once.
import { isDir } from '../content/attr.js';
import { log } from '../log.js';
import type { Change, WorkspaceIndex } from './workspace-index.js';
import { TEMP_PREFIX } from './workspace-index.js';
import { joinRel, parentOf } from './paths.js';
import { dirWatches, type DirEvent, type DirWatches } from './dir-watches.js';

/** Paths refreshed together after filesystem events (their lstats run side by side). */
const REFRESH_GROUP = 256;

export class TreeWatcher {
  private readonly watches: DirWatches;
  private readonly pending = new Set<string>();
  /** Directories watched since the last flush without a walk after it: their names are compared with the disk. */
  private readonly rescan = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private limitWarned = false;
  private failWarned = false;
  private closed = false;
  private readonly onChange = (c: Change): void => {
    if (c.entry && isDir(c.entry.attr.mode)) {
      // A directory indexed without a walk after its watch existed (one this
      // node made, or moved): a file made in it before the watch has no
      // event of its own, and once the directory's times were refreshed, a
      // listing's check would miss it too. Walks watch before they read.
      if (!this.watches.has(c.path) && this.watch(c.path)) this.queueRescan(c.path);
    } else if (!c.entry) this.unwatch(c.path);
  };

  constructor(
    private readonly index: WorkspaceIndex,
    private readonly delayMs = 30,
  ) {
    this.watches = dirWatches((events, waited) => this.noticed(events, waited), () => this.lostEvents(), delayMs);
  }

  /** Watches the directories indexed so far and every one a walk reads from now on: start it before the index's scan. */
  start(): void {
    for (const [path, e] of this.index.entries) if (isDir(e.attr.mode)) this.watch(path);
    this.index.beforeList = (dir) => void this.watch(dir);
    this.index.on('change', this.onChange);
  }

  get watchCount(): number {
    return this.watches.size;
  }

  /** True when `rel` is watched from now on. */
  private watch(rel: string): boolean {
    if (this.closed) return false;
    if (this.watches.has(rel)) return true;
    try {
      this.watches.add(rel, this.index.paths.abs(rel));
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' && !this.limitWarned) {
        this.limitWarned = true;
        log.warn({ workspace: this.index.id, watches: this.watches.size }, 'inotify watch limit reached (fs.inotify.max_user_watches); changes below unwatched directories are found by the periodic reconcile');
      } else if (code !== 'ENOSPC' && code !== 'ENOENT' && code !== 'ENOTDIR' && !this.failWarned) {
        // (Gone or replaced since it was indexed is no news; EMFILE or EACCES is.)
        this.failWarned = true;
        log.warn({ workspace: this.index.id, path: rel, err: (err as Error).message }, 'cannot watch a directory; changes in it are found by the periodic reconcile');
      }
      return false;
    }
  }

  private unwatch(rel: string): void {
    this.watches.remove(rel);
  }

  /** Events gathered over the delay already (`waited`) are applied at once; others wait it out. */
  private noticed(events: DirEvent[], waited: boolean): void {
    if (this.closed) return;
    for (const { dir, name } of events) {
      if (name?.startsWith(TEMP_PREFIX)) continue;
      const rel = name ? joinRel(dir, name) : dir;
      this.pending.add(rel);
      if (rel !== '') this.pending.add(parentOf(rel));
    }
    if (this.pending.size === 0) return;
    if (waited) this.flushNow();
    else this.schedule();
  }

  /** Walks of the whole tree queued or under way. */
  private walks = 0;
  /** A walk is queued and not started: lost events meanwhile are found by it. */
  private walkQueued = false;

  /** Walking the whole tree after lost events: nothing in the index can be trusted to be current until it is done. */
  get walking(): boolean {
    return this.walks > 0;
  }

  /** The kernel dropped events (its queue overflowed): the whole tree is compared with the disk. */
  private lostEvents(): void {
    if (this.closed || this.walkQueued) return;
    log.warn({ workspace: this.index.id }, 'inotify dropped events (its queue overflowed: fs.inotify.max_queued_events); walking the workspace to find what changed');
    this.walks++;
    this.walkQueued = true;
    this.running = this.running
      .then(async () => {
        this.walkQueued = false;
        if (this.closed) return;
        await this.index.reconcile('').catch((err: Error) => log.warn({ workspace: this.index.id, err: err.message }, 'cannot walk the workspace after lost events'));
      })
      .finally(() => this.walks--);
  }

  /**
   * Paths a refresh left to the node's commits of them: looked at again once
   * each commit is over (then they show nothing new, unless another program
   * changed them meanwhile).
   */
  private afterCommits(paths: string[]): void {
    for (const path of paths) {
      void (this.index.commitUnderWay(path) ?? Promise.resolve()).then(() => {
        if (this.closed) return;
        this.pending.add(path);
        this.schedule();
      });
    }
  }

  private queueRescan(dir: string): void {
    this.rescan.add(dir);
    this.schedule();
  }

  private schedule(): void {
    if (!this.timer) this.timer = setTimeout(() => this.flush(), this.delayMs);
  }

  /** Paths of the flushes handed to `running` and not finished yet, with how many of them hold each. */
  private readonly applying = new Map<string, number>();

  /**
   * Whether a change noticed at `path` has yet to reach the index (waiting
   * out the delay, or being applied). A change to a name is queued for its
   * directory too, so a directory is behind while any of its names is.
   */
  behindAt(path: string): boolean {
    this.watches.drain(); // what the kernel noticed and has not handed over yet
    return this.pending.has(path) || this.rescan.has(path) || this.applying.has(path);
  }

  private flush(): void {
    this.timer = undefined;
    const paths = [...this.pending].sort((a, b) => a.length - b.length);
    const dirs = [...this.rescan];
    this.pending.clear();
    this.rescan.clear();
    const held = [...paths, ...dirs];
    for (const p of held) this.applying.set(p, (this.applying.get(p) ?? 0) + 1);
    this.running = this.running.then(async () => {
      // Together, a group at a time: most events are the echo of this node's
      // own commits, each settled by an lstat that finds nothing new. One by
      // one, those refreshes took about an eighth of the node's main thread
      // while a mount created small files.
      for (let i = 0; i < paths.length && !this.closed; i += REFRESH_GROUP) {
        const group = paths.slice(i, i + REFRESH_GROUP);
        try {
          this.afterCommits(await this.index.refreshAll(group, undefined, {}, true));
        } catch {
          // One path failed (a new directory that cannot be read, say): the others one by one, so they are not missed.
          for (const p of group) {
            if (this.closed) return;
            await this.index.refreshAll([p], undefined, {}, true).then(
              (left) => this.afterCommits(left),
              (err: Error) => log.warn({ workspace: this.index.id, path: p, err: err.message }, 'cannot refresh path after a change'),
            );
          }
        }
      }
      for (const d of dirs) {
        if (this.closed) return;
        await this.index.recheck(d).catch((err: Error) => log.warn({ workspace: this.index.id, path: d, err: err.message }, 'cannot compare a directory with the disk'));
      }
    }).finally(() => {
      for (const p of held) {
        const n = this.applying.get(p)! - 1;
        if (n > 0) this.applying.set(p, n);
        else this.applying.delete(p);
      }
    });
  }

  /** Resolves once every change noticed so far has reached the index. */
  async settled(): Promise<void> {
    this.watches.drain();
    this.flushNow();
    await this.running;
  }

  private flushNow(): void {
    clearTimeout(this.timer);
    if (this.pending.size || this.rescan.size) this.flush();
    else this.timer = undefined;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.index.off('change', this.onChange);
    this.index.beforeList = undefined;
    this.watches.close();
  }
}
