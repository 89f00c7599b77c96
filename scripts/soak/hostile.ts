// Hostile input against a real node: raw, malformed and oversized messages
// on every method and on the bulk lane, and well-formed requests with hostile paths (.., absolute,
// NUL, overlong names, symlinks out of the root). The node must stay up and
// answer, and nothing outside its root may change. The verdict counts a
// node that stopped answering as lost and any change outside the root as
// corrupted.
import * as grpc from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:net';
import { hostPort } from '../../src/mesh/bulk-client.js';
import { NodeConnection } from '../../src/mesh/connection.js';
import { BULK_MAGIC, CALL_FLAG, encodeCall, encodeHello, encodeRequest, MAX_CALL_BYTES } from '../../src/wire/bulk-lane.js';
import { fileDigest, hashChunk } from '../../src/content/manifest.js';
import { CHANNEL_OPTIONS } from '../../src/wire/proto.js';
import type { ScenarioOptions, ScenarioResult } from './scenarios.js';
import { World } from './lib/world.js';

const METHODS = ['Handshake', 'Stat', 'ListDir', 'GetManifest', 'ReadChunks', 'HasChunks', 'PutChunks', 'Commit', 'Mutate', 'Watch'];
const HOSTILE_PATHS = ['..', '../outside/secret', '/etc/passwd', 'a/../../outside', 'escape/secret', 'escape/../x', 'a\0b', 'x'.repeat(300), 'd/'.repeat(3000) + 'f', '', '.', './a', 'a//b', 'escape'];

/** Raw bytes on the node's bulk lane (same port): whatever comes back, until the node closes or 3 s pass. */
function rawLane(endpoint: string, bytes: Buffer): Promise<void> {
  const at = hostPort(endpoint)!;
  return new Promise((resolve) => {
    const s = connect(at.port, at.host, () => s.end(bytes));
    s.on('data', () => undefined);
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    s.setTimeout(3000, () => s.destroy());
  });
}

/** Lane requests a client may not send: garbage, impossible lengths and counts, hostile hints. */
function hostileLaneInputs(hash: Buffer): Buffer[] {
  const hello = encodeHello('', 'default');
  const u32 = (n: number): Buffer => Buffer.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
  return [
    Buffer.concat([BULK_MAGIC, randomBytes(Math.floor(Math.random() * 4096))]), // a hello of garbage
    Buffer.concat([BULK_MAGIC, Buffer.from([0xff, 0xff])]), // an authorization of 64 KiB announced
    Buffer.concat([hello, u32(0xffffffff)]), // a 4 GiB request announced
    Buffer.concat([hello, u32(6), Buffer.from([0, 0, 0xff, 0xff, 0, 0])]), // more hashes than the body holds
    Buffer.concat([hello, randomBytes(Math.floor(Math.random() * 4096))]), // a request of garbage
    ...HOSTILE_PATHS.map((p) => Buffer.concat([hello, encodeRequest([hash], p)])), // hostile hints
    Buffer.concat([hello, u32((CALL_FLAG | (MAX_CALL_BYTES + 1)) >>> 0)]), // a call over the limit announced
    Buffer.concat([hello, encodeCall('Commit', randomBytes(Math.floor(Math.random() * 4096)))]), // a call of garbage
    Buffer.concat([hello, encodeCall('Commit', Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x7f]))]), // a field claiming a huge length
    Buffer.concat([hello, u32((CALL_FLAG | 3) >>> 0), Buffer.from([0xee, 0, 0])]), // a call the lane does not have
  ];
}

/** A new file's commit with its bytes inside. */
function smallCommit(path: string): Parameters<NodeConnection['commit']>[0] {
  const data = Buffer.from('written through a hostile path\n');
  const chunk = { hash: hashChunk(data), offset: 0, length: data.length };
  return { path, expectAbsent: true, digest: fileDigest([chunk]), size: data.length, chunks: [chunk], mode: 0o644, inline: [{ hash: chunk.hash, data }] };
}

/** What the outside directory holds, to compare before and after. */
async function snapshot(dir: string): Promise<string> {
  const names = (await readdir(dir)).sort();
  const parts = await Promise.all(names.map(async (n) => `${n}:${(await stat(join(dir, n))).mtimeMs}:${(await readFile(join(dir, n))).toString('hex')}`));
  return parts.join('\n');
}

/** One raw call: `bytes` as the request message, whatever the method expects. */
function rawCall(client: grpc.Client, method: string, bytes: Buffer, stream: boolean): Promise<void> {
  const path = `/ghostfs.v1.Node/${method}`;
  const ser = (b: Buffer): Buffer => b;
  const de = (b: Buffer): Buffer => b;
  const deadline = Date.now() + 3000;
  return new Promise((resolve) => {
    if (stream) {
      const call = client.makeServerStreamRequest(path, ser, de, bytes, new grpc.Metadata(), { deadline });
      call.on('data', () => undefined);
      call.on('error', () => resolve());
      call.on('end', () => resolve());
    } else if (method === 'PutChunks') {
      const call = client.makeClientStreamRequest(path, ser, de, new grpc.Metadata(), { deadline }, () => resolve());
      call.write(bytes);
      call.end();
    } else {
      client.makeUnaryRequest(path, ser, de, bytes, new grpc.Metadata(), { deadline }, () => resolve());
    }
  });
}

export async function hostileInput(o: ScenarioOptions): Promise<ScenarioResult> {
  const w = await World.create({ driver: o.driver, bigBytes: 1024 * 1024, mountArgs: ['--write-back', o.writeBack ?? 'sync'] });
  const outside = join(w.base, 'outside');
  await mkdir(outside);
  await writeFile(join(outside, 'secret'), 'do not touch');
  await symlink(outside, join(w.source, 'escape'));
  await mkdir(join(w.source, 'a'));
  const before = await snapshot(outside);
  const node = await w.startNode();
  const client = new grpc.Client(node.endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  const conn = new NodeConnection(node.endpoint, 'default', { deadlineMs: 3000 });
  await conn.handshake(); // learns that small commits may go over the bulk lane
  const result: ScenarioResult = { name: 'hostile input: malformed, oversized and hostile-path requests', ops: 0, errors: {}, faulted: {}, lost: 0, corrupted: 0, maxOpMs: 0, examples: [], failures: [], injected: {} };
  const timed = async (kind: string, fn: () => Promise<unknown>): Promise<void> => {
    const t0 = performance.now();
    await fn().catch(() => undefined); // refusals are the point; only the node's survival is judged
    result.maxOpMs = Math.max(result.maxOpMs, Math.round(performance.now() - t0));
    result.ops++;
    result.injected[kind] = (result.injected[kind] ?? 0) + 1;
  };

  const hash = (await conn.getManifest('shared-big.bin')).chunks[0]!.hash;
  const until = Date.now() + o.durationMs;
  for (let round = 0; Date.now() < until || round === 0; round++) {
    for (const bytes of hostileLaneInputs(hash)) await timed('hostile bulk lane', () => rawLane(node.endpoint, bytes));
    for (const m of METHODS) {
      const stream = m === 'ReadChunks' || m === 'Watch';
      await timed('random bytes', () => rawCall(client, m, randomBytes(Math.floor(Math.random() * 4096)), stream));
      // A protobuf field header claiming a huge length, then nothing.
      await timed('truncated length', () => rawCall(client, m, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x7f]), stream));
    }
    if (round === 0) {
      // Larger than any message the node accepts.
      await timed('oversized message', () => rawCall(client, 'Commit', Buffer.alloc(20 * 1024 * 1024, 0x0a), false));
    }
    for (const p of HOSTILE_PATHS) {
      await timed('hostile path', () => conn.stat(p));
      await timed('hostile path', () => conn.listDir(p));
      await timed('hostile path', () => conn.getManifest(p));
      await timed('hostile path', () => conn.mutate({ mkdir: { path: `${p}/new`, mode: 0o755 } }));
      await timed('hostile path', () => conn.mutate({ unlink: { path: p } }));
      await timed('hostile path', () => conn.mutate({ rename: { from: 'a', to: p } }));
      await timed('hostile path', () => conn.mutate({ symlink: { path: p, target: '/etc/passwd' } }));
      await timed('hostile path', () => conn.mutate({ chmod: { path: p, mode: 0o777 } }));
      await timed('hostile path', () => conn.mutate({ truncate: { path: p, size: 0 } }));
      // A small commit: it travels as a call on the bulk lane.
      await timed('hostile path', () => conn.commit(smallCommit(p)));
    }
    // Still answering?
    try {
      await conn.handshake();
    } catch (err) {
      result.lost++;
      result.examples.push(`the node stopped answering after round ${round}: ${(err as Error).message}`);
      break;
    }
  }
  if (node.child.exitCode !== null || node.child.signalCode !== null) result.failures.push(`the node exited (${node.child.signalCode ?? node.child.exitCode})`);
  if ((await snapshot(outside)) !== before) {
    result.corrupted++;
    result.examples.push('something outside the root changed');
  }
  client.close();
  conn.close();
  await w.stop();
  if (!o.keep) await w.remove();
  return result;
}
