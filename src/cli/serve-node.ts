// The node process of `ghostfs serve`: builds the node's settings, starts
// the node agent and stops it cleanly on SIGINT/SIGTERM. Loaded by
// src/cli/serve.ts only when a node is to run here, so that every other
// command starts without it.
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { DEFAULT_CHUNKING } from '../content/chunker.js';
import { PROFILES, type ProfileName } from '../config/profiles.js';
import { NodeAgent, type NodeConfig } from '../node/agent.js';
import type { ScanStats } from '../node/workspace-index.js';
import { log } from '../log.js';
import { fail, flagOn, noFlagOn, printConfig } from './common.js';
import { liveGauge, liveTotals, serveMetrics } from '../admin/metrics.js';
import { tuneForChunkTraffic } from '../util/chunk-traffic.js';

/** The options of `ghostfs serve` (src/cli/serve.ts), parsed. */
export interface ServeOptions {
  listen: { host: string; port: number };
  stateDir: string;
  nodeId: string;
  token?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  profile: ProfileName;
  hashConcurrency?: number;
  readSize?: number;
  tempTtl: number;
  reconcileInterval: number;
  clientKeepalive: number;
  feedMaxUnread: number;
  watchDelay: number;
  metrics?: { host: string; port: number };
  printConfig?: boolean;
}

/** Runs the node until a signal stops it; `workspaces` and the options were checked by the command. */
export async function serveNode(workspaces: NodeConfig['workspaces'], o: ServeOptions, cmd: Command): Promise<void> {
  const profile = PROFILES[o.profile];
  const config: NodeConfig = {
    workspaces,
    listen: o.listen,
    stateDir: o.stateDir,
    nodeId: o.nodeId,
    token: o.token,
    tls: o.tlsCert ? { cert: o.tlsCert, key: o.tlsKey!, ca: o.tlsCa } : undefined, // (the command refuses a certificate without its key)
    chunking: DEFAULT_CHUNKING,
    hashConcurrency: o.hashConcurrency ?? profile.hashConcurrency,
    readSize: o.readSize ?? profile.readSize,
    statConcurrency: profile.statConcurrency,
    inlineMetadata: profile.inlineMetadata,
    tempTtlMs: o.tempTtl,
    reconcileIntervalMs: Math.max(1000, o.reconcileInterval),
    watch: !noFlagOn(cmd, 'watch', 'NO_WATCH'),
    watchDelayMs: o.watchDelay,
    clientKeepaliveMs: o.clientKeepalive === 0 ? 0 : Math.max(1000, o.clientKeepalive),
    feedMaxUnread: o.feedMaxUnread,
    allowSetId: flagOn(cmd, 'allowSetid', 'ALLOW_SETID'),
    allowDevices: flagOn(cmd, 'allowDevices', 'ALLOW_DEVICES'),
    onProgress: progressReporter(),
  };
  if (o.printConfig) return printConfig({ ...config, onProgress: undefined, metrics: o.metrics });
  // Signals are handled from the start, so a stop during indexing or
  // right after "node serving" still closes the database cleanly.
  let stopping = false;
  const shutdown = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'node stopping');
    void (async () => {
      const started = await agentReady.catch(() => undefined);
      await started?.stop();
    })().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  tuneForChunkTraffic();
  const agentReady = NodeAgent.start(config);
  const agent = await agentReady.catch((err: Error) => fail(err.message));
  if (o.metrics) {
    liveGauge('ghostfs_hash_queue', 'files waiting for or being hashed', () => agent.hashing().queued);
    liveTotals('ghostfs_hashed', 'files and bytes hashed since start', () => ({ files: agent.hashing().files, bytes: agent.hashing().bytes }));
    await serveMetrics(o.metrics.host, o.metrics.port).catch((err: Error) => fail(err.message));
  }
}

/** A progress bar on a terminal; periodic log lines otherwise. */
function progressReporter(): (ws: string, s: ScanStats) => void {
  if (!process.stderr.isTTY) {
    return (ws, s) => log.info({ workspace: ws, files: s.files, hashedFiles: s.hashedFiles, hashedBytes: s.hashedBytes, durationMs: Math.round(s.durationMs) }, 'indexing');
  }
  const bar = new cliProgress.SingleBar(
    { format: 'indexing {ws} | {files} files | {mb} MB hashed | {rate} files/s', stream: process.stderr, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return (ws, s) => {
    const payload = { ws, files: s.files, mb: (s.hashedBytes / 1e6).toFixed(0), rate: Math.round(s.files / (s.durationMs / 1000 || 1)) };
    if (!started) {
      bar.start(0, 0, payload);
      started = true;
    } else bar.update(0, payload);
  };
}
