// The addon's sendFileRange, which the node's bulk lane uses to send chunks
// from workspace files: a header and a file range over a real loopback TCP
// connection, exact; a peer that stops reading, one that goes away, a file
// shorter than the range, and a file sendfile cannot read from.
import t from 'tap';
import { createServer, connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { nativeAddon, nativeLoadError } from '../src/native/addon.js';

const addon = nativeAddon();

/** A loopback connection: `sender` is the accepted side, with its descriptor; `receiver` collects what arrives. */
async function connection(t: { teardown(fn: () => unknown): void }): Promise<{ fd: number; sender: Socket; receiver: Socket; received: () => Buffer }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const receiver = connect((server.address() as { port: number }).port, '127.0.0.1');
  const [sender] = (await accepted) as [Socket];
  server.close();
  const parts: Buffer[] = [];
  receiver.on('data', (d: Buffer) => parts.push(d));
  receiver.on('error', () => undefined);
  sender.on('error', () => undefined);
  t.teardown(() => {
    sender.destroy();
    receiver.destroy();
  });
  const fd = (sender as unknown as { _handle: { fd: number } })._handle.fd;
  return { fd, sender, receiver, received: () => Buffer.concat(parts) };
}

const failure = (p: Promise<unknown>): Promise<NodeJS.ErrnoException | undefined> => p.then(() => undefined, (err: NodeJS.ErrnoException) => err);

t.test('sendFileRange', async (t) => {
  // `npm test` builds the addon (scripts/setup.sh): without it this is a failure, not a skip.
  t.ok(addon, `the addon is built (${nativeLoadError() ?? 'loaded'})`);
  if (!addon) return;
  const a = addon;
  const dir = await mkdtemp(join(tmpdir(), 'ghostfs-send-range-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const content = randomBytes(3 * 1024 * 1024 + 123);
  await writeFile(join(dir, 'f.bin'), content);
  const file = await open(join(dir, 'f.bin'), 'r');
  t.teardown(() => file.close());
  const huge = join(dir, 'huge.bin');
  await writeFile(huge, Buffer.alloc(64 * 1024 * 1024, 7));
  const hugeFile = await open(huge, 'r');
  t.teardown(() => hugeFile.close());

  t.test('the header, then exactly the range asked for', async (t) => {
    const c = await connection(t);
    const head = Buffer.from('HEAD');
    const offset = 1000;
    const length = 2 * 1024 * 1024 + 5;
    await a.sendFileRange(c.fd, head, file.fd, offset, length, new Int32Array(1));
    const want = Buffer.concat([head, content.subarray(offset, offset + length)]);
    while (c.received().length < want.length) await once(c.receiver, 'data');
    t.ok(c.received().equals(want), `${want.length} bytes, in order`);
    // The connection goes on: libuv's own writes follow.
    c.sender.write('tail');
    while (c.received().length < want.length + 4) await once(c.receiver, 'data');
    t.equal(c.received().subarray(want.length).toString(), 'tail');
  });

  t.test('a file shorter than the range is ENODATA', async (t) => {
    const c = await connection(t);
    const err = await failure(a.sendFileRange(c.fd, Buffer.alloc(0), file.fd, content.length - 10, 20, new Int32Array(1)));
    t.equal(err?.code, 'ENODATA', String(err?.message));
  });

  t.test('a peer that stops reading: the send waits, and the cancel flag stops it', async (t) => {
    const c = await connection(t);
    c.receiver.pause();
    const cancel = new Int32Array(1);
    let settled = false;
    const sending = failure(a.sendFileRange(c.fd, Buffer.alloc(0), hugeFile.fd, 0, 64 * 1024 * 1024, cancel)).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 300));
    t.notOk(settled, 'still waiting for room after 300 ms');
    cancel[0] = 1;
    const err = await sending;
    t.equal(err?.code, 'ECANCELED', String(err?.message));
  });

  t.test('a peer that goes away ends the send with an error', async (t) => {
    const c = await connection(t);
    c.receiver.pause();
    const sending = failure(a.sendFileRange(c.fd, Buffer.alloc(0), hugeFile.fd, 0, 64 * 1024 * 1024, new Int32Array(1)));
    await new Promise((r) => setTimeout(r, 100));
    c.receiver.resetAndDestroy();
    const err = await sending;
    t.match(err?.code, /^(ECONNRESET|EPIPE)$/, String(err?.message));
  });

  t.test('a file sendfile cannot read is copied instead (a directory: its read then fails)', async (t) => {
    const c = await connection(t);
    const d = await open(dir, 'r');
    t.teardown(() => d.close());
    const err = await failure(a.sendFileRange(c.fd, Buffer.alloc(0), d.fd, 0, 10, new Int32Array(1)));
    t.equal(err?.code, 'EISDIR', `${err?.message} (sendfile refused, pread tried)`);
  });
});
