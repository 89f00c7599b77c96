// Running soak workers (scripts/soak/worker.ts) and judging what they did:
// their own counts, then every file they last wrote compared with the
// node's copy, once the mount is gone.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkerSummary } from '../worker.js';

const WORKER = fileURLToPath(new URL('../worker.js', import.meta.url));

/** One worker process in `dir` until `until`; its summary, or why it has none. */
export function runWorker(dir: string, source: string, until: number, seed: number, tolerant: boolean): Promise<WorkerSummary | string> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [WORKER, dir, source, String(until), String(seed), tolerant ? 'tolerant' : 'strict'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code, signal) => {
      try {
        resolve(JSON.parse(out) as WorkerSummary);
      } catch {
        resolve(`worker ${seed} exited with ${signal ?? `code ${code}`}: ${err.trim().split('\n').slice(-3).join(' / ')}`);
      }
    });
  });
}

/** Workers w0..w(n-1) under the mount, all until the same moment. */
export function runWorkers(mnt: string, source: string, procs: number, durationMs: number, tolerant: boolean): Promise<(WorkerSummary | string)[]> {
  const until = Date.now() + durationMs;
  return Promise.all(Array.from({ length: procs }, (_, i) => runWorker(join(mnt, `w${i}`), source, until, i + 1, tolerant)));
}

export interface Verdict {
  ops: number;
  /** Unexpected errors (strict: any error; tolerant: errnos a fault does not excuse). */
  errors: Record<string, number>;
  /** Operations that failed with an errno owed to an injected fault. */
  faulted: Record<string, number>;
  lost: number;
  corrupted: number;
  maxOpMs: number;
  /** The slowest operation's kind and outcome, when a worker said. */
  slowestOp?: string;
  examples: string[];
  failures: string[];
}

/** Adds up the workers' counts and checks their last files against the node's root. */
export async function judge(results: (WorkerSummary | string)[], source: string): Promise<Verdict> {
  const v: Verdict = { ops: 0, errors: {}, faulted: {}, lost: 0, corrupted: 0, maxOpMs: 0, examples: [], failures: [] };
  const add = (into: Record<string, number>, from: Record<string, number>): void => {
    for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
  };
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!;
    if (typeof r === 'string') {
      v.failures.push(r);
      continue;
    }
    v.ops += r.ops;
    v.corrupted += r.corrupted;
    v.lost += r.lost;
    if (Math.round(r.maxOpMs) >= v.maxOpMs) {
      v.maxOpMs = Math.round(r.maxOpMs);
      v.slowestOp = r.slowestOp;
    }
    add(v.errors, r.errors);
    add(v.faulted, r.faulted ?? {});
    for (const e of r.examples) if (v.examples.length < 10) v.examples.push(`w${i}: ${e}`);
    const onNode = new Set(await readdir(join(source, `w${i}`)).catch(() => [] as string[]));
    for (const [name, want] of Object.entries(r.files)) {
      if (!onNode.has(name)) {
        v.lost++;
        if (v.examples.length < 10) v.examples.push(`w${i}: ${name} was closed successfully but is not on the node`);
        continue;
      }
      const got = createHash('sha256').update(await readFile(join(source, `w${i}`, name))).digest('hex');
      if (got !== want) {
        v.corrupted++;
        if (v.examples.length < 10) v.examples.push(`w${i}: ${name} differs on the node from what was last written`);
      }
    }
  }
  return v;
}

export const count = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);

/** The verdict line every scenario ends with. */
export const verdictLine = (v: Verdict): string => `${v.ops} operations, ${v.lost} lost, ${v.corrupted} corrupted`;
