// The mount's write side end to end on the native driver (test/suites/mount-write.ts).
process.env.GHOSTFS_DRIVER = 'native';
await import('./suites/mount-write.js');
