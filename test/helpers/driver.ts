// Which kernel driver an end-to-end suite runs on: the thin test files set
// GHOSTFS_DRIVER (the mount command reads the same variable).
export const DRIVER = process.env.GHOSTFS_DRIVER ?? 'native';
export const isFuseNative = DRIVER === 'fuse-native';
