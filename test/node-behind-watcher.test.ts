// A node whose watcher is still applying changes it noticed (hashing a big
// file another writer put in the workspace) when a stat or listing comes:
// the answer is the disk's, not an index that lacks the changes queued
// behind that hash. A mount that had just committed a file through another
// node sharing the root was told it was not there, and dropped it from its
// view (seen in the replica-dies fault run).
//
// The node runs in this process so that one file's hash can be held until
// the test lets it go (a hash that takes seconds, without writing gigabytes);
// the index, its database, the inotify watcher and the gRPC calls are real.
import t, { type Test } from 'tap';
import { mkdir, realpath, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { chunkBuffer } from '../src/content/chunk-file.js';
import { HashPool, type HashResult } from '../src/content/hash-pool.js';
import { Store } from '../src/store/db.js';
import { TEMP_PREFIX, WorkspaceIndex } from '../src/node/workspace-index.js';
import { TreeWatcher } from '../src/node/watcher.js';
import { ChunkSource } from '../src/node/chunk-source.js';
import { makeService } from '../src/node/service.js';
import { CHANNEL_OPTIONS, wire } from '../src/wire/proto.js';
import { NodeConnection } from '../src/mesh/connection.js';
import { errnoOf } from '../src/wire/errors.js';
import { tempDir } from './helpers/node-proc.js';
import { waitFor } from './helpers/mount-proc.js';

/** Hashes as HashPool does, except that a file whose name ends with `held` waits until release() is called. */
class HeldPool extends HashPool {
  private open!: () => void;
  private readonly gate = new Promise<void>((resolve) => (this.open = resolve));
  started = false;
  constructor(private readonly held: string) {
    super(2, DEFAULT_CHUNKING, 1 << 20);
  }
  override async hash(path: string): Promise<HashResult> {
    if (path.endsWith(this.held)) {
      this.started = true;
      await this.gate;
    }
    return super.hash(path);
  }
  release(): void {
    this.open();
  }
}

const digestOf = (s: string): Buffer => chunkBuffer(Buffer.from(s), DEFAULT_CHUNKING).digest;

/**
 * A node serving `root` in this process (its index in `base`), hashing with
 * `pool`, whose held hashes are let go when the test ends: its index,
 * watcher and a connection to it over gRPC.
 */
async function serveHere(t: Test, base: string, root: string, pool: HashPool & { release(): void }) {
  const store = await Store.open(join(base, 'db'));
  const index = new WorkspaceIndex('default', root, store, pool, { statConcurrency: 4, inlineMetadata: true, tempTtlMs: 600_000, logRetention: 1000, excluded: [] });
  await index.load();
  const watcher = new TreeWatcher(index);
  watcher.start();
  await index.scan();
  const chunks = new ChunkSource(index, join(base, 'staging'));
  await chunks.init();
  const ws = { id: 'default', root, index, chunks, params: DEFAULT_CHUNKING, watcher };
  const { handlers } = makeService({ nodeId: 'test', workspace: () => ws, feedMaxUnread: 1000 });
  const server = new grpc.Server(CHANNEL_OPTIONS);
  server.addService(wire().ghostfs.v1.Node.service, handlers);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const conn = new NodeConnection(`127.0.0.1:${port}`, 'default');
  t.teardown(async () => {
    conn.close();
    server.forceShutdown();
    pool.release();
    watcher.close();
    await pool.close();
    await store.close();
  });
  return { index, watcher, conn };
}

t.test('a stat or listing while the node hashes a big new file answers from the disk, not from an index that lacks the changes behind it', async (t) => {
  const base = await tempDir(t);
  await mkdir(join(base, 'ws'));
  const root = await realpath(join(base, 'ws'));
  await mkdir(join(root, 'd'));
  await writeFile(join(root, 'd/old.txt'), 'first version');

  const pool = new HeldPool('/d/h.bin');
  const { index, watcher, conn } = await serveHere(t, base, root, pool);
  t.equal(Number((await conn.stat('d/old.txt')).attr!.size), 13, 'indexed at start');

  // What another node sharing this root commits: a big file, whose hash is
  // held, and two small changes the watcher takes only after it (it takes a
  // directory's names shortest first, so the short name goes first). Until
  // then the index has the directory's new attributes (taken before its
  // names) and none of the three.
  const huge = 64 << 20;
  await writeFile(join(root, 'd/h.bin'), '');
  await truncate(join(root, 'd/h.bin'), huge);
  await writeFile(join(root, 'd/new.txt'), 'hello');
  await writeFile(join(root, 'd/old.txt'), 'the second version');
  await writeFile(join(root, 'd/gone.txt'), 'made and removed again');
  await rm(join(root, 'd/gone.txt'));
  await writeFile(join(root, `d/${TEMP_PREFIX}commit`), 'a commit under way');
  for (let i = 0; i < 200 && !pool.started; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(pool.started, 'the watcher is hashing the big file');

  const listing = await conn.listDir('d');
  const byName = new Map(listing.entries.map((e) => [e.name, e]));
  t.same([...byName.keys()].sort(), ['h.bin', 'new.txt', 'old.txt'], 'the listing has every name on disk');
  t.equal(Number(byName.get('h.bin')?.attr!.size), huge, 'the big file with its size');
  t.equal(byName.get('h.bin')?.digest.length, 0, 'and no digest: the listing did not wait for its hash');
  t.equal(Number(byName.get('new.txt')?.attr!.size), 5, 'the new small file');
  t.equal(Number(byName.get('old.txt')?.attr!.size), 18, 'the rewritten file with its new size');
  t.notOk(byName.get('old.txt')?.digest.equals(digestOf('first version')), 'not with the digest of what it was');

  const st = await conn.stat('d/old.txt');
  t.equal(Number(st.attr!.size), 18, 'a stat of the rewritten file has its new size');
  t.equal(st.digest.length, 0, 'and leaves its content to the manifest');
  const m = await conn.getManifest('d/old.txt');
  t.ok(Buffer.from(m.digest).equals(digestOf('the second version')), 'whose digest is that of the new content');
  t.equal(Number((await conn.stat('d/new.txt')).attr!.size), 5, 'a stat of the new file finds it');
  const missing = await conn.stat('d/never.txt').then(() => undefined, (err: unknown) => err);
  t.equal(missing && errnoOf(missing), 'ENOENT', 'a name never there is not found');
  const gone = await conn.stat('d/gone.txt').then(() => undefined, (err: unknown) => err);
  t.equal(gone && errnoOf(gone), 'ENOENT', 'nor is one made and removed again behind the hash (answered from the disk)');
  const temp = await conn.stat(`d/${TEMP_PREFIX}commit`).then(() => undefined, (err: unknown) => err);
  t.equal(temp && errnoOf(temp), 'ENOENT', `nor a commit's temp file, which the index never holds (${JSON.stringify(temp ?? 'found')})`);
  t.equal(index.entries.has('d/new.txt'), false, 'none of it came from the index: the watcher is still held');

  pool.release();
  await watcher.settled();
  const after = new Map((await conn.listDir('d')).entries.map((e) => [e.name, e]));
  t.equal(after.get('h.bin')?.digest.length, 32, 'once the hash is done, the listing has the digest from the index');
  t.ok(after.get('new.txt')?.digest.equals(digestOf('hello')), 'and the new file with its digest');
});

/** Hashes as HashPool does; once armed, the next hash of `held` is answered only when release() is called (a hash slow to finish). */
class SlowAnswerPool extends HashPool {
  private open!: () => void;
  private readonly gate = new Promise<void>((resolve) => (this.open = resolve));
  private armed = false;
  answered = false;
  waiting = false;
  constructor(private readonly held: string) {
    super(2, DEFAULT_CHUNKING, 1 << 20);
  }
  arm(): void {
    this.armed = true;
  }
  override async hash(path: string): Promise<HashResult> {
    const r = await super.hash(path);
    if (this.armed && path.endsWith(this.held)) {
      this.armed = false;
      this.waiting = true;
      await this.gate;
    }
    return r;
  }
  release(): void {
    this.open();
  }
}

t.test('a file replaced while the node hashed it: the version hashed, no longer there, is never in the change feed', async (t) => {
  const base = await tempDir(t);
  await mkdir(join(base, 'ws'));
  const root = await realpath(join(base, 'ws'));
  await writeFile(join(root, 'f.txt'), 'version one');

  const pool = new SlowAnswerPool('/f.txt');
  const { index, watcher, conn } = await serveHere(t, base, root, pool);
  const h = await conn.handshake();
  const seen: string[] = [];
  const names = new Map([[digestOf('version one').toString('hex'), 'one'], [digestOf('version two').toString('hex'), 'two'], [digestOf('version three').toString('hex'), 'three']]);
  conn.watch(h.generation, h.epoch, (e) => {
    if (e.path === 'f.txt' && e.kind === 'CHANGED') seen.push(names.get(Buffer.from(e.entry?.digest ?? []).toString('hex')) ?? 'no digest');
  }, () => undefined);

  // Rewritten in place: the watcher hashes it, and its answer comes late. Meanwhile
  // another node's commit renames a new file over the name.
  pool.arm();
  await writeFile(join(root, 'f.txt'), 'version two');
  for (let i = 0; i < 500 && !pool.waiting; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(pool.waiting, 'the hash of version two is done and waits to be answered');
  await writeFile(join(root, '.next'), 'version three');
  await rename(join(root, '.next'), join(root, 'f.txt'));
  pool.release();
  await watcher.settled();
  await waitFor('version three in the feed', async () => seen.includes('three'), 10_000);
  t.notOk(seen.includes('two'), `version two, replaced before its hash was answered, never reaches the feed (seen: ${seen.join(', ')})`);
  t.ok(index.entries.get('f.txt')?.digest?.equals(digestOf('version three')), 'the index has version three');
});
