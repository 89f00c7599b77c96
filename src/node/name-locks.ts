// Which of the node's work on a workspace may run at once. Every change to a
// name holds that name's lock while it runs:
// - a commit holds its path's, and those of its file's other names (hard
//   links), which it re-points at the new version (relink.ts). Without them,
//   another writer's commit to the other name landing between the relink's
//   look and its rename was overwritten, and an unlink there undone;
// - a mutation holds the names it makes, removes or changes, then the
//   workspace's mutation lock (mutations run one at a time). Waiting for its
//   names first, a mutation stuck behind a long commit does not hold up the
//   workspace's other mutations.
// Locks are taken all at once (PathLocks.withMany) and a commit never waits
// for a lock while holding one, so no two callers wait on each other.
import { PathLocks } from '../util/path-locks.js';
import { namesChanged } from '../wire/mutation-names.js';
import type { WMutateRequestOut } from '../wire/types.js';
import type { WorkspaceIndex } from './workspace-index.js';

/**
 * Runs `fn` holding the lock of another name of the file being committed:
 * undefined, without running it, when that name's lock is held elsewhere
 * (the name is being changed by other work, which decides what it names).
 */
export type HoldName = <T>(name: string, fn: () => Promise<T>) => Promise<T> | undefined;

export class NameLocks {
  private readonly locks = new PathLocks();

  private key(workspace: string, path: string): string {
    return `${workspace}\0${path}`;
  }

  /** Runs a commit of `path` holding its name's lock and those of its file's other names. */
  commit<T>(index: WorkspaceIndex, path: string, fn: (holdName: HoldName) => Promise<T>): Promise<T> {
    const links = index.linksOf(path);
    const held = new Set(links);
    const holdName: HoldName = (name, run) => {
      if (held.has(name)) return run();
      // A link made since the commit began: taken only if free, so a commit never waits holding its own lock.
      const k = this.key(index.id, name);
      return this.locks.busy(k) ? undefined : this.locks.with(k, run);
    };
    return this.locks.withMany([path, ...links].map((p) => this.key(index.id, p)), () => fn(holdName));
  }

  /** Runs a mutation holding the names it touches, then the workspace's mutation lock. */
  mutation<T>(workspace: string, req: WMutateRequestOut, fn: () => Promise<T>): Promise<T> {
    const names = [...new Set(namesTouched(req))];
    return this.locks.withMany(
      names.map((p) => this.key(workspace, p)),
      () => this.locks.with(this.key(workspace, '\0mutate'), fn),
    );
  }
}

/** Every name a request makes, removes or changes the file of (unchecked: apply() checks them). */
function namesTouched(req: WMutateRequestOut): string[] {
  const others = [req.link?.existing, req.chmod?.path, req.chown?.path, req.utimens?.path, req.truncate?.path];
  return [...namesChanged(req), ...others.filter((p): p is string => typeof p === 'string')];
}
