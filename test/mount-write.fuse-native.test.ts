// The mount's write side end to end on the fuse-native driver (test/suites/mount-write.ts).
process.env.GHOSTFS_DRIVER = 'fuse-native';
await import('./suites/mount-write.js');
