// Benchmark: the mount's write side against local disk, in one run.
//
// Three workloads, each on local disk and through ghostfs, printed side by
// side with the ratio ghostfs/local:
//   1. N small files (4 KiB) created, written and closed one after another by
//      one process: files/s; then the node's directory is checked right away
//      (close() returns once the node committed, so every file must be there);
//   2. a large sequential write with dd bs=1M from a pre-generated
//      incompressible file: MB/s until dd exits (its close is the commit);
//      then the node's copy is hashed;
//   3. tar -x of a generated source tree (~28k files): seconds; then the node's
//      copy is compared with the archive by a sorted list of sha256 sums.
//
// It drives the real CLI (`ghostfs serve`, `ghostfs mount --foreground`) as
// child processes on loopback, and every workload, check or cleanup that
// touches the mount is a child process too: this process never does file I/O
// on the mount (a project rule). It reads the node's directory directly, which
// is plain local disk.
//
//   scripts/bench/write [--quick] [--files 2000] [--big 256M] [--tree-files 28000] [--runs 1] [--json out.json] [--keep --dir DIR]
import { Command, InvalidArgumentError, Option } from 'commander';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { connect as h2connect } from 'node:http2';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { generateSourceTree, removeTree, writeIncompressible } from './lib/tree.js';

// ---------------------------------------------------------------------------
// options

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const MB = 1e6;
const MiB = 1024 ** 2;
const SMALL_SIZE = 4096;

function parseBytes(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`"${v}" is not a size (for example 32M or 1G).`);
  const n = Math.round(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!);
  if (n < MiB) throw new InvalidArgumentError(`"${v}" is too small: the big file needs at least 1M.`);
  return n;
}

function parseCount(min: number) {
  return (v: string): number => {
    if (!/^\d+$/.test(v.trim()) || Number(v) < min) throw new InvalidArgumentError(`"${v}" is not a whole number >= ${min}.`);
    return Number(v);
  };
}

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
}

// ---------------------------------------------------------------------------
// processes: everything we start is tracked, so Ctrl-C or an error stops it

const REPO = resolve(fileURLToPath(new URL('../../../', import.meta.url)));
const CLI = join(REPO, 'bin', 'ghostfs.js');
const MARKER = 'bench-write.json';
const MARKER_FORMAT = 1;

class Aborted extends Error {
  constructor() {
    super('interrupted');
  }
}

let aborting = false;
/** Workload commands run in their own process group (detached) so a timeout or Ctrl-C stops the whole pipeline. */
const workloads = new Set<ChildProcess>();
const progress = (s: string): void => void process.stderr.write(s);

/** Things worth a human's attention (failures, missing files, log warnings), printed under the table. */
const notes: string[] = [];
const note = (s: string): void => {
  notes.push(s);
  progress(`\n  note: ${s}\n`);
};

/** warn/error log lines of the node and the mount, grouped by message. */
const logIssues = new Map<string, { count: number; example: string }>();

function recordIssue(key: string, line: string): void {
  const e = logIssues.get(key);
  if (e) e.count++;
  else logIssues.set(key, { count: 1, example: line.slice(0, 400) });
}

function watchLog(who: string, line: string, tail: string[]): Record<string, unknown> | null {
  tail.push(line);
  if (tail.length > 60) tail.shift();
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    // Not a log record (a plain failure sentence, libfuse output): worth showing.
    if (line.trim()) recordIssue(`${who}: ${line.trim().slice(0, 200)}`, line);
    return null;
  }
  if (rec.msg === 'unmounting' && rec.signal !== 'SIGTERM' && !aborting) recordIssue(`${who}: unmounting on its own (${String(rec.signal)})`, line);
  if (typeof rec.level === 'number' && rec.level >= 40) recordIssue(`${who} ${rec.level >= 50 ? 'error' : 'warn'}: ${String(rec.msg)}${rec.errno ? ` (${String(rec.errno)})` : ''}`, line);
  return rec;
}

interface CmdResult {
  ms: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a shell command (bash, pipefail) and times it from spawn to exit. */
function runCmd(cmd: string, cwd: string, o: { capture?: boolean; timeoutMs: number; args?: string[] }): Promise<CmdResult> {
  if (aborting) return Promise.reject(new Aborted());
  return new Promise((res, rej) => {
    const t0 = performance.now();
    // Extra args become $1, $2... of the script: paths never need shell quoting.
    const child = spawn('bash', ['-o', 'pipefail', '-c', cmd, 'bench', ...(o.args ?? [])], { cwd, detached: true, stdio: ['ignore', o.capture ? 'pipe' : 'ignore', 'pipe'] });
    workloads.add(child);
    const out: Buffer[] = [];
    let err = '';
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.length > 64 * 1024) err = err.slice(-32 * 1024);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, 'SIGKILL');
    }, o.timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      workloads.delete(child);
      rej(e);
    });
    child.once('close', (code, signal) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      workloads.delete(child);
      if (aborting) return rej(new Aborted());
      res({ ms, code, signal, stdout: Buffer.concat(out).toString(), stderr: err, timedOut });
    });
  });
}

function killGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    if (child.pid) process.kill(-child.pid, sig);
  } catch {
    /* already gone */
  }
}

function failed(what: string, r: CmdResult): Error {
  const why = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  return new Error(`${what}: ${why}${r.stderr.trim() ? `; stderr: ${r.stderr.trim().split('\n').slice(-3).join(' | ').slice(0, 400)}` : ''}`);
}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** A timer for races: unref'd, so a race already won does not keep the process alive until it fires. */
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

// ---------------------------------------------------------------------------
// tools: install what a fresh Debian machine lacks

function ensureTools(): void {
  const missing: string[] = [];
  const need: ReadonlyArray<readonly [readonly string[], string]> = [
    [['dd'], 'coreutils'],
    [['tar'], 'tar'],
    [['git'], 'git'], // the tree generator (lib/tree.ts) builds a git repository
    [['fusermount3', 'fusermount'], 'fuse3'],
  ];
  for (const [cmds, pkg] of need) if (!cmds.some(have)) missing.push(pkg);
  // fuse-native (the mount's driver) loads libfuse 2.
  if (spawnSync('sh', ['-c', "ldconfig -p 2>/dev/null | grep -q 'libfuse.so.2 '"]).status !== 0) missing.push('libfuse2');
  if (!missing.length) return;
  const root = process.getuid?.() === 0;
  // sudo resets the environment, so the non-interactive switch rides on env(1).
  const aptCmd = root ? ['apt-get'] : have('sudo') ? ['sudo', '-n', 'env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get'] : null;
  if (!aptCmd || !have('apt-get')) throw new Error(`missing Debian packages ${missing.join(', ')}; install them (apt-get install ${missing.join(' ')}) and run again`);
  progress(`installing Debian packages: ${missing.join(' ')}\n`);
  const apt = (args: string[]): void => {
    // Installer chatter goes to stderr: stdout is the report.
    const r = spawnSync(aptCmd[0]!, [...aptCmd.slice(1), ...args], { stdio: ['ignore', 2, 2], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (exit ${r.status})`);
  };
  apt(['update', '-qq']);
  apt(['install', '-y', '-qq', '--no-install-recommends', ...missing]);
}

const fusermount = (): string => (have('fusermount3') ? 'fusermount3' : 'fusermount');

function toolVersions(): Record<string, string> {
  const first = (cmd: string, args: string[]): string => (spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '').split('\n')[0]!.trim() || 'unknown';
  return { node: process.version, dd: first('dd', ['--version']), tar: first('tar', ['--version']) };
}

// ---------------------------------------------------------------------------
// CPU time of the node and the mount (all threads), to show where a slow write spends it

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

interface NodeProc {
  child: ChildProcess;
  endpoint: string;
  tail: string[];
}

interface MountProc {
  child: ChildProcess;
  mnt: string;
  readyMs: number;
  tail: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

let node: NodeProc | null = null;
let mounted: MountProc | null = null;

/**
 * Resolves once the node's server answered an HTTP/2 handshake: `ghostfs
 * serve` logs "node serving" a moment before its SIGTERM handler is in place;
 * a turned event loop means it is.
 */
function handshake(port: string): Promise<void> {
  return new Promise((res) => {
    const session = h2connect(`http://127.0.0.1:${port}`);
    const done = (): void => {
      session.destroy();
      res();
    };
    session.once('remoteSettings', done);
    session.once('error', done);
    session.once('close', done);
  });
}

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, GHOSTFS_LOG_LEVEL: 'info', GHOSTFS_LOG_PRETTY: '0' };
  delete env.GHOSTFS_LOG_FILE; // the lines must come to us on stderr
  return env;
}

async function startNode(root: string, stateDir: string): Promise<NodeProc> {
  if (aborting) throw new Aborted();
  // Port 0: the kernel picks a free loopback port.
  const child = spawn(process.execPath, [CLI, 'serve', '--root', root, '--state-dir', stateDir, '--listen', '127.0.0.1:0'], { cwd: REPO, env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  const n: NodeProc = { child, endpoint: '', tail: [] };
  node = n;
  const exited = new Promise<string>((res) => child.once('exit', (code, sig) => res(sig ?? `code ${code}`)));
  const ready = new Promise<void>((res) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      const rec = watchLog('node', line, n.tail);
      if (rec?.msg === 'node serving' && typeof rec.listen === 'string' && !n.endpoint) {
        n.endpoint = rec.listen;
        void handshake(rec.listen.split(':').pop()!).then(res);
      }
    });
  });
  const how = await Promise.race([ready.then(() => null), exited, sleep(120_000).then(() => 'not serving after 120 s')]);
  if (how !== null) throw new Error(`the node ${how.startsWith('not') ? how : `exited before serving (${how})`}:\n${n.tail.join('\n')}`);
  return n;
}

async function stopNode(): Promise<void> {
  const n = node;
  if (!n) return;
  node = null;
  if (n.child.exitCode !== null || n.child.signalCode !== null) return;
  const exited = new Promise<void>((res) => n.child.once('exit', () => res()));
  n.child.kill('SIGTERM');
  if (!(await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)]))) {
    note('the node did not exit within 30 s of SIGTERM; killed');
    n.child.kill('SIGKILL');
    await exited;
  }
}

function procMounts(): string[] {
  try {
    // Mount points are octal-escaped in /proc/mounts (a space is \040).
    return readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => (l.split(' ')[1] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  } catch {
    return [];
  }
}
const isMounted = (mnt: string): boolean => procMounts().includes(mnt);

function lazyUnmount(mnt: string): void {
  spawnSync(fusermount(), ['-uz', mnt], { stdio: 'ignore', timeout: 30_000 });
}

async function startMount(mnt: string, cacheDir: string): Promise<MountProc> {
  if (aborting) throw new Aborted();
  if (!node) throw new Error('no node running');
  if (isMounted(mnt)) {
    note(`${mnt} was still mounted before a new mount: lazily unmounted`);
    lazyUnmount(mnt);
  }
  const t0 = performance.now();
  const child = spawn(process.execPath, [CLI, 'mount', node.endpoint, mnt, '--cache-dir', cacheDir, '--foreground'], { cwd: REPO, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const m: MountProc = { child, mnt, readyMs: 0, tail: [], exited: new Promise((res) => child.once('exit', (code, signal) => res({ code, signal }))) };
  mounted = m;
  createInterface({ input: child.stdout! }).on('line', (l) => watchLog('mount', l, m.tail));
  const ready = new Promise<void>((res) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      if (watchLog('mount', line, m.tail)?.msg === 'mounted') res();
    });
  });
  const outcome = await Promise.race([ready.then(() => 'ok'), m.exited.then((e) => `exited (${e.signal ?? `code ${e.code}`})`), sleep(120_000).then(() => 'not ready after 120 s')]);
  if (aborting) throw new Aborted();
  if (outcome !== 'ok') {
    await stopMount();
    throw new Error(`the mount ${outcome}:\n${m.tail.join('\n')}`);
  }
  m.readyMs = performance.now() - t0;
  return m;
}

/** SIGTERM (the mount unmounts itself and exits); if stuck, a lazy unmount and SIGKILL. */
async function stopMount(): Promise<number> {
  const m = mounted;
  if (!m) return NaN;
  mounted = null;
  const t0 = performance.now();
  const within = (ms: number): Promise<boolean> => Promise.race([m.exited.then(() => true), sleep(ms).then(() => false)]);
  if (m.child.exitCode === null && m.child.signalCode === null) {
    m.child.kill('SIGTERM');
    if (!(await within(30_000))) {
      note(`the mount at ${m.mnt} did not exit within 30 s of SIGTERM: fusermount -uz, then SIGKILL`);
      lazyUnmount(m.mnt);
      if (!(await within(10_000))) {
        m.child.kill('SIGKILL');
        await m.exited;
      }
    }
  }
  const { code, signal } = await m.exited;
  if (!aborting && code !== 0) note(`the mount process exited with ${signal ?? `code ${code}`} on SIGTERM; last lines:\n${m.tail.slice(-8).join('\n')}`);
  if (isMounted(m.mnt)) {
    note(`${m.mnt} was still mounted after its process exited: fusermount -uz`);
    lazyUnmount(m.mnt);
  }
  return performance.now() - t0;
}

/** What a failure through the mount looked like from outside: is the mount process alive, still mounted, its last words. */
function mountState(): string {
  const m = mounted;
  if (!m) return '';
  const gone = m.child.exitCode !== null || m.child.signalCode !== null;
  return `; mount process ${gone ? `had exited (${m.child.signalCode ?? `code ${m.child.exitCode}`})` : 'still running'}, ${isMounted(m.mnt) ? 'still' : 'no longer'} mounted; its last log lines:\n      ${m.tail.slice(-6).join('\n      ')}`;
}

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
}

async function readMarker(dir: string): Promise<Marker | null> {
  try {
    const m = JSON.parse(await readFile(join(dir, MARKER), 'utf8')) as Marker;
    return m.format === MARKER_FORMAT ? m : null;
  } catch {
    return null;
  }
}

/** Every regular file under the current dir as `sha256  ./path`, sorted bytewise: the content identity of a tree (mtimes and modes left out on purpose). */
const HASH_LIST = `find . -path ./.git -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum`;

async function ensureData(dataDir: string, markerDir: string, opts: Options): Promise<{ tree: TreeInfo; big: Required<Marker>['big']; treeReused: boolean; bigReused: boolean }> {
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
    await removeTree(src);
    progress(`generating the source tree (${opts.treeFiles} files, seed ${opts.seed}) and its tar... `);
    const t0 = performance.now();
    await generateSourceTree(src, { files: opts.treeFiles, seed: opts.seed });
    // The generator makes a git checkout; the archive holds the working tree only
    // (the .git pack is one big binary file, not what "a source tree" measures).
    // Fixed owner and mtime make the archive itself reproducible.
    const mk = await runCmd('tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --exclude=./.git -cf "$1" .', src, { timeoutMs: 30 * 60_000, args: [tar] });
    if (mk.code !== 0) throw failed('tar -c', mk);
    const h = await runCmd(HASH_LIST, src, { capture: true, timeoutMs: 30 * 60_000 });
    if (h.code !== 0) throw failed('hashing the tree', h);
    await writeFile(list, h.stdout);
    const sizes = await runCmd("find . -path ./.git -prune -o -type f -printf '%s\\n'; echo dirs $(find . -path ./.git -prune -o -mindepth 1 -type d -print | wc -l)", src, { capture: true, timeoutMs: 30 * 60_000 });
    const lines = sizes.stdout.trim().split('\n');
    const dirs = Number(lines.pop()!.split(' ')[1]);
    marker.tree = {
      files: opts.treeFiles,
      seed: opts.seed,
      count: lines.length,
      dirs,
      bytes: lines.reduce((s, l) => s + Number(l), 0),
      tarBytes: statSync(tar).size,
      seconds: (performance.now() - t0) / 1000,
    };
    // Only the archive and its hash list are needed from here on.
    await removeTree(src);
    await save();
    progress(`${marker.tree.seconds.toFixed(1)} s\n`);
  }
  const bigFile = join(dataDir, 'big.bin');
  const bigReused = !!(marker.big && marker.big.size === opts.big && marker.big.seed === opts.seed && existsSync(bigFile) && statSync(bigFile).size === opts.big);
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
  // The small files' 4 KiB body; each file gets its index in its first bytes so no two are alike.
  await writeIncompressible(join(dataDir, 'small.bin'), SMALL_SIZE, opts.seed + 7);
  return { tree: marker.tree!, big: marker.big!, treeReused, bigReused };
}

// ---------------------------------------------------------------------------
// workloads

/**
 * The small-file writer, run as `node -e` in its own process: N times
 * open(O_CREAT|O_TRUNC)+write+close via writeFileSync, timed by itself so node's
 * start-up is not counted. It also reports each file's latency, so a few stalls
 * can be told from a uniformly slow path.
 */
const SMALL_WRITER = `
const fs = require('fs'), path = require('path');
const [dir, n, basePath] = process.argv.slice(1);
const body = fs.readFileSync(basePath);
fs.mkdirSync(dir);
const lat = new Float64Array(Number(n));
const t0 = performance.now();
for (let i = 0; i < lat.length; i++) {
  const s = performance.now();
  body.writeUInt32LE(i, 0);
  fs.writeFileSync(path.join(dir, 'f' + String(i).padStart(6, '0') + '.dat'), body);
  lat[i] = performance.now() - s;
}
const ms = performance.now() - t0;
lat.sort();
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
process.stdout.write(JSON.stringify({ ms, p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1] }) + '\\n');
`;

const smallName = (i: number): string => `f${String(i).padStart(6, '0')}.dat`;

/** The node's copy of the small files, read straight from its root: how many are there with the right size and bytes. */
async function checkSmall(dir: string, n: number, body: Buffer): Promise<{ ok: number; missing: number; wrongSize: number; wrongContent: number; extra: number }> {
  let names: Set<string>;
  try {
    names = new Set(await readdir(dir));
  } catch {
    names = new Set();
  }
  const r = { ok: 0, missing: 0, wrongSize: 0, wrongContent: 0, extra: 0 };
  const want = Buffer.from(body);
  for (let i = 0; i < n; i++) {
    const name = smallName(i);
    if (!names.delete(name)) {
      r.missing++;
      continue;
    }
    const p = join(dir, name);
    if ((await stat(p)).size !== SMALL_SIZE) {
      r.wrongSize++;
      continue;
    }
    want.writeUInt32LE(i, 0);
    if (!(await readFile(p)).equals(want)) r.wrongContent++;
    else r.ok++;
  }
  r.extra = names.size;
  return r;
}

function diffLists(want: string, got: string): string {
  const parse = (s: string): Map<string, string> => new Map(s.split('\n').filter(Boolean).map((l) => [l.slice(66), l.slice(0, 64)]));
  const a = parse(want),
    b = parse(got);
  const missing = [...a.keys()].filter((k) => !b.has(k));
  const extra = [...b.keys()].filter((k) => !a.has(k));
  const differ = [...a.keys()].filter((k) => b.has(k) && b.get(k) !== a.get(k));
  const show = (xs: string[]): string => (xs.length ? `${xs.length} (${xs.slice(0, 3).join(', ')}${xs.length > 3 ? ', …' : ''})` : '0');
  return `missing ${show(missing)}, different content ${show(differ)}, extra ${show(extra)}`;
}

// ---------------------------------------------------------------------------
// results

type Unit = 'files/s' | 'MB/s' | 's';
type Where = 'local' | 'ghostfs';

interface Cell {
  samples: number[];
  failures: string[];
}

interface Row {
  id: 'small' | 'big' | 'bigFsync' | 'untar';
  label: string;
  unit: Unit;
  local: Cell;
  ghostfs: Cell;
  target?: { text: string; ok: (v: number) => boolean };
}

const emptyCell = (): Cell => ({ samples: [], failures: [] });

interface GhostSample {
  workload: string;
  run: number;
  wallS: number;
  mountCpuS: number;
  nodeCpuS: number;
  extra?: Record<string, unknown>;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function fmt(unit: Unit, v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (unit === 's') return v < 1 ? v.toFixed(3) : v < 100 ? v.toFixed(2) : v.toFixed(1);
  if (unit === 'MB/s') return v < 100 ? v.toFixed(1) : v.toFixed(0);
  return v < 100 ? v.toFixed(1) : Math.round(v).toString();
}

function sizeLabel(v: number): string {
  return v >= 1024 ** 3 ? `${+(v / 1024 ** 3).toFixed(2)} GiB` : v >= MiB ? `${+(v / MiB).toFixed(1)} MiB` : `${+(v / 1024).toFixed(1)} KiB`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]): string =>
    r
      .map((cell, c) => (c === 0 || c === r.length - 1 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join('   ')
      .trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('   '), ...rows.slice(1).map(line)].join('\n');
}

// ---------------------------------------------------------------------------
// main

async function main(opts: Options): Promise<void> {
  const started = performance.now();
  if (!existsSync(join(REPO, 'dist', 'src', 'cli', 'main.js'))) throw new Error(`the ghostfs CLI is not built (dist/src/cli/main.js); run \`npx tsc -p .\` in ${REPO}`);
  ensureTools();

  const madeDir = !opts.dir;
  const dir = opts.dir ? resolve(opts.dir) : await mkdtemp(join(tmpdir(), 'ghostfs-bench-write-'));
  // Never delete what we did not make: a named --dir must be new, empty, or one of ours.
  if (opts.dir && existsSync(dir) && !(await readMarker(dir)) && (await readdir(dir)).length > 0) {
    throw new Error(`${dir} is not empty and was not made by this benchmark (no ${MARKER}); give a new or empty --dir`);
  }
  await mkdir(dir, { recursive: true });
  const dataDir = join(dir, 'data'); // sources: big.bin, tree.tar, hash lists
  const localDir = join(dir, 'local'); // local-disk targets
  const srcDir = join(dir, 'src'); // the node's workspace root
  const stateDir = join(dir, 'state');
  const cacheDir = join(dir, 'cache');
  const mnt = join(dir, 'mnt');

  let teardownP: Promise<void> | null = null;
  const teardown = (): Promise<void> =>
    (teardownP ??= (async () => {
      for (const c of workloads) killGroup(c, 'SIGKILL');
      await stopMount();
      await stopNode();
      if (isMounted(mnt)) lazyUnmount(mnt);
      // Removing a tree with a mount still inside it would reach into the mount: refuse, say where it is.
      if (isMounted(mnt)) {
        progress(`\n${mnt} is still mounted: not removing ${dir}\n`);
        return;
      }
      // Written outputs are never worth keeping; the generated data is (--keep reuses it).
      for (const p of [localDir, srcDir, stateDir, cacheDir]) await rm(p, { recursive: true, force: true });
      if (opts.keep) return;
      if (madeDir) await rm(dir, { recursive: true, force: true });
      else {
        for (const p of [dataDir, mnt, join(dir, MARKER)]) await rm(p, { recursive: true, force: true });
        await rmdir(dir).catch(() => undefined);
      }
    })());
  // Ctrl-C (and kill): stop the workload, unmount, stop the node, remove the temp tree, then exit.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (aborting) return;
      aborting = true;
      progress(`\n${sig}: stopping, unmounting and cleaning up...\n`);
      void teardown().finally(() => process.exit(130));
    });
  }

  try {
    if (isMounted(mnt)) lazyUnmount(mnt); // a kept --dir whose last run was killed hard
    for (const p of [localDir, srcDir, stateDir, cacheDir]) await rm(p, { recursive: true, force: true });
    for (const p of [localDir, srcDir, stateDir, cacheDir, mnt]) await mkdir(p, { recursive: true });
    const { tree, big, treeReused, bigReused } = await ensureData(dataDir, dir, opts);
    const smallBody = await readFile(join(dataDir, 'small.bin'));
    const treeList = await readFile(join(dataDir, 'tree.sha256'), 'utf8');

    const rows: Record<Row['id'], Row> = {
      small: { id: 'small', label: `${opts.files} × 4 KiB create+write+close (1 process)`, unit: 'files/s', local: emptyCell(), ghostfs: emptyCell(), target: { text: 'ghostfs ≥ 4000 files/s', ok: (v) => v >= 4000 } },
      big: { id: 'big', label: `${sizeLabel(opts.big)} sequential write (dd bs=1M)`, unit: 'MB/s', local: emptyCell(), ghostfs: emptyCell(), target: { text: 'ghostfs ≥ 500 MB/s', ok: (v) => v >= 500 } },
      bigFsync: { id: 'bigFsync', label: `  same, local with conv=fsync (durable, like a commit)`, unit: 'MB/s', local: emptyCell(), ghostfs: emptyCell() },
      untar: { id: 'untar', label: `tar -x of a ${tree.count}-file tree (${sizeLabel(tree.bytes)})`, unit: 's', local: emptyCell(), ghostfs: emptyCell(), target: { text: 'ghostfs ≤ 25 s', ok: (v) => v <= 25 } },
    };
    const ghostSamples: GhostSample[] = [];
    const checks: string[] = [];
    const latency: Record<Where, { p50: number; p99: number; max: number }[]> = { local: [], ghostfs: [] };
    const cleanupMs: Record<string, number[]> = {};

    const loadStart = loadLine();
    const othersStart = otherGhostfs();
    if (othersStart.length) note(`other ghostfs processes or tests are running on this machine and share its CPUs and disk: ${othersStart.slice(0, 8).join("; ")}${othersStart.length > 8 ? "; …" : ""}`);
    progress('starting the node... ');
    const n = await startNode(srcDir, stateDir);
    progress(`serving on ${n.endpoint}\n`);
    const m = await startMount(mnt, cacheDir);
    progress(`mounted at ${mnt} in ${(m.readyMs / 1000).toFixed(1)} s\n`);

    /**
     * One timed sample. Before it: sync (the previous sample's dirty pages must
     * not be written back on this one's clock) and the source read once into the
     * page cache, so local and ghostfs both read it from memory.
     */
    const sample = async (row: Row, where: Where, run: number, body: (root: string, timed: () => void) => Promise<{ value: number; extra?: Record<string, unknown> }>, warm?: string): Promise<void> => {
      progress(`  run ${run}/${opts.runs}  ${where.padEnd(7)}  ${row.label.trim().padEnd(52)} `);
      await runCmd(`sync${warm ? ' && cat "$1" > /dev/null' : ''}`, dataDir, { timeoutMs: 10 * 60_000, args: warm ? [warm] : [] });
      const cpu0 = where === 'ghostfs' ? { m: cpuSeconds(mounted?.child.pid), n: cpuSeconds(node?.child.pid), t: performance.now() } : null;
      // CPU is read when the timed command ends, before the checks run.
      let cpu1: typeof cpu0 = null;
      const timed = (): void => void (cpu1 = cpu0 && { m: cpuSeconds(mounted?.child.pid), n: cpuSeconds(node?.child.pid), t: performance.now() });
      try {
        const r = await body(where === 'local' ? localDir : mnt, timed);
        row[where].samples.push(r.value);
        progress(`${fmt(row.unit, r.value)} ${row.unit}\n`);
        const end = cpu1 as typeof cpu0;
        if (cpu0 && end) ghostSamples.push({ workload: row.id, run, wallS: (end.t - cpu0.t) / 1000, mountCpuS: end.m - cpu0.m, nodeCpuS: end.n - cpu0.n, extra: r.extra });
      } catch (err) {
        if (err instanceof Aborted) throw err;
        const msg = (err as Error).message + (where === 'ghostfs' ? mountState() : '');
        row[where].failures.push(msg);
        progress('failed\n');
        note(`${row.label.trim()}, ${where}, run ${run}: ${msg}`);
      }
    };

    /** Removes a sample's output: local directly, ghostfs through the mount (a child rm, timed for the notes). */
    const cleanup = async (where: Where, name: string): Promise<void> => {
      if (where === 'local') return void (await rm(join(localDir, name), { recursive: true, force: true }));
      const r = await runCmd('rm -rf -- "$1"', mnt, { timeoutMs: 30 * 60_000, args: [name] });
      if (r.code !== 0) {
        note(`rm -rf ${name} through the mount failed (${failed('rm', r).message})${mountState()}; removing it on the node instead`);
        await rm(join(srcDir, name), { recursive: true, force: true });
      } else (cleanupMs[name.replace(/-\d+(\.bin)?$/, '')] ??= []).push(r.ms);
    };

    for (let run = 1; run <= opts.runs; run++) {
      // ---- 1. small files
      for (const where of ['local', 'ghostfs'] as const) {
        const name = `small-${run}`;
        await sample(rows.small, where, run, async (root, timed) => {
          const r = await runCmd(`exec "${process.execPath}" -e "$1" "$2" "$3" "$4"`, dataDir, { capture: true, timeoutMs: 30 * 60_000, args: [SMALL_WRITER, join(root, name), String(opts.files), join(dataDir, 'small.bin')] });
          timed();
          if (r.code !== 0) throw failed('small-file writer', r);
          const t = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ms: number; p50: number; p99: number; max: number };
          latency[where].push({ p50: t.p50, p99: t.p99, max: t.max });
          const value = opts.files / (t.ms / 1000);
          if (where === 'local') return { value };
          // Right after the writer exited: every close() returned, so every file must be on the node.
          const now = await checkSmall(join(srcDir, name), opts.files, smallBody);
          let text = `${now.ok}/${opts.files} on the node with the right size and bytes right after the writer exited`;
          if (now.ok !== opts.files) {
            text += ` (missing ${now.missing}, wrong size ${now.wrongSize}, wrong bytes ${now.wrongContent}, extra ${now.extra})`;
            await sleep(5000);
            const later = await checkSmall(join(srcDir, name), opts.files, smallBody);
            text += `; 5 s later ${later.ok}/${opts.files}`;
            note(`small files, run ${run}: NOT all visible on the node at close: ${text}`);
          }
          checks.push(`small files, run ${run}: ${text}`);
          return { value, extra: { visibleAtClose: now } };
        });
        await cleanup(where, name);
      }

      // ---- 2. one big sequential write
      for (const [row, where, conv] of [[rows.big, 'local', ''], [rows.bigFsync, 'local', ' conv=fsync'], [rows.big, 'ghostfs', '']] as const) {
        const name = `big-${run}.bin`;
        await sample(row, where, run, async (root, timed) => {
          const r = await runCmd(`dd if=big.bin of="$1" bs=1M${conv}`, dataDir, { timeoutMs: 60 * 60_000, args: [join(root, name)] });
          timed();
          if (r.code !== 0) throw failed('dd', r);
          // dd's own count, so a short write cannot pass for a fast one.
          const bytes = Number(/^(\d+) bytes/m.exec(r.stderr)?.[1] ?? NaN);
          if (bytes !== opts.big) throw new Error(`dd wrote ${bytes} bytes of ${opts.big}`);
          const value = bytes / (r.ms / 1000) / MB;
          if (where === 'local') return { value };
          const nodeCopy = join(srcDir, name);
          const sizeAtExit = existsSync(nodeCopy) ? statSync(nodeCopy).size : -1;
          const h = await runCmd('sha256sum "$1"', dataDir, { capture: true, timeoutMs: 30 * 60_000, args: [nodeCopy] });
          const sum = h.code === 0 ? h.stdout.split(' ')[0]! : `unreadable (${failed('sha256sum', h).message})`;
          const ok = sizeAtExit === opts.big && sum === big.sha256;
          const text = `node's copy right after dd exited: ${sizeAtExit < 0 ? 'MISSING' : `${sizeAtExit} bytes`}, sha256 ${ok ? 'matches' : `DIFFERS (${sum} vs ${big.sha256})`}`;
          if (!ok) note(`big file, run ${run}: ${text}`);
          checks.push(`big file, run ${run}: ${text}`);
          return { value, extra: { sizeAtExit, sha256Ok: ok } };
        }, join(dataDir, 'big.bin'));
        await cleanup(where, name);
      }

      // ---- 3. untar a source tree
      for (const where of ['local', 'ghostfs'] as const) {
        const name = `tree-${run}`;
        await sample(rows.untar, where, run, async (root, timed) => {
          const r = await runCmd('mkdir -- "$1" && tar -xf tree.tar -C "$1"', dataDir, { timeoutMs: 60 * 60_000, args: [join(root, name)] });
          timed();
          if (r.code !== 0) throw failed('tar -x', r);
          const value = r.ms / 1000;
          if (where === 'local') return { value };
          // The node's copy, right after tar exited, against the archive's list.
          const listOf = async (): Promise<string> => {
            const h = await runCmd(HASH_LIST, join(srcDir, name), { capture: true, timeoutMs: 30 * 60_000 });
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
            note(`untar, run ${run}: ${text}`);
          }
          checks.push(`untar, run ${run}: ${text}`);
          return { value, extra: { identical: got === treeList } };
        }, join(dataDir, 'tree.tar'));
        await cleanup(where, name);
      }
    }

    const othersEnd = otherGhostfs();
    const loadEnd = loadLine();
    const unmountMs = await stopMount();
    await stopNode();

    // ---- report
    const cpu = cpus();
    const tools = toolVersions();
    const date = new Date().toISOString();
    const machine = { cpus: cpu.length, cpuModel: cpu[0]?.model.trim() ?? 'unknown', totalMemBytes: totalmem(), kernel: release() };
    const fs = spawnSync('df', ['--output=source,fstype', dir], { encoding: 'utf8' }).stdout?.trim().split('\n').pop()?.trim().split(/\s+/) ?? [];
    const ghostfsEnv = Object.entries(process.env)
      .filter(([k]) => k.startsWith('GHOSTFS_') && !['GHOSTFS_LOG_LEVEL', 'GHOSTFS_LOG_PRETTY', 'GHOSTFS_TOKEN', 'GHOSTFS_LOG_FILE'].includes(k))
      .map(([k, v]) => `${k}=${v}`);
    const out: string[] = [
      `ghostfs write benchmark — ${date}`,
      `machine: ${machine.cpus} × ${machine.cpuModel}, ${sizeLabel(machine.totalMemBytes)} RAM, kernel ${machine.kernel}`,
      `disk:    ${dir} on ${fs[0] ?? '?'} (${fs[1] ?? '?'}); local targets, the node's root and the mount's cache all on it`,
      `tools:   node ${tools.node}, ${tools.dd}, ${tools.tar}`,
      `tree:    ${tree.count} files in ${tree.dirs} dirs, ${sizeLabel(tree.bytes)} (tar ${sizeLabel(tree.tarBytes)}), from lib/tree.ts with ${opts.treeFiles} files, seed ${opts.seed}, without .git; ${treeReused ? 'reused' : `generated in ${tree.seconds.toFixed(1)} s`}`,
      `big:     ${sizeLabel(opts.big)} AES-CTR keystream (incompressible), read from the page cache; ${bigReused ? 'reused' : `generated in ${big.seconds.toFixed(1)} s`}`,
      `ghostfs: node and mount on loopback, driver fuse-native${ghostfsEnv.length ? `, ${ghostfsEnv.join(' ')}` : ''}; one mount for all runs; a ghostfs figure ends when the writer exits, i.e. when its last close() returned after the node committed`,
      `local:   plain writes to the page cache (no fsync) unless the row says otherwise`,
      `load:    ${loadStart} at the start, ${loadEnd} at the end (1/5/15-min load averages)${othersStart.length || othersEnd.length ? `; other ghostfs processes/tests were running (${Math.max(othersStart.length, othersEnd.length)}): figures are noisy` : ''}`,
      `runs:    ${opts.runs}${opts.runs > 1 ? ' (median, min–max in brackets)' : ''}`,
      '',
    ];
    const cell = (row: Row, w: Where): string => {
      const x = row[w];
      if (!x.samples.length) return x.failures.length ? 'FAILED' : '-';
      const med = fmt(row.unit, median(x.samples));
      const lo = Math.min(...x.samples),
        hi = Math.max(...x.samples);
      const range = x.samples.length > 1 ? ` (${fmt(row.unit, lo)}–${fmt(row.unit, hi)})` : '';
      return med + range + (x.failures.length ? ` *${x.failures.length} failed` : '');
    };
    // The fsync row has no ghostfs run of its own: it compares the same ghostfs dd with a durable local one.
    const ghostOf = (row: Row): Cell => (row.id === 'bigFsync' ? rows.big.ghostfs : row.ghostfs);
    const ratio = (row: Row): string => {
      const r = median(ghostOf(row).samples) / median(row.local.samples);
      return Number.isFinite(r) ? `${r < 0.1 ? r.toFixed(3) : r.toFixed(2)}×` : '-';
    };
    const target = (row: Row): string => {
      if (!row.target) return '';
      const v = median(row.ghostfs.samples);
      return `${row.target.text}: ${Number.isFinite(v) ? (row.target.ok(v) ? 'met' : 'MISSED') : 'n/a'}`;
    };
    const order = [rows.small, rows.big, rows.bigFsync, rows.untar];
    out.push(table([
      ['workload', 'unit', 'local', 'ghostfs', 'ghostfs/local', 'target (not asserted)'],
      ...order.map((r) => [r.label, r.unit, cell(r, 'local'), r.id === 'bigFsync' ? `(${cell(rows.big, 'ghostfs')})` : cell(r, 'ghostfs'), ratio(r), target(r)]),
    ]));
    out.push('  ghostfs/local: for files/s and MB/s below 1× is slower; for seconds above 1× is slower.');
    out.push('');
    out.push('Checks and notes');
    for (const c of checks) out.push(`  ${c}`);
    const lat = (w: Where): string => latency[w].map((l) => `p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms, max ${l.max.toFixed(1)} ms`).join('; ');
    out.push(`  small-file latency per file (open+write+close): local ${lat('local') || 'n/a'}`);
    out.push(`                                                  ghostfs ${lat('ghostfs') || 'n/a'}`);
    for (const g of ghostSamples) {
      out.push(`  CPU during ghostfs ${g.workload}, run ${g.run}: wall ${g.wallS.toFixed(2)} s, mount ${g.mountCpuS.toFixed(2)} s, node ${g.nodeCpuS.toFixed(2)} s (${machine.cpus} CPUs)`);
    }
    for (const [k, v] of Object.entries(cleanupMs)) out.push(`  rm -rf ${k} through the mount (untimed cleanup): ${v.map((ms) => (ms / 1000).toFixed(2) + ' s').join(', ')}`);
    out.push(`  mount ready (spawn to "mounted"): ${(m.readyMs / 1000).toFixed(2)} s; unmount (SIGTERM to exit): ${(unmountMs / 1000).toFixed(2)} s`);
    if (logIssues.size) {
      out.push('  warnings/errors logged by the node and the mount (count × message):');
      for (const [k, v] of [...logIssues.entries()].sort((a, b) => b[1].count - a[1].count).slice(0, 20)) out.push(`    ${v.count} × ${k}\n      e.g. ${v.example}`);
    } else out.push('  no warnings or errors logged by the node or the mount');
    for (const s of notes) out.push(`  note: ${s}`);
    out.push(`  total benchmark time: ${((performance.now() - started) / 60_000).toFixed(1)} min`);
    console.log('\n' + out.join('\n'));

    if (opts.json) {
      const report = {
        date,
        machine,
        load: { start: loadStart, end: loadEnd, otherGhostfsStart: othersStart, otherGhostfsEnd: othersEnd },
        disk: { dir, source: fs[0] ?? null, fstype: fs[1] ?? null },
        tools,
        params: { files: opts.files, bigBytes: opts.big, treeFiles: opts.treeFiles, runs: opts.runs, seed: opts.seed, env: ghostfsEnv },
        tree: { ...tree, reused: treeReused },
        results: Object.fromEntries(
          order.map((r) => [r.id, { label: r.label.trim(), unit: r.unit, local: r.local, ghostfs: ghostOf(r), medianLocal: median(r.local.samples), medianGhostfs: median(ghostOf(r).samples), target: r.target ? target(r) : null }]),
        ),
        smallFileLatencyMs: latency,
        ghostfsSamples: ghostSamples,
        cleanupMs,
        checks,
        logIssues: Object.fromEntries(logIssues),
        notes,
        mount: { readyMs: m.readyMs, unmountMs },
      };
      await writeFile(resolve(opts.json), JSON.stringify(report, null, 2) + '\n');
      console.log(`json: ${resolve(opts.json)}`);
    }
    if (opts.keep) console.log(`kept: ${dir}`);
  } finally {
    await teardown();
  }
}

const program = new Command('write')
  .description('benchmark the ghostfs mount, write side: small files, a big sequential write and tar -x, against local disk')
  .option('--files <n>', 'small files (4 KiB each) written one after another', parseCount(1), 2000)
  .addOption(new Option('--big <size>', 'size of the sequential write (e.g. 256M, 1G)').argParser(parseBytes).default(256 * MiB, '256M'))
  .option('--tree-files <n>', 'files in the generated source tree that is tar-extracted', parseCount(10), 28_000)
  .option('--runs <n>', 'timed runs of each workload (median and min–max reported)', parseCount(1), 1)
  .option('--dir <dir>', 'where to put the data, node root and state, cache and mount point (default: a fresh dir under the OS temp dir)')
  .option('--keep', 'keep the generated data afterwards (a kept --dir with the same parameters is reused)', false)
  .option('--json <file>', 'also write every sample and the checks as JSON')
  .option('--quick', 'a small smoke run: 200 files, 32M, a 2000-file tree (explicit flags win)', false)
  .option('--seed <n>', 'seed of the generated data', parseCount(0), 1);

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
