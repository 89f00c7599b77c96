// The node's end of the bulk lane (protocol: src/wire/bulk-lane.ts). It
// serves what gRPC's ReadChunks serves, and takes what its PutChunks takes,
// with the same checks: the bearer token, the workspace, the path hint
// confined to the workspace, an upload's hash. Over plain
// TCP a chunk that lies in a workspace file goes from the file to the socket
// in the kernel (sendfile). Otherwise (TLS, no addon, an upload not yet in a
// file) it is read into a buffer with room for the frame header in front,
// so it goes out as one write without a copy.
import type { Duplex } from 'node:stream';
import { HASH_BYTES } from '../content/manifest.js';
import { nodeChunksServed } from '../admin/metrics.js';
import { log } from '../log.js';
import { flushed, sendfileTarget } from '../native/sendfile-target.js';
import { CHUNK_FRAME_RESERVE } from '../wire/chunk-frame.js';
import { BULK_MAGIC, type BulkError, CALL_FLAG, decodeUploadMeta, endFrame, errorFrame, FRAME_CHUNK, FRAME_HEADER_BYTES, LANE_CALLS, type LaneCall, MAX_CALL_BYTES, MAX_HELLO_BYTES, MAX_HELLO_FIELD_BYTES, MAX_HINT_BYTES, MAX_REQUEST_BYTES, MAX_UPLOAD_META_BYTES, replyFrame, UPLOAD_FLAG, type UploadMeta, writeFrameHeader } from '../wire/bulk-lane.js';
import { MAX_MESSAGE_BYTES } from '../wire/proto.js';
import { errnoOf, FsError, lacksOf, toServiceError } from '../wire/errors.js';
import type { Workspace } from './agent.js';
import { checkPath } from './paths.js';
import { bearerAccepted, UNAUTH } from './service.js';

export interface BulkContext {
  token?: string;
  workspace(id: string): Workspace;
  /** Runs a unary call carried by the lane (the request and reply as gRPC serializes them). */
  call(ws: Workspace, method: LaneCall, request: Buffer): Promise<Buffer>;
  /** Takes an uploaded chunk as PutChunks does; true when it was new. */
  upload(ws: Workspace, u: UploadMeta, data: Buffer): Promise<boolean>;
}

/** A connection idle this long is closed (the mount opens another when it needs one). */
const IDLE_MS = 5 * 60_000;

/**
 * Buffers for uploads' bytes, used again: a new one per chunk cost more than
 * the copy into it (page faults on first touch, then garbage collection;
 * measured: 184 ms of the node's main thread per 256 MiB uploaded). Sizes
 * are rounded up to a power of two; idle ones are kept up to a bound on
 * their total size. What the node does with an upload's bytes (verify,
 * write) is over when its call returns: nothing keeps them.
 */
class UploadBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private freeBytes = 0;

  constructor(private readonly maxFreeBytes: number) {}

  take(n: number): Buffer {
    const size = sizeClass(n);
    const b = this.free.get(size)?.pop();
    if (b) this.freeBytes -= size;
    return (b ?? Buffer.allocUnsafeSlow(size)).subarray(0, n);
  }

  /** `b` from take(), done with. */
  give(b: Buffer): void {
    const size = b.buffer.byteLength;
    if (b.byteOffset !== 0 || sizeClass(size) !== size || this.freeBytes + size > this.maxFreeBytes) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(Buffer.from(b.buffer, 0, size));
    this.freeBytes += size;
  }
}

function sizeClass(n: number): number {
  return Math.max(64 << 10, 2 ** Math.ceil(Math.log2(Math.max(1, n))));
}

/** Shared by every lane connection of this process. */
const uploadBuffers = new UploadBuffers(32 << 20);

/** Serves one connection whose first bytes are the lane's hello; returns at once. */
export function serveBulk(socket: Duplex & { setTimeout?(ms: number): unknown }, ctx: BulkContext): void {
  const input = new InputBuffer();
  let ws: Workspace | undefined;
  let busy = false;
  let gone = false;
  socket.setTimeout?.(IDLE_MS);
  socket.on('timeout', () => socket.destroy());
  socket.on('error', (err) => log.debug({ err: err.message }, 'bulk lane connection failed'));
  // Set when the connection closes: stops a send from a file that waits for room.
  const cancel = new Int32Array(1);
  socket.on('close', () => {
    gone = true;
    cancel[0] = 1;
    input.abort();
  });
  const direct = sendfileTarget(socket);

  // Ends the connection after a last frame: the client cannot be trusted to go on.
  const refuse = (e: BulkError): void => {
    socket.end(errorFrame(e));
    gone = true;
  };

  /** A chunk read into `buf` (CHUNK_FRAME_RESERVE bytes free in front): framed in place and written. */
  const sendCopied = async (hash: Buffer, buf: Buffer): Promise<void> => {
    const start = CHUNK_FRAME_RESERVE - FRAME_HEADER_BYTES;
    writeFrameHeader(buf, start, FRAME_CHUNK, hash, buf.length - CHUNK_FRAME_RESERVE);
    nodeChunksServed.inc({ how: 'copied' });
    if (!socket.write(buf.subarray(start))) await drained(socket);
  };

  const serve = async (hashes: Buffer[], hint: string | undefined): Promise<void> => {
    if (direct) return serveFromFiles(hashes, hint);
    for await (const { hash, buf } of ws!.chunks.readMany(hashes, hint, CHUNK_FRAME_RESERVE)) {
      if (gone) return;
      await sendCopied(hash, buf);
    }
    if (!gone) socket.write(endFrame());
  };

  // Chunks in workspace files go from the file to the socket in the kernel
  // (sendfile): no copy through JS. Staged uploads, and files that keep
  // changing, are read and written as above.
  const serveFromFiles = async (hashes: Buffer[], hint: string | undefined): Promise<void> => {
    const files = ws!.chunks.openFiles();
    try {
      for (const hash of hashes) {
        if (gone) return;
        const r = await ws!.chunks.rangeOf(hash, hint, files);
        if (!r) {
          await sendCopied(hash, await ws!.chunks.read(hash, hint, CHUNK_FRAME_RESERVE));
          continue;
        }
        // What libuv still holds goes first.
        if (socket.writableLength > 0) await flushed(socket);
        if (gone) return;
        const head = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
        writeFrameHeader(head, 0, FRAME_CHUNK, hash, r.length);
        try {
          await direct!.addon.sendFileRange(direct!.fd, head, r.file.fd, r.offset, r.length, cancel);
        } catch (err) {
          // A frame may have been cut short: this connection cannot go on.
          log.debug({ err: (err as Error).message }, 'bulk lane: sending from a file failed');
          gone = true;
          socket.destroy();
          return;
        }
        nodeChunksServed.inc({ how: 'sendfile' });
        // libuv did not see these bytes go: the idle timer starts again here.
        socket.setTimeout?.(IDLE_MS);
      }
    } finally {
      await files.drop();
    }
    if (!gone) socket.write(endFrame());
  };

  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      while (!gone) {
        if (!ws) {
          const hello = input.hello();
          if (hello === undefined) break;
          if (!bearerAccepted(ctx.token, hello.authorization || undefined)) return refuse(UNAUTH);
          ws = ctx.workspace(hello.workspace);
          continue;
        }
        const req = input.request();
        if (req === undefined) break;
        try {
          if ('method' in req) {
            const reply = await ctx.call(ws, req.method, req.body);
            if (!gone) socket.write(replyFrame(reply));
          } else if ('upload' in req) {
            // A failure before its bytes are all read would leave them to be read as requests: the connection ends.
            const data = await Promise.resolve(req.dataLength)
              .then((n) => input.body(uploadBuffers.take(n)))
              .catch((err: unknown) => {
                refuse(bulkError(err));
                return undefined;
              });
            if (data === undefined) return; // the connection closed
            // The next upload waits in the socket while this one is verified and written.
            socket.pause();
            try {
              const isNew = await ctx.upload(ws, req.upload, data);
              if (!gone) socket.write(replyFrame(Buffer.of(isNew ? 1 : 0)));
            } finally {
              uploadBuffers.give(data);
              socket.resume();
            }
          } else {
            await serve(req.hashes, req.hint ? checkPath(req.hint, 'path hint') : undefined);
          }
        } catch (err) {
          // The request ends here; the connection stays usable.
          if (!gone) socket.write(errorFrame(bulkError(err)));
        }
      }
    } catch (err) {
      if (!gone) refuse(bulkError(err));
    } finally {
      busy = false;
    }
  };

  socket.on('data', (d: Buffer) => {
    if (gone) return;
    try {
      input.push(d);
    } catch (err) {
      return refuse(bulkError(err));
    }
    void pump();
  });
}

/** What gRPC would have answered, with the errno it carries in its trailer. */
function bulkError(err: unknown): BulkError {
  return { ...toServiceError(err), errno: errnoOf(err), lacks: lacksOf(err) };
}

function drained(socket: Duplex): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

/** What the client sent and the node has not parsed yet; throws FsError(EPROTO) on anything malformed. */
class InputBuffer {
  private buf: Buffer = Buffer.alloc(0);
  /** An upload's bytes being received (see body()). */
  private filling: { out: Buffer; fill: number; done: (b: Buffer | undefined) => void } | undefined;

  push(d: Buffer): void {
    const f = this.filling;
    if (f) {
      const n = d.copy(f.out, f.fill);
      f.fill += n;
      if (f.fill < f.out.length) return;
      this.filling = undefined;
      f.done(f.out);
      d = d.subarray(n);
      if (d.length === 0) return;
    }
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    if (this.buf.length > MAX_HELLO_BYTES + Math.max(MAX_REQUEST_BYTES, 4 + MAX_CALL_BYTES)) {
      throw new FsError('EPROTO', 'bulk lane: the client sent more than one request ahead');
    }
  }

  hello(): { authorization: string; workspace: string } | undefined {
    if (this.buf.length < 6) return undefined;
    if (!this.buf.subarray(0, 4).equals(BULK_MAGIC)) throw new FsError('EPROTO', 'bulk lane: not a hello');
    const al = this.buf.readUInt16BE(4);
    if (al > MAX_HELLO_FIELD_BYTES) throw new FsError('EPROTO', 'bulk lane: authorization too long');
    if (this.buf.length < 8 + al) return undefined;
    const wl = this.buf.readUInt16BE(6 + al);
    if (wl > MAX_HELLO_FIELD_BYTES) throw new FsError('EPROTO', 'bulk lane: workspace name too long');
    if (this.buf.length < 8 + al + wl) return undefined;
    const authorization = this.buf.toString('utf8', 6, 6 + al);
    const workspace = this.buf.toString('utf8', 8 + al, 8 + al + wl);
    this.buf = this.buf.subarray(8 + al + wl);
    return { authorization, workspace };
  }

  /**
   * The next `out.length` bytes (an upload's data), in `out`: what is here
   * is copied in, the rest as it arrives, without gathering it here first.
   * Undefined when the connection closes before they all came.
   */
  body(out: Buffer): Promise<Buffer | undefined> {
    const n = out.length;
    const have = this.buf.copy(out, 0, 0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(have);
    if (have === n) return Promise.resolve(out);
    return new Promise((done) => (this.filling = { out, fill: have, done }));
  }

  abort(): void {
    this.filling?.done(undefined);
    this.filling = undefined;
  }

  request(): { hashes: Buffer[]; hint: string } | { method: LaneCall; body: Buffer } | { upload: UploadMeta; dataLength: number } | undefined {
    if (this.buf.length < 4) return undefined;
    const word = this.buf.readUInt32BE(0);
    if (word & CALL_FLAG) return this.call((word & ~CALL_FLAG) >>> 0);
    if (word & UPLOAD_FLAG) return this.upload((word & ~UPLOAD_FLAG) >>> 0);
    const body = word;
    if (4 + body > MAX_REQUEST_BYTES) throw new FsError('EPROTO', 'bulk lane: request too large');
    if (this.buf.length < 4 + body) return undefined;
    const b = this.buf.subarray(4, 4 + body);
    this.buf = this.buf.subarray(4 + body);
    const hl = b.readUInt16BE(0);
    if (hl > MAX_HINT_BYTES || 2 + hl + 2 > body) throw new FsError('EPROTO', 'bulk lane: malformed request');
    const hint = b.toString('utf8', 2, 2 + hl);
    const count = b.readUInt16BE(2 + hl);
    if (4 + hl + count * HASH_BYTES !== body) throw new FsError('EPROTO', 'bulk lane: malformed request');
    const hashes: Buffer[] = [];
    // Copies: the request buffer is dropped, the hashes may outlive it in logs and maps.
    for (let i = 0, p = 4 + hl; i < count; i++, p += HASH_BYTES) hashes.push(Buffer.from(b.subarray(p, p + HASH_BYTES)));
    return { hashes, hint };
  }

  private upload(metaLength: number): { upload: UploadMeta; dataLength: number } | undefined {
    if (metaLength > MAX_UPLOAD_META_BYTES) throw new FsError('EPROTO', `bulk lane: an upload's meta of ${metaLength} bytes`);
    if (this.buf.length < 4 + metaLength + 4) return undefined;
    const upload = decodeUploadMeta(this.buf.subarray(4, 4 + metaLength));
    if (!upload) throw new FsError('EPROTO', 'bulk lane: malformed upload');
    const dataLength = this.buf.readUInt32BE(4 + metaLength);
    if (dataLength > MAX_MESSAGE_BYTES) throw new FsError('EPROTO', `bulk lane: an upload of ${dataLength} bytes`);
    this.buf = this.buf.subarray(4 + metaLength + 4);
    return { upload, dataLength };
  }

  private call(body: number): { method: LaneCall; body: Buffer } | undefined {
    if (body < 1 || body > MAX_CALL_BYTES) throw new FsError('EPROTO', `bulk lane: a call of ${body} bytes`);
    if (this.buf.length < 4 + body) return undefined;
    const id = this.buf[4]!;
    const method = (Object.keys(LANE_CALLS) as LaneCall[]).find((m) => LANE_CALLS[m] === id);
    if (!method) throw new FsError('EPROTO', `bulk lane: no call number ${id}`);
    const request = this.buf.subarray(5, 4 + body);
    this.buf = this.buf.subarray(4 + body);
    return { method, body: request };
  }
}
