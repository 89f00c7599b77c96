// Benchmark: the mount's read side against local disk, in one run.
//
// On a generated source tree (a real git repository of ~27k files) and a
// large incompressible file it times, on local disk and through ghostfs:
// sequential read, random 4K reads (fio), find, ls -lR, git status and rg.
// ghostfs is measured cold (fresh mount, empty cache), warm (the same mount
// again), after a remount that keeps the cache and, for the big file, hot
// (read again at once, page cache kept, then once more); once per kernel
// driver (--drivers), each with a fresh node. Every figure is printed beside
// the local one measured in this same run, as a ratio, and the drivers beside
// each other.
//
// It drives the real CLI (`ghostfs serve`, `ghostfs mount --foreground`) as
// child processes on loopback, and every workload is a child process too: this
// process never touches files under the mount (a process must not do file I/O
// on a mount it serves, and keeping the rule absolute here costs nothing).
//
//   scripts/bench/read [--quick] [--drivers native,fuse-native] [--files 27000] [--big 1G] [--runs 3] [--json out.json] [--keep --dir DIR]
import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { addStats, assertDriversBuilt, describeDrivers, type Driver, DRIVERS, fetchDriverStats, parseDrivers, type RequestStats, requestLines } from './lib/drivers.js';
import { assertCliBuilt, ghostfsDirs, type MountProc as MountChild, mountState, type NodeProc as NodeChild, spawnMount, spawnNode, stillMounted, stopAll, stopNodeProcess, terminateMount, waitMounted, waitServing } from './lib/ghostfs.js';
import { parseCount, parseSize } from './lib/options.js';
import { ddRead, fioRandRead } from './lib/reads.js';
import { firstLineOf, fmt, ghostfsSettings, machineInfo, median, MiB, sizeLabel as sizeLabelKiB, table } from './lib/report.js';
import { Aborted, dropCaches, failed, issueAndNoteLines, logIssues, note, notes, once, pageCacheDropped, progress, recordIssue, runCmd, session, teardownOnSignals } from './lib/session.js';
import { ensureDebianPackages } from './lib/tools.js';
import { generateSourceTree, gitEnv, keptFileMatches, type SourceTreeSummary, writeIncompressible } from './lib/tree.js';
import { openWorkDir, readMarkerFile, removeWorkDir, SetAside, writeJsonReport } from './lib/workdir.js';

// ---------------------------------------------------------------------------
// options

interface Options {
  files: number;
  big: number;
  dir?: string;
  keep: boolean;
  runs: number;
  coldRuns: number;
  json?: string;
  quick: boolean;
  seed: number;
  fioRuntime: number;
  readahead?: number;
  attrTimeout?: number;
  only?: string[];
  drivers: Driver[];
}

const MARKER = 'bench-read.json';
const MARKER_FORMAT = 1;

/** This report labels sizes in MiB at the least. */
const sizeLabel = (v: number): string => sizeLabelKiB(v, 'MiB');

// ---------------------------------------------------------------------------
// tools: a fresh machine lacks fio and ripgrep; install them the Debian way

function ensureTools(): void {
  ensureDebianPackages([[['fio'], 'fio'], [['rg'], 'ripgrep'], [['git'], 'git'], [['cmp'], 'diffutils'], [['fusermount3', 'fusermount'], 'fuse3']]);
}

function toolVersions(): Record<string, string> {
  return { fio: firstLineOf('fio', ['--version']), rg: firstLineOf('rg', ['--version']), git: firstLineOf('git', ['--version']), node: process.version };
}

// ---------------------------------------------------------------------------
// the node and the mounts

interface NodeProc extends NodeChild {
  /** Set when we stop it: any other exit is someone else's doing and worth a note. */
  stopping: boolean;
  indexed: { files: number; hashedBytes: number; durationMs: number } | null;
}

let node: NodeProc | null = null;
let mounted: MountProc | null = null;

async function startNode(root: string, stateDir: string): Promise<NodeProc> {
  if (session.aborting) throw new Aborted();
  const n: NodeProc = Object.assign(
    spawnNode(root, stateDir, (rec) => {
      if (rec.msg === 'workspace indexed') n.indexed = { files: Number(rec.files), hashedBytes: Number(rec.hashedBytes), durationMs: Number(rec.durationMs) };
    }),
    { stopping: false, indexed: null },
  );
  node = n;
  nodeArgs = { root, stateDir };
  void n.exited.then((how) => {
    if (!n.stopping && !session.aborting && n.endpoint) note(`the node exited on its own (${how}) at ${new Date().toISOString()}; last lines:\n      ${n.tail.slice(-6).join('\n      ')}`);
  });
  await waitServing(n);
  return n;
}

let nodeArgs: { root: string; stateDir: string } | null = null;

/** Restarts the node if it died under us (noted when it exited), so one outside kill does not end the benchmark. */
async function ensureNode(): Promise<void> {
  if (node && node.child.exitCode === null && node.child.signalCode === null) return;
  if (!nodeArgs) throw new Error('no node to restart');
  node = null;
  progress('  restarting the node... ');
  const n = await startNode(nodeArgs.root, nodeArgs.stateDir);
  progress(`serving on ${n.endpoint}\n`);
}

async function stopNode(): Promise<void> {
  const n = node;
  if (!n) return;
  node = null;
  n.stopping = true;
  await stopNodeProcess(n.child);
}

interface MountProc extends MountChild {
  driver: Driver;
  /** Set just before we send SIGTERM. */
  stopping: boolean;
}

const mountStats = Object.fromEntries(DRIVERS.map((d) => [d, { readyMs: [] as number[], unmountMs: [] as number[] }])) as Record<Driver, { readyMs: number[]; unmountMs: number[] }>;

/** The mount flags this run passes on (the same for every driver; --driver is added per mount). */
function mountArgs(opts: Options): string[] {
  const args: string[] = [];
  if (opts.readahead !== undefined) args.push('--readahead', String(opts.readahead));
  if (opts.attrTimeout !== undefined) args.push('--attr-timeout', String(opts.attrTimeout));
  return args;
}

/** Starts a mount; a start that fails (e.g. the process was killed from outside) is noted and tried once more. */
async function startMount(mnt: string, cacheDir: string, driver: Driver, opts: Options): Promise<MountProc> {
  try {
    return await startMountOnce(mnt, cacheDir, driver, opts);
  } catch (err) {
    if (err instanceof Aborted) throw err;
    note(`a ${driver} mount failed to start, trying once more: ${(err as Error).message}`);
    return startMountOnce(mnt, cacheDir, driver, opts);
  }
}

async function startMountOnce(mnt: string, cacheDir: string, driver: Driver, opts: Options): Promise<MountProc> {
  if (session.aborting) throw new Aborted();
  await ensureNode();
  if (!node) throw new Error('no node running');
  const m: MountProc = Object.assign(
    spawnMount(node.endpoint, mnt, cacheDir, ['--driver', driver, ...mountArgs(opts)], (rec) => {
      // We send SIGTERM only after setting `stopping`: anything else came from outside this benchmark.
      if (rec.msg === 'unmounting' && !m.stopping && !session.aborting) note(`the mount at ${m.mnt} began unmounting on "${String(rec.signal)}" that this benchmark did not send (at ${new Date().toISOString()})`);
    }),
    { driver, stopping: false },
  );
  mounted = m;
  void m.exited.then(({ code, signal }) => {
    if (!m.stopping && !session.aborting) note(`a mount process exited on its own (${signal ?? `code ${code}`}) at ${new Date().toISOString()}, ${m.readyMs ? 'after' : 'before'} it was ready`);
  });
  const outcome = await waitMounted(m);
  if (session.aborting) throw new Aborted();
  if (outcome !== 'ok') {
    m.stopping = true; // its exit is reported in the error below
    await stopMount();
    throw new Error(`the mount ${outcome}:\n${m.tail.join('\n')}`);
  }
  m.readyMs = performance.now() - m.t0;
  mountStats[driver].readyMs.push(m.readyMs);
  return m;
}

/** SIGTERM (the mount unmounts itself and exits); if stuck, a lazy unmount and SIGKILL. */
async function stopMount(): Promise<void> {
  const m = mounted;
  if (!m) return;
  mounted = null;
  const t0 = performance.now();
  m.stopping = true;
  // An exit before our SIGTERM was already noted by the exit listener.
  await terminateMount(m, { noteEarlyExit: false });
  if (!session.aborting) mountStats[m.driver].unmountMs.push(performance.now() - t0);
}

/** The native driver's request counters of each driver's mounts, per workload, summed (null: the driver keeps none). */
const requests = Object.fromEntries(DRIVERS.map((d) => [d, {}])) as Record<Driver, Record<string, RequestStats | null>>;

/** Reads the mount's driver counters (the requests the kernel sent for workload `id`), then unmounts. */
async function finishMount(id: string): Promise<void> {
  const m = mounted;
  if (m) {
    try {
      const s = await fetchDriverStats(m.mnt);
      requests[m.driver][id] = s && addStats(requests[m.driver][id] ?? undefined, s);
    } catch (err) {
      if (err instanceof Aborted) throw err;
      note(`ghostfs status --json of the ${m.driver} mount failed, its request counters are missing: ${(err as Error).message}`);
    }
  }
  await stopMount();
}

// ---------------------------------------------------------------------------
// workloads

type Unit = 'MB/s' | 'IOPS' | 's';

interface Measured {
  value: number;
  /** Output to compare with local disk's (same tree, same answer expected). */
  out?: string;
}

interface Workload {
  id: string;
  label: string;
  unit: Unit;
  /** data: the big file, warm = remount with its chunks cached; meta: the repository, warm = same mount again. */
  kind: 'data' | 'meta';
  measure(root: string, where: Where): Promise<Measured>;
  /** Untimed, before the remount runs: makes sure the cache holds everything the warm runs will read. */
  prime?: string;
  /**
   * Also timed again right after each local cold and each remount run, page
   * cache kept: what a re-read costs (hot); then once more (hot2). The first
   * re-read also pays the kernel for moving each cached page to its active
   * list: measured with perf on kernel 6.18, a fifth of a FUSE file's first
   * re-read and under 2% of an ext4 file's (ext4 caches in large folios,
   * so it has far fewer to move). The second shows the copy alone.
   */
  hot?: boolean;
}

const sortedLines = (s: string): string => s.split('\n').filter(Boolean).sort().join('\n');

function workloadsFor(opts: Options, pattern: string): Workload[] {
  const metaTimeout = 30 * 60_000;
  const meta = (id: string, label: string, cmd: string, opt: { compare: boolean; okCodes?: number[]; env?: NodeJS.ProcessEnv }): Workload => ({
    id,
    label,
    unit: 's',
    kind: 'meta',
    async measure(root, where) {
      const r = await runCmd(cmd, join(root, 'repo'), { capture: opt.compare, timeoutMs: metaTimeout, env: opt.env });
      if (r.timedOut || r.code === null || !(opt.okCodes ?? [0]).includes(r.code)) throw failed(cmd, r);
      if (r.stderr.trim()) recordIssue(`stderr of \`${cmd}\` on ${where}: ${r.stderr.trim().split('\n')[0]!.slice(0, 160)}`, r.stderr.slice(0, 400));
      return { value: r.ms / 1000, out: opt.compare ? sortedLines(r.stdout) : undefined };
    },
  });
  return [
    {
      id: 'seq',
      label: `sequential read ${sizeLabel(opts.big)} (dd bs=1M)`,
      unit: 'MB/s',
      kind: 'data',
      hot: true,
      async measure(root) {
        return { value: await ddRead(root, opts.big) };
      },
    },
    {
      id: 'rand',
      label: `random 4K read (fio psync, ${opts.fioRuntime} s)`,
      unit: 'IOPS',
      kind: 'data',
      // The cold fio run touches only part of the file; warm means all of it cached.
      prime: 'cat big.bin > /dev/null',
      async measure(root) {
        return { value: await fioRandRead(root, opts.big, opts.fioRuntime) };
      },
    },
    meta('find', 'find . -type f | wc -l', 'find . -type f | wc -l', { compare: true }),
    meta('ls', 'ls -lR > /dev/null', 'ls -lR > /dev/null', { compare: false }),
    meta('git', 'git status --porcelain', 'git status --porcelain', { compare: true, env: gitEnv() }),
    // rg exits 1 when nothing matched: still a complete search.
    meta('rg', `rg -c ${pattern}`, `rg -c ${pattern}`, { compare: true, okCodes: [0, 1] }),
  ];
}

// ---------------------------------------------------------------------------
// measuring

/** Local disk or a ghostfs mount with this driver. */
type Where = 'local' | Driver;

/**
 * cold: page cache dropped (ghostfs: fresh mount, empty cache); warm: run again
 * right after; remount (ghostfs): a new mount on the filled cache, page cache
 * dropped; hot: read again at once, page cache kept; hot2: and once more.
 */
const PHASES = ['cold', 'warm', 'remount', 'hot', 'hot2'] as const;
type Phase = (typeof PHASES)[number];

interface Cell {
  samples: number[];
  failures: string[];
  /** When each sample (or failure) ended, to line figures up with logs. */
  at: string[];
}

/** Per workload, per local disk and each measured driver, per phase. */
type Results = Record<string, Partial<Record<Where, Record<Phase, Cell>>>>;

const cellOf = (results: Results, id: string, where: Where, phase: Phase): Cell => results[id]![where]![phase];

/** The local answer each workload gave, and how often ghostfs answered differently. */
const reference = new Map<string, string>();
const mismatches = new Map<string, { count: number; detail: string }>();

function diffSummary(want: string, got: string): string {
  const a = want.split('\n'),
    b = got.split('\n');
  const sa = new Set(a),
    sb = new Set(b);
  const missing = a.filter((l) => !sb.has(l)),
    extra = b.filter((l) => !sa.has(l));
  const show = (xs: string[]): string => xs.slice(0, 3).join(' | ') + (xs.length > 3 ? ` | … (${xs.length})` : '');
  return `local ${a.length} lines, ghostfs ${b.length}; only local: ${missing.length ? show(missing) : '-'}; only ghostfs: ${extra.length ? show(extra) : '-'}`;
}

async function sample(results: Results, w: Workload, where: Where, phase: Phase, root: string, tag: string): Promise<void> {
  progress(`  ${tag.padEnd(26)} ${w.label.padEnd(34)} `);
  const cell = cellOf(results, w.id, where, phase);
  try {
    const m = await w.measure(root, where);
    cell.samples.push(m.value);
    cell.at.push(new Date().toISOString());
    progress(`${fmt(w.unit, m.value)} ${w.unit}\n`);
    if (m.out !== undefined) {
      const want = reference.get(w.id);
      if (want === undefined) reference.set(w.id, m.out);
      else if (want !== m.out) {
        const k = `${w.label} (${where} ${phase})`;
        const e = mismatches.get(k);
        if (e) e.count++;
        else mismatches.set(k, { count: 1, detail: diffSummary(want, m.out) });
      }
    }
  } catch (err) {
    if (err instanceof Aborted) throw err;
    let msg = (err as Error).message;
    // Was it the mount that went away? Its state and last words are the evidence.
    if (where !== 'local') msg += mountState(mounted);
    cell.failures.push(msg);
    cell.at.push(new Date().toISOString());
    progress('failed\n');
    note(`${w.label}, ${where} ${phase}: ${msg}`);
  }
}

// ---------------------------------------------------------------------------
// report

/** One table row: a workload in one ghostfs phase, beside the local phase it is compared with. */
interface Row {
  w: Workload;
  phase: Phase;
  local: Phase;
  name: string;
}

/**
 * Data rows: cold; warm (a remount on a cache holding every chunk, against
 * local cold: both read with the page cache dropped); hot. Metadata rows:
 * cold, warm (against local warm), remount (against local cold).
 */
function rowsOf(ws: Workload[]): Row[] {
  return ws.flatMap((w): Row[] =>
    w.kind === 'data'
      ? [
          { w, phase: 'cold', local: 'cold', name: 'cold' },
          { w, phase: 'remount', local: 'cold', name: 'warm' },
          ...(w.hot
            ? ([
                { w, phase: 'hot', local: 'hot', name: 'hot' },
                { w, phase: 'hot2', local: 'hot2', name: 'hot again' },
              ] as const)
            : []),
        ]
      : [
          { w, phase: 'cold', local: 'cold', name: 'cold' },
          { w, phase: 'warm', local: 'warm', name: 'warm' },
          { w, phase: 'remount', local: 'cold', name: 'remount' },
        ],
  );
}

const times = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '-');

interface TargetCheck {
  who: string;
  value: string;
  met: boolean | null;
}

interface Target {
  what: string;
  text: string;
  checks: TargetCheck[];
}

/** The issue's aims (never asserted: printed with the figures). Per driver, except the one comparing the drivers. */
function targetsOf(ws: Workload[], drivers: Driver[], med: (id: string, where: Where, phase: Phase) => number): Target[] {
  const both = drivers.length === DRIVERS.length;
  const has = (id: string): boolean => ws.some((w) => w.id === id);
  const check = (who: string, v: number, show: (v: number) => string, ok: (v: number) => boolean): TargetCheck =>
    Number.isFinite(v) ? { who, value: show(v), met: ok(v) } : { who, value: 'n/a', met: null };
  const vsLocal = (id: string, phase: Phase, ok: (r: number) => boolean): TargetCheck[] => drivers.map((d) => check(d, med(id, d, phase) / med(id, 'local', phase), times, ok));
  const out: Target[] = [];
  if (has('seq')) {
    out.push({ what: 'sequential read, cold', text: '≥ 500 MB/s', checks: drivers.map((d) => check(d, med('seq', d, 'cold'), (v) => `${fmt('MB/s', v)} MB/s`, (v) => v >= 500)) });
    if (both) {
      const warm = med('seq', 'native', 'remount') / med('seq', 'fuse-native', 'remount');
      out.push({ what: 'sequential read, warm', text: 'native ≥ 2× fuse-native', checks: [check('native ÷ fuse-native', warm, times, (r) => r >= 2)] });
    }
    out.push({ what: 'sequential read, hot', text: '≥ 0.7× local hot', checks: vsLocal('seq', 'hot', (r) => r >= 0.7) });
    out.push({ what: 'sequential read, hot again', text: '≥ 0.7× local hot again', checks: vsLocal('seq', 'hot2', (r) => r >= 0.7) });
  }
  for (const [id, name] of [['find', 'find'], ['ls', 'ls -lR'], ['git', 'git status']] as const) {
    if (has(id)) out.push({ what: `${name}, warm`, text: '≤ 2× local warm', checks: vsLocal(id, 'warm', (r) => r <= 2) });
  }
  if (has('git')) out.push({ what: 'git status, warm', text: '≤ 2 s', checks: drivers.map((d) => check(d, med('git', d, 'warm'), (v) => `${fmt('s', v)} s`, (v) => v <= 2)) });
  return out;
}

function render(results: Results, ws: Workload[], header: string[], opts: Options): { text: string; summary: Record<string, unknown> } {
  const out = [...header, ''];
  const drivers = opts.drivers;
  const both = drivers.length === DRIVERS.length;
  const wheres: Where[] = ['local', ...drivers];
  const med = (id: string, where: Where, phase: Phase): number => median(results[id]?.[where]?.[phase].samples ?? []);
  const cell = (r: Row, where: Where): string => {
    const x = cellOf(results, r.w.id, where, where === 'local' ? r.local : r.phase);
    if (!x.samples.length) return x.failures.length ? 'FAILED' : '-';
    return fmt(r.w.unit, median(x.samples)) + (x.failures.length ? '*' : '');
  };
  const vsLocal = (r: Row, d: Driver): string => times(med(r.w.id, d, r.phase) / med(r.w.id, 'local', r.local));
  const vsFuse = (r: Row): string => times(med(r.w.id, 'native', r.phase) / med(r.w.id, 'fuse-native', r.phase));
  const spread = (r: Row, where: Where): string => {
    const x = cellOf(results, r.w.id, where, where === 'local' ? r.local : r.phase);
    const n = x.samples.length + x.failures.length;
    if (!n) return '-';
    const lo = Math.min(...x.samples),
      hi = Math.max(...x.samples);
    const range = !x.samples.length ? 'failed' : lo === hi ? fmt(r.w.unit, lo) : `${fmt(r.w.unit, lo)}–${fmt(r.w.unit, hi)}`;
    return `${range} (${x.failures.length ? `${x.samples.length}/${n} ok` : `n=${n}`})`;
  };
  // The workload's name on its first row only: the rows under it are its phases.
  const named = (r: Row, i: number, rows: Row[]): string => (i === 0 || rows[i - 1]!.w !== r.w ? r.w.label : '');
  const ratioHeads = [...drivers.map((d) => `${d}/local`), ...(both ? ['native÷fuse-native'] : [])];
  const ratios = (r: Row): string[] => [...drivers.map((d) => vsLocal(r, d)), ...(both ? [vsFuse(r)] : [])];

  const rows = rowsOf(ws);
  const data = rows.filter((r) => r.w.kind === 'data');
  const meta = rows.filter((r) => r.w.kind === 'meta');
  if (data.length) {
    out.push(`Data: ${sizeLabel(opts.big)} incompressible file (median of runs; higher is better)`);
    out.push(table([['workload', 'phase', 'unit', 'local', ...drivers, ...ratioHeads], ...data.map((r, i) => [named(r, i, data), r.name, r.w.unit, cell(r, 'local'), ...drivers.map((d) => cell(r, d)), ...ratios(r)])]));
    out.push('  local = page cache dropped before each run; on the hot row, read again at once with the page cache kept.');
    out.push('  ghostfs cold = fresh mount, empty cache, page cache dropped; warm = remounted on a cache holding every chunk of the file,');
    out.push('  page cache dropped; hot = that mount reads the file again at once, page cache kept (against local hot).');
    out.push('  hot again = one more read right after hot, on both: the first re-read also moves every cached page to the kernel\'s');
    out.push('  active list, a kernel cost that is far higher for a FUSE file than for a local one (see scripts/bench/read.ts).');
    out.push('  native passes a file read once through to a whole local copy (FUSE passthrough, unless GHOSTFS_PASSTHROUGH=off): the');
    out.push('  copy is assembled after the first full read, so the first warm run and the hot reads right after it may still go');
    out.push('  through the mount; later runs read the copy.');
    out.push(`  ratios: driver ÷ local${both ? ' and native ÷ fuse-native' : ''}; above 1× is faster.`);
    out.push('');
  }
  if (meta.length) {
    out.push('Metadata and search: the generated git repository (seconds, median of runs; lower is better)');
    out.push(table([['workload', 'phase', 'local', ...drivers, ...ratioHeads], ...meta.map((r, i) => [named(r, i, meta), r.name, cell(r, 'local'), ...drivers.map((d) => cell(r, d)), ...ratios(r)])]));
    out.push('  ghostfs cold = first run on a fresh mount with an empty cache (page cache dropped); warm = run again on that same mount;');
    out.push('  remount = a new mount on the filled cache, page cache dropped. local is local cold (page cache dropped) on the cold and');
    out.push('  remount rows, local warm (run again right after) on the warm rows. ratios are of times: above 1× is slower.');
    out.push('');
  }
  out.push('Spread: min–max over the runs (n = runs)');
  out.push(table([['workload', 'phase', 'local', ...drivers], ...rows.map((r, i) => [named(r, i, rows), r.name, spread(r, 'local'), ...drivers.map((d) => spread(r, d))])]));

  const targets = targetsOf(ws, drivers, med);
  if (targets.length) {
    out.push('');
    out.push('Targets (not asserted)');
    const verdict = (c: TargetCheck): string => `${c.who} ${c.value} ${c.met === null ? '' : c.met ? 'met' : 'MISSED'}`.trimEnd();
    const head = (t: Target): string => `${t.what}: ${t.text}`;
    const width = Math.max(...targets.map((t) => head(t).length));
    for (const t of targets) out.push(`  ${head(t).padEnd(width)}   ${t.checks.map(verdict).join('; ')}`);
  }

  const summary: Record<string, unknown> = { targets };
  for (const w of ws) {
    const byWhere = Object.fromEntries(wheres.map((where) => [where, Object.fromEntries(PHASES.map((p) => [p, Number.isFinite(med(w.id, where, p)) ? med(w.id, where, p) : null]))]));
    summary[w.id] = { label: w.label, unit: w.unit, median: byWhere };
  }
  return { text: out.join('\n'), summary };
}

/** The request sizes the kernel sent each driver, per workload (the native driver's counters). */
function requestReport(ws: Workload[], drivers: Driver[]): string[] {
  const out = ['Kernel requests: driverStats of `ghostfs status --json` before each unmount, summed over a workload\'s mounts'];
  for (const d of drivers) {
    const byWorkload = ws.filter((w) => w.id in requests[d]);
    if (!byWorkload.length) out.push(`  ${d}: missing (see the notes)`);
    else if (byWorkload.every((w) => requests[d][w.id] === null)) out.push(`  ${d}: n/a (this driver keeps no request counters)`);
    else {
      out.push(`  ${d}:`);
      for (const w of byWorkload) {
        const s = requests[d][w.id];
        out.push(`    ${w.label}`, ...(s ? requestLines(s, '      ') : ['      n/a']));
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// data

interface Marker {
  format: number;
  repo?: { files: number; seed: number; summary: SourceTreeSummary; seconds: number };
  big?: { size: number; seed: number; seconds: number };
}

async function readMarker(dir: string): Promise<Marker | null> {
  const m = await readMarkerFile<Marker>(dir, MARKER);
  return m?.format === MARKER_FORMAT ? m : null;
}

/** Generates what is missing or made with other parameters; a kept tree with the same ones is reused. */
async function ensureData(dir: string, opts: Options): Promise<{ marker: Required<Marker>; repoReused: boolean; bigReused: boolean }> {
  const marker: Marker = (await readMarker(dir)) ?? { format: MARKER_FORMAT };
  const repoDir = join(dir, 'data', 'repo');
  const bigFile = join(dir, 'data', 'big.bin');
  const save = (): Promise<void> => writeFile(join(dir, MARKER), JSON.stringify(marker, null, 2) + '\n');
  const repoReused = !!(marker.repo && marker.repo.files === opts.files && marker.repo.seed === opts.seed && existsSync(join(repoDir, '.git')));
  if (!repoReused) {
    delete marker.repo;
    await save();
    await rm(repoDir, { recursive: true, force: true });
    progress(`generating the repository (${opts.files} files, seed ${opts.seed})... `);
    const t0 = performance.now();
    const summary = await generateSourceTree(repoDir, { files: opts.files, seed: opts.seed });
    marker.repo = { files: opts.files, seed: opts.seed, summary, seconds: (performance.now() - t0) / 1000 };
    await save();
    progress(`${marker.repo.seconds.toFixed(1)} s\n`);
  }
  const bigReused = keptFileMatches(marker.big, bigFile, opts.big, opts.seed);
  if (!bigReused) {
    delete marker.big;
    await save();
    progress(`generating big.bin (${sizeLabel(opts.big)})... `);
    const t0 = performance.now();
    await writeIncompressible(bigFile, opts.big, opts.seed);
    marker.big = { size: opts.big, seed: opts.seed, seconds: (performance.now() - t0) / 1000 };
    await save();
    progress(`${marker.big.seconds.toFixed(1)} s\n`);
  }
  return { marker: marker as Required<Marker>, repoReused, bigReused };
}

// ---------------------------------------------------------------------------
// one driver's ghostfs phase

interface Dirs {
  dataDir: string;
  stateDir: string;
  cacheDir: string;
  mnt: string;
  /** Caches done with, deleted once every figure is taken. */
  aside: SetAside;
}

interface DriverRun {
  indexed: NodeProc['indexed'];
  /** big.bin read through this driver against the node's file (cmp). */
  content: string | null;
}

/**
 * Every workload through mounts of driver `d`, on a node of its own started
 * from a fresh state: the driver measured second inherits nothing from the
 * first (index, node caches), so their figures compare.
 */
async function measureDriver(d: Driver, ws: Workload[], results: Results, dirs: Dirs, opts: Options): Promise<DriverRun> {
  const { dataDir, stateDir, cacheDir, mnt } = dirs;
  const coldRuns = Math.min(opts.coldRuns, opts.runs);
  progress(`ghostfs, driver ${d}: starting the node... `);
  await rm(stateDir, { recursive: true, force: true }); // its index build is not what this measures, but start clean
  await dropCaches();
  const n = await startNode(dataDir, stateDir);
  progress(`serving on ${n.endpoint}${n.indexed ? ` (indexed ${n.indexed.files} files in ${(n.indexed.durationMs / 1000).toFixed(1)} s)` : ''}\n`);

  let content: string | null = null;
  for (const w of ws) {
    progress(`ghostfs ${d}: ${w.label}\n`);
    // A round that fails (a mount that will not start, a node killed from outside) is recorded and
    // noted; the benchmark goes on with the next one instead of losing every figure so far.
    const guarded = async (what: string, phases: Phase[], fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        if (err instanceof Aborted) throw err;
        const msg = `${what} failed: ${(err as Error).message}`;
        note(`${w.label}, ${d}: ${msg}`);
        for (const p of phases) {
          cellOf(results, w.id, d, p).failures.push(msg);
          cellOf(results, w.id, d, p).at.push(new Date().toISOString());
        }
        await stopMount();
      }
    };
    for (let r = 1; r <= coldRuns; r++) {
      await guarded(`cold round ${r}`, r === 1 && w.kind === 'meta' ? ['cold', 'warm'] : ['cold'], async () => {
        await dirs.aside.put(cacheDir, { recreate: true });
        await startMount(mnt, cacheDir, d, opts);
        await dropCaches();
        await sample(results, w, d, 'cold', mnt, `${d} cold ${r}/${coldRuns}`);
        if (r === 1 && w.kind === 'meta') for (let i = 1; i <= opts.runs; i++) await sample(results, w, d, 'warm', mnt, `${d} warm ${i}/${opts.runs}`);
        if (w.id === 'seq' && r === 1) {
          // Untimed: the bytes that came through the mount are the node's bytes.
          const c = await runCmd(`cmp ${JSON.stringify(join(dataDir, 'big.bin'))} big.bin`, mnt, { capture: true, timeoutMs: 60 * 60_000 });
          content = c.code === 0 ? 'identical' : `DIFFERENT (${(c.stdout + c.stderr).trim().slice(0, 200)})`;
          if (c.code !== 0) note(`big.bin read through ghostfs (${d}) differs from the node's: ${content}`);
        }
        if (r === coldRuns && w.prime) {
          const p = await runCmd(w.prime, mnt, { timeoutMs: 60 * 60_000 });
          if (p.code !== 0) note(`priming the cache (${w.prime}, ${d}) failed: ${failed(w.prime, p).message}`);
        }
        await finishMount(w.id);
      });
    }
    // The cache of the last cold round, on a new mount each time: chunks and metadata from disk, nothing in memory.
    for (let i = 1; i <= opts.runs; i++) {
      await guarded(`remount ${i}`, w.hot ? ['remount', 'hot', 'hot2'] : ['remount'], async () => {
        await startMount(mnt, cacheDir, d, opts);
        await dropCaches();
        await sample(results, w, d, 'remount', mnt, `${d} ${w.kind === 'data' ? 'warm' : 'remount'} ${i}/${opts.runs}`);
        if (w.hot) {
          await sample(results, w, d, 'hot', mnt, `${d} hot ${i}/${opts.runs}`);
          await sample(results, w, d, 'hot2', mnt, `${d} hot again ${i}/${opts.runs}`);
        }
        await finishMount(w.id);
      });
    }
  }
  await stopNode();
  return { indexed: n.indexed, content };
}

// ---------------------------------------------------------------------------
// main

async function main(opts: Options): Promise<void> {
  const started = performance.now();
  assertCliBuilt();
  assertDriversBuilt(opts.drivers);
  ensureTools();

  const { dir, madeDir } = await openWorkDir(opts.dir, 'ghostfs-bench-read-', MARKER, async (d) => !!(await readMarker(d)));
  const dataDir = join(dir, 'data');
  const { stateDir, cacheDir, mnt } = ghostfsDirs(dir);
  const aside = new SetAside(join(dir, 'set-aside'));

  const teardown = once(async () => {
    await stopAll(mnt, stopMount, stopNode);
    if (!stillMounted(mnt, dir)) await aside.empty();
    if (opts.keep) return;
    if (stillMounted(mnt, dir)) return;
    await removeWorkDir(dir, madeDir, [dataDir, stateDir, cacheDir, mnt, join(dir, MARKER)]);
  });
  // Ctrl-C (and kill): stop the workload, unmount, stop the node, remove the temp tree, then exit.
  teardownOnSignals(teardown);

  try {
    const { marker, repoReused, bigReused } = await ensureData(dir, opts);
    const tree = marker.repo.summary;
    const all = workloadsFor(opts, tree.pattern);
    const unknown = (opts.only ?? []).filter((id) => !all.some((w) => w.id === id));
    if (unknown.length) throw new Error(`--only: no workload ${unknown.join(', ')} (there are ${all.map((w) => w.id).join(', ')})`);
    const ws = opts.only ? all.filter((w) => opts.only!.includes(w.id)) : all;
    const emptyRow = (): Record<Phase, Cell> => Object.fromEntries(PHASES.map((p): [Phase, Cell] => [p, { samples: [], failures: [], at: [] }])) as Record<Phase, Cell>;
    const results: Results = Object.fromEntries(ws.map((w) => [w.id, Object.fromEntries((['local', ...opts.drivers] as Where[]).map((where) => [where, emptyRow()]))]));
    const coldRuns = Math.min(opts.coldRuns, opts.runs);

    // Local disk first: the baselines, and git refreshes its index here (the mount is read-only).
    progress('local disk\n');
    for (const w of ws) {
      for (let i = 1; i <= opts.runs; i++) {
        await dropCaches();
        await sample(results, w, 'local', 'cold', dataDir, `local cold ${i}/${opts.runs}`);
        if (w.hot) {
          await sample(results, w, 'local', 'hot', dataDir, `local hot ${i}/${opts.runs}`);
          await sample(results, w, 'local', 'hot2', dataDir, `local hot again ${i}/${opts.runs}`);
        }
      }
      if (w.kind === 'meta') for (let i = 1; i <= opts.runs; i++) await sample(results, w, 'local', 'warm', dataDir, `local warm ${i}/${opts.runs}`);
    }

    const runs: Partial<Record<Driver, DriverRun>> = {};
    for (const d of opts.drivers) runs[d] = await measureDriver(d, ws, results, { dataDir, stateDir, cacheDir, mnt, aside }, opts);

    // ---- report
    const tools = toolVersions();
    const date = new Date().toISOString();
    const machine = { ...machineInfo(), kernel: release() };
    const ghostfsEnv = ghostfsSettings(['GHOSTFS_LOG_FILE']);
    const header = [
      `ghostfs read benchmark — ${date}`,
      `machine: ${machine.cpus} × ${machine.cpuModel}, ${sizeLabel(machine.totalMemBytes)} RAM, kernel ${machine.kernel}`,
      `tools:   node ${tools.node}, ${tools.fio}, ${tools.rg}, ${tools.git}`,
      `repo:    ${tree.files} files in ${tree.dirs} dirs (depth ≤ ${tree.maxDepth}), ${sizeLabel(tree.bytes)}, ${tree.commits} commits; git status shows ${tree.modified} modified, ${tree.deleted} deleted, ${tree.untracked} untracked (+${tree.ignored} ignored); seed ${opts.seed}, ${repoReused ? 'reused' : `generated in ${marker.repo.seconds.toFixed(1)} s`}`,
      `big:     big.bin, ${sizeLabel(opts.big)} AES-CTR keystream (incompressible), ${bigReused ? 'reused' : `generated in ${marker.big.seconds.toFixed(1)} s`}`,
      `ghostfs: node and mount on loopback; ${opts.drivers.length > 1 ? 'drivers one after the other, each with a node of its own on a fresh state: ' : 'driver '}${describeDrivers(opts.drivers, mnt, mountArgs(opts))}${ghostfsEnv.length ? `; ${ghostfsEnv.join(' ')}` : ''}`,
      `runs:    local and warm: ${opts.runs} each; cold: ${coldRuns}${coldRuns < opts.runs ? ` (--cold-runs ${opts.coldRuns})` : ''}, each on a fresh mount with an empty cache; remount: ${opts.runs}, each a new mount on the filled cache; hot and hot again: right after each remount run and each local cold run`,
      `caches:  ${pageCacheDropped() ? 'page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) where a column says so' : 'page cache could NOT be dropped: cold columns include cached bytes'}`,
    ];
    const { text, summary } = render(results, ws, header, opts);
    const out: string[] = [text, '', ...requestReport(ws, opts.drivers), ''];
    out.push('Checks and notes');
    out.push(`  big.bin through ghostfs vs the node's file (cmp): ${opts.drivers.map((d) => `${d} ${runs[d]?.content ?? 'not checked'}`).join(', ')}`);
    for (const w of ws.filter((x) => reference.has(x.id))) {
      const bad = [...mismatches.entries()].filter(([k]) => k.startsWith(w.label + ' ('));
      out.push(`  ${w.label}: output ${bad.length ? 'DIFFERS from local disk' : 'same as local disk in every run'}${w.id === 'find' ? ` (${reference.get(w.id)} files)` : ''}`);
      for (const [k, v] of bad) out.push(`    ${k}: ${v.count} run(s): ${v.detail}`);
    }
    const st = (xs: number[]): string => (xs.length ? `median ${(median(xs) / 1000).toFixed(2)} s (${(Math.min(...xs) / 1000).toFixed(2)}–${(Math.max(...xs) / 1000).toFixed(2)}), ${xs.length} times` : 'n/a');
    for (const d of opts.drivers) {
      out.push(`  ${d}: mount ready (spawn to "mounted"): ${st(mountStats[d].readyMs)}; unmount (SIGTERM to exit): ${st(mountStats[d].unmountMs)}`);
      const ix = runs[d]?.indexed;
      if (ix) out.push(`  ${d}: its node indexed ${ix.files} files (${sizeLabel(ix.hashedBytes)} hashed) in ${(ix.durationMs / 1000).toFixed(1)} s`);
    }
    out.push(...issueAndNoteLines({ and: 'the node and the mounts', or: 'the node or the mounts' }));
    out.push(`  total benchmark time: ${((performance.now() - started) / 60_000).toFixed(1)} min`);
    process.stdout.write('\n' + out.join('\n') + '\n');

    if (opts.json) {
      const report = {
        date,
        machine,
        tools,
        params: { drivers: opts.drivers, files: opts.files, bigBytes: opts.big, runs: opts.runs, coldRuns, seed: opts.seed, fioRuntimeS: opts.fioRuntime, readahead: opts.readahead ?? null, attrTimeoutS: opts.attrTimeout ?? null, env: ghostfsEnv, pageCacheDropped: pageCacheDropped() },
        tree: { ...tree, reused: repoReused, generatedSeconds: marker.repo.seconds },
        results: Object.fromEntries(ws.map((w) => [w.id, { label: w.label, unit: w.unit, ...results[w.id] }])),
        summary,
        checks: { bigFileContent: Object.fromEntries(opts.drivers.map((d) => [d, runs[d]?.content ?? null])), mismatches: Object.fromEntries(mismatches), logIssues: Object.fromEntries(logIssues), notes },
        driverStats: Object.fromEntries(opts.drivers.map((d) => [d, requests[d]])),
        mount: Object.fromEntries(opts.drivers.map((d) => [d, mountStats[d]])),
        node: Object.fromEntries(opts.drivers.map((d) => [d, runs[d]?.indexed ?? null])),
      };
      process.stdout.write(`json: ${await writeJsonReport(opts.json, report)}\n`);
    }
    if (opts.keep) process.stdout.write(`kept: ${dir}\n`);
  } finally {
    await teardown();
  }
}

const program = new Command('read')
  .description('benchmark the ghostfs mount, read side: sequential and random reads, find, ls -lR, git status and rg, cold, warm and hot, per kernel driver, against local disk')
  .option('--files <n>', 'files in the generated git repository', parseCount(10), 27_000)
  .addOption(new Option('--big <size>', 'size of the incompressible file (e.g. 1G, 128M)').argParser(parseSize('128M or 1G', MiB)).default(1024 ** 3, '1G'))
  .option('--dir <dir>', 'where to put the data, node state, cache and mount point (default: a fresh dir under the OS temp dir)')
  .option('--keep', 'keep the directory afterwards (a kept tree with the same parameters is reused)', false)
  .option('--runs <n>', 'timed runs of each workload per column (median and min–max reported)', parseCount(1), 3)
  .addOption(new Option('--cold-runs <n>', 'cold runs (each needs a fresh mount and an empty cache); at most --runs').argParser(parseCount(1)))
  .option('--json <file>', 'also write every sample and the summary as JSON')
  .option('--quick', 'a small smoke run: 2000 files, a 128M file, 3 s fio runs (explicit flags win)', false)
  .option('--seed <n>', 'seed of the generated data', parseCount(0), 1)
  .option('--fio-runtime <s>', 'seconds of each fio run', parseCount(1), 10)
  .addOption(new Option('--drivers <names>', 'kernel drivers to measure, one after the other: native, fuse-native').argParser(parseDrivers).default([...DRIVERS], DRIVERS.join(',')))
  .addOption(new Option('--only <ids>', 'run only these workloads: seq,rand,find,ls,git,rg').argParser((v) => v.split(',').map((x) => x.trim()).filter(Boolean)))
  .addOption(new Option('--readahead <chunks>', 'passed to ghostfs mount').argParser(parseCount(0)))
  .addOption(new Option('--attr-timeout <s>', 'passed to ghostfs mount').argParser(parseCount(0)));

program.parse();
const opts = program.opts<Options>();
if (opts.quick) {
  const dflt = (k: string): boolean => program.getOptionValueSource(k) === 'default';
  if (dflt('files')) opts.files = 2000;
  if (dflt('big')) opts.big = 128 * MiB;
  if (dflt('fioRuntime')) opts.fioRuntime = 3;
}
opts.coldRuns ??= opts.runs;

main(opts).catch((err: unknown) => {
  if (err instanceof Aborted) return;
  process.stderr.write(`\nread: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
