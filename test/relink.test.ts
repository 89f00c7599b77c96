// A commit to one name of a hard-linked file re-points the file's other
// names at the new version (relink.ts). Here against another writer working
// on the other name at that moment, and across a node killed in the middle.
// The node's parts run in this process on a real disk and database, so the
// relink can be held between its look at the other name and its rename.
import t, { type Test } from 'tap';
import { appendFile, chmod, link, mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Store } from '../src/store/db.js';
import { HashPool } from '../src/content/hash-pool.js';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { chunkBuffer } from '../src/content/chunk-file.js';
import { WorkspaceIndex } from '../src/node/workspace-index.js';
import { ChunkSource } from '../src/node/chunk-source.js';
import { commitFile } from '../src/node/commit.js';
import { mutate } from '../src/node/mutations.js';
import { NameLocks } from '../src/node/name-locks.js';
import type { WMutateRequestOut } from '../src/wire/types.js';
import { errnoOf } from '../src/wire/errors.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { attrFromStats } from '../src/content/attr.js';

const V0 = Buffer.from('the version both names had\n');

async function rig(t: Test) {
  const dir = await tempDir(t);
  const root = join(dir, 'ws');
  await mkdir(root);
  await writeFile(join(root, 'p'), V0);
  await link(join(root, 'p'), join(root, 'q'));
  const store = await Store.open(join(dir, 'db'));
  const pool = new HashPool(1, DEFAULT_CHUNKING, 1 << 20);
  const index = new WorkspaceIndex('default', root, store, pool, { statConcurrency: 4, inlineMetadata: true, tempTtlMs: 600_000, logRetention: 1000, excluded: [] });
  t.teardown(async () => {
    await pool.close();
    await store.close();
  });
  await index.load();
  await index.scan();
  const source = new ChunkSource(index, join(dir, 'staging'));
  await source.init();
  const locks = new NameLocks();
  const base = index.entries.get('p')!.digest!;

  /** A commit of `data` to `path` by `who`, based on the version both names had, holding the locks as the node's service does. */
  const commit = (path: string, data: Buffer, who: string) => {
    const m = chunkBuffer(data, DEFAULT_CHUNKING);
    const inline = new Map(m.chunks.map((c) => [c.hash.toString('latin1'), data.subarray(c.offset, c.offset + c.length)]));
    return locks.commit(index, path, (holdFileNames) =>
      commitFile(index, source, { path, baseDigest: base, expectAbsent: false, digest: m.digest, size: m.size, chunks: m.chunks, inline, mode: 0, clientId: who, holdFileNames }),
    );
  };
  /** A mutation as the node's service runs it; `before`: held back until this settles, holding its names. */
  const mutation = (req: Partial<WMutateRequestOut> & Pick<WMutateRequestOut, 'op'>, before?: Promise<unknown>) => {
    const full: WMutateRequestOut = { workspace: 'default', applyBeforeMs: 0, writer: '', ...req };
    return locks.mutation('default', full, async () => {
      await before;
      return mutate(index, full);
    });
  };

  /** Holds the next look at `name` (a relink's, a commit's base check) right after it was taken. */
  const holdLookAt = (name: string) => {
    const abs = join(root, name);
    const calls = index.calls;
    const orig = calls.lstatOrNull.bind(calls);
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const held = new Promise<void>((reached) => {
      calls.lstatOrNull = async (p: string) => {
        const st = await orig(p);
        if (p !== abs) return st;
        calls.lstatOrNull = orig;
        reached();
        await released;
        return st;
      };
    });
    return { held, release };
  };
  return { root, index, commit, mutation, holdLookAt };
}

/** Every file's content in the workspace directory, by name. */
async function contents(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of await readdir(root)) out.set(name, await readFile(join(root, name), 'utf8'));
  return out;
}

t.test("another writer's commit to the other name, landing while the relink runs, is not overwritten", async (t) => {
  const { root, commit, holdLookAt } = await rig(t);
  const vA = Buffer.from('written through p\n');
  const vB = Buffer.from('written through q\n');
  const gate = holdLookAt('q');
  const a = commit('p', vA, 'writer-a');
  await gate.held;
  // q's commit comes while p's relink has looked at q and not yet renamed over it.
  const b = commit('q', vB, 'writer-b');
  await sleep(200);
  gate.release();
  const [ra, rb] = await Promise.all([a, b]);
  t.notOk(ra.conflict, "p's commit lands");
  const files = await contents(root);
  const kept = [...files.values()];
  t.ok(kept.includes(vA.toString()), `p's version is kept (${JSON.stringify(Object.fromEntries(files))})`);
  t.ok(kept.includes(vB.toString()), "q's version is kept too: it waited for the relink, then met p's version and became a conflict copy");
  t.ok(rb.conflict, "q's commit found the file changed since its writer read it");
  t.equal(files.get('q'), vA.toString(), 'q names the version written through p');
  t.equal((await stat(join(root, 'q'))).ino, (await stat(join(root, 'p'))).ino, 'p and q are still one file');
});

t.test('an unlink of the other name, made while the relink runs, is not undone', async (t) => {
  const { root, commit, mutation, holdLookAt } = await rig(t);
  const vA = Buffer.from('written through p\n');
  const gate = holdLookAt('q');
  const a = commit('p', vA, 'writer-a');
  await gate.held;
  const gone = mutation({ op: 'unlink', unlink: { path: 'q' } });
  await sleep(200);
  gate.release();
  await Promise.all([a, gone]);
  t.same([...(await contents(root)).entries()], [['p', vA.toString()]], 'q stays removed; p has the new version');
  t.equal((await stat(join(root, 'p'))).nlink, 1);
});

t.test('a chmod of the other name, made while the relink runs, is not lost', async (t) => {
  const { root, commit, mutation, holdLookAt } = await rig(t);
  const gate = holdLookAt('q');
  const a = commit('p', Buffer.from('written through p\n'), 'writer-a');
  await gate.held;
  const chmod = mutation({ op: 'chmod', chmod: { path: 'q', mode: 0o600 } });
  await sleep(200);
  gate.release();
  await Promise.all([a, chmod]);
  const [p, q] = await Promise.all(['p', 'q'].map((n) => stat(join(root, n))));
  t.equal(q!.ino, p!.ino, 'one file');
  t.equal(q!.mode & 0o777, 0o600, "the chmod applies to the new version, which both names name");
});

/**
 * What a node killed right after a commit's rename leaves: p has the new
 * version, and the record of its other names due (q, sub/r, other) says
 * they are still on the version before. `whileDown` then changes the
 * workspace before the node starts again.
 */
async function killedBeforeRelink(t: Test, whileDown: (root: string) => Promise<void>) {
  const dir = await tempDir(t);
  const root = join(dir, 'ws');
  const state = join(dir, 'state');
  await mkdir(join(root, 'sub'), { recursive: true });
  await writeFile(join(root, 'p'), V0);
  for (const n of ['q', 'sub/r', 'other']) await link(join(root, 'p'), join(root, n));
  await writeFile(join(root, 'sub/s'), 'another file\n');
  await writeFile(join(root, 'x'), 'x and y\n');
  await link(join(root, 'x'), join(root, 'y'));
  const first = await NodeProc.start(['--root', root, '--state-dir', state]);
  await first.stop();

  const store = await Store.open(join(state, 'db'));
  const pool = new HashPool(1, DEFAULT_CHUNKING, 1 << 20);
  const index = new WorkspaceIndex('default', root, store, pool, { statConcurrency: 4, inlineMetadata: true, tempTtlMs: 600_000, logRetention: 1000, excluded: [] });
  await index.load();
  await writeFile(join(root, '.new'), 'the new version\n');
  const attr = async (n: string) => attrFromStats(await stat(join(root, n), { bigint: true }));
  const now = await attr('.new');
  t.ok(await index.relinkDue('p', await attr('p'), now, ['q', 'sub/r', 'other']), 'recorded');
  // A record no commit will finish: its path holds another file than the one it names. Left alone.
  t.ok(await index.relinkDue('sub/s', await attr('x'), { ...now, ino: now.ino + 999_999 }, ['y']), 'a stray record');
  await pool.close();
  await store.close();
  await rename(join(root, '.new'), join(root, 'p'));
  t.not((await stat(join(root, 'q'))).ino, (await stat(join(root, 'p'))).ino, 'the other names are on the version before');
  await whileDown(root);

  const node = await NodeProc.start(['--root', root, '--state-dir', state]);
  t.teardown(() => node.stop());
  const conn = node.connect();
  t.teardown(() => conn.close());
  t.equal(await readFile(join(root, 'y'), 'utf8'), 'x and y\n', 'the stray record did nothing');
  t.equal((await stat(join(root, 'y'))).ino, (await stat(join(root, 'x'))).ino);
  return { root, state, node, conn, ino: async (n: string) => (await stat(join(root, n))).ino };
}

t.test('a node killed between a commit and its relink finishes the relink when it starts', async (t) => {
  // "other" is replaced on the node while it is down: not the old file any more.
  const { root, state, node, conn, ino } = await killedBeforeRelink(t, async (root) => {
    await writeFile(join(root, '.other'), 'replaced while the node was down\n');
    await rename(join(root, '.other'), join(root, 'other'));
  });
  const inos = await Promise.all(['p', 'q', 'sub/r'].map(ino));
  t.same(new Set(inos).size, 1, 'p, q and sub/r are one file again');
  t.equal(await readFile(join(root, 'sub/r'), 'utf8'), 'the new version\n');
  t.equal(await readFile(join(root, 'other'), 'utf8'), 'replaced while the node was down\n', 'a name replaced while the node was down keeps what it has');
  t.ok(node.lines.some((l) => l.msg?.startsWith("finished re-pointing a committed file's hard links")), 'and the node says so');
  t.equal((await conn.stat('q')).attr!.nlink, 3, "the node's index shows them linked");

  // Finished once: a second start finds no record.
  await node.stop();
  await writeFile(join(root, '.newer'), 'changed on the node later\n');
  await rename(join(root, '.newer'), join(root, 'p'));
  const again = await NodeProc.start(['--root', root, '--state-dir', state]);
  t.teardown(() => again.stop());
  t.not(await ino('q'), await ino('p'), 'a replace made on the node later is left alone');
});

t.test('a relink left unfinished is not finished over an edit made while the node was down', async (t) => {
  // Written in place through q: the old file, which all the other names name, changed.
  const { root, conn, ino } = await killedBeforeRelink(t, (root) => appendFile(join(root, 'q'), 'an edit made while the node was down\n'));
  const edited = V0.toString() + 'an edit made while the node was down\n';
  for (const n of ['q', 'sub/r', 'other']) t.equal(await readFile(join(root, n), 'utf8'), edited, `${n} keeps the edit`);
  t.not(await ino('q'), await ino('p'));
  t.equal((await conn.stat('p')).attr!.nlink, 1, 'p is on its own');
});

t.test('a link made while the commit waited for its names is re-pointed too, even with other work queued on it', async (t) => {
  const { root, commit, mutation } = await rig(t);
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  // `ln p c` holds the names p and c; the commit of p waits for p, and a chmod of c for c.
  const linked = mutation({ op: 'link', link: { existing: 'p', path: 'c' } }, held);
  const a = commit('p', Buffer.from('written through p\n'), 'writer-a');
  const chmod = mutation({ op: 'chmod', chmod: { path: 'c', mode: 0o640 } });
  await sleep(300);
  release();
  await Promise.all([linked, a, chmod]);
  const [p, q, c] = await Promise.all(['p', 'q', 'c'].map((n) => stat(join(root, n))));
  t.ok(p!.ino === q!.ino && p!.ino === c!.ino, `p, q and c are one file (inodes ${p!.ino}, ${q!.ino}, ${c!.ino})`);
  t.equal(await readFile(join(root, 'c'), 'utf8'), 'written through p\n', 'the new link names the new version');
  t.equal(c!.mode & 0o777, 0o640, "with the chmod made meanwhile: the version took the file's mode as it was when put in place");
});

t.test("a chmod of a file whose commit is being put together returns at once, and the commit's version keeps it", async (t) => {
  const { root, commit, mutation, holdLookAt } = await rig(t);
  const gate = holdLookAt('p');
  const a = commit('p', Buffer.from('written through p\n'), 'writer-a');
  await gate.held; // the commit's first look at p, long before its version is in place
  const chmod = mutation({ op: 'chmod', chmod: { path: 'q', mode: 0o600 } });
  const first = await Promise.race([chmod.then(() => 'the chmod'), sleep(10_000).then(() => 'nothing')]);
  t.equal(first, 'the chmod', 'the chmod did not wait for the commit');
  gate.release();
  await a;
  const [p, q] = await Promise.all(['p', 'q'].map((n) => stat(join(root, n))));
  t.equal(p!.ino, q!.ino, 'one file');
  t.equal(p!.mode & 0o777, 0o600, 'with the mode the chmod gave');
  t.equal(await readFile(join(root, 'q'), 'utf8'), 'written through p\n');
});

t.test('a relink left unfinished is not finished over a chmod made while the node was down', async (t) => {
  const { root, ino } = await killedBeforeRelink(t, (root) => chmod(join(root, 'q'), 0o600));
  t.not(await ino('q'), await ino('p'), 'q stays on its file');
  t.equal((await stat(join(root, 'sub/r'))).mode & 0o777, 0o600, 'which keeps the mode it was given');
});

t.test('a mutation naming a path no name can have is refused, and holds up no other', async (t) => {
  const { mutation } = await rig(t);
  // The workspace's mutation lock is not a name: a path spelled like its key waits on nothing.
  const bad = mutation({ op: 'chmod', chmod: { path: '\0mutate', mode: 0o600 } }).then(
    () => 'done',
    (err: unknown) => errnoOf(err),
  );
  t.equal(await Promise.race([bad, sleep(10_000).then(() => 'still waiting')]), 'EINVAL', 'refused: a path with a NUL byte');
  const next = mutation({ op: 'chmod', chmod: { path: 'p', mode: 0o600 } }).then(() => 'done');
  t.equal(await Promise.race([next, sleep(10_000).then(() => 'still waiting')]), 'done', 'the next mutation runs');
});
