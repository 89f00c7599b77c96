// `ghostfs status`: every running mount (or one), as people read it or as JSON.
import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { resolve } from 'node:path';
import { control } from '../admin/control-client.js';
import { allSockets, socketFor } from '../admin/registry.js';
import type { MountStatus } from '../admin/protocol.js';
import { defaultCacheDir, describePending, env, fail } from './common.js';

const mib = (b: number): string => `${(b / 1048576).toFixed(1)} MiB`;

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${s % 60}s` : `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

function describe(s: MountStatus): string {
  const lines = [
    `${s.mountpoint}  (workspace ${s.workspace}, driver ${s.driver}, pid ${s.pid}, up ${duration(s.uptimeMs)}${s.offline ? ', OFFLINE' : ''})`,
    ...s.endpoints.map((e, i) => `  ${i === 0 ? 'node   ' : 'replica'} ${e.endpoint}  ${e.healthy ? 'healthy' : `unreachable (${e.failures} failures: ${e.lastError ?? ''})`}${e.corruptChunks ? `, ${e.corruptChunks} corrupt chunks refused` : ''}${e.renewals ? `, connection replaced ${e.renewals}× (calls missed their deadline)` : ''}${describeChunkPath(e.chunks)}`),
    `  cache   ${s.cache.chunks} chunks, ${mib(s.cache.bytes)} in ${s.cacheDir}; ${s.cache.knownEntries} entries known; hit rate ${(s.cache.hitRate * 100).toFixed(1)}%`,
    ...(s.cache.unwrittenEntries ? [`          ${s.cache.unwrittenEntries} entries not yet on disk: the cache's database refused them (its filesystem was full); they are written once it takes writes`] : []),
    `  fetched ${s.fetched.chunks} chunks, ${mib(s.fetched.bytes)}${s.fetched.failovers ? `, ${s.fetched.failovers} failovers` : ''}`,
    `  writes  ${s.writeBack.pending} pending, ${s.writeBack.committed} written back, ${s.writeBack.conflicts} conflicts, ${s.writeBack.failed} refused; uploaded ${s.writeBack.uploadedChunks} chunks (${mib(s.writeBack.uploadedBytes)})`,
    ...describePending(s.pendingWrites, s.writeBack.pending),
    ...(s.owners ? [`  owners  the node's user and group ${s.owners.node.uid}:${s.owners.node.gid} are shown as ${s.owners.shownAs.uid}:${s.owners.shownAs.gid} here, and the other way round (--idmap user)`] : []),
    `  feed    ${s.changeFeed.connected ? 'connected' : 'disconnected'}, generation ${s.changeFeed.generation}, ${s.changeFeed.applied} changes applied; ${s.openFiles} open files${s.openFilesInMemoryBytes ? ` (${mib(s.openFilesInMemoryBytes)} of new content in memory)` : ''}`,
    // Older mounts do not report it.
    ...(s.memory ? [describeMemory(s.memory)] : []),
  ];
  return lines.join('\n');
}

function describeChunkPath(c: MountStatus['endpoints'][number]['chunks']): string {
  if (!c || c.over === 'unknown') return '';
  return c.over === 'lane' ? '; chunks over the bulk lane' : `; chunks over gRPC (${c.why ?? 'no lane'})`;
}

/** Node's buffers are malloc'd, so the allocator's "in use" includes them. */
function describeMemory(m: MountStatus['memory']): string {
  const native = m.mallocInUseBytes === undefined ? 'the rest native' : `allocator ${mib(m.mallocInUseBytes)} in use (buffers included), ${mib(m.mallocFreeBytes ?? 0)} free within its heaps`;
  return `  memory  ${mib(m.rssBytes)} resident: JS heap ${mib(m.heapUsedBytes)}, buffers ${mib(m.buffersBytes)}; ${native}`;
}

export function statusCommand(): Command {
  return new Command('status')
    .description('show running mounts: nodes, cache, write-backs, change feed')
    .argument('[mountpoint]')
    .option('--json', 'print JSON')
    .addOption(env(new Option('--cache-dir <dir>', 'with no mount running: what this cache dir holds').default(defaultCacheDir()), 'CACHE_DIR'))
    .action(async (mp: string | undefined, o) => {
      const sockets = mp ? [socketFor(resolve(mp))] : await allSockets();
      const found: MountStatus[] = [];
      for (const sock of sockets) {
        try {
          const r = await control(sock, { op: 'status' }, 10_000);
          if (r.ok && 'status' in r) found.push(r.status);
        } catch {
          if (mp) fail(`no running ghostfs mount answers for ${resolve(mp)}.`);
        }
      }
      if (!mp && found.length === 0 && existsSync(join(o.cacheDir, 'db'))) {
        const { summarize } = await import('../admin/cache-admin.js'); // the cache's database: loaded only where it is opened
        const c = await summarize(resolve(o.cacheDir)).catch((err: Error) => fail(err.message));
        if (o.json) process.stdout.write(JSON.stringify({ mounts: [], cache: c }, null, 2) + '\n');
        else {
          process.stdout.write(`no ghostfs mounts running; ${c.cacheDir} holds ${c.chunks} chunks (${mib(c.chunkBytes)})\n`);
          for (const w of c.workspaces) process.stdout.write(`  workspace ${w.id}: ${w.entries} entries${w.pendingWriteBacks ? `, ${w.pendingWriteBacks} write-backs pending (replayed by the next mount)` : ''}\n`);
        }
        return;
      }
      if (o.json) {
        process.stdout.write(JSON.stringify(mp ? found[0] : found, null, 2) + '\n');
        return;
      }
      process.stdout.write(found.length ? found.map(describe).join('\n\n') + '\n' : 'no ghostfs mounts running\n');
    });
}
