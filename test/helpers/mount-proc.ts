// Runs a real `ghostfs mount --foreground` as a child process, and runs
// commands against the mount in other child processes: the test process
// itself never does file I/O on a mount (nor does the mount process).
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { BIN, LoggedProc } from './logged-proc.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** A user and group a child process runs as (the test's own unless given; another needs root). */
export interface RunAs {
  uid: number;
  gid: number;
}

/** Runs a command to completion (never throws); output as text. */
export function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number; input?: string; as?: RunAs } = {}): Promise<RunResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { cwd: opts.cwd, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8', ...opts.as }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

/** A shell pipeline, for the comparisons that want one. */
export function sh(script: string, opts: { cwd?: string; timeoutMs?: number; as?: RunAs } = {}): Promise<RunResult> {
  return run('bash', ['-c', `set -o pipefail; ${script}`], opts);
}

/** Polls `pred` (its failures count as not yet) until it holds; throws after the timeout. */
export async function waitFor(what: string, pred: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await pred().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export class MountProc extends LoggedProc {
  private constructor(
    child: ChildProcess,
    readonly mountpoint: string,
    /** The environment it was started with beyond the test's own (its run dir: where `ghostfs status` finds it). */
    private readonly env: Record<string, string>,
  ) {
    super(child);
  }

  /** Mounts and resolves once the kernel mount is up; rejects with the log if it exits first. `as`: the user it runs as. */
  static async start(endpoint: string, mountpoint: string, args: string[], env: Record<string, string> = {}, as?: RunAs): Promise<MountProc> {
    const child = spawn(process.execPath, [BIN, 'mount', endpoint, mountpoint, '--foreground', ...args], {
      env: { ...process.env, GHOSTFS_LOG_PRETTY: '0', GHOSTFS_LOG_LEVEL: 'debug', GHOSTFS_LOG_FILE: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...as,
    });
    const m = new MountProc(child, mountpoint, env);
    await m.ready('mounted', 'mount');
    return m;
  }

  /** `ghostfs status --json` of this mount, run from another process. */
  async status(): Promise<Record<string, any>> {
    return JSON.parse((await this.command('status', '--json')).stdout);
  }

  /** `ghostfs sync` of this mount (everything closed is on the node when it succeeds), from another process. */
  async sync(): Promise<RunResult> {
    return this.command('sync', '--timeout', '30s');
  }

  private command(name: string, ...args: string[]): Promise<RunResult> {
    const vars = Object.entries(this.env).map(([k, v]) => `${k}=${v}`);
    return run('env', [...vars, process.execPath, BIN, name, this.mountpoint, ...args]);
  }

  has(msg: string): boolean {
    return this.lines.some((l) => l.msg === msg);
  }

  /** Clean unmount through the process (SIGTERM). */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }

  /** The process dies; the dead mount is detached so the directory is usable again. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
    spawnSync('fusermount', ['-uz', this.mountpoint]);
  }
}
