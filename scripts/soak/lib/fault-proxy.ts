// A TCP proxy on loopback between a mount and a node that misbehaves on
// command: it can pass traffic, delay it, drop it silently (connections stay
// open, bytes vanish), lose whole HTTP/2 DATA frames (the framing stays
// intact, so the connection stays up but the senders' flow-control windows
// leak), blackhole new and existing connections (no answer at all), flip
// bits in what the node sends (corrupt), or reset every open connection.
// Its upstream can be moved (a node restarted on a new port). No extra
// hosts or privileges needed.
import { createServer, connect, type Server, type Socket } from 'node:net';

export type FaultMode = 'pass' | 'delay' | 'drop' | 'lose-data' | 'blackhole' | 'corrupt' | 'mute';

/** The bytes of one direction of a plaintext HTTP/2 connection, told apart: DATA frames' bytes or not. */
class FrameTracker {
  /** Bytes left of the frame under way (its header read); 0 between frames. */
  private left = 0;
  private inData = false;
  private header = Buffer.alloc(0);

  /** `preface`: bytes before the first frame (the client's connection preface). */
  constructor(private preface: number) {}

  /** Splits a piece of the stream into runs, each all DATA-frame bytes or all other bytes. */
  split(chunk: Buffer): { bytes: Buffer; data: boolean }[] {
    const runs: { bytes: Buffer; data: boolean }[] = [];
    const add = (bytes: Buffer, data: boolean): void => {
      const last = runs[runs.length - 1];
      if (last && last.data === data) last.bytes = Buffer.concat([last.bytes, bytes]);
      else runs.push({ bytes, data });
    };
    let at = 0;
    while (at < chunk.length) {
      if (this.preface > 0) {
        const n = Math.min(this.preface, chunk.length - at);
        add(chunk.subarray(at, at + n), false);
        this.preface -= n;
        at += n;
      } else if (this.left === 0) {
        // A frame header: 24-bit payload length, type (0 = DATA), flags, stream id.
        const n = Math.min(9 - this.header.length, chunk.length - at);
        this.header = Buffer.concat([this.header, chunk.subarray(at, at + n)]);
        at += n;
        if (this.header.length < 9) break;
        const length = this.header.readUIntBE(0, 3);
        this.inData = this.header[3] === 0 && length > 0;
        add(this.header, this.inData);
        this.header = Buffer.alloc(0);
        this.left = length;
      } else {
        const n = Math.min(this.left, chunk.length - at);
        add(chunk.subarray(at, at + n), this.inData);
        this.left -= n;
        at += n;
      }
    }
    return runs;
  }
}

/**
 * Resets a socket (RST) unless its own end (FIN) is still under way; such a
 * socket is destroyed instead. libuv refuses to reset a socket while its
 * shutdown is pending (EINVAL), yet Node 20 marks it closing all the same, so
 * its handle is never closed and the process spins for ever at exit waiting
 * for it. Its FIN has gone or is going: the peer learns of the end anyway.
 */
export function abortSocket(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded) socket.destroy();
  else socket.resetAndDestroy();
}

export class FaultProxy {
  private mode: FaultMode = 'pass';
  private delayMs = 0;
  private readonly pairs = new Set<[Socket, Socket]>();
  /** How often each fault was applied (the report lists them). */
  readonly applied: Record<string, number> = {};
  /** Connections ended by one side: the mount's or the node's. */
  readonly closedBy = { client: 0, node: 0 };

  private constructor(
    private readonly server: Server,
    readonly port: number,
    /** Where connections made from now on go (host:port). */
    public upstream: string,
  ) {}

  /** Connections open through the proxy now. */
  get connections(): number {
    return this.pairs.size;
  }

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
    // The first side to close ends the pair; which side it was is counted (not when reset() closed both).
    const end = (by: 'client' | 'node') => (): void => {
      if (this.pairs.delete(pair)) this.closedBy[by]++;
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end('client')).on('close', end('client'));
    upstream.on('error', end('node')).on('close', end('node'));
    this.pipe(client, upstream, false);
    this.pipe(upstream, client, true);
  }

  /** Forwards bytes as the current mode says, chunk by chunk, in order. */
  private pipe(from: Socket, to: Socket, fromNode: boolean): void {
    let chain = Promise.resolve();
    // Followed in every mode: whatever the mode, where the frames are is known when losing DATA starts.
    const frames = new FrameTracker(fromNode ? 0 : 24);
    from.on('data', (data: Buffer) => {
      const runs = frames.split(data);
      if (this.mode === 'drop' || this.mode === 'blackhole') return;
      // What goes on is what the tracker hands back, in every mode: a frame header it holds
      // until whole then goes once, whole, whichever mode is on when it completes.
      const lose = this.mode === 'lose-data';
      const lost = lose ? runs.filter((r) => r.data).reduce((n, r) => n + r.bytes.length, 0) : 0;
      if (lost) this.applied.lostDataBytes = (this.applied.lostDataBytes ?? 0) + lost;
      data = Buffer.concat(runs.filter((r) => !(lose && r.data)).map((r) => r.bytes));
      if (data.length === 0) return;
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
    for (const socket of new Set([...this.pairs].flat())) abortSocket(socket);
    this.pairs.clear();
  }

  async close(): Promise<void> {
    this.reset();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
