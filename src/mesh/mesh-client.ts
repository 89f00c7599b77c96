// The mount's way to the mesh: a primary endpoint and its replicas. Every
// call has a deadline; a replica that fails at the transport level is set
// aside for a short, growing back-off and the call moves on to the next
// one; filesystem answers (ENOENT, EACCES...) come back at once. Chunk bytes
// are verified here, once, as they arrive: a chunk that does not match its
// hash is refused and asked of another replica.
import * as grpc from '@grpc/grpc-js';
import { hashChunk, hex } from '../content/manifest.js';
import { answerLost, FsError, nodeErrno, tooLargeToSend } from '../wire/errors.js';
import type { WChangeEventOut, WHandshakeReplyOut, WMutateReplyOut, WMutateRequest } from '../wire/types.js';
import { appliedBefore } from './mutation-retry.js';
import { log } from '../log.js';
import { NodeConnection, type ChunkPath, type ConnectionOptions } from './connection.js';

export interface ReplicaHealth {
  endpoint: string;
  healthy: boolean;
  failures: number;
  lastError?: string;
  corruptChunks: number;
  /** Connections replaced after a call missed its deadline. */
  renewals: number;
  /** How chunk bytes travel from this node. */
  chunks: ChunkPath;
}

interface Replica extends Omit<ReplicaHealth, 'renewals' | 'chunks'> {
  conn: NodeConnection;
  downUntil: number;
  /**
   * Rounds of asking in a row that missed their deadline (0 once it answers,
   * or fails otherwise): 1 once any call missed it, and one more each time
   * the one call at a time asked after that misses it too. From two on it is
   * taken to hang (take calls, answer none); one alone may be a single
   * answer the link lost.
   */
  silentRounds: number;
  /** The call to this silent replica under way, that finds out whether it answers again: settled when it is over. */
  probe?: { over: Promise<void>; end: () => void };
}

export interface MeshStats {
  chunksFetched: number;
  bytesFetched: number;
  corruptChunks: number;
  failovers: number;
}

/** A call refused here without sending it: it tells nothing of the node. */
class Unsent extends FsError {}

/** True for failures of the node or the network, not answers of the filesystem. */
function isTransportError(err: unknown): boolean {
  const e = err as grpc.ServiceError;
  if (nodeErrno(err) !== undefined || tooLargeToSend(err)) return false;
  return (
    e?.code === grpc.status.UNAVAILABLE ||
    e?.code === grpc.status.DEADLINE_EXCEEDED ||
    e?.code === grpc.status.CANCELLED ||
    e?.code === grpc.status.UNKNOWN ||
    e?.code === grpc.status.INTERNAL ||
    e?.code === grpc.status.RESOURCE_EXHAUSTED ||
    answerLost(err)
  );
}

/** The connection broke under the call (reset, dropped), as opposed to none being had: a new one is usually there at once. */
function isConnectionLoss(err: unknown): boolean {
  const e = err as grpc.ServiceError;
  return e?.code === grpc.status.UNAVAILABLE && !/No connection established/i.test(e.details ?? '');
}

/**
 * The slowest rate a node is expected to write or hash at (20 MB/s): a call
 * that makes it handle that many bytes gets 1 ms more deadline per this
 * many, so a big file does not look like a dead node.
 */
export const SLOW_NODE_BYTES_PER_MS = 20_000;

export class MeshClient {
  private readonly replicas: Replica[];
  readonly stats: MeshStats = { chunksFetched: 0, bytesFetched: 0, corruptChunks: 0, failovers: 0 };

  constructor(
    endpoints: string[],
    readonly workspace: string,
    private readonly opts: ConnectionOptions & { backoffMs?: number } = {},
  ) {
    if (endpoints.length === 0) throw new Error('at least one endpoint is needed');
    this.replicas = endpoints.map((endpoint) => ({
      endpoint,
      conn: new NodeConnection(endpoint, workspace, opts),
      healthy: true,
      failures: 0,
      corruptChunks: 0,
      downUntil: 0,
      silentRounds: 0,
    }));
  }

  get deadlineMs(): number {
    return this.replicas[0]!.conn.deadlineMs;
  }

  /** Some node is taken to answer (none has failed since its last answer). */
  get reachable(): boolean {
    return this.replicas.some((r) => r.healthy);
  }

  health(): ReplicaHealth[] {
    return this.replicas.map(({ endpoint, healthy, failures, lastError, corruptChunks, conn }) => ({ endpoint, healthy, failures, lastError, corruptChunks, renewals: conn.renewals, chunks: conn.chunkPath }));
  }

  /** Replicas in the order to try: those not backing off first, primary before replicas. */
  private order(): Replica[] {
    const now = Date.now();
    return [...this.replicas.filter((r) => r.downUntil <= now), ...this.replicas.filter((r) => r.downUntil > now)];
  }

  /** `probe`: the call was the one asking a replica that had missed a deadline already. */
  private markDown(r: Replica, err: unknown, probe = false): void {
    const was = r.healthy;
    const now = Date.now();
    // Calls that failed together count once: the back-off grows with each
    // round of asking, not with how many calls were under way (40 calls
    // missing one deadline would otherwise set it to its maximum at once).
    // A probe is one call by construction, and its back-off may not have run out.
    if (was || probe || now >= r.downUntil) {
      r.failures++;
      r.downUntil = now + Math.min(30_000, (this.opts.backoffMs ?? 250) * 2 ** Math.min(r.failures - 1, 7));
    }
    // Only the one call at a time, asked after a first miss, makes a second
    // round: calls sent together over one wedged link fail up to a deadline
    // apart, and counted by when they failed they would make two rounds out of one.
    const silent = (err as grpc.ServiceError)?.code === grpc.status.DEADLINE_EXCEEDED;
    r.silentRounds = !silent ? 0 : probe ? r.silentRounds + 1 : Math.max(r.silentRounds, 1);
    r.healthy = false;
    r.lastError = (err as Error).message;
    if (probe && silent) r.conn.replaceAfterSilence();
    // Once per outage at warn level: every call failing while the node is down would flood the log.
    const backoffMs = r.downUntil - now;
    if (was) log.warn({ node: r.endpoint, err: r.lastError, backoffMs }, 'node unreachable; trying another replica');
    else log.debug({ node: r.endpoint, err: r.lastError, backoffMs, failures: r.failures }, 'node still unreachable');
  }

  private markUp(r: Replica): void {
    const back = !r.healthy;
    r.healthy = true;
    r.failures = 0;
    r.downUntil = 0;
    r.silentRounds = 0;
    if (!back) return;
    log.info({ node: r.endpoint }, 'node reachable again');
    for (const fn of this.reachableListeners) fn(r.endpoint);
  }

  private readonly reachableListeners: ((endpoint: string) => void)[] = [];

  /** Called when a node that had failed answers again (queued work need not wait for its own back-off). */
  onReachable(fn: (endpoint: string) => void): void {
    this.reachableListeners.push(fn);
  }

  /**
   * Runs `fn` on the first replica that answers (each one tried again once
   * when its connection broke under the call); EHOSTDOWN when none does.
   * `uncertain` tells `fn` that an earlier attempt failed in transport, so a
   * change it asked for may have been applied already.
   *
   * A replica whose last call missed its deadline gets one call at a time;
   * one taken to hang is passed by at once during its back-off (see turn).
   *
   * `againAfterDeadline` (changes): a call that missed its deadline at a
   * replica not taken to hang is sent once more, as uncertain, as its one
   * call at a time over a new connection (or after the call that holds it
   * found it answering). A link that loses
   * the answer leaves the change made and its caller told it failed (a
   * file unlinked on the node but shown, then written back as an edit of
   * a file the node no longer has: a conflict copy); asked again, the
   * change finds its own effect and reports success.
   *
   * `at`: only the replica at this endpoint is asked (what a node lacks is
   * that node's answer: the chunks it named go to it, not to another).
   */
  async call<T>(what: string, fn: (c: NodeConnection, uncertain: boolean) => Promise<T>, opts: { againAfterDeadline?: boolean; at?: string } = {}): Promise<T> {
    const errors: string[] = [];
    let passedBy = 0; // replicas not asked: nothing sent there can have taken effect
    const replicas = opts.at === undefined ? this.order() : this.order().filter((r) => r.endpoint === opts.at);
    for (const [i, r] of replicas.entries()) {
      const turn = await this.turn(r);
      if (turn === 'pass') {
        errors.push(`${r.endpoint}: not answering (it missed a deadline; asked again after ${Math.max(0, r.downUntil - Date.now())} ms)`);
        passedBy++;
        continue;
      }
      // Holding: this call is the replica's one call at a time (see turn).
      let holding = turn === 'hold';
      try {
        for (let again = false; ; again = true) {
          try {
            const res = await fn(r.conn, errors.length > passedBy);
            this.markUp(r);
            if (i > 0) this.stats.failovers++;
            return res;
          } catch (err) {
            if (!isTransportError(err)) {
              // The node's own answer (a refusal made here, unsent, says nothing of it).
              if (!(err instanceof Unsent)) this.markUp(r);
              throw err;
            }
            errors.push(`${r.endpoint}: ${(err as Error).message}`);
            // A link reset under the call: one more try over a new connection (as uncertain: the first may have taken effect).
            if (!again && isConnectionLoss(err)) continue;
            if (!again && !holding && opts.againAfterDeadline && (err as grpc.ServiceError)?.code === grpc.status.DEADLINE_EXCEEDED) {
              this.markDown(r, err);
              // Asked again as the replica's one call, or once the call that holds it found it answering.
              const next = await this.turn(r);
              if (next !== 'pass') {
                holding = next === 'hold';
                if (holding) r.conn.replaceAfterSilence();
                continue;
              }
              break;
            }
            this.markDown(r, err, holding);
            break;
          }
        }
      } finally {
        if (holding) this.letGo(r);
      }
    }
    throw new FsError('EHOSTDOWN', `${what}: no node reachable (${errors.join('; ')})`);
  }

  /**
   * Whether a call asks this replica ('ask'), asks it as its one call at a
   * time ('hold', taken here), or passes it by ('pass').
   *
   * A node that hangs (its socket still takes connections) would cost every
   * call a whole deadline, so `ls` or `rm -r` waited 10 s an entry; a dead
   * node refuses in a millisecond anyway and is always asked. Once a call
   * missed its deadline, one call at a time asks the replica, and calls that
   * come meanwhile wait for its outcome. Once two rounds in a row missed
   * theirs, it is taken to hang: calls pass it by during its back-off, and
   * after it one call at a time asks again. One missed deadline alone is not
   * enough: a link that lost one answer would fail the calls right after it
   * (an unlink racing the write-back's retry of a commit whose answer was
   * lost, in the write-back-race test). The change feed's resubscriptions
   * (every 5 s at most) and the write-back's retries notice a node
   * answering again.
   */
  private async turn(r: Replica): Promise<'ask' | 'hold' | 'pass'> {
    while (r.probe) await r.probe.over;
    // From here to the hold, nothing awaits: two calls cannot both take it.
    if (r.silentRounds === 0) return 'ask';
    if (r.silentRounds >= 2 && Date.now() < r.downUntil) return 'pass';
    this.hold(r);
    return 'hold';
  }

  /** Takes the replica's one call at a time (see turn); letGo ends it. */
  private hold(r: Replica): void {
    let end!: () => void;
    const over = new Promise<void>((resolve) => (end = resolve));
    r.probe = { over, end };
  }

  private letGo(r: Replica): void {
    r.probe?.end();
    r.probe = undefined;
  }

  handshake(): Promise<WHandshakeReplyOut> {
    return this.call('handshake', (c) => c.handshake());
  }

  /** `at`: that node only. */
  stat(path: string, at?: string) {
    return this.call(`stat ${path}`, (c) => c.stat(path), { at });
  }

  listDir(path: string) {
    return this.call(`list ${path}`, (c) => c.listDir(path));
  }

  getManifest(path: string) {
    return this.call(`manifest ${path}`, (c) => c.getManifest(path));
  }

  /** Size and free space of the filesystem the workspace lives on, as the node answering sees it. */
  statFs() {
    return this.call('statfs', (c) => c.statFs());
  }

  /**
   * A namespace or attribute change; one a lost answer hid is recognized on
   * retry (mutation-retry.ts). An exchange is not sent again: applied twice
   * it would undo itself and still report success. `by` is the node that
   * answered. `hashBytes`: what the node hashes before it answers (a
   * truncate re-hashes the file), which lengthens the deadline.
   */
  mutate(req: Omit<WMutateRequest, 'workspace'>, hashBytes = 0): Promise<WMutateReplyOut & { by: string }> {
    const deadline = this.deadlineMs + Math.ceil(hashBytes / SLOW_NODE_BYTES_PER_MS);
    return this.call('mutate', (c, uncertain) => {
      if (uncertain && req.rename?.exchange) return Promise.reject(new Unsent('EIO', `the exchange of "${req.rename.from}" and "${req.rename.to}" lost its answer: it may or may not have been made`));
      return c
        .mutate(req, deadline)
        .catch(async (err) => (uncertain && (await appliedBefore(c, req, err))) || Promise.reject(err))
        .then((r) => ({ ...r, by: c.endpoint }));
    }, { againAfterDeadline: true });
  }

  /**
   * Fetches chunks by hash, verified. Calls `onChunk` for each as it
   * arrives; chunks a replica does not deliver (stream broken, node gone,
   * bad bytes) are asked of the next replica. Throws EIO for chunks no
   * replica could deliver intact.
   */
  async fetchChunks(hashes: Buffer[], pathHint: string, onChunk: (hash: Buffer, data: Buffer) => void): Promise<void> {
    const pending = new Map(hashes.map((h) => [h.toString('latin1'), h]));
    const problems: string[] = [];
    const corruptFrom = new Map<string, string>();
    const tried = new Set<Replica>();
    for (const r of this.order()) {
      if (pending.size === 0) break;
      const turn = await this.turn(r);
      if (turn === 'pass') {
        problems.push(`${r.endpoint}: not answering (it missed a deadline)`);
        continue;
      }
      tried.add(r);
      const want = [...pending.values()];
      const probe = turn === 'hold';
      try {
        // Time for the whole fetch grows with its size (a slow link); a wait for the next chunk does not (a node that hangs).
        for await (const c of r.conn.readChunks(want, pathHint, Math.max(this.deadlineMs, 4 * want.length * 1000), this.deadlineMs)) {
          const k = c.hash.toString('latin1');
          const hash = pending.get(k);
          if (!hash) continue;
          const data = c.data; // a view into the received message: no copy
          if (!hashChunk(data).equals(hash)) {
            r.corruptChunks++;
            this.stats.corruptChunks++;
            corruptFrom.set(k, r.endpoint);
            log.warn({ node: r.endpoint, chunk: hex(hash), path: pathHint }, 'chunk failed verification; discarded, asking another replica');
            continue;
          }
          pending.delete(k);
          this.stats.chunksFetched++;
          this.stats.bytesFetched += data.length;
          onChunk(hash, data);
        }
        this.markUp(r);
      } catch (err) {
        if (isTransportError(err)) this.markDown(r, err, probe);
        else this.markUp(r);
        problems.push(`${r.endpoint}: ${(err as Error).message}`);
      } finally {
        if (probe) this.letGo(r);
      }
      if (pending.size > 0 && tried.size < this.replicas.length) this.stats.failovers++;
    }
    if (pending.size > 0) {
      const first = [...pending.values()][0]!;
      const corrupt = corruptFrom.get(first.toString('latin1'));
      const msg = corrupt
        ? `chunk ${hex(first)} of "${pathHint}" failed verification (from ${corrupt}) and no replica had it intact`
        : `${pending.size} chunk(s) of "${pathHint}" unavailable: ${problems.join('; ') || 'no replica had them'}`;
      const allDown = !corrupt && !this.reachable;
      throw new FsError(allDown ? 'EHOSTDOWN' : 'EIO', msg);
    }
  }

  /**
   * Subscribes to the change feed on the first reachable replica. A feed
   * that ends because its node is unreachable or went silent marks that
   * node down, so the next subscription tries a replica first; one that
   * brings an event marks its node up again (a mount with no calls of its
   * own would otherwise take it for down until its next call).
   */
  watch(fromGeneration: number, epoch: string, onEvent: (e: WChangeEventOut) => void, onEnd: (err?: Error) => void): { cancel(): void; endpoint: string } {
    const r = this.order()[0]!;
    let cancelled = false;
    const heard = (e: WChangeEventOut): void => {
      if (!r.healthy) this.markUp(r);
      onEvent(e);
    };
    const call = r.conn.watch(fromGeneration, epoch, heard, (err) => {
      const code = (err as grpc.ServiceError | undefined)?.code;
      if (err && !cancelled && (code === grpc.status.UNAVAILABLE || code === grpc.status.DEADLINE_EXCEEDED)) this.markDown(r, err);
      onEnd(err);
    });
    return {
      cancel: () => {
        cancelled = true;
        call.cancel();
      },
      endpoint: r.endpoint,
    };
  }

  close(): void {
    for (const r of this.replicas) r.conn.close();
  }
}
