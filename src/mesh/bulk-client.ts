// The mount's end of the bulk lane (protocol: src/wire/bulk-lane.ts): chunk
// bytes read from the socket straight into each chunk's own buffer, and
// uploads written from theirs, or sent from the file they lie in by the
// kernel; no HTTP/2 framing, no reassembly copy.
// Failures come out as the gRPC errors they stand for, so the mesh client's
// failover treats both paths alike.
import * as grpc from '@grpc/grpc-js';
import type { FileHandle } from 'node:fs/promises';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { HASH_BYTES } from '../content/manifest.js';
import { log } from '../log.js';
import { BULK_ALPN, encodeCall, encodeHello, encodeRequest, encodeUploadHead, FRAME_CHUNK, FRAME_END, FRAME_ERROR, FRAME_HEADER_BYTES, FRAME_REPLY, type LaneCall, MAX_REQUEST_HASHES, type UploadMeta } from '../wire/bulk-lane.js';
import { serviceError } from '../wire/errors.js';
import { MAX_MESSAGE_BYTES } from '../wire/proto.js';
import { flushed, sendfileTarget } from '../native/sendfile-target.js';
import { readAt } from '../util/positional-io.js';
import { chunksUploaded } from '../admin/metrics.js';

export interface BulkLaneOptions {
  host: string;
  port: number;
  /** As gRPC's header carries it: "Bearer <token>", or empty. */
  authorization: string;
  workspace: string;
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
}

/** Idle connections kept for the next fetch; more are closed when returned. */
const MAX_IDLE = 4;
/** An idle connection unused this long is closed. */
const IDLE_MS = 60_000;
/** The deadline of the empty fetch that shows the lane answers (see proven()). */
const PROBE_MS = 5_000;

/** "host:port" or "[v6]:port"; undefined for anything else (a resolver URI, say). */
export function hostPort(endpoint: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(endpoint) ?? /^([^:/[\]]+):(\d+)$/.exec(endpoint);
  if (!m) return undefined;
  const port = Number(m[2]);
  return port > 0 && port < 65536 ? { host: m[1]!, port } : undefined;
}

/** A failure of the lane itself, before the node said anything: the caller may use gRPC instead. */
export class LaneUnavailable extends Error {}

/**
 * The lane broke during an upload. Sending a chunk again is harmless (the
 * node keeps it by its hash, at its place in its draft): `unsent`, those
 * whose upload was not confirmed, go over gRPC with the rest.
 */
export class LaneUploadBroken extends LaneUnavailable {
  constructor(
    message: string,
    readonly unsent: UploadChunk[],
    readonly stored: number,
    readonly bytes: number,
  ) {
    super(message);
  }
}

/** What an upload that broke had not confirmed, then what it had not taken yet: for the next try. */
export async function* unsentThenRest(broken: LaneUploadBroken, rest: AsyncIterator<UploadChunk>): AsyncGenerator<UploadChunk> {
  yield* broken.unsent;
  yield* { [Symbol.asyncIterator]: () => rest };
}

/**
 * Bytes that lie in a file, open until the upload carrying them settles.
 * Over plain TCP the lane sends them from the file by the kernel (sendfile):
 * no read into JS and no copy from JS to the socket. Elsewhere (TLS, gRPC)
 * they are read first.
 */
export interface FileRange {
  fh: FileHandle;
  offset: number;
  length: number;
  /** Names the file in errors. */
  what: string;
}

/** A chunk to upload: its bytes, or where they are, and where it goes (see UploadMeta). */
export interface UploadChunk extends Partial<Omit<UploadMeta, 'hash'>> {
  hash: Buffer;
  data: Buffer | FileRange;
}

/** The ranges of chunks in the open file `fh` (`what` names it in errors). */
export function rangesIn(fh: FileHandle, what: string): (c: { offset: number; length: number }) => FileRange {
  return (c) => ({ fh, offset: c.offset, length: c.length, what });
}

function readRange(r: FileRange): Promise<Buffer> {
  return readAt(r.fh, r.length, r.offset, r.what);
}

/** The chunk's bytes in memory (read from its file, for a path that cannot send from one). */
export function uploadBytes(c: UploadChunk): Promise<Buffer> | Buffer {
  return Buffer.isBuffer(c.data) ? c.data : readRange(c.data);
}

/**
 * Sends from files under way in the process, at most. Each waits for room in
 * its socket on a thread of libuv's pool, which the mount's file calls share:
 * a node that stops reading must not hold all of it.
 */
const FILE_SENDS = 2;
let fileSends = 0;
const fileSendTurns: (() => void)[] = [];

/**
 * A turn to send from a file (call what it returns when done), or
 * DEADLINE_EXCEEDED once `deadline` passes first. A turn ending goes
 * straight to the one waiting longest.
 */
async function fileSendTurn(deadline: number): Promise<() => void> {
  if (fileSends < FILE_SENDS) fileSends++;
  else {
    const got = await new Promise<boolean>((resolve) => {
      const take = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        fileSendTurns.splice(fileSendTurns.indexOf(take), 1);
        resolve(false);
      }, Math.max(0, deadline - Date.now()));
      fileSendTurns.push(take);
    });
    if (!got) throw deadlineError();
  }
  let ended = false;
  return () => {
    if (ended) return;
    ended = true;
    const next = fileSendTurns.shift();
    if (next) next();
    else fileSends--;
  };
}

/** Errors of a send that say the connection failed (the node went, the send was cancelled); any other is the file's. */
const CONNECTION_ERRNOS = new Set(['EPIPE', 'ECONNRESET', 'ECONNABORTED', 'ENOTCONN', 'ETIMEDOUT', 'ECANCELED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'ESHUTDOWN']);

/** Uploads sent before their answers are read, at most (and this many bytes). */
const UPLOADS_AHEAD = 8;
const UPLOAD_BYTES_AHEAD = 16 << 20;

type Frame = { kind: number; hash: Buffer; payload: Buffer };

export class BulkLane {
  private readonly idle: LaneConnection[] = [];
  private closed = false;
  /** The node answered on this lane: something that speaks it is there (not a proxy that passes gRPC only). */
  private answered = false;
  private probing = false;

  constructor(private readonly opts: BulkLaneOptions) {}

  /**
   * Chunks in request order. Throws LaneUnavailable when no connection could
   * be had, a gRPC-shaped error for everything else (the node's own errors
   * carry their errno as gRPC's do).
   */
  async *fetch(hashes: Buffer[], hint: string, deadlineMs: number, quietMs = deadlineMs): AsyncGenerator<{ hash: Buffer; data: Buffer }> {
    // One deadline for the whole call, as gRPC's ReadChunks has; and no wait for a frame longer than quietMs.
    const deadline = Date.now() + deadlineMs;
    for (let from = 0; from < hashes.length; from += MAX_REQUEST_HASHES) {
      yield* this.fetchSome(hashes.slice(from, from + MAX_REQUEST_HASHES), hint, deadline, quietMs);
    }
  }

  private async *fetchSome(hashes: Buffer[], hint: string, deadline: number, quietMs = Infinity): AsyncGenerator<{ hash: Buffer; data: Buffer }> {
    const { conn, reused } = await this.acquire(deadline);
    let answered = false;
    let received = 0;
    let clean = false;
    try {
      conn.send(encodeRequest(hashes, hint));
      for (;;) {
        let f: Frame;
        try {
          f = await conn.next(Math.min(deadline, Date.now() + quietMs));
        } catch (err) {
          if (answered || err instanceof DeadlineError) throw err;
          // Closed before a word. A kept connection the node has closed
          // meanwhile: a fresh one, once. A fresh one: whatever listens
          // there does not speak the lane (a proxy passing on the node's
          // handshake, say): the caller uses gRPC.
          conn.destroy();
          if (!reused) throw new LaneUnavailable(`bulk lane to ${this.opts.host}:${this.opts.port}: ${(err as Error).message} before answering`);
          yield* this.fetchFresh(hashes, hint, deadline, quietMs);
          return;
        }
        answered = true;
        this.answered = true;
        if (f.kind === FRAME_CHUNK) {
          received++;
          yield { hash: f.hash, data: f.payload };
        } else if (f.kind === FRAME_END) {
          clean = received === hashes.length;
          if (!clean) throw serviceError(grpc.status.INTERNAL, `bulk lane: the node sent ${received} of ${hashes.length} chunks`);
          return;
        } else if (f.kind === FRAME_ERROR) {
          clean = true; // the request is over; the connection is fine
          throw remoteError(f.payload);
        } else {
          throw serviceError(grpc.status.INTERNAL, `bulk lane: unknown frame kind ${f.kind}`);
        }
      }
    } finally {
      if (clean) this.release(conn);
      else conn.destroy();
    }
  }

  /**
   * Whether calls may go on this lane: only once it has answered. A call
   * sent into a lane that turns out to lead nowhere could not be sent again
   * safely (the node may have run it); a fetch can, and an empty fetch (no
   * hashes: the node answers with its end frame) is the probe started here.
   */
  proven(): boolean {
    if (!this.answered && !this.probing && !this.closed) {
      this.probing = true;
      void (async () => {
        for await (const chunk of this.fetchSome([], '', Date.now() + PROBE_MS)) void chunk;
      })()
        .catch(() => undefined) // not yet: calls go over gRPC, and the next one probes again
        .finally(() => (this.probing = false));
    }
    return this.answered;
  }

  /**
   * A unary call carried by the lane: the serialized reply. Throws
   * LaneUnavailable when no connection could be had (nothing was sent: the
   * caller may use gRPC), a gRPC-shaped error for everything else.
   */
  async call(method: LaneCall, request: Buffer, deadlineMs: number): Promise<Buffer> {
    const deadline = Date.now() + deadlineMs;
    const { conn } = await this.acquire(deadline);
    let clean = false;
    try {
      conn.send(encodeCall(method, request));
      // Unlike a fetch, a call is not sent again here when the connection
      // breaks before the answer (a kept one the node closed meanwhile
      // included): the node may have run it. The error is a broken
      // connection's, as gRPC's would be, and the mesh client retries it
      // knowing that (a mutation recognizes its own earlier effect).
      const f = await conn.next(deadline);
      this.answered = true;
      clean = f.kind === FRAME_REPLY || f.kind === FRAME_ERROR;
      if (f.kind === FRAME_REPLY) return f.payload;
      if (f.kind === FRAME_ERROR) throw remoteError(f.payload);
      throw serviceError(grpc.status.INTERNAL, `bulk lane: unknown frame kind ${f.kind} in answer to a call`);
    } finally {
      if (clean) this.release(conn);
      else conn.destroy();
    }
  }

  /**
   * Uploads chunks in order, several on their way at once. Resolves with how
   * many the node found new and their bytes; throws LaneUnavailable when no
   * connection could be had, LaneUploadBroken when it broke on the way, a
   * gRPC-shaped error when the node refused a chunk.
   */
  async upload(chunks: AsyncIterator<UploadChunk>, deadlineMs: number): Promise<{ stored: number; bytes: number }> {
    const deadline = Date.now() + deadlineMs;
    try {
      return await this.uploadOn(await this.acquire(deadline), chunks, deadline);
    } catch (err) {
      // A kept connection the node closed meanwhile (nothing answered on it): a fresh one, once.
      if (!(err instanceof KeptConnectionGone)) throw err;
      for (const c of this.idle.splice(0)) c.destroy();
      return await this.uploadOn(await this.acquire(deadline), unsentThenRest(err, chunks), deadline);
    }
  }

  private async uploadOn({ conn, reused }: { conn: LaneConnection; reused: boolean }, chunks: AsyncIterator<UploadChunk>, deadline: number): Promise<{ stored: number; bytes: number }> {
    const waiting: UploadChunk[] = []; // sent, not answered yet
    let aheadBytes = 0;
    let stored = 0;
    let bytes = 0;
    let answered = false;
    let clean = false;
    const answer = async (): Promise<void> => {
      const f = await conn.next(deadline);
      this.answered = answered = true;
      const c = waiting.shift()!;
      aheadBytes -= c.data.length;
      // The node refused this chunk (its errno says why); the answers still due go with the connection.
      if (f.kind === FRAME_ERROR) throw new Refused(remoteError(f.payload));
      if (f.kind !== FRAME_REPLY || f.payload.length !== 1) throw serviceError(grpc.status.INTERNAL, `bulk lane: frame kind ${f.kind} in answer to an upload`);
      if (f.payload[0] === 1) {
        stored++;
        bytes += c.data.length;
      }
    };
    try {
      for (;;) {
        while (waiting.length >= UPLOADS_AHEAD || (waiting.length > 0 && aheadBytes >= UPLOAD_BYTES_AHEAD)) await answer();
        const next = await chunks.next();
        if (next.done) break;
        const c = next.value;
        // Counted as sent before it is: one whose send breaks the connection goes again with the unanswered.
        waiting.push(c);
        aheadBytes += c.data.length;
        const head = encodeUploadHead({ hash: c.hash, draft: c.draft ?? '', path: c.path ?? '', offset: c.offset ?? 0 }, c.data.length);
        if (Buffer.isBuffer(c.data)) conn.sendUpload(head, c.data);
        else {
          try {
            await conn.sendUploadFrom(head, c.data, deadline);
          } catch (err) {
            // What the node answered before the connection broke comes first: a refusal is its error, not a lane that broke.
            while (conn.hasFrames && waiting.length > 1) await answer();
            throw err;
          }
        }
        chunksUploaded.inc({ how: !Buffer.isBuffer(c.data) && conn.sendsFromFiles ? 'sendfile' : 'copied' });
      }
      while (waiting.length > 0) await answer();
      clean = true;
      return { stored, bytes };
    } catch (err) {
      if (err instanceof Refused) throw err.refusal;
      // The connection broke (not the node refusing a chunk, nor the deadline): what it did not confirm goes again.
      const code = (err as grpc.ServiceError).code;
      if (!(err instanceof DeadlineError) && (code === grpc.status.UNAVAILABLE || code === grpc.status.CANCELLED)) {
        const why = `bulk lane to ${this.opts.host}:${this.opts.port}: ${(err as Error).message}`;
        if (reused && !answered) throw new KeptConnectionGone(why, waiting, stored, bytes);
        throw new LaneUploadBroken(why, waiting, stored, bytes);
      }
      throw err;
    } finally {
      if (clean) this.release(conn);
      else conn.destroy();
    }
  }

  private async *fetchFresh(hashes: Buffer[], hint: string, deadline: number, quietMs: number): AsyncGenerator<{ hash: Buffer; data: Buffer }> {
    // Closed idle connections are dropped: the retry must open a new one.
    for (const c of this.idle.splice(0)) c.destroy();
    yield* this.fetchSome(hashes, hint, deadline, quietMs);
  }

  /** A kept connection that still works, else a new one; marked busy. */
  private async acquire(deadline: number): Promise<{ conn: LaneConnection; reused: boolean }> {
    let conn = this.idle.pop();
    while (conn && !conn.usable) {
      conn.destroy();
      conn = this.idle.pop();
    }
    const reused = conn !== undefined;
    conn ??= await this.open(deadline);
    conn.busy(true);
    return { conn, reused };
  }

  private async open(deadline: number): Promise<LaneConnection> {
    if (this.closed) throw new LaneUnavailable('the bulk lane is closed');
    const { host, port, tls } = this.opts;
    const reader = new FrameReader();
    // Plain sockets read straight into the buffer the reader names: a
    // chunk's bytes go from the kernel into the chunk's own buffer. TLS
    // decrypts into its own buffers; those are copied once.
    const socket = tls
      ? tlsConnect({ host, port, ca: tls.ca, cert: tls.cert, key: tls.key, ALPNProtocols: [BULK_ALPN], ...(isIP(host) ? {} : { servername: host }) })
      : netConnect({ host, port, onread: { buffer: () => reader.target(), callback: (n: number) => (reader.advance(n), true) } });
    if (tls) socket.on('data', (d: Buffer) => reader.feed(d));
    const conn = new LaneConnection(socket, reader);
    try {
      await conn.connected(deadline);
    } catch (err) {
      conn.destroy();
      throw new LaneUnavailable(`bulk lane to ${host}:${port}: ${(err as Error).message}`);
    }
    conn.send(encodeHello(this.opts.authorization, this.opts.workspace));
    return conn;
  }

  private release(conn: LaneConnection): void {
    if (this.closed || this.idle.length >= MAX_IDLE || !conn.usable) return conn.destroy();
    conn.busy(false);
    conn.idleSince = Date.now();
    this.idle.push(conn);
    // Idle ones are let go after a while; the check rides on each release.
    for (const c of this.idle.splice(0)) (Date.now() - c.idleSince > IDLE_MS ? c.destroy() : this.idle.push(c));
  }

  close(): void {
    this.closed = true;
    for (const c of this.idle.splice(0)) c.destroy();
  }
}

class DeadlineError extends Error {}

function deadlineError(): DeadlineError {
  return Object.assign(new DeadlineError('bulk lane: deadline exceeded'), { code: grpc.status.DEADLINE_EXCEEDED, details: 'bulk lane: deadline exceeded', metadata: new grpc.Metadata() });
}

/** The node's error frame in answer to an upload: what the caller gets, as gRPC's refusal. */
class Refused extends Error {
  constructor(readonly refusal: grpc.ServiceError) {
    super(refusal.message);
  }
}

/** An upload on a kept connection found it closed before any answer: tried again on a fresh one. */
class KeptConnectionGone extends LaneUploadBroken {}

/**
 * Bytes of chunks received and not yet taken by the caller before the
 * socket stops reading (and resumes below half of it): as gRPC's flow
 * control window, it bounds a big request's memory to a slow consumer.
 */
const MAX_QUEUED_BYTES = 32 << 20;

/** One socket and the frames parsed from it. */
class LaneConnection {
  idleSince = 0;
  private readonly frames: Frame[] = [];
  private queuedBytes = 0;
  private paused = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  /** Where uploads from files go by sendfile (plain TCP, addon built; undefined: nowhere). Null until looked up, once connected. */
  private sendfile: ReturnType<typeof sendfileTarget> | null = null;
  /** The cancel flag of the send from a file under way: set when the connection fails, it stops waiting for room in the socket. */
  private sending: Int32Array | undefined;

  constructor(
    private readonly socket: Socket,
    reader: FrameReader,
  ) {
    socket.setNoDelay(true);
    reader.onFrame = (f) => this.arrived(f);
    socket.on('error', (err) => this.fail(serviceError(grpc.status.UNAVAILABLE, `bulk lane: ${err.message}`)));
    socket.on('close', () => this.fail(serviceError(grpc.status.UNAVAILABLE, 'bulk lane: the node closed the connection')));
    reader.onError = (err) => {
      this.fail(err);
      socket.destroy();
    };
  }

  get usable(): boolean {
    return !this.failure && !this.socket.destroyed;
  }

  /** An idle connection does not keep the process alive. */
  busy(yes: boolean): void {
    if (yes) this.socket.ref();
    else this.socket.unref();
  }

  connected(deadline: number): Promise<void> {
    const event = 'encrypted' in this.socket ? 'secureConnect' : 'connect';
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('connect timed out')), Math.max(0, deadline - Date.now()));
      this.socket.once(event, () => {
        clearTimeout(timer);
        resolve();
      });
      this.socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  send(b: Buffer): void {
    this.socket.write(b);
  }

  /** Whether uploads from files go by sendfile here. */
  get sendsFromFiles(): boolean {
    if (this.sendfile === null) this.sendfile = sendfileTarget(this.socket);
    return this.sendfile !== undefined;
  }

  /** An upload's head and bytes, in one write of both (the bytes are not copied). */
  sendUpload(head: Buffer, data: Buffer): void {
    this.socket.cork();
    this.socket.write(head);
    this.socket.write(data);
    this.socket.uncork();
  }

  /** Whether a frame (an answer) has come and not been taken. */
  get hasFrames(): boolean {
    return this.frames.length > 0;
  }

  /**
   * An upload's head and bytes that lie in a file: sent from the file by the
   * kernel where the socket allows, else read and sent as above. Settles once
   * the file is no longer read (the range may be closed then). A send cut
   * short leaves half a frame, and the connection is closed: the error is
   * the deadline's, UNAVAILABLE when the connection failed (the caller sends
   * again elsewhere), or else the file's own (its errno; EIO for a file that
   * ends before the range).
   */
  async sendUploadFrom(head: Buffer, range: FileRange, deadline: number): Promise<void> {
    if (!this.sendsFromFiles) return this.sendUpload(head, await readRange(range));
    // What libuv still holds goes first; nothing is written from JS until the send is done.
    if (this.socket.writableLength > 0) await flushed(this.socket);
    const done = await fileSendTurn(deadline);
    const cancel = new Int32Array(1);
    const timer = setTimeout(() => (cancel[0] = 1), Math.max(0, deadline - Date.now()));
    try {
      if (this.failure) throw this.failure;
      this.sending = cancel;
      const to = this.sendfile!;
      await to.addon.sendFileRange(to.fd, head, range.fh.fd, range.offset, range.length, cancel);
    } catch (err) {
      const broke = this.failure; // the connection failed first (the send was cancelled for it)
      this.destroy();
      if (broke === err) throw err;
      if (Date.now() >= deadline) throw deadlineError();
      const e = err as NodeJS.ErrnoException;
      if (broke || CONNECTION_ERRNOS.has(e.code ?? '')) throw broke ?? serviceError(grpc.status.UNAVAILABLE, `bulk lane: ${e.message}`);
      // Nothing the connection did: the file's own error, with its errno.
      if (e.code === 'ENODATA') throw Object.assign(new Error(`${range.what} ends before ${range.offset + range.length}`), { code: 'EIO' });
      throw Object.assign(new Error(`sending ${range.what}: ${e.message}`), { code: e.code ?? 'EIO' });
    } finally {
      this.sending = undefined;
      clearTimeout(timer);
      done();
    }
  }

  async next(deadline: number): Promise<Frame> {
    for (;;) {
      const f = this.frames.shift();
      if (f) {
        this.queuedBytes -= f.payload.length;
        if (this.paused && this.queuedBytes < MAX_QUEUED_BYTES / 2) {
          this.paused = false;
          this.socket.resume();
        }
        return f;
      }
      if (this.failure) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) throw deadlineError();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  private arrived(f: Frame): void {
    this.frames.push(f);
    this.queuedBytes += f.payload.length;
    if (!this.paused && this.queuedBytes > MAX_QUEUED_BYTES) {
      this.paused = true;
      this.socket.pause();
    }
    this.wake?.();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    if (this.sending) this.sending[0] = 1;
    this.wake?.();
  }

  destroy(): void {
    this.failure ??= serviceError(grpc.status.CANCELLED, 'bulk lane: closed');
    if (this.sending) this.sending[0] = 1;
    this.socket.destroy();
  }
}

/** Parses frames; tells where the next bytes belong, so they can be read straight there. */
class FrameReader {
  onFrame: (f: Frame) => void = () => {};
  onError: (err: Error) => void = () => {};
  private readonly header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  private headerFill = 0;
  private body: Buffer | undefined;
  private bodyFill = 0;
  private kind = 0;
  private hash = Buffer.alloc(0);

  /** The buffer the next bytes go into: never empty. */
  target(): Buffer {
    return this.body ? this.body.subarray(this.bodyFill) : this.header.subarray(this.headerFill);
  }

  /** `n` bytes were written into target(). */
  advance(n: number): void {
    if (this.body) {
      this.bodyFill += n;
      if (this.bodyFill === this.body.length) this.emit(this.body);
      return;
    }
    this.headerFill += n;
    if (this.headerFill < FRAME_HEADER_BYTES) return;
    this.kind = this.header[0]!;
    this.hash = Buffer.from(this.header.subarray(1, 1 + HASH_BYTES));
    const len = this.header.readUInt32BE(1 + HASH_BYTES);
    this.headerFill = 0;
    if (len > MAX_MESSAGE_BYTES) return this.onError(serviceError(grpc.status.INTERNAL, `bulk lane: a frame of ${len} bytes is over the limit`));
    if (len === 0) return this.emit(Buffer.alloc(0));
    this.body = Buffer.allocUnsafe(len);
    this.bodyFill = 0;
  }

  feed(d: Buffer): void {
    for (let p = 0; p < d.length; ) {
      const n = d.copy(this.target(), 0, p);
      p += n;
      this.advance(n);
    }
  }

  private emit(payload: Buffer): void {
    this.body = undefined;
    this.onFrame({ kind: this.kind, hash: this.hash, payload });
  }
}

/** The node's error frame, as the gRPC error it stands for. */
function remoteError(payload: Buffer): grpc.ServiceError {
  try {
    const e = JSON.parse(payload.toString()) as { code: number; details: string; errno?: string; lacks?: string };
    return serviceError(e.code, e.details, e.errno, e.lacks);
  } catch {
    log.debug({ payload: payload.toString('hex', 0, 64) }, 'bulk lane: unreadable error frame');
    return serviceError(grpc.status.INTERNAL, 'bulk lane: unreadable error from the node');
  }
}
