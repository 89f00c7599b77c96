// The kernel drivers the benchmarks measure side by side (`ghostfs mount
// --driver`): the --drivers option, the settings each mounts with, and the
// request counters the native driver keeps, read through `ghostfs status
// --json` before an unmount so the report states the request sizes the kernel
// actually sent.
import { InvalidArgumentError } from 'commander';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { MountStatus } from '../../../src/admin/protocol.js';
import type { DriverStats } from '../../../src/native/addon.js';
import { childEnv, CLI, REPO } from './ghostfs.js';
import { sizeLabel } from './report.js';
import { failed, runCmd } from './session.js';

/** Native first: every ratio between the two is native ÷ fuse-native. */
export const DRIVERS = ['native', 'fuse-native'] as const;
export type Driver = (typeof DRIVERS)[number];

/** --drivers: a comma-separated subset of DRIVERS, returned in DRIVERS order so tables read the same whatever the flag's order. */
export function parseDrivers(v: string): Driver[] {
  const names = v.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = names.filter((n) => !(DRIVERS as readonly string[]).includes(n));
  if (!names.length || unknown.length) throw new InvalidArgumentError(`"${v}": the drivers are ${DRIVERS.join(', ')} (comma-separated).`);
  return DRIVERS.filter((d) => names.includes(d));
}

/** Fails before any data is generated when the native driver is asked for but its addon was never built. */
export function assertDriversBuilt(drivers: readonly Driver[]): void {
  if (drivers.includes('native') && !existsSync(join(REPO, 'native', 'build', 'ghostfs.node'))) {
    throw new Error('the native driver is not built (native/build/ghostfs.node); install libfuse3-dev and run `bash native/build.sh`, or pass --drivers fuse-native');
  }
}

/**
 * Each driver with the settings `ghostfs mount` resolves for it and these
 * flags (its --print-config, GHOSTFS_ variables included), for the report
 * header: the defaults differ per driver (attr-timeout).
 */
export function describeDrivers(drivers: readonly Driver[], mnt: string, args: string[]): string {
  return drivers
    .map((d) => {
      const r = spawnSync(process.execPath, [CLI, 'mount', '127.0.0.1:1', mnt, '--driver', d, ...args, '--print-config'], { cwd: REPO, env: childEnv(), encoding: 'utf8', timeout: 30_000 });
      let c: { attrTimeoutS?: number; readaheadChunks?: number } = {};
      try {
        c = JSON.parse(r.stdout) as typeof c;
      } catch {
        /* described with question marks */
      }
      return `${d} (readahead ${c.readaheadChunks ?? '?'} chunks, attr-timeout ${c.attrTimeoutS ?? '?'} s)`;
    })
    .join(', ');
}

/** The native counters a report shows, summed over one or more mounts (maxima: the largest). */
export interface RequestStats {
  mounts: number;
  readSizes: Record<string, number>;
  writeSizes: Record<string, number>;
  readMax: number;
  writeMax: number;
  fastReads: number;
  directWrites: number;
  forwarded: number;
  batches: number;
  /** Hand-offs to JS cut short after 8 MiB of written data, so that it looks at its sockets before the rest. */
  drainSplits: number;
  /** What the kernel agreed to at init: the ceiling of every request size above. */
  maxReadahead: number;
  maxWrite: number;
}

/**
 * The driver counters of the mount at `mnt`, from `ghostfs status --json` run
 * with the mount's own environment (GHOSTFS_RUN_DIR locates its control
 * socket); null when its driver keeps none (fuse-native).
 */
export async function fetchDriverStats(mnt: string): Promise<DriverStats | null> {
  const r = await runCmd('exec "$1" "$2" status "$3" --json', REPO, { capture: true, timeoutMs: 60_000, env: childEnv(), args: [process.execPath, CLI, mnt] });
  if (r.code !== 0) throw failed('ghostfs status --json', r);
  const s = JSON.parse(r.stdout) as MountStatus;
  return (s.driverStats as DriverStats | undefined) ?? null;
}

const addHist = (a: Record<string, number>, b: Record<string, number>): Record<string, number> => {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v;
  return out;
};

/** `into` plus one mount's counters. */
export function addStats(into: RequestStats | undefined, s: DriverStats): RequestStats {
  const z = into ?? { mounts: 0, readSizes: {}, writeSizes: {}, readMax: 0, writeMax: 0, fastReads: 0, directWrites: 0, forwarded: 0, batches: 0, drainSplits: 0, maxReadahead: 0, maxWrite: 0 };
  return {
    mounts: z.mounts + 1,
    readSizes: addHist(z.readSizes, s.readSizes),
    writeSizes: addHist(z.writeSizes, s.writeSizes),
    readMax: Math.max(z.readMax, s.readMax),
    writeMax: Math.max(z.writeMax, s.writeMax),
    fastReads: z.fastReads + s.fastReads,
    directWrites: z.directWrites + (s.directWrites ?? 0),
    forwarded: z.forwarded + s.forwarded,
    batches: z.batches + s.batches,
    drainSplits: z.drainSplits + (s.drainSplits ?? 0),
    maxReadahead: Math.max(z.maxReadahead, s.maxReadahead),
    maxWrite: Math.max(z.maxWrite, s.maxWrite),
  };
}

/** The addon names each bucket by its upper bound, the last one catching everything above 512K. */
const bucket = (k: string): string => (k === '1M' ? '>512K' : `≤${k}`);
/** A size histogram and its largest request; "none" when the kernel sent no such request (no reads in a write workload). */
function hist(h: Record<string, number>, max: number): string {
  if (!Object.values(h).some((v) => v > 0)) return 'none';
  return `${Object.entries(h).map(([k, v]) => `${bucket(k)} ${v}`).join(', ')}; largest ${sizeLabel(max)}`;
}

/** The counters as indented report lines. */
export function requestLines(s: RequestStats, indent: string): string[] {
  return [
    `${indent}read sizes:  ${hist(s.readSizes, s.readMax)}; ${s.fastReads} served by the C fast path`,
    `${indent}write sizes: ${hist(s.writeSizes, s.writeMax)}; ${s.directWrites} made in C straight into the dirty copy`,
    `${indent}${s.forwarded} requests forwarded to JS in ${s.batches} batches (${s.drainSplits} cut short at 8 MiB of written data); kernel max_readahead ${sizeLabel(s.maxReadahead)}, max_write ${sizeLabel(s.maxWrite)}; ${s.mounts} mount${s.mounts === 1 ? '' : 's'}`,
  ];
}
