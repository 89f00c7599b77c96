// The write-back's ordering of versions of one file, driven in process
// against a real node behind a fault proxy (helpers/write-back-rig.ts).
// - A version whose commit reached the node but whose answer was lost stays
//   queued; a newer version of the same file closed once the node answers
//   again must land on top of it, not beside it as a conflict copy (the
//   node holds our own older version, not someone else's).
// - A writer that opens and changes a file while another writer's close is
//   still committing it has its own close commit its change.
import t from 'tap';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { constants as C } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { chunkBuffer } from '../src/content/chunk-file.js';
import { DirtyFile } from '../src/mount/dirty-file.js';
import { Journal } from '../src/cache/journal.js';
import { errnoOf } from '../src/wire/errors.js';
import { waitFor } from './helpers/mount-proc.js';
import { writeBackRig } from './helpers/write-back-rig.js';

t.test('a newer version closed while an older one, landed unbeknown, is still queued', async (t) => {
  const A = Buffer.from('version A\n');
  const B = Buffer.from('version B, whose answer is lost\n');
  const C_ = Buffer.from('version C, closed last\n');
  const { root, proxy, mesh, wb } = await writeBackRig(t, { 'f.txt': A }, 400);

  const version = (data: Buffer, baseSeq?: number) => {
    const rec = { path: 'f.txt', dirty: '', baseDigest: chunkBuffer(A, DEFAULT_CHUNKING).digest, expectAbsent: false, baseSeq, mode: 0o644, data };
    const makeDurable = async (): Promise<string> => {
      const name = wb.newDirtyName();
      await DirtyFile.writeCopy(wb.dirtyPath(name), data, true);
      return name;
    };
    return wb.closeFile(rec, wb.beginClose(rec.path), { direct: true, makeDurable });
  };

  // B reaches the node, its answer does not: it is queued, and retried (muted too) with growing pauses.
  proxy.set('mute');
  const first = await version(B);
  t.ok('queued' in first, 'B is queued once its answer does not come');
  t.same(await readFile(join(root, 'f.txt')), B, 'yet the node holds B');
  const seqB = (first as { queued: number }).queued;
  // Right after a retry failed, the next one is at least a second away.
  await waitFor('a retry of B to fail', async () => (wb.pendingRecords()[0]?.attempts ?? 0) >= 2 && wb.pendingRecords()[0]?.state === 'queued', 10_000);

  // The node answers again; C, made from B (as a file edited again while B was queued), closes before B's retry.
  // (The muted connection lost parts of frames: it is reset, as a broken link would be.)
  proxy.set('pass');
  proxy.reset();
  await waitFor('the node to answer', () => mesh.stat('f.txt').then(() => true, () => false), 5000);
  t.ok(mesh.reachable, 'the node is reachable again');
  t.same(wb.pendingRecords().map((r) => [r.seq, r.state]), [[seqB, 'queued']], 'B is still queued, not being retried');
  const second = await version(C_, seqB);
  t.ok('digest' in second, 'C is committed at close');
  await wb.drain();

  t.same(await readFile(join(root, 'f.txt')), C_, 'the node holds C, the version closed last');
  t.same((await readdir(root)).sort(), ['f.txt'], 'no conflict copy beside it');
  t.equal(wb.stats.conflicts, 0, 'no conflict counted');
  t.equal(wb.pendingCount, 0, 'nothing left queued');
});

t.test("a writer that changes a file while another writer's close is committing it: its own close commits the change", async (t) => {
  const { root, proxy, vfs, wb } = await writeBackRig(t, {}, 10_000);
  await vfs.list('');
  const { node, handle: w1 } = await vfs.create('', 'f.txt', 0o644);
  await vfs.write(w1.fh, 0, Buffer.from('first writer\n'));
  // A slow link: the first close's commit is on its way for a while.
  proxy.set('delay', 300);
  const closing = vfs.flush(w1.fh);
  await waitFor("the first close's commit to be on its way", async () => wb.busy('f.txt') !== undefined, 5000);
  const w2 = await vfs.open(node.path, C.O_WRONLY);
  await vfs.write(w2.fh, 0, Buffer.from('second writer\n'));
  await closing;
  t.same(await readFile(join(root, 'f.txt')), Buffer.from('first writer\n'), 'the first close committed what it closed');
  await vfs.release(w1.fh);
  proxy.set('pass');
  await vfs.flush(w2.fh);
  await vfs.release(w2.fh);
  t.same(await readFile(join(root, 'f.txt')), Buffer.from('second writer\n'), "the second close committed the second writer's change");
  t.same([wb.stats.committed, wb.stats.conflicts, wb.pendingCount], [2, 0, 0], 'two commits, no conflict, nothing queued');
});

t.test('a close whose write-back failed: each handle open on the file then hears of it at its next fsync, once, and a writer\'s fsync journals the content again', async (t) => {
  const { root, vfs, wb, store } = await writeBackRig(t, {}, 10_000);
  await vfs.list('');
  const { node, handle: w1 } = await vfs.create('', 'f', 0o644);
  const reader = await vfs.open(node.path, C.O_RDONLY);
  await vfs.write(w1.fh, 0, Buffer.from('written through the first handle\n'));
  // A directory took the name on the node: the node refuses the file (EISDIR), nothing is queued.
  await mkdir(join(root, 'f'));
  const errnoFrom = (p: Promise<unknown>): Promise<string> => p.then(() => 'no error', (err: unknown) => errnoOf(err));
  t.equal(await errnoFrom(vfs.flush(w1.fh)), 'EISDIR', "the writer's close fails");
  const late = await vfs.open(node.path, C.O_WRONLY);
  t.equal(await errnoFrom(vfs.fsync(reader.fh)), 'EISDIR', 'a reader open then hears of it at its next fsync');
  await vfs.fsync(reader.fh);
  t.pass('once: its fsync after that succeeds');
  await vfs.fsync(late.fh);
  t.pass('a writer opened after the failure does not hear of it');
  await vfs.fsync(w1.fh);
  t.pass('the writer heard of it at its close, and not again');
  // Before, an fsync found the copy handed over and journaled nothing: the refused copy had gone aside.
  const journaled = (await new Journal(store, 'default').load()).filter((e) => e.path === 'f');
  t.equal(journaled.length, 1, 'the fsyncs journaled the content, from a copy of its own');
  t.equal(await readFile(wb.dirtyPath(journaled[0]!.dirty), 'utf8'), 'written through the first handle\n', 'which holds what was written');
  for (const h of [w1, reader, late]) await vfs.release(h.fh);

  // A reader of the node's version that a writer's copy took along (Vfs.follow) hears of it too.
  await writeFile(join(root, 'g'), 'the node\'s version\n');
  await vfs.list('');
  const follower = await vfs.open('g', C.O_RDONLY);
  const w = await vfs.open('g', C.O_WRONLY);
  await vfs.write(w.fh, 0, Buffer.from('changed\n'));
  await rm(join(root, 'g'));
  await mkdir(join(root, 'g'));
  t.equal(await errnoFrom(vfs.flush(w.fh)), 'EISDIR', "the writer's close fails");
  t.equal(await errnoFrom(vfs.fsync(follower.fh)), 'EISDIR', 'a reader that followed its copy hears of it');
  for (const h of [w, follower]) await vfs.release(h.fh);
});

t.test('a version an asynchronous close queued that the node then refuses: the handles still open on the file hear of it at their next fsync', async (t) => {
  const { root, vfs, wb } = await writeBackRig(t, {}, 10_000, { asyncWriteBack: true }, { lingerMs: 60_000 });
  await vfs.list('');
  const { node, handle: w } = await vfs.create('', 'q', 0o644);
  const reader = await vfs.open(node.path, C.O_RDONLY);
  await vfs.write(w.fh, 0, Buffer.from('queued\n'));
  await vfs.flush(w.fh);
  t.same(wb.pendingRecords().map((r) => r.path), ['q'], 'the close queued it');
  await vfs.release(w.fh);
  await mkdir(join(root, 'q'));
  await wb.drain();
  t.equal(wb.stats.failed, 1, 'the node refused it');
  const errnoFrom = (p: Promise<unknown>): Promise<string> => p.then(() => 'no error', (err: unknown) => errnoOf(err));
  t.equal(await errnoFrom(vfs.fsync(reader.fh)), 'EISDIR', 'the reader still open hears of it at its next fsync');
  t.equal(await errnoFrom(vfs.fsync(reader.fh)), 'no error', 'once');
  await vfs.release(reader.fh);
});

t.test('a file still open after its commit shows the mode the node gave it, set-id bits dropped', async (t) => {
  const { root, vfs } = await writeBackRig(t, {}, 10_000);
  await vfs.list('');
  const { node, handle: w } = await vfs.create('', 'tool', 0o755);
  const reader = await vfs.open(node.path, C.O_RDONLY);
  await vfs.write(w.fh, 0, Buffer.from('#!/bin/sh\n'));
  await vfs.setattr('tool', { mode: 0o4755 });
  const shown = async (): Promise<string> => ((await vfs.entry('tool')).attr.mode & 0o7777).toString(8);
  t.equal(await shown(), '4755', 'shown as asked while it is written');
  await vfs.flush(w.fh);
  await vfs.release(w.fh);
  t.equal(((await stat(join(root, 'tool'))).mode & 0o7777).toString(8), '755', 'the node dropped the set-id bit');
  t.equal(await shown(), '755', 'and the mount shows that while a reader keeps the file open');
  await vfs.release(reader.fh);
  t.equal(await shown(), '755', 'and after');
});

t.test('an owner and set-id bits given to a file being written both reach a node served with --allow-setid, in its commit', { skip: process.getuid?.() !== 0 && 'changing a file\'s owner needs root' }, async (t) => {
  const { root, vfs, node } = await writeBackRig(t, {}, 10_000, {}, { nodeArgs: ['--allow-setid', '--metrics', '127.0.0.1:0'] });
  /** Namespace and attribute calls the node served (a chown or chmod of its own is one). */
  const mutations = async (): Promise<number> => [...(await node.scrapeMetrics()).matchAll(/^ghostfs_node_rpcs_total\{method="Mutate"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
  const { handle } = await vfs.create('', 'tool', 0o755, 0, 0, C.O_WRONLY | C.O_CREAT);
  await vfs.write(handle.fh, 0, Buffer.from('#!/bin/sh\n'));
  // As `install -o -m` does: the owner, then the mode. Both go in the commit, the owner set
  // first on the node (a chown clears the set-id bits).
  await vfs.setattr('tool', { uid: 4321, gid: 4321 });
  await vfs.setattr('tool', { mode: 0o4755 });
  const before = await mutations();
  await vfs.flush(handle.fh);
  await vfs.release(handle.fh);
  const st = await stat(join(root, 'tool'));
  t.same([st.uid, st.gid, (st.mode & 0o7777).toString(8)], [4321, 4321, '4755'], 'the node has the owner and the mode');
  t.equal((await mutations()) - before, 0, 'no chown or chmod of its own after the commit');

  // The other order: a change of owner after the mode clears the set-id bits, as on a local disk.
  const other = await vfs.create('', 'tool2', 0o755, 0, 0, C.O_WRONLY | C.O_CREAT);
  await vfs.write(other.handle.fh, 0, Buffer.from('#!/bin/sh\n'));
  await vfs.setattr('tool2', { mode: 0o4755 });
  await vfs.setattr('tool2', { uid: 4321, gid: 4321 });
  await vfs.flush(other.handle.fh);
  await vfs.release(other.handle.fh);
  const st2 = await stat(join(root, 'tool2'));
  t.same([st2.uid, (st2.mode & 0o7777).toString(8)], [4321, '755'], 'chmod 4755, then chown: the node has the owner, without the set-id bits');
});

t.test('a node that cannot give a file its owner (root in a user namespace that maps root alone): the file lands all the same, and the record is done', { skip: (process.getuid?.() !== 0 && 'changing a file\'s owner needs root') || (spawnSync('unshare', ['-r', 'true']).status !== 0 && 'this machine makes no user namespaces (unshare -r)') }, async (t) => {
  const { root, vfs, wb, node } = await writeBackRig(t, {}, 10_000, {}, { nodeUnder: ['unshare', '-r'], nodeArgs: ['--metrics', '127.0.0.1:0'] });
  const mutations = async (): Promise<number> => [...(await node.scrapeMetrics()).matchAll(/^ghostfs_node_rpcs_total\{method="Mutate"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
  const before = await mutations();
  for (const name of ['a', 'b']) {
    const { handle } = await vfs.create('', name, 0o644, 0, 0, C.O_WRONLY | C.O_CREAT);
    await vfs.write(handle.fh, 0, Buffer.from(`${name}\n`));
    await vfs.setattr(name, { uid: 4321, gid: 4322 });
    await vfs.flush(handle.fh);
    await vfs.release(handle.fh);
  }
  for (const name of ['a', 'b']) {
    const st = await stat(join(root, name));
    t.same([await readFile(join(root, name), 'utf8'), st.uid, st.gid], [`${name}\n`, 0, 0], `${name}: on the node, owned by the node's user`);
  }
  t.same([wb.stats.committed, wb.stats.failed, wb.pendingCount], [2, 0, 0], 'both committed, none refused, nothing left queued');
  // The node said in its reply why it could not give the owner: no chown is tried after the commit (as for an older node).
  t.equal((await mutations()) - before, 0, 'no chown tried after the commits');
});

t.test('an owner given to a file being written while no node answers reaches the node once one does, after a restart of the mount too', { skip: process.getuid?.() !== 0 && 'changing a file\'s owner needs root' }, async (t) => {
  const rig = await writeBackRig(t, {}, 400);
  const { root, proxy, mesh, vfs } = rig;
  const { handle } = await vfs.create('', 'owned', 0o644, 0, 0, C.O_WRONLY | C.O_CREAT);
  proxy.set('mute');
  await vfs.write(handle.fh, 0, Buffer.from('kept for its owner\n'));
  await vfs.setattr('owned', { uid: 4321, gid: 4322 });
  await vfs.flush(handle.fh); // no node: durable in the journal, and close() returns
  await vfs.release(handle.fh);
  t.same((await new Journal(rig.store, 'default').load()).map((e) => [e.path, e.owner]), [['owned', { uid: 4321, gid: 4322 }]], 'the journal record carries the owner');
  t.equal((await vfs.entry('owned')).attr.uid, 4321, 'the mount shows it meanwhile');

  // The mount dies; the next one replays the record once the node answers.
  const wb = await rig.restart();
  proxy.set('pass');
  proxy.reset();
  await waitFor('the node to answer', () => mesh.stat('').then(() => true, () => false), 5000);
  t.equal(await wb.drain(), 0, 'committed');
  const st = await stat(join(root, 'owned'));
  t.same([await readFile(join(root, 'owned'), 'utf8'), st.uid, st.gid], ['kept for its owner\n', 4321, 4322], 'the node has the content and the owner');
});

t.test('a change of owner of a closed file still queued joins its record: no round trip, and no node needed', { skip: process.getuid?.() !== 0 && 'changing a file\'s owner needs root' }, async (t) => {
  // A node that keeps set-id bits: the mount must clear them itself, as a local disk would.
  const { root, proxy, vfs, wb } = await writeBackRig(t, {}, 400, { asyncWriteBack: true }, { lingerMs: 60_000, nodeArgs: ['--allow-setid'] });
  const { handle } = await vfs.create('', 'later', 0o4755, 0, 0, C.O_WRONLY | C.O_CREAT);
  await vfs.write(handle.fh, 0, Buffer.from('owned after its close\n'));
  await vfs.flush(handle.fh);
  await vfs.release(handle.fh);
  proxy.set('mute'); // as cp -p or rsync do after the close; no node answers meanwhile
  await vfs.setattr('later', { uid: 4321, gid: 4322 });
  const shown = (await vfs.entry('later')).attr;
  t.same([shown.uid, shown.gid, (shown.mode & 0o7777).toString(8)], [4321, 4322, '755'], 'the mount shows the owner, and the set-id bits cleared by it');
  t.same(wb.pendingRecords().map((r) => r.path), ['later'], 'the record still waits');
  proxy.set('pass');
  proxy.reset();
  t.equal(await wb.drain(), 0, 'committed');
  const st = await stat(join(root, 'later'));
  t.same([st.uid, st.gid, (st.mode & 0o7777).toString(8)], [4321, 4322, '755'], 'the node has the owner and the mode');
});

t.test('a version closed after one given an owner, both still queued, lands with that owner', { skip: process.getuid?.() !== 0 && 'changing a file\'s owner needs root' }, async (t) => {
  const { root, proxy, vfs, wb } = await writeBackRig(t, {}, 400, { asyncWriteBack: true }, { lingerMs: 60_000 });
  const first = await vfs.create('', 'twice', 0o644, 0, 0, C.O_WRONLY | C.O_CREAT);
  await vfs.write(first.handle.fh, 0, Buffer.from('first\n'));
  await vfs.setattr('twice', { uid: 4321, gid: 4322 });
  await vfs.flush(first.handle.fh);
  await vfs.release(first.handle.fh);
  proxy.set('mute'); // the open for writing would otherwise send the queued version first
  const second = await vfs.open('twice', C.O_WRONLY | C.O_TRUNC);
  await vfs.write(second.fh, 0, Buffer.from('second\n'));
  await vfs.flush(second.fh);
  await vfs.release(second.fh);
  t.same(wb.pendingRecords().map((r) => r.path), ['twice'], 'the newer version superseded the older one');
  proxy.set('pass');
  proxy.reset();
  t.equal(await wb.drain(), 0, 'committed');
  const st = await stat(join(root, 'twice'));
  t.same([await readFile(join(root, 'twice'), 'utf8'), st.uid, st.gid], ['second\n', 4321, 4322], 'the node has the newer content, with the owner given to the older');
});
