// A mount's change feed leaves out the mount's own commits: the commit's
// reply told it what the node made, and the echo cost both sides a message
// and a wake-up per file. Checked on a real node over gRPC (what a feed
// naming a writer gets, and what others get), then through a real native
// mount (the kernel still hears of what the node made of a file, and the
// feed's position moves past the mount's own commits).
import t, { type Test } from 'tap';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { chunkBuffer } from '../src/content/chunk-file.js';
import type { NodeConnection } from '../src/mesh/connection.js';
import type { WChangeEventOut } from '../src/wire/types.js';
import { MeshClient } from '../src/mesh/mesh-client.js';
import { ChangeFeed } from '../src/mount/change-feed.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { writeBackRig } from './helpers/write-back-rig.js';
import { MountProc, run, waitFor } from './helpers/mount-proc.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A commit of `text` as a new file, its bytes inside the call. */
function newFile(path: string, text: string) {
  const data = Buffer.from(text);
  const m = chunkBuffer(data, DEFAULT_CHUNKING);
  return { path, expectAbsent: true, digest: m.digest, size: m.size, chunks: m.chunks, inline: m.chunks.map((c) => ({ hash: c.hash, data: data.subarray(c.offset, c.offset + c.length) })), mode: 0o644 };
}

/** Every event (heartbeats aside) a feed sends from `from`, until stopped. */
function feed(conn: NodeConnection, from: number, epoch: string): { events: WChangeEventOut[]; stop(): void } {
  const events: WChangeEventOut[] = [];
  const call = conn.watch(from, epoch, (e) => events.push(e), () => undefined);
  return { events, stop: () => call.cancel() };
}

/** A node serving `base`/ws, a connection naming writer-a, and that writer's feed, live. */
async function writerFeed(t: Test, base: string, nodeArgs: string[] = []): Promise<{ node: NodeProc; mine: NodeConnection; own: ReturnType<typeof feed> }> {
  const node = await NodeProc.start(['--root', join(base, 'ws'), '--state-dir', join(base, 'st'), ...nodeArgs]);
  t.teardown(() => node.stop());
  const mine = node.connect('default', { writer: 'writer-a' });
  t.teardown(() => mine.close());
  const { generation: start, epoch } = await mine.handshake();
  const own = feed(mine, start, epoch);
  t.teardown(() => own.stop());
  await waitFor('the feed to be live', async () => own.events.some((e) => e.kind === 'READY'));
  return { node, mine, own };
}

t.test("a feed naming a writer gets no event for that writer's commits, and is told its position past them", async (t) => {
  const base = await tempDir(t);
  await mkdir(join(base, 'ws'));
  const node = await NodeProc.start(['--root', join(base, 'ws'), '--state-dir', join(base, 'st')]);
  t.teardown(() => node.stop());
  const mine = node.connect('default', { writer: 'writer-a' });
  const theirs = node.connect('default', { writer: 'writer-b' });
  const plain = node.connect('default');
  t.teardown(() => [mine, theirs, plain].forEach((c) => c.close()));
  const { generation: start, epoch } = await mine.handshake();

  const own = feed(mine, start, epoch);
  const other = feed(plain, start, epoch);
  t.teardown(() => [own, other].forEach((f) => f.stop()));
  await waitFor('both feeds to be live', async () => [own, other].every((f) => f.events.some((e) => e.kind === 'READY')));

  const a = await mine.commit(newFile('a.txt', 'written by a'));
  const b = await theirs.commit(newFile('b.txt', 'written by b'));
  await waitFor("the writer's feed to hear of b.txt", async () => own.events.some((e) => e.path === 'b.txt'));
  await waitFor('the other feed to hear of both', async () => ['a.txt', 'b.txt'].every((p) => other.events.some((e) => e.kind === 'CHANGED' && e.path === p)));
  t.notOk(own.events.some((e) => e.path === 'a.txt'), "the writer's feed sent nothing about the writer's own commit");
  t.ok(own.events.some((e) => e.kind === 'CHANGED' && e.path === 'b.txt' && e.generation === b.generation), "it did send another writer's commit");
  await waitFor("the writer's feed to be told its position past its commit", async () => own.events.some((e) => e.kind === 'POSITION' && e.generation >= a.generation));
  t.notOk(other.events.some((e) => e.kind === 'POSITION'), 'a feed naming no writer is sent no position events');

  // Caught up from the log (a restart from an older position), the commit is there: the log names no writer.
  const replay = feed(mine, start, epoch);
  t.teardown(() => replay.stop());
  await waitFor('the replay to end', async () => replay.events.some((e) => e.kind === 'READY'));
  t.ok(replay.events.some((e) => e.kind === 'CHANGED' && e.path === 'a.txt'), "a feed catching up from the log gets the writer's own commit");
});

t.test("a commit's directory stays out of its writer's feed only if the writer records what the reply carries (an older mount hears of it there)", async (t) => {
  const base = await tempDir(t);
  await mkdir(join(base, 'ws', 'reads'), { recursive: true });
  await mkdir(join(base, 'ws', 'older'));
  const { mine, own } = await writerFeed(t, base);

  const a = await mine.commit(newFile('reads/a.txt', 'a'));
  const b = await mine.commit({ ...newFile('older/b.txt', 'b'), readsAlso: false });
  t.same([a.also.map((x) => x.name), b.also.map((x) => x.name)], [['reads'], ['older']], 'both replies carry the directory');
  await waitFor("the writer's feed to hear of the older writer's directory", async () => own.events.some((e) => e.kind === 'CHANGED' && e.path === 'older'));
  await waitFor("the writer's feed to be told its position past both", async () => own.events.some((e) => e.kind === 'POSITION' && e.generation >= b.generation));
  t.notOk(own.events.some((e) => e.path === 'reads' || e.path === 'reads/a.txt' || e.path === 'older/b.txt'), 'nothing else: the files, and the directory of the writer that records it');
});

t.test("a feed naming a writer gets no event for what the replies to that writer's changes of names and attributes told it", async (t) => {
  const base = await tempDir(t);
  await mkdir(join(base, 'ws'));
  // No watcher: its own look at a change could come first and announce it without a writer.
  const node = await NodeProc.start(['--root', join(base, 'ws'), '--state-dir', join(base, 'st'), '--no-watch']);
  t.teardown(() => node.stop());
  const mine = node.connect('default', { writer: 'writer-a' });
  const plain = node.connect('default');
  t.teardown(() => [mine, plain].forEach((c) => c.close()));
  // A tree made by someone else: both feeds hear of it.
  for (const d of ['d', 'd/e', 'd/e/f']) await plain.mutate({ mkdir: { path: d, mode: 0o755 } });
  for (const f of ['d/x.txt', 'd/e/y.txt', 'd/e/f/z.txt', 'h1.txt']) await plain.commit(newFile(f, `content of ${f}`));
  const { generation: start, epoch } = await mine.handshake();
  const own = feed(mine, start, epoch);
  const other = feed(plain, start, epoch);
  t.teardown(() => [own, other].forEach((f) => f.stop()));
  await waitFor('both feeds to be live', async () => [own, other].every((f) => f.events.some((e) => e.kind === 'READY')));

  const renamed = await mine.mutate({ rename: { from: 'd', to: 'd2', noReplace: false, exchange: false } });
  t.same(renamed.entries.map((e) => e.name).sort(), ['', 'd2'], "the rename's reply names the new name and the directory (the old name: gone)");
  await mine.mutate({ unlink: { path: 'd2/e/y.txt' } });
  await mine.mutate({ mkdir: { path: 'd2/new', mode: 0o700 } });
  await mine.mutate({ chmod: { path: 'd2/x.txt', mode: 0o600 } });
  await mine.mutate({ link: { existing: 'h1.txt', path: 'h2.txt' } });
  // The other name of a hard link loses a link: not in the reply, so every feed hears of that.
  const last = await mine.mutate({ unlink: { path: 'h2.txt' } });
  const of = (f: { events: WChangeEventOut[] }): string[] => f.events.filter((e) => e.kind === 'CHANGED' || e.kind === 'REMOVED').map((e) => `${e.kind} ${e.path}`);
  await waitFor('the other feed to hear of every change', async () => ['REMOVED d', 'CHANGED d2', 'REMOVED d2/e/y.txt', 'CHANGED d2/new', 'REMOVED h2.txt'].every((x) => of(other).includes(x)));
  // Every event before a generation past the writer's last change has been sent or skipped.
  await waitFor("the writer's feed to have come past its last change", async () => own.events.some((e) => e.generation >= last.generation && e.kind !== 'READY'));
  const told = ['REMOVED d', 'CHANGED d2', 'CHANGED ', 'REMOVED d2/e/y.txt', 'CHANGED d2/new', 'CHANGED h2.txt', 'REMOVED h2.txt'];
  t.same(of(own).filter((x) => told.includes(x)), [], "the writer's feed sent nothing its replies told it");
  t.ok(told.every((x) => of(other).includes(x)), 'a feed naming no writer got all of it');
  // Nor a renamed directory's contents, which the writer moves itself.
  const subtree = ['d/x.txt', 'd/e', 'd/e/y.txt', 'd/e/f', 'd/e/f/z.txt'];
  t.same(of(own).filter((x) => subtree.some((p) => x.endsWith(` ${p}`) || x.endsWith(` ${p.replace(/^d/, 'd2')}`))), [], "nor the rename's subtree, under either name");
  t.ok(subtree.every((p) => of(other).includes(`REMOVED ${p}`) && of(other).includes(`CHANGED ${p.replace(/^d/, 'd2')}`)), 'which a feed naming no writer got');
  // A hard link's other names are announced to every feed whenever the inode changes, the link's too.
  t.ok(of(own).length > 0 && of(own).every((x) => x === 'CHANGED h1.txt'), `only the link count of the name the reply did not carry: ${of(own).join(', ')}`);
});

t.test("a watcher that takes each event at once leaves a path being committed to its commit (no echo, no second hash)", async (t) => {
  const base = await tempDir(t);
  await mkdir(join(base, 'ws'));
  const { mine, own } = await writerFeed(t, base, ['--watch-delay', '0']);
  const files = Array.from({ length: 100 }, (_, i) => `f${i}.txt`);
  let last = 0;
  for (const f of files) last = (await mine.commit(newFile(f, `content of ${f}`))).generation;
  await waitFor('a position past the last commit', async () => own.events.some((e) => e.kind === 'POSITION' && e.generation >= last));
  const echoed = own.events.filter((e) => files.includes(e.path)).map((e) => e.path);
  t.same(echoed, [], 'none of the 100 commits came back to their writer');
});

t.test("the mount's feed position is not written past one of its own commits before the mount has recorded it", async (t) => {
  const { node, vfs } = await writeBackRig(t, {}, 5_000);
  const mesh = new MeshClient([node.endpoint], 'default', { deadlineMs: 5_000, writer: 'writer-a' });
  t.teardown(() => mesh.close());
  // A write-back of this mount's under way until the test says otherwise.
  let settle!: () => void;
  const underWay = new Promise<void>((r) => (settle = r));
  const changes = new ChangeFeed(vfs.meta, mesh, vfs, { busy: () => undefined, underWay: () => underWay, pending: () => false });
  changes.start();
  t.teardown(() => changes.stop());
  t.teardown(() => settle());
  await changes.ready;
  const conn = node.connect('default', { writer: 'writer-a' });
  t.teardown(() => conn.close());
  const { generation } = await conn.commit(newFile('a.txt', 'mine'));
  await waitFor('the feed to be told its position past the commit', async () => changes.position.generation >= generation);
  await sleep(700); // (the position is written at most 200 ms after it moves)
  t.ok(vfs.meta.generation < generation, `not written while the write-back is under way (written: ${vfs.meta.generation}, commit: ${generation})`);
  settle();
  await waitFor('the position to be written once it is over', async () => vfs.meta.generation >= generation);
});

t.test('through a mount: the kernel shows what the node made of a file closed here, and the feed moves past the mount\'s own commits', async (t) => {
  const base = await tempDir(t);
  const root = join(base, 'ws');
  const mnt = join(base, 'mnt');
  await mkdir(root);
  // Without a watcher, nothing but the mount's own commits changes the node's index (a watcher
  // would announce each directory's new times): only a position event can move the feed.
  const node = await NodeProc.start(['--root', root, '--state-dir', join(base, 'st'), '--no-watch']);
  t.teardown(() => node.stop());
  // The kernel trusts attributes for an hour: only an invalidation makes it ask again.
  const m = await MountProc.start(node.endpoint, mnt, ['--cache-dir', join(base, 'cache'), '--driver', 'native', '--attr-timeout', '3600', '--passthrough', 'off']);
  t.teardown(() => m.stop());

  // Set-user-ID given while the file is open: the node (no --allow-setid) drops it at the commit.
  // The kernel is told from a thread of the mount's, maybe a moment after close() returned: a few seconds
  // are allowed, against the hour it would otherwise trust what it holds.
  const py = `import os, sys, time
p = sys.argv[1]
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b'#!/bin/sh\\n')
os.fchmod(fd, 0o4755)
print(oct(os.fstat(fd).st_mode & 0o7777))
os.close(fd)
end = time.time() + 5
while os.stat(p).st_mode & 0o7777 != 0o755 and time.time() < end:
    time.sleep(0.05)
print(oct(os.stat(p).st_mode & 0o7777))`;
  const r = await run('python3', ['-c', py, join(mnt, 'tool')]);
  t.equal(r.code, 0, r.stderr);
  const [whileOpen, afterClose] = r.stdout.trim().split('\n');
  t.equal(whileOpen, '0o4755', 'shown as asked while it is written');
  t.equal(((await stat(join(root, 'tool'))).mode & 0o7777).toString(8), '755', 'the node dropped the set-user-ID bit');
  t.equal(afterClose, '0o755', 'and the kernel shows the file as the node made it once it was closed');

  // Files written here: the mount's feed position reaches the node's generation without their echoes.
  const files = await run('sh', ['-c', 'for i in 1 2 3 4 5 6 7 8; do echo "$i" > "f$i"; done'], { cwd: mnt });
  t.equal(files.code, 0, files.stderr);
  const conn = node.connect();
  t.teardown(() => conn.close());
  const { generation } = await conn.handshake();
  await waitFor("the mount's feed position to reach the node's generation", async () => (await m.status()).changeFeed.generation >= generation);
  t.pass(`the feed's position reached ${generation}`);
});

/**
 * A feed for `mesh` whose events are held while `hold` is set, then
 * delivered in order (a feed running behind, deterministically).
 */
function heldFeed(mesh: MeshClient): { mesh: MeshClient; held: WChangeEventOut[]; hold: boolean; release(): void } {
  const gate = {
    held: [] as WChangeEventOut[],
    hold: false,
    deliver: undefined as ((e: WChangeEventOut) => void) | undefined,
    release() {
      gate.hold = false;
      for (const e of gate.held.splice(0)) gate.deliver?.(e);
    },
    mesh: {
      watch: (from: number, epoch: string, onEvent: (e: WChangeEventOut) => void, onEnd: (err?: Error) => void) => {
        gate.deliver = onEvent;
        return mesh.watch(from, epoch, (e) => (gate.hold ? gate.held.push(e) : onEvent(e)), onEnd);
      },
      stat: (path: string, at?: string) => mesh.stat(path, at),
    } as unknown as MeshClient,
  };
  return gate;
}

t.test("another writer's changes inside a tree this mount renames, announced before the rename, land under the tree's new name", async (t) => {
  // No watcher: the node's index changes only through the calls made here.
  const { node, vfs, mesh } = await writeBackRig(t, {}, 5_000, {}, { writer: 'writer-a', nodeArgs: ['--no-watch'] });
  const other = node.connect('default', { writer: 'writer-b' });
  t.teardown(() => other.close());
  for (const d of ['d', 'd/sub', 'p', 'q', 'r', 'e']) await other.mutate({ mkdir: { path: d, mode: 0o755 } });
  for (const f of ['d/sub/x.txt', 'd/sub/z.txt', 'p/w.txt', 'q/w.txt', 'r/k.txt']) await other.commit(newFile(f, `content of ${f}`));
  // This mount knows the whole tree.
  for (const d of ['', 'd', 'd/sub', 'p', 'q', 'r', 'e']) await vfs.readdir(d);
  const gate = heldFeed(mesh);
  const changes = new ChangeFeed(vfs.meta, gate.mesh, vfs);
  changes.start();
  t.teardown(() => changes.stop());
  await changes.ready;

  // The other writer's changes reach this mount's feed only after its renames.
  gate.hold = true;
  await other.mutate({ chmod: { path: 'd/sub/x.txt', mode: 0o600 } });
  await other.commit(newFile('d/sub/y.txt', 'new, by b'));
  await other.mutate({ unlink: { path: 'd/sub/z.txt' } });
  await other.mutate({ chmod: { path: 'p/w.txt', mode: 0o600 } });
  // Made and gone again in `e` before `r` replaces it: about the old `e`, not the tree moved there.
  await other.commit(newFile('e/k.txt', 'short-lived, by b'));
  const last = await other.mutate({ unlink: { path: 'e/k.txt' } });
  await waitFor('the feed to hold every change', async () => gate.held.some((e) => e.generation >= last.generation));

  await vfs.rename('', 'd', '', 'd2');
  await vfs.rename('', 'p', '', 'q', 2 /* RENAME_EXCHANGE */);
  await vfs.rename('', 'r', '', 'e');
  gate.release();
  await waitFor('the feed to apply what it held', async () => changes.position.generation >= last.generation);

  const mode = (p: string): string | undefined => vfs.meta.get(p) && (vfs.meta.get(p)!.attr.mode & 0o777).toString(8);
  t.equal(mode('d2/sub/x.txt'), '600', 'a chmod inside the renamed tree is shown under its new name');
  t.ok(vfs.meta.get('d2/sub/y.txt'), 'a file made there is too');
  t.notOk(vfs.meta.get('d2/sub/z.txt'), 'and a file removed there is gone');
  t.same(vfs.meta.childNames('d2/sub').sort(), ['x.txt', 'y.txt'], 'the moved directory lists what the node has');
  t.notOk(vfs.meta.get('d') ?? vfs.meta.get('d/sub'), 'nothing is shown under the old name');
  t.equal(mode('q/w.txt'), '600', 'an exchange: the chmod follows its tree to the other name');
  t.equal(mode('p/w.txt'), '644', 'and the tree now at the first name keeps its mode');
  t.equal(vfs.meta.get('e/k.txt')?.attr.size, Buffer.byteLength('content of r/k.txt'), 'changes inside the directory a rename replaced do not touch the tree moved there');
  // What the node has, for each: the same.
  for (const p of ['d2/sub/x.txt', 'd2/sub/y.txt', 'q/w.txt', 'p/w.txt', 'e/k.txt']) {
    const n = await other.stat(p);
    t.equal((n.attr!.mode & 0o777).toString(8), mode(p), `${p}: the mode the node has`);
  }
});
