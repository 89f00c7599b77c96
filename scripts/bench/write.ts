// Benchmark: the mount's write side against local disk, in one run.
//
// Five workloads, each on local disk and through ghostfs with each kernel
// driver (--drivers; one after the other, each on a fresh node and cache),
// printed side by side with the ratios driver/local and native/fuse-native:
//   1. N small files (4 KiB) created, written and closed one after another by
//      one process: files/s; then the node's directory is checked right away
//      (close() returns once the node committed, so every file must be there);
//      locally also with each file made durable as a commit makes it (temp
//      name, fsync, rename, directory fsync): the disk's own ceiling there;
//   2. a large sequential write with dd bs=1M from a pre-generated
//      incompressible file: MB/s until dd exits (its close is the commit);
//      then the node's copy is hashed; locally also with conv=fsync;
//   3. four files of that size (other contents) written one after another by
//      dd: MB/s until the last is on the node, what a copy of several big
//      files sustains once the first has filled the caches; then each node
//      copy is hashed;
//   4. tar -x of a generated source tree (~28k files): seconds; then the node's
//      copy is compared with the archive by a sorted list of sha256 sums;
//   5. truncate -s 16G of a new file: seconds, and the blocks the node's copy
//      takes (it should stay sparse).
//
// It drives the real CLI (`ghostfs serve`, `ghostfs mount --foreground`) as
// child processes on loopback, and every workload, check or cleanup that
// touches the mount is a child process too: this process never does file I/O
// on the mount (a project rule). It reads the node's directory directly, which
// is plain local disk.
//
//   scripts/bench/write [--quick] [--drivers native,fuse-native] [--write-back sync|async] [--only small,big,series,untar,sparse]
//                       [--files 2000] [--big 256M] [--tree-files 28000] [--runs 1] [--json out.json] [--keep --dir DIR]
import { Command, InvalidArgumentError, Option } from 'commander';
import { control } from '../../src/admin/control-client.js';
import { socketFor } from '../../src/admin/registry.js';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, release } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { addStats, assertDriversBuilt, describeDrivers, type Driver, DRIVERS, fetchDriverStats, parseDrivers, type RequestStats, requestLines } from './lib/drivers.js';
import { assertCliBuilt, ghostfsDirs, isMounted, lazyUnmount, type MountProc, mountState as describeMount, type NodeProc, spawnMount, spawnNode, stillMounted, stopAll, stopNodeProcess, terminateMount, waitMounted, waitServing } from './lib/ghostfs.js';
import { parseCount, parseSize } from './lib/options.js';
import { firstLineOf, fmt, ghostfsSettings, machineInfo, MB, median, MiB, sizeLabel, table } from './lib/report.js';
import { Aborted, type CmdOptions, type CmdResult, failed, issueAndNoteLines, logIssues, note, notes, once, progress, runCmd as runShell, session, sleep, teardownOnSignals } from './lib/session.js';
import { ensureDebianPackages } from './lib/tools.js';
import { generateSourceTree, keptFileMatches, writeIncompressible } from './lib/tree.js';
import { openWorkDir, readMarkerFile, removeWorkDir, SetAside, writeJsonReport } from './lib/workdir.js';
import { archiveTree, checkSmall, diffLists, HASH_LIST, SMALL_SIZE, SMALL_WRITER, type SmallWriterResult } from './lib/writes.js';

// ---------------------------------------------------------------------------
// options

interface Options {
  files: number;
  big: number;
  treeFiles: number;
  runs: number;
  dir?: string;
  keep: boolean;
  json?: string;
  quick: boolean;
  seed: number;
  drivers: Driver[];
  writeBack: 'sync' | 'async';
  /** Workloads to run (all when absent). */
  only?: Workload[];
}

/** The workloads, in the order they run. */
const WORKLOADS = ['small', 'big', 'series', 'untar', 'sparse'] as const;
type Workload = (typeof WORKLOADS)[number];

const MARKER = 'bench-write.json';
const MARKER_FORMAT = 1;

/** Shell commands here always get $0 "bench" (their args, if any, are $1...). */
const runCmd = (cmd: string, cwd: string, o: CmdOptions): Promise<CmdResult> => runShell(cmd, cwd, { args: [], ...o });

// ---------------------------------------------------------------------------
// tools: install what a fresh Debian machine lacks

function ensureTools(): void {
  ensureDebianPackages([
    [['dd'], 'coreutils'],
    [['tar'], 'tar'],
    [['git'], 'git'], // the tree generator (lib/tree.ts) builds a git repository
    [['fusermount3', 'fusermount'], 'fuse3'],
  ]);
}

function toolVersions(): Record<string, string> {
  return { node: process.version, dd: firstLineOf('dd', ['--version']), tar: firstLineOf('tar', ['--version']) };
}

/** The sparse file of workload 5: 16 GiB, all of it hole. */
const SPARSE_BYTES = 16 * 1024 * MiB;

// ---------------------------------------------------------------------------
// CPU time and context switches of the node and the mount (all threads), to show where a slow write spends it

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

function cpuSeconds(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/**
 * Context switches of a process, all its threads, voluntary or not. A FUSE
 * request takes several (the writer sleeps, a reader of the device wakes,
 * then the writer), and so does each hand-over between threads; on the
 * virtual machines measured here each one calls the hypervisor.
 */
function switchesOf(pid: number | undefined): number {
  if (!pid) return NaN;
  // Threads that ended take their counts with them: ghostfs's threads live as long as the process.
  let n = 0;
  let read = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        for (const m of readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8').matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) n += Number(m[1]);
        read++;
      } catch {
        /* a thread that ended meanwhile */
      }
    }
  } catch {
    return NaN;
  }
  return read > 0 ? n : NaN; // none read: the process is gone
}

/** A count for people: 9120, 51k, 2.21M. */
function count(n: number): string {
  if (!Number.isFinite(n)) return 'n/a';
  const size = Math.abs(n);
  if (size >= 999_500) return `${(n / 1e6).toFixed(2)}M`;
  return size >= 1e4 ? `${(n / 1e3).toFixed(0)}k` : String(n);
}

/** Context switches of the whole machine since boot: the writer's and the kernel's too. */
function machineSwitches(): number {
  try {
    const m = /^ctxt (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** What a timed sample reads before and after: CPU seconds and context switches of the mount and the node, and the machine's switches. */
function usage(): { t: number; m: number; n: number; mSw: number; nSw: number; allSw: number } {
  const m = mounted?.child.pid;
  const n = node?.child.pid;
  return { t: performance.now(), m: cpuSeconds(m), n: cpuSeconds(n), mSw: switchesOf(m), nSw: switchesOf(n), allSw: machineSwitches() };
}

/**
 * Other ghostfs nodes and mounts on this machine (a test suite, another
 * benchmark) compete for the same CPUs and disk: worth a line in the report.
 */
function otherGhostfs(): string[] {
  const ours = new Set([process.pid, node?.child.pid, mounted?.child.pid]);
  const found: string[] = [];
  for (const pid of readdirSafe('/proc')) {
    if (!/^\d+$/.test(pid) || ours.has(Number(pid))) continue;
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const i = args.findIndex((a) => a.endsWith('ghostfs.js'));
      if (i >= 0 && args[i + 1]) found.push(`${pid} ${args[i + 1]}`);
      else if (args.some((a) => a.includes('/dist/test/'))) found.push(`${pid} test ${args.find((a) => a.includes('/dist/test/'))!.split('/').pop()}`);
    } catch {
      /* gone meanwhile */
    }
  }
  return found;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

const loadLine = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');

// ---------------------------------------------------------------------------
// the node and the mount

let node: NodeProc | null = null;
let mounted: MountProc | null = null;

async function startNode(root: string, stateDir: string): Promise<NodeProc> {
  if (session.aborting) throw new Aborted();
  const n = spawnNode(root, stateDir);
  node = n;
  await waitServing(n, 120_000);
  return n;
}

async function stopNode(): Promise<void> {
  const n = node;
  if (!n) return;
  node = null;
  await stopNodeProcess(n.child);
}

async function startMount(mnt: string, cacheDir: string, driver: Driver): Promise<MountProc> {
  if (session.aborting) throw new Aborted();
  if (!node) throw new Error('no node running');
  const m = spawnMount(node.endpoint, mnt, cacheDir, ['--driver', driver, '--write-back', opts.writeBack]);
  mounted = m;
  const outcome = await waitMounted(m);
  if (session.aborting) throw new Aborted();
  if (outcome !== 'ok') {
    await stopMount();
    throw new Error(`the mount ${outcome}:\n${m.tail.join('\n')}`);
  }
  m.readyMs = performance.now() - m.t0;
  return m;
}

/** SIGTERM (the mount unmounts itself and exits); if stuck, a lazy unmount and SIGKILL. Returns how long it took. */
async function stopMount(): Promise<number> {
  const m = mounted;
  if (!m) return NaN;
  mounted = null;
  const t0 = performance.now();
  await terminateMount(m, { noteEarlyExit: true });
  return performance.now() - t0;
}

/** What a failure through the mount looked like from outside: is the mount process alive, still mounted, its last words. */
const mountState = (): string => describeMount(mounted);

// ---------------------------------------------------------------------------
// data: generated once per parameter set, reused from a kept --dir

interface TreeInfo {
  files: number;
  seed: number;
  count: number;
  dirs: number;
  bytes: number;
  tarBytes: number;
  seconds: number;
}

interface Marker {
  format: number;
  tree?: TreeInfo;
  big?: { size: number; seed: number; sha256: string; seconds: number };
  /** The series' files, series-1.bin… (seed: --seed + SERIES_SEED + i); null while one is being made. */
  series?: ({ size: number; seed: number; sha256: string } | null)[];
}

/** Files of the big size written one after another in the series row; file i's seed is --seed + SERIES_SEED + i. */
const SERIES = 4;
const SERIES_SEED = 100;

async function readMarker(dir: string): Promise<Marker | null> {
  const m = await readMarkerFile<Marker>(dir, MARKER);
  return m?.format === MARKER_FORMAT ? m : null;
}

async function ensureData(dataDir: string, markerDir: string, aside: SetAside, opts: Options): Promise<{ tree: TreeInfo; big: Required<Marker>['big']; series: { size: number; seed: number; sha256: string }[]; treeReused: boolean; bigReused: boolean }> {
  const marker: Marker = (await readMarker(markerDir)) ?? { format: MARKER_FORMAT };
  const save = (): Promise<void> => writeFile(join(markerDir, MARKER), JSON.stringify(marker, null, 2) + '\n');
  await mkdir(dataDir, { recursive: true });
  const tar = join(dataDir, 'tree.tar');
  const list = join(dataDir, 'tree.sha256');
  const treeReused = !!(marker.tree && marker.tree.files === opts.treeFiles && marker.tree.seed === opts.seed && existsSync(tar) && existsSync(list));
  if (!treeReused) {
    delete marker.tree;
    await save();
    const src = join(dataDir, 'tree');
    await aside.put(src);
    progress(`generating the source tree (${opts.treeFiles} files, seed ${opts.seed}) and its tar... `);
    const t0 = performance.now();
    await generateSourceTree(src, { files: opts.treeFiles, seed: opts.seed });
    marker.tree = { files: opts.treeFiles, seed: opts.seed, ...(await archiveTree(src, tar, list)), seconds: (performance.now() - t0) / 1000 };
    // Only the archive and its hash list are needed from here on.
    await aside.put(src);
    await save();
    progress(`${marker.tree.seconds.toFixed(1)} s\n`);
  }
  const bigFile = join(dataDir, 'big.bin');
  const bigReused = keptFileMatches(marker.big, bigFile, opts.big, opts.seed);
  if (!bigReused) {
    delete marker.big;
    await save();
    progress(`generating big.bin (${sizeLabel(opts.big)})... `);
    const t0 = performance.now();
    await writeIncompressible(bigFile, opts.big, opts.seed);
    const h = await runCmd('sha256sum big.bin', dataDir, { capture: true, timeoutMs: 30 * 60_000 });
    if (h.code !== 0) throw failed('sha256sum big.bin', h);
    marker.big = { size: opts.big, seed: opts.seed, sha256: h.stdout.split(' ')[0]!, seconds: (performance.now() - t0) / 1000 };
    await save();
    progress(`${marker.big.seconds.toFixed(1)} s\n`);
  }
  // The series: files of other seeds than big.bin, so no chunk of one is found in another.
  const series = (marker.series = (marker.series ?? []).slice(0, SERIES));
  for (let i = 1; i <= SERIES; i++) {
    const seed = opts.seed + SERIES_SEED + i;
    const file = join(dataDir, `series-${i}.bin`);
    if (keptFileMatches(series[i - 1] ?? undefined, file, opts.big, seed)) continue;
    progress(`generating series-${i}.bin (${sizeLabel(opts.big)})... `);
    series[i - 1] = null; // until it is whole
    await save();
    await writeIncompressible(file, opts.big, seed);
    const h = await runCmd('sha256sum "$1"', dataDir, { capture: true, timeoutMs: 30 * 60_000, args: [file] });
    if (h.code !== 0) throw failed(`sha256sum series-${i}.bin`, h);
    series[i - 1] = { size: opts.big, seed, sha256: h.stdout.split(' ')[0]! };
    await save();
    progress('done\n');
  }
  // The small files' 4 KiB body; each file gets its index in its first bytes so no two are alike.
  await writeIncompressible(join(dataDir, 'small.bin'), SMALL_SIZE, opts.seed + 7);
  return { tree: marker.tree!, big: marker.big!, series: series.map((x) => x!), treeReused, bigReused };
}

// ---------------------------------------------------------------------------
// workloads

// ---------------------------------------------------------------------------
// results

type Unit = 'files/s' | 'MB/s' | 's';
/** Local disk or a ghostfs mount with this driver. */
type Where = 'local' | Driver;

interface Cell {
  samples: number[];
  failures: string[];
}

interface Row {
  id: 'small' | 'smallDurable' | 'big' | 'bigFsync' | 'series' | 'untar' | 'sparse';
  label: string;
  unit: Unit;
  /** Local disk and each measured driver (the fsync row: local only). */
  cells: Partial<Record<Where, Cell>>;
  target?: { text: string; ok: (v: number) => boolean };
}

const emptyCell = (): Cell => ({ samples: [], failures: [] });

interface GhostSample {
  driver: Driver;
  workload: string;
  run: number;
  wallS: number;
  mountCpuS: number;
  nodeCpuS: number;
  /** Context switches meanwhile: the mount's and the node's threads, and the whole machine's. */
  switches: { mount: number; node: number; machine: number };
  extra?: Record<string, unknown>;
}

/** What one driver's phase leaves for the report besides its samples. */
interface DriverRun {
  readyMs: number;
  unmountMs: number;
  /** Its request counters; null: the driver keeps none; undefined: `ghostfs status` failed (noted). */
  requests: RequestStats | null | undefined;
}

/** The mount's driver counters before it unmounts; a failure is noted, not fatal. */
async function requestsOf(mnt: string, d: Driver): Promise<RequestStats | null | undefined> {
  try {
    const s = await fetchDriverStats(mnt);
    return s && addStats(undefined, s);
  } catch (err) {
    if (err instanceof Aborted) throw err;
    note(`ghostfs status --json of the ${d} mount failed, its request counters are missing: ${(err as Error).message}`);
    return undefined;
  }
}

const times = (r: number): string => (Number.isFinite(r) ? `${r < 0.1 ? r.toFixed(3) : r.toFixed(2)}×` : '-');

// ---------------------------------------------------------------------------
// main

async function main(opts: Options): Promise<void> {
  const started = performance.now();
  assertCliBuilt();
  assertDriversBuilt(opts.drivers);
  ensureTools();

  const { dir, madeDir } = await openWorkDir(opts.dir, 'ghostfs-bench-write-', MARKER, async (d) => !!(await readMarker(d)));
  const dataDir = join(dir, 'data'); // sources: big.bin, tree.tar, hash lists
  const localDir = join(dir, 'local'); // local-disk targets
  const srcDir = join(dir, 'src'); // the node's workspace root
  const { stateDir, cacheDir, mnt } = ghostfsDirs(dir);
  const wheres: Where[] = ['local', ...opts.drivers];
  // Outputs are deleted only once every figure is taken (see SetAside).
  const aside = new SetAside(join(dir, 'set-aside'));

  const teardown = once(async () => {
    await stopAll(mnt, stopMount, stopNode);
    if (stillMounted(mnt, dir)) return;
    // Written outputs are never worth keeping; the generated data is (--keep reuses it).
    for (const p of [localDir, srcDir, stateDir, cacheDir]) await rm(p, { recursive: true, force: true });
    await aside.empty();
    if (opts.keep) return;
    await removeWorkDir(dir, madeDir, [dataDir, mnt, join(dir, MARKER)]);
  });
  // Ctrl-C (and kill): stop the workload, unmount, stop the node, remove the temp tree, then exit.
  teardownOnSignals(teardown);

  try {
    if (isMounted(mnt)) lazyUnmount(mnt); // a kept --dir whose last run was killed hard
    for (const p of [localDir, srcDir, stateDir, cacheDir]) await aside.put(p, { recreate: true });
    await mkdir(mnt, { recursive: true });
    const { tree, big, series, treeReused, bigReused } = await ensureData(dataDir, dir, aside, opts);
    const smallBody = await readFile(join(dataDir, 'small.bin'));
    const treeList = await readFile(join(dataDir, 'tree.sha256'), 'utf8');

    const cells = (of: readonly Where[]): Partial<Record<Where, Cell>> => Object.fromEntries(of.map((w) => [w, emptyCell()]));
    const rows: Record<Row['id'], Row> = {
      small: { id: 'small', label: `${opts.files} × 4 KiB create+write+close (1 process)`, unit: 'files/s', cells: cells(wheres), target: { text: '≥ 4000 files/s', ok: (v) => v >= 4000 } },
      smallDurable: { id: 'smallDurable', label: `  same, local, each file durable as a commit makes it`, unit: 'files/s', cells: cells(['local']) },
      big: { id: 'big', label: `${sizeLabel(opts.big)} sequential write (dd bs=1M)`, unit: 'MB/s', cells: cells(wheres), target: { text: '≥ 500 MB/s', ok: (v) => v >= 500 } },
      bigFsync: { id: 'bigFsync', label: `  same, local with conv=fsync (durable, like a commit)`, unit: 'MB/s', cells: cells(['local']) },
      // Sustained: what a copy of several big files gets, once the first has filled the caches.
      series: { id: 'series', label: `${SERIES} × ${sizeLabel(opts.big)} one after another (dd bs=1M each)`, unit: 'MB/s', cells: cells(wheres) },
      sparse: { id: 'sparse', label: `truncate -s ${sizeLabel(SPARSE_BYTES)} (a new file, all hole)`, unit: 's', cells: cells(wheres) },
      untar: { id: 'untar', label: `tar -x of a ${tree.count}-file tree (${sizeLabel(tree.bytes)})`, unit: 's', cells: cells(wheres), target: { text: '≤ 25 s', ok: (v) => v <= 25 } },
    };
    const wanted = (w: Workload): boolean => !opts.only || opts.only.includes(w);
    // A durable local row goes with the workload it is the ceiling of.
    const workloadOf: Record<Row['id'], Workload> = { small: 'small', smallDurable: 'small', big: 'big', bigFsync: 'big', series: 'series', untar: 'untar', sparse: 'sparse' };
    const order = [rows.small, rows.smallDurable, rows.big, rows.bigFsync, rows.series, rows.untar, rows.sparse].filter((r) => wanted(workloadOf[r.id]));
    const ghostSamples: GhostSample[] = [];
    const checks: string[] = [];
    const latency = Object.fromEntries(wheres.map((w) => [w, []])) as Partial<Record<Where, { p50: number; p99: number; max: number }[]>>;
    const cleanupMs = Object.fromEntries(opts.drivers.map((d) => [d, {}])) as Partial<Record<Driver, Record<string, number[]>>>;

    const loadStart = loadLine();
    const othersStart = otherGhostfs();
    if (othersStart.length) note(`other ghostfs processes or tests are running on this machine and share its CPUs and disk: ${othersStart.slice(0, 8).join("; ")}${othersStart.length > 8 ? "; …" : ""}`);

    /**
     * One timed sample. Before it: sync (the previous sample's dirty pages must
     * not be written back on this one's clock) and the source read once into the
     * page cache, so local and ghostfs both read it from memory.
     */
    const sample = async (row: Row, where: Where, run: number, body: (root: string, timed: () => void) => Promise<{ value: number; extra?: Record<string, unknown> }>, warm: string[] = []): Promise<void> => {
      progress(`  run ${run}/${opts.runs}  ${where.padEnd(11)}  ${row.label.trim().padEnd(52)} `);
      await runCmd(`sync${warm.length ? ' && cat "$@" > /dev/null' : ''}`, dataDir, { timeoutMs: 10 * 60_000, args: warm });
      const cpu0 = where !== 'local' ? usage() : null;
      // CPU is read when the timed command ends, before the checks run.
      let cpu1: typeof cpu0 = null;
      const timed = (): void => void (cpu1 = cpu0 && usage());
      try {
        const r = await body(where === 'local' ? localDir : mnt, timed);
        row.cells[where]!.samples.push(r.value);
        progress(`${fmt(row.unit, r.value)} ${row.unit}\n`);
        const end = cpu1 as typeof cpu0;
        if (cpu0 && end && where !== 'local') {
          ghostSamples.push({ driver: where, workload: row.id, run, wallS: (end.t - cpu0.t) / 1000, mountCpuS: end.m - cpu0.m, nodeCpuS: end.n - cpu0.n, switches: { mount: end.mSw - cpu0.mSw, node: end.nSw - cpu0.nSw, machine: end.allSw - cpu0.allSw }, extra: r.extra });
        }
      } catch (err) {
        if (err instanceof Aborted) throw err;
        const msg = (err as Error).message + (where !== 'local' ? mountState() : '');
        row.cells[where]!.failures.push(msg);
        progress('failed\n');
        note(`${row.label.trim()}, ${where}, run ${run}: ${msg}`);
      }
    };

    /**
     * Sets a sample's output aside, to be deleted when every figure is taken:
     * local directly, ghostfs through the mount (a child mv into a directory
     * of the mount's, timed for the notes).
     */
    const cleanup = async (where: Where, name: string): Promise<void> => {
      if (where === 'local') return aside.put(join(localDir, name));
      const r = await runCmd('mkdir -p .set-aside && mv -- "$1" ".set-aside/$1"', mnt, { timeoutMs: 30 * 60_000, args: [name] });
      if (r.code !== 0) {
        note(`mv ${name} through the ${where} mount failed (${failed('mv', r).message})${mountState()}; setting it aside on the node instead`);
        await aside.put(join(srcDir, name));
      } else (cleanupMs[where]![name.replace(/-\d+(\.bin|\.img)?$/, '')] ??= []).push(r.ms);
    };

    /**
     * With --write-back async a figure ends when the node has everything: the
     * mount's flush (what `ghostfs sync` asks for), asked over its control
     * socket from here, as a process would not start in less than a few
     * hundred milliseconds. Returns the milliseconds it took (0 otherwise).
     */
    const untilOnNode = async (where: Where): Promise<number> => {
      if (where === 'local' || opts.writeBack !== 'async') return 0;
      const t = performance.now();
      const r = await control(socketFor(mnt), { op: 'flush', deadlineMs: 10 * 60_000 }, 11 * 60_000);
      const pending = 'pending' in r ? (r.pending ?? 0) : 0;
      if (!r.ok || pending > 0) throw new Error(`the mount's flush left ${pending} write-back(s) pending: ${JSON.stringify(r).slice(0, 300)}`);
      return performance.now() - t;
    };

    /** Every run of the workloads on local disk or through the mount of one driver. */
    const runAll = async (where: Where): Promise<void> => {
      for (let run = 1; run <= opts.runs; run++) {
        if (wanted('small')) await runSmall(where, run);
        if (wanted('big')) await runBig(where, run);
        if (wanted('series')) await runSeries(where, run);
        if (wanted('untar')) await runUntar(where, run);
        if (wanted('sparse')) await runSparse(where, run);
      }
    };

    // ---- 1. small files
    const runSmall = async (where: Where, run: number): Promise<void> => {
      const small = `small-${run}`;
      await sample(rows.small, where, run, async (root, timed) => {
        const r = await runCmd(`exec "${process.execPath}" -e "$1" "$2" "$3" "$4"`, dataDir, { capture: true, timeoutMs: 30 * 60_000, args: [SMALL_WRITER, join(root, small), String(opts.files), join(dataDir, 'small.bin')] });
        if (r.code !== 0) throw failed('small-file writer', r);
        const t = JSON.parse(r.stdout.trim().split('\n').pop()!) as SmallWriterResult;
        latency[where]!.push({ p50: t.p50, p99: t.p99, max: t.max });
        let value = opts.files / (t.ms / 1000);
        if (where !== 'local' && opts.writeBack === 'async') {
          // The files count once the node has them: until the mount's flush returns.
          await untilOnNode(where);
          value = opts.files / ((performance.timeOrigin + performance.now() - t.startEpochMs) / 1000);
        }
        timed(); // (after the flush, as in the other rows: the node's commits count)
        if (where === 'local') return { value };
        // Right after the writer exited: every close() returned, so every file must be on the node.
        const now = await checkSmall(join(srcDir, small), opts.files, smallBody);
        let text = `${now.ok}/${opts.files} on the node with the right size and bytes right after the writer exited`;
        if (now.ok !== opts.files) {
          text += ` (missing ${now.missing}, wrong size ${now.wrongSize}, wrong bytes ${now.wrongContent}, extra ${now.extra})`;
          await sleep(5000);
          const later = await checkSmall(join(srcDir, small), opts.files, smallBody);
          text += `; 5 s later ${later.ok}/${opts.files}`;
          note(`${where} small files, run ${run}: NOT all visible on the node at close: ${text}`);
        }
        checks.push(`${where} small files, run ${run}: ${text}`);
        return { value, extra: { visibleAtClose: now } };
      });
      await cleanup(where, small);
      if (where === 'local') {
        // The same files made durable one by one, as a synchronous write-back's commit makes each.
        const durable = `small-durable-${run}`;
        await sample(rows.smallDurable, where, run, async (root, timed) => {
          const r = await runCmd(`exec "${process.execPath}" -e "$1" "$2" "$3" "$4" durable`, dataDir, { capture: true, timeoutMs: 30 * 60_000, args: [SMALL_WRITER, join(root, durable), String(opts.files), join(dataDir, 'small.bin')] });
          timed();
          if (r.code !== 0) throw failed('small-file writer (durable)', r);
          const t = JSON.parse(r.stdout.trim().split('\n').pop()!) as SmallWriterResult;
          return { value: opts.files / (t.ms / 1000) };
        });
        await cleanup(where, durable);
      }
    };

    // ---- 2. one big sequential write (local also durably, for the fsync row)
    const runBig = async (where: Where, run: number): Promise<void> => {
      const variants = where === 'local' ? ([[rows.big, ''], [rows.bigFsync, ' conv=fsync']] as const) : ([[rows.big, '']] as const);
      for (const [row, conv] of variants) {
        const name = `big-${run}.bin`;
        await sample(row, where, run, async (root, timed) => {
          const r = await runCmd(`dd if=big.bin of="$1" bs=1M${conv}`, dataDir, { timeoutMs: 60 * 60_000, args: [join(root, name)] });
          const flushMs = r.code === 0 ? await untilOnNode(where) : 0;
          timed();
          if (r.code !== 0) throw failed('dd', r);
          // dd's own count, so a short write cannot pass for a fast one.
          const bytes = Number(/^(\d+) bytes/m.exec(r.stderr)?.[1] ?? NaN);
          if (bytes !== opts.big) throw new Error(`dd wrote ${bytes} bytes of ${opts.big}`);
          const value = bytes / ((r.ms + flushMs) / 1000) / MB;
          if (where === 'local') return { value };
          const nodeCopy = join(srcDir, name);
          const sizeAtExit = existsSync(nodeCopy) ? statSync(nodeCopy).size : -1;
          const h = await runCmd('sha256sum "$1"', dataDir, { capture: true, timeoutMs: 30 * 60_000, args: [nodeCopy] });
          const sum = h.code === 0 ? h.stdout.split(' ')[0]! : `unreadable (${failed('sha256sum', h).message})`;
          const ok = sizeAtExit === opts.big && sum === big.sha256;
          const text = `node's copy right after dd exited: ${sizeAtExit < 0 ? 'MISSING' : `${sizeAtExit} bytes`}, sha256 ${ok ? 'matches' : `DIFFERS (${sum} vs ${big.sha256})`}`;
          if (!ok) note(`${where} big file, run ${run}: ${text}`);
          checks.push(`${where} big file, run ${run}: ${text}`);
          return { value, extra: { sizeAtExit, sha256Ok: ok } };
        }, [join(dataDir, 'big.bin')]);
        await cleanup(where, name);
      }
    };

    // ---- 3. several big files one after another, until the last is on the node
    const runSeries = async (where: Where, run: number): Promise<void> => {
      const seriesName = `series-${run}`;
      const seriesFiles = series.map((_, i) => `series-${i + 1}.bin`);
      await sample(rows.series, where, run, async (root, timed) => {
        const r = await runCmd('mkdir -- "$1" && for f in "${@:2}"; do dd if="$f" of="$1/$f" bs=1M status=none || exit 1; done', dataDir, { timeoutMs: 60 * 60_000, args: [join(root, seriesName), ...seriesFiles] });
        const flushMs = r.code === 0 ? await untilOnNode(where) : 0;
        timed();
        if (r.code !== 0) throw failed('dd', r);
        // Each file's size, so a short write cannot pass for a fast one (the node's copies: as they were at the end).
        const dirOf = join(where === 'local' ? localDir : srcDir, seriesName);
        const short = seriesFiles.find((f) => !existsSync(join(dirOf, f)) || statSync(join(dirOf, f)).size !== opts.big);
        if (short) throw new Error(`${short} is not ${opts.big} bytes${where === 'local' ? '' : ' on the node'} after the last dd exited`);
        const value = (series.length * opts.big) / ((r.ms + flushMs) / 1000) / MB;
        if (where === 'local') return { value };
        const h = await runCmd('sha256sum -- "$@"', join(srcDir, seriesName), { capture: true, timeoutMs: 30 * 60_000, args: seriesFiles });
        const sums = h.stdout.split('\n').filter(Boolean).map((l) => l.split(' ')[0]);
        const ok = h.code === 0 && series.every((x, i) => sums[i] === x.sha256);
        const text = `node's copies right after the last dd exited: ${ok ? `all ${series.length}, sha256 matching` : `WRONG (${h.code === 0 ? 'a sha256 differs' : failed('sha256sum', h).message})`}`;
        if (!ok) note(`${where} series, run ${run}: ${text}`);
        checks.push(`${where} series, run ${run}: ${text}`);
        return { value, extra: { sha256Ok: ok } };
      }, seriesFiles.map((f) => join(dataDir, f)));
      await cleanup(where, seriesName);
    };

    // ---- 4. untar a source tree
    const runUntar = async (where: Where, run: number): Promise<void> => {
      const treeName = `tree-${run}`;
      await sample(rows.untar, where, run, async (root, timed) => {
        const r = await runCmd(`mkdir -- "$1" && tar -xf tree.tar -C "$1"`, dataDir, { timeoutMs: 60 * 60_000, args: [join(root, treeName)] });
        const flushMs = r.code === 0 ? await untilOnNode(where) : 0;
        timed();
        if (r.code !== 0) throw failed('tar -x', r);
        const value = (r.ms + flushMs) / 1000;
        if (where === 'local') return { value };
        // The node's copy, right after tar exited, against the archive's list.
        const listOf = async (): Promise<string> => {
          const h = await runCmd(HASH_LIST, join(srcDir, treeName), { capture: true, timeoutMs: 30 * 60_000 });
          if (h.code !== 0) throw failed("hashing the node's copy", h);
          return h.stdout;
        };
        const got = await listOf();
        let text: string;
        if (got === treeList) text = `node's copy right after tar exited: all ${tree.count} files, same sha256 list as the archive`;
        else {
          text = `node's copy right after tar exited DIFFERS from the archive: ${diffLists(treeList, got)}`;
          await sleep(10_000);
          const later = await listOf();
          text += later === treeList ? '; identical 10 s later (late, not lost)' : `; 10 s later: ${diffLists(treeList, later)}`;
          note(`${where} untar, run ${run}: ${text}`);
        }
        checks.push(`${where} untar, run ${run}: ${text}`);
        return { value, extra: { identical: got === treeList } };
      }, [join(dataDir, 'tree.tar')]);
      await cleanup(where, treeName);
    };

    // ---- 5. a sparse file: made by truncate, it should cost (and allocate) next to nothing
    const runSparse = async (where: Where, run: number): Promise<void> => {
      const sparseName = `sparse-${run}.img`;
      await sample(rows.sparse, where, run, async (root, timed) => {
        const r = await runCmd(`truncate -s ${SPARSE_BYTES} -- "$1"`, dataDir, { timeoutMs: 30 * 60_000, args: [join(root, sparseName)] });
        const flushMs = r.code === 0 ? await untilOnNode(where) : 0;
        timed();
        if (r.code !== 0) throw failed('truncate', r);
        const value = (r.ms + flushMs) / 1000;
        if (where === 'local') return { value };
        const st = existsSync(join(srcDir, sparseName)) ? statSync(join(srcDir, sparseName)) : undefined;
        const ok = st?.size === SPARSE_BYTES && st.blocks * 512 < 64 * MiB;
        const text = `node's copy right after truncate exited: ${st ? `${st.size} bytes, ${st.blocks * 512} allocated` : 'MISSING'}`;
        if (!ok) note(`${where} sparse file, run ${run}: ${text}`);
        checks.push(`${where} sparse file, run ${run}: ${text}`);
        return { value, extra: { size: st?.size, allocated: st ? st.blocks * 512 : undefined } };
      });
      await cleanup(where, sparseName);
    };

    /**
     * One driver's phase: a node and a cache of its own on a fresh state (the
     * driver measured second inherits nothing from the first), one mount for
     * all runs, its request counters read before it unmounts. A node or mount
     * that will not start costs this driver's figures, not the other's.
     */
    const runDriver = async (d: Driver): Promise<DriverRun | undefined> => {
      for (const p of [srcDir, stateDir, cacheDir]) await aside.put(p, { recreate: true });
      try {
        progress(`ghostfs, driver ${d}: starting the node... `);
        const n = await startNode(srcDir, stateDir);
        progress(`serving on ${n.endpoint}\n`);
        const m = await startMount(mnt, cacheDir, d);
        progress(`mounted at ${mnt} in ${(m.readyMs / 1000).toFixed(1)} s\n`);
        await runAll(d);
        const requests = await requestsOf(mnt, d);
        const unmountMs = await stopMount();
        await stopNode();
        return { readyMs: m.readyMs, unmountMs, requests };
      } catch (err) {
        if (err instanceof Aborted) throw err;
        const msg = `the ${d} phase failed: ${(err as Error).message}`;
        note(msg);
        for (const row of order) row.cells[d]?.failures.push(msg);
        await stopMount();
        await stopNode();
        return undefined;
      }
    };

    progress('local disk\n');
    await runAll('local');
    const driverRuns: Partial<Record<Driver, DriverRun>> = {};
    for (const d of opts.drivers) driverRuns[d] = await runDriver(d);

    const othersEnd = otherGhostfs();
    const loadEnd = loadLine();

    // ---- report
    const tools = toolVersions();
    const date = new Date().toISOString();
    const machine = { ...machineInfo(), kernel: release() };
    const fs = spawnSync('df', ['--output=source,fstype', dir], { encoding: 'utf8' }).stdout?.trim().split('\n').pop()?.trim().split(/\s+/) ?? [];
    const ghostfsEnv = ghostfsSettings(['GHOSTFS_LOG_FILE']);
    const drivers = opts.drivers;
    const out: string[] = [
      `ghostfs write benchmark — ${date}`,
      `machine: ${machine.cpus} × ${machine.cpuModel}, ${sizeLabel(machine.totalMemBytes)} RAM, kernel ${machine.kernel}`,
      `disk:    ${dir} on ${fs[0] ?? '?'} (${fs[1] ?? '?'}); local targets, the node's root and the mount's cache all on it`,
      `tools:   node ${tools.node}, ${tools.dd}, ${tools.tar}`,
      `tree:    ${tree.count} files in ${tree.dirs} dirs, ${sizeLabel(tree.bytes)} (tar ${sizeLabel(tree.tarBytes)}), from lib/tree.ts with ${opts.treeFiles} files, seed ${opts.seed}, without .git; ${treeReused ? 'reused' : `generated in ${tree.seconds.toFixed(1)} s`}`,
      `big:     ${sizeLabel(opts.big)} AES-CTR keystream (incompressible), read from the page cache; ${bigReused ? 'reused' : `generated in ${big.seconds.toFixed(1)} s`}`,
      `ghostfs: node and mount on loopback; ${drivers.length > 1 ? 'drivers one after the other, each with a node and a cache of its own on a fresh state: ' : 'driver '}${describeDrivers(drivers, mnt, [])}${ghostfsEnv.length ? `; ${ghostfsEnv.join(' ')}` : ''}`,
      opts.writeBack === 'async'
        ? `         one mount per driver for all runs, --write-back async; a ghostfs figure ends when the mount's flush (\`ghostfs sync\`, asked over its control socket) returns after the writer, i.e. when the node has committed everything`
        : `         one mount per driver for all runs; a ghostfs figure ends when the writer exits, i.e. when its last close() returned after the node committed`,
      `local:   plain writes to the page cache (no fsync) unless the row says otherwise; measured first`,
      `outputs: set aside (renamed), deleted only after the last figure: a delete makes the next files created on this disk dearer (see lib/workdir.ts)`,
      `load:    ${loadStart} at the start, ${loadEnd} at the end (1/5/15-min load averages)${othersStart.length || othersEnd.length ? `; other ghostfs processes/tests were running (${Math.max(othersStart.length, othersEnd.length)}): figures are noisy` : ''}`,
      `runs:    ${opts.runs}${opts.runs > 1 ? ' (median, min–max in brackets)' : ''}${opts.only ? `; only ${opts.only.join(', ')}` : ''}`,
      '',
    ];
    const cellText = (unit: Unit, x: Cell | undefined): string => {
      if (!x?.samples.length) return x?.failures.length ? 'FAILED' : '-';
      const med = fmt(unit, median(x.samples));
      const lo = Math.min(...x.samples),
        hi = Math.max(...x.samples);
      const range = x.samples.length > 1 ? ` (${fmt(unit, lo)}–${fmt(unit, hi)})` : '';
      return med + range + (x.failures.length ? ` *${x.failures.length} failed` : '');
    };
    // The durable rows have no ghostfs run of their own: they compare the same ghostfs run with a durable local one.
    const sameRunAs: Partial<Record<Row['id'], Row>> = { bigFsync: rows.big, smallDurable: rows.small };
    const ghostOf = (row: Row, d: Driver): Cell | undefined => (sameRunAs[row.id] ?? row).cells[d];
    const med = (x: Cell | undefined): number => median(x?.samples ?? []);
    const both = drivers.length === DRIVERS.length;
    out.push(table([
      ['workload', 'unit', 'local', ...drivers, ...drivers.map((d) => `${d}/local`), ...(both ? ['native÷fuse-native'] : [])],
      ...order.map((r) => [
        r.label,
        r.unit,
        cellText(r.unit, r.cells.local),
        ...drivers.map((d) => (sameRunAs[r.id] ? `(${cellText(r.unit, ghostOf(r, d))})` : cellText(r.unit, ghostOf(r, d)))),
        ...drivers.map((d) => times(med(ghostOf(r, d)) / med(r.cells.local))),
        ...(both ? [sameRunAs[r.id] ? '' : times(med(r.cells.native) / med(r.cells['fuse-native']))] : []),
      ]),
    ]));
    out.push(`  ratios: driver ÷ local${both ? ' and native ÷ fuse-native' : ''}; for files/s and MB/s below 1× is slower, for seconds above 1× is slower.`);
    out.push('');
    out.push('Targets (not asserted)');
    const verdict = (r: Row, d: Driver): string => {
      const v = med(r.cells[d]);
      return `${d} ${Number.isFinite(v) ? `${fmt(r.unit, v)} ${r.unit} ${r.target!.ok(v) ? 'met' : 'MISSED'}` : 'n/a'}`;
    };
    const targeted = order.filter((x) => x.target);
    const head = (r: Row): string => `${r.label.trim()}: ${r.target!.text}`;
    const width = Math.max(0, ...targeted.map((r) => head(r).length));
    for (const r of targeted) out.push(`  ${head(r).padEnd(width)}   ${drivers.map((d) => verdict(r, d)).join('; ')}`);
    if (!targeted.length) out.push('  none among these workloads');
    out.push('');
    out.push('Kernel requests: driverStats of `ghostfs status --json` before each unmount');
    for (const d of drivers) {
      const s = driverRuns[d]?.requests;
      if (s === undefined) out.push(`  ${d}: missing (see the notes)`);
      else if (s === null) out.push(`  ${d}: n/a (this driver keeps no request counters)`);
      else out.push(`  ${d}:`, ...requestLines(s, '    '));
    }
    out.push('');
    out.push('Checks and notes');
    for (const c of checks) out.push(`  ${c}`);
    const lat = (w: Where): string => (latency[w] ?? []).map((l) => `p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms, max ${l.max.toFixed(1)} ms`).join('; ') || 'n/a';
    if (wanted('small')) {
      out.push('  small-file latency per file (open+write+close):');
      for (const w of wheres) out.push(`    ${w.padEnd(11)} ${lat(w)}`);
    }
    // Per file (directories not counted) where a workload is files: what each costs in switches.
    const filesIn: Record<string, number> = { small: opts.files, untar: tree.count };
    for (const g of ghostSamples) {
      const files = filesIn[g.workload];
      const sw = g.switches;
      const ours = sw.mount + sw.node;
      const perFile = files && Number.isFinite(sw.machine) && Number.isFinite(ours) ? `; a file: ${(sw.machine / files).toFixed(0)}, ${(ours / files).toFixed(0)} of them the mount's and the node's` : '';
      out.push(`  CPU during ${g.driver} ${g.workload}, run ${g.run}: wall ${g.wallS.toFixed(2)} s, mount ${g.mountCpuS.toFixed(2)} s, node ${g.nodeCpuS.toFixed(2)} s (${machine.cpus} CPUs)`);
      out.push(`    context switches: mount ${count(sw.mount)}, node ${count(sw.node)}, whole machine ${count(sw.machine)}${perFile}`);
    }
    for (const d of drivers) {
      for (const [k, v] of Object.entries(cleanupMs[d] ?? {})) out.push(`  mv ${k} aside through the ${d} mount (untimed cleanup): ${v.map((ms) => (ms / 1000).toFixed(2) + ' s').join(', ')}`);
      const dr = driverRuns[d];
      if (dr) out.push(`  ${d}: mount ready (spawn to "mounted"): ${(dr.readyMs / 1000).toFixed(2)} s; unmount (SIGTERM to exit): ${(dr.unmountMs / 1000).toFixed(2)} s`);
    }
    out.push(...issueAndNoteLines({ and: 'the nodes and the mounts', or: 'the nodes or the mounts' }));
    out.push(`  total benchmark time: ${((performance.now() - started) / 60_000).toFixed(1)} min`);
    console.log('\n' + out.join('\n'));

    if (opts.json) {
      const report = {
        date,
        machine,
        load: { start: loadStart, end: loadEnd, otherGhostfsStart: othersStart, otherGhostfsEnd: othersEnd },
        disk: { dir, source: fs[0] ?? null, fstype: fs[1] ?? null },
        tools,
        params: { drivers, files: opts.files, bigBytes: opts.big, treeFiles: opts.treeFiles, runs: opts.runs, seed: opts.seed, only: opts.only, env: ghostfsEnv },
        tree: { ...tree, reused: treeReused },
        results: Object.fromEntries(
          order.map((r) => {
            const byWhere = (f: (w: Where) => unknown): Record<string, unknown> => Object.fromEntries(wheres.map((w) => [w, f(w)]));
            const cellAt = (w: Where): Cell | undefined => (w === 'local' ? r.cells.local : ghostOf(r, w));
            const target = r.target && Object.fromEntries(drivers.map((d) => [d, verdict(r, d)]));
            return [r.id, { label: r.label.trim(), unit: r.unit, ...byWhere(cellAt), median: byWhere((w) => (Number.isFinite(med(cellAt(w))) ? med(cellAt(w)) : null)), target: target ? { text: r.target!.text, ...target } : null }];
          }),
        ),
        ...(wanted('small') ? { smallFileLatencyMs: latency } : {}),
        ghostfsSamples: ghostSamples,
        cleanupMs,
        checks,
        driverStats: Object.fromEntries(drivers.map((d) => [d, driverRuns[d]?.requests ?? null])),
        logIssues: Object.fromEntries(logIssues),
        notes,
        mount: Object.fromEntries(drivers.map((d) => [d, driverRuns[d] ? { readyMs: driverRuns[d].readyMs, unmountMs: driverRuns[d].unmountMs } : null])),
      };
      console.log(`json: ${await writeJsonReport(opts.json, report)}`);
    }
    if (opts.keep) console.log(`kept: ${dir}`);
  } finally {
    await teardown();
  }
}

function parseWorkloads(v: string): Workload[] {
  const ids = v.split(',').map((x) => x.trim()).filter(Boolean);
  const unknown = ids.filter((id) => !(WORKLOADS as readonly string[]).includes(id));
  if (unknown.length || ids.length === 0) throw new InvalidArgumentError(`no workload ${unknown.join(', ') || '(none given)'}: there are ${WORKLOADS.join(', ')}`);
  return WORKLOADS.filter((w) => ids.includes(w)); // in the order they run, each once
}

const program = new Command('write')
  .description('benchmark the ghostfs mount, write side: small files, a big sequential write, several in a row, tar -x and a sparse file, per kernel driver, against local disk')
  .option('--files <n>', 'small files (4 KiB each) written one after another', parseCount(1), 2000)
  .addOption(new Option('--big <size>', 'size of the sequential write (e.g. 256M, 1G)').argParser(parseSize('32M or 1G', MiB)).default(256 * MiB, '256M'))
  .option('--tree-files <n>', 'files in the generated source tree that is tar-extracted', parseCount(10), 28_000)
  .option('--runs <n>', 'timed runs of each workload (median and min–max reported)', parseCount(1), 1)
  .addOption(new Option('--drivers <names>', 'kernel drivers to measure, one after the other: native, fuse-native').argParser(parseDrivers).default([...DRIVERS], DRIVERS.join(',')))
  .option('--dir <dir>', 'where to put the data, node root and state, cache and mount point (default: a fresh dir under the OS temp dir)')
  .option('--keep', 'keep the generated data afterwards (a kept --dir with the same parameters is reused)', false)
  .option('--json <file>', 'also write every sample and the checks as JSON')
  .option('--quick', 'a small smoke run: 200 files, 32M, a 2000-file tree (explicit flags win)', false)
  .option('--seed <n>', 'seed of the generated data', parseCount(0), 1)
  .addOption(new Option('--write-back <mode>', 'the mounts\' --write-back: sync, or async (each figure then ends with the mount\'s flush, as `ghostfs sync`)').choices(['sync', 'async']).default('sync'))
  .addOption(new Option('--only <workloads>', `run only these workloads: ${WORKLOADS.join(',')} (the data is made all the same)`).argParser(parseWorkloads));

program.parse();
const opts = program.opts<Options>();
if (opts.quick) {
  const dflt = (k: string): boolean => program.getOptionValueSource(k) === 'default';
  if (dflt('files')) opts.files = 200;
  if (dflt('big')) opts.big = 32 * MiB;
  if (dflt('treeFiles')) opts.treeFiles = 2000;
}

main(opts).catch((err: unknown) => {
  if (err instanceof Aborted) return;
  process.stderr.write(`\nwrite: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
