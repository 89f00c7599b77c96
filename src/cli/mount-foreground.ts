// The mount process of `ghostfs mount`: starts the mount, serves the
// control socket that status, unmount and the cache commands talk to, and
// unmounts cleanly on SIGINT/SIGTERM. Loaded by src/cli/mount.ts only when a
// mount is to run here, so that every other command starts without it.
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { liveGauge, liveTotals, serveMetrics } from '../admin/metrics.js';
import { Mount } from '../mount/mount.js';
import type { MountConfig } from '../mount/mount-config.js';
import { log } from '../log.js';
import { ControlServer } from '../admin/control-server.js';
import { socketFor } from '../admin/registry.js';
import { abortStaleMount } from '../admin/stale-mount.js';
import type { ControlReply, OpenFile } from '../admin/protocol.js';
import { tuneForChunkTraffic } from '../util/chunk-traffic.js';
import { fail } from './common.js';

function mountMetrics(m: Mount): void {
  liveTotals('ghostfs_cache', 'chunk cache: chunks and bytes held, read hits and misses', () => {
    const s = m.status().cache;
    return { chunks: s.chunks, bytes: s.bytes, hits: s.hits, misses: s.misses };
  });
  liveTotals('ghostfs_fetched', 'chunks and bytes fetched from nodes, failovers, corrupt chunks refused', () => {
    const s = m.status().fetched;
    return { chunks: s.chunks, bytes: s.bytes, failovers: s.failovers, corrupt: s.corruptChunks };
  });
  liveTotals('ghostfs_writeback', 'write-backs: committed, conflicts, refused, chunks and bytes uploaded', () => {
    const { pending: _pending, ...rest } = m.status().writeBack;
    return rest;
  });
  liveGauge('ghostfs_writeback_pending', 'write-backs journaled and not yet committed', () => m.writeBack.pendingCount);
}

export async function foreground(config: MountConfig, metrics?: { host: string; port: number }): Promise<void> {
  let stopping = false;
  /** `ghostfs unmount` is taking the mount away: it ends the process once it has answered. */
  let unmounting = false;
  let control: ControlServer | undefined;
  await abortStaleMount(config.mountpoint).catch((err: Error) => fail(err.message));
  tuneForChunkTraffic();
  const started = Mount.start(config);
  const shutdown = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'unmounting');
    void (async () => {
      const m = await started.catch(() => undefined);
      await control?.close();
      await m?.stop();
    })().then(
      () => process.exit(0),
      (err) => {
        log.error({ err: (err as Error).message }, 'unmount failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  try {
    const m = await started;
    m.onUnmountedExternally(() => {
      if (!unmounting) shutdown('unmounted externally');
    });
    if (metrics) {
      mountMetrics(m);
      await serveMetrics(metrics.host, metrics.port);
    }
    control = await ControlServer.start(socketFor(config.mountpoint), async (req): Promise<ControlReply> => {
      switch (req.op) {
        case 'status':
          return { ok: true, status: m.status() };
        case 'flush':
          return { ok: true, ...(await m.flush(req.deadlineMs)) };
        case 'unmount': {
          // Busy, as umount(8) says: a process has files open there. Forced, they are cut off, and what was written to them is written back.
          const open = await openFilesAfterReleases(m);
          if (open.length && !req.force) return busy(open);
          // From the cut-off on, the kernel mount going is this command's doing (see onUnmountedExternally).
          if (open.length) unmounting = true;
          try {
            const cutOff = open.length ? await m.cutOff() : 0;
            const r = await m.flush(req.deadlineMs);
            const openedMeanwhile = unmounting ? [] : m.vfs.openFileList(); // opened while the flush ran
            if (openedMeanwhile.length) return busy(openedMeanwhile);
            if (r.pending > 0 && !req.force) return { ok: false, error: `${r.pending} write-back(s) pending: no node took them within the deadline`, pending: r.pending, pendingWrites: r.pendingWrites };
            unmounting = true;
            return { ok: true, ...r, cutOff };
          } finally {
            // Answer first, then go: the reply must not race the process exit.
            if (unmounting) setImmediate(() => shutdown('ghostfs unmount'));
          }
        }
        case 'purge':
          return { ok: true, ...(await m.purgeChunks()) };
        case 'gc':
          return { ok: true, ...(await m.gcTo(req.maxBytes)) };
        case 'warmup':
          return { ok: true, ...(await m.warmup(req.paths)) };
      }
    });
    // purge and gc find the mount that holds a cache dir here.
    await writeFile(join(config.cacheDir, 'active-mount'), config.mountpoint);
    process.send?.({ mounted: true });
  } catch (err) {
    process.send?.({ error: (err as Error).message });
    fail((err as Error).message);
  } finally {
    if (process.connected) process.disconnect();
  }
}

/**
 * The files open on the mount, once releases on their way have come: the
 * kernel sends a file's release after its close() returned, so a program
 * that just exited may still be counted for a moment.
 */
async function openFilesAfterReleases(m: Mount): Promise<OpenFile[]> {
  for (const end = Date.now() + 2000; ; await sleep(50)) {
    const open = m.vfs.openFileList();
    if (open.length === 0 || Date.now() >= end) return open;
  }
}

function busy(open: OpenFile[]): ControlReply {
  const writing = open.filter((f) => f.writing).length;
  return { ok: false, error: `busy: ${open.length} file(s) open${writing ? `, ${writing} of them for writing` : ''}`, openFiles: open.slice(0, 20), openCount: open.length };
}
