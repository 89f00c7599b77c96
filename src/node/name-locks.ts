// Which of the node's work on a workspace may run at once.
// - One commit of a path at a time (its commit lock, for the whole commit).
// - A name's lock is held by whatever changes what the name is: a mutation
//   holds the names it makes, removes or changes, then the workspace's
//   mutation lock (mutations run one at a time); a commit holds its path's
//   and its file's other names' (hard links) only while it puts the new
//   version in place and re-points those names at it (relink.ts). Without
//   them, another writer's commit to the other name landing between the
//   relink's look and its rename was overwritten, and an unlink there
//   undone. Held that briefly, a mutation of the file never waits out a
//   long commit's assembly (its caller would give up first).
// Name locks are taken all at once (PathLocks.withMany); a holder of name
// locks waits for nothing but the mutation lock, whose holder waits for
// nothing; commit locks are only waited on by commits holding nothing. So
// no two callers wait on each other.
import { PathLocks } from '../util/path-locks.js';
import { namesChanged } from '../wire/mutation-names.js';
import type { WMutateRequestOut } from '../wire/types.js';
import type { WorkspaceIndex } from './workspace-index.js';

/** Runs `fn` holding the locks of the committed path and of its file's other names, which it is given. */
export type HoldFileNames = <T>(fn: (otherNames: string[]) => Promise<T>) => Promise<T>;

/** Tries at taking a file's names before it goes on with those it holds (each try follows a link made meanwhile). */
const NAME_TRIES = 5;

export class NameLocks {
  private readonly commits = new PathLocks();
  private readonly names = new PathLocks();
  private readonly mutations = new PathLocks();

  private key(workspace: string, path: string): string {
    return `${workspace}\0${path}`;
  }

  /** Runs a commit of `path`, one at a time; it takes the file's names when it puts its version in place. */
  commit<T>(index: WorkspaceIndex, path: string, fn: (holdFileNames: HoldFileNames) => Promise<T>): Promise<T> {
    return this.commits.with(this.key(index.id, path), () => fn((run) => this.holdFileNames(index, path, run)));
  }

  private async holdFileNames<T>(index: WorkspaceIndex, path: string, run: (otherNames: string[]) => Promise<T>): Promise<T> {
    for (let tries = 1; ; tries++) {
      const links = index.linksOf(path);
      const done = await this.names.withMany([path, ...links].map((p) => this.key(index.id, p)), async () => {
        // A link made while this waited (its mutation held the path's name): taken again with it.
        const now = index.linksOf(path);
        const held = now.filter((n) => links.includes(n));
        if (held.length < now.length && tries < NAME_TRIES) return undefined;
        return { value: await run(held) };
      });
      if (done) return done.value;
    }
  }

  /** Runs a mutation holding the names it touches, then the workspace's mutation lock. */
  mutation<T>(workspace: string, req: WMutateRequestOut, fn: () => Promise<T>): Promise<T> {
    const names = [...new Set(namesTouched(req))];
    return this.names.withMany(
      names.map((p) => this.key(workspace, p)),
      () => this.mutations.with(workspace, fn),
    );
  }
}

/** Every name a request makes, removes or changes the file of (unchecked: apply() checks them). */
function namesTouched(req: WMutateRequestOut): string[] {
  const others = [req.link?.existing, req.chmod?.path, req.chown?.path, req.utimens?.path, req.truncate?.path];
  return [...namesChanged(req), ...others.filter((p): p is string => typeof p === 'string')];
}
