// `ghostfs purge`, `ghostfs gc`, `ghostfs warmup`: cache upkeep. With a live
// mount on the cache dir they go through its control socket (the mount stays
// consistent); otherwise they work on the cache dir directly. Nothing here
// ever deletes data that is not yet written back.
import { Command, Option } from 'commander';
import { readFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import cliProgress from 'cli-progress';
import { control, NoMountError } from '../admin/control-client.js';
import { socketFor, allSockets } from '../admin/registry.js';
import type { ControlReply, ControlRequest } from '../admin/protocol.js';
import { parseDuration, parseSize } from '../config/parse.js';
import { defaultCacheDir, env, fail } from './common.js';

const mib = (b: number): string => `${(b / 1048576).toFixed(1)} MiB`;

/** The live mount using this cache dir, if one answers. */
async function liveMount(cacheDir: string): Promise<string | undefined> {
  const mp = await readFile(join(cacheDir, 'active-mount'), 'utf8').catch(() => undefined);
  if (!mp) return undefined;
  try {
    const r = await control(socketFor(mp), { op: 'status' }, 5_000);
    return r.ok && 'status' in r && r.status.cacheDir === cacheDir ? mp : undefined;
  } catch (err) {
    if (err instanceof NoMountError) return undefined;
    throw err;
  }
}

async function ask(mp: string, req: ControlRequest): Promise<ControlReply> {
  const r = await control(socketFor(mp), req, 30 * 60_000);
  if (!r.ok) fail(r.error);
  return r;
}

async function confirm(question: string, yes: boolean): Promise<void> {
  if (yes) return;
  if (!process.stdin.isTTY) fail('refusing without --yes (no terminal to ask on).');
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  const a = await rl.question(`${question} [y/N] `);
  rl.close();
  if (!/^y(es)?$/i.test(a.trim())) fail('nothing done.');
}

const cacheDirOption = () => env(new Option('--cache-dir <dir>', 'the cache dir').default(defaultCacheDir()), 'CACHE_DIR');

export function purgeCommand(): Command {
  return new Command('purge')
    .description('remove cached chunks (and metadata if asked); never data not yet written back')
    .addOption(cacheDirOption())
    .option('--workspace <id>', 'with --metadata: only this workspace')
    .option('--all', 'with --metadata: every workspace')
    .option('--metadata', 'also forget cached metadata (entries, manifests, feed position)')
    .option('--yes', 'do not ask')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const cacheDir = resolve(o.cacheDir);
      if (o.metadata && !o.workspace && !o.all) fail('--metadata needs --workspace ID or --all.');
      const mp = await liveMount(cacheDir);
      if (mp) {
        if (o.metadata) fail(`a mount at ${mp} is using ${cacheDir}: unmount it to purge metadata (chunks can be purged while it runs).`);
        await confirm(`Remove the cached chunks of the mount at ${mp}?`, !!o.yes);
        const r = (await ask(mp, { op: 'purge' })) as { chunks: number; bytes: number };
        process.stdout.write(o.json ? JSON.stringify({ cacheDir, mountpoint: mp, ...r }) + '\n' : `purged ${r.chunks} chunks (${mib(r.bytes)}) through the mount at ${mp}\n`);
        return;
      }
      await confirm(`Remove every cached chunk in ${cacheDir}${o.metadata ? ` and the metadata of ${o.workspace ?? 'every workspace'}` : ''}?`, !!o.yes);
      const bar = process.stderr.isTTY ? new cliProgress.SingleBar({ format: 'purging {bar} {value}/{total} chunks', stream: process.stderr }, cliProgress.Presets.shades_classic) : undefined;
      let started = false;
      const { purge } = await import('../admin/cache-admin.js'); // the cache's database: loaded only where it is opened
      const r = await purge(cacheDir, {
        metadata: !!o.metadata,
        workspace: o.workspace,
        onProgress: (done, total) => {
          if (!bar) return;
          if (!started) bar.start(total, 0);
          started = true;
          bar.update(done);
        },
      }).catch((err: Error) => fail(err.message));
      bar?.stop();
      if (o.json) process.stdout.write(JSON.stringify({ cacheDir, ...r }) + '\n');
      else {
        process.stdout.write(`purged ${r.chunks} chunks (${mib(r.bytes)}) from ${cacheDir}`);
        if (r.workspacesCleared.length) process.stdout.write(`; metadata of ${r.workspacesCleared.join(', ')} cleared`);
        if (r.keptPending) process.stdout.write(`; ${r.keptPending} pending write-back(s) kept`);
        process.stdout.write('\n');
      }
    });
}

export function gcCommand(): Command {
  return new Command('gc')
    .description('evict least recently used chunks to a size, drop inactive workspaces, remove stale temp files')
    .addOption(cacheDirOption())
    .addOption(new Option('--max-size <size>', 'evict down to this many bytes of chunks').argParser(parseSize))
    .option('--keep-workspaces <ids>', 'comma-separated: the active workspaces (others are dropped)')
    .addOption(new Option('--temp-ttl <duration>', 'age after which orphaned temp files go').argParser(parseDuration).default(parseDuration('1h'), '1h'))
    .option('--json', 'print JSON')
    .action(async (o) => {
      const cacheDir = resolve(o.cacheDir);
      const mp = await liveMount(cacheDir);
      if (mp) {
        if (o.keepWorkspaces) fail(`a mount at ${mp} is using ${cacheDir}: unmount it to drop workspaces (eviction works while it runs).`);
        const r = o.maxSize !== undefined ? ((await ask(mp, { op: 'gc', maxBytes: o.maxSize })) as { chunks: number; bytes: number }) : { chunks: 0, bytes: 0 };
        process.stdout.write(o.json ? JSON.stringify({ cacheDir, mountpoint: mp, evictedChunks: r.chunks, evictedBytes: r.bytes }) + '\n' : `evicted ${r.chunks} chunks (${mib(r.bytes)}) through the mount at ${mp}\n`);
        return;
      }
      const keep = o.keepWorkspaces ? String(o.keepWorkspaces).split(',').filter(Boolean) : undefined;
      const { gc } = await import('../admin/cache-admin.js');
      const r = await gc(cacheDir, { maxBytes: o.maxSize, keepWorkspaces: keep, tempTtlMs: o.tempTtl }).catch((err: Error) => fail(err.message));
      process.stdout.write(
        o.json
          ? JSON.stringify({ cacheDir, ...r }) + '\n'
          : `gc ${cacheDir}: evicted ${r.evictedChunks} chunks (${mib(r.evictedBytes)}), removed workspaces [${r.removedWorkspaces.join(', ')}], ${r.staleFiles} stale temp files\n`,
      );
    });
}

export function warmupCommand(): Command {
  return new Command('warmup')
    .description('prefetch files or subtrees of a running mount into its cache')
    .argument('<path...>', 'paths inside a mount')
    .option('--json', 'print JSON')
    .action(async (paths: string[], o) => {
      const abs = paths.map((p) => resolve(p));
      // The mount holding these paths: the longest running mountpoint above them.
      const mounts: string[] = [];
      for (const sock of await allSockets()) {
        const r = await control(sock, { op: 'status' }, 5_000).catch(() => undefined);
        if (r?.ok && 'status' in r) mounts.push(r.status.mountpoint);
      }
      const mp = mounts.filter((m) => abs.every((p) => p === m || p.startsWith(m + '/'))).sort((a, b) => b.length - a.length)[0];
      if (!mp) fail(`no running ghostfs mount holds ${abs.join(', ')}.`);
      const bar = process.stderr.isTTY ? new cliProgress.SingleBar({ format: 'warming up | {mb} MiB fetched', stream: process.stderr }, cliProgress.Presets.shades_classic) : undefined;
      let poll: NodeJS.Timeout | undefined;
      if (bar) {
        bar.start(0, 0, { mb: '0.0' });
        poll = setInterval(() => {
          void control(socketFor(mp), { op: 'status' }, 5_000).then((r) => r.ok && 'status' in r && bar.update(0, { mb: (r.status.fetched.bytes / 1048576).toFixed(1) }), () => undefined);
        }, 500);
      }
      const r = (await ask(mp, { op: 'warmup', paths: abs.map((p) => relative(mp, p)) })) as { files: number; bytes: number; fetchedBytes: number; ms: number };
      if (poll) clearInterval(poll);
      bar?.stop();
      const rate = r.ms ? r.fetchedBytes / 1048576 / (r.ms / 1000) : 0;
      process.stdout.write(
        o.json ? JSON.stringify({ mountpoint: mp, ...r }) + '\n' : `warmed up ${r.files} files (${mib(r.bytes)}), fetched ${mib(r.fetchedBytes)} in ${(r.ms / 1000).toFixed(1)} s (${rate.toFixed(0)} MiB/s)\n`,
      );
    });
}
