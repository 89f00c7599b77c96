// Inode numbers the mount makes up for files and directories that exist
// only here until a node has them (then the node's numbers are shown, or the
// made-up ones kept: see MetaStore.keepIno). Above what a node's disk gives.
const LOCAL_INO_BASE = 0xf000_0000;
let localIno = LOCAL_INO_BASE;

export const nextLocalIno = (): number => localIno++;

/** Whether an inode number is one of the mount's (nextLocalIno), not a node's. */
export const isLocalIno = (ino: number): boolean => ino >= LOCAL_INO_BASE;
