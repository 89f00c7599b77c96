// A node in between, for tests: a real gRPC server speaking the wire
// contract that relays every call to a real node. On request it turns
// hostile or slow in the ways a test needs:
// - corruptChunks: the chunk bytes it returns have one bit flipped;
// - holdWatch / releaseWatch: change events are kept back, then let
//   through one by one (a feed running behind the calls);
// - injectReset: the feed says RESET (as a node whose history is gone);
// - holdListings / releaseListings: directory listings are taken from the
//   node at once but answered only later (an answer overtaken by changes).
import * as grpc from '@grpc/grpc-js';
import { NodeConnection } from '../../src/mesh/connection.js';
import { CHANNEL_OPTIONS, wire } from '../../src/wire/proto.js';
import type { WChangeEventOut } from '../../src/wire/types.js';

type Held = { call: grpc.ServerWritableStream<unknown, unknown>; event: WChangeEventOut };

export class RelayProxy {
  private holding = false;
  private heldEvents: Held[] = [];
  /** Watch calls open now, with the last position each was told. */
  private readonly feeds = new Map<grpc.ServerWritableStream<unknown, unknown>, { generation: number; epoch: string }>();
  private holdingListings = false;
  private heldListingAnswers: (() => void)[] = [];
  private server!: grpc.Server;
  private upstream!: NodeConnection;
  port = 0;

  private constructor(private readonly opts: { corruptChunks?: boolean }) {}

  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Change events kept back so far, oldest first. */
  get held(): WChangeEventOut[] {
    return this.heldEvents.map((h) => h.event);
  }

  /** From now on change events are kept back until released. */
  holdWatch(): void {
    this.holding = true;
  }

  /** Lets kept-back events through, oldest first, up to and including the first that `upTo` matches (all without it; holding then stops). */
  releaseWatch(upTo?: (e: WChangeEventOut) => boolean): void {
    while (this.heldEvents.length) {
      const h = this.heldEvents.shift()!;
      h.call.write(h.event);
      if (upTo?.(h.event)) return;
    }
    if (!upTo) this.holding = false;
  }

  /** Tells every open change feed RESET at its current position: the mount revalidates what it has listed. */
  injectReset(): void {
    for (const [call, at] of this.feeds) call.write({ generation: at.generation, kind: 'RESET', path: '', epoch: at.epoch });
  }

  /** From now on directory listings are read from the node at once and answered when released. */
  holdListings(): void {
    this.holdingListings = true;
  }

  /** How many listing answers are kept back. */
  get heldListings(): number {
    return this.heldListingAnswers.length;
  }

  /** Sends the kept-back listing answers; listings are answered at once again. */
  releaseListings(): void {
    this.holdingListings = false;
    for (const answer of this.heldListingAnswers.splice(0)) answer();
  }

  static async start(upstreamEndpoint: string, opts: { corruptChunks?: boolean } = {}, workspace = 'default'): Promise<RelayProxy> {
    const p = new RelayProxy(opts);
    p.upstream = new NodeConnection(upstreamEndpoint, workspace);
    p.server = new grpc.Server(CHANNEL_OPTIONS);
    p.server.addService(wire().ghostfs.v1.Node.service, p.handlers(p.upstream));
    p.port = await new Promise<number>((resolve, reject) =>
      p.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
    return p;
  }

  private handlers(up: NodeConnection): grpc.UntypedServiceImplementation {
    const relay =
      <Req, Res>(fn: (req: Req) => Promise<Res>) =>
      (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>): void => {
        fn(call.request).then(
          (r) => cb(null, r),
          (e) => cb(e as grpc.ServiceError),
        );
      };
    type AnyReq = Record<string, never>;
    return {
      Handshake: relay(() => up.handshake()),
      Stat: relay((r: { path: string }) => up.stat(r.path)),
      ListDir: (call: grpc.ServerUnaryCall<{ path: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        const hold = this.holdingListings;
        up.listDir(call.request.path).then(
          (r) => (hold ? this.heldListingAnswers.push(() => cb(null, r)) : cb(null, r)),
          (e) => cb(e as grpc.ServiceError),
        );
      },
      GetManifest: relay((r: { path: string }) => up.getManifest(r.path)),
      StatFs: relay(() => up.statFs()),
      HasChunks: relay((r: { hashes: Buffer[] }) => up.hasChunks(r.hashes).then((missing) => ({ missing }))),
      Commit: relay((r: AnyReq) => up.commit(r)),
      CommitMany: relay((r: { commits: AnyReq[] }) => up.commitMany(r.commits)),
      Mutate: relay((r: AnyReq) => up.mutate(r)),
      PutChunks: (call: grpc.ServerReadableStream<{ hash: Buffer; data: Buffer }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        const chunks: { hash: Buffer; data: Buffer }[] = [];
        call.on('data', (c: { hash: Buffer; data: Buffer }) => chunks.push({ hash: c.hash, data: c.data }));
        call.on('end', () =>
          up.putChunks(chunks).then(
            (r) => cb(null, r),
            (e) => cb(e as grpc.ServiceError),
          ),
        );
      },
      ReadChunks: (call: grpc.ServerWritableStream<{ hashes: Buffer[]; pathHint: string }, unknown>) => {
        void (async () => {
          try {
            for await (const c of up.readChunks(call.request.hashes, call.request.pathHint)) {
              const data = Buffer.from(c.data);
              if (this.opts.corruptChunks) data[data.length >> 1]! ^= 0x01;
              call.write({ hash: c.hash, data });
            }
            call.end();
          } catch (e) {
            call.emit('error', e);
          }
        })();
      },
      Watch: (call: grpc.ServerWritableStream<{ fromGeneration: number; epoch: string; heartbeatMs: number }, unknown>) => {
        const feed = call as grpc.ServerWritableStream<unknown, unknown>;
        // Heartbeats of its own (the upstream's are not passed on): a feed held back is alive all the same.
        const beat = call.request.heartbeatMs
          ? setInterval(() => call.write({ generation: 0, kind: 'HEARTBEAT', path: '', epoch: '' }), call.request.heartbeatMs)
          : undefined;
        const sub = up.watch(
          call.request.fromGeneration,
          call.request.epoch,
          (event) => {
            const at = this.feeds.get(feed);
            this.feeds.set(feed, { generation: Math.max(Number(event.generation), at?.generation ?? 0), epoch: event.epoch });
            if (this.holding) this.heldEvents.push({ call: feed, event });
            else call.write(event);
          },
          () => {
            clearInterval(beat);
            this.feeds.delete(feed);
            call.end();
          },
        );
        call.on('cancelled', () => {
          clearInterval(beat);
          this.feeds.delete(feed);
          sub.cancel();
        });
      },
    };
  }

  stop(): void {
    this.upstream.close();
    this.server.forceShutdown();
  }
}
