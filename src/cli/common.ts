// Helpers shared by the CLI commands.
import type { Command, Option } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { PendingRecord } from '../mount/write-back.js';
import type { OpenFile } from '../admin/protocol.js';

/** Every flag can also come from GHOSTFS_<NAME>. */
export function env(o: Option, name: string): Option {
  return o.env(`GHOSTFS_${name}`);
}

/**
 * Whether a flag that GHOSTFS_<name> may also give is on. Commander turns
 * such a flag on when the variable is set at all, whatever it says; here
 * 1/true/yes/on turn it on, 0/false/no/off (or empty) leave it off, and
 * anything else is an error, never a guess.
 */
export function flagOn(cmd: Command, key: string, name: string): boolean {
  return cmd.getOptionValueSource(key) === 'env' ? envSwitch(name) : cmd.getOptionValue(key) === true;
}

/** The same for a `--no-<key>` flag (GHOSTFS_NO_<...>): whether it is given. */
export function noFlagOn(cmd: Command, key: string, name: string): boolean {
  return cmd.getOptionValueSource(key) === 'env' ? envSwitch(name) : cmd.getOptionValue(key) === false;
}

function envSwitch(name: string): boolean {
  const v = (process.env[`GHOSTFS_${name}`] ?? '').trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['', '0', 'false', 'no', 'off'].includes(v)) return false;
  return fail(`GHOSTFS_${name}="${process.env[`GHOSTFS_${name}`]}": give 1, true, yes or on (or 0, false, no, off).`);
}

/** One clear sentence on stderr and a non-zero exit. */
export function fail(message: string, code = 1): never {
  process.stderr.write(`ghostfs: ${message}\n`);
  process.exit(code);
}

/** Where mounts keep their cache unless told otherwise. */
export function defaultCacheDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'ghostfs');
}

/** The effective settings as JSON, secrets masked. */
export function printConfig(config: object): void {
  const masked = JSON.parse(JSON.stringify(config, (k, v) => (k === 'token' && v ? '***' : v === Infinity ? 'unlimited' : v)));
  process.stdout.write(JSON.stringify(masked, null, 2) + '\n');
}

/** The files a mount has open, one line each (at most those the mount listed). */
export function describeOpen(files: OpenFile[] | undefined, total: number): string[] {
  return indentedList(files, total, (f) => `${f.path}${f.writing ? ' (open for writing)' : ''}`);
}

/** Pending write-backs, one line each: what a person needs to see why they have not reached a node. */
export function describePending(records: PendingRecord[] | undefined, total: number): string[] {
  return indentedList(records, total, (r) => `${r.path}: closed ${Math.round(r.ageMs / 1000)}s ago, ${r.state}, ${r.attempts} attempt(s)${r.lastError ? `; last: ${r.lastError}` : ''}`);
}

/** One indented line per item a mount listed, and how many more it has of `total`. */
function indentedList<T>(items: T[] | undefined, total: number, line: (item: T) => string): string[] {
  if (!items?.length) return [];
  const lines = items.map((x) => `    ${line(x)}`);
  if (total > items.length) lines.push(`    ... and ${total - items.length} more`);
  return lines;
}
