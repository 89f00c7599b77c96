// The state of one benchmark run that drives a node and mounts (read, write,
// peers): the abort flag, the workload processes it started (so Ctrl-C or an
// error stops them), notes for the report, warn/error log lines of the
// children, the shell-command runner that times the workloads, and page cache
// drops.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

export class Aborted extends Error {
  constructor() {
    super('interrupted');
  }
}

/** Set once a signal asked us to stop: children exiting from then on are expected, not news. */
export const session = { aborting: false };

/** Workload commands run in their own process group (detached) so a timeout or Ctrl-C stops a whole pipeline. */
export const workloads = new Set<ChildProcess>();

/** Progress goes to stderr: stdout is the report. */
export const progress = (s: string): void => void process.stderr.write(s);

/** A timer for races: unref'd, so a race already won does not keep the process alive until it fires. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/** Things worth a human's attention (failures, mismatches, log warnings), printed under the tables. */
export const notes: string[] = [];
export const note = (s: string): void => {
  notes.push(s);
  progress(`\n  note: ${s}\n`);
};

/** warn/error log lines of the node and the mounts, grouped by message. */
export const logIssues = new Map<string, { count: number; example: string }>();

export function recordIssue(key: string, line: string): void {
  const e = logIssues.get(key);
  if (e) e.count++;
  else logIssues.set(key, { count: 1, example: line.slice(0, 400) });
}

/** Keeps a child's output line in `tail`, records warnings and errors, and returns the JSON log record (null for other output). */
export function watchLog(who: string, line: string, tail: string[]): Record<string, unknown> | null {
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
  // The mount unmounting itself when we did not ask (we only send SIGTERM) is as telling as an error.
  if (rec.msg === 'unmounting' && rec.signal !== 'SIGTERM' && !session.aborting) recordIssue(`${who}: unmounting on its own (${String(rec.signal)})`, line);
  if (typeof rec.level === 'number' && rec.level >= 40) recordIssue(`${who} ${rec.level >= 50 ? 'error' : 'warn'}: ${String(rec.msg)}${rec.errno ? ` (${String(rec.errno)})` : ''}`, line);
  return rec;
}

/** The report lines for the logged issues (at most 20, most frequent first) and the notes. `who` names the children, e.g. "the node and the mounts". */
export function issueAndNoteLines(who: { and: string; or: string }): string[] {
  const out: string[] = [];
  if (logIssues.size) {
    out.push(`  warnings/errors logged by ${who.and} (count × message):`);
    for (const [k, v] of [...logIssues.entries()].sort((a, b) => b[1].count - a[1].count).slice(0, 20)) out.push(`    ${v.count} × ${k}\n      e.g. ${v.example}`);
  } else out.push(`  no warnings or errors logged by ${who.or}`);
  for (const s of notes) out.push(`  note: ${s}`);
  return out;
}

export interface CmdResult {
  ms: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface CmdOptions {
  capture?: boolean;
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
  /** Become $1, $2... of the script ($0 is "bench"): paths never need shell quoting. Without them $0 is bash's own. */
  args?: string[];
}

/** Runs a shell command (bash, pipefail) in its own process group and times it from spawn to exit. */
export function runCmd(cmd: string, cwd: string, o: CmdOptions): Promise<CmdResult> {
  if (session.aborting) return Promise.reject(new Aborted());
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const argv = ['-o', 'pipefail', '-c', cmd, ...(o.args ? ['bench', ...o.args] : [])];
    const child = spawn('bash', argv, { cwd, env: o.env ?? process.env, detached: true, stdio: ['ignore', o.capture ? 'pipe' : 'ignore', 'pipe'] });
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
      // spawn reports a vanished cwd (a mount that went away) as "spawn bash ENOENT": say what it is.
      rej(existsSync(cwd) ? e : new Error(`cannot run \`${cmd}\`: its directory ${cwd} is gone`));
    });
    child.once('close', (code, signal) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      workloads.delete(child);
      if (session.aborting) return rej(new Aborted());
      res({ ms, code, signal, stdout: Buffer.concat(out).toString(), stderr: err, timedOut });
    });
  });
}

export function killGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    if (child.pid) process.kill(-child.pid, sig);
  } catch {
    /* already gone */
  }
}

/** SIGKILLs every workload still running (their process groups). */
export function killWorkloads(): void {
  for (const c of workloads) killGroup(c, 'SIGKILL');
}

/** An error saying how a command failed, with the last lines of its stderr. */
export function failed(what: string, r: CmdResult): Error {
  const why = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  return new Error(`${what}: ${why}${r.stderr.trim() ? `; stderr: ${r.stderr.trim().split('\n').slice(-3).join(' | ').slice(0, 400)}` : ''}`);
}

/** Ctrl-C (and kill): set the abort flag, run `teardown` (stop the workload, unmount, stop the node, clean up), then exit 130. */
export function teardownOnSignals(teardown: () => Promise<void>): void {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (session.aborting) return;
      session.aborting = true;
      progress(`\n${sig}: stopping, unmounting and cleaning up...\n`);
      void teardown().finally(() => process.exit(130));
    });
  }
}

let dropState: 'untried' | 'ok' | 'failed' = 'untried';

/** sync + drop the page, dentry and inode caches, so "cold" means the bytes come from disk (or the server). */
export async function dropCaches(): Promise<void> {
  await runCmd('sync', '/', { timeoutMs: 120_000 });
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    dropState = 'ok';
  } catch (err) {
    if (dropState === 'untried') note(`cannot drop the page cache (${(err as Error).message}): "cold" figures include cached bytes; run as root`);
    dropState = 'failed';
  }
}

/** Whether every drop so far worked (false before the first). */
export const pageCacheDropped = (): boolean => dropState === 'ok';

/** `fn` run at most once: every call after the first returns the first call's promise (a teardown reached from both a signal and `finally`). */
export function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | null = null;
  return () => (p ??= fn());
}
