// The inotify watches on a tree's directories, one per directory. Through
// the addon (native/src/tree_watch.c) a thread reads them and hands over a
// burst's events at once, after the watcher's delay; without the addon,
// fs.watch hands over each event as it comes (and wakes the JS thread for
// each: a commit the node makes itself gives several).
import { watch, type FSWatcher } from 'node:fs';
import { endianness } from 'node:os';
import { nativeAddon, type NativeAddon, type TreeWatchHandle } from '../native/addon.js';
import { SetMap } from '../util/set-map.js';
import { log } from '../log.js';

/** Something changed in the directory `dir`: at its entry `name`, or (no name) the directory itself. */
export interface DirEvent {
  dir: string;
  name?: string;
}

/**
 * Gets what was noticed: `waited` when it was gathered over the delay
 * already (to be applied at once), not when it is a single event (fs.watch)
 * or what drain() took early (to be gathered).
 */
export type OnDirEvents = (events: DirEvent[], waited: boolean) => void;

export interface DirWatches {
  readonly size: number;
  has(dir: string): boolean;
  /** Watches `dir` (at `abs`); throws an errno error (ENOSPC: out of inotify watches). */
  add(dir: string, abs: string): void;
  remove(dir: string): void;
  /** Hands over at once what has been noticed and not handed over yet (not waited). */
  drain(): void;
  close(): void;
}

/**
 * `onEvents` gets what was noticed; `onOverflow` says events were lost (the
 * kernel's queue overflowed), so the tree must be compared with the disk.
 */
export function dirWatches(onEvents: OnDirEvents, onOverflow: () => void, delayMs: number): DirWatches {
  const addon = nativeAddon();
  if (addon?.treeWatchOpen) {
    try {
      return new GatheredWatches(addon, onEvents, onOverflow, delayMs);
    } catch (err) {
      // (EMFILE: fs.inotify.max_user_instances; Node's own instance may still be had.)
      log.warn({ err: (err as Error).message }, 'cannot start the inotify thread; watching through fs.watch');
    }
  }
  return new NodeWatches(onEvents);
}

// struct inotify_event, in the host's byte order: int wd; uint32 mask, cookie, len; char name[len] (NUL-padded).
const EVENT_HEADER = 16;
const LE = endianness() === 'LE';
const IN_Q_OVERFLOW = 0x4000;
const IN_IGNORED = 0x8000;

class GatheredWatches implements DirWatches {
  private readonly h: TreeWatchHandle;
  private readonly wds = new Map<string, number>();
  /** One directory reached by two paths (moved while both were watched) has one watch. */
  private readonly dirs = new SetMap<number, string>();
  private closed = false;

  constructor(
    private readonly addon: NativeAddon,
    private readonly onEvents: OnDirEvents,
    private readonly onOverflow: () => void,
    delayMs: number,
  ) {
    this.h = addon.treeWatchOpen((batch) => this.take(batch, true), delayMs);
  }

  get size(): number {
    return this.wds.size;
  }

  has(dir: string): boolean {
    return this.wds.has(dir);
  }

  add(dir: string, abs: string): void {
    if (this.closed) throw Object.assign(new Error('the watches are closed'), { code: 'EBADF' });
    const wd = this.addon.treeWatchAdd(this.h, abs);
    this.wds.set(dir, wd);
    this.dirs.add(wd, dir);
  }

  remove(dir: string): void {
    const wd = this.wds.get(dir);
    if (wd === undefined) return;
    this.wds.delete(dir);
    this.dirs.remove(wd, dir);
    if (!this.dirs.has(wd) && !this.closed) this.addon.treeWatchRemove(this.h, wd);
  }

  drain(): void {
    if (this.closed) return;
    const batch = this.addon.treeWatchDrain(this.h);
    if (batch) this.take(batch, false);
  }

  private take(batch: Buffer, waited: boolean): void {
    const events: DirEvent[] = [];
    let overflow = false;
    for (let at = 0; at + EVENT_HEADER <= batch.length; ) {
      const wd = LE ? batch.readInt32LE(at) : batch.readInt32BE(at);
      const mask = LE ? batch.readUInt32LE(at + 4) : batch.readUInt32BE(at + 4);
      const len = LE ? batch.readUInt32LE(at + 12) : batch.readUInt32BE(at + 12);
      const raw = batch.subarray(at + EVENT_HEADER, at + EVENT_HEADER + len);
      at += EVENT_HEADER + len;
      if (mask & IN_Q_OVERFLOW) {
        overflow = true;
        continue;
      }
      const dirs = this.dirs.get(wd);
      if (!dirs) continue; // removed here since
      if (mask & IN_IGNORED) {
        // The kernel dropped the watch: its directory is gone (its own event came before).
        for (const dir of dirs) this.wds.delete(dir);
        this.dirs.delete(wd);
        continue;
      }
      const end = raw.indexOf(0);
      const name = (end < 0 ? raw : raw.subarray(0, end)).toString();
      for (const dir of dirs) events.push(name ? { dir, name } : { dir });
    }
    try {
      if (events.length) this.onEvents(events, waited);
    } finally {
      if (overflow) this.onOverflow();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.addon.treeWatchClose(this.h);
    this.wds.clear();
    this.dirs.clear();
  }
}

class NodeWatches implements DirWatches {
  private readonly watchers = new Map<string, FSWatcher>();

  constructor(private readonly onEvents: OnDirEvents) {}

  get size(): number {
    return this.watchers.size;
  }

  has(dir: string): boolean {
    return this.watchers.has(dir);
  }

  add(dir: string, abs: string): void {
    const w = watch(abs, { persistent: false }, (_ev, name) => this.onEvents([name ? { dir, name: String(name) } : { dir }], false));
    w.on('error', () => this.remove(dir));
    this.watchers.set(dir, w);
  }

  remove(dir: string): void {
    this.watchers.get(dir)?.close();
    this.watchers.delete(dir);
  }

  drain(): void {}

  close(): void {
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }
}
