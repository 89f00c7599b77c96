// The control socket a running mount answers: status, flush, unmount.
import { createServer, type Server, type Socket } from 'node:net';
import { mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { log } from '../log.js';
import type { ControlReply, ControlRequest } from './protocol.js';
import { mountAnswers } from './control-client.js';

export type ControlHandler = (req: ControlRequest) => Promise<ControlReply>;

export class ControlServer {
  private constructor(
    private readonly server: Server,
    readonly path: string,
    private readonly sockets: Set<Socket>,
  ) {}

  static async start(path: string, handle: ControlHandler): Promise<ControlServer> {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    if (await mountAnswers(path)) throw new Error(`another ghostfs mount already answers on ${path}`);
    await unlink(path).catch(() => undefined); // left by a mount that died
    const sockets = new Set<Socket>();
    const server = createServer((sock) => {
      sockets.add(sock);
      sock.once('close', () => sockets.delete(sock));
      let buf = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => {
        buf += d;
        const i = buf.indexOf('\n');
        if (i < 0) return;
        const line = buf.slice(0, i);
        buf = '';
        let req: ControlRequest;
        try {
          req = JSON.parse(line) as ControlRequest;
        } catch {
          sock.end(JSON.stringify({ ok: false, error: 'bad request' }) + '\n');
          return;
        }
        handle(req).then(
          (reply) => sock.end(JSON.stringify(reply) + '\n'),
          (err) => sock.end(JSON.stringify({ ok: false, error: (err as Error).message }) + '\n'),
        );
      });
      sock.on('error', () => undefined);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    server.unref();
    log.debug({ socket: path }, 'control socket listening');
    return new ControlServer(server, path, sockets);
  }

  /**
   * Stops answering. A client still connected (one waiting for a long
   * flush, or one that never sent its request) gets a second to finish,
   * then is cut off: it must not hold up an unmount.
   */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const grace = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, 1000);
    await closed;
    clearTimeout(grace);
    await unlink(this.path).catch(() => undefined);
  }
}
