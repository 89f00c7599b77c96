// Soak: a mixed read/write load through one mount for a while, then a check
// that nothing was lost or corrupted and that the mount process neither
// leaked nor hung.
//
// A real node and a real mount (the CLI, on loopback) over a fresh source
// tree; N worker processes (scripts/soak/worker.ts) each write, edit, read
// back, rename, delete and list files in their own directory and read ranges
// of shared files, checking every answer. At the end the mount is unmounted
// cleanly and every file a worker last wrote is compared with the node's
// copy. The mount's memory and open file descriptors are sampled after a
// warm-up and at the end.
//
//   scripts/soak/mixed [--duration 10m] [--procs 8] [--driver native] [--json out.json] [--keep]
import { Command, Option } from 'commander';
import { writeFile } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { parseDuration } from '../../src/config/parse.js';
import { progress, sleep } from '../bench/lib/session.js';
import { count, judge, runWorkers, verdictLine } from './lib/workers.js';
import { World } from './lib/world.js';

interface Options {
  duration: number;
  procs: number;
  driver: string;
  writeBack: 'sync' | 'async';
  json?: string;
  keep: boolean;
}

/** Resident memory (MiB) and open descriptors of a process, from /proc. */
function sampleProc(pid: number): { rssMiB: number; fds: number } {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { rssMiB: m ? Math.round(Number(m[1]) / 102.4) / 10 : NaN, fds: readdirSync(`/proc/${pid}/fd`).length };
}

async function main(o: Options): Promise<void> {
  const w = await World.create({ driver: o.driver, mountArgs: ['--write-back', o.writeBack] });
  const node = await w.startNode();
  const mount = await w.startMount([node.endpoint]);
  const { mnt, source } = w;
  const pid = mount.child.pid!;

  progress(`soak: ${o.procs} workers for ${o.duration / 1000} s through the ${o.driver} driver (${o.writeBack} write-back) at ${mnt}\n`);
  const started = Date.now();
  const until = started + o.duration;
  const workers = runWorkers(mnt, source, o.procs, until - Date.now(), false);
  // After a warm-up, the first sample: what the mount holds once busy.
  await sleep(Math.min(30_000, o.duration / 4));
  const before = sampleProc(pid);
  // Where the memory is: growth outside the JS heap and buffers is native (RocksDB, the driver, the allocator).
  const heapBefore = await w.memory();
  let peak = before.rssMiB;
  const ticker = setInterval(() => {
    void w.memory().then((m) => {
      try {
        peak = Math.max(peak, sampleProc(pid).rssMiB);
        progress(`  ${Math.round((Date.now() - started) / 1000)} s, mount RSS ${sampleProc(pid).rssMiB} MiB${m ? ` (${describeHeap(m)})` : ''}\n`);
      } catch {
        /* the mount died: the summary says so */
      }
    });
  }, 30_000);
  const results = await workers;
  clearInterval(ticker);
  const alive = mount.child.exitCode === null && mount.child.signalCode === null;
  const after = alive ? sampleProc(pid) : { rssMiB: NaN, fds: NaN };
  const heapAfter = alive ? await w.memory() : undefined;
  // What the soak drove through FUSE passthrough (readers of the shared big file, writers beside them).
  const passthrough = alive ? ((await w.driverStats())?.passthroughFiles as { passedThrough: number; writersMirrored: number; mmapFixes: number } | undefined) : undefined;

  const t0 = Date.now();
  const exit = (await w.stop())!;
  const unmountMs = Date.now() - t0;

  // The node side: every file a worker last wrote must be there, with the last content written.
  const v = await judge(results, source);
  v.failures.push(...w.notes);

  const errorCount = count(v.errors);
  const summary = {
    date: new Date().toISOString(),
    driver: o.driver,
    durationS: o.duration / 1000,
    procs: o.procs,
    ...v,
    mount: {
      rssMiBBefore: before.rssMiB,
      rssMiBAfter: after.rssMiB,
      rssMiBPeak: peak,
      heapMiBBefore: heapBefore?.heap,
      heapMiBAfter: heapAfter?.heap,
      buffersMiBBefore: heapBefore?.buffers,
      buffersMiBAfter: heapAfter?.buffers,
      mallocInUseMiBBefore: heapBefore?.mallocInUse,
      mallocInUseMiBAfter: heapAfter?.mallocInUse,
      mallocFreeMiBBefore: heapBefore?.mallocFree,
      mallocFreeMiBAfter: heapAfter?.mallocFree,
      fdsBefore: before.fds,
      fdsAfter: after.fds,
      unmountMs,
      exit: exit.signal ?? exit.code,
    },
    passthrough,
  };
  const out = [
    `soak (${o.driver} driver, ${o.procs} processes, ${o.duration / 1000} s): ${v.ops} operations, ${errorCount} errors${errorCount ? ` ${JSON.stringify(v.errors)}` : ''}, slowest ${v.maxOpMs} ms`,
    `  mount process: RSS ${before.rssMiB} MiB after warm-up → ${after.rssMiB} MiB at the end (peak ${peak}); JS heap ${heapBefore?.heap ?? '?'} → ${heapAfter?.heap ?? '?'} MiB, buffers ${heapBefore?.buffers ?? '?'} → ${heapAfter?.buffers ?? '?'} MiB; open fds ${before.fds} → ${after.fds}; clean unmount in ${unmountMs} ms, exit ${summary.mount.exit}`,
    `  allocator (native code, buffers included): in use ${heapBefore?.mallocInUse ?? '?'} → ${heapAfter?.mallocInUse ?? '?'} MiB, free within its heaps ${heapBefore?.mallocFree ?? '?'} → ${heapAfter?.mallocFree ?? '?'} MiB`,
    ...(passthrough ? [`  passthrough: ${passthrough.passedThrough} files passed through to local copies, ${passthrough.writersMirrored} writers beside their readers`] : []),
    ...v.failures.map((f) => `  ${f}`),
    ...v.examples.map((e) => `  error: ${e}`),
    verdictLine(v),
  ];
  process.stdout.write(out.join('\n') + '\n');
  if (o.json) await writeFile(o.json, JSON.stringify(summary, null, 2) + '\n');
  if (!o.keep) await w.remove();
  const bad = v.lost + v.corrupted + errorCount + v.failures.length > 0 || exit.code !== 0;
  process.exitCode = bad ? 1 : 0;
}

function describeHeap(m: NonNullable<Awaited<ReturnType<World['memory']>>>): string {
  const malloc = m.mallocInUse === undefined ? '' : `; allocator ${m.mallocInUse} MiB in use, ${m.mallocFree} MiB free within its heaps`;
  return `JS heap ${m.heap} MiB, buffers ${m.buffers} MiB${malloc}`;
}

const program = new Command('soak-mixed')
  .description('mixed read/write soak through one mount; ends with "N operations, N lost, N corrupted"')
  .addOption(new Option('--duration <d>', 'how long the workers run').argParser(parseDuration).default(parseDuration('10m'), '10m'))
  .addOption(new Option('--procs <n>', 'worker processes').argParser((v) => Number.parseInt(v, 10)).default(8))
  .addOption(new Option('--driver <name>', 'kernel driver of the mount').choices(['native', 'fuse-native']).default('native'))
  .addOption(new Option('--write-back <mode>', "the mount's --write-back (async: files are checked on the node after the final unmount, which drains the queue)").choices(['sync', 'async']).default('sync'))
  .option('--json <file>', 'write the summary as JSON')
  .option('--keep', 'keep the work directory');
program.parse();
await main(program.opts<Options>());
