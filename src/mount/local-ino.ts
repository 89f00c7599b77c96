// Inode numbers the mount makes up for files and directories that exist
// only here until a node has them (then the node's numbers are shown, or the
// made-up ones kept: see MetaStore.keepIno). They start above any number a
// node's disk gives: ext4's are 32-bit, and XFS's 64-bit ones (an allocation
// group and a block inside it) pass 2^32 on a large volume but stay far
// below 2^52, which a double still holds exactly. A driver that hands the
// kernel 32 bits (fuse-native) takes the top of that range instead.
let base = 2 ** 52;
let localIno = base;

/** Before the mount makes up any number: its driver shows 32-bit inode numbers. */
export function localInosIn32Bits(): void {
  base = 0xf000_0000;
  localIno = base;
}

export const nextLocalIno = (): number => localIno++;

/** Whether an inode number is one of the mount's (nextLocalIno), not a node's. */
export const isLocalIno = (ino: number): boolean => ino >= base;
