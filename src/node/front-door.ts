// The node's one listening port. Each connection (after TLS, when the node
// uses it) is told by its first bytes: the bulk lane's hello goes to
// serveBulk, anything else (HTTP/2) to the gRPC server. One port keeps
// deployment, firewalls and proxies as simple as gRPC alone.
import * as grpc from '@grpc/grpc-js';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { log } from '../log.js';
import { BULK_ALPN, BULK_MAGIC } from '../wire/bulk-lane.js';

export interface FrontDoorOptions {
  tls?: { cert: Buffer; key: Buffer; ca?: Buffer };
  grpc: grpc.Server;
  bulk(socket: Socket): void;
}

/** A connection that has not said which it is within this time is dropped. */
const SNIFF_MS = 10_000;

export class FrontDoor {
  private readonly server: Server;
  private readonly injector: ReturnType<grpc.Server['createConnectionInjector']>;
  private readonly open = new Set<Socket>();

  constructor(private readonly opts: FrontDoorOptions) {
    // TLS ends here, so gRPC gets plain HTTP/2.
    this.injector = opts.grpc.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const t = opts.tls;
    this.server = t
      ? createTlsServer({ cert: t.cert, key: t.key, ca: t.ca, requestCert: !!t.ca, rejectUnauthorized: !!t.ca, ALPNProtocols: ['h2', BULK_ALPN] }, (s) => this.route(s))
      : createNetServer((s) => this.route(s));
    if (t) this.server.on('tlsClientError', (err) => log.debug({ err: err.message }, 'TLS handshake refused'));
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as { port: number }).port);
      });
    });
  }

  private route(socket: Socket): void {
    // A lane's end frame is small: it must not wait for the previous chunk's acknowledgement.
    socket.setNoDelay(true);
    this.open.add(socket);
    socket.once('close', () => this.open.delete(socket));
    socket.on('error', (err) => log.debug({ err: err.message }, 'connection failed'));
    const timer = setTimeout(() => socket.destroy(), SNIFF_MS);
    const sniff = (): void => {
      const head = socket.read(BULK_MAGIC.length) as Buffer | null;
      if (head === null) {
        if (!socket.destroyed) socket.once('readable', sniff);
        return;
      }
      clearTimeout(timer);
      // Ended before four bytes: neither protocol.
      if (head.length < BULK_MAGIC.length) return void socket.destroy();
      socket.unshift(head);
      if (head.equals(BULK_MAGIC)) this.opts.bulk(socket);
      else this.injector.injectConnection(socket);
    };
    sniff();
  }

  /** Stops taking connections and ends those under way (gRPC's own shutdown ends its sessions first). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.open) s.destroy();
      this.injector.destroy();
    });
  }
}
