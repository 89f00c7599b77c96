// The gRPC service of a node: wire messages in, index / chunk source /
// commit / mutations, wire messages out. Every handler checks the bearer
// token (when one is set) and turns failures into errno-carrying statuses.
import * as grpc from '@grpc/grpc-js';
import { timingSafeEqual } from 'node:crypto';
import { statfs } from 'node:fs/promises';
import { fromTimespec, isDir, isReg } from '../content/attr.js';
import { attrToWire, chunksFromWire, chunksToWire } from '../wire/convert.js';
import { errnoOf, FsError, toServiceError } from '../wire/errors.js';
import { PROTOCOL_VERSION, MAX_MESSAGE_BYTES, MAX_COMMIT_BATCH, MAX_COMMIT_BATCH_BYTES, wire } from '../wire/proto.js';
import type { LaneCall, UploadMeta } from '../wire/bulk-lane.js';
import type { BulkContext } from './bulk-server.js';
import { CHUNK_FRAME_RESERVE, frameChunk } from '../wire/chunk-frame.js';
import { HASH_ALGORITHM, hashChunk, hex } from '../content/manifest.js';
import type { NodeHandlers, WEntry, WStatFsReply, WChangeEvent, WPutChunkOut, WCommitRequestOut, WCommitReply, WCommitManyRequestOut, WMutateRequestOut } from '../wire/types.js';
import { log } from '../log.js';
import { nodeChunksServed, nodeChunksUploaded, rpcs, rpcSeconds } from '../admin/metrics.js';
import { baseName, checkPath } from './paths.js';
import { commitFile } from './commit.js';
import { NameLocks } from './name-locks.js';
import { checkOwner } from './owners.js';
import { mutate } from './mutations.js';
import type { Workspace } from './agent.js';
import type { IndexEntry } from './index-entry.js';
import type { Change } from './workspace-index.js';
import { waitAtMost } from '../util/wait-at-most.js';

/** Chunks a HasChunks call looks for at once. */
const HAS_CHUNKS_AT_ONCE = 8;
/** Uploaded chunks being verified and written at once, per PutChunks stream. */
const PUT_WINDOW = 8;
/** Bounds on the heartbeat interval a change-feed subscriber may ask for. */
const MIN_HEARTBEAT_MS = 100;
const MAX_HEARTBEAT_MS = 60_000;
/**
 * A subscriber not sent its own commits' changes (WatchRequest.writer) is
 * told its position this long after the first one left out: a restart
 * resumes its feed from there, not from before everything it wrote.
 */
const POSITION_DELAY_MS = 500;

export function entryToWire(path: string, e: IndexEntry): WEntry {
  return {
    name: path === '' ? '' : baseName(path),
    attr: attrToWire(e.attr),
    symlinkTarget: e.target ?? '',
    digest: e.digest ?? Buffer.alloc(0),
    chunks: e.chunks && e.chunks.length <= 1 ? chunksToWire(e.chunks) : [],
  };
}

interface ServiceContext {
  nodeId: string;
  token?: string;
  workspace(id: string): Workspace;
  /**
   * Change events a Watch subscriber may leave unread in the node's memory.
   * One further behind is cut off (RESOURCE_EXHAUSTED): it subscribes again
   * from the last event it applied, and the node replays the rest from its
   * change log, as fast as the subscriber reads.
   */
  feedMaxUnread: number;
}

function authorized(ctx: ServiceContext, md: grpc.Metadata): boolean {
  const got = md.get('authorization')[0];
  return bearerAccepted(ctx.token, typeof got === 'string' ? got : undefined);
}

/** Whether an authorization value ("Bearer <token>") lets a client in; anyone when the node has no token. */
export function bearerAccepted(token: string | undefined, presented: string | undefined): boolean {
  if (!token) return true;
  if (presented === undefined) return false;
  const a = Buffer.from(presented);
  const b = Buffer.from(`Bearer ${token}`);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Ends a server stream with an error status (destroy() would drop the status and leave the client waiting). */
function failStream(call: grpc.ServerWritableStream<unknown, unknown>, status: Partial<grpc.StatusObject>): void {
  call.emit('error', Object.assign(new Error(status.details), status));
}

export const UNAUTH = { code: grpc.status.UNAUTHENTICATED, details: 'missing or wrong bearer token' };

/** Wraps a unary handler: auth, errors as statuses, a debug log line per failure. */
function unary<Req, Res>(ctx: ServiceContext, name: string, fn: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, cb) => {
    if (!authorized(ctx, call.metadata)) return cb(UNAUTH);
    counted(name, 'grpc', () => fn(call.request)).then(
      (res) => cb(null, res),
      (err) => cb(toServiceError(err)),
    );
  };
}

/** Runs a call with its metrics (time, outcome by errno) and a debug log line when it fails: over gRPC and the lane alike. */
async function counted<Res>(name: string, over: 'grpc' | 'lane', fn: () => Promise<Res>): Promise<Res> {
  const end = rpcSeconds.startTimer({ method: name });
  try {
    const res = await fn();
    rpcs.inc({ method: name, errno: '0', over });
    return res;
  } catch (err) {
    const s = toServiceError(err);
    rpcs.inc({ method: name, errno: String(s.metadata?.get('ghostfs-errno')[0] ?? 'EIO'), over });
    log.debug({ rpc: name, err: s.details }, 'request failed');
    throw err;
  } finally {
    end();
  }
}

/** Chunks sent inside a commit, each checked against its hash before use. */
function verifiedInline(chunks: { hash: Buffer; data: Buffer }[]): Map<string, Buffer> | undefined {
  if (!chunks.length) return undefined;
  const out = new Map<string, Buffer>();
  for (const c of chunks) {
    if (!hashChunk(c.data).equals(c.hash)) throw new FsError('EIO', `inline chunk does not match its hash ${hex(c.hash)}`);
    out.set(Buffer.from(c.hash).toString('latin1'), c.data);
  }
  return out;
}

/**
 * Longest a listing or stat waits for changes the watcher has noticed at
 * its path and not yet put in the index (see caughtUp). It waits longer
 * only while a big file changed behind the node is hashed: then it
 * answers from the disk rather than keep its caller past a deadline.
 */
const NOTICED_WAIT_MS = 500;

/**
 * Waits until what the watcher has noticed at `path` (a file, or the names
 * in a directory) is in the index, NOTICED_WAIT_MS at most. A file
 * rewritten in place a moment ago (by another program, or by another node
 * on a shared root) changes no directory, so only its event tells: without
 * this, a listing within the watcher's delay handed out the entry from
 * before it, and a mount that had just switched to this node took the
 * older version for the current one. False when it gave up: the caller
 * then answers from the disk (asOnDisk, listOnDisk). The index's answer
 * would lack the changes queued behind the one being applied, and a mount
 * told that a file it just committed through another node is not there
 * drops it from its view.
 */
async function caughtUp(ws: Workspace, path: string): Promise<boolean> {
  const w = ws.watcher;
  if (!w) return true;
  // Walking the whole tree after lost events (minutes, in a big one): the disk answers meanwhile.
  if (w.behindAt(path) && !w.walking) await waitAtMost(w.settled(), NOTICED_WAIT_MS);
  return !w.walking && !w.behindAt(path);
}

/** The node's calls: gRPC's handlers, and the unary calls the bulk lane carries (sharing one set of name locks). */
export function makeService(ctx: ServiceContext): { handlers: NodeHandlers; laneCall: BulkContext['call']; laneUpload: BulkContext['upload'] } {
  const locks = new NameLocks();

  const stat = async (ws: Workspace, path: string): Promise<IndexEntry> => {
    let e = ws.index.entries.get(path);
    if (!e) {
      // Not indexed (yet): look at the disk, confined, before saying ENOENT.
      await ws.index.paths.safeAbs(path);
      await ws.index.findUnindexed(path);
      e = ws.index.entries.get(path);
    }
    if (!e) throw new FsError('ENOENT', `"${path}" does not exist`);
    return e;
  };

  const commitOne = async (ws: Workspace, req: WCommitRequestOut): Promise<WCommitReply> => {
    const path = checkPath(req.path);
    const r = await locks.commit(ws.index, path, (holdFileNames) =>
      ws.index.committing(path, () => commitFile(ws.index, ws.chunks, {
        path,
        baseDigest: req.baseDigest.length ? Buffer.from(req.baseDigest) : undefined,
        expectAbsent: req.expectAbsent,
        digest: Buffer.from(req.digest),
        size: req.size,
        chunks: chunksFromWire(req.chunks),
        inline: verifiedInline(req.inline),
        mode: req.mode,
        mtimeNs: req.mtime ? fromTimespec(req.mtime) : undefined,
        atimeNs: req.atime ? fromTimespec(req.atime) : undefined,
        clientId: req.clientId,
        alsoBases: req.alsoBases.map((d) => Buffer.from(d)),
        draft: req.draft || undefined,
        owner: req.owner ? checkOwner(req.owner) : undefined,
        writer: req.writer || undefined,
        readsAlso: req.readsAlso,
        holdFileNames,
      })),
    );
    const also = (r.also ?? []).map((x) => ({ ...entryToWire(x.path, x.entry), name: x.path }));
    return { conflict: r.conflict, conflictPath: r.conflict ? r.path : '', entry: entryToWire(r.path, r.entry), also, generation: r.generation, ownerErrno: r.ownerErrno ?? '' };
  };

  const mutateOne = async (ws: Workspace, req: WMutateRequestOut): Promise<{ entries: WEntry[]; generation: number }> => {
    const r = await locks.mutation(ws.id, req, () => {
      // Its caller has stopped waiting and was told the change failed: a node
      // that hung, or queued it behind slow work, must not make it now.
      if (req.applyBeforeMs > 0 && Date.now() > req.applyBeforeMs) {
        throw new FsError('ETIMEDOUT', `the change came ${Date.now() - req.applyBeforeMs} ms after its caller stopped waiting; not made`);
      }
      return mutate(ws.index, req);
    });
    const entries: WEntry[] = r.changed.filter((c) => c.entry).map((c) => ({ ...entryToWire(c.path, c.entry!), name: c.path }));
    // Exact: a writer places the feed's older events by it (a rename's, see OwnRenames).
    return { entries, generation: r.generation ?? ws.index.generation };
  };

  // Unary calls, as gRPC's handlers and the bulk lane's calls (LANE_CALLS)
  // both run them (the lane checks the workspace against its hello).
  const calls = {
    Stat: async (req: { workspace: string; path: string }) => {
      const ws = ctx.workspace(req.workspace);
      const path = checkPath(req.path);
      if (await caughtUp(ws, path)) return entryToWire(path, await stat(ws, path));
      const e = await ws.index.asOnDisk(path);
      if (!e) throw new FsError('ENOENT', `"${path}" does not exist`);
      return entryToWire(path, e);
    },

    ListDir: async (req: { workspace: string; path: string }) => {
      const ws = ctx.workspace(req.workspace);
      const path = checkPath(req.path);
      const upToDate = await caughtUp(ws, path);
      let dir = upToDate ? await stat(ws, path) : await ws.index.asOnDisk(path);
      if (!dir) throw new FsError('ENOENT', `"${path}" does not exist`);
      if (!isDir(dir.attr.mode)) throw new FsError('ENOTDIR', `"${path}" is not a directory`);
      if (!upToDate) {
        const listed = await ws.index.listOnDisk(path);
        return { dir: entryToWire(path, dir), entries: listed.map((c) => entryToWire(c.path, c.entry)), generation: ws.index.generation };
      }
      await ws.index.syncNames(path);
      dir = ws.index.entries.get(path) ?? dir;
      const names = ws.index.listChildren(path) ?? [];
      const entries: WEntry[] = [];
      for (const name of names) {
        const child = path === '' ? name : `${path}/${name}`;
        const e = ws.index.entries.get(child);
        if (e) entries.push(entryToWire(child, e));
      }
      return { dir: entryToWire(path, dir), entries, generation: ws.index.generation };
    },

    GetManifest: async (req: { workspace: string; path: string }) => {
      const ws = ctx.workspace(req.workspace);
      const path = checkPath(req.path);
      const e = ws.index.entries.get(path) ?? (await stat(ws, path));
      if (!isReg(e.attr.mode)) throw new FsError(isDir(e.attr.mode) ? 'EISDIR' : 'EINVAL', `"${path}" is not a regular file`);
      const v = await ws.index.validate(path);
      return { path, digest: v.digest!, size: v.attr.size, chunks: chunksToWire(v.chunks!), attr: attrToWire(v.attr) };
    },

    StatFs: async (req: { workspace: string }): Promise<WStatFsReply> => {
      const s = await statfs(ctx.workspace(req.workspace).index.paths.root);
      // Node's statfs does not give the name length limit; 255 is Linux's NAME_MAX, which its filesystems keep to.
      return { blockSize: s.bsize, blocks: s.blocks, blocksFree: s.bfree, blocksAvailable: s.bavail, files: s.files, filesFree: s.ffree, nameMax: 255 };
    },

    Commit: async (req: WCommitRequestOut) => commitOne(ctx.workspace(req.workspace), req),

    Mutate: async (req: WMutateRequestOut) => mutateOne(ctx.workspace(req.workspace), req),
  };

  const handlers = {
    Handshake: unary(ctx, 'Handshake', async (req: { workspace: string; protocolVersion: number }) => {
      const ws = ctx.workspace(req.workspace);
      if (req.protocolVersion !== PROTOCOL_VERSION) {
        throw new FsError('EPROTO', `protocol version ${req.protocolVersion} is not supported (this node speaks ${PROTOCOL_VERSION})`);
      }
      const p = ws.params;
      return {
        workspace: ws.id,
        nodeId: ctx.nodeId,
        protocolVersion: PROTOCOL_VERSION,
        hashAlgorithm: HASH_ALGORITHM,
        chunking: { algorithm: p.algorithm, minSize: p.min, avgSize: p.avg, maxSize: p.max },
        generation: ws.index.generation,
        epoch: ws.index.epoch,
        rootIno: ws.index.entries.get('')?.attr.ino ?? 0,
        hardLinks: true,
        maxMessageBytes: MAX_MESSAGE_BYTES,
        bulkLane: true,
        laneCalls: true,
        laneUploads: true,
        nodeTimeMs: Date.now(),
        nodeOwner: { uid: process.geteuid?.() ?? -1, gid: process.getegid?.() ?? -1 },
      };
    }),

    Stat: unary(ctx, 'Stat', calls.Stat),
    ListDir: unary(ctx, 'ListDir', calls.ListDir),
    GetManifest: unary(ctx, 'GetManifest', calls.GetManifest),
    StatFs: unary(ctx, 'StatFs', calls.StatFs),

    ReadChunks: (call: grpc.ServerWritableStream<{ workspace: string; hashes: Buffer[]; pathHint: string }, unknown>) => {
      if (!authorized(ctx, call.metadata)) return failStream(call, UNAUTH);
      void (async () => {
        try {
          const ws = ctx.workspace(call.request.workspace);
          const hint = call.request.pathHint ? checkPath(call.request.pathHint, 'path hint') : undefined;
          for await (const { hash, buf } of ws.chunks.readMany(call.request.hashes.map((h) => Buffer.from(h)), hint, CHUNK_FRAME_RESERVE)) {
            if (call.cancelled) return;
            // Pre-framed: the service's serializer passes it through as is.
            const msg = frameChunk(hash, buf, buf.length - CHUNK_FRAME_RESERVE);
            nodeChunksServed.inc({ how: 'copied' });
            // Back-pressure: wait for the transport before the next chunk.
            if (!call.write(msg)) await new Promise((r) => call.once('drain', r));
          }
          call.end();
        } catch (err) {
          failStream(call, toServiceError(err));
        }
      })();
    },

    HasChunks: unary(ctx, 'HasChunks', async (req: { workspace: string; hashes: Buffer[] }) => {
      const ws = ctx.workspace(req.workspace);
      // A few at a time: a staged chunk is a stat on the thread pool, and a
      // big file's close asks about hundreds (one after another, each waits
      // for the last; all at once they would queue ahead of the thread
      // pool's other work).
      const have = new Array<boolean>(req.hashes.length);
      let next = 0;
      const asker = async (): Promise<void> => {
        for (let i = next++; i < req.hashes.length; i = next++) have[i] = await ws.chunks.has(Buffer.from(req.hashes[i]!));
      };
      await Promise.all(Array.from({ length: Math.min(HAS_CHUNKS_AT_ONCE, req.hashes.length) }, asker));
      return { missing: have.flatMap((ok, i) => (ok ? [] : [i])) };
    }),

    PutChunks: (call: grpc.ServerReadableStream<WPutChunkOut, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (!authorized(ctx, call.metadata)) return cb(UNAUTH);
      let ws: Workspace | undefined;
      let stored = 0;
      let bytes = 0;
      let failed = false;
      // Several chunks are verified and written at once while more arrive;
      // the stream pauses only when that many are in hand.
      const inFlight = new Set<Promise<void>>();
      const fail = (err: unknown): void => {
        if (failed) return;
        failed = true;
        cb(toServiceError(err));
      };
      call.on('data', (m: WPutChunkOut) => {
        if (failed) return;
        try {
          ws ??= ctx.workspace(m.workspace);
        } catch (err) {
          return fail(err);
        }
        const p: Promise<void> = ws.chunks
          .put(m.hash, m.data, m.draft ? { draft: m.draft, path: m.path, offset: m.offset } : undefined)
          .then((isNew) => {
            if (!isNew) return;
            nodeChunksUploaded.inc({ over: 'grpc' });
            stored++;
            bytes += m.data.length;
          })
          .catch(fail)
          .finally(() => {
            inFlight.delete(p);
            if (inFlight.size < PUT_WINDOW) call.resume();
          });
        inFlight.add(p);
        if (inFlight.size >= PUT_WINDOW) call.pause();
      });
      call.on('end', () =>
        void Promise.all(inFlight).then(() => {
          if (failed) return;
          log.info({ workspace: ws?.id, stored, bytes }, 'chunks uploaded');
          cb(null, { stored, bytes });
        }),
      );
      call.on('error', fail);
    },

    Commit: unary(ctx, 'Commit', calls.Commit),

    CommitMany: unary(ctx, 'CommitMany', async (req: WCommitManyRequestOut) => {
      const ws = ctx.workspace(req.workspace);
      if (req.commits.length > MAX_COMMIT_BATCH) throw new FsError('EINVAL', `at most ${MAX_COMMIT_BATCH} commits per call (got ${req.commits.length})`);
      const inlineBytes = req.commits.reduce((n, c) => n + c.inline.reduce((m, x) => m + x.data.length, 0), 0);
      if (inlineBytes > MAX_COMMIT_BATCH_BYTES) throw new FsError('EINVAL', `at most ${MAX_COMMIT_BATCH_BYTES} inline bytes per call (got ${inlineBytes})`);
      // Each commit succeeds or fails on its own; running them together lets
      // their directory fsyncs and index writes be shared.
      const outcomes = await Promise.all(
        req.commits.map((c) =>
          commitOne(ws, c).then(
            (reply) => ({ reply, errno: '', message: '' }),
            (err) => {
              const s = toServiceError(err);
              return { errno: errnoOf(s), message: s.details ?? '' };
            },
          ),
        ),
      );
      return { outcomes };
    }),

    Mutate: unary(ctx, 'Mutate', calls.Mutate),

    Watch: (call: grpc.ServerWritableStream<{ workspace: string; fromGeneration: number; epoch: string; heartbeatMs: number; writer: string }, WChangeEvent>) => {
      if (!authorized(ctx, call.metadata)) return failStream(call, UNAUTH);
      let ws: Workspace;
      try {
        ws = ctx.workspace(call.request.workspace);
      } catch (err) {
        return failStream(call, toServiceError(err));
      }
      const index = ws.index;
      const event = (generation: number, path: string, e: IndexEntry | null | undefined): WChangeEvent =>
        e
          ? { generation, kind: 'CHANGED', path, entry: entryToWire(path, e), epoch: index.epoch }
          : { generation, kind: 'REMOVED', path, epoch: index.epoch };
      // Live changes are held back until the backlog has been sent.
      let backlogDone = false;
      let sentUpTo = 0;
      let stopped = false;
      const held: Change[] = [];
      const cutOff = (): void => {
        log.info({ peer: call.getPeer(), workspace: ws.id, unread: ctx.feedMaxUnread }, 'change-feed subscriber cut off: too far behind; it catches up from the change log when it subscribes again');
        stop();
        failStream(call, { code: grpc.status.RESOURCE_EXHAUSTED, details: `more than ${ctx.feedMaxUnread} change events unread: subscribe again from the last one applied` });
      };
      /** Writes an event; false when the subscriber should read before more is written. */
      const send = (e: WChangeEvent): boolean => {
        const room = call.write(e);
        if (call.writableLength > ctx.feedMaxUnread) cutOff();
        return room;
      };
      // The subscriber's own commits and changes: their replies told it (a change log replayed carries no writer, and goes out whole).
      const writer = call.request.writer;
      let positionTimer: NodeJS.Timeout | undefined;
      const tellPosition = (): void => {
        positionTimer = undefined;
        if (!stopped) send({ generation: sentUpTo, kind: 'POSITION', path: '', epoch: index.epoch });
      };
      const onChange = (c: Change): void => {
        if (stopped) return;
        if (!backlogDone) {
          held.push(c);
          if (held.length > ctx.feedMaxUnread) cutOff();
        } else if (c.generation > sentUpTo) {
          sentUpTo = c.generation;
          if (writer && c.origin === writer) positionTimer ??= setTimeout(tellPosition, POSITION_DELAY_MS);
          else send(event(c.generation, c.path, c.entry));
        }
      };
      /** Until the subscriber has read what it was sent (or is gone). */
      const drained = (): Promise<void> =>
        new Promise((resolve) => {
          const events = ['drain', 'close', 'cancelled', 'error'];
          const done = (): void => {
            for (const e of events) call.off(e, done);
            resolve();
          };
          for (const e of events) call.on(e, done);
        });
      index.on('change', onChange);
      // A quiet workspace sends heartbeats: silence then means a dead stream, not a workspace without changes.
      const every = call.request.heartbeatMs ? Math.min(Math.max(call.request.heartbeatMs, MIN_HEARTBEAT_MS), MAX_HEARTBEAT_MS) : 0;
      // None while events wait to be read: they tell the subscriber the stream is alive, and unread heartbeats would pile up.
      const heartbeat = every ? setInterval(() => call.writableLength === 0 && call.write({ generation: 0, kind: 'HEARTBEAT', path: '', epoch: index.epoch }), every) : undefined;
      const stop = (): void => {
        stopped = true;
        clearInterval(heartbeat);
        clearTimeout(positionTimer);
        index.off('change', onChange);
      };
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
      void (async () => {
        const from = call.request.fromGeneration;
        if (call.request.epoch !== index.epoch || from < index.logFloor || from > index.generation) {
          sentUpTo = index.generation;
          call.write({ generation: sentUpTo, kind: 'RESET', path: '', epoch: index.epoch });
        } else {
          sentUpTo = from;
          for await (const { path, generation } of index.changedSince(from)) {
            if (stopped) return;
            // The backlog goes out as fast as the subscriber reads it, not all into memory at once.
            if (!send(event(generation, path, index.entries.get(path)))) await drained();
            sentUpTo = Math.max(sentUpTo, generation);
          }
          if (stopped) return;
        }
        backlogDone = true;
        send({ generation: sentUpTo, kind: 'READY', path: '', epoch: index.epoch });
        for (const c of held.splice(0)) onChange(c);
      })().catch((err) => {
        stop();
        failStream(call, toServiceError(err));
      });
    },
  } as unknown as NodeHandlers;

  // The lane's calls: gRPC's own (de)serializers, so a request and its reply are the same messages either way.
  const defs = wire().ghostfs.v1.Node.service;
  const laneCall = async (ws: Workspace, method: LaneCall, request: Buffer): Promise<Buffer> => {
    const def = defs[method] as { requestDeserialize(b: Buffer): unknown; responseSerialize(v: unknown): Buffer };
    const req = def.requestDeserialize(request) as { workspace: string };
    // The connection's hello named the workspace (and was authorized for it).
    if (req.workspace !== ws.id) throw new FsError('EINVAL', `a call for workspace "${req.workspace}" on a lane opened for "${ws.id}"`);
    return def.responseSerialize(await counted(method, 'lane', () => (calls[method] as (r: unknown) => Promise<unknown>)(req)));
  };
  // An upload on the lane is one chunk of a PutChunks stream, counted as one call.
  const laneUpload = async (ws: Workspace, u: UploadMeta, data: Buffer): Promise<boolean> => {
    const isNew = await counted('PutChunks', 'lane', () => ws.chunks.put(u.hash, data, u.draft ? { draft: u.draft, path: u.path, offset: u.offset } : undefined));
    if (isNew) nodeChunksUploaded.inc({ over: 'lane' });
    return isNew;
  };
  return { handlers, laneCall, laneUpload };
}
