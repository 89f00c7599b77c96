// The node's index on a database whose disk fills up: what happened on disk
// (a file placed by a commit) is not undone by a refused index write.
import t from 'tap';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Store } from '../src/store/db.js';
import { HashPool } from '../src/content/hash-pool.js';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { S_IFREG } from '../src/content/attr.js';
import { WorkspaceIndex } from '../src/node/workspace-index.js';
import type { IndexEntry } from '../src/node/index-entry.js';
import { fillUntilRefused, smallFs } from './helpers/small-fs.js';
import { tempDir } from './helpers/node-proc.js';

const file = (size: number, ino: number): IndexEntry => ({
  attr: { dev: 1, ino, mode: S_IFREG | 0o644, nlink: 1, uid: 0, gid: 0, rdev: 0, size, blocks: 0, atimeNs: 1n, mtimeNs: 1n, ctimeNs: 1n },
  digest: Buffer.alloc(32, ino),
  chunks: [],
});

t.test('an index write the database refuses: subscribers hear of the change, the log serves it, and it is written once there is room', async (t) => {
  const fs = await smallFs(t, '32m');
  const root = join(fs, 'ws');
  await mkdir(root);
  const store = await Store.open(join(fs, 'db'));
  const pool = new HashPool(1, DEFAULT_CHUNKING, 1 << 20);
  t.teardown(async () => {
    await pool.close();
    await store.close();
  });
  const open = async (): Promise<WorkspaceIndex> => {
    const ix = new WorkspaceIndex('ws', root, store, pool, { statConcurrency: 4, inlineMetadata: true, tempTtlMs: 600_000, logRetention: 1000, excluded: [] });
    await ix.load();
    return ix;
  };
  const backlog = async (ix: WorkspaceIndex, from: number): Promise<string[]> => {
    const out: string[] = [];
    for await (const c of ix.changedSince(from)) out.push(c.path);
    return out;
  };
  const index = await open();
  await index.apply([{ path: 'before.txt', entry: file(1, 2) }]);
  const from = index.generation;
  const heard: string[] = [];
  index.on('change', (c: { path: string }) => heard.push(c.path));

  const free = await fillUntilRefused(fs, store);
  await index.apply([{ path: 'a.txt', entry: file(10, 3) }]); // resolves: the commit that placed the file succeeds
  await index.apply([{ path: 'b.txt', entry: file(20, 4) }]);
  t.same(heard, ['a.txt', 'b.txt'], 'subscribers hear of the changes');
  t.same(await backlog(index, from), ['a.txt', 'b.txt'], 'a subscriber catching up from the log gets them too');
  const onDisk = await open();
  t.notOk(onDisk.entries.has('a.txt'), 'the database does not have them yet');
  t.equal(onDisk.generation, from);

  await free();
  await index.writeOut();
  const after = await open();
  t.equal(after.entries.get('b.txt')?.attr.size, 20, 'written once there is room');
  t.ok(after.entries.has('a.txt'));
  t.equal(after.generation, index.generation, 'with the generation');
  t.same(await backlog(after, from), ['a.txt', 'b.txt'], 'and the change log');
});

t.test("a directory's stat asked for before a later change there is taken again, not recorded over that change", async (t) => {
  const base = await tempDir(t);
  const root = join(base, 'ws');
  await mkdir(join(root, 'd'), { recursive: true });
  const store = await Store.open(join(base, 'db'));
  const pool = new HashPool(1, DEFAULT_CHUNKING, 1 << 20);
  t.teardown(async () => {
    await pool.close();
    await store.close();
  });
  const index = new WorkspaceIndex('ws', root, store, pool, { statConcurrency: 4, inlineMetadata: true, tempTtlMs: 600_000, logRetention: 1000, excluded: [] });
  await index.load();
  const d = join(root, 'd');
  // A commit's stat of its directory: asked for, and taken, before a mkdir there...
  const statAt = index.generation;
  const before = await index.calls.lstat(d);
  await mkdir(join(d, 'sub'));
  // ...whose own stat is recorded first (its answer came back sooner).
  await index.refresh('d');
  t.equal(index.entries.get('d')!.attr.nlink, 3, 'the mkdir recorded the directory with its new link count');
  await index.apply([{ path: 'd', entry: { attr: before }, statAt }]);
  t.equal(index.entries.get('d')!.attr.nlink, 3, "the older stat did not take the mkdir's link count back");
  t.equal(index.entries.get('d')!.attr.mtimeNs, (await index.calls.lstat(d)).mtimeNs, 'the directory is recorded as it is on disk');
  // A stat asked for after the path's last change is recorded as it is.
  await mkdir(join(d, 'sub2'));
  const fresh = index.generation;
  await index.apply([{ path: 'd', entry: { attr: await index.calls.lstat(d) }, statAt: fresh }]);
  t.equal(index.entries.get('d')!.attr.nlink, 4, 'a stat asked for since is recorded');
});
