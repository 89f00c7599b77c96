// A running mount: the metadata and chunk caches, the mesh client, the VFS,
// the change feed and a kernel driver, started and stopped in order.
import { randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import { ChunkStore } from '../cache/chunk-store.js';
import { LocalCopies } from '../cache/local-copies.js';
import { MetaStore } from '../cache/meta-store.js';
import { MeshClient } from '../mesh/mesh-client.js';
import { Store } from '../store/db.js';
import { log } from '../log.js';
import { ChangeFeed } from './change-feed.js';
import { ChunkReader } from './chunk-reader.js';
import { Vfs } from './vfs.js';
import { localInosIn32Bits } from './local-ino.js';
import { dirtyMemoryBytes } from './dirty-file.js';
import type { Driver } from './drivers/driver.js';
import { FuseNativeDriver } from './drivers/fuse-native.js';
import { NativeDriver } from './drivers/native.js';
import { mallocStats } from '../native/addon.js';
import { isMounted } from './mount-table.js';
import type { MountStatus } from '../admin/protocol.js';
import { WriteBack, type PendingRecord } from './write-back.js';
import { Journal } from '../cache/journal.js';
import { defaultIdMap, OwnerMap, processIds, validIds } from './owner-map.js';
import { HashPool } from '../content/hash-pool.js';
import { DEFAULT_CHUNKING } from '../content/chunker.js';
import { ALLOW_OTHER_DRIVER, type MountConfig } from './mount-config.js';

/** Share of the chunk cache's quota that whole local copies may take on top of it (they repeat chunks' bytes). */
const COPIES_SHARE = 0.25;

export class Mount {
  private driver: Driver | undefined;
  /** Whole local copies the native driver passes big files through to (none with fuse-native or --passthrough off). */
  private copies: LocalCopies | undefined;
  private gonePoll: NodeJS.Timeout | undefined;
  /** The kernel mount is already gone: stopping must not try to unmount it. */
  private driverGone = false;
  offline = false;
  readonly startedAt = Date.now();

  private constructor(
    readonly config: MountConfig,
    private readonly store: Store,
    readonly meta: MetaStore,
    readonly chunkStore: ChunkStore,
    readonly mesh: MeshClient,
    readonly vfs: Vfs,
    readonly feed: ChangeFeed,
    readonly writeBack: WriteBack,
    private readonly hasher: HashPool,
  ) {}

  static async start(config: MountConfig): Promise<Mount> {
    if (config.allowOther && config.driver !== 'native') throw new Error(ALLOW_OTHER_DRIVER);
    if (config.driver !== 'native') localInosIn32Bits();
    const store = await openCache(config.cacheDir);
    const meta = new MetaStore(store, config.workspace);
    const chunkStore = new ChunkStore(join(config.cacheDir, 'chunks'), { quotaBytes: config.cacheQuotaBytes, minFreeBytes: config.minFreeBytes });
    // This run's commits are named, so the node leaves them out of its feed to this mount (their replies say it all).
    const writer = randomUUID();
    const mesh = new MeshClient(config.endpoints, config.workspace, { token: config.token, tls: config.tls, deadlineMs: config.deadlineMs, clientId: config.clientId, writer, bulkLane: config.bulkLane });
    const hashers: HashPool[] = [];
    let feed: ChangeFeed | undefined;
    try {
      await meta.load();
      await chunkStore.init();
      const hasher = new HashPool(1, DEFAULT_CHUNKING, 4 * 1024 * 1024);
      hashers.push(hasher);
      const writeBack = new WriteBack(meta, mesh, new Journal(store, config.workspace), chunkStore, hasher, join(config.cacheDir, 'dirty', config.workspace), {
        clientId: config.clientId,
        deadlineMs: config.deadlineMs,
      });
      const pending = await writeBack.init();
      const vfs = new Vfs(meta, mesh, new ChunkReader(chunkStore, mesh), writeBack, {
        readaheadChunks: config.readaheadChunks,
        wholeFileBytes: 4 * 1024 * 1024,
        asyncWriteBack: config.writeBack === 'async',
      });
      const changes = new ChangeFeed(meta, mesh, vfs, { busy: (path) => writeBack.busy(path), underWay: () => writeBack.underWay(), pending: (path) => writeBack.pendingFor(path) !== undefined });
      feed = changes;
      // A conflict keeps the node's version at the path: show it (the feed held it back while ours was pending).
      writeBack.onConflict((path) => void changes.refresh(path).catch(() => undefined));
      const m = new Mount(config, store, meta, chunkStore, mesh, vfs, feed, writeBack, hasher);
      await m.connect(pending.length > 0);
      // Owners as the node says it runs, or said last time; before pending files are shown, as theirs.
      vfs.owners = OwnerMap.of(config.idmap ?? defaultIdMap(), processIds(), meta.nodeOwner);
      await vfs.showPending(pending);
      if (config.allowOther && meta.nodeOwner && meta.nodeOwner.uid !== 0) {
        log.warn({ nodeOwner: meta.nodeOwner }, "the node does not run as root: what other users make through this shared mount will be the node's user's, not theirs");
      }
      feed.start();
      const driverOpts = {
        mountpoint: resolve(config.mountpoint),
        attrTimeoutS: config.attrTimeoutS,
        opTimeoutMs: Math.max(60_000, 4 * config.deadlineMs),
        allowOther: config.allowOther,
        debug: config.debug,
      };
      let copies: LocalCopies | undefined;
      if (config.driver === 'native' && config.passthrough !== false) {
        copies = new LocalCopies(join(config.cacheDir, 'copies'), chunkStore, { maxBytes: Number.isFinite(config.cacheQuotaBytes) ? config.cacheQuotaBytes * COPIES_SHARE : 8 * 2 ** 30, minFreeBytes: config.minFreeBytes });
        await copies.init();
      }
      const driver: Driver = config.driver === 'native' ? new NativeDriver(vfs, { ...driverOpts, chunkDir: chunkStore.dir, copies }) : new FuseNativeDriver(vfs, driverOpts);
      m.driver = driver;
      m.copies = copies;
      if (driver.invalidate) {
        feed.onChange((path, what) => driver.invalidate!([{ path, what }]));
        vfs.onShownChanged((changes) => driver.invalidate!(changes));
        // The kernel may still hold what it was told while the file was written (the feed does not bring
        // this mount its own commits); a conflict copy is a new name in its directory's listing.
        writeBack.onLanded((path, what) => driver.invalidate!([{ path, what }]));
      }
      await driver.mount();
      log.info(
        { mountpoint: resolve(config.mountpoint), endpoints: config.endpoints, workspace: config.workspace, cacheDir: config.cacheDir, driver: m.driver.name, offline: m.offline, knownEntries: meta.size, cachedChunks: chunkStore.stats().chunks },
        'mounted',
      );
      return m;
    } catch (err) {
      // The feed first: it would otherwise subscribe again to the closed mesh and write to the closed store.
      await feed?.stop().catch(() => undefined);
      mesh.close();
      for (const h of hashers) await h.close();
      await chunkStore.close();
      await meta.close();
      await store.close();
      throw err;
    }
  }

  /** First contact: a node must answer, unless the cache (or writes still pending) can serve the tree offline. */
  private async connect(pending: boolean): Promise<void> {
    try {
      const h = await this.mesh.handshake();
      if (h.hashAlgorithm !== 'blake3') throw new Error(`node ${h.nodeId} hashes with ${h.hashAlgorithm}; this mount speaks blake3`);
      await this.meta.setNodeOwner(validIds(h.nodeOwner));
      if (this.meta.size === 0) await this.vfs.list('');
    } catch (err) {
      if (this.meta.size === 0 && !pending) {
        throw new Error(`no node of workspace "${this.config.workspace}" answered (${this.config.endpoints.join(', ')}) and nothing of it is cached: ${(err as Error).message}`);
      }
      this.offline = true;
      log.warn({ endpoints: this.config.endpoints, knownEntries: this.meta.size, err: (err as Error).message }, 'no node reachable: serving the cached tree; what is not cached fails with EHOSTDOWN');
    }
  }

  /**
   * Calls `fn` once when the mount disappears from under the process (a
   * plain `fusermount -u` or `umount`), so the process can close its
   * databases and exit instead of lingering.
   */
  onUnmountedExternally(fn: () => void): void {
    const mp = resolve(this.config.mountpoint);
    this.gonePoll = setInterval(() => {
      void isMounted(mp).then((yes) => {
        if (!yes && this.gonePoll) {
          clearInterval(this.gonePoll);
          this.gonePoll = undefined;
          this.driverGone = true;
          fn();
        }
      });
    }, 1000);
    this.gonePoll.unref();
  }

  status(): MountStatus {
    const cs = this.chunkStore.stats();
    const rs = this.vfs.chunks.stats;
    const ws = this.writeBack.stats;
    const ms = this.mesh.stats;
    const driverStats = this.driver?.stats?.();
    const swapped = this.vfs.owners.swapped;
    // Reads the native driver served from chunk files without JS are cache hits too.
    const hits = rs.hits + (typeof driverStats?.fastReads === 'number' ? driverStats.fastReads : 0);
    return {
      mountpoint: resolve(this.config.mountpoint),
      pid: process.pid,
      workspace: this.config.workspace,
      driver: this.driverName,
      cacheDir: this.config.cacheDir,
      uptimeMs: Date.now() - this.startedAt,
      offline: !this.mesh.reachable,
      endpoints: this.mesh.health(),
      cache: { chunks: cs.chunks, bytes: cs.bytes, quotaBytes: this.config.cacheQuotaBytes, evictedChunks: cs.evictedChunks, evictedBytes: cs.evictedBytes, hits, misses: rs.misses, hitRate: hits + rs.misses ? hits / (hits + rs.misses) : 0, knownEntries: this.meta.size, unwrittenEntries: this.meta.unwritten },
      fetched: { chunks: ms.chunksFetched, bytes: ms.bytesFetched, failovers: ms.failovers, corruptChunks: ms.corruptChunks },
      writeBack: { pending: this.writeBack.pendingCount, ...ws },
      pendingWrites: this.writeBack.pendingRecords(),
      changeFeed: { connected: this.feed.connected, generation: this.feed.position.generation, applied: this.feed.applied },
      openFiles: this.vfs.openFiles,
      owners: swapped && { node: swapped.node, shownAs: swapped.local },
      openFilesInMemoryBytes: dirtyMemoryBytes(),
      memory: memoryNow(),
      driverStats,
    };
  }

  /** Tries to write back everything pending until the deadline; returns what was committed and what is left. */
  async flush(deadlineMs: number): Promise<{ flushed: number; pending: number; pendingWrites?: PendingRecord[] }> {
    const before = this.writeBack.stats.committed + this.writeBack.stats.conflicts;
    const end = Date.now() + deadlineMs;
    while (this.writeBack.pendingCount > 0 && Date.now() < end) {
      await this.writeBack.drain();
      if (this.writeBack.pendingCount > 0) await new Promise((r) => setTimeout(r, Math.min(500, Math.max(0, end - Date.now()))));
    }
    const flushed = this.writeBack.stats.committed + this.writeBack.stats.conflicts - before;
    if (this.writeBack.pendingCount === 0) return { flushed, pending: 0 };
    // What no node took is on this disk at least (asynchronous write-back syncs its journal lazily).
    await this.writeBack.syncJournal().catch((err) => log.warn({ err: (err as Error).message }, 'cannot sync the write-back journal to disk'));
    const pendingWrites = this.writeBack.pendingRecords();
    log.warn({ pending: this.writeBack.pendingCount, oldest: pendingWrites }, 'write-backs still pending after the flush deadline');
    return { flushed, pending: this.writeBack.pendingCount, pendingWrites };
  }

  /** Drops every cached chunk and local copy not in use (readers fetch what they still need). */
  async purgeChunks(): Promise<{ chunks: number; bytes: number }> {
    const before = this.chunkStore.stats();
    await this.chunkStore.evict(Infinity, 'purge');
    const after = this.chunkStore.stats();
    const copies = (await this.copies?.purge())?.bytes ?? 0;
    return { chunks: before.chunks - after.chunks, bytes: before.bytes - after.bytes + copies };
  }

  async gcTo(maxBytes: number): Promise<{ chunks: number; bytes: number }> {
    const before = this.chunkStore.stats();
    if (before.bytes > maxBytes) await this.chunkStore.evict(before.bytes - maxBytes, 'gc --max-size');
    const after = this.chunkStore.stats();
    return { chunks: before.chunks - after.chunks, bytes: before.bytes - after.bytes };
  }

  async warmup(paths: string[]): Promise<{ files: number; bytes: number; fetchedBytes: number; ms: number }> {
    const started = performance.now();
    const fetchedBefore = this.mesh.stats.bytesFetched;
    const total = { files: 0, bytes: 0 };
    for (const p of paths) await this.vfs.warm(p, total);
    const r = { ...total, fetchedBytes: this.mesh.stats.bytesFetched - fetchedBefore, ms: Math.round(performance.now() - started) };
    log.info(r, 'warmed up');
    return r;
  }

  get driverName(): string {
    return this.driver?.name ?? this.config.driver;
  }

  /**
   * Cuts off processes that have files open on the mount (`ghostfs unmount
   * --force`): the kernel mount goes (its connection ends once they let go,
   * or after the driver's grace period), and what was written to those
   * files is written back as their close would have. Returns the count of
   * handles that were open.
   */
  async cutOff(): Promise<number> {
    await this.driver?.unmount();
    return this.cutOffOpenFiles();
  }

  private async cutOffOpenFiles(): Promise<number> {
    const open = this.vfs.openFileList();
    const n = await this.vfs.cutOff();
    if (n) log.warn({ handles: n, files: open.slice(0, 20) }, 'files were open when the mount went: their processes are cut off, and what was written to them is written back');
    return n;
  }

  async stop(): Promise<void> {
    if (this.gonePoll) clearInterval(this.gonePoll);
    // Each step of the way out is timed: an unmount that takes long says where it waited.
    const step = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      const t0 = performance.now();
      try {
        return await fn();
      } finally {
        const ms = Math.round(performance.now() - t0);
        if (ms >= 1000) log.warn({ step: what, ms }, 'unmount step was slow');
      }
    };
    try {
      // Also when the mount was taken away from outside: a lazy unmount leaves the connection to files still open.
      await step('detach the kernel mount', async () => this.driver?.unmount().catch((err: Error) => {
        if (!this.driverGone) throw err;
      }));
    } finally {
      await step('write back what files left open had', () => this.cutOffOpenFiles());
      // Whatever could not be written back stays journaled for the next mount.
      const left = await step('write back what is pending', () => this.writeBack.drain().catch(() => this.writeBack.pendingCount));
      await step('finish write-back work', () => this.writeBack.stop());
      if (left) log.warn({ pending: left }, 'unmounted with write-backs pending; the next mount of this cache dir replays them');
      await step('stop the change feed', () => this.feed.stop().catch(() => undefined));
      await step('stop the hashing threads', () => this.hasher.close());
      this.mesh.close();
      await step('stop assembling a local copy', async () => this.copies?.close());
      await step('close the chunk cache', () => this.chunkStore.close());
      await step('write out refused metadata', () => this.meta.close());
      await step('close the metadata database', () => this.store.close());
      log.info({ mountpoint: resolve(this.config.mountpoint) }, 'unmounted');
    }
  }
}

/** How long a cache dir in use may take to be let go: a mount process that was just stopped, or killed, is still exiting. */
const CACHE_RELEASE_MS = 5000;

async function openCache(cacheDir: string): Promise<Store> {
  for (const end = Date.now() + CACHE_RELEASE_MS; ; await new Promise((r) => setTimeout(r, 200))) {
    try {
      return await Store.open(join(cacheDir, 'db'));
    } catch (err) {
      if (!/in use/.test((err as Error).message)) throw err;
      if (Date.now() >= end) throw new Error(`the cache dir ${cacheDir} is in use by another mount (give each mount its own --cache-dir)`);
    }
  }
}

function memoryNow(): MountStatus['memory'] {
  const m = process.memoryUsage();
  const a = mallocStats();
  return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, buffersBytes: m.arrayBuffers, ...(a && { mallocInUseBytes: a.inUseBytes, mallocFreeBytes: a.freeBytes }) };
}
