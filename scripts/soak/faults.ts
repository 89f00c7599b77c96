// The fault suite: runs the scenarios of scenarios.ts one after another and
// prints each verdict and an overall one. Exit code 1 if anything was lost or
// corrupted, an unexpected error occurred, or an operation hung.
//
//   scripts/soak/faults [--duration 60s] [--procs 4] [--driver native] [--write-back sync] [--only kill-mount,hostile] [--json out.json]
import { Command, Option } from 'commander';
import { writeFile } from 'node:fs/promises';
import { parseDuration } from '../../src/config/parse.js';
import { progress } from '../bench/lib/session.js';
import { describe, isClean, SCENARIOS, type ScenarioResult } from './scenarios.js';
import { World } from './lib/world.js';

interface Options {
  duration: number;
  procs: number;
  driver: string;
  writeBack: 'sync' | 'async';
  only?: string;
  json?: string;
  keep?: boolean;
}

async function main(o: Options): Promise<void> {
  const names = o.only ? o.only.split(',') : Object.keys(SCENARIOS);
  for (const n of names) if (!SCENARIOS[n]) throw new Error(`unknown scenario "${n}" (known: ${Object.keys(SCENARIOS).join(', ')})`);
  const results: ScenarioResult[] = [];
  for (const n of names) {
    progress(`fault scenario ${n}: ${o.duration / 1000} s, ${o.procs} workers, ${o.driver} driver, ${o.writeBack} write-back\n`);
    let r: ScenarioResult;
    try {
      r = await SCENARIOS[n]!({ driver: o.driver, writeBack: o.writeBack, durationMs: o.duration, procs: o.procs, keep: o.keep });
    } catch (err) {
      // A scenario that could not run fails; its processes are stopped and the next one runs.
      await World.stopAll();
      r = { name: n, ops: 0, errors: {}, faulted: {}, lost: 0, corrupted: 0, maxOpMs: 0, examples: [], failures: [`the scenario did not run to its end: ${(err as Error).message}`], injected: {} };
    }
    results.push(r);
    process.stdout.write(describe(r).join('\n') + '\n');
  }
  const total = { ops: 0, lost: 0, corrupted: 0 };
  for (const r of results) {
    total.ops += r.ops;
    total.lost += r.lost;
    total.corrupted += r.corrupted;
  }
  process.stdout.write(`\nall scenarios: ${total.ops} operations, ${total.lost} lost, ${total.corrupted} corrupted\n`);
  if (o.json) await writeFile(o.json, JSON.stringify({ date: new Date().toISOString(), driver: o.driver, writeBack: o.writeBack, durationS: o.duration / 1000, procs: o.procs, results, total }, null, 2) + '\n');
  process.exitCode = results.every(isClean) ? 0 : 1;
}

const program = new Command('soak-faults')
  .description('fault scenarios through a real mount; each ends with "N operations, N lost, N corrupted"')
  .addOption(new Option('--duration <d>', 'how long each scenario runs').argParser(parseDuration).default(parseDuration('60s'), '60s'))
  .addOption(new Option('--procs <n>', 'worker processes per scenario').argParser((v) => Number.parseInt(v, 10)).default(4))
  .addOption(new Option('--driver <name>', 'kernel driver of the mount').choices(['native', 'fuse-native']).default('native'))
  .addOption(new Option('--write-back <mode>', "the mount's --write-back (async: files are checked on the node after the final unmount, which drains the queue)").choices(['sync', 'async']).default('sync'))
  .option('--only <names>', `comma-separated scenarios (${Object.keys(SCENARIOS).join(', ')})`)
  .option('--json <file>', 'write the results as JSON')
  .option('--keep', 'keep the work directories');
program.parse();
await main(program.opts<Options>());
