// File attributes as ghostfs carries them: lstat's fields with nanosecond
// times kept exact (bigint), and the stat tuple that decides whether a file
// must be re-hashed.
import type { BigIntStats } from 'node:fs';
import { Reader, Writer } from '../store/codec.js';

export interface Attr {
  dev: number;
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blocks: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFIFO = 0o010000;
export const S_IFSOCK = 0o140000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_ISGID = 0o2000;

export const isReg = (mode: number): boolean => (mode & S_IFMT) === S_IFREG;
export const isDir = (mode: number): boolean => (mode & S_IFMT) === S_IFDIR;
export const isLnk = (mode: number): boolean => (mode & S_IFMT) === S_IFLNK;

export function attrFromStats(st: BigIntStats): Attr {
  return {
    dev: Number(st.dev),
    ino: Number(st.ino),
    mode: Number(st.mode),
    nlink: Number(st.nlink),
    uid: Number(st.uid),
    gid: Number(st.gid),
    rdev: Number(st.rdev),
    size: Number(st.size),
    blocks: Number(st.blocks),
    atimeNs: st.atimeNs,
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
  };
}

/** A user or group id: below 2^32 - 1, which chown reads as "leave it" (-1). */
export function isId(id: number): boolean {
  return Number.isInteger(id) && id >= 0 && id < 0xffff_ffff;
}

/** The identity of a file's content as the filesystem reports it: if it is unchanged, so is the content. */
export function sameTuple(a: Attr, b: Attr): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs &&
    (a.mode & S_IFMT) === (b.mode & S_IFMT)
  );
}

/** Everything `ls -l` and `git status` look at (atime moves on every read: not a change). */
export function sameAttr(a: Attr, b: Attr): boolean {
  return sameTuple(a, b) && a.mode === b.mode && a.nlink === b.nlink && a.uid === b.uid && a.gid === b.gid;
}

const NS = 1_000_000_000n;

export interface Timespec {
  sec: number;
  nsec: number;
}

export function toTimespec(ns: bigint): Timespec {
  let sec = ns / NS;
  let nsec = ns % NS;
  if (nsec < 0n) {
    nsec += NS;
    sec -= 1n;
  }
  return { sec: Number(sec), nsec: Number(nsec) };
}

export function fromTimespec(t: { sec?: number | string; nsec?: number } | null | undefined): bigint {
  if (!t) return 0n;
  return BigInt(t.sec ?? 0) * NS + BigInt(t.nsec ?? 0);
}

/**
 * Seconds as Node's time-setting calls take them. A double keeps about a
 * quarter microsecond at today's epoch: exact nanoseconds need utimensat
 * (the native helper).
 */
export function nsToSeconds(ns: bigint): number {
  return Number(ns / 1000n) / 1e6;
}

export function writeAttr(w: Writer, a: Attr): void {
  w.uint(a.dev).uint(a.ino).uint(a.mode).uint(a.nlink).uint(a.uid).uint(a.gid).uint(a.rdev).uint(a.size).uint(a.blocks);
  w.i64(a.atimeNs).i64(a.mtimeNs).i64(a.ctimeNs);
}

export function readAttr(r: Reader): Attr {
  return {
    dev: r.uint(),
    ino: r.uint(),
    mode: r.uint(),
    nlink: r.uint(),
    uid: r.uint(),
    gid: r.uint(),
    rdev: r.uint(),
    size: r.uint(),
    blocks: r.uint(),
    atimeNs: r.i64(),
    mtimeNs: r.i64(),
    ctimeNs: r.i64(),
  };
}
