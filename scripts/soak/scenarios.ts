// Fault scenarios: worker processes write, edit, read back, rename and
// delete files through a real mount while something goes wrong on purpose,
// then every file whose close() returned success is checked on the node.
// Each ends with "N operations, N lost, N corrupted"; failures the faults
// owe their callers (EIO, EHOSTDOWN, ENOTCONN...) are counted apart, and the
// slowest operation shows that nothing hung past the deadlines.
import { join } from 'node:path';
import { sleep } from '../bench/lib/session.js';
import { FaultProxy } from './lib/fault-proxy.js';
import { fillUp, mountSmallFs } from './lib/small-fs.js';
import { count, judge, runWorkers, verdictLine, type Verdict } from './lib/workers.js';
import { World } from './lib/world.js';
import { hostileInput } from './hostile.js';

export interface ScenarioOptions {
  driver: string;
  durationMs: number;
  procs: number;
  /** The mount's --write-back (sync when absent). */
  writeBack?: 'sync' | 'async';
  /** Keep the work directory (for a post-mortem). */
  keep?: boolean;
  log?: (line: string) => void;
}

export interface ScenarioResult extends Verdict {
  name: string;
  /** What was done to the system, e.g. { reset: 4, 'kill -9 mount': 3 }. */
  injected: Record<string, number>;
  /** The mount's exit after the final clean unmount (0 expected). */
  mountExit?: number | string | null;
  /** For a lost or corrupted file: what the processes logged of it (World.evidence). */
  evidence?: string[];
}

/** The workspace paths an example names ("w0: corrupted: read of f29 ..." names w0/f29). */
function namedIn(examples: string[]): string[] {
  const paths = new Set<string>();
  for (const e of examples) {
    const worker = /^(w\d+):/.exec(e)?.[1];
    if (worker) for (const m of e.matchAll(/\b(f\d+|big)\b/g)) paths.add(`${worker}/${m[1]}`);
  }
  return [...paths];
}

/** Flags for every scenario's mount: short deadlines, so faults surface within seconds. */
const mountArgs = (o: ScenarioOptions): string[] => ['--deadline', '3s', '--write-back', o.writeBack ?? 'sync'];

const between = (lo: number, hi: number): number => lo + Math.random() * (hi - lo);

/** Runs `chaos` until the workers are done, then the final clean stop and the check. */
async function withWorkers(name: string, w: World, o: ScenarioOptions, injected: Record<string, number>, chaos: (done: () => boolean) => Promise<void>): Promise<ScenarioResult> {
  let finished = false;
  const workers = runWorkers(w.mnt, w.source, o.procs, o.durationMs, true).finally(() => (finished = true));
  await chaos(() => finished);
  const results = await workers;
  const exit = await w.stop();
  const v = await judge(results, w.source);
  v.failures.push(...w.notes);
  const evidence = v.lost || v.corrupted ? await w.evidence(namedIn(v.examples)).catch((err: Error) => [`no evidence: ${err.message}`]) : undefined;
  if (!o.keep) await w.remove();
  return { name, ...v, injected, mountExit: exit ? (exit.signal ?? exit.code) : undefined, evidence };
}

const bump = (r: Record<string, number>, k: string): void => void (r[k] = (r[k] ?? 0) + 1);

/** Faults (each from `faults` in turn) alternating with spells of normal traffic, until the workers are done. */
async function alternate(proxy: FaultProxy, done: () => boolean, faults: (() => void)[], faultMs: [number, number], passMs: [number, number]): Promise<void> {
  for (let i = 0; !done(); i++) {
    faults[i % faults.length]!();
    await sleep(between(...faultMs));
    proxy.set('pass');
    await sleep(between(...passMs));
  }
}

/** kill -9 of the node behind `proxy`, a pause, and a restart on its own state, which the proxy then leads to. */
async function crashNodeBehind(w: World, proxy: FaultProxy, injected: Record<string, number>, what: string, downMs: number): Promise<void> {
  await World.kill(w.node);
  bump(injected, what);
  proxy.reset();
  await sleep(downMs);
  proxy.upstream = (await w.startNode()).endpoint;
}

/** The link between mount and node delays, resets, drops, blackholes and loses whole DATA frames, in turn. */
async function linkFaults(o: ScenarioOptions): Promise<ScenarioResult> {
  const w = await World.create({ driver: o.driver, mountArgs: mountArgs(o) });
  const node = await w.startNode();
  const proxy = await FaultProxy.start(node.endpoint);
  await w.startMount([proxy.endpoint]);
  const steps: (() => void)[] = [() => proxy.set('delay', 200), () => proxy.reset(), () => proxy.set('lose-data'), () => proxy.set('drop'), () => proxy.set('blackhole')];
  const r = await withWorkers('link faults (delay, reset, lost DATA frames, drop, blackhole)', w, o, proxy.applied, (done) => alternate(proxy, done, steps, [1000, 2500], [1500, 3000]));
  await proxy.close();
  return r;
}

/** The mount process is killed (-9) at random points and started again on the same cache. */
async function killMount(o: ScenarioOptions): Promise<ScenarioResult> {
  const w = await World.create({ driver: o.driver, mountArgs: mountArgs(o) });
  const node = await w.startNode();
  await w.startMount([node.endpoint]);
  const injected: Record<string, number> = {};
  return withWorkers('kill -9 of the mount during write-back bursts, then remount', w, o, injected, async (done) => {
    while (!done()) {
      await sleep(between(3000, 7000));
      if (done()) break;
      const killed = w.mount!;
      const exited = await World.kill(killed);
      bump(injected, 'kill -9 mount');
      if (!exited) bump(injected, 'killed mount stuck in the kernel');
      await sleep(500);
      await w.startMount([node.endpoint]);
      // The new mount aborts the old one's connection: a stuck process then finishes exiting.
      if (!exited && !(await World.exitedWithin(killed, 10_000))) w.notes.push(`the killed mount process ${killed.child.pid} was still there 10 s after the next mount started`);
    }
  });
}

/** The node is killed (-9) during commits and restarted on its state; the mount reaches it through a proxy whose upstream follows. */
async function killNode(o: ScenarioOptions): Promise<ScenarioResult> {
  const w = await World.create({ driver: o.driver, mountArgs: mountArgs(o) });
  const node = await w.startNode();
  const proxy = await FaultProxy.start(node.endpoint);
  await w.startMount([proxy.endpoint]);
  const injected: Record<string, number> = {};
  const r = await withWorkers('kill -9 of the node during commits, then restart', w, o, injected, async (done) => {
    while (!done()) {
      await sleep(between(3000, 7000));
      if (done()) break;
      await crashNodeBehind(w, proxy, injected, 'kill -9 node', 1000);
    }
  });
  await proxy.close();
  return r;
}

/**
 * The cache lives on a 64 MiB filesystem while workers write and read far
 * more than that, and another process fills that filesystem to the last
 * byte again and again (and frees it after a while): the mount's chunk
 * writes, dirty copies and database writes all meet ENOSPC.
 */
async function cacheFull(o: ScenarioOptions): Promise<ScenarioResult> {
  const small = await mountSmallFs('64m');
  const fs = small.dir;
  try {
    const w = await World.create({ driver: o.driver, cacheDir: join(fs, 'cache'), mountArgs: [...mountArgs(o), '--cache-quota', '40M', '--min-free', '0'] });
    const node = await w.startNode();
    await w.startMount([node.endpoint]);
    const injected: Record<string, number> = {};
    const hog = join(fs, 'hog');
    return await withWorkers('cache on a 64 MiB filesystem that another process fills up (ENOSPC)', w, o, injected, async (done) => {
      while (!done()) {
        await sleep(between(1000, 3000));
        if (done()) break;
        const free = await fillUp(hog);
        bump(injected, 'filesystem filled');
        await sleep(between(1000, 3000));
        await free();
      }
    });
  } finally {
    await small.remove();
  }
}

/** A node whose chunk bytes arrive with a bit flipped, beside an intact replica. */
async function corruptChunks(o: ScenarioOptions): Promise<ScenarioResult> {
  const w = await World.create({ driver: o.driver, mountArgs: mountArgs(o) });
  const node = await w.startNode();
  const proxy = await FaultProxy.start(node.endpoint);
  await w.startMount([proxy.endpoint, node.endpoint]);
  const r = await withWorkers('a node serving corrupted chunks, an intact replica beside it', w, o, proxy.applied, (done) => alternate(proxy, done, [() => proxy.set('corrupt')], [2000, 4000], [1000, 2000]));
  await proxy.close();
  return r;
}

/** Two nodes serve the workspace; the primary dies (-9) mid-read again and again. */
async function replicaDies(o: ScenarioOptions): Promise<ScenarioResult> {
  const w = await World.create({ driver: o.driver, mountArgs: mountArgs(o) });
  const primary = await w.startNode();
  const replica = await w.startNode(1);
  const proxy = await FaultProxy.start(primary.endpoint);
  await w.startMount([proxy.endpoint, replica.endpoint]);
  const injected: Record<string, number> = {};
  const r = await withWorkers('the primary of two replicas killed (-9) mid-read', w, o, injected, async (done) => {
    while (!done()) {
      await sleep(between(2000, 5000));
      if (done()) break;
      await crashNodeBehind(w, proxy, injected, 'kill -9 primary', between(2000, 4000));
    }
  });
  await proxy.close();
  return r;
}

export const SCENARIOS: Record<string, (o: ScenarioOptions) => Promise<ScenarioResult>> = {
  'link-faults': linkFaults,
  'kill-mount': killMount,
  'kill-node': killNode,
  'cache-full': cacheFull,
  'corrupt-chunks': corruptChunks,
  'replica-dies': replicaDies,
  hostile: hostileInput,
};

/** No single operation may take longer than this: the deadlines are seconds, commits at most 30 s. */
export const HANG_MS = 90_000;

export function describe(r: ScenarioResult): string[] {
  const lines = [`${r.name}`];
  lines.push(`  injected: ${JSON.stringify(r.injected)}; failed with a fault's errno: ${count(r.faulted)} ${JSON.stringify(r.faulted)}; unexpected errors: ${count(r.errors)}${count(r.errors) ? ` ${JSON.stringify(r.errors)}` : ''}; slowest operation ${r.maxOpMs} ms${r.slowestOp ? ` (${r.slowestOp})` : ''}${r.mountExit !== undefined ? `; final unmount exit ${r.mountExit}` : ''}`);
  for (const f of r.failures) lines.push(`  failure: ${f}`);
  for (const e of r.examples) lines.push(`  ${e}`);
  if (r.evidence?.length) lines.push('  logged about it, and every warning (oldest first):', ...r.evidence.map((l) => `    ${l}`));
  lines.push(`  ${verdictLine(r)}`);
  return lines;
}

export const isClean = (r: ScenarioResult): boolean => r.lost === 0 && r.corrupted === 0 && count(r.errors) === 0 && r.failures.length === 0 && r.maxOpMs < HANG_MS && (r.mountExit === undefined || r.mountExit === 0);
