// Benchmark: how long the node agent takes to build its index cold (empty
// state dir), to come back warm (same state dir, unchanged tree: the point of
// the persistent index is that this re-hashes nothing), and to come back after
// a few files changed (only those should be re-hashed).
//
// It runs the real CLI (`ghostfs serve`) as a child process on loopback and
// reads the numbers from the node's own "workspace indexed" log line, so it
// measures what an operator sees, not an in-process shortcut.
//
//   scripts/bench/node-index --files 100000 --size 2G --runs 3 [--json out.json]
import { Command } from 'commander';
import { type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { release, platform } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { CLI, handshake, REPO, spawnServe } from './lib/ghostfs.js';
import { parseCount, parseSize } from './lib/options.js';
import { ghostfsSettings, machineInfo, median } from './lib/report.js';
import { forEachLimited, logUniform, prng, unit } from './lib/tree.js';
import { openWorkDir, readMarkerFile, removeWorkDir, writeJsonReport } from './lib/workdir.js';

// ---------------------------------------------------------------------------
// options

interface Options {
  files: number;
  size: number;
  dir?: string;
  keep: boolean;
  runs: number;
  json?: string;
  seed: number;
  changed: number;
}

// ---------------------------------------------------------------------------
// deterministic data

const FILES_PER_DIR = 100;
// One random pool, sliced at per-file offsets: generating gigabytes from a JS
// PRNG byte by byte would take minutes, copying views of a pool takes seconds.
const POOL_BYTES = 64 * 1024 ** 2;
const PIECE_BYTES = 4 * 1024 ** 2;
const HEADER_BYTES = 16;
const MARKER = 'bench-tree.json';
const MARKER_FORMAT = 1;

interface Marker {
  format: number;
  files: number;
  size: number;
  seed: number;
  /** How many times the partial step rewrote files: the next rewrite's content differs from the last. */
  rewrites: number;
}

interface Tree {
  root: string;
  paths: string[];
  sizes: number[];
  dirs: number;
}

function makePool(seed: number): Buffer {
  const words = new Uint32Array(POOL_BYTES / 4);
  const r = prng(seed ^ 0x5eed);
  for (let i = 0; i < words.length; i++) words[i] = r();
  return Buffer.from(words.buffer);
}

/** Most files small (hundreds of bytes to tens of KiB), ~1 in 1000 large, summing exactly to `total`. */
function planSizes(n: number, total: number, seed: number): number[] {
  const r = prng(seed ^ 0x512e);
  const nLarge = n === 0 ? 0 : Math.max(1, Math.round(n / 1000));
  const large = new Set<number>();
  while (large.size < nLarge) large.add(Math.floor(unit(r) * n));
  const sizes = new Array<number>(n).fill(0);
  let small = 0;
  for (let i = 0; i < n; i++) if (!large.has(i)) small += sizes[i] = Math.floor(logUniform(r, 256, 64 * 1024));
  // Small files take at most a quarter of the bytes, so the large ones exist at
  // any --size: scale them down when the requested total is tight.
  if (small > total / 4) {
    const k = total / 4 / small;
    small = 0;
    for (let i = 0; i < n; i++) if (!large.has(i)) small += sizes[i] = Math.floor(sizes[i]! * k);
  }
  const order = [...large].sort((x, y) => x - y);
  const weights = order.map(() => logUniform(r, 1, 16));
  const sum = weights.reduce((s, w) => s + w, 0);
  let left = Math.max(0, total - small);
  order.forEach((idx, j) => {
    const s = j === order.length - 1 ? left : Math.floor(((total - small) * weights[j]!) / sum);
    sizes[idx] = s;
    left -= s;
  });
  return sizes;
}

/** ~100 files per leaf directory, leaves two levels down (d000/d000/f0000000.bin). */
function planTree(root: string, opts: Options): Tree {
  const leaves = Math.ceil(opts.files / FILES_PER_DIR);
  const fan = Math.max(1, Math.ceil(Math.sqrt(leaves)));
  const pad = (v: number, w: number): string => String(v).padStart(w, '0');
  const dw = String(fan).length;
  const fw = String(opts.files).length;
  const paths: string[] = [];
  for (let i = 0; i < opts.files; i++) {
    const leaf = Math.floor(i / FILES_PER_DIR);
    paths.push(join(`d${pad(Math.floor(leaf / fan), dw)}`, `d${pad(leaf % fan, dw)}`, `f${pad(i, fw)}.bin`));
  }
  return { root, paths, sizes: planSizes(opts.files, opts.size, opts.seed), dirs: leaves + Math.ceil(leaves / fan) };
}

/** Writes file i: a header unique to (seed, file, round) so no two files are identical, then pool slices. */
async function writeOne(tree: Tree, pool: Buffer, i: number, seed: number, round: number): Promise<void> {
  const size = tree.sizes[i]!;
  const r = prng(seed ^ Math.imul(i + 1, 0x9e3779b1) ^ Math.imul(round + 1, 0x7f4a7c15));
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32LE(seed >>> 0, 0);
  header.writeUInt32LE(i, 4);
  header.writeUInt32LE(round, 8);
  header.writeUInt32LE(r(), 12);
  const fh = await open(join(tree.root, tree.paths[i]!), 'w');
  try {
    let written = 0;
    const put = async (buf: Buffer): Promise<void> => {
      const { bytesWritten } = await fh.write(buf, 0, buf.length, null);
      if (bytesWritten !== buf.length) throw new Error(`short write to ${tree.paths[i]} (disk full?)`);
      written += bytesWritten;
    };
    await put(header.subarray(0, Math.min(HEADER_BYTES, size)));
    while (written < size) {
      const len = Math.min(PIECE_BYTES, size - written);
      const off = Math.floor(unit(r) * (POOL_BYTES - len));
      await put(pool.subarray(off, off + len));
    }
  } finally {
    await fh.close();
  }
}

const readMarker = (dir: string): Promise<Marker | null> => readMarkerFile<Marker>(dir, MARKER);

/** Generates DIR/tree unless a marker says it is already this exact tree. Returns seconds spent, or null when reused. */
async function ensureTree(dir: string, tree: Tree, opts: Options, pool: () => Buffer): Promise<number | null> {
  const marker = await readMarker(dir);
  if (marker && marker.format === MARKER_FORMAT && marker.files === opts.files && marker.size === opts.size && marker.seed === opts.seed && existsSync(tree.root)) {
    return null;
  }
  const t0 = performance.now();
  await rm(join(dir, MARKER), { force: true });
  await rm(tree.root, { recursive: true, force: true });
  const leafDirs = [...new Set(tree.paths.map((p) => join(tree.root, p, '..')))];
  for (const d of leafDirs) await mkdir(d, { recursive: true });
  const buf = pool();
  await forEachLimited(
    tree.paths.map((_, i) => i),
    64,
    (i) => writeOne(tree, buf, i, opts.seed, 0),
  );
  const m: Marker = { format: MARKER_FORMAT, files: opts.files, size: opts.size, seed: opts.seed, rewrites: 0 };
  await writeFile(join(dir, MARKER), JSON.stringify(m, null, 2) + '\n');
  return (performance.now() - t0) / 1000;
}

/** Rewrites `count` files spread over the tree with new content of the same size. Returns their indices. */
async function rewriteSome(dir: string, tree: Tree, opts: Options, pool: Buffer): Promise<number[]> {
  const count = Math.min(opts.changed, opts.files);
  const picked = Array.from({ length: count }, (_, j) => Math.floor((j * opts.files) / count));
  const marker = (await readMarker(dir))!;
  marker.rewrites += 1;
  await forEachLimited(picked, 16, (i) => writeOne(tree, pool, i, opts.seed, marker.rewrites));
  await writeFile(join(dir, MARKER), JSON.stringify(marker, null, 2) + '\n');
  return picked;
}

// ---------------------------------------------------------------------------
// running the node

interface RunResult {
  label: string;
  /** From the node's "workspace indexed" line. */
  durationMs: number;
  files: number;
  hashedFiles: number;
  hashedBytes: number;
  /** Spawn to the "workspace indexed" / "node serving" lines, as seen from outside. */
  wallIndexedMs: number;
  wallServingMs: number;
  /** SIGTERM to exit. */
  stopMs: number;
  /** Peak resident set (VmHWM) when serving began; null where /proc is unavailable. */
  peakRssMiB: number | null;
}

let current: ChildProcess | null = null;

function peakRss(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

class NodeFailed extends Error {
  constructor(message: string, readonly tail: string[]) {
    super(message);
  }
}

async function runNode(label: string, root: string, stateDir: string): Promise<RunResult> {
  const t0 = performance.now();
  const child = spawnServe(root, stateDir, 'pipe');
  current = child;
  const tail: string[] = [];
  const keep = (line: string): void => {
    tail.push(line);
    if (tail.length > 40) tail.shift();
  };
  createInterface({ input: child.stdout! }).on('line', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (code, signal) => res({ code, signal })));
  const spawnError = new Promise<never>((_, rej) => child.once('error', (err) => rej(new NodeFailed(`cannot start the node: ${err.message}`, tail))));

  // A holder, not a `let`: it is filled in a callback, which TypeScript's flow analysis does not see.
  const got: { indexed?: Omit<RunResult, 'label' | 'wallServingMs' | 'stopMs' | 'peakRssMiB'> } = {};
  const serving = new Promise<number>((res, rej) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      keep(line);
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return; // not a log record (e.g. a plain "ghostfs: ..." failure sentence): kept in the tail only
      }
      if (rec.msg === 'workspace indexed' && !got.indexed) {
        const num = (k: string): number => {
          const v = rec[k];
          if (typeof v !== 'number') throw new NodeFailed(`"workspace indexed" line has no numeric ${k}`, tail);
          return v;
        };
        try {
          got.indexed = { durationMs: num('durationMs'), files: num('files'), hashedFiles: num('hashedFiles'), hashedBytes: num('hashedBytes'), wallIndexedMs: performance.now() - t0 };
        } catch (err) {
          rej(err);
        }
      } else if (rec.msg === 'node serving') {
        const wall = performance.now() - t0;
        void handshake(rec.listen).then(() => res(wall));
      }
    });
    void exited.then(({ code, signal }) => rej(new NodeFailed(`the node exited before serving (${signal ?? `code ${code}`})`, tail)));
  });

  // Whichever loses the race may still settle later; that is expected, not an unhandled rejection.
  serving.catch(() => undefined);
  spawnError.catch(() => undefined);
  let wallServingMs: number;
  try {
    wallServingMs = await Promise.race([serving, spawnError]);
  } catch (err) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    current = null;
    throw err;
  }
  const rss = peakRss(child.pid);
  const tStop = performance.now();
  child.kill('SIGTERM');
  const { code, signal } = await exited;
  current = null;
  const indexed = got.indexed;
  if (!indexed) throw new NodeFailed('the node served without logging "workspace indexed"', tail);
  if (code !== 0) throw new NodeFailed(`the node did not stop cleanly on SIGTERM (${signal ?? `code ${code}`})`, tail);
  return { label, ...indexed, wallServingMs, stopMs: performance.now() - tStop, peakRssMiB: rss };
}

// ---------------------------------------------------------------------------
// report

const MiB = 1024 ** 2;

/** One value, or "median (min–max)" when the runs differ. */
function summarize(xs: number[], fmt: (v: number) => string): string {
  const lo = Math.min(...xs),
    hi = Math.max(...xs);
  return lo === hi ? fmt(lo) : `${fmt(median(xs))} (${fmt(lo)}–${fmt(hi)})`;
}

const ms = (v: number): string => v.toFixed(0);
const int = (v: number): string => String(Math.round(v));
const mib = (v: number): string => (v / MiB).toFixed(1);
const size = (v: number): string => (v >= 1024 ** 3 ? `${(v / 1024 ** 3).toFixed(2)} GiB` : `${(v / MiB).toFixed(1)} MiB`);

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]): string => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('   ');
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('   '), ...rows.slice(1).map(line)].join('\n');
}

function resultRow(label: string, rs: RunResult[]): string[] {
  const rss = rs.map((r) => r.peakRssMiB).filter((v): v is number => v !== null);
  return [
    label,
    summarize(rs.map((r) => r.durationMs), ms),
    summarize(rs.map((r) => r.wallServingMs), ms),
    summarize(rs.map((r) => r.files), int),
    summarize(rs.map((r) => r.hashedFiles), int),
    summarize(rs.map((r) => r.hashedBytes), mib),
    rss.length ? summarize(rss, int) : '-',
  ];
}

// ---------------------------------------------------------------------------
// main

async function main(opts: Options): Promise<void> {
  if (!existsSync(CLI) || !existsSync(join(REPO, 'dist', 'src', 'cli', 'main.js'))) {
    throw new Error(`the ghostfs CLI is not built (${CLI} / dist/src/cli/main.js); run \`npx tsc -p .\` in ${REPO}`);
  }
  // A named --dir must be new, empty, or one of ours (it has our marker).
  const { dir, madeDir } = await openWorkDir(opts.dir, 'ghostfs-bench-', MARKER, async (d) => !!(await readMarker(d)));
  const tree = planTree(join(dir, 'tree'), opts);
  const stateDir = join(dir, 'state');
  const progress = (s: string): boolean => process.stderr.write(s);

  const cleanup = async (): Promise<void> => {
    if (opts.keep) return;
    // A directory the user named: remove only what this benchmark put there.
    await removeWorkDir(dir, madeDir, [tree.root, stateDir, join(dir, MARKER)]);
  };
  // Ctrl-C: stop our child and leave no multi-GiB tree behind.
  process.once('SIGINT', () => {
    current?.kill('SIGTERM');
    void cleanup().finally(() => process.exit(130));
  });

  try {
    let poolBuf: Buffer | null = null;
    const pool = (): Buffer => (poolBuf ??= makePool(opts.seed));
    progress(`tree: ${tree.root} (${opts.files} files, ${size(opts.size)})... `);
    const genSeconds = await ensureTree(dir, tree, opts, pool);
    progress(genSeconds === null ? 'reused\n' : `generated in ${genSeconds.toFixed(1)} s\n`);

    await rm(stateDir, { recursive: true, force: true });
    await mkdir(stateDir, { recursive: true });
    progress('cold run... ');
    const cold = await runNode('cold', tree.root, stateDir);
    progress(`${ms(cold.durationMs)} ms\n`);
    const warm: RunResult[] = [];
    for (let i = 1; i <= opts.runs; i++) {
      progress(`warm run ${i}/${opts.runs}... `);
      const r = await runNode(`warm ${i}`, tree.root, stateDir);
      warm.push(r);
      progress(`${ms(r.durationMs)} ms\n`);
    }
    const changed = await rewriteSome(dir, tree, opts, pool());
    const changedBytes = changed.reduce((s, i) => s + tree.sizes[i]!, 0);
    progress(`partial run (${changed.length} files rewritten)... `);
    const partial = await runNode('partial', tree.root, stateDir);
    progress(`${ms(partial.durationMs)} ms\n\n`);

    const ghostfsEnv = ghostfsSettings();
    const date = new Date().toISOString();
    const machine = { ...machineInfo(), os: `${platform()} ${release()}`, node: process.version };
    const out: string[] = [];
    out.push(`ghostfs node index benchmark — ${date}`);
    out.push(`machine: ${machine.cpus} × ${machine.cpuModel}, ${size(machine.totalMemBytes)} RAM, ${machine.os}, node ${machine.node}`);
    out.push(`tree:    ${opts.files} files in ${tree.dirs} dirs, ${size(opts.size)}, seed ${opts.seed} (${genSeconds === null ? 'reused' : `generated in ${genSeconds.toFixed(1)} s`})`);
    out.push(`node:    ghostfs serve, ${ghostfsEnv.length ? ghostfsEnv.join(' ') : 'default settings'}`);
    out.push('');
    out.push('cold    = empty state dir (the OS page cache is not dropped: tree bytes may be in RAM)');
    out.push(`warm    = restart on the same state dir, tree unchanged (${opts.runs} run${opts.runs === 1 ? '' : 's'}: median (min–max))`);
    out.push(`partial = restart after rewriting ${changed.length} files (${mib(changedBytes)} MiB), same sizes`);
    out.push('index ms = durationMs of the "workspace indexed" line; ready ms = spawn to "node serving"');
    out.push('');
    const rows = [
      ['run', 'index ms', 'ready ms', 'files', 'hashed files', 'hashed MiB', 'peak RSS MiB'],
      resultRow('cold', [cold]),
      ...(warm.length ? [resultRow('warm', warm)] : []),
      resultRow('partial', [partial]),
    ];
    out.push(table(rows));
    out.push('');
    const ratio = (a: number, b: number): string => (b > 0 ? `${(a / b).toFixed(1)}×` : 'n/a');
    const warmIndex = warm.length ? median(warm.map((r) => r.durationMs)) : NaN;
    const warmReady = warm.length ? median(warm.map((r) => r.wallServingMs)) : NaN;
    if (warm.length) out.push(`cold/warm: index ${ratio(cold.durationMs, warmIndex)}, ready ${ratio(cold.wallServingMs, warmReady)}`);
    out.push(`partial:   expected ${changed.length} files / ${mib(changedBytes)} MiB re-hashed, node reported ${partial.hashedFiles} / ${mib(partial.hashedBytes)} MiB`);
    process.stdout.write(out.join('\n') + '\n');

    if (opts.json) {
      const report = {
        date,
        machine,
        params: { files: opts.files, sizeBytes: opts.size, runs: opts.runs, seed: opts.seed, changed: changed.length, env: ghostfsEnv },
        tree: { dirs: tree.dirs, generatedSeconds: genSeconds, changedBytes },
        cold,
        warm,
        partial,
        summary: {
          warmMedianDurationMs: warm.length ? warmIndex : null,
          warmMedianReadyMs: warm.length ? warmReady : null,
          coldOverWarmIndex: warm.length && warmIndex > 0 ? cold.durationMs / warmIndex : null,
          coldOverWarmReady: warm.length && warmReady > 0 ? cold.wallServingMs / warmReady : null,
        },
      };
      process.stdout.write(`json:      ${await writeJsonReport(opts.json, report)}\n`);
    }
    if (opts.keep) process.stdout.write(`kept:      ${dir}\n`);
  } finally {
    await cleanup();
  }
}

const program = new Command('node-index')
  .description('benchmark the ghostfs node agent: cold index, warm restarts, restart after a few changes')
  .option('--files <n>', 'files in the generated tree', parseCount(1), 100_000)
  .option('--size <bytes>', 'total bytes in the tree (e.g. 2G, 512M)', parseSize('512M or 2G'), 2 * 1024 ** 3)
  .option('--dir <dir>', 'where to put the tree and state (default: a fresh dir under the OS temp dir)')
  .option('--keep', 'keep the directory afterwards (a kept tree with the same parameters is reused)', false)
  .option('--runs <n>', 'warm restarts', parseCount(0), 3)
  .option('--json <file>', 'also write the results as JSON')
  .option('--seed <n>', 'seed for the generated tree', parseCount(0), 1)
  .option('--changed <n>', 'files rewritten before the partial run', parseCount(1), 100);

program.parse();

main(program.opts<Options>()).catch((err: unknown) => {
  process.stderr.write(`\nnode-index: ${(err as Error).message}\n`);
  if (err instanceof NodeFailed && err.tail.length) {
    process.stderr.write(`--- last node output ---\n${err.tail.join('\n')}\n`);
  }
  process.exitCode = 1;
});
