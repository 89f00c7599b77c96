// The bulk lane: chunk bytes beside gRPC, on the node's own port. gRPC stays
// the contract for everything (and the fallback for chunks); the lane only
// moves ReadChunks' payload with less work per byte. Measured here on
// loopback, 1 GiB in 1 MiB messages: gRPC costs ~0.8 s of the receiver's
// CPU and ~0.95 s of the sender's; a plain socket read straight into each
// chunk's buffer ~0.3 s and ~0.35 s. On a two-core machine that CPU is the
// cold read's ceiling.
//
// A connection is told apart from HTTP/2 by its first four bytes (HTTP/2's
// preface starts "PRI "), after TLS when the node uses it. Then:
//   client: hello  = "GFB1" u16 len authorization u16 len workspace
//           (authorization as gRPC's header carries it: "Bearer <token>", or empty)
//   client: request = u32 bodyLen, body = u16 hintLen hint u16 count hash*count
//   node:   frames  = u8 kind, 32-byte hash, u32 payloadLen, payload
// A request is answered by one chunk frame per hash in order, then an end
// frame; or by an error frame, which also ends the request (payload: JSON
// {code, details, errno}: gRPC's status, its text and the errno, so the
// mount handles it as the gRPC error it stands for). One request at a time
// per connection. A hello the node refuses gets an error frame and the
// connection is closed.
//
// A node whose handshake says `lane_calls` also takes small unary calls
// (Commit, Mutate) on the lane: grpc-js and HTTP/2 add much to a small file's
// commit (measured here, beyond the node's own work: 1.7–1.9 ms per call
// over gRPC, 0.8 ms on the lane).
//   client: call  = u32 (CALL_FLAG | bodyLen), body = u8 method, the request
//                   as gRPC serializes it (protobuf)
//   node:   reply = one reply frame (payload: the reply, protobuf) or one
//                   error frame
//
// A node whose handshake says `lane_uploads` also takes chunks on the lane
// (PutChunks' job), without gRPC's copies of each chunk (protobuf's, its
// framing's, HTTP/2's reassembly): the bytes go from the mount's buffer to
// the socket, and from the socket into one buffer on the node.
//   client: upload = u32 (UPLOAD_FLAG | metaLen), meta, u32 dataLen, data
//           meta   = 32-byte hash, u64 offset, u16 len draft, u16 len path
//                    (draft, path and offset as PutChunk's; draft empty when none)
//   node:   one reply frame per upload (payload: one byte, 1 when the chunk
//           was new), or an error frame for that upload (the node goes on
//           reading; the mount gives the error to its caller and closes the
//           connection, with the answers still due)
// Uploads may follow one another without waiting for their answers, which
// come in order; the node reads the next one once it has taken the last.
import { HASH_BYTES } from '../content/manifest.js';
import { FsError } from './errors.js';

export const BULK_MAGIC = Buffer.from('GFB1');
/** TLS application protocol the lane's clients offer (the node also offers gRPC's "h2"). */
export const BULK_ALPN = 'ghostfs-bulk/1';

export const FRAME_CHUNK = 1;
export const FRAME_ERROR = 2;
export const FRAME_END = 3;
export const FRAME_REPLY = 4;

/** Set in a request's length word: the request is a unary call. */
export const CALL_FLAG = 0x8000_0000;
/** Set in a request's length word: the request is an upload. */
export const UPLOAD_FLAG = 0x4000_0000;
/** The calls the lane carries, by the number that names them on the wire. */
export const LANE_CALLS = { Commit: 1, Mutate: 2 } as const;
export type LaneCall = keyof typeof LANE_CALLS;
/** A call's body at most (bigger ones go over gRPC): a small file's commit with its bytes inline, a namespace change. */
export const MAX_CALL_BYTES = 512 * 1024;
export const FRAME_HEADER_BYTES = 1 + HASH_BYTES + 4;

/** Limits the node enforces on what a client sends. */
export const MAX_HELLO_FIELD_BYTES = 4096;
export const MAX_REQUEST_HASHES = 4096;
export const MAX_HINT_BYTES = 4096;
export const MAX_HELLO_BYTES = 4 + 2 + MAX_HELLO_FIELD_BYTES + 2 + MAX_HELLO_FIELD_BYTES;
export const MAX_REQUEST_BYTES = 4 + 2 + MAX_HINT_BYTES + 2 + MAX_REQUEST_HASHES * HASH_BYTES;
/** An upload's meta at most: a draft id and a path well beyond what either is. */
export const MAX_UPLOAD_META_BYTES = HASH_BYTES + 8 + 2 + 256 + 2 + 4096;

/** What an upload says besides its bytes. */
export interface UploadMeta {
  hash: Buffer;
  /** The file's draft on the node ('' for none), its path and the chunk's offset in it. */
  draft: string;
  path: string;
  offset: number;
}

export function encodeHello(authorization: string, workspace: string): Buffer {
  const t = Buffer.from(authorization);
  const w = Buffer.from(workspace);
  const out = Buffer.allocUnsafe(4 + 2 + t.length + 2 + w.length);
  BULK_MAGIC.copy(out, 0);
  out.writeUInt16BE(t.length, 4);
  t.copy(out, 6);
  out.writeUInt16BE(w.length, 6 + t.length);
  w.copy(out, 8 + t.length);
  return out;
}

export function encodeRequest(hashes: Buffer[], hint: string): Buffer {
  const h = Buffer.from(hint);
  const body = 2 + h.length + 2 + hashes.length * HASH_BYTES;
  const out = Buffer.allocUnsafe(4 + body);
  out.writeUInt32BE(body, 0);
  out.writeUInt16BE(h.length, 4);
  h.copy(out, 6);
  let p = 6 + h.length;
  out.writeUInt16BE(hashes.length, p);
  p += 2;
  for (const hash of hashes) p += hash.copy(out, p, 0, HASH_BYTES);
  return out;
}

export function encodeCall(method: LaneCall, request: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + 1 + request.length);
  out.writeUInt32BE((CALL_FLAG | (1 + request.length)) >>> 0, 0);
  out[4] = LANE_CALLS[method];
  request.copy(out, 5);
  return out;
}

/** An upload's head: everything before its bytes, which follow it on the wire as they are. */
export function encodeUploadHead(u: UploadMeta, dataLength: number): Buffer {
  const d = Buffer.from(u.draft);
  const p = Buffer.from(u.path);
  const metaLength = HASH_BYTES + 8 + 2 + d.length + 2 + p.length;
  if (metaLength > MAX_UPLOAD_META_BYTES) throw new FsError('ENAMETOOLONG', `an upload's draft id and path take ${metaLength} bytes`);
  const out = Buffer.allocUnsafe(4 + metaLength + 4);
  out.writeUInt32BE((UPLOAD_FLAG | metaLength) >>> 0, 0);
  u.hash.copy(out, 4, 0, HASH_BYTES);
  let at = 4 + HASH_BYTES;
  out.writeBigUInt64BE(BigInt(u.offset), at);
  at = out.writeUInt16BE(d.length, at + 8);
  at += d.copy(out, at);
  at = out.writeUInt16BE(p.length, at);
  at += p.copy(out, at);
  out.writeUInt32BE(dataLength, at);
  return out;
}

/** An upload's meta (between its length word and its data length); undefined when malformed. */
export function decodeUploadMeta(b: Buffer): UploadMeta | undefined {
  if (b.length < HASH_BYTES + 8 + 2 + 2) return undefined;
  const hash = Buffer.from(b.subarray(0, HASH_BYTES));
  const offset = Number(b.readBigUInt64BE(HASH_BYTES));
  let at = HASH_BYTES + 8;
  const dl = b.readUInt16BE(at);
  at += 2;
  if (at + dl + 2 > b.length) return undefined;
  const draft = b.toString('utf8', at, at + dl);
  at += dl;
  const pl = b.readUInt16BE(at);
  at += 2;
  if (at + pl !== b.length || !Number.isSafeInteger(offset)) return undefined;
  return { hash, offset, draft, path: b.toString('utf8', at, at + pl) };
}

export function replyFrame(reply: Buffer): Buffer {
  return payloadFrame(FRAME_REPLY, reply);
}

/** A frame without a hash, carrying `payload`. */
function payloadFrame(kind: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  writeFrameHeader(out, 0, kind, undefined, payload.length);
  payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}

/** Writes a frame header into `buf` at `at` (the hash is zeros when absent). */
export function writeFrameHeader(buf: Buffer, at: number, kind: number, hash: Buffer | undefined, payloadLength: number): void {
  buf[at] = kind;
  if (hash) hash.copy(buf, at + 1, 0, HASH_BYTES);
  else buf.fill(0, at + 1, at + 1 + HASH_BYTES);
  buf.writeUInt32BE(payloadLength, at + 1 + HASH_BYTES);
}

/** gRPC's status INTERNAL, for an error that names none. */
const GRPC_INTERNAL = 13;

export interface BulkError {
  code?: number;
  details?: string;
  errno?: string;
  /** What an ENOENT is about when not a path (errors.ts: LACKS_KEY). */
  lacks?: string;
}

export function errorFrame(e: BulkError): Buffer {
  return payloadFrame(FRAME_ERROR, Buffer.from(JSON.stringify({ code: e.code ?? GRPC_INTERNAL, details: e.details ?? 'internal error', errno: e.errno, lacks: e.lacks })));
}

export function endFrame(): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  writeFrameHeader(out, 0, FRAME_END, undefined, 0);
  return out;
}
