// One connection to one mesh node: typed, promise-based calls with a
// deadline on every call and the bearer token on every request.
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { CHANNEL_OPTIONS, PROTOCOL_VERSION, wire } from '../wire/proto.js';
import { log } from '../log.js';
import { chunksUploaded } from '../admin/metrics.js';
import { nodeErrno, serviceError } from '../wire/errors.js';
import { BulkLane, hostPort, LaneUnavailable, LaneUploadBroken, unsentThenRest, uploadBytes, rangesIn, type FileRange, type UploadChunk } from './bulk-client.js';
import { MAX_CALL_BYTES, type LaneCall } from '../wire/bulk-lane.js';
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
  WStatFsReplyOut,
} from '../wire/types.js';

export interface ConnectionOptions {
  token?: string;
  /** TLS: CA to trust (PEM file); with cert+key, a client certificate for mutual TLS. */
  tls?: { ca?: string; cert?: string; key?: string };
  /** Deadline of unary calls, ms. */
  deadlineMs?: number;
  clientId?: string;
  /**
   * Names this client's commits and changes (one mount's run). Its change
   * feed then leaves them out: it knows them from their replies
   * (CommitRequest.writer, MutateRequest.writer).
   */
  writer?: string;
  /** The change feed's heartbeat interval asked of the node, ms (default 10 s). */
  feedHeartbeatMs?: number;
  /** Fetch chunk bytes over the node's bulk lane when it offers one (default true); false: gRPC only. */
  bulkLane?: boolean;
}

/** A chunk to upload; `draft`, `path` and `offset` place it in a file's draft on the node. */
export { rangesIn, type FileRange, type UploadChunk };

export interface ChunkPath {
  /** 'unknown' until a handshake with the node. */
  over: 'lane' | 'grpc' | 'unknown';
  why?: string;
}

/** After the bulk lane could not be had, chunks go over gRPC for this long before it is tried again. */
const LANE_RETRY_MS = 30_000;

/** Connections are replaced at most this often (see NodeConnection.renew). */
const RENEW_INTERVAL_MS = 10_000;
/** A change feed silent for this many heartbeat intervals is taken for dead. */
const FEED_SILENCE_BEATS = 3;

/** A unary method of the generated client. */
type Unary<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<Res>) => grpc.ClientUnaryCall;

export class NodeConnection {
  /** The gRPC client in use: replaced when a call on it misses its deadline (see renew). */
  private client: NodeClient;
  /** A call on the current client has been answered: it was a working connection. */
  private answered = false;
  /** Change-feed streams, by the client they run on. */
  private readonly watches = new Map<grpc.ClientReadableStream<WChangeEventOut>, NodeClient>();
  /** Calls under way, by client; a replaced client is closed once it has none left. */
  private readonly inflight = new Map<NodeClient, number>();
  private readonly retired = new Set<NodeClient>();
  private closed = false;
  private readonly md: grpc.Metadata;
  readonly deadlineMs: number;
  /** Connections replaced so far, and when the last one was. */
  renewals = 0;
  private renewedAt = 0;
  /** The node's bulk lane: unknown until a handshake says, undefined if it has none (or it is not wanted). */
  private lane: BulkLane | undefined | 'unknown' = 'unknown';
  private laneOffUntil = 0;
  private laneError = '';
  private laneWarned = false;
  private learningLane = false;
  /** The node's lane also takes small unary calls (LANE_CALLS); from its handshake. */
  private laneCalls = false;
  /** The node's lane also takes uploaded chunks; from its handshake. */
  private laneUploads = false;
  /** The node's clock minus ours, from its handshake; unknown until one told it (or after a refusal, see mutate). */
  private clockOffsetMs: number | undefined;

  constructor(
    readonly endpoint: string,
    readonly workspace: string,
    readonly opts: ConnectionOptions = {},
  ) {
    this.client = this.newClient();
    this.md = new grpc.Metadata();
    if (opts.token) this.md.set('authorization', `Bearer ${opts.token}`);
    this.deadlineMs = opts.deadlineMs ?? 10_000;
  }

  private newClient(): NodeClient {
    const Ctor = wire().ghostfs.v1.Node;
    let creds = grpc.credentials.createInsecure();
    if (this.opts.tls) {
      creds = grpc.credentials.createSsl(
        this.opts.tls.ca ? readFileSync(this.opts.tls.ca) : null,
        this.opts.tls.key ? readFileSync(this.opts.tls.key) : null,
        this.opts.tls.cert ? readFileSync(this.opts.tls.cert) : null,
      );
    }
    return new Ctor(this.endpoint, creds, {
      ...CHANNEL_OPTIONS,
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      // Reconnect quickly when a node comes back.
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2_000,
      // A client of its own connection: a renewed one must not be handed the old one from grpc-js's shared pool.
      'grpc.use_local_subchannel_pool': 1,
    }) as unknown as NodeClient;
  }

  /**
   * A call on `client` missed its deadline: the connection under it is no
   * longer trusted, and calls from now on go over a new one. HTTP/2 can
   * wedge a connection for good while its keepalive pings still pass: DATA
   * frames that never arrived stay charged to the sender's flow-control
   * window (measured: with 30 MiB of commit data lost in whole frames, every
   * later call on that connection missed its deadline, 4 KiB ones too).
   * The old client is closed once the calls under way on it have ended
   * (closing a grpc-js client drops its calls); the change feed's stream on
   * it is cancelled, so it subscribes again over the new one.
   */
  private renew(client: NodeClient, why = 'a call missed its deadline', now = false): void {
    if (client !== this.client || this.closed) return; // renewed already
    // A node merely slow misses deadlines too: at most one new connection (and feed resubscription) per interval.
    if (!now && Date.now() - this.renewedAt < RENEW_INTERVAL_MS) return;
    this.renewedAt = Date.now();
    const wasWorking = this.answered;
    this.client = this.newClient();
    this.answered = false;
    this.renewals++;
    for (const [call, on] of this.watches) if (on === client) call.cancel();
    if (this.inflight.has(client)) this.retired.add(client);
    else client.close();
    // A node that stays down renews every interval: said once, when a working connection stops.
    const what = { node: this.endpoint, renewals: this.renewals };
    if (wasWorking) log.warn(what, `${why}: the connection to the node is replaced`);
    else log.debug(what, `${why}: the connection to the node is replaced`);
  }

  /**
   * The only call asked of a node that had stopped answering missed its
   * deadline too: a new connection for the next one, whatever the interval.
   * Those calls come one per back-off, so this cannot churn; waiting out the
   * interval kept a connection wedged by a dead link for rounds after the
   * link was whole again.
   */
  replaceAfterSilence(): void {
    this.renew(this.client, 'the node missed another deadline', true);
  }

  /** A call starts, on the client in use. */
  private begin(): NodeClient {
    const client = this.client;
    this.inflight.set(client, (this.inflight.get(client) ?? 0) + 1);
    return client;
  }

  /** A call on `client` ended, with `err` or not. */
  private end(client: NodeClient, err: unknown): void {
    const left = (this.inflight.get(client) ?? 1) - 1;
    if (left > 0) this.inflight.set(client, left);
    else {
      this.inflight.delete(client);
      if (this.retired.delete(client)) client.close();
    }
    if (!err) {
      if (client === this.client) this.answered = true;
    } else if ((err as grpc.ServiceError).code === grpc.status.DEADLINE_EXCEEDED) {
      this.renew(client);
    }
  }

  private unary<Req, Res>(method: Unary<Req, Res>, req: Req, deadlineMs = this.deadlineMs): Promise<Res> {
    const client = this.begin();
    return new Promise((resolve, reject) => {
      method.call(client, req, this.md, { deadline: Date.now() + deadlineMs }, (err, res) => {
        this.end(client, err);
        if (err) reject(err);
        else resolve(res!);
      });
    });
  }

  async handshake(deadlineMs?: number): Promise<WHandshakeReplyOut> {
    const req = { workspace: this.workspace, protocolVersion: PROTOCOL_VERSION, clientId: this.opts.clientId ?? '' };
    const reply = await this.unary<typeof req, WHandshakeReplyOut>(this.client.handshake, req, deadlineMs);
    // The node read its clock between our sending and hearing back; taken as
    // late as can be, which puts the limits mutate() sends early, never late.
    this.clockOffsetMs = reply.nodeTimeMs > 0 ? reply.nodeTimeMs - Date.now() : undefined;
    this.learnLane(reply.bulkLane);
    this.laneCalls = reply.laneCalls;
    this.laneUploads = reply.laneUploads;
    return reply;
  }

  private learnLane(offered: boolean): void {
    if (this.lane !== 'unknown' && this.lane !== undefined) return; // have one
    const at = hostPort(this.endpoint);
    if (!offered || this.opts.bulkLane === false || !at || this.closed) {
      this.lane = undefined;
      return;
    }
    const tls = this.opts.tls && {
      ca: this.opts.tls.ca ? readFileSync(this.opts.tls.ca) : undefined,
      cert: this.opts.tls.cert ? readFileSync(this.opts.tls.cert) : undefined,
      key: this.opts.tls.key ? readFileSync(this.opts.tls.key) : undefined,
    };
    this.lane = new BulkLane({ ...at, authorization: this.opts.token ? `Bearer ${this.opts.token}` : '', workspace: this.workspace, tls });
  }

  stat(path: string): Promise<WEntryOut> {
    return this.unary(this.client.stat, { workspace: this.workspace, path });
  }

  listDir(path: string): Promise<WListDirReplyOut> {
    return this.unary(this.client.listDir, { workspace: this.workspace, path });
  }

  statFs(): Promise<WStatFsReplyOut> {
    return this.unary(this.client.statFs, { workspace: this.workspace });
  }

  getManifest(path: string): Promise<WManifestOut> {
    return this.unary(this.client.getManifest, { workspace: this.workspace, path });
  }

  hasChunks(hashes: Buffer[]): Promise<number[]> {
    return this.unary<unknown, { missing: number[] }>(this.client.hasChunks as never, { workspace: this.workspace, hashes }).then((r) => r.missing);
  }

  commit(req: Omit<WCommitRequest, 'workspace'>, deadlineMs = this.deadlineMs): Promise<WCommitReplyOut> {
    return this.call('Commit', this.client.commit, { ...this.withIdentity(req), workspace: this.workspace }, deadlineMs);
  }

  /**
   * A unary call over the lane when the node takes calls there and the
   * message is small; over gRPC otherwise, or when the lane cannot be had
   * (nothing reached the node then).
   */
  private async call<Req, Res>(method: LaneCall, grpcMethod: Unary<Req, Res>, req: Req, deadlineMs = this.deadlineMs): Promise<Res> {
    const deadline = Date.now() + deadlineMs;
    const lane = this.lane;
    if (lane && lane !== 'unknown' && this.laneCalls && Date.now() >= this.laneOffUntil && lane.proven()) {
      const def = wire().ghostfs.v1.Node.service[method] as unknown as { requestSerialize(v: Req): Buffer; responseDeserialize(b: Buffer): Res };
      const body = def.requestSerialize(req);
      if (body.length < MAX_CALL_BYTES) {
        try {
          return def.responseDeserialize(await lane.call(method, body, deadlineMs));
        } catch (err) {
          if (!(err instanceof LaneUnavailable)) throw err;
          this.laneUnavailable(err);
        }
      }
    }
    // What the lane's attempt used of the deadline is gone: a node that does not answer fails the call once, not twice.
    return this.unary(grpcMethod, req, Math.max(1, deadline - Date.now()));
  }

  /**
   * A commit names its client (conflict copies carry it) and writer: this
   * connection's unless it names them. Its writer records what the reply
   * carries besides the file (WriteBack.settleLanded), unless it says not.
   */
  private withIdentity(req: Omit<WCommitRequest, 'workspace'>): Omit<WCommitRequest, 'workspace'> {
    return { ...req, clientId: req.clientId || this.opts.clientId || '', writer: req.writer || this.opts.writer || '', readsAlso: req.readsAlso ?? true };
  }

  /** Several commits in one call; each outcome is a reply or an errno, in request order. */
  commitMany(reqs: Omit<WCommitRequest, 'workspace'>[], deadlineMs?: number): Promise<WCommitManyReplyOut> {
    return this.unary(this.client.commitMany, { workspace: this.workspace, commits: reqs.map((r) => this.withIdentity(r)) }, deadlineMs);
  }

  /**
   * A change, with the time on the node's clock after which the node must
   * not make it (apply_before_ms): a margin before this call gives up, as
   * the answer has to come back. Without that, a node that hung and woke
   * made changes whose callers had been told they failed (a mkdir that
   * failed with EROFS was on the node a minute later). A refusal for that
   * comes back as a missed deadline, the node is asked its clock again,
   * and until then no limit is sent (a clock stepped since the handshake
   * must not get every change refused).
   */
  async mutate(req: Omit<WMutateRequest, 'workspace'>, deadlineMs = this.deadlineMs): Promise<WMutateReplyOut> {
    const offset = this.clockOffsetMs;
    const applyBeforeMs = offset === undefined ? 0 : Math.round(Date.now() + offset + deadlineMs - Math.min(1000, deadlineMs / 4));
    try {
      return await this.call('Mutate', this.client.mutate, { ...req, workspace: this.workspace, applyBeforeMs, writer: req.writer || this.opts.writer || '' }, deadlineMs);
    } catch (err) {
      if (!applyBeforeMs || nodeErrno(err) !== 'ETIMEDOUT') throw err;
      this.clockOffsetMs = undefined;
      void this.handshake().catch(() => undefined);
      throw serviceError(grpc.status.DEADLINE_EXCEEDED, `the node got to the change too late (${(err as Error).message})`);
    }
  }

  /**
   * Streams chunks in request order; the deadline covers the whole call.
   * Over the bulk lane when the node has one, else (or while the lane cannot
   * be had) over gRPC.
   */
  async *readChunks(hashes: Buffer[], pathHint = '', deadlineMs = this.deadlineMs, quietMs = deadlineMs): AsyncGenerator<WChunkOut> {
    const lane = this.lane;
    if (lane === 'unknown') this.askForLane();
    else if (lane && Date.now() >= this.laneOffUntil) {
      try {
        yield* lane.fetch(hashes, pathHint, deadlineMs, quietMs);
        return;
      } catch (err) {
        if (!(err instanceof LaneUnavailable)) throw err;
        this.laneUnavailable(err); // nothing was fetched: gRPC serves this call
      }
    }
    yield* this.readChunksGrpc(hashes, pathHint, deadlineMs, quietMs);
  }

  /** The lane could not be had: gRPC carries everything for a while. */
  private laneUnavailable(err: LaneUnavailable): void {
    this.laneOffUntil = Date.now() + LANE_RETRY_MS;
    this.laneError = err.message;
    const what = { node: this.endpoint, err: err.message };
    if (this.laneWarned) log.debug(what, 'the bulk lane cannot be had: chunks and calls go over gRPC for now');
    else log.warn(what, 'the bulk lane cannot be had: chunks and calls go over gRPC for now');
    this.laneWarned = true;
  }

  /** How chunk bytes travel to this node now, and why not over the lane when they do not. */
  get chunkPath(): ChunkPath {
    const lane = this.lane;
    if (lane === 'unknown') return { over: 'unknown' };
    if (!lane) return { over: 'grpc', why: this.opts.bulkLane === false ? 'the bulk lane is turned off' : 'the node offers no bulk lane' };
    if (Date.now() < this.laneOffUntil) return { over: 'grpc', why: `the bulk lane cannot be had: ${this.laneError}` };
    return { over: 'lane' };
  }

  /** A node this connection has not shaken hands with yet: ask in the background whether it has a lane; this fetch goes over gRPC. */
  private askForLane(): void {
    if (this.learningLane) return;
    this.learningLane = true;
    this.handshake()
      .catch(() => undefined) // unknown still: asked again with the next fetch
      .finally(() => (this.learningLane = false));
  }

  /** `quietMs`: the longest wait for the next chunk (the caller's own time with one is not counted). */
  private async *readChunksGrpc(hashes: Buffer[], pathHint: string, deadlineMs: number, quietMs: number): AsyncGenerator<WChunkOut> {
    const client = this.begin();
    const call = client.readChunks({ workspace: this.workspace, hashes, pathHint }, this.md, { deadline: Date.now() + deadlineMs });
    let quiet: NodeJS.Timeout | undefined;
    let wentQuiet = false;
    const wait = (): void => {
      quiet = setTimeout(() => {
        wentQuiet = true;
        call.cancel();
      }, quietMs);
    };
    let failed: unknown;
    try {
      wait();
      for await (const c of call as AsyncIterable<WChunkOut>) {
        clearTimeout(quiet);
        yield c;
        wait();
      }
    } catch (err) {
      failed = wentQuiet ? serviceError(grpc.status.DEADLINE_EXCEEDED, `no chunk from the node for ${quietMs} ms`) : err;
      throw failed;
    } finally {
      clearTimeout(quiet);
      call.cancel();
      this.end(client, failed);
    }
  }

  /**
   * Uploads chunks (the node verifies each); resolves with how many were new.
   * One that names a draft (with the file's path and its offset) goes into that file's draft on the node (see proto).
   * Over the bulk lane when the node takes uploads there, else (or once the lane breaks) over gRPC.
   */
  async putChunks(chunks: AsyncIterable<UploadChunk> | Iterable<UploadChunk>, deadlineMs = this.deadlineMs): Promise<{ stored: number; bytes: number }> {
    const deadline = Date.now() + deadlineMs;
    const lane = this.lane;
    if (lane === 'unknown') this.askForLane();
    else if (lane && this.laneUploads && Date.now() >= this.laneOffUntil && lane.proven()) {
      const it = (async function* () {
        yield* chunks;
      })();
      try {
        return await lane.upload(it, deadlineMs);
      } catch (err) {
        if (!(err instanceof LaneUnavailable)) {
          void it.return(undefined); // the source's own clean-up runs
          throw err;
        }
        this.laneUnavailable(err);
        // What the lane did not confirm goes again (when it broke on the way), then the rest.
        const broken = err instanceof LaneUploadBroken ? err : undefined;
        const r = await this.putChunksGrpc(broken ? unsentThenRest(broken, it) : it, Math.max(1, deadline - Date.now()));
        return { stored: r.stored + (broken?.stored ?? 0), bytes: r.bytes + (broken?.bytes ?? 0) };
      }
    }
    return this.putChunksGrpc(chunks, deadlineMs);
  }

  private putChunksGrpc(chunks: AsyncIterable<UploadChunk> | Iterable<UploadChunk>, deadlineMs: number): Promise<{ stored: number; bytes: number }> {
    const client = this.begin();
    return new Promise((resolve, reject) => {
      let ended = false;
      let wake: (() => void) | undefined;
      const call = client.putChunks(this.md, { deadline: Date.now() + deadlineMs }, (err, res) => {
        ended = true;
        wake?.(); // a writer waiting for room stops: the call is over
        this.end(client, err);
        if (err) reject(err);
        else resolve(res!);
      });
      void (async () => {
        let first = true;
        for await (const c of chunks) {
          if (ended) return;
          const data = await uploadBytes(c);
          if (ended) return;
          chunksUploaded.inc({ how: 'copied' });
          const ok = call.write({ workspace: first ? this.workspace : '', hash: c.hash, data, draft: c.draft ?? '', path: c.path ?? '', offset: c.offset ?? 0 });
          first = false;
          if (!ok) {
            await new Promise<void>((r) => {
              const room = (): void => {
                call.off('drain', room);
                r();
              };
              wake = room;
              call.once('drain', room);
            });
            wake = undefined;
          }
        }
        if (!ended) call.end();
      })().catch((err) => {
        call.cancel();
        reject(err);
      });
    });
  }

  /**
   * The change feed from a generation; the caller cancels the returned call
   * to stop, and `onEnd` runs once. The node sends heartbeats, which are not
   * passed on: once one has come, a feed silent for a few of their
   * intervals has stopped without a word (a connection wedged by lost frames
   * still passes keepalive pings), so it is cancelled, ending with a
   * DEADLINE_EXCEEDED error that says so, and its connection is treated like
   * one on which a call missed its deadline. A node that sends no heartbeats
   * (an older one) is never taken for silent.
   */
  watch(fromGeneration: number, epoch: string, onEvent: (e: WChangeEventOut) => void, onEnd: (err?: Error) => void): grpc.ClientReadableStream<WChangeEventOut> {
    const client = this.client;
    const heartbeatMs = this.opts.feedHeartbeatMs ?? 10_000;
    const silenceMs = heartbeatMs * FEED_SILENCE_BEATS;
    const call = client.watch({ workspace: this.workspace, fromGeneration, epoch, heartbeatMs, writer: this.opts.writer ?? '' }, this.md);
    this.watches.set(call, client);
    let lastSeen = Date.now();
    let beats = false;
    let silent = false;
    const check = setInterval(() => {
      if (!beats || Date.now() - lastSeen < silenceMs) return;
      silent = true;
      clearInterval(check);
      log.debug({ node: this.endpoint, silentMs: Date.now() - lastSeen }, 'the change feed went silent');
      this.renew(client, 'the change feed went silent');
      call.cancel(); // (renewing cancelled it already, unless a renewal was just made)
    }, heartbeatMs);
    check.unref();
    call.on('data', (e: WChangeEventOut) => {
      lastSeen = Date.now();
      if (e.kind === 'HEARTBEAT') beats = true;
      else onEvent(e);
    });
    // grpc-js ends a failed stream with 'error' and then 'end': the caller hears of it once.
    let over = false;
    const ended = (err?: Error): void => {
      if (over) return;
      over = true;
      clearInterval(check);
      this.watches.delete(call);
      if (silent) err = Object.assign(new Error(`no change event or heartbeat from ${this.endpoint} for ${silenceMs} ms`), { code: grpc.status.DEADLINE_EXCEEDED });
      onEnd(err);
    };
    call.on('error', ended);
    call.on('end', () => ended());
    return call;
  }

  close(): void {
    this.closed = true;
    // Closing a grpc-js client leaves calls already under way running: feeds would outlive it.
    for (const call of this.watches.keys()) call.cancel();
    this.client.close();
    for (const c of this.retired) c.close();
    this.retired.clear();
    if (this.lane instanceof BulkLane) this.lane.close();
  }
}
