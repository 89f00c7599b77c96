// Command-line value parsers shared by the benchmarks (commander argParsers).
import { InvalidArgumentError } from 'commander';

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * A parser for sizes such as 512M or 2G (binary units). `example` goes into the
 * error message; with `minBytes`, smaller sizes are refused as too small for
 * the big file.
 */
export function parseSize(example: string, minBytes?: number): (v: string) => number {
  return (v: string): number => {
    const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(v.trim());
    if (!m) throw new InvalidArgumentError(`"${v}" is not a size (for example ${example}).`);
    const n = Math.round(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!);
    if (minBytes !== undefined && n < minBytes) throw new InvalidArgumentError(`"${v}" is too small: the big file needs at least 1M.`);
    return n;
  };
}

/** A parser for whole numbers >= min. */
export function parseCount(min: number) {
  return (v: string): number => {
    if (!/^\d+$/.test(v.trim()) || Number(v) < min) throw new InvalidArgumentError(`"${v}" is not a whole number >= ${min}.`);
    return Number(v);
  };
}
