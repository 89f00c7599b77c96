// The bulk lane end to end: a real `ghostfs serve` child process, its one
// port answering gRPC and the lane side by side over loopback.
import t from 'tap';
import { open, writeFile, mkdir, readFile, stat } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BulkLane, hostPort, LaneUnavailable, type UploadChunk } from '../src/mesh/bulk-client.js';
import { encodeHello, BULK_MAGIC, CALL_FLAG, MAX_CALL_BYTES } from '../src/wire/bulk-lane.js';
import { wire } from '../src/wire/proto.js';
import { errnoOf, lacksChunk } from '../src/wire/errors.js';
import { fileDigest, hashChunk } from '../src/content/manifest.js';
import { NodeConnection } from '../src/mesh/connection.js';
import { nativeAddon } from '../src/native/addon.js';
import { chunksUploaded } from '../src/admin/metrics.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { RelayProxy } from './helpers/relay-proxy.js';
import { waitFor } from './helpers/mount-proc.js';

const TOKEN = 'lane-secret';

t.test('the bulk lane', async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'ws');
  await mkdir(join(root, 'd'), { recursive: true });
  const big = randomBytes(9 * 1024 * 1024 + 17);
  await writeFile(join(root, 'd/big.bin'), big);
  await writeFile(join(root, 'small.txt'), 'small\n');
  const node = await NodeProc.start(['--root', root, '--state-dir', join(dir, 'st'), '--token', TOKEN, '--metrics', '127.0.0.1:0']);
  t.teardown(() => node.stop());
  const at = hostPort(node.endpoint)!;
  const conn = node.connect('default', { token: TOKEN });
  t.teardown(() => conn.close());
  const m = await conn.getManifest('d/big.bin');
  const hashes = m.chunks.map((c) => c.hash);
  t.ok(hashes.length >= 3, `the file has ${hashes.length} chunks`);

  const lane = (over: Partial<ConstructorParameters<typeof BulkLane>[0]> = {}): BulkLane => {
    const l = new BulkLane({ ...at, authorization: `Bearer ${TOKEN}`, workspace: 'default', ...over });
    t.teardown(() => l.close());
    return l;
  };
  const fetchAll = async (l: BulkLane, hs: Buffer[], hint = 'd/big.bin'): Promise<Buffer[]> => {
    const out: Buffer[] = [];
    for await (const c of l.fetch(hs, hint, 10_000)) out.push(c.data);
    return out;
  };
  const served = async (): Promise<{ sendfile: number; copied: number }> => {
    const text = await node.scrapeMetrics();
    const count = (how: string): number => Number(new RegExp(`^ghostfs_node_chunks_served_total\\{how="${how}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    return { sendfile: count('sendfile'), copied: count('copied') };
  };
  const failure = async (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (err: unknown) => err);

  t.test('serves the chunks of a file, in order, intact, on one reused connection', async (t) => {
    const l = lane();
    const parts = await fetchAll(l, hashes);
    t.equal(parts.length, hashes.length);
    t.ok(parts.every((p, i) => hashChunk(p).equals(hashes[i]!)), 'each chunk hashes to its name');
    t.ok(Buffer.concat(parts).equals(big), 'together they are the file');
    // Out of order and repeated: answered as asked.
    const again = await fetchAll(l, [hashes[2]!, hashes[0]!, hashes[2]!]);
    t.ok(again[0]!.equals(parts[2]!) && again[1]!.equals(parts[0]!) && again[2]!.equals(parts[2]!), 'a second request on the kept connection');
  });

  t.test('chunks sent from files and uploaded chunks read in JS keep their order in one request', async (t) => {
    // Uploaded chunks live among the staged uploads, not in a workspace file: they are read and
    // written by JS, between chunks the kernel sends from the file (sendfile) on the same socket.
    const staged = [randomBytes(300_000), randomBytes(1_500_000)];
    const stagedHashes = staged.map((d) => hashChunk(d));
    await conn.putChunks(staged.map((data, i) => ({ hash: stagedHashes[i]!, data })));
    const order = [hashes[0]!, stagedHashes[0]!, hashes[1]!, stagedHashes[1]!, hashes[2]!];
    const before = await served();
    const parts = await fetchAll(lane(), order);
    t.equal(parts.length, order.length);
    t.ok(parts.every((p, i) => hashChunk(p).equals(order[i]!)), 'each frame holds the chunk asked for, in the order asked');
    const after = await served();
    // Without the addon the node copies every chunk.
    const sent = nativeAddon() ? 3 : 0;
    t.same({ sendfile: after.sendfile - before.sendfile, copied: after.copied - before.copied }, { sendfile: sent, copied: 5 - sent }, "the node's metrics count how each went");
  });

  t.test('a file changed after it was indexed: its new chunks are served, the stale ones are ENOENT', async (t) => {
    const file = join(root, 'd/changing.bin');
    const before = randomBytes(3 * 1024 * 1024);
    await writeFile(file, before);
    const old = (await conn.getManifest('d/changing.bin')).chunks.map((c) => c.hash);
    const after = randomBytes(before.length);
    await writeFile(file, after);
    const l = lane();
    const err = await failure(fetchAll(l, old, 'd/changing.bin'));
    t.equal(errnoOf(err), 'ENOENT', `the old bytes are gone: ${(err as Error)?.message}`);
    const fresh = (await conn.getManifest('d/changing.bin')).chunks.map((c) => c.hash);
    t.ok(Buffer.concat(await fetchAll(l, fresh, 'd/changing.bin')).equals(after), 'the new content, on the same lane');
  });

  t.test('a wrong token is refused as gRPC refuses it', async (t) => {
    const err = await failure(fetchAll(lane({ authorization: 'Bearer nope' }), hashes.slice(0, 1)));
    t.equal(errnoOf(err), 'EACCES', (err as Error)?.message);
    const none = await failure(fetchAll(lane({ authorization: '' }), hashes.slice(0, 1)));
    t.equal(errnoOf(none), 'EACCES', 'and no token at all');
  });

  t.test('an unknown workspace, an unknown chunk and a hostile hint are errors with their errno', async (t) => {
    t.equal(errnoOf(await failure(fetchAll(lane({ workspace: 'other' }), hashes.slice(0, 1)))), 'ENOENT', 'unknown workspace');
    const l = lane();
    const unknown = await failure(fetchAll(l, [randomBytes(32)]));
    t.equal(errnoOf(unknown), 'ENOENT', 'a chunk the node does not have');
    t.ok(lacksChunk(unknown), 'and the error says a chunk is lacking');
    t.equal(errnoOf(await failure(fetchAll(l, hashes.slice(0, 1), '../outside'))), 'EACCES', 'a hint out of the workspace');
    const back = await fetchAll(l, hashes.slice(0, 1));
    t.ok(back[0]!.equals(big.subarray(0, back[0]!.length)), 'the connection still serves after those errors');
  });

  t.test('garbage on the lane closes that connection only', async (t) => {
    const s = connect(at.port, at.host);
    await once(s, 'connect');
    s.write(Buffer.concat([encodeHello(`Bearer ${TOKEN}`, 'default'), Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])]));
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    await once(s, 'close');
    t.match(Buffer.concat(got).subarray(37).toString(), /EPROTO|request too large/, 'the node says why before it closes');
    const parts = await fetchAll(lane(), hashes.slice(0, 2));
    t.equal(parts.length, 2, 'other connections are served');
    const bare = connect(at.port, at.host);
    await once(bare, 'connect');
    bare.end(BULK_MAGIC.subarray(0, 2)); // half a magic, then the end: dropped, not held open
    await once(bare, 'close');
    t.pass('a client that ends before saying which protocol is dropped');
  });

  t.test('small commits and namespace changes travel as calls on the lane; big ones, and errors, as over gRPC', async (t) => {
    const calls = async (): Promise<{ lane: number; grpc: number }> => {
      const text = await node.scrapeMetrics();
      const count = (over: string): number => {
        let n = 0;
        for (const m of text.matchAll(new RegExp(`^ghostfs_node_rpcs_total\\{[^}]*method="Commit"[^}]*over="${over}"[^}]*\\} (\\d+)`, 'gm'))) n += Number(m[1]);
        return n;
      };
      return { lane: count('lane'), grpc: count('grpc') };
    };
    const inlineCommit = (path: string, data: Buffer): Parameters<NodeConnection['commit']>[0] => {
      const hash = hashChunk(data);
      return { path, expectAbsent: true, digest: fileDigest([{ hash, offset: 0, length: data.length }]), size: data.length, chunks: [{ hash, offset: 0, length: data.length }], mode: 0o644, inline: [{ hash, data }] };
    };
    await conn.handshake(); // learns what the lane takes
    // Calls go on a lane only once it has answered: a fetch shows it does.
    for await (const c of conn.readChunks(hashes.slice(0, 1))) void c;
    const before = await calls();
    const small = randomBytes(4096);
    const r = await conn.commit(inlineCommit('lane-small.bin', small));
    t.equal(r.conflict, false);
    t.ok((await readFile(join(root, 'lane-small.bin'))).equals(small), 'the file is on the node');
    t.equal(Number(r.entry!.attr!.size), 4096, 'the reply is the message gRPC would have carried');
    t.same(await calls(), { lane: before.lane + 1, grpc: before.grpc }, 'it came on the lane');

    const err = await failure(conn.commit(inlineCommit('d', randomBytes(10))));
    t.equal(errnoOf(err), 'EISDIR', `the node's refusal has its errno: ${(err as Error)?.message}`);
    const again = await conn.commit(inlineCommit('lane-after-error.txt', Buffer.from('after\n')));
    t.equal(again.conflict, false, 'the lane goes on after a refused call');
    t.same(await calls(), { lane: before.lane + 3, grpc: before.grpc }, 'both on the lane');

    // Over what a lane call may carry: gRPC.
    const big = randomBytes(MAX_CALL_BYTES);
    await conn.commit(inlineCommit('grpc-big.bin', big));
    t.ok((await readFile(join(root, 'grpc-big.bin'))).equals(big), 'a big inline commit lands');
    t.same(await calls(), { lane: before.lane + 3, grpc: before.grpc + 1 }, 'it went over gRPC');

    // Namespace changes take the lane too; their errors keep their errno.
    const mutations = async (): Promise<number> => {
      const text = await node.scrapeMetrics();
      let n = 0;
      for (const m of text.matchAll(/^ghostfs_node_rpcs_total\{[^}]*method="Mutate"[^}]*over="lane"[^}]*\} (\d+)/gm)) n += Number(m[1]);
      return n;
    };
    const m0 = await mutations();
    const made = await conn.mutate({ mkdir: { path: 'lane-dir', mode: 0o755 } });
    t.ok(made.entries.some((e) => e.name === 'lane-dir'), 'mkdir answers with the new entry');
    t.ok((await stat(join(root, 'lane-dir'))).isDirectory(), 'the directory is on the node');
    t.equal(errnoOf(await failure(conn.mutate({ unlink: { path: 'no-such-file' } }))), 'ENOENT', 'unlink of a missing file: ENOENT');
    await conn.mutate({ rename: { from: 'lane-small.bin', to: 'lane-dir/moved.bin', noReplace: true, exchange: false } });
    t.ok((await readFile(join(root, 'lane-dir/moved.bin'))).equals(small), 'a rename moved the file');
    t.equal((await mutations()) - m0, 3, 'all three went over the lane');

    // The lane's hello names the workspace; a call for another one is refused.
    const l = lane();
    const def = wire().ghostfs.v1.Node.service.Commit;
    const other = def.requestSerialize({ ...inlineCommit('x', Buffer.from('x')), workspace: 'other' } as never);
    t.equal(errnoOf(await failure(l.call('Commit', other, 10_000))), 'EINVAL', 'a call for another workspace');
    const raw = connect(at.port, at.host);
    await once(raw, 'connect');
    const unknown = Buffer.alloc(6);
    unknown.writeUInt32BE((CALL_FLAG | 2) >>> 0, 0);
    unknown[4] = 99;
    raw.write(Buffer.concat([encodeHello(`Bearer ${TOKEN}`, 'default'), unknown]));
    const got: Buffer[] = [];
    raw.on('data', (d: Buffer) => got.push(d));
    await once(raw, 'close');
    t.match(Buffer.concat(got).subarray(37).toString(), /EPROTO.*no call number 99/, 'an unknown call: the node says why and closes');
  });

  /** PutChunks calls the node took over gRPC (each logs once). */
  const grpcCalls = (): number => node.lines.filter((l) => l.msg === 'chunks uploaded').length;
  /** Chunks the node took on the lane (one call each). */
  const uploads = async (): Promise<{ lane: number }> => {
    let lane = 0;
    for (const m of (await node.scrapeMetrics()).matchAll(/^ghostfs_node_rpcs_total\{[^}]*method="PutChunks"[^}]*over="lane"[^}]*\} (\d+)/gm)) lane += Number(m[1]);
    return { lane };
  };

  t.test('uploads travel on the lane: into the node, into a draft, a wrong hash refused alone', async (t) => {
    const grpcBefore = grpcCalls();
    await conn.handshake();
    for await (const c of conn.readChunks(hashes.slice(0, 1))) void c; // the lane has answered
    const before = await uploads();
    // More than the lane sends before reading answers, of several sizes (one empty).
    const parts = [randomBytes(3 << 20), Buffer.alloc(0), ...Array.from({ length: 11 }, (_, i) => randomBytes(1000 + i * 70_000))];
    const r = await conn.putChunks(parts.map((data) => ({ hash: hashChunk(data), data })));
    t.same(r, { stored: parts.length, bytes: parts.reduce((n, p) => n + p.length, 0) }, 'each one new');
    t.same(await conn.hasChunks(parts.map((p) => hashChunk(p))), [], 'the node holds them all');
    const after = await uploads();
    t.equal(after.lane, before.lane + parts.length, 'every one on the lane');
    t.same(await conn.putChunks(parts.slice(0, 3).map((data) => ({ hash: hashChunk(data), data }))), { stored: 0, bytes: 0 }, 'sent again: none new');

    // A chunk whose bytes do not match its hash: refused with its errno; the lane goes on.
    const good = randomBytes(5000);
    const err = await failure(conn.putChunks([{ hash: hashChunk(randomBytes(10)), data: randomBytes(10) }, { hash: Buffer.alloc(32, 7), data: good }]));
    t.equal(errnoOf(err), 'EIO', `a wrong hash is refused: ${(err as Error)?.message}`);
    t.same(await conn.putChunks([{ hash: hashChunk(good), data: good }]), { stored: 1, bytes: 5000 }, 'the next upload goes through');
    t.equal(grpcCalls(), grpcBefore, 'none over gRPC');

    // Into a draft: the commit naming it takes it as the file.
    const body = randomBytes(2 << 20);
    const half = body.length / 2;
    const chunks = [body.subarray(0, half), body.subarray(half)].map((data, i) => ({ hash: hashChunk(data), offset: i * half, length: data.length, data }));
    const draft = 'lanedraft0123456';
    await conn.putChunks(chunks.map((c) => ({ hash: c.hash, data: c.data, draft, path: 'd/drafted.bin', offset: c.offset })));
    await conn.commit({ path: 'd/drafted.bin', expectAbsent: true, digest: fileDigest(chunks), size: body.length, chunks, mode: 0o644, draft });
    t.ok((await readFile(join(root, 'd/drafted.bin'))).equals(body), 'the drafted file is on the node, whole');
    const drafted = new RegExp('^ghostfs_node_commits_total\\{[^}]*how="draft"[^}]*\\} (\\d+)', 'm').exec(await node.scrapeMetrics());
    t.ok(Number(drafted?.[1] ?? 0) >= 1, 'committed from its draft');
  });

  t.test('uploads from a file: sent by the kernel on the lane, read for gRPC; a range past its end is EIO alone', async (t) => {
    const sentBy = async (): Promise<{ sendfile: number; copied: number }> => {
      const values = (await chunksUploaded.get()).values;
      const count = (how: string): number => values.find((v) => v.labels.how === how)?.value ?? 0;
      return { sendfile: count('sendfile'), copied: count('copied') };
    };
    await conn.handshake();
    for await (const c of conn.readChunks(hashes.slice(0, 1))) void c; // the lane has answered
    const body = randomBytes((3 << 20) + 12_345);
    const file = join(dir, 'upload-source.bin');
    await writeFile(file, body);
    const fh = await open(file, 'r');
    t.teardown(() => fh.close());
    // Three ranges of the file, one of them tiny, into a draft: the committed file shows every byte went where it belongs.
    const cuts = [0, 1 << 20, (1 << 20) + 5, body.length];
    const chunks = cuts.slice(1).map((end, i) => ({ hash: hashChunk(body.subarray(cuts[i]!, end)), offset: cuts[i]!, length: end - cuts[i]! }));
    const fromFile = (c: { offset: number; length: number }): { fh: typeof fh; offset: number; length: number; what: string } => ({ fh, offset: c.offset, length: c.length, what: 'upload-source.bin' });
    const before = await sentBy();
    const lanesBefore = await uploads();
    const draft = 'filedraft0123456';
    const r = await conn.putChunks(chunks.map((c) => ({ hash: c.hash, data: fromFile(c), draft, path: 'd/from-file.bin', offset: c.offset })));
    t.same(r, { stored: 3, bytes: body.length }, 'each one new');
    await conn.commit({ path: 'd/from-file.bin', expectAbsent: true, digest: fileDigest(chunks), size: body.length, chunks, mode: 0o644, draft });
    t.ok((await readFile(join(root, 'd/from-file.bin'))).equals(body), 'the file is on the node, whole');
    const after = await sentBy();
    t.equal((await uploads()).lane - lanesBefore.lane, 3, 'on the lane');
    t.ok(nativeAddon(), 'the addon is built (the kernel sends nothing without it)');
    t.same({ sendfile: after.sendfile - before.sendfile, copied: after.copied - before.copied }, { sendfile: 3, copied: 0 }, 'each sent from the file by the kernel');

    // A range the file does not have: the caller's error, not the lane's; the next upload goes through.
    const err = await failure(conn.putChunks([{ hash: hashChunk(randomBytes(10)), data: { fh, offset: body.length - 4, length: 10, what: 'upload-source.bin' } }]));
    t.equal(errnoOf(err), 'EIO', `a range past the end: ${(err as Error)?.message}`);
    t.match((err as Error)?.message, /upload-source\.bin ends before/, 'the error names the file');
    const more = randomBytes(70_000);
    await writeFile(file, more, { flag: 'a' });
    const tail = { offset: body.length, length: more.length };
    t.same(await conn.putChunks([{ hash: hashChunk(more), data: fromFile(tail) }]), { stored: 1, bytes: more.length }, 'the next upload from the file goes through');
    t.same(conn.chunkPath, { over: 'lane' }, 'the lane still carries chunks');

    // Over gRPC the bytes are read from the file first.
    const grpcOnly = node.connect('default', { token: TOKEN, bulkLane: false });
    t.teardown(() => grpcOnly.close());
    const other = { offset: 0, length: 200_000 };
    const copiedBefore = (await sentBy()).copied;
    const g = await grpcOnly.putChunks([{ hash: hashChunk(body.subarray(0, other.length)), data: fromFile(other) }]);
    t.same(g, { stored: 1, bytes: other.length }, 'taken over gRPC');
    t.equal((await sentBy()).copied - copiedBefore, 1, 'read, then sent');
  });

  t.test('a lane that breaks during an upload: what it did not confirm goes over gRPC, with the rest', async (t) => {
    // A plain TCP relay that can cut the lane's connections and leave gRPC's alone.
    const lanes = new Set<Socket>();
    const relay = createServer((client) => {
      const up = connect(at.port, at.host);
      client.once('data', (first: Buffer) => {
        if (first.subarray(0, 4).equals(BULK_MAGIC)) lanes.add(client);
        up.write(first);
        client.pipe(up);
      });
      up.pipe(client);
      const end = (): void => {
        lanes.delete(client);
        client.destroy();
        up.destroy();
      };
      client.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    t.teardown(() => relay.close());
    const via = new NodeConnection(`127.0.0.1:${(relay.address() as AddressInfo).port}`, 'default', { token: TOKEN });
    t.teardown(() => via.close());
    await via.handshake();
    for await (const c of via.readChunks(hashes.slice(0, 1))) void c; // the lane has answered
    const parts = Array.from({ length: 12 }, () => randomBytes(1 << 20));
    let taken = 0;
    const source = (function* () {
      for (const data of parts) {
        // Once a few were answered (the lane sends 8 before it reads an answer), its connections are cut.
        if (taken++ === 10) for (const l of lanes) l.destroy();
        yield { hash: hashChunk(data), data };
      }
    })();
    const before = await uploads();
    const grpcBefore = grpcCalls();
    const r = await via.putChunks(source);
    // A chunk the node took but whose answer the cut lost is sent again and found known: not counted new.
    t.ok(r.stored >= parts.length - 8 && r.stored <= parts.length, `${r.stored} counted new`);
    t.same(await conn.hasChunks(parts.map((p) => hashChunk(p))), [], 'the node holds them all');
    const onLane = (await uploads()).lane - before.lane;
    t.ok(onLane >= 3 && onLane <= 10, `${onLane} came on the lane before the cut`);
    await waitFor('the node to log the gRPC call', async () => grpcCalls() > grpcBefore, 5000);
    t.equal(grpcCalls() - grpcBefore, 1, 'the rest in one PutChunks call over gRPC');
    t.match(via.chunkPath, { over: 'grpc' }, 'and gRPC carries chunks for a while');
  });

  t.test('gRPC on the same port goes on working beside the lane', async (t) => {
    const e = await conn.stat('small.txt');
    t.equal(Number(e.attr!.size), 6);
  });

  t.test('NodeConnection fetches over the lane once the handshake offered it, and over gRPC when told not to', async (t) => {
    const h = await conn.handshake();
    t.equal(h.bulkLane, true, 'the node offers its lane');
    const parts: Buffer[] = [];
    for await (const c of conn.readChunks(hashes, 'd/big.bin')) parts.push(c.data);
    t.ok(Buffer.concat(parts).equals(big), 'the bytes over the lane');
    t.same(conn.chunkPath, { over: 'lane' }, 'and the connection says so');
    const grpcOnly = node.connect('default', { token: TOKEN, bulkLane: false });
    t.teardown(() => grpcOnly.close());
    await grpcOnly.handshake();
    const viaGrpc: Buffer[] = [];
    for await (const c of grpcOnly.readChunks(hashes, 'd/big.bin')) viaGrpc.push(c.data);
    t.ok(Buffer.concat(viaGrpc).equals(big), 'the same bytes over gRPC');
    t.same(grpcOnly.chunkPath, { over: 'grpc', why: 'the bulk lane is turned off' });
  });

  t.test('a proxy that passes the handshake on but not the lane: chunks come over gRPC', async (t) => {
    const open = await NodeProc.start(['--root', root, '--state-dir', join(dir, 'st-open')]);
    t.teardown(() => open.stop());
    const proxy = await RelayProxy.start(open.endpoint);
    t.teardown(() => proxy.stop());
    const c = new NodeConnection(proxy.endpoint, 'default');
    t.teardown(() => c.close());
    t.equal((await c.handshake()).bulkLane, true, 'the relayed handshake offers a lane the proxy does not serve');
    const parts: Buffer[] = [];
    for await (const x of c.readChunks(hashes, 'd/big.bin')) parts.push(x.data);
    t.ok(Buffer.concat(parts).equals(big), 'the file arrives all the same');
    t.match(c.chunkPath, { over: 'grpc', why: /^the bulk lane cannot be had: / }, 'and the connection says why chunks go over gRPC');
  });

  t.test('a lane nobody answers is LaneUnavailable, for the caller to use gRPC', async (t) => {
    const err = await failure(fetchAll(new BulkLane({ host: '127.0.0.1', port: 1, authorization: '', workspace: 'default' }), hashes.slice(0, 1)));
    t.ok(err instanceof LaneUnavailable, String(err));
  });

  t.test('uploads from a node that stops reading end at their deadline, and leave the thread pool to file calls', async (t) => {
    // Takes connections and never reads them: the socket fills, and the kernel's send waits for room.
    const held: Socket[] = [];
    const mute = createServer((s) => {
      s.pause();
      held.push(s);
    });
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
    t.teardown(() => {
      for (const s of held) s.destroy();
      mute.close();
    });
    const file = join(dir, 'unread.bin');
    await writeFile(file, randomBytes(64 << 20));
    const fh = await open(file, 'r');
    t.teardown(() => fh.close());
    const l = new BulkLane({ host: '127.0.0.1', port: (mute.address() as AddressInfo).port, authorization: '', workspace: 'default' });
    t.teardown(() => l.close());
    // Each upload one range, far more than the socket's buffers hold: the
    // wait is in the kernel's send, not for an answer. More of them than
    // libuv's pool has threads (4): the sends waiting for room take two.
    const one = async function* (): AsyncGenerator<UploadChunk> {
      yield { hash: Buffer.alloc(32, 1), data: { fh, offset: 0, length: 64 << 20, what: 'unread.bin' } };
    };
    const started = Date.now();
    const deadline = 4000;
    const uploads = Array.from({ length: 6 }, () => failure(l.upload(one(), deadline)));
    await new Promise((r) => setTimeout(r, 500));
    const read0 = Date.now();
    await readFile(file);
    // Were the pool's threads all waiting for room, the read would wait for the deadline.
    t.ok(Date.now() - started < deadline / 2, `a file read meanwhile took ${Date.now() - read0} ms: the pool was not all taken`);
    const errs = await Promise.all(uploads);
    t.same(errs.map((e) => (e as { code?: number })?.code), errs.map(() => 4), `each ends DEADLINE_EXCEEDED: ${(errs[0] as Error)?.message}`);
    t.ok(Date.now() - started < 10_000, `given up on after ${Date.now() - started} ms, not left waiting for room`);
  });

  t.test('a send from a file that fails on the file is that error, and the lane goes on', async (t) => {
    const file = join(dir, 'closed-early.bin');
    const data = randomBytes(100_000);
    await writeFile(file, data);
    const fh = await open(file, 'r');
    const { fd } = fh;
    await fh.close(); // its descriptor is gone: the kernel's send of the range fails with EBADF
    t.equal(fh.fd, -1, `closed (it was ${fd})`);
    const err = await failure(conn.putChunks([{ hash: hashChunk(data), data: { fh, offset: 0, length: data.length, what: 'closed-early.bin' } }]));
    t.equal(errnoOf(err), 'EBADF', `the file's error: ${(err as Error)?.message}`);
    t.same(conn.chunkPath, { over: 'lane' }, 'not taken for a lane that broke');
    const good = randomBytes(3000);
    t.same(await conn.putChunks([{ hash: hashChunk(good), data: good }]), { stored: 1, bytes: 3000 }, 'the next upload goes on the lane');
  });

  t.test('a node restarted on the same port: the lane opens new connections for the kept ones', async (t) => {
    const dir2 = await tempDir(t);
    await mkdir(join(dir2, 'ws'));
    await writeFile(join(dir2, 'ws/f.bin'), big);
    const args = ['--root', join(dir2, 'ws'), '--state-dir', join(dir2, 'st')];
    const first = await NodeProc.start(args);
    const c2 = first.connect('default');
    t.teardown(() => c2.close());
    const hs = (await c2.getManifest('f.bin')).chunks.map((c) => c.hash);
    const l = new BulkLane({ ...hostPort(first.endpoint)!, authorization: '', workspace: 'default' });
    t.teardown(() => l.close());
    t.equal((await fetchAll(l, hs, 'f.bin')).length, hs.length, 'served before the restart');
    await first.stop('SIGKILL');
    const second = await NodeProc.start([...args, '--listen', first.endpoint]);
    t.teardown(() => second.stop());
    t.ok(Buffer.concat(await fetchAll(l, hs, 'f.bin')).equals(big), 'and after it, on a new connection');
  });

  t.test('a node killed mid-stream is a transport error, not a lane that never was', async (t) => {
    const dir2 = await tempDir(t);
    await mkdir(join(dir2, 'ws'));
    const huge = randomBytes(64 * 1024 * 1024);
    await writeFile(join(dir2, 'ws/huge.bin'), huge);
    const doomed = await NodeProc.start(['--root', join(dir2, 'ws'), '--state-dir', join(dir2, 'st')]);
    t.teardown(() => doomed.stop('SIGKILL'));
    const c2 = doomed.connect('default');
    t.teardown(() => c2.close());
    const hs = (await c2.getManifest('huge.bin')).chunks.map((c) => c.hash);
    const l = new BulkLane({ ...hostPort(doomed.endpoint)!, authorization: '', workspace: 'default' });
    t.teardown(() => l.close());
    // A slow reader first: the socket stops reading past 32 MiB queued and goes on after.
    const slow: Buffer[] = [];
    for await (const c of l.fetch(hs, 'huge.bin', 30_000)) {
      slow.push(c.data);
      await new Promise((r) => setTimeout(r, 10));
    }
    t.ok(Buffer.concat(slow).equals(huge), 'a slow reader gets all of it');
    let got = 0;
    const err = await failure(
      (async () => {
        for await (const _ of l.fetch(hs, 'huge.bin', 30_000)) if (++got === 2) doomed.child.kill('SIGKILL');
      })(),
    );
    t.ok(got >= 2 && got < hs.length, `${got} of ${hs.length} chunks arrived before the node died`);
    t.notOk(err instanceof LaneUnavailable, 'not taken for a lane that was never there');
    t.equal(errnoOf(err), 'EHOSTDOWN', (err as Error)?.message);
  });
});
