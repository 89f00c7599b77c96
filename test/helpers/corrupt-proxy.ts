// A hostile node for tests: a real gRPC server speaking the wire contract
// that forwards every call to a real node, except that the chunk bytes it
// returns have one bit flipped.
import * as grpc from '@grpc/grpc-js';
import { NodeConnection } from '../../src/mesh/connection.js';
import { CHANNEL_OPTIONS, wire } from '../../src/wire/proto.js';

export class CorruptProxy {
  private constructor(
    private readonly server: grpc.Server,
    private readonly upstream: NodeConnection,
    readonly port: number,
  ) {}

  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(upstreamEndpoint: string, workspace = 'default'): Promise<CorruptProxy> {
    const up = new NodeConnection(upstreamEndpoint, workspace);
    const forward =
      <Req, Res>(fn: (req: Req) => Promise<Res>) =>
      (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>): void => {
        fn(call.request).then(
          (r) => cb(null, r),
          (e) => cb(e as grpc.ServiceError),
        );
      };
    const server = new grpc.Server(CHANNEL_OPTIONS);
    server.addService(wire().ghostfs.v1.Node.service, {
      Handshake: forward(() => up.handshake()),
      Stat: forward((r: { path: string }) => up.stat(r.path)),
      ListDir: forward((r: { path: string }) => up.listDir(r.path)),
      GetManifest: forward((r: { path: string }) => up.getManifest(r.path)),
      ReadChunks: (call: grpc.ServerWritableStream<{ hashes: Buffer[]; pathHint: string }, unknown>) => {
        void (async () => {
          try {
            for await (const c of up.readChunks(call.request.hashes, call.request.pathHint)) {
              const data = Buffer.from(c.data);
              data[data.length >> 1]! ^= 0x01;
              call.write({ hash: c.hash, data });
            }
            call.end();
          } catch (e) {
            call.emit('error', e);
          }
        })();
      },
      Watch: (call: grpc.ServerWritableStream<{ fromGeneration: number; epoch: string }, unknown>) => {
        const sub = up.watch(
          call.request.fromGeneration,
          call.request.epoch,
          (e) => call.write(e),
          () => call.end(),
        );
        call.on('cancelled', () => sub.cancel());
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    return new CorruptProxy(server, up, port);
  }

  stop(): void {
    this.upstream.close();
    this.server.forceShutdown();
  }
}
