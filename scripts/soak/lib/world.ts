// The world a soak runs in: a fresh workspace with shared files to read,
// real node and mount processes (the CLI, on loopback) that a scenario can
// kill and start again, and clean-up.
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { MountStatus } from '../../../src/admin/protocol.js';
import { childEnv, CLI, type MountProc, type NodeProc, spawnMount, spawnNode, stopNodeProcess, terminateMount, waitMounted, waitServing } from '../../bench/lib/ghostfs.js';

const execFileP = promisify(execFile);

export interface WorldOptions {
  driver: string;
  /** Bytes of the large shared file workers read ranges of. */
  bigBytes?: number;
  /** Extra `ghostfs mount` flags. */
  mountArgs?: string[];
  /** Directory for the cache (e.g. on a small filesystem); default beside the rest. */
  cacheDir?: string;
}

export class World {
  node: NodeProc | undefined;
  /** Further nodes serving the same root (replicas). */
  readonly replicas: NodeProc[] = [];
  mount: MountProc | undefined;
  /** What went wrong around the workload itself (the report shows it). */
  readonly notes: string[] = [];
  /** Worlds whose processes may still run: a scenario that failed part way leaves none behind (stopAll). */
  private static readonly live = new Set<World>();

  private constructor(
    readonly base: string,
    readonly source: string,
    readonly mnt: string,
    readonly cacheDir: string,
    private readonly o: WorldOptions,
  ) {}

  static async create(o: WorldOptions): Promise<World> {
    const base = await mkdtemp(join(tmpdir(), 'ghostfs-soak-'));
    const source = join(base, 'src');
    await mkdir(source);
    // Shared files every worker reads ranges of: a large one and a few small ones.
    await writeFile(join(source, 'shared-big.bin'), randomBytes(o.bigBytes ?? 96 * 1024 * 1024));
    for (let i = 0; i < 8; i++) await writeFile(join(source, `shared-${i}.txt`), randomBytes(4096 + i * 10_000));
    const w = new World(base, source, join(base, 'mnt'), o.cacheDir ?? join(base, 'cache'), o);
    World.live.add(w);
    return w;
  }

  /** Stops every world not stopped yet (a scenario threw): no node or mount process outlives the suite. */
  static async stopAll(): Promise<void> {
    for (const w of [...World.live]) await w.stop().catch(() => undefined);
  }

  /** Starts (or restarts, on its same state) the node; `n` > 0 starts a replica with a state of its own. */
  async startNode(n = 0): Promise<NodeProc> {
    const node = spawnNode(this.source, join(this.base, `state${n}`), this.logTo(`node${n}.log`));
    await waitServing(node, 120_000).catch(async (err: unknown) => {
      await stopNodeProcess(node.child);
      throw err;
    });
    if (n === 0) this.node = node;
    else this.replicas[n - 1] = node;
    return node;
  }

  async startMount(endpoints: string[]): Promise<MountProc> {
    const [first, ...rest] = endpoints;
    const m = spawnMount(first!, this.mnt, this.cacheDir, ['--driver', this.o.driver, ...rest.flatMap((e) => ['--replica', e]), ...(this.o.mountArgs ?? [])], this.logTo('mount.log'));
    const ready = await waitMounted(m);
    if (ready !== 'ok') {
      await terminateMount(m, { noteEarlyExit: false });
      throw new Error(`the mount did not come up: ${ready}\n${m.tail.slice(-10).join('\n')}`);
    }
    this.mount = m;
    return m;
  }

  /** Keeps a child's log records in the work directory, for a post-mortem (--keep). */
  private logTo(name: string): (rec: Record<string, unknown>) => void {
    const file = join(this.base, name);
    return (rec) => appendFileSync(file, JSON.stringify(rec) + '\n');
  }

  /**
   * kill -9, as a crash would. True once the process is gone; false if it
   * is still there after `waitMs`: a killed mount with a thread stuck in
   * the kernel exits only when its FUSE connection is aborted, which the
   * next mount at its mountpoint does.
   */
  static async kill(p: { child: import('node:child_process').ChildProcess } | undefined, waitMs = 10_000): Promise<boolean> {
    if (!p) return true;
    const gone = World.exitedWithin(p, waitMs);
    p.child.kill('SIGKILL');
    return gone;
  }

  static exitedWithin(p: { child: import('node:child_process').ChildProcess }, ms: number): Promise<boolean> {
    if (p.child.exitCode !== null || p.child.signalCode !== null) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      p.child.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** The mount's memory as `ghostfs status` reports it (MiB); undefined when it does not answer. */
  async memory(): Promise<{ rss: number; heap: number; buffers: number; mallocInUse?: number; mallocFree?: number } | undefined> {
    const m = (await this.status())?.memory;
    const mib = (b: number): number => Math.round(b / 104857.6) / 10;
    const malloc = m?.mallocInUseBytes === undefined ? {} : { mallocInUse: mib(m.mallocInUseBytes), mallocFree: mib(m.mallocFreeBytes ?? 0) };
    return m && { rss: mib(m.rssBytes), heap: mib(m.heapUsedBytes), buffers: mib(m.buffersBytes), ...malloc };
  }

  /** The kernel driver's counters as `ghostfs status` reports them; undefined when it does not answer. */
  async driverStats(): Promise<Record<string, unknown> | undefined> {
    return (await this.status())?.driverStats;
  }

  /** `ghostfs status --json` of the mount; undefined when it does not answer (gone or busy: the caller reports what it has). */
  private async status(): Promise<Partial<MountStatus> | undefined> {
    try {
      const r = await execFileP(process.execPath, [CLI, 'status', this.mnt, '--json'], { encoding: 'utf8', env: childEnv() });
      return JSON.parse(r.stdout) as Partial<MountStatus>;
    } catch {
      return undefined;
    }
  }

  /**
   * A clean unmount and the node stopped. `ghostfs unmount` first writes back
   * everything still queued (the node may have come back only a moment ago),
   * waiting up to two minutes; only then is the mount process gone.
   */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
    let exit;
    if (this.mount) {
      // Not spawnSync: the mount logs to our pipes, and a blocked reader here would stall it.
      const r = await execFileP(process.execPath, [CLI, 'unmount', this.mnt, '--timeout', '120s'], { encoding: 'utf8', env: childEnv() }).catch((err: { stderr?: string; message: string }) => ({ failed: (err.stderr || err.message).trim() }));
      if ('failed' in r) this.notes.push(`ghostfs unmount: ${r.failed}`);
      await terminateMount(this.mount, { noteEarlyExit: false });
      exit = await this.mount.exited;
    }
    for (const n of [this.node, ...this.replicas]) if (n) await stopNodeProcess(n.child);
    World.live.delete(this);
    return exit;
  }

  /**
   * The records its processes logged that name one of `paths`, with every
   * warning and error, oldest first (the last `max`): a report of a lost or
   * corrupted file shows them, for a run whose directory is gone with its
   * machine (CI).
   */
  async evidence(paths: string[], max = 60): Promise<string[]> {
    const found: { time: number; line: string }[] = [];
    for (const name of (await readdir(this.base)).filter((n) => n.endsWith('.log'))) {
      for (const text of (await readFile(join(this.base, name), 'utf8')).split('\n')) {
        if (!text) continue;
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(text) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (Number(rec.level) < 40 && !paths.some((p) => text.includes(`"${p}"`) || text.includes(`"${p}/`))) continue;
        const { time, msg, level: _level, pid: _pid, hostname: _host, ...rest } = rec;
        found.push({ time: Number(time), line: `${name.replace(/\.log$/, '')} ${new Date(Number(time)).toISOString().slice(11, 23)} ${String(msg)} ${JSON.stringify(rest)}` });
      }
    }
    return found.sort((a, b) => a.time - b.time).slice(-max).map((f) => f.line);
  }

  async remove(): Promise<void> {
    await rm(this.base, { recursive: true, force: true });
  }
}
