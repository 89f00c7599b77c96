// Serializes work per path within this process: the node's commits and
// mutations, the mount's write-backs of one file.
export class PathLocks {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Settles once the work holding or waiting for `path` now is over; undefined when there is none. */
  busy(path: string): Promise<unknown> | undefined {
    return this.tails.get(path);
  }

  /** Settles once all the work holding or waiting for a path now is over. */
  idle(): Promise<unknown> {
    return Promise.all(this.tails.values());
  }

  with<T>(path: string, fn: () => Promise<T>): Promise<T> {
    return this.withMany([path], fn);
  }

  /** Runs `fn` once every path is free, holding all of them (taken at once, so two callers never wait on each other). */
  async withMany<T>(paths: string[], fn: () => Promise<T>): Promise<T> {
    // Tails never reject (see below): waiting on them is waiting for their turn to end.
    const prev = paths.map((p) => this.tails.get(p)).filter((t) => t !== undefined);
    const run = (prev.length <= 1 ? (prev[0] ?? Promise.resolve()) : Promise.all(prev)).then(fn);
    const tail = run.catch(() => undefined);
    for (const p of paths) this.tails.set(p, tail);
    try {
      return await run;
    } finally {
      for (const p of paths) if (this.tails.get(p) === tail) this.tails.delete(p);
    }
  }
}
