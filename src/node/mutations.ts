// Namespace and attribute changes requested over the wire. Each one checks
// its paths (confined to the root, parents resolved without escaping),
// never follows a symlink in the last component, and updates the index
// itself, so the change feed carries it at once.
import { lutimes, open } from 'node:fs/promises';
import { constants as C } from 'node:fs';
import { fromTimespec, isDir, isReg, nsToSeconds, S_IFBLK, S_IFCHR, S_IFIFO, S_IFMT, S_IFSOCK, S_ISGID } from '../content/attr.js';
import { FsError } from '../wire/errors.js';
import type { WMutateRequestOut } from '../wire/types.js';
import { nativeAddon, RENAME_EXCHANGE, RENAME_NOREPLACE } from '../native/addon.js';
import { checkChildPath, checkPath, parentOf } from './paths.js';
import { namesChanged } from '../wire/mutation-names.js';
import type { Origin, WorkspaceIndex } from './workspace-index.js';
import type { IndexEntry } from './index-entry.js';
import type { MetaCalls } from './meta-calls.js';
import { checkOwner, giveMadeOwner } from './owners.js';

export interface MutationResult {
  /** Paths changed, with their state after the operation (null: removed). */
  changed: { path: string; entry: IndexEntry | null }[];
  /** The generation of the operation's last change in the index (undefined: it changed nothing there). */
  generation?: number;
}

const nowNs = (): bigint => BigInt(Date.now()) * 1_000_000n;

/**
 * Runs a namespace change and reports what changed: the paths it touched
 * and, for a change of names, the directories holding them (their link
 * count and times moved: a mount shows them at once, as `mkdir d/x; stat d`
 * expects, instead of when the change feed brings them).
 */
export async function mutate(index: WorkspaceIndex, req: WMutateRequestOut): Promise<MutationResult> {
  // What the reply tells its writer is not echoed to the writer's feed (see Origin).
  const mine: Origin = { origin: req.writer || undefined, ...ownPaths(req) };
  const r = await apply(index, req, mine);
  // In one index write: the reply's generation (its last change's) is then
  // that of each directory too. Refreshed one by one, a commit in the first
  // directory recorded between them would be older than the reply and newer
  // than the directory in it, and the writer could keep either.
  const dirs = directoriesOf(req).filter((dir) => !r.changed.some((c) => c.path === dir));
  if (dirs.length > 0) await index.refreshAll(dirs, undefined, mine);
  for (const dir of dirs) {
    const entry = index.entries.get(dir);
    if (entry) r.changed.push({ path: dir, entry });
  }
  return { ...r, generation: mine.last };
}

/**
 * The paths a request's reply tells its writer of (see Origin): those it
 * names and their directories, and the name it removes (an unlink, an
 * rmdir). A rename's are all it changes: its writer moves what it knew
 * under the old name itself, and drops what was under the new one.
 */
function ownPaths(req: WMutateRequestOut): { named?: Set<string>; removes?: Set<string> } {
  if (req.op === 'rename') return {};
  try {
    const names = namesChanged(req);
    const others = [req.link?.existing, req.chmod?.path, req.chown?.path, req.utimens?.path, req.truncate?.path].filter((p): p is string => p !== undefined);
    return { named: new Set([...names, ...others, ...directoriesOf(req)]), removes: new Set(req.op === 'unlink' || req.op === 'rmdir' ? names : []) };
  } catch {
    return { named: new Set(), removes: new Set() }; // a path apply() refuses, saying why
  }
}

/** The directories whose entries a request changes (already checked by apply()). */
function directoriesOf(req: WMutateRequestOut): string[] {
  return [...new Set(namesChanged(req).map((n) => parentOf(checkChildPath(n))))];
}

async function apply(index: WorkspaceIndex, req: WMutateRequestOut, mine: Origin): Promise<MutationResult> {
  const fs = index.calls; // the workspace disk's metadata calls, inline or pooled (meta-calls.ts)
  const done = async (...paths: string[]): Promise<MutationResult> => {
    const changed = [];
    for (const p of paths) {
      await index.refresh(p, mine);
      changed.push({ path: p, entry: index.entries.get(p) ?? null });
    }
    return { changed };
  };
  const keep = async (path: string, known: IndexEntry | undefined): Promise<MutationResult> => ({
    changed: [{ path, entry: await index.adopt(path, known, mine) }],
  });
  // A name and its directory, after a change of that one name: one database write for both.
  const doneWithParent = async (path: string, madeDir?: string): Promise<MutationResult> => {
    const paths = [path, parentOf(path)];
    await index.refreshAll(paths, madeDir, mine);
    return { changed: paths.map((p) => ({ path: p, entry: index.entries.get(p) ?? null })) };
  };

  switch (req.op) {
    case 'mkdir': {
      const path = checkChildPath(req.mkdir!.path);
      const owner = req.mkdir!.owner ? checkOwner(req.mkdir!.owner) : undefined;
      const abs = await index.paths.safeAbs(path);
      const mode = req.mkdir!.mode & 0o7777 || 0o755;
      await fs.mkdir(abs, mode);
      // As mkdir(2) gives it: no set-id bits of its own, the directory's set-group-ID inherited.
      await modeAsAsked(fs, abs, (made) => (mode & 0o1777) | (made & S_ISGID));
      await giveMadeOwner(fs, abs, path, owner);
      return doneWithParent(path, path);
    }
    case 'rmdir': {
      const path = checkChildPath(req.rmdir!.path);
      await fs.rmdir(await index.paths.safeAbs(path));
      return doneWithParent(path);
    }
    case 'unlink': {
      const path = checkChildPath(req.unlink!.path);
      const abs = await index.paths.safeAbs(path);
      const st = await fs.lstatOrNull(abs);
      if (!st) throw new FsError('ENOENT', `"${path}" does not exist`);
      if (isDir(st.mode)) throw new FsError('EISDIR', `"${path}" is a directory`);
      const siblings = index.linksOf(path);
      await fs.freeing(st).unlink(abs);
      const result = await doneWithParent(path);
      // The remaining names of the inode now have one link fewer (not in the reply: every feed hears of it).
      if (siblings.length > 0) await index.adopt(siblings[0]!, index.entries.get(siblings[0]!));
      return result;
    }
    case 'rename': {
      const r = req.rename!;
      const from = checkChildPath(r.from, 'from');
      const to = checkChildPath(r.to, 'to');
      if (to === from) return done(from);
      if (to.startsWith(from + '/')) throw new FsError('EINVAL', `cannot move "${from}" into itself`);
      const fromAbs = await index.paths.safeAbs(from);
      const toAbs = await index.paths.safeAbs(to);
      const st = await fs.lstatOrNull(fromAbs);
      if (!st) throw new FsError('ENOENT', `"${from}" does not exist`);
      if (!r.exchange && !r.noReplace && !isDir(st.mode)) {
        // Two names of one file (hard links): rename(2) leaves both; the index must not move one away.
        const there = await fs.lstatOrNull(toAbs);
        if (there && there.ino === st.ino && there.dev === st.dev) return done(from, to);
      }
      const addon = nativeAddon();
      if (r.exchange) {
        if (!addon) throw new FsError('ENOTSUP', 'RENAME_EXCHANGE needs the native addon (renameat2), which is not built here');
        if (from.startsWith(to + '/')) throw new FsError('EINVAL', `cannot exchange "${from}" with a directory above it`);
        addon.renameat2(fromAbs, toAbs, RENAME_EXCHANGE);
        const [a, b] = await index.exchanged(from, to, mine);
        return { changed: [{ path: from, entry: a }, { path: to, entry: b }] };
      }
      if (r.noReplace && addon) {
        addon.renameat2(fromAbs, toAbs, RENAME_NOREPLACE); // atomic: EEXIST, never a clobber
      } else if (r.noReplace) {
        if (!isDir(st.mode)) {
          // link() fails with EEXIST atomically, so nothing is ever clobbered.
          await fs.link(fromAbs, toAbs);
          await fs.unlink(fromAbs);
        } else {
          if (await fs.lstatOrNull(toAbs)) throw new FsError('EEXIST', `"${to}" exists`);
          await fs.rename(fromAbs, toAbs);
        }
      }
      // A file replaced by the rename loses a link: its other names (hard links) show one fewer.
      const replacedLinks = r.noReplace ? [] : index.linksOf(to).filter((p) => p !== from);
      if (!r.noReplace) await fs.renameOver(fromAbs, toAbs);
      const entry = await index.moved(from, to, mine);
      // Not in the reply (as for an unlink): every feed hears of it.
      if (replacedLinks.length > 0) await index.adopt(replacedLinks[0]!, index.entries.get(replacedLinks[0]!));
      return { changed: [{ path: from, entry: null }, { path: to, entry }] };
    }
    case 'symlink': {
      const path = checkChildPath(req.symlink!.path);
      const target = req.symlink!.target;
      if (target === '' || target.includes('\0')) throw new FsError('EINVAL', 'symlink target is empty or contains NUL');
      if (Buffer.byteLength(target) > 4095) throw new FsError('ENAMETOOLONG', 'symlink target is too long');
      const owner = req.symlink!.owner ? checkOwner(req.symlink!.owner) : undefined;
      const abs = await index.paths.safeAbs(path);
      await fs.symlink(target, abs);
      await giveMadeOwner(fs, abs, path, owner);
      return done(path);
    }
    case 'mknod': {
      const m = req.mknod!;
      const path = checkChildPath(m.path);
      checkMknodType(m.mode, index.allowDevices);
      const owner = m.owner ? checkOwner(m.owner) : undefined;
      const abs = await index.paths.safeAbs(path);
      await fs.mknod(abs, m.mode & (S_IFMT | 0o777), Number(m.rdev));
      await modeAsAsked(fs, abs, () => m.mode & 0o7777);
      await giveMadeOwner(fs, abs, path, owner);
      return doneWithParent(path);
    }
    case 'link': {
      const existing = checkChildPath(req.link!.existing, 'existing');
      const path = checkChildPath(req.link!.path);
      const known = index.entries.get(existing);
      await fs.link(await index.paths.safeAbs(existing), await index.paths.safeAbs(path));
      const a = await index.adopt(existing, known, mine);
      const b = await index.adopt(path, known, mine);
      return { changed: [{ path: existing, entry: a }, { path, entry: b }] };
    }
    case 'chmod': {
      const path = checkPath(req.chmod!.path);
      const abs = await index.paths.safeAbs(path);
      const known = index.entries.get(path);
      const mode = req.chmod!.mode & 0o7777;
      // The type of what is there when it is changed decides (set-id.ts): not the index's, maybe behind.
      await chmodNoFollow(fs, abs, (stMode) => (isReg(stMode) ? index.fileMode(mode, path) : mode));
      return keep(path, known);
    }
    case 'chown': {
      const path = checkPath(req.chown!.path);
      const abs = await index.paths.safeAbs(path);
      const st = await fs.lstatOrNull(abs);
      if (!st) throw new FsError('ENOENT', `"${path}" does not exist`);
      const known = index.entries.get(path);
      const uid = req.chown!.uid < 0 ? st.uid : req.chown!.uid;
      const gid = req.chown!.gid < 0 ? st.gid : req.chown!.gid;
      await fs.lchown(abs, uid, gid);
      return keep(path, known);
    }
    case 'utimens': {
      const u = req.utimens!;
      const path = checkPath(u.path);
      const abs = await index.paths.safeAbs(path);
      const st = await fs.lstatOrNull(abs);
      if (!st) throw new FsError('ENOENT', `"${path}" does not exist`);
      const known = index.entries.get(path);
      // Absent means UTIME_OMIT: keep exactly what is there.
      const atime = u.atimeNow ? nowNs() : u.atime ? fromTimespec(u.atime) : st.atimeNs;
      const mtime = u.mtimeNow ? nowNs() : u.mtime ? fromTimespec(u.mtime) : st.mtimeNs;
      const addon = nativeAddon();
      if (addon) {
        // Exact nanoseconds (lutimes takes seconds as a double).
        const sec = (ns: bigint): number => Number(ns / 1_000_000_000n);
        const nsec = (ns: bigint): number => Number(ns % 1_000_000_000n);
        addon.utimensat(abs, sec(atime), nsec(atime), sec(mtime), nsec(mtime));
      } else {
        await lutimes(abs, nsToSeconds(atime), nsToSeconds(mtime));
      }
      return keep(path, known);
    }
    case 'truncate': {
      const path = checkChildPath(req.truncate!.path);
      const abs = await index.paths.safeAbs(path);
      const fh = await open(abs, C.O_WRONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
      try {
        await fh.truncate(req.truncate!.size);
      } finally {
        await fh.close();
      }
      return done(path);
    }
    default:
      throw new FsError('EINVAL', `unknown mutation "${String(req.op)}"`);
  }
}

async function chmodNoFollow(fs: MetaCalls, abs: string, modeFor: (stMode: number) => number): Promise<void> {
  try {
    await fs.chmodNoFollow(abs, modeFor);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new FsError('EOPNOTSUPP', 'the mode of a symlink cannot be changed');
    throw err;
  }
}

/**
 * After a mkdir or mknod, which took the node's umask off the mode too (the
 * caller's was taken off on its side): the mode `want` gives for what was
 * made, set only where it differs.
 */
async function modeAsAsked(fs: MetaCalls, abs: string, want: (madeMode: number) => number): Promise<void> {
  const made = (await fs.lstat(abs)).mode;
  const mode = want(made);
  if ((made & 0o7777) !== mode) await chmodNoFollow(fs, abs, () => mode);
}

/**
 * What a mknod may make here: a fifo or a socket (a name, nothing more, on
 * the node); a device node only where the node allows it (serve
 * --allow-devices): on the node's own disk it is a real device, which any
 * local user its mode lets in could open. A regular file is made by a
 * commit, a directory by a mkdir.
 */
function checkMknodType(mode: number, allowDevices: boolean): void {
  const type = mode & S_IFMT;
  if (type === S_IFIFO || type === S_IFSOCK) return;
  if (type === S_IFCHR || type === S_IFBLK) {
    if (allowDevices) return;
    throw new FsError('EPERM', 'this node does not make device nodes (serve --allow-devices lets it)');
  }
  throw new FsError('EINVAL', `mknod makes fifos, sockets and device nodes, not type 0${type.toString(8)}`);
}
