// Inode numbers the mount makes up for files and directories that exist
// only here until a node has them (then the node's numbers are shown, or the
// made-up ones kept: see MetaStore.keepIno). They start at 2^52, which a
// double still holds exactly: ext4's numbers are 32-bit, and XFS's 64-bit
// ones (an allocation group and a block inside it) pass 2^32 on a large
// volume but stay far below. (A root whose numbers carry high bits, such as
// overlayfs with xino, could still meet them.) A driver that hands the
// kernel 32 bits (fuse-native) takes the top of that range instead, where
// large XFS numbers fall too: only numbers handed out count as the mount's.
let base = 2 ** 52;
let localIno = base;

/** Before the mount makes up any number: its driver shows 32-bit inode numbers. */
export function localInosIn32Bits(): void {
  base = 0xf000_0000;
  localIno = base;
}

export const nextLocalIno = (): number => localIno++;

/** Whether an inode number is one of the mount's (nextLocalIno), not a node's. */
export const isLocalIno = (ino: number): boolean => ino >= base && ino < localIno;
