// Parsers for settings given as flags or GHOSTFS_* variables. Each throws
// commander's InvalidArgumentError with one sentence saying what is wrong.
import { InvalidArgumentError } from 'commander';

export function parseListen(v: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d+)$/.exec(v);
  if (!m) throw new InvalidArgumentError(`"${v}" is not HOST:PORT (for example 127.0.0.1:7070).`);
  const port = Number(m[2]);
  if (port < 0 || port > 65535) throw new InvalidArgumentError(`port ${port} is out of range 0-65535.`);
  return { host: m[1]!, port };
}

export function parseIntIn(min: number, max: number) {
  return (v: string): number => {
    if (!/^-?\d+$/.test(v.trim())) throw new InvalidArgumentError(`"${v}" is not a whole number.`);
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`${n} is out of range ${min}-${max}.`);
    return n;
  };
}

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** "512M", "2G", "1048576": bytes. */
export function parseSize(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`"${v}" is not a size (for example 512M or 2G).`);
  return Math.round(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!);
}

const DUR: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "250ms", "30s", "10m", "2h": milliseconds. A bare number is seconds. */
export function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`"${v}" is not a duration (for example 500ms, 30s, 10m).`);
  return Math.round(Number(m[1]) * DUR[m[2] ?? 's']!);
}

export function parseChoice<T extends string>(choices: readonly T[]) {
  return (v: string): T => {
    if (!(choices as readonly string[]).includes(v)) throw new InvalidArgumentError(`"${v}" is not one of ${choices.join(', ')}.`);
    return v as T;
  };
}
