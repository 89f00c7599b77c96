// The ghostfs children the benchmarks drive: the real CLI (`ghostfs serve`,
// `ghostfs mount --foreground`) on loopback, their JSON log lines on stderr,
// and the mount table.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { killWorkloads, note, progress, session, sleep, watchLog } from './session.js';
import { fusermount } from './tools.js';

/** The repository root (this file runs as dist/scripts/bench/lib/ghostfs.js). */
export const REPO = resolve(fileURLToPath(new URL('../../../../', import.meta.url)));
export const CLI = join(REPO, 'bin', 'ghostfs.js');

/** Fails early, with what to do, when the CLI has not been built. */
export function assertCliBuilt(): void {
  if (!existsSync(join(REPO, 'dist', 'src', 'cli', 'main.js'))) throw new Error(`the ghostfs CLI is not built (dist/src/cli/main.js); run \`npx tsc -p .\` in ${REPO}`);
}

/** The environment of a ghostfs child: info-level JSON log lines, on stderr. */
export function childEnv(): NodeJS.ProcessEnv {
  // GHOSTFS_CHILD_LOG_LEVEL=debug: the processes started log more, to study a run that went wrong.
  const env: NodeJS.ProcessEnv = { ...process.env, GHOSTFS_LOG_LEVEL: process.env.GHOSTFS_CHILD_LOG_LEVEL || 'info', GHOSTFS_LOG_PRETTY: '0' };
  delete env.GHOSTFS_LOG_FILE; // the lines must come to us on stderr
  return env;
}

/** Starts `ghostfs serve` on port 0 (the kernel picks a free loopback port, so parallel runs never collide). */
export function spawnServe(root: string, stateDir: string, stdout: 'ignore' | 'pipe'): ChildProcess {
  return spawn(process.execPath, [CLI, 'serve', '--root', root, '--state-dir', stateDir, '--listen', '127.0.0.1:0'], { cwd: REPO, env: childEnv(), stdio: ['ignore', stdout, 'pipe'] });
}

/**
 * Resolves once the node's server has answered an HTTP/2 handshake on the port
 * of `listen` (host:port). `ghostfs serve` logs "node serving" a moment before
 * it installs its SIGTERM handler; a SIGTERM in that window kills it without a
 * clean shutdown (about half the time here). An answered handshake means its
 * event loop has turned since the log line, so the handler is in place. Never
 * rejects: if the probe cannot connect we stop the node anyway and judge by its
 * exit.
 */
export function handshake(listen: unknown): Promise<void> {
  const port = typeof listen === 'string' ? /:(\d+)$/.exec(listen)?.[1] : undefined;
  if (!port) return Promise.resolve();
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

// ---------------------------------------------------------------------------
// a node and a mount that live through a whole benchmark (read, write)

export interface NodeProc {
  child: ChildProcess;
  endpoint: string;
  tail: string[];
  /** How it exited: the signal, or "code N". */
  exited: Promise<string>;
  /** Resolves once it serves and answered a handshake. */
  ready: Promise<void>;
}

/** Spawns the node; `onRecord` sees each of its log records. Wait for it with waitServing. */
export function spawnNode(root: string, stateDir: string, onRecord?: (rec: Record<string, unknown>) => void): NodeProc {
  const child = spawnServe(root, stateDir, 'ignore');
  const tail: string[] = [];
  const n: NodeProc = {
    child,
    endpoint: '',
    tail,
    exited: new Promise<string>((res) => child.once('exit', (code, sig) => res(sig ?? `code ${code}`))),
    ready: new Promise<void>((res) => {
      createInterface({ input: child.stderr! }).on('line', (line) => {
        const rec = watchLog('node', line, tail);
        if (rec) onRecord?.(rec);
        if (rec?.msg === 'node serving' && typeof rec.listen === 'string' && !n.endpoint) {
          n.endpoint = rec.listen;
          void handshake(rec.listen).then(res);
        }
      });
    }),
  };
  return n;
}

/** Waits until the node serves; throws with its output if it exits first (or is not serving after `timeoutMs`). */
export async function waitServing(n: NodeProc, timeoutMs?: number): Promise<void> {
  const how = await Promise.race([n.ready.then(() => null), n.exited, ...(timeoutMs ? [sleep(timeoutMs).then(() => `not serving after ${timeoutMs / 1000} s`)] : [])]);
  if (how !== null) throw new Error(`the node ${how.startsWith('not') ? how : `exited before serving (${how})`}:\n${n.tail.join('\n')}`);
}

/** SIGTERM, and SIGKILL if it has not exited 30 s later. */
export async function stopNodeProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  child.kill('SIGTERM');
  if (!(await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)]))) {
    note('the node did not exit within 30 s of SIGTERM; killed');
    child.kill('SIGKILL');
    await exited;
  }
}

export interface MountProc {
  child: ChildProcess;
  mnt: string;
  readyMs: number;
  tail: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves on its "mounted" line. */
  ready: Promise<void>;
  /** When it was spawned (performance.now()). */
  t0: number;
}

/** Spawns `ghostfs mount --foreground` of the node at `endpoint`; `onRecord` sees each of its stderr log records. Wait for it with waitMounted. */
export function spawnMount(endpoint: string, mnt: string, cacheDir: string, extraArgs: string[] = [], onRecord?: (rec: Record<string, unknown>) => void): MountProc {
  // Left to `ghostfs mount` itself, which clears a ghostfs mount left there
  // (aborting its connection when its process is gone or stuck); a lazy
  // unmount here would hide that mount from it and leave a stuck one stuck.
  if (isMounted(mnt)) note(`${mnt} was still mounted before a new mount: ghostfs mount clears it`);
  const t0 = performance.now();
  const child = spawn(process.execPath, [CLI, 'mount', endpoint, mnt, '--cache-dir', cacheDir, '--foreground', ...extraArgs], { cwd: REPO, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const tail: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => watchLog('mount', l, tail));
  return {
    child,
    mnt,
    readyMs: 0,
    tail,
    t0,
    exited: new Promise((res) => child.once('exit', (code, signal) => res({ code, signal }))),
    ready: new Promise<void>((res) => {
      createInterface({ input: child.stderr! }).on('line', (line) => {
        const rec = watchLog('mount', line, tail);
        if (rec?.msg === 'mounted') res();
        if (rec) onRecord?.(rec);
      });
    }),
  };
}

/** 'ok' once mounted, else why not: exited, or not ready after 120 s. */
export function waitMounted(m: MountProc): Promise<string> {
  return Promise.race([m.ready.then(() => 'ok'), m.exited.then((e) => `exited (${e.signal ?? `code ${e.code}`})`), sleep(120_000).then(() => 'not ready after 120 s')]);
}

/**
 * SIGTERM (the mount unmounts itself and exits); if stuck, a lazy unmount and
 * SIGKILL; a mount point left behind is lazily unmounted. A non-zero exit is
 * noted (unless aborting), for an exit before our SIGTERM only with
 * `noteEarlyExit`.
 */
export async function terminateMount(m: MountProc, o: { noteEarlyExit: boolean }): Promise<void> {
  const within = (ms: number): Promise<boolean> => Promise.race([m.exited.then(() => true), sleep(ms).then(() => false)]);
  const sent = m.child.exitCode === null && m.child.signalCode === null;
  if (sent) {
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
  if (!session.aborting && (sent || o.noteEarlyExit) && code !== 0) note(`the mount process exited with ${signal ?? `code ${code}`} on SIGTERM; last lines:\n${m.tail.slice(-8).join('\n')}`);
  if (isMounted(m.mnt)) {
    note(`${m.mnt} was still mounted after its process exited: fusermount -uz`);
    lazyUnmount(m.mnt);
  }
}

/** What a failure through the mount looked like from outside: is the mount process alive, still mounted, its last words. */
export function mountState(m: MountProc | null): string {
  if (!m) return '';
  const gone = m.child.exitCode !== null || m.child.signalCode !== null;
  return `; mount process ${gone ? `had exited (${m.child.signalCode ?? `code ${m.child.exitCode}`})` : 'still running'}, ${isMounted(m.mnt) ? 'still' : 'no longer'} mounted; its last log lines:\n      ${m.tail.slice(-6).join('\n      ')}`;
}

// ---------------------------------------------------------------------------
// the mount table

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

export const isMounted = (mnt: string): boolean => procMounts().includes(mnt);

export function lazyUnmount(mnt: string): void {
  spawnSync(fusermount(), ['-uz', mnt], { stdio: 'ignore', timeout: 30_000 });
}

/** Teardown, first part: kills the workloads, stops the mount and the node (the given stoppers), then lazily unmounts `mnt` if it is still mounted. */
export async function stopAll(mnt: string, stopMount: () => Promise<unknown>, stopNode: () => Promise<void>): Promise<void> {
  killWorkloads();
  await stopMount();
  await stopNode();
  if (isMounted(mnt)) lazyUnmount(mnt);
}

/** True (and says so) when `mnt` is still mounted: removing a tree with a mount still inside it would reach into the mount. */
export function stillMounted(mnt: string, dir: string): boolean {
  if (!isMounted(mnt)) return false;
  progress(`\n${mnt} is still mounted: not removing ${dir}\n`);
  return true;
}

/** Where the node's state, the mount's cache and the mount point live in a work dir. */
export const ghostfsDirs = (dir: string): { stateDir: string; cacheDir: string; mnt: string } => ({ stateDir: join(dir, 'state'), cacheDir: join(dir, 'cache'), mnt: join(dir, 'mnt') });
