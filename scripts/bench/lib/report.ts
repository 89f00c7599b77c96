// Figures and the report header shared by the benchmarks: statistics, number
// and size formatting, plain-text tables, the machine and the GHOSTFS_ settings.
import { spawnSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';

export const MB = 1e6;
export const MiB = 1024 ** 2;

/** The median; NaN for no samples. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A figure in its unit: seconds to 3 significant-ish places, rates to 1 decimal below 100. */
export function fmt(unit: string, v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (unit === 's') return v < 1 ? v.toFixed(3) : v < 100 ? v.toFixed(2) : v.toFixed(1);
  if (unit === 'MB/s') return v < 100 ? v.toFixed(1) : v.toFixed(0);
  return v < 100 ? v.toFixed(1) : Math.round(v).toString();
}

/** "1.5 GiB", "128 MiB"; below 1 MiB in KiB unless `smallest` is 'MiB'. */
export function sizeLabel(v: number, smallest: 'KiB' | 'MiB' = 'KiB'): string {
  return v >= 1024 ** 3 ? `${+(v / 1024 ** 3).toFixed(2)} GiB` : v >= MiB || smallest === 'MiB' ? `${+(v / MiB).toFixed(1)} MiB` : `${+(v / 1024).toFixed(1)} KiB`;
}

/** A plain-text table: first and last columns left-aligned, the rest right-aligned, a dashed rule under the header. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]): string =>
    r
      .map((cell, c) => (c === 0 || c === r.length - 1 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join('   ')
      .trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('   '), ...rows.slice(1).map(line)].join('\n');
}

/** CPU count and model and total memory, for the report header and the JSON. */
export function machineInfo(): { cpus: number; cpuModel: string; totalMemBytes: number } {
  const cpu = cpus();
  return { cpus: cpu.length, cpuModel: cpu[0]?.model.trim() ?? 'unknown', totalMemBytes: totalmem() };
}

/**
 * The GHOSTFS_ variables of this environment as NAME=value, without the ones
 * the benchmark sets for its children itself (log level and format), the
 * token, and where control sockets live (no bearing on any figure). `hidden`
 * names more to leave out.
 */
export function ghostfsSettings(hidden: readonly string[] = []): string[] {
  const skip = ['GHOSTFS_LOG_LEVEL', 'GHOSTFS_LOG_PRETTY', 'GHOSTFS_TOKEN', 'GHOSTFS_RUN_DIR', ...hidden];
  return Object.entries(process.env)
    .filter(([k]) => k.startsWith('GHOSTFS_') && !skip.includes(k))
    .map(([k, v]) => `${k}=${v}`);
}

/** The first line of a tool's version output, or "unknown". */
export const firstLineOf = (cmd: string, args: string[]): string => (spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '').split('\n')[0]!.trim() || 'unknown';
