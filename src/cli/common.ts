// Helpers shared by the CLI commands.
import type { Option } from 'commander';

/** Every flag can also come from GHOSTFS_<NAME>. */
export function env(o: Option, name: string): Option {
  return o.env(`GHOSTFS_${name}`);
}

/** One clear sentence on stderr and a non-zero exit. */
export function fail(message: string, code = 1): never {
  process.stderr.write(`ghostfs: ${message}\n`);
  process.exit(code);
}
