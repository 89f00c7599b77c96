// The atomic write: a new version of a file is assembled from chunks in a
// staged file in the target's directory (with no name at all where O_TMPFILE
// is there, else a 0600 temp file: never visible with wrong permissions),
// given its owner (the writer's, or the replaced file's; as far as the
// process may), mode and times, fsynced, put in place of the target (or
// linked in, for a new file, only if the name is still free), and the
// directory fsynced. If the target changed since the writer read it, nothing
// is overwritten: the writer's version becomes a conflict copy beside it.
import { dirname, basename, extname } from 'node:path';
import { hostname } from 'node:os';
import { fstat } from 'node:fs';
import { promisify } from 'node:util';
import { attrFromStats, isReg, type Attr } from '../content/attr.js';
import { checkChunkList, fileDigest, hex, type ChunkRef } from '../content/manifest.js';
import { isZeroRun } from '../content/chunk-file.js';
import { DEFAULT_CHUNKING } from '../content/chunker.js';
import { FsError } from '../wire/errors.js';
import { log } from '../log.js';
import { ownerNotGiven } from './owners.js';
import { checkChildPath, joinRel, parentOf } from './paths.js';
import type { Origin, WorkspaceIndex } from './workspace-index.js';
import { EARLY_SYNC_BYTES, EarlySync, stageIn, type StagedFile } from './staged-file.js';
import { fsyncDir } from './fsync-dir.js';
import { relink } from './relink.js';
import type { HoldFileNames } from './name-locks.js';
import { nativeAddon } from '../native/addon.js';
import { nodeCommits } from '../admin/metrics.js';

import type { ChunkSource } from './chunk-source.js';
import { checkDraftId, type TakenDraft } from './drafts.js';
import type { IndexEntry } from './index-entry.js';

const fstatP = promisify(fstat);

export interface CommitInput {
  path: string;
  baseDigest?: Buffer;
  expectAbsent: boolean;
  digest: Buffer;
  size: number;
  chunks: ChunkRef[];
  mode: number;
  mtimeNs?: bigint;
  atimeNs?: bigint;
  clientId: string;
  /** The writer's own earlier versions whose commits may have landed unheard: the file holding one is not a conflict. */
  alsoBases?: Buffer[];
  /** Chunk bytes sent with the commit, by hash (latin1), already verified. */
  inline?: Map<string, Buffer>;
  /** The draft the writer put the chunks in (drafts.ts), if any. */
  draft?: string;
  /** The owner the writer gave the file (-1: that part as it would be without). */
  owner?: { uid: number; gid: number };
  /** Who wrote it (CommitRequest.writer): that writer's own change feed does not carry this commit. */
  writer?: string;
  /** The writer records CommitResult.also (CommitRequest.reads_also): its feed need not carry those either. */
  readsAlso?: boolean;
  /** Holds the locks of the file's names while the commit puts it in place (NameLocks.commit); without it, nothing is held. */
  holdFileNames?: HoldFileNames;
}

export interface CommitResult {
  conflict: boolean;
  path: string;
  entry: IndexEntry;
  /**
   * Other entries the commit changed, as they are now: the file's other
   * names (hard links), which name the new version too, and the directories
   * of the names it made or replaced (their times and sizes moved).
   */
  also?: { path: string; entry: IndexEntry }[];
  generation: number;
  /** Why the owner the writer gave could not be given (the file is the node's), if so. */
  ownerErrno?: string;
}

const mayChown = typeof process.getuid === 'function' && process.getuid() === 0;

export function conflictName(path: string, clientId: string, when = new Date(), n = 0): string {
  const base = basename(path);
  const ext = extname(base);
  const stem = ext && ext !== base ? base.slice(0, -ext.length) : base;
  const stamp = when.toISOString().replace(/[-:]/g, '').replace(/\..*$/, 'Z');
  const who = (clientId || 'unknown').replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64);
  const name = `${stem}.conflict-${who}-${stamp}${n ? `-${n}` : ''}${ext}`;
  return joinRel(parentOf(path), name.length > 255 ? name.slice(name.length - 255) : name);
}

/** Chunks, and bytes, read ahead of the one being written while a commit assembles its file. */
const COMMIT_READ_AHEAD = 4;
const COMMIT_READ_AHEAD_BYTES = 8 << 20;

export async function commitFile(index: WorkspaceIndex, source: ChunkSource, input: CommitInput): Promise<CommitResult> {
  const path = checkChildPath(input.path);
  const problem = checkChunkList(input.chunks, input.size);
  if (problem) throw new FsError('EINVAL', `commit of "${path}": ${problem}`);
  if (!fileDigest(input.chunks).equals(input.digest)) throw new FsError('EINVAL', `commit of "${path}": digest does not match the chunk list`);
  const fast = await commitNewFile(index, path, input);
  if (fast) {
    nodeCommits.inc({ how: 'new-file' });
    return fast;
  }

  const abs = await index.paths.safeAbs(path);
  const dir = dirname(abs);
  // The draft becomes the staged file: what it holds is written already.
  const draft = input.draft ? await source.drafts.take(checkDraftId(input.draft), dir) : undefined;
  const staged = draft?.file ?? (await stageIn(dir));
  let relinkDue = false;
  try {
    const holes = await assemble(staged, source, path, input, draft);
    // A draft: chunks placed past the end of what the file became. Holes: the size.
    if (draft || holes) await staged.truncate(input.size);
    // What the file is now gives the version its mode and owner; the base is checked when it is put in place.
    const before = (await index.calls.lstatOrNull(abs)) ?? undefined;
    let ownerErrno = await giveModeAndOwner(index, staged, path, input, before);
    if (input.mtimeNs !== undefined) await staged.times(input.atimeNs ?? input.mtimeNs, input.mtimeNs);
    await staged.sync();
    // A big file leaves the page cache whole once on disk, its last stretch too (what the
    // early syncs drop depends on how far the writes ran ahead of them: staged-file.ts).
    if (input.size >= EARLY_SYNC_BYTES) await staged.writeOut().catch(() => undefined);

    // Put in place and recorded holding the file's names (name-locks.ts): nothing changes them meanwhile.
    const holdFileNames: HoldFileNames = input.holdFileNames ?? ((run) => run(index.linksOf(path)));
    const placed = await holdFileNames(async (otherNames) => {
      // The base checked again holding the names: what another name's commit or a mutation did meanwhile counts.
      let { conflict, current, found } = await checkBase(index, path, abs, input);
      // A chmod or chown of the file made meanwhile is not undone: the version takes what it gave.
      if (current && !(before && sameModeAndOwner(current, before))) {
        ownerErrno = await giveModeAndOwner(index, staged, path, input, current);
        await staged.sync();
      }
      // The file's other names: written in place on a disk, a file changes under all of them.
      const links = !conflict && current && current.nlink > 1 ? otherNames : [];
      if (!conflict && !current) {
        // A new file takes its name only if the name is still free: link() decides atomically.
        try {
          await staged.linkAs(abs);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          conflict = true;
        }
      } else if (!conflict) {
        // Its other names follow below; a node killed in between finishes that when it starts (relink.ts).
        if (links.length > 0) relinkDue = await index.relinkDue(path, current!, attrFromStats(await fstatP(staged.fd, { bigint: true })), links);
        await staged.replace(abs);
      }
      let finalPath = path;
      if (conflict) {
        finalPath = await placeConflictCopy(index, staged, path, input.clientId || hostname());
        // What the writer based its version on, and what it met: enough to tell a real conflict from a lost ordering.
        const based = input.expectAbsent ? 'no file' : input.baseDigest?.length ? hex(input.baseDigest).slice(0, 16) : 'nothing said';
        log.warn({ workspace: index.id, path, conflictPath: finalPath, client: input.clientId, based, found: found ? hex(found).slice(0, 16) : 'no file' }, 'commit conflict: kept the node version, stored the writer version beside it');
      }
      // The draft's chunks are in a workspace file now: no longer read from the draft, which closes.
      if (input.draft) await source.drafts.drop(input.draft, !!draft);
      await staged.discard();
      const relinked = links.length > 0 ? await relink(index, abs, current!, links) : [];
      const dirs = [...new Set([finalPath, ...relinked].map(parentOf))];
      await Promise.all(dirs.map((d) => fsyncDir(index.paths.abs(d))));
      const attr = await index.calls.lstat(index.paths.abs(finalPath));
      const entry: IndexEntry = { attr, digest: input.digest, chunks: input.chunks };
      const statAt = index.generation;
      const dirEntries = await Promise.all(dirs.map(async (d) => ({ path: d, entry: { attr: await index.calls.lstat(index.paths.abs(d)) }, statAt })));
      const alsoPaths = [...relinked, ...dirs];
      const changes = await index.apply([{ path: finalPath, entry }, ...relinked.map((p) => ({ path: p, entry })), ...dirEntries], ownWithReply(input, finalPath, alsoPaths));
      return { conflict, finalPath, entry, also: recorded(index, alsoPaths), generation: changes[0]!.generation };
    });
    // Uploaded chunks were staged; chunks sent inline never were. Removed
    // after the answer (a big file has hundreds, one unlink each); one left
    // behind by a crash expires with the staging TTL.
    // Each hash once: a sparse file names the chunk of its holes thousands of times.
    const uploaded = new Map(input.chunks.filter((c) => !input.inline?.has(c.hash.toString('latin1')) && !isPlaced(draft?.placed, c)).map((c) => [c.hash.toString('latin1'), c.hash]));
    void Promise.all([...uploaded.values()].map((h) => source.dropStaged(h)));
    nodeCommits.inc({ how: draft ? 'draft' : 'staged' });
    return { conflict: placed.conflict, path: placed.finalPath, entry: placed.entry, also: placed.also, generation: placed.generation, ownerErrno };
  } finally {
    // First: a record left behind is finished at the next start (relink.ts), harmlessly but needlessly.
    if (relinkDue) await index.relinkDone(path);
    // Taken: its chunks are no longer read from it (the file is `staged`). Not taken: discarded.
    if (input.draft) await source.drafts.drop(input.draft, !!draft);
    await staged.discard();
  }
}

/**
 * The staged file's mode and owner, from the writer's request or else the
 * file it replaces (`current`). Returns why the writer's owner could not be
 * given, if so (see giveOwner).
 */
async function giveModeAndOwner(index: WorkspaceIndex, staged: StagedFile, path: string, input: CommitInput, current: Attr | undefined): Promise<string | undefined> {
  // No mode given (0): the file keeps the one it has, or gets 0644.
  const mode = modeGiven(input.mode) ? index.fileMode(input.mode, path) : current ? index.fileMode(current.mode, path) : 0o644;
  // The owner first: a chown clears the set-id bits the mode may carry. Without the
  // owner its writer named, the file gets none (its bytes would run as the node's user).
  const ownerErrno = await giveOwner(staged, path, input.owner, current);
  await staged.chmod(ownerErrno ? mode & ~0o6000 : mode);
  return ownerErrno;
}

/**
 * Whether a commit names the file's mode. A mount sends it with the type
 * bits (S_IFREG), so that 0000 is a mode too; an older one sends the
 * permission bits alone, where 0 meant none given.
 */
const modeGiven = (mode: number): boolean => mode !== 0;

const sameModeAndOwner = (a: Attr, b: Attr): boolean => a.mode === b.mode && a.uid === b.uid && a.gid === b.gid;

/**
 * The staged file's owner: each part the writer gave, else the replaced
 * file's (which only root may give; otherwise the file is the node's). One
 * the node cannot give (EPERM: it does not run as root; EINVAL: an id its
 * user namespace does not map) is logged and the file committed anyway:
 * the content is what must not be lost. Returns why, when the writer's
 * owner was not given (the reply says so, and its entry shows the owner
 * the file has).
 */
async function giveOwner(staged: StagedFile, path: string, wanted: CommitInput['owner'], current: Attr | undefined): Promise<string | undefined> {
  const kept = mayChown && current;
  const uid = wanted && wanted.uid >= 0 ? wanted.uid : kept ? current.uid : -1;
  const gid = wanted && wanted.gid >= 0 ? wanted.gid : kept ? current.gid : -1;
  if (uid < 0 && gid < 0) return undefined;
  try {
    await staged.chown(uid, gid);
    return undefined;
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code ?? 'EIO';
    ownerNotGiven(path, uid, gid, errno);
    return wanted ? errno : undefined;
  }
}

/**
 * Whether anything was written to a range of the draft (`written`, sorted by
 * offset): asked for ranges in increasing order (the chunk list's), so one
 * pass over them.
 */
function writtenRanges(written: readonly { offset: number; length: number }[]): { overlaps(from: number, to: number): boolean } {
  let i = 0;
  return {
    overlaps(from, to) {
      while (i < written.length && written[i]!.offset + written[i]!.length <= from) i++;
      // Written ranges may overlap each other: any that starts before `to` and has not ended by `from`.
      for (let j = i; j < written.length && written[j]!.offset < to; j++) if (written[j]!.offset + written[j]!.length > from) return true;
      return false;
    },
  };
}

/** The chunk's bytes are in the draft at its offset already. */
function isPlaced(placed: ReadonlyMap<number, ChunkRef> | undefined, c: ChunkRef): boolean {
  const p = placed?.get(c.offset);
  return !!p && p.length === c.length && p.hash.equals(c.hash);
}

/**
 * Writes a new version's bytes into its staged file. Chunks the workspace
 * holds nowhere else (a new file's, uploaded for this commit) are copied
 * from their staged files by the kernel, in one job beside the rest; the
 * others (inline, or in a workspace file: an edit's unchanged chunks) are
 * read and written here; those `placed` in the file (its draft) are skipped.
 * The chunks of runs of zeros are not written either where nothing was
 * placed: they stay holes, as they were in the writer's file (a `truncate -s
 * 10G` makes no 10 GiB of blocks), and true is returned (the file's size
 * must then be set). Settles only once nothing writes to `staged` any more.
 */
async function assemble(staged: StagedFile, source: ChunkSource, path: string, input: CommitInput, draft?: TakenDraft): Promise<boolean> {
  const placed = draft?.placed;
  const addon = nativeAddon();
  const inline = (c: ChunkRef): Buffer | undefined => input.inline?.get(c.hash.toString('latin1'));
  const byKernel: { c: ChunkRef; file: string }[] = [];
  const byHand: ChunkRef[] = [];
  let holes = false;
  const inDraft = writtenRanges(draft?.written ?? []);
  for (const c of input.chunks) {
    if (isPlaced(placed, c)) continue;
    // A draft may hold other bytes there (chunks sent ahead of a change): zeros are where nothing was written.
    if (isZeroRun(c, DEFAULT_CHUNKING) && !inDraft.overlaps(c.offset, c.offset + c.length)) {
      holes = true;
      continue;
    }
    const file = addon && !inline(c) ? source.stagedOnly(c.hash, path) : undefined;
    if (file) byKernel.push({ c, file });
    else byHand.push(c);
  }
  const copied = byKernel.length
    ? addon!.copyChunks(staged.fd, byKernel.map((x) => x.file), byKernel.map((x) => x.c.offset), byKernel.map((x) => x.c.length)).then(
        () => undefined,
        (err: NodeJS.ErrnoException) => err,
      )
    : undefined;
  const early = new EarlySync(staged);
  try {
    await writeChunks(staged, early, source, path, byHand, inline);
    const failed = await copied;
    // A staged chunk gone meanwhile: a commit beside this one that used it
    // may have put it in a workspace file and let the staged copy go. Those
    // chunks are looked up again (and read from wherever they are now).
    if (failed?.code === 'ENOENT') await writeChunks(staged, early, source, path, byKernel.map((x) => x.c), inline);
    else if (failed) throw failed;
  } finally {
    await copied; // nothing writes to the staged file once this returns
    await early.done();
  }
  return holes;
}

/**
 * Chunks read (from the request, a workspace file or a staged file) and
 * written into `staged`, the next ones read while one is written: reads and
 * writes share the thread pool instead of taking turns. Measured with 256
 * MiB files, this copy was most of a commit's 0.32 s (the fsync 0.1 s); read
 * ahead, the commit takes 0.27 s. A few chunks and a few MiB at most:
 * commits run side by side, and other calls need the thread pool too.
 */
async function writeChunks(staged: StagedFile, early: EarlySync, source: ChunkSource, path: string, chunks: ChunkRef[], inline: (c: ChunkRef) => Buffer | undefined): Promise<void> {
  const reads: Promise<Buffer>[] = [];
  let next = 0; // the next chunk to start reading
  let aheadBytes = 0; // bytes of the reads started and not yet taken
  const readAhead = (taken: number): void => {
    while (next < chunks.length && (next === taken || (next - taken < COMMIT_READ_AHEAD && aheadBytes + chunks[next]!.length <= COMMIT_READ_AHEAD_BYTES))) {
      const c = chunks[next]!;
      const p = Promise.resolve(inline(c) ?? source.read(c.hash, path));
      p.catch(() => undefined); // awaited in turn below; one failing early must not count as unhandled
      reads[next++] = p;
      aheadBytes += c.length;
    }
  };
  for (let i = 0; i < chunks.length; i++) {
    const c = chunks[i]!;
    readAhead(i);
    const data = await reads[i]!;
    delete reads[i];
    aheadBytes -= c.length;
    if (data.length !== c.length) throw new FsError('EIO', `chunk ${hex(c.hash)} has ${data.length} bytes, expected ${c.length}`);
    await staged.write(data, c.offset);
    early.wrote(c.length);
  }
}

/**
 * The common case (a tool creating files) in one job on a worker thread: a
 * file the index does not know, that may be created (new, or written without
 * a base), whose bytes all came inside the request (an empty file has none
 * to send). Undefined when that does not apply, when the name turned out to
 * be taken, or when the addon's confinement refused a path the general path
 * may still accept (an absolute symlink that stays inside the root): the
 * general path then decides, with its own errors.
 */
async function commitNewFile(index: WorkspaceIndex, path: string, input: CommitInput): Promise<CommitResult | undefined> {
  const addon = nativeAddon();
  if (!addon || index.entries.has(path)) return undefined;
  if (!input.expectAbsent && input.baseDigest?.length) return undefined; // it must exist: a base to check
  const parts: Buffer[] = [];
  for (const c of input.chunks) {
    const data = input.inline?.get(c.hash.toString('latin1'));
    if (!data || data.length !== c.length) return undefined;
    parts.push(data);
  }
  const [mtimeS, mtimeNs] = input.mtimeNs !== undefined ? secNsec(input.mtimeNs) : [null, 0];
  const [atimeS, atimeNs] = input.mtimeNs !== undefined ? secNsec(input.atimeNs ?? input.mtimeNs) : [null, 0];
  const owner = input.owner ?? { uid: -1, gid: -1 };
  let attr: Attr & { ownerErrno?: string; dir?: Attr };
  // The addon looks at the directory after the file is in it: asked for now (see WorkspaceIndex.apply).
  const statAt = index.generation;
  try {
    attr = await addon.writeNewFile(index.paths.root, parentOf(path), basename(path), parts.length === 1 ? parts[0]! : Buffer.concat(parts), modeGiven(input.mode) ? index.fileMode(input.mode, path) : 0o644, atimeS, atimeNs, mtimeS, mtimeNs, owner.uid, owner.gid);
  } catch {
    return undefined;
  }
  // The addon commits the file without the owner it could not give, as the general path does.
  const ownerErrno = attr.ownerErrno;
  if (ownerErrno) {
    ownerNotGiven(path, owner.uid, owner.gid, ownerErrno);
    delete attr.ownerErrno;
  }
  const dirAttr = attr.dir;
  delete attr.dir;
  // Its directory's new times then reach the writer on its feed, a moment after the close (said once: an addon built before it never does).
  if (!dirAttr && !saidNoDirAttr) {
    saidNoDirAttr = true;
    log.warn({ workspace: index.id, path }, "the addon did not report the directory of a file it committed; writers hear of directories' times on their feeds");
  }
  const entry: IndexEntry = { attr, digest: input.digest, chunks: input.chunks };
  const dirs = dirAttr ? [parentOf(path)] : [];
  const [change] = await index.apply([{ path, entry }, ...(dirAttr ? [{ path: parentOf(path), entry: { attr: dirAttr }, statAt }] : [])], ownWithReply(input, path, dirs));
  return { conflict: false, path, entry, also: recorded(index, dirs), generation: change!.generation, ownerErrno };
}

/** Whether this process said that its addon reports no directory (see commitNewFile). */
let saidNoDirAttr = false;

/** What the index holds for these paths now, for a reply: a stat found stale was taken again (see WorkspaceIndex.apply). */
function recorded(index: WorkspaceIndex, paths: readonly string[]): { path: string; entry: IndexEntry }[] {
  return paths.flatMap((path) => {
    const entry = index.entries.get(path);
    return entry ? [{ path, entry }] : [];
  });
}

/**
 * A commit's changes are its writer's (see Origin): the file and what the
 * reply carries besides it (CommitResult.also), if the writer records that
 * (an older one hears of those on its feed). The node's watcher, looking
 * at a directory later, finds it as recorded here and announces nothing:
 * its times no longer reach the mount a moment after the close, which tar
 * took for a directory changing while it read it.
 */
function ownWithReply(input: CommitInput, path: string, also: readonly string[]): Origin {
  return { origin: input.writer, named: new Set(input.readsAlso ? [path, ...also] : [path]) };
}

/** A time as timespec's seconds and nanoseconds (0 ≤ ns < 1e9, also before 1970). */
function secNsec(ns: bigint): [number, number] {
  let s = ns / 1_000_000_000n;
  if (s * 1_000_000_000n > ns) s -= 1n;
  return [Number(s), Number(ns - s * 1_000_000_000n)];
}

/**
 * Whether the writer's version conflicts with what the file holds now. Not a
 * conflict: the file still holds the writer's base, or one of its own earlier
 * versions (`alsoBases`), or already exactly the content being committed (a
 * retried commit whose first answer was lost: committing it again is safe).
 */
async function checkBase(index: WorkspaceIndex, path: string, abs: string, input: CommitInput): Promise<{ conflict: boolean; current?: Attr; found?: Buffer }> {
  const current = (await index.calls.lstatOrNull(abs)) ?? undefined;
  if (current && !isReg(current.mode)) throw new FsError('EISDIR', `"${path}" exists and is not a regular file`);
  if (!current) return { conflict: !input.expectAbsent && !!input.baseDigest?.length }; // deleted since the writer read it
  if (!input.expectAbsent && !input.baseDigest?.length) return { conflict: false, current };
  const now = (await index.validate(path)).digest!;
  const accepted = [input.digest, ...(input.expectAbsent ? [] : [input.baseDigest!]), ...(input.alsoBases ?? [])];
  return { conflict: !accepted.some((d) => d.equals(now)), current, found: now };
}

async function placeConflictCopy(index: WorkspaceIndex, staged: StagedFile, path: string, clientId: string): Promise<string> {
  const when = new Date();
  for (let n = 0; n < 100; n++) {
    const candidate = conflictName(path, clientId, when, n);
    try {
      await staged.linkAs(index.paths.abs(candidate)); // link never replaces an existing name
      return candidate;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  throw new FsError('EEXIST', `no free conflict-copy name beside "${path}"`);
}
