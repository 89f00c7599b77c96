// The node's HTTP/2 receive window. grpc-js (1.14) applies
// `grpc-node.flow_control_window` to clients only; its server keeps HTTP/2's
// 64 KiB default, so an upload of 1 MiB chunks stalls for a WINDOW_UPDATE
// round trip every 64 KiB (measured here: 116 MB/s for a 256-chunk
// PutChunks stream; ~200 MB/s with the wide window). Until the server reads
// the option itself, the window is set on the server's own objects: the
// per-stream window in the SETTINGS it sends, the connection window on each
// new session.
import type * as grpc from '@grpc/grpc-js';
import type { Http2Server, Http2Session, ServerOptions } from 'node:http2';
import { log } from '../log.js';

interface ServerInternals {
  commonServerOptions?: ServerOptions;
  http2Servers?: Map<Http2Server, unknown>;
}

/** Call before bindAsync: new sessions then advertise `bytes` as each stream's window. */
export function widenStreamWindow(server: grpc.Server, bytes: number): boolean {
  const opts = (server as unknown as ServerInternals).commonServerOptions;
  if (!opts || typeof opts !== 'object') {
    log.warn('this grpc-js has no server options to widen the HTTP/2 window: uploads run with the 64 KiB default');
    return false;
  }
  opts.settings = { ...opts.settings, initialWindowSize: bytes };
  return true;
}

/** Call after bindAsync: each new connection gets a receive window of `bytes`. */
export function widenConnectionWindow(server: grpc.Server, bytes: number): boolean {
  const servers = (server as unknown as ServerInternals).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) {
    log.warn('this grpc-js exposes no HTTP/2 servers to widen the connection window: uploads run with the 64 KiB default');
    return false;
  }
  for (const h2 of servers.keys()) {
    h2.on('session', (session: Http2Session) => {
      try {
        session.setLocalWindowSize(bytes);
      } catch (err) {
        log.debug({ err: (err as Error).message }, 'connection window not widened');
      }
    });
  }
  return true;
}
