// Where a commit assembles a file's new version before it takes the target's
// name. With the native addon it is an O_TMPFILE file: it has no name at all
// until it is complete, fsynced and linked in, so a crash can never leave a
// partial file under any name. Without the addon (or on a filesystem that
// lacks O_TMPFILE) it is a 0600 temp file beside the target, which the
// index reclaims after a crash.
import { open as openHandle, rename, unlink, link, type FileHandle } from 'node:fs/promises';
import { writeAt } from '../util/positional-io.js';
import { close, constants as C, fchmod, fchown, fsync, ftruncate, open, write } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { nsToSeconds } from '../content/attr.js';
import { nativeAddon, type NativeAddon } from '../native/addon.js';
import { TEMP_PREFIX } from './workspace-index.js';

export interface StagedFile {
  /** Its descriptor, open for writing (for copies made by the kernel). */
  readonly fd: number;
  write(data: Buffer, at: number): Promise<void>;
  chmod(mode: number): Promise<void>;
  chown(uid: number, gid: number): Promise<void>;
  /** Sets both times, to the nanosecond where the platform allows. */
  times(atimeNs: bigint, mtimeNs: bigint): Promise<void>;
  sync(): Promise<void>;
  /**
   * The bytes written so far reach the disk (no metadata beyond what reading
   * them back needs), and leave the page cache where the addon can drop
   * them (write_out.c says why).
   */
  writeOut(): Promise<void>;
  /** Cuts (or extends) the file to `size` bytes. */
  truncate(size: number): Promise<void>;
  /** Gives the file the name `abs`, which must not exist yet (EEXIST otherwise). */
  linkAs(abs: string): Promise<void>;
  /** Puts the file in place of `abs`, atomically. */
  replace(abs: string): Promise<void>;
  /** Drops whatever name or handle is left; safe to call more than once. */
  discard(): Promise<void>;
}

const tempName = (dir: string): string => join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);

/** Gives the file at `existing` the name `abs` as well, in place of what `abs` names (atomically: a temp name beside it, renamed over it). */
export async function linkOver(existing: string, abs: string): Promise<void> {
  const tmp = tempName(dirname(abs));
  await link(existing, tmp);
  try {
    await rename(tmp, abs);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** A new staged file in `dir` (the target's directory), readable by its owner only. */
export async function stageIn(dir: string): Promise<StagedFile> {
  const addon = nativeAddon();
  if (addon) {
    try {
      // Opened on the thread pool (creating a file costs a few hundred µs of
      // kernel time here); only naming it later needs the addon's linkat.
      return new UnnamedFile(addon, await openP(dir, O_TMPFILE | C.O_RDWR, 0o600));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Filesystems without O_TMPFILE answer one of these: use a named temp file there.
      if (code !== 'EOPNOTSUPP' && code !== 'EISDIR' && code !== 'ENOTSUP') throw err;
    }
  }
  const tmp = tempName(dir);
  return new NamedTempFile(tmp, await openHandle(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600));
}

/** Linux's O_TMPFILE (with O_DIRECTORY, as the kernel wants it); Node has no constant for it. */
const O_TMPFILE = 0o20000000 | C.O_DIRECTORY;

const openP = promisify(open);
const writeP = promisify(write);
const fchmodP = promisify(fchmod);
const fchownP = promisify(fchown);
const fsyncP = promisify(fsync);
const ftruncateP = promisify(ftruncate);
const closeP = promisify(close);

class UnnamedFile implements StagedFile {
  private open = true;

  constructor(
    private readonly addon: NativeAddon,
    readonly fd: number,
  ) {}

  async write(data: Buffer, at: number): Promise<void> {
    for (let done = 0; done < data.length; ) done += (await writeP(this.fd, data, done, data.length - done, at + done)).bytesWritten;
  }

  chmod(mode: number): Promise<void> {
    return fchmodP(this.fd, mode);
  }

  chown(uid: number, gid: number): Promise<void> {
    return fchownP(this.fd, uid, gid);
  }

  async times(atimeNs: bigint, mtimeNs: bigint): Promise<void> {
    const s = (ns: bigint): number => Number(ns / 1_000_000_000n);
    const n = (ns: bigint): number => Number(ns % 1_000_000_000n);
    this.addon.futimens(this.fd, s(atimeNs), n(atimeNs), s(mtimeNs), n(mtimeNs));
  }

  sync(): Promise<void> {
    return fsyncP(this.fd);
  }

  writeOut(): Promise<void> {
    return this.addon.writeOut(this.fd);
  }

  truncate(size: number): Promise<void> {
    return ftruncateP(this.fd, size);
  }

  async linkAs(abs: string): Promise<void> {
    this.addon.linkTmpfile(this.fd, abs);
  }

  async replace(abs: string): Promise<void> {
    // A name that can be renamed over the target, beside it: it appears only
    // now that the content is complete and on disk.
    const tmp = tempName(dirname(abs));
    this.addon.linkTmpfile(this.fd, tmp);
    try {
      await rename(tmp, abs);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  async discard(): Promise<void> {
    if (!this.open) return;
    this.open = false;
    await closeP(this.fd);
  }
}

class NamedTempFile implements StagedFile {
  private named = true;
  private closed = false;

  constructor(
    private readonly tmp: string,
    private readonly fh: FileHandle,
  ) {}

  get fd(): number {
    return this.fh.fd;
  }

  async write(data: Buffer, at: number): Promise<void> {
    await writeAt(this.fh, data, at);
  }

  chmod(mode: number): Promise<void> {
    return this.fh.chmod(mode);
  }

  chown(uid: number, gid: number): Promise<void> {
    return this.fh.chown(uid, gid);
  }

  times(atimeNs: bigint, mtimeNs: bigint): Promise<void> {
    // Node's futimes takes seconds as a double: exact to about a quarter microsecond.
    return this.fh.utimes(nsToSeconds(atimeNs), nsToSeconds(mtimeNs));
  }

  sync(): Promise<void> {
    return this.fh.sync();
  }

  writeOut(): Promise<void> {
    return nativeAddon()?.writeOut(this.fh.fd) ?? this.fh.datasync();
  }

  truncate(size: number): Promise<void> {
    return this.fh.truncate(size);
  }

  linkAs(abs: string): Promise<void> {
    return link(this.tmp, abs);
  }

  async replace(abs: string): Promise<void> {
    await this.close();
    await rename(this.tmp, abs);
    this.named = false;
  }

  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  async discard(): Promise<void> {
    await this.close().catch(() => undefined);
    if (this.named) {
      this.named = false;
      await unlink(this.tmp).catch(() => undefined);
    }
  }
}

/** Bytes a big commit writes between two early syncs of its staged file. */
export const EARLY_SYNC_BYTES = 32 << 20;

/**
 * A big file's commit (or its draft, drafts.ts) writes its staged file out
 * while it is still assembling it: every EARLY_SYNC_BYTES an fdatasync starts on the thread
 * pool (one at a time) while the copy goes on, so the closing fsync only
 * has the last stretch left to write. Measured with a 256 MiB file here,
 * that fsync alone took ~150 ms of a ~340 ms commit. Each sync also drops
 * the file's clean pages from the page cache (StagedFile.writeOut). Bytes
 * the kernel copies in (copyChunks) are not counted here: that job writes
 * them out and drops them itself (chunk_copy.c).
 */
export class EarlySync {
  private unsynced = 0;
  private running: Promise<void> | undefined;
  /**
   * A failed early sync fails the commit: Linux reports a writeback error
   * once per open file, so the closing fsync on the same descriptor would
   * not see it again.
   */
  private failed: Error | undefined;

  constructor(private readonly file: StagedFile) {}

  wrote(bytes: number): void {
    this.unsynced += bytes;
    if (this.unsynced < EARLY_SYNC_BYTES || this.running || this.failed) return;
    this.unsynced = 0;
    this.running = this.file
      .writeOut()
      .catch((err: Error) => void (this.failed ??= err))
      .finally(() => (this.running = undefined));
  }

  /** Waits for the sync under way, if any (the staged file must not be closed beneath it); rejects if one failed. */
  async done(): Promise<void> {
    await this.running;
    if (this.failed) throw this.failed;
  }
}
