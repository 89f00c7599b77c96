// Imported into every test process (scripts/run-tap.mjs passes it to node).
//
// tap loads its process-info hook into each test process, and that hook
// puts itself into every process the test starts: each ghostfs node, mount
// and command, each worker. There it watches every module load, which
// costs each process 0.2-0.4 s of CPU here (a CLI call went from 0.3 to
// 0.65 s; cli.test and special-files.test took 37 s of CPU with it, 21 s
// without). It serves coverage and `tap --changed`, which this suite does
// not use (run-tap.mjs disables coverage), so the processes a test starts
// go without it. The test process itself keeps it.
//
// The hook adds itself through process-on-spawn (a process-wide list of
// listeners, kept on a global symbol) and through NODE_OPTIONS; both are
// undone here. Should tap change how it does this, children only get
// slower again: what a test checks does not change.
const spawnHooks = globalThis[Symbol.for('process-on-spawn@*:singletonId')];
if (spawnHooks && Array.isArray(spawnHooks.listeners)) spawnHooks.listeners = [];
if (process.env.NODE_OPTIONS) {
  process.env.NODE_OPTIONS = process.env.NODE_OPTIONS.replace(/"?--(?:import|loader)=[^"\s]*@tapjs\/processinfo[^"\s]*"?/g, '').trim();
}
