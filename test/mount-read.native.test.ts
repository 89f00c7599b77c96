// The mount's read side end to end on the native driver (test/suites/mount-read.ts).
process.env.GHOSTFS_DRIVER = 'native';
await import('./suites/mount-read.js');
