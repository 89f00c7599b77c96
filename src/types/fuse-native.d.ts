// The parts of fuse-native's API ghostfs uses (the package ships no types).
declare module 'fuse-native' {
  type Cb<T extends unknown[] = []> = (err: number, ...res: T) => void;
  export interface Stat {
    mode: number;
    uid: number;
    gid: number;
    size: number;
    dev: number;
    nlink: number;
    ino: number;
    rdev: number;
    blksize: number;
    blocks: number;
    /** Milliseconds since the epoch: the binding carries no finer time. */
    atime: number;
    mtime: number;
    ctime: number;
  }
  export interface Ops {
    init?(cb: Cb): void;
    getattr?(path: string, cb: Cb<[Stat?]>): void;
    fgetattr?(path: string, fd: number, cb: Cb<[Stat?]>): void;
    readdir?(path: string, cb: Cb<[string[]?, Stat[]?]>): void;
    open?(path: string, flags: number, cb: Cb<[number?]>): void;
    opendir?(path: string, flags: number, cb: Cb<[number?]>): void;
    release?(path: string, fd: number, cb: Cb): void;
    releasedir?(path: string, fd: number, cb: Cb): void;
    /** The callback takes the byte count (or a negative errno) first. */
    read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void): void;
    write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void): void;
    readlink?(path: string, cb: Cb<[string?]>): void;
    statfs?(path: string, cb: Cb<[Record<string, number>?]>): void;
    access?(path: string, mode: number, cb: Cb): void;
    create?(path: string, mode: number, cb: Cb<[number?]>): void;
    truncate?(path: string, size: number, cb: Cb): void;
    ftruncate?(path: string, fd: number, size: number, cb: Cb): void;
    /** Milliseconds; the binding passes the atime in both arguments. */
    utimens?(path: string, atime: number, mtime: number, cb: Cb): void;
    chown?(path: string, uid: number, gid: number, cb: Cb): void;
    chmod?(path: string, mode: number, cb: Cb): void;
    mknod?(path: string, mode: number, dev: number, cb: Cb): void;
    unlink?(path: string, cb: Cb): void;
    rename?(src: string, dest: string, cb: Cb): void;
    link?(src: string, dest: string, cb: Cb): void;
    symlink?(src: string, dest: string, cb: Cb): void;
    mkdir?(path: string, mode: number, cb: Cb): void;
    rmdir?(path: string, cb: Cb): void;
    flush?(path: string, fd: number, cb: Cb): void;
    /** The binding passes datasync before fd. */
    fsync?(path: string, datasync: number, fd: number, cb: Cb): void;
  }
  export interface Options {
    timeout?: number | false;
    force?: boolean;
    mkdir?: boolean;
    autoUnmount?: boolean;
    debug?: boolean;
    maxRead?: number;
    fsname?: string;
    subtype?: string;
    kernelCache?: boolean;
    autoCache?: boolean;
    attrTimeout?: number;
    entryTimeout?: number;
    acAttrTimeout?: number;
    allowOther?: boolean;
    defaultPermissions?: boolean;
  }
  export default class Fuse {
    constructor(mnt: string, ops: Ops, opts?: Options);
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static ENOENT: number;
  }
}
