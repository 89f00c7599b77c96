// The mesh node agent: opens its state, indexes every workspace (re-hashing
// only what changed since the last run), then serves them over gRPC and
// keeps the index current (inotify, plus a periodic reconcile).
import * as grpc from '@grpc/grpc-js';
import { readFile, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { HashPool } from '../content/hash-pool.js';
import type { ChunkingParams } from '../content/chunker.js';
import { Store } from '../store/db.js';
import { FsError } from '../wire/errors.js';
import { CHANNEL_OPTIONS, FLOW_CONTROL_WINDOW, wire } from '../wire/proto.js';
import { widenConnectionWindow, widenStreamWindow } from '../wire/server-window.js';
import { framedOr } from '../wire/chunk-frame.js';
import { log } from '../log.js';
import { serveBulk } from './bulk-server.js';
import { ChunkSource } from './chunk-source.js';
import { FrontDoor, type FrontDoorOptions } from './front-door.js';
import { makeService } from './service.js';
import { TreeWatcher } from './watcher.js';
import { finishRelinks } from './relink.js';
import { WorkspaceIndex, type ScanStats } from './workspace-index.js';

export interface NodeConfig {
  workspaces: { id: string; root: string }[];
  listen: { host: string; port: number };
  stateDir: string;
  nodeId: string;
  token?: string;
  tls?: { cert: string; key: string; ca?: string };
  chunking: ChunkingParams;
  hashConcurrency: number;
  readSize: number;
  statConcurrency: number;
  inlineMetadata: boolean;
  tempTtlMs: number;
  reconcileIntervalMs: number;
  watch: boolean;
  /** How long changes noticed on disk are gathered before the index takes them (default 30 ms). */
  watchDelayMs?: number;
  /** How often the node pings each client; one that does not answer is dropped (default 30 s; 0: never). */
  clientKeepaliveMs?: number;
  /** Change events a Watch subscriber may leave unread before it is cut off (default 10,000). */
  feedMaxUnread?: number;
  /** Keep the set-user-ID and set-group-ID bits clients ask for on regular files (default: dropped; set-id.ts). */
  allowSetId?: boolean;
  /** Make device nodes clients ask for (default: refused with EPERM; mutations.ts). */
  allowDevices?: boolean;
  onProgress?: (workspace: string, s: ScanStats) => void;
}

export interface Workspace {
  id: string;
  root: string;
  index: WorkspaceIndex;
  chunks: ChunkSource;
  watcher?: TreeWatcher;
  params: ChunkingParams;
}

export class NodeAgent {
  private readonly workspaces = new Map<string, Workspace>();
  private server: grpc.Server | undefined;
  private door: FrontDoor | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reconciling = false;
  /** The port actually bound (useful with port 0). */
  port = 0;

  private constructor(
    readonly config: NodeConfig,
    private readonly store: Store,
    private readonly pool: HashPool,
  ) {}

  static async start(config: NodeConfig): Promise<NodeAgent> {
    // Every root first: a mistyped --root fails before the state directory is made or its database locked.
    const roots: [string, string][] = [];
    for (const w of config.workspaces) roots.push([w.id, await usableRoot(w.id, w.root)]);
    const store = await Store.open(join(config.stateDir, 'db'));
    const pool = new HashPool(config.hashConcurrency, config.chunking, config.readSize);
    const agent = new NodeAgent(config, store, pool);
    try {
      for (const [id, root] of roots) await agent.addWorkspace(id, root);
      await agent.listen();
    } catch (err) {
      await agent.stop();
      throw err;
    }
    agent.timer = setInterval(() => void agent.reconcileAll(), config.reconcileIntervalMs);
    agent.timer.unref();
    return agent;
  }

  /** `root`: its real path (usableRoot). */
  private async addWorkspace(id: string, root: string): Promise<void> {
    const stateReal = await realpath(this.config.stateDir);
    const index = new WorkspaceIndex(id, root, this.store, this.pool, {
      statConcurrency: this.config.statConcurrency,
      inlineMetadata: this.config.inlineMetadata,
      tempTtlMs: this.config.tempTtlMs,
      logRetention: 100_000,
      excluded: [stateReal],
      allowSetId: this.config.allowSetId,
      allowDevices: this.config.allowDevices,
      onProgress: this.config.onProgress ? (s) => this.config.onProgress!(id, s) : undefined,
    });
    const loadStart = performance.now();
    await index.load();
    // Before anything can change the workspace, and before the scan records what is there.
    await finishRelinks(index);
    const loadMs = Math.round(performance.now() - loadStart);
    const chunks = new ChunkSource(index, join(this.config.stateDir, 'staging', encodeURIComponent(id)));
    await chunks.init();
    await chunks.collect(this.config.tempTtlMs);
    // Watching before the scan: a change made after the scan looked at a path has an event.
    const watcher = this.config.watch ? new TreeWatcher(index, this.config.watchDelayMs) : undefined;
    watcher?.start();
    let s: ScanStats;
    try {
      s = await index.scan();
    } catch (err) {
      watcher?.close();
      throw err;
    }
    log.info(
      {
        workspace: id,
        root,
        files: s.files,
        dirs: s.dirs,
        hashedFiles: s.hashedFiles,
        hashedBytes: s.hashedBytes,
        removed: s.removed,
        tempsRemoved: s.tempsRemoved,
        generation: index.generation,
        loadMs,
        scanMs: s.durationMs,
        durationMs: loadMs + s.durationMs,
      },
      'workspace indexed',
    );
    const ws: Workspace = { id, root, index, chunks, params: this.config.chunking, watcher };
    this.workspaces.set(id, ws);
  }

  workspace(id: string): Workspace {
    const ws = this.workspaces.get(id) ?? (id === '' && this.workspaces.size === 1 ? [...this.workspaces.values()][0] : undefined);
    if (!ws) throw new FsError('ENOENT', `this node serves no workspace "${id}" (it serves: ${[...this.workspaces.keys()].join(', ')})`);
    return ws;
  }

  private async listen(): Promise<void> {
    const { host, port } = this.config.listen;
    let tls: FrontDoorOptions['tls'];
    if (this.config.tls) {
      const { cert, key, ca } = this.config.tls;
      const [certB, keyB, caB] = await Promise.all([readFile(cert), readFile(key), ca ? readFile(ca) : Promise.resolve(undefined)]);
      // With a CA, clients must present a certificate it signed (mutual TLS).
      tls = { cert: certB, key: keyB, ca: caB };
    }
    // Clients that vanished without a word (a crashed host, a cut link, a
    // stopped process) are found by pings and dropped, and their change-feed
    // subscriptions with them: otherwise the node keeps buffering events for
    // a feed nobody reads.
    const keepaliveMs = this.config.clientKeepaliveMs ?? 30_000;
    const server = new grpc.Server({
      ...CHANNEL_OPTIONS,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 5000,
      ...(keepaliveMs > 0 ? { 'grpc.keepalive_time_ms': keepaliveMs, 'grpc.keepalive_timeout_ms': Math.min(10_000, keepaliveMs) } : {}),
    });
    widenStreamWindow(server, FLOW_CONTROL_WINDOW);
    const service = { ...wire().ghostfs.v1.Node.service };
    service.ReadChunks = { ...service.ReadChunks, responseSerialize: framedOr(service.ReadChunks.responseSerialize as (v: unknown) => Buffer) };
    const ctx = { nodeId: this.config.nodeId, token: this.config.token, workspace: (id: string) => this.workspace(id), feedMaxUnread: this.config.feedMaxUnread ?? 10_000 };
    const { handlers, laneCall, laneUpload } = makeService(ctx);
    server.addService(service, handlers);
    // gRPC and the bulk lane share the port (front-door.ts).
    const door = new FrontDoor({ tls, grpc: server, bulk: (socket) => serveBulk(socket, { ...ctx, call: laneCall, upload: laneUpload }) });
    widenConnectionWindow(server, FLOW_CONTROL_WINDOW);
    this.port = await door.listen(host, port).catch((err: Error) => {
      void door.close();
      throw new Error(`cannot listen on ${host}:${port}: ${err.message}`);
    });
    this.server = server;
    this.door = door;
    log.info({ listen: `${host}:${this.port}`, tls: !!this.config.tls, token: !!this.config.token, workspaces: [...this.workspaces.keys()] }, 'node serving');
  }

  /** Safety net behind inotify: walk everything, prune the change log, drop stale staged chunks. */
  async reconcileAll(): Promise<void> {
    if (this.reconciling) return;
    this.reconciling = true;
    try {
      for (const ws of this.workspaces.values()) {
        const s = await ws.index.reconcile('');
        if (s.hashedFiles || s.removed || s.tempsRemoved) log.info({ workspace: ws.id, ...s }, 'reconciled workspace');
        await ws.index.pruneLog();
        await ws.chunks.collect(this.config.tempTtlMs);
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'reconcile failed');
    } finally {
      this.reconciling = false;
    }
  }

  /** Figures for metrics: hashing queue and totals. */
  hashing(): { queued: number; files: number; bytes: number } {
    return { queued: this.pool.queued, files: this.pool.hashedFiles, bytes: this.pool.hashedBytes };
  }

  /** Waits until changes already noticed by the watchers are in the index (tests, benchmarks). */
  async settled(): Promise<void> {
    for (const ws of this.workspaces.values()) await ws.watcher?.settled();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    for (const ws of this.workspaces.values()) ws.watcher?.close();
    if (this.server) {
      const s = this.server;
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          s.forceShutdown();
          resolve();
        }, 2000);
        s.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    await this.door?.close();
    await this.pool.close();
    for (const ws of this.workspaces.values()) {
      await ws.chunks.close();
      await ws.index.writeOut();
    }
    await this.store.close();
  }
}

/** A workspace root's real path, or an error saying why it cannot serve. */
async function usableRoot(id: string, rootGiven: string): Promise<string> {
  try {
    const root = await realpath(rootGiven);
    if (!(await stat(root)).isDirectory()) throw new Error('not a directory');
    return root;
  } catch (err) {
    throw new Error(`workspace "${id}": root ${rootGiven} is not a usable directory (${(err as Error).message})`);
  }
}
