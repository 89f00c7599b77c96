// The directories this mount renamed a moment ago, so the change feed can
// place events the node sent before a rename under the name the tree has
// now. The mount moves what it knows of a renamed tree itself, and the node
// leaves the move out of the mount's own feed (MutateRequest.writer); but
// another writer's change inside the tree, made just before the rename,
// can still be on its way under the old name. Applied there it would be
// lost (that name is gone here), or, under a name the rename replaced,
// land on the moved tree's own entries.

/** Renames kept at most: the feed passes each within a feed latency, so only a feed that is down lets them pile up. */
const KEPT = 1000;

interface OwnRename {
  from: string;
  to: string;
  exchange: boolean;
  /** The node that made it, and the generation it made it at: only that node's older events are about the tree's old place. */
  endpoint: string;
  generation: number;
}

/** `path` relative to `dir` when strictly inside it (neither is the root: a rename never names it). */
const inside = (path: string, dir: string): string | undefined => (path.startsWith(dir + '/') ? path.slice(dir.length + 1) : undefined);

export class OwnRenames {
  private list: OwnRename[] = [];

  /** A rename this mount made, as its node answered (generation 0, not known: nothing is placed by it). */
  add(from: string, to: string, exchange: boolean, endpoint: string, generation: number): void {
    if (generation <= 0 || from === to || from === '' || to === '') return;
    this.list.push({ from, to, exchange, endpoint, generation });
    if (this.list.length > KEPT) this.list.shift();
  }

  /**
   * Where an event of `endpoint`'s feed at `generation` about `path`
   * belongs now: the path under the name each later rename gave its tree,
   * in the order they were made; null when a rename replaced the directory
   * it was in (its old contents are gone). Only paths strictly inside a
   * renamed tree move: an event about the renamed name itself is older than
   * the rename's own answer, and is held back as such (olderThanOwnCommit).
   *
   * A feed sends its events in generation order, so a rename its events
   * have reached is of no more use and is dropped.
   */
  place(path: string, endpoint: string, generation: number): string | null {
    if (this.list.length === 0) return path;
    this.passed(endpoint, generation);
    let now = path;
    for (const r of this.list) {
      if (r.endpoint !== endpoint) continue;
      const inFrom = inside(now, r.from);
      const inTo = inside(now, r.to);
      if (inFrom !== undefined) now = `${r.to}/${inFrom}`;
      else if (inTo !== undefined) {
        if (!r.exchange) return null;
        now = `${r.from}/${inTo}`;
      }
    }
    return now;
  }

  /** The feed is past `generation` on `endpoint` (a position event). */
  passed(endpoint: string, generation: number): void {
    if (this.list.length > 0) this.list = this.list.filter((r) => r.endpoint !== endpoint || r.generation > generation);
  }

  /** Generations started over (RESET): none can be compared, and the mount lists everything again. */
  clear(): void {
    this.list = [];
  }
}
