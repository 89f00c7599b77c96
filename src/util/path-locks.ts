// Serializes work per path within this process: the node's commits and
// mutations, the mount's write-backs of one file.
export class PathLocks {
  private readonly tails = new Map<string, Promise<unknown>>();

  async with<T>(path: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(path) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.tails.set(path, tail);
    try {
      return await run;
    } finally {
      if (this.tails.get(path) === tail) this.tails.delete(path);
    }
  }
}
