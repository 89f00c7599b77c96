// A file written through one name changes under all its names on a disk. A
// commit puts a new inode in place of the old one, so its other names (hard
// links) are re-pointed at the new version, each atomically (a temp name
// linked to it and renamed over the name), while the commit holds their
// locks (name-locks.ts): another writer's commit or unlink of one runs
// before or after, never between the look and the rename.
//
// A node killed between the commit's rename and the relink would leave the
// other names on the old version for good: the writer's replayed commit
// finds its version in place and has nothing to do. So the names due are
// recorded durably before the rename (WorkspaceIndex.relinkDue) and the
// record is finished when the node starts (finishRelinks).
import { log } from '../log.js';
import { isReg, type Attr } from '../content/attr.js';
import { linkOver } from './staged-file.js';
import type { RelinkDue, RelinkFile, WorkspaceIndex } from './workspace-index.js';
import { parentOf } from './paths.js';
import { fsyncDir } from './fsync-dir.js';

/**
 * Makes the other names of the file a commit replaced (`was`, at `abs`) name
 * the new version too. A name that no longer names that file, or whose file
 * `still` says changed, is left as it is. Returns the names moved.
 */
export async function relink(index: WorkspaceIndex, abs: string, was: Pick<Attr, 'dev' | 'ino'>, names: readonly string[], still: (st: Attr) => boolean = () => true): Promise<string[]> {
  const moved: string[] = [];
  for (const name of names) {
    try {
      const other = await index.paths.safeAbs(name);
      const st = await index.calls.lstatOrNull(other);
      if (!st || st.ino !== was.ino || st.dev !== was.dev || !still(st)) continue;
      await linkOver(abs, other);
      moved.push(name);
    } catch (err) {
      log.warn({ workspace: index.id, path: name, err: (err as Error).message }, 'a hard link of a committed file still names its version before');
    }
  }
  return moved;
}

/**
 * Finishes the relinks a node stopped in the middle of (before it serves:
 * nothing else changes the workspace meanwhile). Only where the path still
 * holds the version the commit put there, and only names still on the file
 * it replaced, unchanged: a record from long ago, or files changed while the
 * node was down (written, chmod, chown, or another file with a freed inode
 * number), are left as they are.
 */
export async function finishRelinks(index: WorkspaceIndex): Promise<void> {
  for (const due of await index.relinksDue()) {
    try {
      await finish(index, due);
    } catch (err) {
      log.warn({ workspace: index.id, path: due.path, err: (err as Error).message }, "could not finish re-pointing a committed file's hard links");
    }
    await index.relinkDone(due.path);
  }
}

async function finish(index: WorkspaceIndex, due: RelinkDue): Promise<void> {
  const abs = await index.paths.safeAbs(due.path);
  const now = await index.calls.lstatOrNull(abs);
  if (!now || !isReg(now.mode) || !same(now, due.now)) return;
  const moved = await relink(index, abs, due.was, due.names, (st) => same(st, due.was));
  await Promise.all([...new Set(moved.map(parentOf))].map((d) => fsyncDir(index.paths.abs(d))));
  if (moved.length > 0) log.info({ workspace: index.id, path: due.path, names: moved }, "finished re-pointing a committed file's hard links, stopped by the node's end");
}

/** The same file as recorded, unchanged (its content, mode and owner; its ctime moves with its link count). */
function same(st: Attr, f: RelinkFile): boolean {
  return st.dev === f.dev && st.ino === f.ino && st.mtimeNs === f.mtimeNs && st.size === f.size && st.mode === f.mode && st.uid === f.uid && st.gid === f.gid;
}
