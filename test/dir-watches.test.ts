// The node's directory watches through the addon (native/src/tree_watch.c):
// real inotify on real directories. A burst of events reaches JS as one
// batch after the delay; what is waiting can be taken at once; a commit the
// node writes itself (O_TMPFILE, then a name) gives one event; an overflow
// of the kernel's queue is reported, and the node's watcher then walks the
// tree (checked through a real node over gRPC).
import t from 'tap';
import { mkdir, readFile, rename, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dirWatches, type DirEvent } from '../src/node/dir-watches.js';
import { nativeAddon } from '../src/native/addon.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';

const addon = nativeAddon();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Watches with a record of each hand-over. */
function recorder(delayMs: number) {
  const batches: DirEvent[][] = [];
  let overflows = 0;
  const w = dirWatches((events) => batches.push(events), () => overflows++, delayMs);
  /** The paths events were about, each once, sorted (a write gives IN_CREATE and IN_MODIFY). */
  const names = (): string[] => [...new Set(batches.flat().map((e) => (e.name ? (e.dir ? `${e.dir}/${e.name}` : e.name) : e.dir)))].sort();
  return { w, batches, names, overflows: () => overflows };
}

t.test('the addon is built, so the node uses it', async (t) => {
  t.ok(addon?.treeWatchOpen, 'treeWatchOpen is there');
  t.ok(recorder(10).w.gathers, 'and the watches gather events');
});

t.test('a burst of events reaches JS as one batch, after the delay', { skip: !addon }, async (t) => {
  const dir = await tempDir(t);
  const r = recorder(300);
  t.teardown(() => r.w.close());
  r.w.add('d', dir);
  for (let i = 0; i < 20; i++) await writeFile(join(dir, `f${i}`), 'x');
  await rename(join(dir, 'f0'), join(dir, 'g0'));
  t.equal(r.batches.length, 0, 'nothing handed over within the delay');
  await sleep(900);
  t.ok(r.batches.length >= 1 && r.batches.length <= 2, `handed over in ${r.batches.length} batch(es), not one call per event`);
  const names = new Set(r.names());
  t.ok([...Array(20).keys()].slice(1).every((i) => names.has(`d/f${i}`)) && names.has('d/f0') && names.has('d/g0'), 'every name that changed is in it');
});

t.test('drain() hands over what is waiting at once', { skip: !addon }, async (t) => {
  const dir = await tempDir(t);
  const r = recorder(5000);
  t.teardown(() => r.w.close());
  r.w.add('', dir);
  await writeFile(join(dir, 'now'), 'x');
  r.w.drain();
  t.same(r.names(), ['now'], 'the new name, without waiting out the 5 s delay');
  r.w.drain();
  t.equal(r.batches.length, 1, 'nothing more to hand over');
});

t.test('a file the node commits itself (O_TMPFILE: written, then named) reaches JS as one hand-over', { skip: !addon }, async (t) => {
  const dir = await tempDir(t);
  const r = recorder(300);
  t.teardown(() => r.w.close());
  r.w.add('', dir);
  await addon!.writeNewFile(dir, '', 'made', Buffer.from('content'), 0o644, 1_700_000_000, 0, 1_700_000_000, 0, -1, -1);
  await sleep(900);
  t.equal(r.batches.length, 1, 'one hand-over');
  // (Its writes before it had a name come under the kernel's "#<inode>", and find no file.)
  t.ok(r.names().includes('made'), `with its name (events about ${JSON.stringify(r.names())})`);
  t.equal(await readFile(join(dir, 'made'), 'utf8'), 'content');
});

t.test('watches: removed, moved, refused', { skip: !addon }, async (t) => {
  const base = await tempDir(t);
  await mkdir(join(base, 'a'));
  await mkdir(join(base, 'other'));
  const r = recorder(5000);
  t.teardown(() => r.w.close());
  r.w.add('a', join(base, 'a'));
  r.w.add('other', join(base, 'other'));
  r.w.remove('other');
  t.notOk(r.w.has('other'), 'a removed watch is gone');
  await writeFile(join(base, 'other', 'x'), 'x');
  r.w.drain();
  t.same(r.names(), [], 'and reports nothing');

  // Moved: watched at its new path before the old one is dropped, it is one watch.
  await rename(join(base, 'a'), join(base, 'b'));
  r.w.add('b', join(base, 'b'));
  r.w.remove('a');
  t.equal(r.w.size, 1, 'one directory, one path watched');
  await writeFile(join(base, 'b', 'y'), 'y');
  r.w.drain();
  t.ok(r.names().includes('b/y') && r.names().every((p) => p.startsWith('b')), `its events come under the path it has now (${JSON.stringify(r.names())})`);

  await writeFile(join(base, 'file'), 'x');
  t.throws(() => r.w.add('file', join(base, 'file')), { code: 'ENOTDIR' }, 'a file is refused');
  await symlink(join(base, 'b'), join(base, 'link'));
  t.throws(() => r.w.add('link', join(base, 'link')), { code: 'ENOTDIR' }, 'a symlink is not followed');
  t.throws(() => r.w.add('gone', join(base, 'gone')), { code: 'ENOENT' }, 'a missing directory is refused');
});

t.test("the kernel's queue overflowing is reported, and the node walks its tree", { skip: !addon }, async (t) => {
  const limit = Number(await readFile('/proc/sys/fs/inotify/max_queued_events', 'utf8'));
  const base = await tempDir(t);
  const root = join(base, 'ws');
  await mkdir(root);
  await writeFile(join(root, 'a'), 'a');
  await writeFile(join(root, 'b'), 'b');
  /** More events than the queue holds: two names in turn (the kernel merges an event with the same one right before it). */
  const flood = async (): Promise<void> => {
    for (let i = 0; i <= limit / 2 + 100; i++) {
      await utimes(join(root, 'a'), i, i);
      await utimes(join(root, 'b'), i, i);
    }
  };

  const r = recorder(60_000);
  t.teardown(() => r.w.close());
  r.w.add('', root);
  await flood();
  r.w.drain();
  t.equal(r.overflows(), 1, 'the overflow is reported');

  // A node whose watcher waits 60 s: the name made after the overflow has no event of its own.
  const node = await NodeProc.start(['--root', root, '--state-dir', join(base, 'st'), '--watch-delay', '60s']);
  t.teardown(() => node.stop());
  const conn = node.connect();
  t.teardown(() => conn.close());
  t.same((await conn.listDir('')).entries.map((e) => e.name).sort(), ['a', 'b'], 'the node has listed the tree');
  await flood();
  await writeFile(join(root, 'after-overflow'), 'x');
  const listed = (await conn.listDir('')).entries.map((e) => e.name).sort();
  t.same(listed, ['a', 'after-overflow', 'b'], 'a listing after the overflow has the name whose event was lost');
  t.ok(node.lines.some((l) => /inotify dropped events/.test(String(l.msg))), 'the node logged that it lost events');
});
