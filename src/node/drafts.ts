// Drafts: a big file's new version put together on the node while its writer
// is still writing it. A mount that follows a file written front to back
// sends its chunks ahead of the close, each naming the file's draft, its
// path and the chunk's offset. The node verifies each chunk as any upload
// and writes it at that offset of the draft: a staged file (staged-file.ts)
// in the file's directory, so it is what a commit would have staged there
// (same file system, group, default ACL), written out to disk as it grows.
// The commit naming that draft takes it as its staged file: only the chunks
// not placed there are written, and the closing fsync has little left.
// Without drafts every uploaded chunk was written to a file of its own and
// then copied into the commit's staged file: the bytes were written twice,
// and all synced at the close.
//
// A draft only helps: a commit whose draft is gone (expired, the node
// restarted, the file renamed into another directory meanwhile) assembles
// the file from chunks as before, reading the chunks a live draft holds from
// there. Placed chunks count as held (has-chunks), so they are not sent again.
import { read as readCb } from 'node:fs';
import { promisify } from 'node:util';
import { hashChunk, type ChunkRef } from '../content/manifest.js';
import { log } from '../log.js';
import { FsError } from '../wire/errors.js';
import { EarlySync, stageIn, type StagedFile } from './staged-file.js';

const readP = promisify(readCb);

/** Drafts open at once per workspace; chunks for a further one are staged as plain chunks. */
export const MAX_DRAFTS = 32;
/** Ids of drafts taken or dropped remembered, so a chunk arriving late does not start them again. */
const RETIRED_KEPT = 1024;

/** A draft's name, as the writer chose it: a few letters, digits, '-' or '_'. */
export function checkDraftId(id: string): string {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new FsError('EINVAL', `"${id.slice(0, 80)}" cannot name a draft (1 to 64 letters, digits, '-' or '_')`);
  return id;
}

/** A chunk written into a draft; `spoilt` once another chunk was written over part of it. */
interface Placed extends ChunkRef {
  spoilt: boolean;
}

interface Draft {
  id: string;
  /** The directory it was staged in: the file's when its first chunk came. */
  dir: string;
  file: Promise<StagedFile>;
  /** Chunks written into the file (each verified on arrival), sorted by offset. */
  placed: Placed[];
  /** The longest of them. */
  longest: number;
  writes: Set<Promise<void>>;
  early?: EarlySync;
  usedAt: number;
  /** A write failed: the draft is of no use (dropped when it is next touched). */
  failed?: Error;
}

/** A draft a commit took: its file and the chunks surely in it, by offset. */
export interface TakenDraft {
  file: StagedFile;
  placed: ReadonlyMap<number, ChunkRef>;
  /** Every range anything was written to (spoilt chunks too), sorted by offset: elsewhere the file is a hole. */
  written: readonly { offset: number; length: number }[];
}

/** Index of the first chunk of `placed` (sorted by offset) starting at or after `offset`. */
function firstFrom(placed: readonly Placed[], offset: number): number {
  let lo = 0;
  let hi = placed.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (placed[mid]!.offset >= offset) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export class Drafts {
  private readonly live = new Map<string, Draft>();
  /** Where a placed chunk's bytes can be read, by hash (latin1). */
  private readonly byHash = new Map<string, { draft: Draft; offset: number; length: number }>();
  /** Drafts a commit took and is still writing: their chunks are read from there meanwhile. */
  private readonly taken = new Map<string, Draft>();
  private readonly retired = new Set<string>();

  /** `dirOf`: the absolute directory of a file's path in the workspace (refusing paths outside it). */
  constructor(private readonly dirOf: (path: string) => Promise<string>) {}

  /**
   * Writes a verified chunk at `offset` of draft `id` for the file at
   * `path`, starting the draft if need be. False when the chunk is not in
   * the draft intact (a commit took the draft already, too many are open, it
   * failed, another chunk was written over this one): the caller keeps the
   * chunk as any other upload.
   */
  async place(id: string, path: string, offset: number, chunk: { hash: Buffer; data: Buffer }): Promise<boolean> {
    checkDraftId(id);
    if (this.retired.has(id) || !Number.isSafeInteger(offset) || offset < 0) return false;
    let d = this.live.get(id);
    if (!d) {
      if (this.live.size >= MAX_DRAFTS) return false;
      const dir = await this.dirOf(path);
      d = this.live.get(id); // another chunk of it may have started it meanwhile
      if (!d) {
        if (this.retired.has(id) || this.live.size >= MAX_DRAFTS) return false;
        const file = stageIn(dir);
        d = { id, dir, file, placed: [], longest: 0, writes: new Set(), usedAt: Date.now() };
        file.catch(() => undefined); // awaited below (and by take/drop)
        this.live.set(id, d);
      }
    }
    if (d.failed) return false;
    const draft = d;
    draft.usedAt = Date.now();
    const write = (async () => {
      const file = await draft.file;
      await file.write(chunk.data, offset);
      if (this.live.get(id) !== draft) return false; // dropped meanwhile (expired, failed)
      (draft.early ??= new EarlySync(file)).wrote(chunk.data.length);
      // A copy: the hash as decoded is a view of the whole message, which it would keep in memory.
      return this.record(draft, { hash: Buffer.from(chunk.hash), offset, length: chunk.data.length, spoilt: false });
    })();
    const landed = write.then(() => undefined, () => undefined);
    draft.writes.add(landed);
    try {
      return await write;
    } catch (err) {
      draft.failed ??= err as Error;
      log.warn({ draft: id, err: (err as Error).message }, 'a draft could not be written; its chunks are staged one by one');
      void this.drop(id);
      return false;
    } finally {
      draft.writes.delete(landed);
    }
  }

  has(hash: Buffer): boolean {
    return this.byHash.has(hash.toString('latin1'));
  }

  /**
   * A placed chunk's bytes, or undefined if no draft holds it (any more).
   * Checked against the hash: a chunk placed over it later may have changed them.
   */
  async read(hash: Buffer): Promise<Buffer | undefined> {
    const at = this.byHash.get(hash.toString('latin1'));
    if (!at) return undefined;
    try {
      const file = await at.draft.file;
      const buf = Buffer.allocUnsafe(at.length);
      const { bytesRead } = await readP(file.fd, buf, 0, at.length, at.offset);
      return bytesRead === at.length && hashChunk(buf).equals(hash) ? buf : undefined;
    } catch {
      return undefined; // taken and closed meanwhile: the chunk is in a workspace file now, or gone
    }
  }

  /**
   * Hands draft `id` to a commit once every write to it has landed, if it
   * was staged in `dir` (the target's directory: the file is linked in
   * there). Undefined when there is no such draft, it failed, or it is
   * elsewhere; that one stays readable until drop().
   */
  async take(id: string, dir: string): Promise<TakenDraft | undefined> {
    const d = this.live.get(id);
    if (!d || d.dir !== dir) return undefined;
    while (d.writes.size > 0) await Promise.all([...d.writes]);
    if (this.live.get(id) !== d || d.failed) return undefined;
    // Claimed before anything else is awaited: no expiry, late chunk or second commit gets at it now.
    // Its chunks stay readable until the commit is over (drop): the file may hold one at two places.
    this.live.delete(id);
    this.retire(id);
    this.taken.set(id, d);
    const file = await d.file.catch(() => undefined);
    try {
      if (!file) return undefined;
      await d.early?.done();
    } catch (err) {
      log.warn({ draft: id, err: (err as Error).message }, 'a draft failed to reach the disk; the commit assembles the file anew');
      return undefined;
    }
    return { file, placed: new Map(d.placed.filter((c) => !c.spoilt).map((c) => [c.offset, c])), written: d.placed };
  }

  /**
   * Done with draft `id`. `handedOver`: a commit took its file (and keeps or
   * discards it); otherwise the draft is discarded (a commit could not take
   * it, a failure, its time ran out).
   */
  async drop(id: string, handedOver = false): Promise<void> {
    const taken = this.taken.get(id);
    if (taken) {
      this.taken.delete(id);
      this.unindex(taken);
      if (!handedOver) await taken.file.then((f) => f.discard()).catch(() => undefined);
      return;
    }
    const d = this.live.get(id);
    if (!d) return;
    this.live.delete(id);
    this.retire(id);
    this.unindex(d);
    await Promise.all([...d.writes]);
    await d.early?.done().catch(() => undefined);
    await d.file.then((f) => f.discard()).catch(() => undefined);
  }

  /** Discards drafts nobody wrote to for `ttlMs`; returns how many. */
  async collect(ttlMs: number): Promise<number> {
    const now = Date.now();
    const old = [...this.live.values()].filter((d) => d.writes.size === 0 && now - d.usedAt >= ttlMs);
    for (const d of old) await this.drop(d.id);
    return old.length;
  }

  async close(): Promise<void> {
    for (const id of [...this.live.keys()]) await this.drop(id);
  }

  /**
   * Notes a chunk whose write ended. One written over part of another
   * spoils both: which bytes won is not known when writes overlap in time,
   * so neither counts as in the file (a spoilt one stays listed, and spoils
   * what is written over it later). The same chunk written twice at one
   * place changes nothing. Returns whether `c` is intact.
   */
  private record(d: Draft, c: Placed): boolean {
    const end = c.offset + c.length;
    // Sorted by offset: a chunk overlapping c starts less than the longest chunk's length before it.
    let i = firstFrom(d.placed, c.offset - d.longest + 1);
    for (; i < d.placed.length && d.placed[i]!.offset < end; i++) {
      const o = d.placed[i]!;
      if (o.offset === c.offset && o.length === c.length && o.hash.equals(c.hash) && !o.spoilt) return true;
      if (o.offset + o.length <= c.offset || c.length === 0 || o.length === 0) continue;
      this.spoil(d, o);
      c.spoilt = true;
    }
    d.placed.splice(firstFrom(d.placed, c.offset + 1), 0, c);
    d.longest = Math.max(d.longest, c.length);
    if (!c.spoilt) this.byHash.set(c.hash.toString('latin1'), { draft: d, offset: c.offset, length: c.length });
    return !c.spoilt;
  }

  private spoil(d: Draft, c: Placed): void {
    c.spoilt = true;
    const k = c.hash.toString('latin1');
    const at = this.byHash.get(k);
    if (at?.draft === d && at.offset === c.offset) this.byHash.delete(k);
  }

  private retire(id: string): void {
    this.retired.add(id);
    if (this.retired.size > RETIRED_KEPT) this.retired.delete(this.retired.values().next().value as string);
  }

  private unindex(d: Draft): void {
    for (const c of d.placed) {
      const k = c.hash.toString('latin1');
      if (this.byHash.get(k)?.draft === d) this.byHash.delete(k);
    }
  }
}
