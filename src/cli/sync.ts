// `ghostfs sync`: write back now what a mount still holds for the node (with
// --write-back async, files closed moments ago) and wait until the node has
// it. Exit code 1 while anything is still pending after the timeout.
import { Command, Option } from 'commander';
import { resolve } from 'node:path';
import { control, NoMountError } from '../admin/control-client.js';
import { socketFor } from '../admin/registry.js';
import { parseDuration } from '../config/parse.js';
import { describePending, fail } from './common.js';

export function syncCommand(): Command {
  return new Command('sync')
    .description('write back what a mount still holds for the node and wait until the node has it')
    .argument('<mountpoint>')
    .addOption(new Option('--timeout <duration>', 'how long pending write-backs may take').argParser(parseDuration).default(parseDuration('30s'), '30s'))
    .option('--json', 'print the result as JSON')
    .action(async (mp: string, o) => {
      const mountpoint = resolve(mp);
      let r;
      try {
        r = await control(socketFor(mountpoint), { op: 'flush', deadlineMs: o.timeout }, o.timeout + 30_000);
      } catch (err) {
        fail(err instanceof NoMountError ? `no running ghostfs mount answers for ${mountpoint}.` : (err as Error).message);
      }
      const flushed = 'flushed' in r ? r.flushed : 0;
      const pending = ('pending' in r ? r.pending : 0) ?? 0;
      const records = 'pendingWrites' in r ? r.pendingWrites : undefined;
      process.stdout.write(
        o.json
          ? JSON.stringify({ mountpoint, ok: r.ok && pending === 0, flushed, pending, pendingWrites: records }) + '\n'
          : [`${mountpoint}: ${flushed} write-back(s) flushed${pending ? `, ${pending} still pending (no node took them)` : ''}`, ...describePending(records, pending)].join('\n') + '\n',
      );
      if (!r.ok || pending > 0) process.exitCode = 1;
    });
}
