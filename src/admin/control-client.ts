// Talks to a running mount's control socket.
import { createConnection } from 'node:net';
import type { ControlReply, ControlRequest } from './protocol.js';

export class NoMountError extends Error {}

export function control(path: string, req: ControlRequest, timeoutMs = 60_000): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`the mount did not answer within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.once('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => (buf += d));
    sock.once('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf) as ControlReply);
      } catch {
        reject(new Error('the mount closed the control connection without an answer'));
      }
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new NoMountError('no running mount answers there') : err);
    });
  });
}

/**
 * Whether a running mount answers on this control socket within `ms`. Asked,
 * not just connected to: a stopped or stuck process still holds its socket.
 */
export function mountAnswers(path: string, ms = 2000): Promise<boolean> {
  return control(path, { op: 'status' }, ms).then(
    (r) => r.ok,
    () => false,
  );
}
