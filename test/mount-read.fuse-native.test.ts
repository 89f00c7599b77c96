// The mount's read side end to end on the fuse-native driver (test/suites/mount-read.ts).
process.env.GHOSTFS_DRIVER = 'fuse-native';
await import('./suites/mount-read.js');
