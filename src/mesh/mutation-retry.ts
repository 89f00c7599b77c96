// A mutation whose first attempt failed in transport (the node died or the
// link broke before the answer) may have been applied all the same, and a
// retry, on the same node or a replica of the same directory, then meets
// its own effect: mkdir finds the directory, unlink finds nothing. Such an
// answer is the operation having succeeded, when the state the node shows
// is exactly what the operation would have made.
import type { WEntryOut, WMutateReplyOut, WMutateRequest } from '../wire/types.js';
import { errnoOf } from '../wire/errors.js';
import { isDir, isLnk, S_IFMT } from '../content/attr.js';
import type { NodeConnection } from './connection.js';
import { parentOf } from '../wire/rel-path.js';
import { namesChanged } from '../wire/mutation-names.js';

type Request = Omit<WMutateRequest, 'workspace'>;

async function statOrNull(c: NodeConnection, path: string): Promise<WEntryOut | null> {
  return c.stat(path).catch((err) => (errnoOf(err) === 'ENOENT' ? null : Promise.reject(err)));
}

/**
 * The reply the mutation would have had, when `err` is its own earlier
 * effect; undefined otherwise. With its directories, as the node's reply
 * has them (their times and link counts moved): the node does not send the
 * caller's own changes on its feed, so nothing else would tell it.
 */
export async function appliedBefore(c: NodeConnection, req: Request, err: unknown): Promise<WMutateReplyOut | undefined> {
  const r = await madeBefore(c, req, err);
  if (!r) return undefined;
  for (const dir of new Set(namesChanged(req).map(parentOf))) {
    const e = await statOrNull(c, dir);
    if (e && !r.entries.some((x) => x.name === dir)) r.entries.push({ ...e, name: dir });
  }
  return r;
}

async function madeBefore(c: NodeConnection, req: Request, err: unknown): Promise<WMutateReplyOut | undefined> {
  const errno = errnoOf(err);
  const reply = (...entries: [string, WEntryOut][]): WMutateReplyOut => ({ entries: entries.map(([path, e]) => ({ ...e, name: path })), generation: 0 });
  const mode = (e: WEntryOut): number => Number(e.attr?.mode ?? 0);
  if (errno === 'EEXIST') {
    if (req.mkdir) {
      const e = await statOrNull(c, req.mkdir.path!);
      return e && isDir(mode(e)) ? reply([req.mkdir.path!, e]) : undefined;
    }
    if (req.symlink) {
      const e = await statOrNull(c, req.symlink.path!);
      return e && isLnk(mode(e)) && e.symlinkTarget === req.symlink.target ? reply([req.symlink.path!, e]) : undefined;
    }
    if (req.mknod) {
      const e = await statOrNull(c, req.mknod.path!);
      const same = e && (mode(e) & S_IFMT) === (Number(req.mknod.mode) & S_IFMT) && Number(e.attr?.rdev ?? 0) === Number(req.mknod.rdev ?? 0);
      return same ? reply([req.mknod.path!, e]) : undefined;
    }
    if (req.link) {
      const [a, b] = await Promise.all([statOrNull(c, req.link.existing!), statOrNull(c, req.link.path!)]);
      return a && b && String(a.attr?.ino) === String(b.attr?.ino) ? reply([req.link.existing!, a], [req.link.path!, b]) : undefined;
    }
  }
  if (errno === 'ENOENT') {
    if (req.unlink || req.rmdir) return reply();
    if (req.rename && !req.rename.exchange) {
      const [from, to] = await Promise.all([statOrNull(c, req.rename.from!), statOrNull(c, req.rename.to!)]);
      return !from && to ? reply([req.rename.to!, to]) : undefined;
    }
  }
  return undefined;
}
