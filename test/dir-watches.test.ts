// The node's directory watches through the addon (native/src/tree_watch.c):
// real inotify on real directories. A burst of events reaches JS as one
// batch after the delay; what is waiting can be taken at once; a commit the
// node writes itself (O_TMPFILE, then a name) gives one event; an overflow
// of the kernel's queue is reported, and the node's watcher then walks the
// tree (checked through a real node over gRPC).
import t from 'tap';
import { renameSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dirWatches, type DirEvent } from '../src/node/dir-watches.js';
import { nativeAddon } from '../src/native/addon.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { waitFor } from './helpers/mount-proc.js';

const addon = nativeAddon();
/** Without the addon there is nothing to test here; the first test fails for that. */
const noAddon = addon ? false : 'the addon is not built';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Watches with a record of each hand-over. */
function recorder(delayMs: number) {
  const batches: DirEvent[][] = [];
  /** Per batch: gathered over the delay (not taken early by drain()). */
  const waited: boolean[] = [];
  let overflows = 0;
  const w = dirWatches(
    (events, gathered) => {
      batches.push(events);
      waited.push(gathered);
    },
    () => overflows++,
    delayMs,
  );
  /** The paths events were about, each once, sorted (a write gives IN_CREATE and IN_MODIFY). */
  const names = (): string[] => [...new Set(batches.flat().map((e) => (e.name ? (e.dir ? `${e.dir}/${e.name}` : e.name) : e.dir)))].sort();
  return { w, batches, waited, names, overflows: () => overflows };
}

t.test('the addon is built, so the node uses it', async (t) => {
  t.ok(addon?.treeWatchOpen, 'treeWatchOpen is there');
});

t.test('a burst of events reaches JS as one batch, once the delay is over', { skip: noAddon }, async (t) => {
  const dir = await tempDir(t);
  const r = recorder(1000);
  t.teardown(() => r.w.close());
  r.w.add('d', dir);
  const started = performance.now();
  // 21 names changed in one go (nothing is handed over while this thread does not yield).
  for (let i = 0; i < 20; i++) writeFileSync(join(dir, `f${i}`), 'x');
  renameSync(join(dir, 'f0'), join(dir, 'g0'));
  await waitFor('a hand-over', async () => r.batches.length > 0);
  t.ok(performance.now() - started >= 900, 'not before the delay was over');
  await sleep(300);
  t.same(r.waited, [true], 'one hand-over for the whole burst, not one call per event');
  const names = new Set(r.names());
  t.ok([...Array(20).keys()].slice(1).every((i) => names.has(`d/f${i}`)) && names.has('d/f0') && names.has('d/g0'), 'every name that changed is in it');
});

t.test('drain() hands over what is waiting at once', { skip: noAddon }, async (t) => {
  const dir = await tempDir(t);
  const r = recorder(5000);
  t.teardown(() => r.w.close());
  r.w.add('', dir);
  await writeFile(join(dir, 'now'), 'x');
  r.w.drain();
  t.same(r.names(), ['now'], 'the new name, without waiting out the 5 s delay');
  t.same(r.waited, [false], 'handed over as not gathered (the watcher gathers it)');
  r.w.drain();
  t.equal(r.batches.length, 1, 'nothing more to hand over');
});

t.test('a file the node commits itself (O_TMPFILE: written, then named) reaches JS as one hand-over', { skip: noAddon }, async (t) => {
  const dir = await tempDir(t);
  // The commit's fsyncs come between its events: the delay outlasts them even on a loaded disk.
  const r = recorder(2000);
  t.teardown(() => r.w.close());
  r.w.add('', dir);
  await addon!.writeNewFile(dir, '', 'made', Buffer.from('content'), 0o644, 1_700_000_000, 0, 1_700_000_000, 0, -1, -1);
  await waitFor('a hand-over with its name', async () => r.names().includes('made'));
  await sleep(300);
  t.ok(r.waited.every((w) => w) && r.batches.length <= 2, `gathered, not one hand-over per event (${r.batches.length} hand-over(s))`);
  // (Its writes before it had a name come under the kernel's "#<inode>", and find no file.)
  t.pass(`events about ${JSON.stringify(r.names())}`);
  t.equal(await readFile(join(dir, 'made'), 'utf8'), 'content');
});

t.test('watches: removed, moved, refused', { skip: noAddon }, async (t) => {
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

const queueLimit = Number(await readFile('/proc/sys/fs/inotify/max_queued_events', 'utf8'));

t.test("the kernel's queue overflowing is reported, and the node walks its tree", { skip: noAddon || (queueLimit > 200_000 ? `fs.inotify.max_queued_events is ${queueLimit}: too many events to make here` : false) }, async (t) => {
  const base = await tempDir(t);
  const root = join(base, 'ws');
  await mkdir(root);
  await writeFile(join(root, 'a'), 'a');
  await writeFile(join(root, 'b'), 'b');
  /** More events than the queue holds: two names in turn (the kernel merges an event with the same one right before it). */
  const flood = (): void => {
    for (let i = 0; i <= queueLimit / 2 + 100; i++) {
      utimesSync(join(root, 'a'), i, i);
      utimesSync(join(root, 'b'), i, i);
    }
  };

  const r = recorder(60_000);
  t.teardown(() => r.w.close());
  r.w.add('', root);
  flood();
  r.w.drain();
  t.equal(r.overflows(), 1, 'the overflow is reported');

  // A node whose watcher waits 60 s: the name made after the overflow has no event of its own.
  const node = await NodeProc.start(['--root', root, '--state-dir', join(base, 'st'), '--watch-delay', '60s']);
  t.teardown(() => node.stop());
  const conn = node.connect();
  t.teardown(() => conn.close());
  t.same((await conn.listDir('')).entries.map((e) => e.name).sort(), ['a', 'b'], 'the node has listed the tree');
  flood();
  await writeFile(join(root, 'after-overflow'), 'x');
  const listed = (await conn.listDir('')).entries.map((e) => e.name).sort();
  t.same(listed, ['a', 'after-overflow', 'b'], 'a listing after the overflow has the name whose event was lost');
  await waitFor('the node to log that it lost events', async () => node.lines.some((l) => /inotify dropped events/.test(String(l.msg))));
});
