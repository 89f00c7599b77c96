// A mutation applied by a node whose answer was lost, retried on a replica of
// the same directory: the retry meets its own effect (EEXIST, ENOENT) and
// must report success, while a real clash still fails. A connection that a
// lossy link wedged is replaced. Real node, real gRPC, a proxy that swallows
// answers or loses whole HTTP/2 DATA frames. A change feed that went silent
// is noticed by its missing heartbeats. A node that hangs is asked by one
// call at a time, and not at all during its back-off; a change it gets to
// after its caller gave up is not made; a fetch from one gives up after a
// deadline of silence, whatever its size.
import t, { type Test } from 'tap';
import { mkdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chunkBuffer } from '../src/content/chunk-file.js';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { chunksToWire } from '../src/wire/convert.js';
import * as grpc from '@grpc/grpc-js';
import { MeshClient } from '../src/mesh/mesh-client.js';
import { NodeConnection } from '../src/mesh/connection.js';
import { errnoOf } from '../src/wire/errors.js';
import type { WChangeEventOut } from '../src/wire/types.js';
import { FaultProxy } from '../scripts/soak/lib/fault-proxy.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { waitFor } from './helpers/mount-proc.js';

t.test('mutations whose answers were lost', async (t) => {
  const base = await tempDir(t);
  const root = join(base, 'ws');
  await mkdir(root);
  await writeFile(join(root, 'a.txt'), 'a\n');
  await writeFile(join(root, 'gone.txt'), 'x\n');
  const node = await NodeProc.start(['--root', root, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const proxy = await FaultProxy.start(node.endpoint);
  t.teardown(() => proxy.close());
  const mesh = new MeshClient([proxy.endpoint, node.endpoint], 'default', { deadlineMs: 600, backoffMs: 1 });
  t.teardown(() => mesh.close());
  await mesh.handshake();

  /** Runs `req` with the primary's answer swallowed: it applies it, the replica gets the retry. */
  const muted = async (req: Parameters<MeshClient['mutate']>[0]) => {
    proxy.set('mute');
    try {
      return await mesh.mutate(req);
    } finally {
      proxy.set('pass');
      await new Promise((r) => setTimeout(r, 5)); // let the primary's back-off (1 ms) pass
    }
  };

  const made = await muted({ mkdir: { path: 'd', mode: 0o750 } });
  t.ok((await stat(join(root, 'd'))).isDirectory(), 'the directory exists once');
  t.equal(made.entries[0]?.name, 'd', 'the reply names the new directory');
  // The directory holding it too: the node does not echo a writer's own changes on its feed.
  t.same(made.entries.map((e) => e.name), ['d', ''], 'and the directory holding it, as the node would have');

  await muted({ symlink: { path: 'l', target: 'a.txt' } });
  t.equal(await readlink(join(root, 'l')), 'a.txt');

  const linked = await muted({ link: { existing: 'a.txt', path: 'b.txt' } });
  t.same(linked.entries.map((e) => e.name).sort(), ['', 'a.txt', 'b.txt'], 'both names reported, and the directory holding them');
  t.equal((await stat(join(root, 'a.txt'))).nlink, 2);

  const unlinked = await muted({ unlink: { path: 'gone.txt' } });
  await t.rejects(stat(join(root, 'gone.txt')), 'unlinked');
  t.same(unlinked.entries.map((e) => e.name), [''], "an unlink's reply names the directory");

  const moved = await muted({ rename: { from: 'b.txt', to: 'c.txt' } });
  t.same(moved.entries.map((e) => e.name), ['c.txt', ''], "a rename's reply names the new name and the directory");

  await muted({ rmdir: { path: 'd' } });
  await t.rejects(stat(join(root, 'd')), 'removed');

  // Real clashes still fail, lost answer or not.
  await writeFile(join(root, 'taken'), 'file, not a directory\n');
  const clash = await muted({ mkdir: { path: 'taken', mode: 0o755 } }).catch((err) => err);
  t.equal(errnoOf(clash), 'EEXIST', 'mkdir over a file is EEXIST');
  const other = await muted({ symlink: { path: 'l', target: 'elsewhere' } }).catch((err) => err);
  t.equal(errnoOf(other), 'EEXIST', 'a symlink with another target is EEXIST');
  const direct = await mesh.mutate({ mkdir: { path: 'c.txt', mode: 0o755 } }).catch((err) => err);
  t.equal(errnoOf(direct), 'EEXIST', 'without a lost answer, EEXIST is EEXIST');
});

/** Asserts that `done()` comes true within `ms`. */
async function eventually(t: Test, what: string, done: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  t.ok(await waitFor(what, async () => done(), ms).then(() => true, () => false), what);
}

/** A node whose root holds `files` (empty by default), reached only through a fault proxy. */
async function behindProxy(
  t: Test,
  deadlineMs: number,
  o: { nodeArgs?: string[]; files?: Record<string, string | Buffer>; backoffMs?: number; bulkLane?: boolean } = {},
): Promise<{ root: string; node: NodeProc; proxy: FaultProxy; mesh: MeshClient }> {
  const base = await tempDir(t);
  const root = join(base, 'ws');
  await mkdir(root);
  for (const [name, data] of Object.entries(o.files ?? {})) await writeFile(join(root, name), data);
  const node = await NodeProc.start(['--root', root, '--state-dir', join(base, 'state'), ...(o.nodeArgs ?? [])]);
  t.teardown(() => node.stop('SIGKILL'));
  const proxy = await FaultProxy.start(node.endpoint);
  t.teardown(() => proxy.close());
  const mesh = new MeshClient([proxy.endpoint], 'default', { deadlineMs, backoffMs: o.backoffMs ?? 1, bulkLane: o.bulkLane });
  t.teardown(() => mesh.close());
  await mesh.handshake();
  return { root, node, proxy, mesh };
}

t.test('a connection wedged by lost DATA frames is replaced', async (t) => {
  // Whole DATA frames that vanish leave HTTP/2 framing intact: the connection
  // stays up and answers keepalive pings, but the bytes stay charged to the
  // sender's flow-control window, and once it is used up no call on that
  // connection can send anything again.
  const { root, proxy, mesh } = await behindProxy(t, 1500);

  const commit = (path: string, data: Buffer, deadlineMs = 1500) => {
    const m = chunkBuffer(data, DEFAULT_CHUNKING);
    const req = {
      path,
      baseDigest: Buffer.alloc(0),
      expectAbsent: true,
      digest: m.digest,
      size: m.size,
      chunks: chunksToWire(m.chunks),
      mode: 0o644,
      clientId: 'test',
      inline: m.chunks.map((c) => ({ hash: c.hash, data: data.subarray(c.offset, c.offset + c.length) })),
      alsoBases: [],
    };
    return mesh.call(`commit ${path}`, (c) => c.commit(req, deadlineMs));
  };

  await commit('before.bin', randomBytes(1 << 20));
  proxy.set('lose-data');
  // A long deadline: the calls send until the window is used up, however busy this machine is.
  const lost = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => commit(`lost-${i}.bin`, randomBytes(1 << 20), 8000)));
  t.ok(lost.every((r) => r.status === 'rejected'), 'nothing gets through while DATA frames vanish');
  t.ok((proxy.applied.lostDataBytes ?? 0) >= 30 << 20, `the connection's 32 MiB window was lost (${proxy.applied.lostDataBytes} bytes)`);
  proxy.set('pass');
  // The calls missed their deadlines: the node is passed by for its back-off (at most 128 ms with backoffMs 1).
  await new Promise((r) => setTimeout(r, 300));

  const after = randomBytes(1 << 20);
  await commit('after.bin', after, 5000); // room for a new connection on a busy machine
  t.ok((await readFile(join(root, 'after.bin'))).equals(after), 'a commit made once the link is whole again lands');
  t.ok(mesh.health()[0]!.renewals >= 1, 'over a new connection');
  const small = Buffer.from('small\n');
  await commit('small.txt', small, 5000);
  t.equal(await readFile(join(root, 'small.txt'), 'utf8'), 'small\n');
});

/**
 * A node serving a.txt behind a proxy (800 ms deadline), and a stat of it
 * through the mesh: 'answered', or the call's errno and message.
 */
async function statBehindProxy(t: Test, backoffMs: number) {
  const { proxy, mesh } = await behindProxy(t, 800, { files: { 'a.txt': 'a\n' }, backoffMs });
  const stat = (): Promise<string> =>
    mesh.stat('a.txt').then(
      () => 'answered',
      (err: Error) => `${errnoOf(err)}: ${err.message}`,
    );
  return { proxy, mesh, stat };
}

t.test('a node that hangs: passed by during its back-off once two calls missed their deadlines, then asked by one call at a time', async (t) => {
  // A hung node takes connections and answers nothing: every call asking it waits out a deadline.
  const backoffMs = 1000;
  const { proxy, mesh, stat } = await statBehindProxy(t, backoffMs);

  proxy.set('blackhole');
  t.match(await stat(), /^EHOSTDOWN: .*DEADLINE_EXCEEDED/, 'the first call waits out its deadline');
  t.match(await stat(), /^EHOSTDOWN: .*DEADLINE_EXCEEDED/, 'so does the next: one missed deadline may be one lost answer');
  t.match(await stat(), /^EHOSTDOWN: .*not answering/, 'the third is not sent: the node is taken to hang, and in its back-off');
  // The second round's back-off: twice backoffMs.
  await new Promise((r) => setTimeout(r, 2 * backoffMs + 100));
  const both = await Promise.all([stat(), stat()]);
  t.equal(both.filter((s) => /DEADLINE_EXCEEDED/.test(s)).length, 1, `after the back-off one call asks the node: ${both.join(' | ')}`);
  t.equal(both.filter((s) => /not answering/.test(s)).length, 1, 'the call beside it waits for that one and then passes the node by');

  proxy.set('pass');
  await waitFor('the node asked, and answering, again', async () => (await stat()) === 'answered', 20_000);
  t.equal(mesh.health()[0]!.healthy, true, 'and taken for up');
  t.equal(await stat(), 'answered');
});

t.test('after one missed deadline the next call asks the node, and calls beside it wait for its answer', async (t) => {
  // A link that lost one answer: the node is fine, and the calls right after must not fail for it.
  const { proxy, mesh, stat } = await statBehindProxy(t, 5000);
  proxy.set('mute');
  t.match(await stat(), /^EHOSTDOWN: .*DEADLINE_EXCEEDED/, 'a call whose answer the link loses misses its deadline');
  proxy.set('pass');
  // Well inside the 5 s back-off.
  t.same(await Promise.all([stat(), stat(), stat()]), ['answered', 'answered', 'answered'], 'the calls right after it are answered');
  t.equal(mesh.health()[0]!.healthy, true, 'and the node is taken for up');
});

t.test('calls sent together over a link that loses their answers are one round, however far apart their deadlines fall', async (t) => {
  // Their deadlines fall 300 ms apart, past the first back-off (100 ms): counted by when they failed, they were two rounds.
  const { proxy, stat } = await statBehindProxy(t, 100);
  proxy.set('mute');
  const first = stat();
  await new Promise((r) => setTimeout(r, 300));
  const second = await stat();
  t.match(await first, /DEADLINE_EXCEEDED/, 'the first call misses its deadline');
  t.match(second, /DEADLINE_EXCEEDED/, 'so does the one sent 300 ms later');
  proxy.set('pass');
  t.equal(await stat(), 'answered', 'the next call is sent, and answered: the node is not taken to hang');
});

t.test('a fetch of many chunks from a node that hangs gives up after one deadline of silence', async (t) => {
  // A fetch's deadline grows with its size (4 s a chunk) for slow links; a
  // node that sends nothing at all is given up on after --deadline.
  const big = randomBytes(12 << 20);
  for (const lane of [true, false]) {
    const { proxy, mesh } = await behindProxy(t, 800, { files: { 'big.bin': big }, bulkLane: lane });
    const m = await mesh.getManifest('big.bin');
    const hashes = m.chunks.map((c) => Buffer.from(c.hash));
    t.ok(hashes.length >= 3, `${hashes.length} chunks: the fetch's deadline is ${4 * hashes.length} s`);
    proxy.set('blackhole');
    const fetched = mesh.fetchChunks(hashes, 'big.bin', () => undefined).then(
      () => 'fetched',
      (err: Error) => errnoOf(err),
    );
    const got = await Promise.race([fetched, new Promise((r) => setTimeout(() => r('still waiting after 10 s'), 10_000))]);
    proxy.set('pass');
    t.equal(got, 'EHOSTDOWN', `over ${lane ? 'the bulk lane' : 'gRPC'}: the fetch fails once the node has been silent for a deadline`);
  }
});

t.test('a change whose answer the link lost is asked again, and found made', async (t) => {
  // One node, no replica: the link takes the request to the node and loses its answer.
  const { root, proxy, mesh } = await behindProxy(t, 800, { files: { 'doomed.txt': 'x\n' } });
  const answerLost = async (req: Parameters<MeshClient['mutate']>[0]) => {
    proxy.set('mute');
    // The link is whole again before the deadline: the second try goes through.
    const healed = new Promise((r) => setTimeout(r, 400)).then(() => proxy.set('pass'));
    try {
      return await mesh.mutate(req).then(
        () => 'made',
        (err: Error) => `${errnoOf(err)}: ${err.message}`,
      );
    } finally {
      await healed;
    }
  };
  t.equal(await answerLost({ mkdir: { path: 'd', mode: 0o755 } }), 'made', 'a mkdir whose answer was lost is reported made');
  t.ok((await stat(join(root, 'd'))).isDirectory(), 'and made once');
  t.equal(await answerLost({ unlink: { path: 'doomed.txt' } }), 'made', 'an unlink whose answer was lost is reported made');
  await t.rejects(stat(join(root, 'doomed.txt')), 'and the file is gone');
});

t.test('a change the node gets to after its caller gave up is not made', async (t) => {
  // A stopped node still takes the request into its socket, and on waking would make it.
  const base = await tempDir(t);
  const root = join(base, 'ws');
  await mkdir(root);
  const node = await NodeProc.start(['--root', root, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const mesh = new MeshClient([node.endpoint], 'default', { deadlineMs: 800, backoffMs: 1 });
  t.teardown(() => mesh.close());
  await mesh.handshake();
  await mesh.mutate({ mkdir: { path: 'early', mode: 0o755 } });
  t.ok((await stat(join(root, 'early'))).isDirectory(), 'a change in time is made');

  process.kill(node.child.pid!, 'SIGSTOP');
  let failed: unknown;
  try {
    await mesh.mutate({ mkdir: { path: 'late', mode: 0o755 } });
  } catch (err) {
    failed = err;
  } finally {
    process.kill(node.child.pid!, 'SIGCONT');
  }
  t.equal(errnoOf(failed), 'EHOSTDOWN', 'the caller is told the node did not answer');
  // The node answers again, and has dealt with what it had taken in meanwhile (one lock serves its changes).
  await waitFor('the node answering', async () => !!(await mesh.mutate({ mkdir: { path: 'after', mode: 0o755 } }).catch(() => undefined)), 20_000);
  await t.rejects(stat(join(root, 'late')), 'the change its caller was told failed was not made');
  t.ok((await stat(join(root, 'after'))).isDirectory(), 'a change made once it answers is');
});

t.test('a call whose connection is reset under it is tried again over a new one', async (t) => {
  // One node, no replica: without a second try the reset would be the caller's error.
  const { root, proxy, mesh } = await behindProxy(t, 3000);

  proxy.set('mute'); // the node makes the directory; its answer is held back, then the link is reset
  const made = mesh.mutate({ mkdir: { path: 'd', mode: 0o755 } });
  const appeared = (p: string, test: () => Promise<boolean>) => eventually(t, `${p}: the node made the change before the reset`, test, 4000);
  await appeared('mkdir', async () => (await stat(join(root, 'd'))).isDirectory());
  proxy.set('pass');
  proxy.reset();
  const reply = await made;
  t.equal(reply.entries[0]?.name, 'd', 'the mkdir succeeds: its second try recognizes its own effect');
  t.equal(mesh.health()[0]!.healthy, true, 'the node is not marked down for it');

  // An exchange is the one change a second try would undo: it is not sent again.
  await writeFile(join(root, 'x'), 'x\n');
  await writeFile(join(root, 'y'), 'y\n');
  await mesh.mutate({ mkdir: { path: 'sync', mode: 0o755 } }); // a round trip first: the node's watcher has seen both files
  proxy.set('mute');
  const swapped = mesh.mutate({ rename: { from: 'x', to: 'y', exchange: true } });
  await appeared('exchange', async () => (await readFile(join(root, 'x'), 'utf8')) === 'y\n');
  proxy.set('pass');
  proxy.reset();
  await t.rejects(swapped, /lost its answer/, 'its lost answer is an error (EIO), not a second exchange');
  t.equal(await readFile(join(root, 'x'), 'utf8'), 'y\n', 'exchanged once');
  t.equal(await readFile(join(root, 'y'), 'utf8'), 'x\n');
});

t.test('calls under way on a replaced connection run to their end', async (t) => {
  const { root, proxy } = await behindProxy(t, 5000);
  // A connection of its own, without the mesh's second try: what happens to the call is what it sees.
  const conn = new NodeConnection(proxy.endpoint, 'default', { deadlineMs: 5000 });
  t.teardown(() => conn.close());
  await conn.handshake();
  proxy.set('delay', 800); // every piece of traffic waits 800 ms: the mkdir takes a few seconds
  const slow = conn.mutate({ mkdir: { path: 'slow', mode: 0o755 } });
  await t.rejects(conn.handshake(300), { code: grpc.status.DEADLINE_EXCEEDED }, 'a call misses its deadline');
  t.equal(conn.renewals, 1, 'and the connection is replaced');
  const reply = await slow;
  t.equal(reply.entries[0]?.name, 'slow', 'the call under way on the old connection still got its answer');
  t.ok((await stat(join(root, 'slow'))).isDirectory());
});

t.test('a change feed gone silent ends, and a new subscription catches up', async (t) => {
  const { node, proxy } = await behindProxy(t, 5000);
  const conn = new NodeConnection(proxy.endpoint, 'default', { feedHeartbeatMs: 1000 });
  t.teardown(() => conn.close());
  const direct = node.connect();
  t.teardown(() => direct.close());
  const events: WChangeEventOut[] = [];
  const subscribe = (from: number, epoch: string) => {
    let call!: ReturnType<NodeConnection['watch']>;
    const ended = new Promise<Error | undefined>((resolve) => (call = conn.watch(from, epoch, (e) => events.push(e), resolve)));
    return { call, ended };
  };

  const first = subscribe(0, '');
  await eventually(t, 'the feed is live', () => events.some((e) => e.kind === 'READY'));
  const ready = events.find((e) => e.kind === 'READY')!;
  let over = false;
  void first.ended.then(() => (over = true));
  await new Promise((r) => setTimeout(r, 4000)); // longer than the 3 s of silence taken for a dead feed
  t.notOk(over, "a quiet feed stays subscribed: the node's heartbeats keep it");
  t.notOk(events.some((e) => e.kind === 'HEARTBEAT'), 'heartbeats are not passed on');
  // Frames lost for good: the change below and every heartbeat after it vanish, the connection stays up.
  proxy.set('lose-data');
  await direct.mutate({ mkdir: { path: 'meanwhile', mode: 0o755 } });
  const err = await first.ended; // without heartbeats: never
  t.match(err, { code: grpc.status.DEADLINE_EXCEEDED, message: /no change event or heartbeat/ }, 'the silent feed ends with an error that says why');
  t.equal(conn.renewals, 1, 'and its connection is replaced');
  t.notOk(events.some((e) => e.path === 'meanwhile'), 'the change was lost with its frames');

  proxy.set('pass');
  const second = subscribe(ready.generation, ready.epoch);
  t.teardown(() => second.call.cancel());
  await eventually(t, 'subscribed again from where it was, the feed brings the change', () => events.some((e) => e.path === 'meanwhile' && e.kind === 'CHANGED'));
});

t.test('the node drops a client that stopped answering, and its change feed with it', async (t) => {
  // The mount's own keepalive (10 s, then 5 s for the answer) and the feed's
  // heartbeats (30 s of silence) would notice later: within the few seconds
  // waited here, only the node's pings can.
  const { proxy } = await behindProxy(t, 5000, { nodeArgs: ['--client-keepalive', '1s'] });
  const conn = new NodeConnection(proxy.endpoint, 'default');
  t.teardown(() => conn.close());
  let ready = false;
  const call = conn.watch(0, '', (e) => (ready ||= e.kind === 'READY'), () => undefined);
  t.teardown(() => call.cancel());
  await eventually(t, 'the feed is live', () => ready);
  const open = proxy.connections;
  const before = { ...proxy.closedBy };
  proxy.set('drop'); // every byte vanishes both ways; the connections stay up
  await eventually(t, 'every connection through the silent link is closed', () => proxy.connections === 0, 8000);
  t.same({ client: proxy.closedBy.client - before.client, node: proxy.closedBy.node - before.node }, { client: 0, node: open }, `by the node (${open} connection(s))`);
});

t.test('a feed that fails ends once', async (t) => {
  // grpc-js ends a failed stream with 'error' and then 'end': a caller told twice would subscribe twice.
  const conn = new NodeConnection('127.0.0.1:9', 'default'); // nothing listens there
  t.teardown(() => conn.close());
  const ends: (Error | undefined)[] = [];
  conn.watch(0, '', () => undefined, (err) => ends.push(err));
  await eventually(t, 'the feed ends', () => ends.length > 0);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(ends.length, 1, 'once');
  t.match(ends[0], { code: grpc.status.UNAVAILABLE }, 'with the reason');
});

t.test('a feed gone silent passes its node over: the next subscription goes to a replica', async (t) => {
  const { node, proxy } = await behindProxy(t, 5000);
  // Two replicas of one workspace: the node through the proxy first, the same node direct second.
  const mesh = new MeshClient([proxy.endpoint, node.endpoint], 'default', { feedHeartbeatMs: 300, backoffMs: 5000 });
  t.teardown(() => mesh.close());
  let ready = false;
  let ended: Error | undefined | null = null;
  const first = mesh.watch(0, '', (e) => (ready ||= e.kind === 'READY'), (err) => (ended = err));
  t.equal(first.endpoint, proxy.endpoint, 'the first subscription goes to the primary');
  await eventually(t, 'the feed is live', () => ready);
  await new Promise((r) => setTimeout(r, 700)); // a heartbeat has come: silence now counts
  proxy.set('lose-data');
  await eventually(t, 'the feed ends once silent', () => ended !== null);
  t.match(ended, { code: grpc.status.DEADLINE_EXCEEDED }, 'as a missed deadline');
  const second = mesh.watch(0, '', () => undefined, () => undefined);
  t.teardown(() => second.cancel());
  t.equal(second.endpoint, node.endpoint, 'the next one goes to the replica');
  t.equal(mesh.health()[0]!.healthy, false, 'the primary is marked down');
});

t.test('a node whose feed went silent is taken for up again once a new feed brings an event', async (t) => {
  const { proxy } = await behindProxy(t, 5000);
  const mesh = new MeshClient([proxy.endpoint], 'default', { feedHeartbeatMs: 300, backoffMs: 1 });
  t.teardown(() => mesh.close());
  let ready = false;
  let ended = false;
  mesh.watch(0, '', (e) => (ready ||= e.kind === 'READY'), () => (ended = true));
  await eventually(t, 'the feed is live', () => ready);
  await new Promise((r) => setTimeout(r, 700)); // a heartbeat has come: silence now counts
  proxy.set('lose-data');
  await eventually(t, 'the feed ends once silent', () => ended);
  t.equal(mesh.reachable, false, 'its node is taken for down');
  proxy.set('pass');
  ready = false;
  const again = mesh.watch(0, '', (e) => (ready ||= e.kind === 'READY'), () => undefined);
  t.teardown(() => again.cancel());
  await eventually(t, 'a new feed is live', () => ready);
  t.equal(mesh.reachable, true, 'and its node is up again, without a call of its own');
});
