// `ghostfs unmount`: finish pending write-backs through the running mount,
// then unmount. Refuses while files are open there or write-backs cannot
// complete, unless --force, which also recovers a dead mount ("Transport
// endpoint is not connected").
import { Command, Option } from 'commander';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { control, NoMountError } from '../admin/control-client.js';
import { socketFor } from '../admin/registry.js';
import { parseDuration } from '../config/parse.js';
import { abortFuseConnection, fuseConnection, isMounted, mountEntry } from '../mount/mount-table.js';
import { describeOpen, describePending, fail } from './common.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function gone(mountpoint: string, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (!(await isMounted(mountpoint))) return true;
  return !(await isMounted(mountpoint));
}

/** Detaches a mount whose process is gone or stuck: abort the FUSE connection, lazy unmount. */
async function forceDetach(mountpoint: string): Promise<string> {
  const e = await mountEntry(mountpoint);
  if (!e) return 'not mounted';
  if (e.fstype.startsWith('fuse')) {
    // Aborting fails every request in flight at once instead of waiting for a dead daemon.
    await abortFuseConnection(fuseConnection(e)).catch(async (err: Error) => (await import('../log.js')).log.warn({ err: err.message }, 'cannot abort the FUSE connection'));
  }
  const r = spawnSync('fusermount', ['-uz', mountpoint], { encoding: 'utf8' });
  if (r.status !== 0) spawnSync('umount', ['-l', mountpoint]);
  return (await gone(mountpoint, 5000)) ? 'detached' : 'still mounted';
}

export function unmountCommand(): Command {
  return new Command('unmount')
    .alias('umount')
    .description('write back what is pending, then unmount')
    .argument('<mountpoint>')
    .option('--force', 'unmount even with files open (their processes are cut off; what was written to them is written back) or write-backs pending (the journal keeps them for the next mount); also recovers a dead mount')
    .addOption(new Option('--timeout <duration>', 'how long pending write-backs may take').argParser(parseDuration).default(parseDuration('30s'), '30s'))
    .option('--json', 'print the result as JSON')
    .action(async (mp: string, o) => {
      const mountpoint = resolve(mp);
      const out = (human: string, data: object): void => {
        process.stdout.write(o.json ? JSON.stringify({ mountpoint, ...data }) + '\n' : human + '\n');
      };
      try {
        const r = await control(socketFor(mountpoint), { op: 'unmount', force: !!o.force, deadlineMs: o.timeout }, o.timeout + 30_000);
        if (!r.ok) {
          if (o.json) out('', { ok: false, error: r.error, pending: r.pending, pendingWrites: r.pendingWrites, openFiles: r.openFiles, openCount: r.openCount });
          if (r.openFiles) {
            fail([`refusing to unmount ${mountpoint}: ${r.error}. Close them (\`fuser -vm ${mountpoint}\` names the processes), or use --force (they are cut off; what was written to them is written back).`, ...describeOpen(r.openFiles, r.openCount ?? 0)].join('\n'));
          }
          fail([`refusing to unmount ${mountpoint}: ${r.error}. Bring a node back, or use --force (the journal keeps them for the next mount).`, ...describePending(r.pendingWrites, r.pending ?? 0)].join('\n'));
        }
        const flushed = 'flushed' in r ? r.flushed : 0;
        const pending = 'pending' in r ? r.pending : 0;
        const cutOff = 'cutOff' in r ? (r.cutOff ?? 0) : 0;
        const detached = await gone(mountpoint, 15_000);
        if (!detached) fail(`${mountpoint} is still mounted (busy? close the files open there).`);
        const cut = cutOff ? `${cutOff} open file handle(s) cut off, what was written to them written back; ` : '';
        out(`unmounted ${mountpoint}: ${cut}${flushed} write-back(s) flushed${pending ? `, ${pending} left in the journal for the next mount` : ''}`, { ok: true, flushed, pending, ...(cutOff ? { cutOff } : {}) });
      } catch (err) {
        if (!(err instanceof NoMountError) && !/did not answer/.test((err as Error).message)) fail((err as Error).message);
        if (!(await isMounted(mountpoint))) fail(`${mountpoint} is not mounted.`);
        if (!o.force) fail(`no running ghostfs mount answers for ${mountpoint} (dead mount?); use --force to detach it.`);
        const how = await forceDetach(mountpoint);
        if (how !== 'detached') fail(`could not detach ${mountpoint}.`);
        out(`detached dead mount ${mountpoint}`, { ok: true, forced: true });
      }
    });
}
