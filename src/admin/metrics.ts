// Prometheus metrics (prom-client) for `serve` and `mount`, served on
// --metrics HOST:PORT. Counters that live elsewhere (cache, write-back,
// mesh) are read when scraped rather than mirrored on every event.
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { log } from '../log.js';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'ghostfs_' });

/** Filesystem operations answered by the mount, by type and errno ("0" for success). */
export const fsOps = new Counter({ name: 'ghostfs_fs_ops_total', help: 'FUSE operations answered, by op and errno', labelNames: ['op', 'errno'], registers: [registry] });
export const fsOpSeconds = new Histogram({
  name: 'ghostfs_fs_op_seconds',
  help: 'FUSE operation latency, by op',
  labelNames: ['op'],
  buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
  registers: [registry],
});

/** Node RPCs served, by method, outcome and transport. */
export const rpcs = new Counter({ name: 'ghostfs_node_rpcs_total', help: 'calls served by the node, by method, errno and how they came: over="grpc", or over="lane" (small unary calls on the bulk lane)', labelNames: ['method', 'errno', 'over'], registers: [registry] });
export const rpcSeconds = new Histogram({
  name: 'ghostfs_node_rpc_seconds',
  help: 'gRPC call latency on the node, by method',
  labelNames: ['method'],
  buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
  registers: [registry],
});

/** Files the node committed, by the way they were written (see src/node/commit.ts). */
export const nodeCommits = new Counter({
  name: 'ghostfs_node_commits_total',
  help: 'files committed by the node: how="new-file" (a new small file written, fsynced and named in one worker job), how="staged" (assembled from chunks, then put in place), how="draft" (the same from the draft its chunks were put in as they were uploaded)',
  labelNames: ['how'],
  registers: [registry],
});

/** Chunks the mount uploaded, by the way their bytes left it (see src/mesh/bulk-client.ts). */
export const chunksUploaded = new Counter({
  name: 'ghostfs_chunks_uploaded_total',
  help: 'chunks the mount sent to a node (one sent again after a connection broke counts again): how="sendfile" (bulk lane, from the dirty copy by the kernel), how="copied" (from memory, or read into it first: gRPC, TLS)',
  labelNames: ['how'],
  registers: [registry],
});

/** Chunks the node served, by the way their bytes left it (see src/node/bulk-server.ts). */
export const nodeChunksServed = new Counter({
  name: 'ghostfs_node_chunks_served_total',
  help: 'chunks served by the node: how="sendfile" (bulk lane, from the workspace file by the kernel), how="copied" (read into memory and written: gRPC, TLS, uploads not yet in a file)',
  labelNames: ['how'],
  registers: [registry],
});

/** Uploaded chunks the node kept (new to it), by the way they came (see src/node/bulk-server.ts). */
export const nodeChunksUploaded = new Counter({
  name: 'ghostfs_node_chunks_uploaded_total',
  help: 'uploaded chunks the node did not hold yet: over="lane" (the bulk lane) or over="grpc" (PutChunks)',
  labelNames: ['over'],
  registers: [registry],
});

/** A gauge whose value is read from `read` at every scrape. */
export function liveGauge(name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/** Counters whose values come from elsewhere: exposed as gauges of running totals. */
export function liveTotals(prefix: string, help: string, read: () => Record<string, number>): void {
  const g = new Gauge({
    name: prefix,
    help,
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      for (const [k, v] of Object.entries(read())) g.set({ kind: k }, v);
    },
  });
}

export async function serveMetrics(host: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('try /metrics\n');
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (err) => res.writeHead(500).end(String(err)),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot serve metrics on ${host}:${port}: ${err.message}`)));
    server.listen(port, host, () => resolve());
  });
  server.unref();
  const addr = server.address();
  log.info({ metrics: typeof addr === 'object' && addr ? `${host}:${addr.port}` : `${host}:${port}` }, 'metrics serving');
  return server;
}
