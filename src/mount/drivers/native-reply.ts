// Answers to kernel requests for the native driver: attributes packed as the
// addon reads them, and a reply object that answers each request exactly once.
import type { Attr } from '../../content/attr.js';
import { log } from '../../log.js';
import type { NativeAddon } from '../../native/addon.js';
import { errnoNumber } from './driver.js';

export const ATTR_LEN = 15;
export const NS = 1_000_000_000n;

/**
 * Writes attributes as the addon reads them (see ATTR_LEN in fuse_driver.c):
 * stat's fields with the node's own inode number, then the kernel node id
 * the entry is known by (node-ids.ts).
 */
export function putAttr(out: Float64Array, at: number, a: Attr, nodeId = 0): void {
  out[at] = a.ino;
  out[at + 1] = a.mode;
  out[at + 2] = a.nlink;
  out[at + 3] = a.uid;
  out[at + 4] = a.gid;
  out[at + 5] = a.rdev;
  out[at + 6] = a.size;
  out[at + 7] = a.blocks;
  putTime(out, at + 8, a.atimeNs);
  putTime(out, at + 10, a.mtimeNs);
  putTime(out, at + 12, a.ctimeNs);
  out[at + 14] = nodeId;
}

function putTime(out: Float64Array, at: number, ns: bigint): void {
  let s = ns / NS;
  let rest = ns - s * NS;
  if (rest < 0n) {
    s -= 1n;
    rest += NS;
  }
  out[at] = Number(s);
  out[at + 1] = Number(rest);
}

/**
 * The answer to one kernel request, given exactly once: a second attempt is
 * a bug that is logged, never sent (the request is freed by the first), and
 * a reply the addon refuses (bad arguments) becomes EIO rather than silence.
 */
export class Reply {
  private done = false;
  constructor(
    private readonly addon: NativeAddon,
    readonly id: number,
    private readonly op: string,
  ) {}

  private send(fn: () => void): void {
    if (this.done) {
      log.error({ op: this.op }, 'a second reply to one kernel request was dropped');
      return;
    }
    this.done = true;
    try {
      fn();
    } catch (err) {
      log.error({ op: this.op, err: (err as Error).message }, 'cannot reply to the kernel; answering EIO');
      this.addon.replyErr(this.id, errnoNumber('EIO'));
    }
  }

  /** The caller's supplementary groups, as the kernel knows them (only before the answer; undefined when they cannot be had). */
  groups(): number[] | undefined {
    if (this.done) return undefined;
    return this.addon.reqGroups(this.id) ?? undefined;
  }

  get replied(): boolean {
    return this.done;
  }

  err(errno: number): void {
    this.send(() => this.addon.replyErr(this.id, errno));
  }

  ok(): void {
    this.err(0);
  }

  entry(attr: Float64Array | null): void {
    this.send(() => this.addon.replyEntry(this.id, attr));
  }

  attr(attr: Float64Array): void {
    this.send(() => this.addon.replyAttr(this.id, attr));
  }

  open(fh: number, bits: number, backingId?: number): void {
    this.send(() => this.addon.replyOpen(this.id, fh, bits, backingId));
  }

  create(attr: Float64Array, fh: number): void {
    this.send(() => this.addon.replyCreate(this.id, attr, fh, 0));
  }

  buf(b: Buffer, n: number): void {
    this.send(() => this.addon.replyBuf(this.id, b, n));
  }

  /** A read's data in pieces (the addon gathers up to 64; more are joined here first). */
  bufs(parts: Buffer[]): void {
    if (parts.length > 64) return this.buf(Buffer.concat(parts), Infinity);
    this.send(() => this.addon.replyBufs(this.id, parts));
  }

  write(n: number): void {
    this.send(() => this.addon.replyWrite(this.id, n));
  }

  lseek(offset: number): void {
    this.send(() => this.addon.replyLseek(this.id, offset));
  }

  readlink(target: string): void {
    this.send(() => this.addon.replyReadlink(this.id, target));
  }

  statfs(v: Float64Array): void {
    this.send(() => this.addon.replyStatfs(this.id, v));
  }

  /** Returns how many entries fitted (0 if the reply failed). */
  dir(size: number, plus: boolean, off: number, names: string[], attrs: Float64Array): number {
    let fitted = 0;
    this.send(() => (fitted = this.addon.replyDir(this.id, size, plus ? 1 : 0, off, names, attrs)));
    return fitted;
  }
}
