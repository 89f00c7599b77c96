// One connection to one mesh node: typed, promise-based calls with a
// deadline on every call and the bearer token on every request.
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { CHANNEL_OPTIONS, PROTOCOL_VERSION, wire } from '../wire/proto.js';
import type {
  NodeClient,
  WChangeEventOut,
  WChunkOut,
  WCommitReplyOut,
  WCommitRequest,
  WCommitManyReplyOut,
  WEntryOut,
  WHandshakeReplyOut,
  WListDirReplyOut,
  WManifestOut,
  WMutateReplyOut,
  WMutateRequest,
} from '../wire/types.js';

export interface ConnectionOptions {
  token?: string;
  /** TLS: CA to trust (PEM file); with cert+key, a client certificate for mutual TLS. */
  tls?: { ca?: string; cert?: string; key?: string };
  /** Deadline of unary calls, ms. */
  deadlineMs?: number;
  clientId?: string;
}

/** Call options without a deadline: used for streams that live long. */
type Unary<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<Res>) => grpc.ClientUnaryCall;

export class NodeConnection {
  readonly client: NodeClient;
  private readonly md: grpc.Metadata;
  readonly deadlineMs: number;

  constructor(
    readonly endpoint: string,
    readonly workspace: string,
    readonly opts: ConnectionOptions = {},
  ) {
    const Ctor = wire().ghostfs.v1.Node;
    let creds = grpc.credentials.createInsecure();
    if (opts.tls) {
      creds = grpc.credentials.createSsl(
        opts.tls.ca ? readFileSync(opts.tls.ca) : null,
        opts.tls.key ? readFileSync(opts.tls.key) : null,
        opts.tls.cert ? readFileSync(opts.tls.cert) : null,
      );
    }
    this.client = new Ctor(endpoint, creds, {
      ...CHANNEL_OPTIONS,
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      // Reconnect quickly when a node comes back.
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2_000,
    }) as unknown as NodeClient;
    this.md = new grpc.Metadata();
    if (opts.token) this.md.set('authorization', `Bearer ${opts.token}`);
    this.deadlineMs = opts.deadlineMs ?? 10_000;
  }

  private unary<Req, Res>(method: Unary<Req, Res>, req: Req, deadlineMs = this.deadlineMs): Promise<Res> {
    return new Promise((resolve, reject) => {
      method.call(this.client, req, this.md, { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res!)));
    });
  }

  handshake(deadlineMs?: number): Promise<WHandshakeReplyOut> {
    return this.unary(this.client.handshake, { workspace: this.workspace, protocolVersion: PROTOCOL_VERSION, clientId: this.opts.clientId ?? '' }, deadlineMs);
  }

  stat(path: string): Promise<WEntryOut> {
    return this.unary(this.client.stat, { workspace: this.workspace, path });
  }

  listDir(path: string): Promise<WListDirReplyOut> {
    return this.unary(this.client.listDir, { workspace: this.workspace, path });
  }

  getManifest(path: string): Promise<WManifestOut> {
    return this.unary(this.client.getManifest, { workspace: this.workspace, path });
  }

  hasChunks(hashes: Buffer[]): Promise<number[]> {
    return this.unary<unknown, { missing: number[] }>(this.client.hasChunks as never, { workspace: this.workspace, hashes }).then((r) => r.missing);
  }

  commit(req: Omit<WCommitRequest, 'workspace'>, deadlineMs?: number): Promise<WCommitReplyOut> {
    return this.unary(this.client.commit, { ...this.withClientId(req), workspace: this.workspace }, deadlineMs);
  }

  /** A commit names its writer (conflict copies carry it): this connection's client id unless it names one. */
  private withClientId(req: Omit<WCommitRequest, 'workspace'>): Omit<WCommitRequest, 'workspace'> {
    return { ...req, clientId: req.clientId || this.opts.clientId || '' };
  }

  /** Several commits in one call; each outcome is a reply or an errno, in request order. */
  commitMany(reqs: Omit<WCommitRequest, 'workspace'>[], deadlineMs?: number): Promise<WCommitManyReplyOut> {
    return this.unary(this.client.commitMany, { workspace: this.workspace, commits: reqs.map((r) => this.withClientId(r)) }, deadlineMs);
  }

  mutate(req: Omit<WMutateRequest, 'workspace'>): Promise<WMutateReplyOut> {
    return this.unary(this.client.mutate, { ...req, workspace: this.workspace });
  }

  /** Streams chunks in request order; the deadline covers the whole call. */
  async *readChunks(hashes: Buffer[], pathHint = '', deadlineMs = this.deadlineMs): AsyncGenerator<WChunkOut> {
    const call = this.client.readChunks({ workspace: this.workspace, hashes, pathHint }, this.md, { deadline: Date.now() + deadlineMs });
    try {
      for await (const c of call as AsyncIterable<WChunkOut>) yield c;
    } finally {
      call.cancel();
    }
  }

  /** Uploads chunks (the node verifies each); resolves with how many were new. */
  putChunks(chunks: AsyncIterable<{ hash: Buffer; data: Buffer }> | Iterable<{ hash: Buffer; data: Buffer }>, deadlineMs = this.deadlineMs): Promise<{ stored: number; bytes: number }> {
    return new Promise((resolve, reject) => {
      const call = this.client.putChunks(this.md, { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res!)));
      void (async () => {
        let first = true;
        for await (const c of chunks) {
          const ok = call.write({ workspace: first ? this.workspace : '', hash: c.hash, data: c.data });
          first = false;
          if (!ok) await new Promise((r) => call.once('drain', r));
        }
        call.end();
      })().catch((err) => {
        call.cancel();
        reject(err);
      });
    });
  }

  /** The change feed from a generation; the caller cancels the returned call to stop. */
  watch(fromGeneration: number, epoch: string, onEvent: (e: WChangeEventOut) => void, onEnd: (err?: Error) => void): grpc.ClientReadableStream<WChangeEventOut> {
    const call = this.client.watch({ workspace: this.workspace, fromGeneration, epoch }, this.md);
    call.on('data', onEvent);
    call.on('error', (err) => onEnd(err));
    call.on('end', () => onEnd());
    return call;
  }

  close(): void {
    this.client.close();
  }
}
