// A TCP proxy on loopback between a mount and a node that misbehaves on
// command: it can pass traffic, delay it, drop it silently (connections stay
// open, bytes vanish), blackhole new and existing connections (no answer at
// all), flip bits in what the node sends (corrupt), or reset every open
// connection. Its upstream can be moved (a node restarted on a new port).
// No extra hosts or privileges needed.
import { createServer, connect, type Server, type Socket } from 'node:net';

export type FaultMode = 'pass' | 'delay' | 'drop' | 'blackhole' | 'corrupt' | 'mute';

export class FaultProxy {
  private mode: FaultMode = 'pass';
  private delayMs = 0;
  private readonly pairs = new Set<[Socket, Socket]>();
  /** How often each fault was applied (the report lists them). */
  readonly applied: Record<string, number> = {};

  private constructor(
    private readonly server: Server,
    readonly port: number,
    /** Where connections made from now on go (host:port). */
    public upstream: string,
  ) {}

  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(upstream: string): Promise<FaultProxy> {
    let proxy!: FaultProxy;
    const server = createServer((client) => proxy.accept(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new FaultProxy(server, (server.address() as { port: number }).port, upstream);
    return proxy;
  }

  private accept(client: Socket): void {
    if (this.mode === 'blackhole') {
      // Accepted, and then nothing: the caller's deadline has to notice.
      const pair: [Socket, Socket] = [client, client];
      this.pairs.add(pair);
      client.on('error', () => client.destroy()).on('close', () => this.pairs.delete(pair));
      return;
    }
    const i = this.upstream.lastIndexOf(':');
    const upstream = connect(Number(this.upstream.slice(i + 1)), this.upstream.slice(0, i));
    const pair: [Socket, Socket] = [client, upstream];
    this.pairs.add(pair);
    const end = (): void => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    this.pipe(client, upstream, false);
    this.pipe(upstream, client, true);
  }

  /** Forwards bytes as the current mode says, chunk by chunk, in order. */
  private pipe(from: Socket, to: Socket, fromNode: boolean): void {
    let chain = Promise.resolve();
    from.on('data', (data: Buffer) => {
      if (this.mode === 'drop' || this.mode === 'blackhole') return;
      // Requests reach the node and take effect; its answers vanish.
      if (this.mode === 'mute' && fromNode) return;
      // Large reads from the node are chunk payloads: one bit flipped in each.
      if (this.mode === 'corrupt' && fromNode && data.length >= 16384) {
        data = Buffer.from(data);
        data[data.length >> 1]! ^= 0x10;
        this.applied.corruptedBuffers = (this.applied.corruptedBuffers ?? 0) + 1;
      }
      const delay = this.mode === 'delay' ? this.delayMs : 0;
      chain = chain.then(async () => {
        if (delay) await new Promise((r) => setTimeout(r, delay));
        if (!to.destroyed) to.write(data);
      });
    });
  }

  set(mode: FaultMode, delayMs = 0): void {
    this.mode = mode;
    this.delayMs = delayMs;
    this.applied[mode] = (this.applied[mode] ?? 0) + 1;
  }

  /** Every open connection is reset (RST), as a crashed peer or a middlebox would. */
  reset(): void {
    this.applied.reset = (this.applied.reset ?? 0) + 1;
    for (const [a, b] of this.pairs) {
      a.resetAndDestroy();
      b.resetAndDestroy();
    }
    this.pairs.clear();
  }

  async close(): Promise<void> {
    this.reset();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
