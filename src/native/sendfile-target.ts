// Sending from a file straight to a socket (the addon's sendFileRange, by
// the kernel's sendfile): used by both ends of the bulk lane, the node for
// the chunks it serves and the mount for the chunks it uploads.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { nativeAddon, type NativeAddon } from './addon.js';

/** The addon and the socket's descriptor, when bytes can go from a file to it: plain TCP (TLS encrypts in JS), with the addon built. */
export function sendfileTarget(socket: Duplex): { addon: NativeAddon; fd: number } | undefined {
  const addon = nativeAddon();
  if (!addon || !(socket instanceof Socket) || socket instanceof TLSSocket) return undefined;
  // net.Socket's handle has its descriptor on Unix; not part of the documented API, hence the checks.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? { addon, fd } : undefined;
}

/** Resolves once everything written to the socket so far has gone to the kernel: a send from a file may start after it. */
export function flushed(socket: Duplex): Promise<void> {
  return new Promise((resolve) => socket.write(Buffer.alloc(0), () => resolve()));
}
