// Benchmark: ghostfs against its peers on the same data, in one run.
//
// One generated workload (a ~27k-file git repository and a large
// incompressible file) is measured on local disk and through every system that
// can show it elsewhere, all on this machine over loopback:
//   bindfs      the same directory through FUSE: what FUSE alone costs;
//   sshfs       over an sshd this benchmark starts on a free port, with its own
//               config, host key and client key (sshfs cache options at their defaults);
//   rclone      `rclone mount --vfs-cache-mode full` over an `rclone serve sftp`
//               this benchmark starts, the mount on a cache dir of its own;
//   ghostfs     `ghostfs serve` and `ghostfs mount`, once per kernel driver.
// Reads (cold: fresh mount, empty cache, page cache dropped; warm: the same
// again on that mount): sequential and random reads of the big file, find,
// ls -lR, a stat of every entry, git status and rg over the repository. Writes
// (fresh mount): small files, one large file and tar -x of the tree, each timed
// until the writer exits and until the server's directory holds all of it,
// checked byte for byte. For ghostfs also the node's restart (re-index) time.
// Each round puts every system through every workload once, the systems one
// after the other, and the rounds repeat (--runs), so slow drifts of a shared
// machine spread over all systems. Reported: medians, min–max, speed relative
// to local disk and to sshfs, as markdown (stdout), JSON and two SVG charts.
//
// Every workload is a child process; this process only reads the server's
// directory (plain local disk) and never does file I/O on a mount.
//
//   scripts/bench/peers [--quick] [--runs 3] [--files 27000] [--big 1G] [--systems local,sshfs,...] [--out BASE] [--json FILE] [--keep --dir DIR]
import { Command, InvalidArgumentError, Option } from 'commander';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { loadavg, release, userInfo } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { addStats, assertDriversBuilt, type Driver, DRIVERS, fetchDriverStats, type RequestStats, requestLines } from './lib/drivers.js';
import { assertCliBuilt, isMounted, lazyUnmount, type MountProc, type NodeProc, spawnMount, spawnNode, stopNodeProcess, terminateMount, waitMounted, waitServing } from './lib/ghostfs.js';
import { parseCount, parseSize } from './lib/options.js';
import { ddRead, fioRandRead } from './lib/reads.js';
import { fmt, machineInfo, MB, median, MiB, sizeLabel } from './lib/report.js';
import { Aborted, dropCaches, failed, issueAndNoteLines, logIssues, note, notes, once, pageCacheDropped, progress, recordIssue, runCmd, session, sleep, teardownOnSignals } from './lib/session.js';
import { barChart, type BarGroup } from './lib/svg.js';
import { ensureDebianPackages, fusermount, have } from './lib/tools.js';
import { generateSourceTree, gitEnv, keptFileMatches, type SourceTreeSummary, writeIncompressible } from './lib/tree.js';
import { openWorkDir, readMarkerFile, removeWorkDir, SetAside, writeJsonReport } from './lib/workdir.js';
import { type ArchiveInfo, archiveTree, checkSmall, diffLists, HASH_LIST, SMALL_SIZE, SMALL_WRITER, type SmallWriterResult } from './lib/writes.js';

// ---------------------------------------------------------------------------
// options

/** Local disk first: every other system is compared with it. */
const SYSTEMS = ['local', 'bindfs', 'sshfs', 'rclone', ...DRIVERS.map((d) => `ghostfs-${d}` as const)] as const;
type SystemId = (typeof SYSTEMS)[number];

const LABEL: Record<SystemId, string> = { local: 'local disk', bindfs: 'bindfs', sshfs: 'sshfs', rclone: 'rclone', 'ghostfs-native': 'ghostfs native', 'ghostfs-fuse-native': 'ghostfs fuse-native' };
const COLOR: Record<SystemId, string> = { local: '#555555', bindfs: '#a6a6a6', sshfs: '#1f77b4', rclone: '#ff7f0e', 'ghostfs-native': '#2ca02c', 'ghostfs-fuse-native': '#98df8a' };

interface Options {
  files: number;
  big: number;
  write: number;
  small: number;
  runs: number;
  systems: SystemId[];
  fioRuntime: number;
  seed: number;
  dir?: string;
  keep: boolean;
  out?: string;
  json?: string;
  quick: boolean;
}

/** --systems: a comma-separated subset, returned in SYSTEMS order so tables read the same whatever the flag's order. */
function parseSystems(v: string): SystemId[] {
  const names = v.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = names.filter((n) => !(SYSTEMS as readonly string[]).includes(n));
  if (!names.length || unknown.length) throw new InvalidArgumentError(`"${v}": the systems are ${SYSTEMS.join(', ')} (comma-separated).`);
  return SYSTEMS.filter((s) => names.includes(s));
}

const driverOf = (s: SystemId): Driver | null => (s.startsWith('ghostfs-') ? (s.slice('ghostfs-'.length) as Driver) : null);

// ---------------------------------------------------------------------------
// tools

function ensureTools(systems: readonly SystemId[]): void {
  const need: [string[], string][] = [[['fio'], 'fio'], [['rg'], 'ripgrep'], [['git'], 'git'], [['tar'], 'tar'], [['fusermount3', 'fusermount'], 'fuse3']];
  if (systems.includes('bindfs')) need.push([['bindfs'], 'bindfs']);
  if (systems.includes('sshfs')) need.push([['sshfs'], 'sshfs'], [['/usr/sbin/sshd'], 'openssh-server'], [['ssh-keygen'], 'openssh-client']);
  if (systems.includes('rclone')) need.push([['rclone'], 'rclone']);
  ensureDebianPackages(need);
}

/** The line of a tool's version output (stdout or stderr) that matches `re`, or its first line. */
function versionOf(cmd: string, args: string[], re?: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  const lines = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').map((l) => l.trim()).filter(Boolean);
  return (re ? lines.find((l) => re.test(l)) : lines[0]) ?? 'unknown';
}

function toolVersions(systems: readonly SystemId[]): Record<string, string> {
  const v: Record<string, string> = { node: process.version, fio: versionOf('fio', ['--version']), rg: versionOf('rg', ['--version']), git: versionOf('git', ['--version']), tar: versionOf('tar', ['--version']) };
  if (systems.includes('bindfs')) v.bindfs = versionOf('bindfs', ['--version']);
  if (systems.includes('sshfs')) Object.assign(v, { sshfs: versionOf('sshfs', ['--version'], /^SSHFS/), sshd: versionOf('/usr/sbin/sshd', ['-V'], /OpenSSH/) });
  if (systems.includes('rclone')) v.rclone = versionOf('rclone', ['version']);
  return v;
}

// ---------------------------------------------------------------------------
// child processes: the servers and FUSE mounts other than ghostfs

/** A free loopback port: the kernel picks one, we release it and hand it to the server (a race no other process here runs). */
function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

interface Proc {
  what: string;
  child: ChildProcess;
  tail: string[];
  exited: Promise<string>;
}

/** Spawns a server or mount process; its output is kept (tail) and lines that report an error go to the report's issues. */
function spawnProc(what: string, cmd: string, args: string[]): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const tail: string[] = [];
  const onLine = (l: string): void => {
    tail.push(l);
    if (tail.length > 60) tail.shift();
    // Grouped with numbers (ports, times, sizes) blanked: the same complaint counts once per kind.
    if (/\b(error|fatal|critical|failed)\b/i.test(l)) recordIssue(`${what}: ${l.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /, '').replace(/\d+/g, 'N').slice(0, 200)}`, l);
  };
  for (const s of [child.stdout!, child.stderr!]) createInterface({ input: s }).on('line', onLine);
  const exited = new Promise<string>((res) => {
    child.once('exit', (code, sig) => res(sig ?? `code ${code}`));
    child.once('error', (e) => res(`not started (${e.message})`));
  });
  return { what, child, tail, exited };
}

const alive = (p: Proc): boolean => p.child.exitCode === null && p.child.signalCode === null;

/** Resolves once `ready()` holds; throws with the process's output if it exits first or 60 s pass. */
async function waitUntil(p: Proc, what: string, ready: () => Promise<boolean> | boolean): Promise<void> {
  const t0 = performance.now();
  for (;;) {
    if (session.aborting) throw new Aborted();
    if (await ready()) return;
    if (!alive(p)) throw new Error(`${p.what} exited before ${what} (${await p.exited}):\n${p.tail.slice(-10).join('\n')}`);
    if (performance.now() - t0 > 60_000) throw new Error(`${p.what}: not ${what} after 60 s:\n${p.tail.slice(-10).join('\n')}`);
    await sleep(50);
  }
}

const accepts = (port: number): Promise<boolean> =>
  new Promise((res) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
  });

/** SIGTERM, and SIGKILL if it has not exited 20 s later. */
async function stopProc(p: Proc): Promise<void> {
  if (!alive(p)) return;
  p.child.kill('SIGTERM');
  if (!(await Promise.race([p.exited.then(() => true), sleep(20_000).then(() => false)]))) {
    note(`${p.what} did not exit within 20 s of SIGTERM; killed`);
    p.child.kill('SIGKILL');
    await p.exited;
  }
}

/** A FUSE mount process: unmounted with fusermount -u (it then exits by itself); if stuck, a lazy unmount and SIGTERM. */
async function stopFuse(p: Proc, mnt: string): Promise<void> {
  if (isMounted(mnt)) spawnSync(fusermount(), ['-u', mnt], { stdio: 'ignore', timeout: 30_000 });
  if (isMounted(mnt)) {
    note(`${p.what}: fusermount -u ${mnt} failed (busy?): lazily unmounted`);
    lazyUnmount(mnt);
  }
  if (!(await Promise.race([p.exited.then(() => true), sleep(20_000).then(() => false)]))) await stopProc(p);
}

// ---------------------------------------------------------------------------
// the systems

interface Dirs {
  work: string;
  /** What every system serves: repo/, big.bin, out/ (where the writes go). */
  data: string;
  /** Sources of the writes and the check lists, outside what is served. */
  gen: string;
  mnt: string;
  /** Outputs and caches done with, deleted once every figure is taken. */
  aside: SetAside;
}

/** One way to reach the data dir. A round: up, then for each workload a fresh mount, then down. */
interface System {
  id: SystemId;
  /** Starts the server side, if any (sshd, rclone serve, ghostfs serve). */
  up(): Promise<void>;
  /** A fresh mount on an empty cache; resolves to the directory the workloads run in. */
  mount(): Promise<string>;
  /** Before the unmount: anything the system reports about the mount (ghostfs driver counters). */
  unmount(): Promise<void>;
  down(): Promise<void>;
  /** How the system is set up, for the report. */
  describe(): string;
}

/** Stops whatever is running on Ctrl-C or an error: set by the systems as they start things. */
const running = { mount: null as (() => Promise<void>) | null, server: null as (() => Promise<void>) | null };

/** The state a FUSE mount of another tool keeps while mounted. */
function fuseSystem(id: SystemId, dirs: Dirs, command: () => [string, string[]], o: { beforeMount?: () => Promise<void>; up?: () => Promise<void>; down?: () => Promise<void>; describe: () => string }): System {
  let proc: Proc | null = null;
  const unmount = async (): Promise<void> => {
    const p = proc;
    proc = null;
    running.mount = null;
    if (p) await stopFuse(p, dirs.mnt);
  };
  return {
    id,
    up: o.up ?? (async () => undefined),
    async mount() {
      if (isMounted(dirs.mnt)) lazyUnmount(dirs.mnt);
      await o.beforeMount?.();
      const [cmd, args] = command();
      const p = spawnProc(id, cmd, args);
      proc = p;
      running.mount = unmount;
      await waitUntil(p, 'mounted', () => isMounted(dirs.mnt));
      return dirs.mnt;
    },
    unmount,
    down: o.down ?? (async () => undefined),
    describe: o.describe,
  };
}

function localSystem(dirs: Dirs): System {
  const none = async (): Promise<void> => undefined;
  return { id: 'local', up: none, mount: async () => dirs.data, unmount: none, down: none, describe: () => 'the data directory itself (ext4 or whatever the work dir is on)' };
}

function bindfsSystem(dirs: Dirs): System {
  return fuseSystem('bindfs', dirs, () => ['bindfs', ['-f', dirs.data, dirs.mnt]], { describe: () => 'bindfs -f DATA MNT (defaults): the same directory through FUSE, no network' });
}

/** The keys and config of the loopback sshd, made once per work dir. */
async function sshFiles(work: string): Promise<{ dir: string; config: (port: number) => string; clientKey: string }> {
  const dir = join(work, 'ssh');
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o700);
  for (const k of ['host_ed25519', 'client_ed25519']) {
    if (existsSync(join(dir, k))) continue;
    const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `ghostfs-bench-${k}`, '-f', join(dir, k)], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  }
  await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'client_ed25519.pub')));
  const config = (port: number): string =>
    [
      `ListenAddress 127.0.0.1:${port}`,
      `HostKey ${join(dir, 'host_ed25519')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      // The work dir sits under /tmp (world-writable): the key files are ours, the modes of their parents do not matter here.
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'UseDNS no',
      // Debian's own sftp subsystem, as a stock sshd serves it.
      'Subsystem sftp /usr/lib/openssh/sftp-server',
      '',
    ].join('\n');
  return { dir, config, clientKey: join(dir, 'client_ed25519') };
}

function sshfsSystem(dirs: Dirs): System {
  let sshd: Proc | null = null;
  let port = 0;
  let files: Awaited<ReturnType<typeof sshFiles>> | null = null;
  const user = userInfo().username;
  const down = async (): Promise<void> => {
    const p = sshd;
    sshd = null;
    running.server = null;
    if (p) await stopProc(p);
  };
  return fuseSystem(
    'sshfs',
    dirs,
    () => ['sshfs', ['-f', `${user}@127.0.0.1:${dirs.data}`, dirs.mnt, '-o', `port=${port},IdentityFile=${files!.clientKey},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR`]],
    {
      async up() {
        files ??= await sshFiles(dirs.work);
        port = await freePort();
        const conf = join(files.dir, 'sshd_config');
        await writeFile(conf, files.config(port));
        // sshd refuses to start without its privilege separation directory (the service unit normally makes it).
        await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
        sshd = spawnProc('sshd', '/usr/sbin/sshd', ['-D', '-e', '-f', conf]);
        running.server = down;
        await waitUntil(sshd, `listening on 127.0.0.1:${port}`, () => accepts(port));
      },
      down,
      describe: () => `sshfs -o IdentityFile=…,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null (cache options at their defaults) over /usr/sbin/sshd on 127.0.0.1 (own config, ed25519 host and client keys, Debian's sftp-server)`,
    },
  );
}

function rcloneSystem(dirs: Dirs): System {
  let serve: Proc | null = null;
  const dir = join(dirs.work, 'rclone');
  const conf = join(dir, 'rclone.conf');
  const cache = join(dir, 'mount-cache');
  const down = async (): Promise<void> => {
    const p = serve;
    serve = null;
    running.server = null;
    if (p) await stopProc(p);
  };
  return fuseSystem('rclone', dirs, () => ['rclone', ['mount', 'bench:', dirs.mnt, '--config', conf, '--vfs-cache-mode', 'full', '--cache-dir', cache]], {
    // Cold means an empty cache: the last mount's chunks are dropped.
    beforeMount: () => dirs.aside.put(cache, { recreate: true }),
    async up() {
      await mkdir(dir, { recursive: true });
      const port = await freePort();
      const pass = 'ghostfs-bench';
      const ob = spawnSync('rclone', ['obscure', pass], { encoding: 'utf8' });
      if (ob.status !== 0) throw new Error(`rclone obscure failed: ${ob.stderr}`);
      await writeFile(conf, `[bench]\ntype = sftp\nhost = 127.0.0.1\nport = ${port}\nuser = bench\npass = ${ob.stdout.trim()}\n`);
      // Its own cache dir too: serve keeps a generated host key there, not in ~/.cache.
      // Password only: an empty key list, or it would take the keys of ~/.ssh/authorized_keys.
      await writeFile(join(dir, 'authorized_keys'), '');
      const args = ['serve', 'sftp', dirs.data, '--addr', `127.0.0.1:${port}`, '--user', 'bench', '--pass', pass, '--authorized-keys', join(dir, 'authorized_keys'), '--config', conf, '--cache-dir', join(dir, 'serve-cache')];
      const p = spawnProc('rclone serve', 'rclone', args);
      serve = p;
      running.server = down;
      // Its own line rather than a probe: a connection that never logs in is an error in its log.
      await waitUntil(p, `listening on 127.0.0.1:${port}`, () => p.tail.some((l) => l.includes(`listening on 127.0.0.1:${port}`)));
    },
    down,
    describe: () => 'rclone mount --vfs-cache-mode full --cache-dir (own, emptied for each cold mount; other options at their defaults: write-back 5 s, attr-timeout 1 s) over rclone serve sftp on 127.0.0.1 (user and password)',
  });
}

/** The node's start, from outside (spawn to serving) and from its "workspace indexed" line. */
interface NodeStart {
  wallS: number;
  indexS: number;
  files: number;
  hashedBytes: number;
}

interface GhostfsState {
  /** The first start of its node on an empty state dir. */
  coldIndex: NodeStart | null;
  restarts: NodeStart[];
  requests: RequestStats | null;
  readyMs: number[];
}

function ghostfsSystem(id: SystemId, d: Driver, dirs: Dirs, st: GhostfsState): System {
  const stateDir = join(dirs.work, `state-${d}`);
  const cacheDir = join(dirs.work, `cache-${d}`);
  let node: NodeProc | null = null;
  let mount: MountProc | null = null;

  const startNode = async (): Promise<NodeStart> => {
    if (session.aborting) throw new Aborted();
    let indexed: { files: number; hashedBytes: number; durationMs: number } | null = null;
    const t0 = performance.now();
    const n = spawnNode(dirs.data, stateDir, (rec) => {
      if (rec.msg === 'workspace indexed') indexed = { files: Number(rec.files), hashedBytes: Number(rec.hashedBytes), durationMs: Number(rec.durationMs) };
    });
    node = n;
    running.server = stopNode;
    await waitServing(n, 10 * 60_000);
    const ix = indexed as { files: number; hashedBytes: number; durationMs: number } | null;
    if (!ix) note(`the ${d} node served without logging "workspace indexed"`);
    return { wallS: (performance.now() - t0) / 1000, indexS: ix ? ix.durationMs / 1000 : NaN, files: ix?.files ?? NaN, hashedBytes: ix?.hashedBytes ?? NaN };
  };
  async function stopNode(): Promise<void> {
    const n = node;
    node = null;
    running.server = null;
    if (n) await stopNodeProcess(n.child);
  }
  const stopMount = async (): Promise<void> => {
    const m = mount;
    mount = null;
    running.mount = null;
    if (m) await terminateMount(m, { noteEarlyExit: true });
  };

  return {
    id,
    async up() {
      const first = await startNode();
      if (!st.coldIndex && !existsSync(join(stateDir, '.peers-indexed'))) {
        st.coldIndex = first;
        await writeFile(join(stateDir, '.peers-indexed'), '');
      }
      // The start above caught up with what other systems wrote since this node last ran; a second start on the
      // unchanged tree is the restart an operator sees.
      await stopNode();
      const again = await startNode();
      st.restarts.push(again);
      progress(`  ${d} node restart: indexed ${again.files} files in ${fmt('s', again.indexS)} s (${fmt('s', again.wallS)} s to serving)\n`);
    },
    async mount() {
      if (!node) throw new Error('no node running');
      await dirs.aside.put(cacheDir, { recreate: true });
      const m = spawnMount(node.endpoint, dirs.mnt, cacheDir, ['--driver', d]);
      mount = m;
      running.mount = stopMount;
      const outcome = await waitMounted(m);
      if (session.aborting) throw new Aborted();
      if (outcome !== 'ok') {
        await stopMount();
        throw new Error(`the ${d} mount ${outcome}:\n${m.tail.slice(-10).join('\n')}`);
      }
      st.readyMs.push(performance.now() - m.t0);
      return dirs.mnt;
    },
    async unmount() {
      if (mount && d === 'native') {
        try {
          const s = await fetchDriverStats(dirs.mnt);
          if (s) st.requests = addStats(st.requests ?? undefined, s);
        } catch (err) {
          if (err instanceof Aborted) throw err;
          note(`ghostfs status --json of the ${d} mount failed: ${(err as Error).message}`);
        }
      }
      await stopMount();
    },
    down: stopNode,
    describe: () => `ghostfs serve on 127.0.0.1 (own state dir, kept across rounds) and ghostfs mount --driver ${d} (defaults; own cache dir, emptied for each cold mount)`,
  };
}

// ---------------------------------------------------------------------------
// what is measured

type Unit = 'MB/s' | 'IOPS' | 's';

interface Metric {
  id: string;
  label: string;
  unit: Unit;
  /** Which chart shows it (null: the tables only). */
  chart: 'throughput' | 'time' | null;
}

const higherIsBetter = (u: Unit): boolean => u !== 's';

function metricsOf(opts: Options, tree: SourceTreeSummary, archive: ArchiveInfo): Metric[] {
  const big = sizeLabel(opts.big, 'MiB');
  const w = sizeLabel(opts.write, 'MiB');
  const both = (id: string, label: string, unit: Unit): Metric[] => (['cold', 'warm'] as const).map((p) => ({ id: `${id}.${p}`, label: `${label}, ${p}`, unit, chart: unit === 's' ? 'time' : 'throughput' }));
  return [
    ...both('seq', `sequential read ${big}`, 'MB/s'),
    ...both('rand', `random 4K read (fio, ${opts.fioRuntime} s)`, 'IOPS'),
    { id: 'write.close', label: `write ${w}: dd exit`, unit: 'MB/s', chart: 'throughput' },
    { id: 'write.server', label: `write ${w}: complete on server`, unit: 'MB/s', chart: 'throughput' },
    ...both('find', `find (${tree.files} files)`, 's'),
    ...both('ls', 'ls -lR', 's'),
    ...both('stat', 'stat every entry (find -printf)', 's'),
    ...both('git', 'git status', 's'),
    ...both('rg', `rg ${tree.pattern}`, 's'),
    { id: 'small.close', label: `${opts.small} small files: last close`, unit: 's', chart: 'time' },
    { id: 'small.server', label: `${opts.small} small files: all on server`, unit: 's', chart: 'time' },
    { id: 'untar.close', label: `tar -x ${archive.count} files: tar exit`, unit: 's', chart: 'time' },
    { id: 'untar.server', label: `tar -x ${archive.count} files: all on server`, unit: 's', chart: 'time' },
    { id: 'restart', label: 'node restart (re-index), ghostfs only', unit: 's', chart: null },
  ];
}

interface Cell {
  samples: number[];
  failures: string[];
}

type Results = Record<string, Partial<Record<SystemId, Cell>>>;

/** The answer local disk (or the first system) gave each workload, and where another system answered differently. */
const reference = new Map<string, string>();
const mismatches = new Map<string, { count: number; detail: string }>();
/** Lines for the report: what the server held when each write was checked. */
const checks: string[] = [];

function record(results: Results, metric: string, sys: SystemId, v: number | Error): void {
  const cell = (results[metric]![sys] ??= { samples: [], failures: [] });
  if (v instanceof Error) cell.failures.push(v.message);
  else cell.samples.push(v);
}

const sortedLines = (s: string): string => s.split('\n').filter(Boolean).sort().join('\n');

function compareOutput(id: string, sys: SystemId, out: string): void {
  const want = reference.get(id);
  if (want === undefined) return void reference.set(id, out);
  if (want === out) return;
  const a = new Set(want.split('\n')),
    b = new Set(out.split('\n'));
  const only = (x: Set<string>, y: Set<string>): string[] => [...x].filter((l) => !y.has(l));
  const show = (xs: string[]): string => (xs.length ? xs.slice(0, 3).join(' | ') + (xs.length > 3 ? ` | … (${xs.length})` : '') : '-');
  const k = `${id} on ${sys}`;
  const e = mismatches.get(k);
  if (e) e.count++;
  else mismatches.set(k, { count: 1, detail: `only in the reference: ${show(only(a, b))}; only here: ${show(only(b, a))}` });
}

interface ReadWorkload {
  id: string;
  run(root: string, sys: SystemId): Promise<number>;
}

function readWorkloads(opts: Options, pattern: string): ReadWorkload[] {
  const meta = (id: string, cmd: string, o: { compare: boolean; okCodes?: number[]; env?: NodeJS.ProcessEnv }): ReadWorkload => ({
    id,
    async run(root, sys) {
      const r = await runCmd(cmd, join(root, 'repo'), { capture: o.compare, timeoutMs: 30 * 60_000, env: o.env });
      if (r.timedOut || r.code === null || !(o.okCodes ?? [0]).includes(r.code)) throw failed(cmd, r);
      if (r.stderr.trim()) recordIssue(`stderr of \`${cmd}\` on ${sys}: ${r.stderr.trim().split('\n')[0]!.slice(0, 160)}`, r.stderr.slice(0, 400));
      if (o.compare) compareOutput(id, sys, sortedLines(r.stdout));
      return r.ms / 1000;
    },
  });
  return [
    { id: 'seq', run: (root) => ddRead(root, opts.big) },
    { id: 'rand', run: (root) => fioRandRead(root, opts.big, opts.fioRuntime) },
    meta('find', 'find . -type f | wc -l', { compare: true }),
    meta('ls', 'ls -lR > /dev/null', { compare: false }),
    meta('stat', "find . -printf '%s %T@ %p\\n' > /dev/null", { compare: false }),
    // Only size and whole-second mtime are compared (what sshfs and rclone can give: no ctime, inode or nanoseconds), and
    // git must not refresh the index through a mount: each system sees the repository exactly as the others do.
    meta('git', 'git -c core.checkStat=minimal -c core.trustCtime=false --no-optional-locks status --porcelain', { compare: true, env: gitEnv() }),
    // rg exits 1 when nothing matched: still a complete search.
    meta('rg', `rg -c ${pattern}`, { compare: true, okCodes: [0, 1] }),
  ];
}

// ---------------------------------------------------------------------------
// writes, and waiting for the server to hold them

/**
 * Polls `complete` (on the server's directory) until it holds or `timeoutMs`
 * pass: the epoch ms when the first poll that held began (what it found was
 * there by then; the check's own time is not the system's), or null.
 */
async function waitServer(complete: () => Promise<boolean>, timeoutMs: number, everyMs: number): Promise<number | null> {
  const t0 = performance.now();
  for (;;) {
    if (session.aborting) throw new Aborted();
    const at = Date.now();
    if (await complete()) return at;
    if (performance.now() - t0 > timeoutMs) return null;
    await sleep(everyMs);
  }
}

/** Regular files under `dir` and their bytes, by walking it (lstat, no symlinks followed). */
async function treeSize(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0,
    bytes = 0;
  const walk = async (d: string): Promise<void> => {
    let ents;
    try {
      ents = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        files++;
        bytes += (await lstat(p).catch(() => ({ size: 0 }))).size;
      }
    }
  };
  await walk(dir);
  return { files, bytes };
}

interface WriteCtx {
  opts: Options;
  dirs: Dirs;
  archive: ArchiveInfo;
  writeSha: string;
  smallBody: Buffer;
  treeList: string;
}

const SERVER_TIMEOUT_MS = 15 * 60_000;

/** The three writes through `root`, each timed to its writer's exit and to the server holding all of it. */
async function writes(results: Results, sys: SystemId, root: string, run: number, c: WriteCtx): Promise<void> {
  const { opts, dirs } = c;
  const tag = `${sys}-${run}`;
  const guard = async (ids: [string, string], fn: () => Promise<[number, number | null]>): Promise<void> => {
    progress(`  ${sys.padEnd(20)} ${ids[0].replace('.close', '').padEnd(8)} `);
    try {
      const [atClose, atServer] = await fn();
      record(results, ids[0], sys, atClose);
      record(results, ids[1], sys, atServer ?? new Error(`not complete on the server within ${SERVER_TIMEOUT_MS / 60_000} min`));
      progress(`${fmt(ids[0] === 'write.close' ? 'MB/s' : 's', atClose)} at exit, ${atServer === null ? 'NOT complete' : fmt(ids[0] === 'write.close' ? 'MB/s' : 's', atServer)} on the server\n`);
    } catch (err) {
      if (err instanceof Aborted) throw err;
      for (const id of ids) record(results, id, sys, err as Error);
      progress('failed\n');
      note(`${ids[0]} on ${sys}, run ${run}: ${(err as Error).message}`);
    }
  };

  // 1. small files, one process; server side checked byte for byte on every poll.
  await guard(['small.close', 'small.server'], async () => {
    const name = `small-${tag}`;
    const r = await runCmd(`exec "$1" -e "$2" "$3" "$4" "$5"`, dirs.gen, { capture: true, timeoutMs: 30 * 60_000, args: [process.execPath, SMALL_WRITER, join(root, 'out', name), String(opts.small), join(dirs.gen, 'small.bin')] });
    if (r.code !== 0) throw failed('small-file writer', r);
    const t = JSON.parse(r.stdout.trim().split('\n').pop()!) as SmallWriterResult;
    const at = await waitServer(async () => (await checkSmall(join(dirs.data, 'out', name), opts.small, c.smallBody)).ok === opts.small, SERVER_TIMEOUT_MS, 100);
    if (at === null) {
      const s = await checkSmall(join(dirs.data, 'out', name), opts.small, c.smallBody);
      note(`${sys} small files, run ${run}: on the server ${s.ok}/${opts.small} right (missing ${s.missing}, wrong size ${s.wrongSize}, wrong bytes ${s.wrongContent})`);
    }
    checks.push(`${sys} small files, run ${run}: ${at === null ? 'NOT all' : 'all'} ${opts.small} on the server with the right bytes`);
    return [t.ms / 1000, at === null ? null : (at - t.startEpochMs) / 1000];
  });

  // 2. one large file from the page cache; complete = full size on the server, then its sha256 must match.
  await guard(['write.close', 'write.server'], async () => {
    const name = `big-${tag}.bin`;
    const server = join(dirs.data, 'out', name);
    await runCmd('cat write.bin > /dev/null && sync', dirs.gen, { timeoutMs: 10 * 60_000 });
    const t0 = Date.now();
    const r = await runCmd('dd if=write.bin of="$1" bs=1M', dirs.gen, { timeoutMs: 60 * 60_000, args: [join(root, 'out', name)] });
    if (r.code !== 0) throw failed('dd', r);
    const bytes = Number(/^(\d+) bytes/m.exec(r.stderr)?.[1] ?? NaN);
    if (bytes !== opts.write) throw new Error(`dd wrote ${bytes} bytes of ${opts.write}`);
    let sum = '';
    const at = await waitServer(
      async () => {
        if (!existsSync(server) || statSync(server).size !== opts.write) return false;
        const h = await runCmd('sha256sum "$1"', dirs.gen, { capture: true, timeoutMs: 10 * 60_000, args: [server] });
        sum = h.stdout.split(' ')[0] ?? '';
        return sum === c.writeSha;
      },
      SERVER_TIMEOUT_MS,
      100,
    );
    checks.push(`${sys} ${sizeLabel(opts.write, 'MiB')} write, run ${run}: ${at === null ? `NOT complete on the server (size ${existsSync(server) ? statSync(server).size : 'missing'}, sha256 ${sum || '-'})` : 'on the server, sha256 matches'}`);
    const mbps = (ms: number): number => opts.write / (ms / 1000) / MB;
    return [mbps(r.ms), at === null ? null : mbps(at - t0)];
  });

  // 3. tar -x; complete = every file with every byte counted on the server, then the hash list must match the archive's.
  await guard(['untar.close', 'untar.server'], async () => {
    const name = `tree-${tag}`;
    const server = join(dirs.data, 'out', name);
    await runCmd('cat tree.tar > /dev/null && sync', dirs.gen, { timeoutMs: 10 * 60_000 });
    const t0 = Date.now();
    const r = await runCmd('mkdir -- "$1" && tar -xf tree.tar -C "$1"', dirs.gen, { timeoutMs: 60 * 60_000, args: [join(root, 'out', name)] });
    if (r.code !== 0) throw failed('tar -x', r);
    const at = await waitServer(
      async () => {
        const s = await treeSize(server);
        return s.files === c.archive.count && s.bytes === c.archive.bytes;
      },
      SERVER_TIMEOUT_MS,
      // A walk of ~28k files costs a good part of a second itself: polling faster would steal CPU from the upload.
      1000,
    );
    const h = await runCmd(HASH_LIST, server, { capture: true, timeoutMs: 30 * 60_000 });
    const same = h.code === 0 && h.stdout === c.treeList;
    if (!same) note(`${sys} tar -x, run ${run}: the server's copy differs from the archive: ${h.code === 0 ? diffLists(c.treeList, h.stdout) : failed('hashing', h).message}`);
    checks.push(`${sys} tar -x, run ${run}: ${at === null ? 'NOT complete on the server' : same ? `all ${c.archive.count} files on the server, same sha256 list as the archive` : 'complete on the server but DIFFERENT from the archive'}`);
    return [r.ms / 1000, at === null || !same ? null : (at - t0) / 1000];
  });
}

// ---------------------------------------------------------------------------
// a round: every workload through one system

async function round(results: Results, s: System, run: number, ws: ReadWorkload[], c: WriteCtx, ghost: GhostfsState | null): Promise<void> {
  progress(`round ${run}/${c.opts.runs}: ${LABEL[s.id]}\n`);
  try {
    await s.up();
    if (ghost?.restarts.length) record(results, 'restart', s.id, ghost.restarts.at(-1)!.indexS);
  } catch (err) {
    if (err instanceof Aborted) throw err;
    note(`${s.id}, run ${run}: could not start its server: ${(err as Error).message}`);
    for (const id of Object.keys(results)) if (id !== 'restart' || ghost) record(results, id, s.id, err as Error);
    await s.down();
    return;
  }
  // Each read workload on a fresh mount: cold with an empty cache and the page cache dropped, then warm on the same mount.
  for (const w of ws) {
    try {
      const root = await s.mount();
      for (const phase of ['cold', 'warm'] as const) {
        if (phase === 'cold') await dropCaches();
        progress(`  ${s.id.padEnd(20)} ${`${w.id} ${phase}`.padEnd(12)} `);
        try {
          const v = await w.run(root, s.id);
          record(results, `${w.id}.${phase}`, s.id, v);
          progress(`${fmt(w.id === 'seq' ? 'MB/s' : w.id === 'rand' ? 'IOPS' : 's', v)}\n`);
        } catch (err) {
          if (err instanceof Aborted) throw err;
          record(results, `${w.id}.${phase}`, s.id, err as Error);
          progress('failed\n');
          note(`${w.id} ${phase} on ${s.id}, run ${run}: ${(err as Error).message}`);
        }
      }
    } catch (err) {
      if (err instanceof Aborted) throw err;
      note(`${w.id} on ${s.id}, run ${run}: no mount: ${(err as Error).message}`);
      for (const p of ['cold', 'warm']) record(results, `${w.id}.${p}`, s.id, err as Error);
    }
    await s.unmount();
  }
  try {
    const root = await s.mount();
    await writes(results, s.id, root, run, c);
  } catch (err) {
    if (err instanceof Aborted) throw err;
    note(`writes on ${s.id}, run ${run}: no mount: ${(err as Error).message}`);
  }
  await s.unmount();
  await s.down();
  // What this round wrote goes before the next system reads the tree (straight on the server's disk).
  await c.dirs.aside.put(join(c.dirs.data, 'out'), { recreate: true });
}

// ---------------------------------------------------------------------------
// data

const MARKER = 'bench-peers.json';
const MARKER_FORMAT = 1;

interface Marker {
  format: number;
  repo?: { files: number; seed: number; summary: SourceTreeSummary; seconds: number };
  archive?: { files: number; seed: number; info: ArchiveInfo };
  big?: { size: number; seed: number; seconds: number };
  write?: { size: number; seed: number; sha256: string };
}

async function readMarker(dir: string): Promise<Marker | null> {
  const m = await readMarkerFile<Marker>(dir, MARKER);
  return m?.format === MARKER_FORMAT ? m : null;
}

/** Generates what is missing or made with other parameters; a kept work dir with the same ones is reused. */
async function ensureData(dirs: Dirs, opts: Options): Promise<{ m: Required<Marker>; reused: boolean }> {
  const m: Marker = (await readMarker(dirs.work)) ?? { format: MARKER_FORMAT };
  const save = (): Promise<void> => writeFile(join(dirs.work, MARKER), JSON.stringify(m, null, 2) + '\n');
  const repoDir = join(dirs.data, 'repo');
  const tar = join(dirs.gen, 'tree.tar');
  const list = join(dirs.gen, 'tree.sha256');
  const same = (k: { files?: number; size?: number; seed: number } | undefined, n: number): boolean => !!k && (k.files ?? k.size) === n && k.seed === opts.seed;
  let reused = true;
  const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
    reused = false;
    await save();
    progress(`generating ${what}... `);
    const t0 = performance.now();
    await fn();
    await save();
    progress(`${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  };
  await mkdir(dirs.gen, { recursive: true });
  if (!same(m.repo, opts.files) || !existsSync(join(repoDir, '.git'))) {
    delete m.repo;
    delete m.archive;
    await step(`the repository (${opts.files} files, seed ${opts.seed})`, async () => {
      await dirs.aside.put(repoDir);
      const t0 = performance.now();
      const summary = await generateSourceTree(repoDir, { files: opts.files, seed: opts.seed });
      m.repo = { files: opts.files, seed: opts.seed, summary, seconds: (performance.now() - t0) / 1000 };
    });
  }
  if (!same(m.archive, opts.files) || !existsSync(tar) || !existsSync(list)) {
    delete m.archive;
    await step('its tar archive and hash list', async () => {
      m.archive = { files: opts.files, seed: opts.seed, info: await archiveTree(repoDir, tar, list) };
    });
  }
  if (!keptFileMatches(m.big, join(dirs.data, 'big.bin'), opts.big, opts.seed)) {
    delete m.big;
    await step(`big.bin (${sizeLabel(opts.big)})`, async () => {
      const t0 = performance.now();
      await writeIncompressible(join(dirs.data, 'big.bin'), opts.big, opts.seed);
      m.big = { size: opts.big, seed: opts.seed, seconds: (performance.now() - t0) / 1000 };
    });
  }
  // The write source is another keystream (seed + 1): nothing a system cached of big.bin can help it.
  if (!keptFileMatches(m.write, join(dirs.gen, 'write.bin'), opts.write, opts.seed)) {
    delete m.write;
    await step(`write.bin (${sizeLabel(opts.write)})`, async () => {
      await writeIncompressible(join(dirs.gen, 'write.bin'), opts.write, opts.seed + 1);
      const h = await runCmd('sha256sum write.bin', dirs.gen, { capture: true, timeoutMs: 10 * 60_000 });
      if (h.code !== 0) throw failed('sha256sum write.bin', h);
      m.write = { size: opts.write, seed: opts.seed, sha256: h.stdout.split(' ')[0]! };
    });
  }
  await writeIncompressible(join(dirs.gen, 'small.bin'), SMALL_SIZE, opts.seed + 7);
  return { m: m as Required<Marker>, reused };
}

// ---------------------------------------------------------------------------
// report

interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
  failed: number;
}

function statOf(c: Cell | undefined): Stat | null {
  if (!c || (!c.samples.length && !c.failures.length)) return null;
  return { median: median(c.samples), min: Math.min(...c.samples), max: Math.max(...c.samples), n: c.samples.length, failed: c.failures.length };
}

/** How many times faster than `ref` (above 1: faster), whichever way the unit runs. */
function speedup(m: Metric, v: number, ref: number): number {
  return higherIsBetter(m.unit) ? v / ref : ref / v;
}

const times = (r: number): string => (Number.isFinite(r) && r > 0 ? `${r < 0.1 ? r.toFixed(3) : r < 10 ? r.toFixed(2) : r.toFixed(0)}×` : '-');

function cellText(m: Metric, s: Stat | null): string {
  if (!s) return '-';
  if (!s.n) return 'failed';
  const range = s.n > 1 && s.min !== s.max ? ` (${fmt(m.unit, s.min)}–${fmt(m.unit, s.max)})` : '';
  return `${fmt(m.unit, s.median)}${range}${s.failed ? ` ${s.failed}✗` : ''}`;
}

const mdTable = (rows: string[][]): string => [rows[0]!, rows[0]!.map((_, i) => (i === 0 ? '---' : '---:')), ...rows.slice(1)].map((r) => `| ${r.join(' | ')} |`).join('\n');

function chart(kind: 'throughput' | 'time', ms: Metric[], systems: SystemId[], stats: (m: Metric, s: SystemId) => Stat | null, title: string): string {
  const groups: BarGroup[] = ms
    .filter((m) => m.chart === kind)
    .map((m) => ({
      label: `${m.label} (${m.unit})`,
      values: systems.map((s) => {
        const st = stats(m, s);
        return st && st.n ? st.median : null;
      }),
      texts: systems.map((s) => {
        const st = stats(m, s);
        return st ? (st.n ? `${fmt(m.unit, st.median)} ${m.unit}` : 'failed') : 'n/a';
      }),
    }));
  const subtitle = kind === 'throughput' ? 'median of runs, log scale; longer bars are faster' : 'seconds, median of runs, log scale; shorter bars are faster';
  return barChart({ title, subtitle, series: systems.map((s) => ({ name: LABEL[s], color: COLOR[s] })), groups });
}

// ---------------------------------------------------------------------------
// main

async function main(opts: Options): Promise<void> {
  const started = performance.now();
  const drivers = opts.systems.map(driverOf).filter((d): d is Driver => d !== null);
  if (drivers.length) {
    assertCliBuilt();
    assertDriversBuilt(drivers);
  }
  ensureTools(opts.systems);
  for (const [s, cmd] of [['sshfs', '/usr/sbin/sshd'], ['rclone', 'rclone']] as const) if (opts.systems.includes(s) && !have(cmd)) throw new Error(`${cmd} is missing`);

  const { dir, madeDir } = await openWorkDir(opts.dir, 'ghostfs-bench-peers-', MARKER, async (d) => !!(await readMarker(d)));
  const dirs: Dirs = { work: dir, data: join(dir, 'data'), gen: join(dir, 'gen'), mnt: join(dir, 'mnt'), aside: new SetAside(join(dir, 'set-aside')) };
  const scratch = [join(dir, 'rclone'), ...DRIVERS.flatMap((d) => [join(dir, `state-${d}`), join(dir, `cache-${d}`)])];

  const teardown = once(async () => {
    await running.mount?.();
    await running.server?.();
    if (isMounted(dirs.mnt)) lazyUnmount(dirs.mnt);
    if (isMounted(dirs.mnt)) return progress(`\n${dirs.mnt} is still mounted: not removing ${dir}\n`);
    // Written outputs, states and caches are never worth keeping; the generated data is (--keep reuses it).
    for (const p of [join(dirs.data, 'out'), ...scratch]) await rm(p, { recursive: true, force: true });
    await dirs.aside.empty();
    if (!opts.keep) await removeWorkDir(dir, madeDir, [dirs.data, dirs.gen, dirs.mnt, join(dir, 'ssh'), join(dir, MARKER)]);
  });
  // Ctrl-C (and kill): stop the workload, unmount, stop the servers, remove the work dir, then exit.
  teardownOnSignals(teardown);

  try {
    if (isMounted(dirs.mnt)) lazyUnmount(dirs.mnt); // a kept --dir whose last run was killed hard
    for (const p of [join(dirs.data, 'out'), ...scratch]) await dirs.aside.put(p);
    for (const p of [dirs.data, join(dirs.data, 'out'), dirs.mnt]) await mkdir(p, { recursive: true });
    const { m, reused } = await ensureData(dirs, opts);
    const tree = m.repo.summary;
    const ctx: WriteCtx = { opts, dirs, archive: m.archive.info, writeSha: m.write.sha256, smallBody: await readFile(join(dirs.gen, 'small.bin')), treeList: await readFile(join(dirs.gen, 'tree.sha256'), 'utf8') };
    const metrics = metricsOf(opts, tree, m.archive.info);
    const results: Results = Object.fromEntries(metrics.map((x) => [x.id, {}]));
    const ghost = Object.fromEntries(drivers.map((d) => [d, { coldIndex: null, restarts: [], requests: null, readyMs: [] } as GhostfsState])) as Partial<Record<Driver, GhostfsState>>;
    const systems: System[] = opts.systems.map((id) => {
      const d = driverOf(id);
      if (d) return ghostfsSystem(id, d, dirs, ghost[d]!);
      return id === 'local' ? localSystem(dirs) : id === 'bindfs' ? bindfsSystem(dirs) : id === 'sshfs' ? sshfsSystem(dirs) : rcloneSystem(dirs);
    });
    const ws = readWorkloads(opts, tree.pattern);
    const loadStart = loadavg();
    for (let run = 1; run <= opts.runs; run++) for (const s of systems) await round(results, s, run, ws, ctx, ghost[driverOf(s.id) as Driver] ?? null);
    const loadEnd = loadavg();

    // ---- report
    const date = new Date().toISOString();
    const machine = { ...machineInfo(), kernel: release() };
    const tools = toolVersions(opts.systems);
    const df = spawnSync('df', ['--output=source,fstype', dir], { encoding: 'utf8' }).stdout?.trim().split('\n').pop()?.trim().split(/\s+/) ?? [];
    const stats = (x: Metric, s: SystemId): Stat | null => statOf(results[x.id]![s]);
    const has = (s: SystemId): boolean => opts.systems.includes(s);
    const rel = (x: Metric, s: SystemId, ref: SystemId): number => {
      const a = stats(x, s),
        b = stats(x, ref);
      return a?.n && b?.n ? speedup(x, a.median, b.median) : NaN;
    };
    const base = opts.out ? resolve(opts.out) : null;
    const chartFiles = base ? { throughput: `${base}-throughput.svg`, time: `${base}-time.svg` } : null;
    const argv = process.argv.slice(2).join(' ');
    const load = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');

    const md: string[] = [
      `# ghostfs against its peers, ${date.slice(0, 10)}`,
      '',
      `\`scripts/bench/peers${argv ? ` ${argv}` : ''}\` (\`npm run bench\`), finished ${date}, ${((performance.now() - started) / 60_000).toFixed(1)} min.`,
      '',
      `- **machine:** ${machine.cpus} × ${machine.cpuModel}, ${sizeLabel(machine.totalMemBytes)} RAM, kernel ${machine.kernel}; work dir on ${df[0] ?? '?'} (${df[1] ?? '?'}); load average ${load(loadStart)} at the start, ${load(loadEnd)} at the end${loadEnd[0]! > machine.cpus || loadStart[0]! > machine.cpus ? ' (a shared machine: other work was running, figures are noisy)' : ''}`,
      `- **tools:** ${Object.entries(tools).map(([k, v]) => `${k}: ${v}`).join('; ')}`,
      `- **data:** a git repository of ${tree.files} files in ${tree.dirs} directories (depth ≤ ${tree.maxDepth}), ${sizeLabel(tree.bytes)}, ${tree.commits} commits, \`git status\` showing ${tree.modified} modified, ${tree.deleted} deleted, ${tree.untracked} untracked; big.bin, ${sizeLabel(opts.big)} incompressible; writes: ${opts.small} × 4 KiB files, ${sizeLabel(opts.write)} incompressible, tar of the working tree (${m.archive.info.count} files, ${sizeLabel(m.archive.info.bytes)}); seed ${opts.seed}, ${reused ? 'kept from an earlier run' : 'generated by this run'} (scripts/bench/lib/tree.ts)`,
      `- **runs:** ${opts.runs}; in each, every system in turn through every workload. Cold = a fresh mount with an empty cache and the page cache dropped; warm = the same workload again at once on that mount. Writes run on a fresh mount; "on server" = until the served directory holds every byte (polled; small files and the big file checked by content, the tree by count and bytes, then its sha256 list); the write outputs are set aside (renamed) between rounds and deleted after the last figure, as are emptied caches: a delete makes the next files created on this disk dearer (scripts/bench/lib/workdir.ts).`,
      `- **page cache:** ${pageCacheDropped() ? 'dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every cold run' : 'could NOT be dropped: cold figures include cached bytes'}`,
      '',
      'Systems, all on this machine over loopback:',
      '',
      ...systems.map((s) => `- **${LABEL[s.id]}:** ${s.describe()}`),
      '',
      '## Medians',
      '',
      'Median of the runs, min–max in brackets; ✗ counts failed runs. MB/s and IOPS: higher is faster; s: lower is faster.',
      '',
      mdTable([['workload', 'unit', ...opts.systems.map((s) => LABEL[s])], ...metrics.map((x) => [x.label, x.unit, ...opts.systems.map((s) => cellText(x, stats(x, s)))])]),
      '',
    ];
    const relTable = (ref: SystemId, what: string): void => {
      if (!has(ref)) return;
      md.push(`## Speed relative to ${what}`, '', `Medians as a speed factor against ${what} in the same run: above 1× faster, below 1× slower (for times, ${what}'s time ÷ the system's).`, '');
      const others = opts.systems.filter((s) => s !== ref);
      md.push(mdTable([['workload', ...others.map((s) => LABEL[s])], ...metrics.filter((x) => x.id !== 'restart').map((x) => [x.label, ...others.map((s) => times(rel(x, s, ref)))])]), '');
    };
    relTable('local', 'local disk');
    relTable('sshfs', 'sshfs');
    if (chartFiles) {
      md.push('## Charts', '', `![throughput](${relative(dirname(base!), chartFiles.throughput)})`, '', `![times](${relative(dirname(base!), chartFiles.time)})`, '');
    }
    md.push('## ghostfs', '');
    for (const d of drivers) {
      const g = ghost[d]!;
      const st = (xs: number[]): string => (xs.length ? `median ${fmt('s', median(xs))} s (${fmt('s', Math.min(...xs))}–${fmt('s', Math.max(...xs))}), n=${xs.length}` : 'n/a');
      if (g.coldIndex) md.push(`- ${d}: first node start on an empty state: indexed ${g.coldIndex.files} files (${sizeLabel(g.coldIndex.hashedBytes)} hashed) in ${fmt('s', g.coldIndex.indexS)} s, serving after ${fmt('s', g.coldIndex.wallS)} s`);
      md.push(`- ${d}: node restart on the unchanged tree (the "workspace indexed" line): ${st(g.restarts.map((r) => r.indexS))}; spawn to serving ${st(g.restarts.map((r) => r.wallS))}; ${g.restarts.length ? `${sizeLabel(Math.max(...g.restarts.map((r) => r.hashedBytes)))} re-hashed at most` : ''}`);
      md.push(`- ${d}: mount ready (spawn to "mounted"): ${st(g.readyMs.map((x) => x / 1000))}`);
      if (g.requests) md.push(`- ${d}: kernel requests (driverStats, summed over its mounts):`, '', '```', ...requestLines(g.requests, ''), '```');
    }
    md.push('', '## Checks and notes', '', '```');
    for (const id of ['find', 'git', 'rg']) {
      const bad = [...mismatches.entries()].filter(([k]) => k.startsWith(`${id} on `));
      md.push(`${id}: output ${bad.length ? 'DIFFERS on some systems' : 'the same on every system in every run'}${id === 'find' && reference.has('find') ? ` (${reference.get('find')} files)` : ''}`);
      for (const [k, v] of bad) md.push(`  ${k}: ${v.count} run(s): ${v.detail}`);
    }
    md.push(...checks, ...issueAndNoteLines({ and: 'the servers and the mounts', or: 'the servers or the mounts' }).map((l) => l.replace(/^ {2}/, '')), '```', '');
    const text = md.join('\n');
    process.stdout.write(text);

    const summary = Object.fromEntries(
      metrics.map((x) => [
        x.id,
        {
          label: x.label,
          unit: x.unit,
          systems: Object.fromEntries(opts.systems.map((s) => [s, { ...results[x.id]![s], ...(stats(x, s) ?? {}), vsLocal: has('local') ? rel(x, s, 'local') : null, vsSshfs: has('sshfs') ? rel(x, s, 'sshfs') : null }])),
        },
      ]),
    );
    const report = {
      date,
      machine: { ...machine, load: { start: loadStart, end: loadEnd }, disk: { source: df[0] ?? null, fstype: df[1] ?? null } },
      tools,
      params: { systems: opts.systems, files: opts.files, bigBytes: opts.big, writeBytes: opts.write, smallFiles: opts.small, runs: opts.runs, fioRuntimeS: opts.fioRuntime, seed: opts.seed, pageCacheDropped: pageCacheDropped() },
      data: { tree, archive: m.archive.info, reused },
      results: summary,
      ghostfs: ghost,
      checks: { outputMismatches: Object.fromEntries(mismatches), writes: checks, logIssues: Object.fromEntries(logIssues), notes },
      minutes: (performance.now() - started) / 60_000,
    };
    // Non-finite figures (no samples) become null rather than vanish from the JSON.
    const json = JSON.parse(JSON.stringify(report, (_, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v))) as unknown;
    if (base && chartFiles) {
      await writeFile(`${base}.md`, text);
      await writeJsonReport(`${base}.json`, json);
      await writeFile(chartFiles.throughput, chart('throughput', metrics, opts.systems, stats, `Throughput: ghostfs and peers (${date.slice(0, 10)})`));
      await writeFile(chartFiles.time, chart('time', metrics, opts.systems, stats, `Times: ghostfs and peers (${date.slice(0, 10)})`));
      progress(`\nwritten: ${base}.md, ${base}.json, ${chartFiles.throughput}, ${chartFiles.time}\n`);
    }
    if (opts.json) progress(`json: ${await writeJsonReport(opts.json, json)}\n`);
    if (opts.keep) progress(`kept: ${dir}\n`);
  } finally {
    await teardown();
  }
}

const program = new Command('peers')
  .description('benchmark ghostfs against local disk, bindfs, sshfs and rclone on the same generated data: reads cold and warm, metadata, search, writes until they reach the server')
  .option('--files <n>', 'files in the generated git repository', parseCount(10), 27_000)
  .addOption(new Option('--big <size>', 'size of the incompressible file that is read (e.g. 1G, 256M)').argParser(parseSize('256M or 1G', MiB)).default(1024 ** 3, '1G'))
  .addOption(new Option('--write <size>', 'size of the large sequential write').argParser(parseSize('64M or 256M', MiB)).default(256 * MiB, '256M'))
  .option('--small <n>', 'small files (4 KiB each) created one after another', parseCount(1), 2000)
  .option('--runs <n>', 'rounds: each puts every system through every workload once (median and min–max reported)', parseCount(1), 3)
  .addOption(new Option('--systems <names>', `systems to measure: ${SYSTEMS.join(', ')}`).argParser(parseSystems).default([...SYSTEMS], 'all'))
  .option('--fio-runtime <s>', 'seconds of each fio run', parseCount(1), 5)
  .option('--seed <n>', 'seed of the generated data', parseCount(0), 1)
  .option('--dir <dir>', 'the work dir: data, keys, states, caches and the mount point (default: a fresh dir under the OS temp dir)')
  .option('--keep', 'keep the generated data afterwards (a kept --dir with the same parameters is reused)', false)
  .option('--out <base>', 'write BASE.md, BASE.json, BASE-throughput.svg and BASE-time.svg')
  .option('--json <file>', 'also write every sample and the summary as JSON')
  .option('--quick', 'a small smoke run: 2000 files, a 256M file, 64M written, 500 small files, 2 s fio runs, 1 run (explicit flags win)', false);

program.parse();
const opts = program.opts<Options>();
if (opts.quick) {
  const dflt = (k: string): boolean => program.getOptionValueSource(k) === 'default';
  if (dflt('files')) opts.files = 2000;
  if (dflt('big')) opts.big = 256 * MiB;
  if (dflt('write')) opts.write = 64 * MiB;
  if (dflt('small')) opts.small = 500;
  if (dflt('fioRuntime')) opts.fioRuntime = 2;
  if (dflt('runs')) opts.runs = 1;
}

main(opts).catch((err: unknown) => {
  if (err instanceof Aborted) return;
  process.stderr.write(`\npeers: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
