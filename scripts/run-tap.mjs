#!/usr/bin/env node
// Runs the tap suite over the compiled tests and ends with one line CI can
// count: "tap: N passed, N failed". The exit code is tap's own.
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { readdirSync } from 'node:fs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const given = process.argv.slice(2);
// Only the test files: helpers under dist/test/helpers are not suites.
const files = given.length ? given : readdirSync(join(root, 'dist/test')).filter((f) => f.endsWith('.test.js')).map((f) => join('dist/test', f));
const args = [
  join(root, 'node_modules/tap/dist/esm/run.mjs'),
  '--allow-incomplete-coverage',
  '--disable-coverage',
  '--reporter=tap',
  '--jobs=2',
  '--timeout=600',
  // Processes the tests start go without tap's process-info hook (see the file).
  `--node-arg=--import=${pathToFileURL(join(root, 'scripts/tap-child-env.mjs'))}`,
  ...files,
];
const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
let tail = '';
child.stdout.on('data', (d) => {
  process.stdout.write(d);
  tail = (tail + d.toString()).slice(-4096);
});
child.on('exit', (code, signal) => {
  // tap's closing summary, e.g. "# { total: 200, pass: 198, fail: 1, skip: 1 }".
  const m = /# \{ (total: \d+[^}]*) \}/.exec(tail);
  const counts = Object.fromEntries((m ? m[1] : '').split(', ').map((kv) => kv.split(': ')).map(([k, v]) => [k, Number(v)]));
  const passed = counts.pass ?? 0;
  // No summary at all means tap itself broke: count that as a failure.
  const failed = m ? (counts.fail ?? 0) : 1;
  const skipped = counts.skip ?? 0;
  process.stdout.write(`\ntap: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
  process.exit(code ?? (signal ? 1 : 0));
});
