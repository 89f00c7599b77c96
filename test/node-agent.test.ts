// The node agent end to end: a real `ghostfs serve` child process, real gRPC
// over loopback, a real RocksDB state dir.
import t, { type Test } from 'tap';
import { chmod, chown, lstat, mkdir, open, readFile, statfs, readdir, rm, symlink, writeFile, stat, readlink, utimes, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { chunkBuffer } from '../src/content/chunk-file.js';
import { fileDigest, hashChunk } from '../src/content/manifest.js';
import { fromTimespec } from '../src/content/attr.js';
import { errnoOf, lacksChunk } from '../src/wire/errors.js';
import { FLOW_CONTROL_WINDOW, wire } from '../src/wire/proto.js';
import type { NodeConnection } from '../src/mesh/connection.js';
import type { WChangeEventOut } from '../src/wire/types.js';
import { nativeAddon } from '../src/native/addon.js';
import { waitFor } from './helpers/mount-proc.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { nobody, nobodyCannotRun } from './helpers/users.js';
import { smallFs } from './helpers/small-fs.js';

async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, 'src/deep/er'), { recursive: true });
  await writeFile(join(root, 'README.md'), '# sample\n');
  await writeFile(join(root, 'src/main.c'), 'int main(void) { return 0; }\n');
  await writeFile(join(root, 'src/deep/er/data.bin'), randomBytes(5 * 1024 * 1024 + 123));
  await writeFile(join(root, 'empty'), '');
  await writeFile(join(root, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  await writeFile(join(root, 'ünïcødé ✓.txt'), 'unicode\n');
  await symlink('README.md', join(root, 'readme-link'));
}

async function readAll(conn: NodeConnection, path: string): Promise<Buffer> {
  const m = await conn.getManifest(path);
  const parts: Buffer[] = [];
  for await (const c of conn.readChunks(m.chunks.map((x) => x.hash), path)) parts.push(c.data);
  return Buffer.concat(parts);
}

async function upload(conn: NodeConnection, data: Buffer) {
  const m = chunkBuffer(data, DEFAULT_CHUNKING);
  const missing = await conn.hasChunks(m.chunks.map((c) => c.hash));
  // Up to 400 MiB travel here: the default 10 s deadline is for small calls, not for a loaded CI machine.
  await conn.putChunks(missing.map((i) => ({ hash: m.chunks[i]!.hash, data: data.subarray(m.chunks[i]!.offset, m.chunks[i]!.offset + m.chunks[i]!.length) })), 120_000);
  return { m, missing };
}

/** Content to commit with its bytes inside the call: its chunk list and the chunks themselves. */
function inline(data: Buffer) {
  const m = chunkBuffer(data, DEFAULT_CHUNKING);
  return { m, inline: m.chunks.map((c) => ({ hash: c.hash, data: data.subarray(c.offset, c.offset + c.length) })) };
}

async function rejectsErrno(t: Test, p: Promise<unknown>, errno: string, what: string): Promise<void> {
  try {
    await p;
    t.fail(`${what}: expected ${errno}, it succeeded`);
  } catch (err) {
    t.equal(errnoOf(err), errno, `${what}: ${errno}`);
  }
}

/** Collects Watch events until `pred` matches one. */
function watchUntil(conn: NodeConnection, from: number, epoch: string, pred: (e: WChangeEventOut) => boolean, timeoutMs = 15_000, onReady?: () => void): Promise<WChangeEventOut[]> {
  return new Promise((resolve, reject) => {
    const seen: WChangeEventOut[] = [];
    const timer = setTimeout(() => {
      call.cancel();
      reject(new Error(`no matching change event; saw ${JSON.stringify(seen.map((e) => [e.kind, e.path]))}`));
    }, timeoutMs);
    const call = conn.watch(
      from,
      epoch,
      (e) => {
        seen.push(e);
        if (e.kind === 'READY') onReady?.();
        if (pred(e)) {
          clearTimeout(timer);
          call.cancel();
          resolve(seen);
        }
      },
      () => undefined,
    );
  });
}

const execFileP = promisify(execFile);

/** Bytes of `file` in the page cache (util-linux's fincore). */
async function residentBytes(file: string): Promise<number> {
  const { stdout } = await execFileP('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]);
  return Number(stdout.trim());
}

/** On tmpfs the page cache is where a file lives: nothing can leave it (the temp dirs, and the node's root, are under tmpdir()). */
const tmpfsSkip = (await statfs(tmpdir())).type === 0x01021994 ? `${tmpdir()} is on tmpfs, whose files live in the page cache` : false;

t.test('writeOut: the bytes reach the disk and leave the page cache', { skip: tmpfsSkip }, async (t) => {
  const addon = nativeAddon();
  t.ok(addon, 'the addon is built');
  if (!addon) return;
  const file = join(await tempDir(t), 'big');
  const data = randomBytes(8 << 20);
  const fh = await open(file, 'w');
  t.teardown(() => fh.close());
  await fh.write(data, 0, data.length, 0);
  t.equal(await residentBytes(file), data.length, 'written: all in the page cache');
  await addon.writeOut(fh.fd);
  t.equal(await residentBytes(file), 0, 'written out: none left there');
  t.ok((await readFile(file)).equals(data), 'and the bytes read back');
  await t.rejects(addon.writeOut(-1), { code: 'EBADF' }, 'a bad descriptor is an error');
});

t.test('node agent', async (t) => {
  const base = await tempDir(t);
  const root = join(base, 'ws');
  const state = join(base, 'state');
  const outside = join(base, 'outside');
  await mkdir(root);
  await mkdir(outside);
  await writeFile(join(outside, 'secret'), 'do not touch');
  await makeTree(root);
  await symlink(outside, join(root, 'escape'));

  let node = await NodeProc.start(['--root', root, '--state-dir', state, '--temp-ttl', '0', '--metrics', '127.0.0.1:0']);
  t.teardown(() => node.stop('SIGKILL'));
  let conn = node.connect();
  t.teardown(() => conn.close());

  const indexed = node.line('workspace indexed')!;
  t.equal(indexed.files, 6, 'indexed every regular file');
  t.equal(indexed.hashedFiles, 6, 'cold start hashes every file');
  t.ok(Number.isInteger(indexed.hashedBytes) && (indexed.hashedBytes as number) > 5_000_000, 'hashedBytes counts the bytes');
  t.ok(Number.isInteger(indexed.durationMs), 'durationMs is an integer');

  t.test('handshake', async (t) => {
    const h = await conn.handshake();
    t.equal(h.workspace, 'default');
    t.equal(h.protocolVersion, 1);
    t.equal(h.hashAlgorithm, 'blake3');
    t.equal(h.chunking!.avgSize, DEFAULT_CHUNKING.avg);
    t.ok(h.epoch.length > 0, 'has an epoch');
    t.equal(h.rootIno, (await stat(root)).ino, 'root inode is the real one');
    t.same(h.nodeOwner, { uid: process.geteuid!(), gid: process.getegid!() }, 'names the user and group it runs as');
  });

  t.test('listing carries full attributes, exact to the nanosecond', async (t) => {
    const r = await conn.listDir('');
    const names = r.entries.map((e) => e.name).sort();
    t.same(names, ['README.md', 'empty', 'escape', 'readme-link', 'run.sh', 'src', 'ünïcødé ✓.txt'].sort());
    for (const e of r.entries) {
      const st = await lstat(join(root, e.name), { bigint: true });
      t.equal(e.attr!.ino, Number(st.ino), `${e.name} ino`);
      t.equal(e.attr!.mode, Number(st.mode), `${e.name} mode`);
      t.equal(e.attr!.size, Number(st.size), `${e.name} size`);
      t.equal(fromTimespec(e.attr!.mtime), st.mtimeNs, `${e.name} mtime ns`);
      t.equal(fromTimespec(e.attr!.ctime), st.ctimeNs, `${e.name} ctime ns`);
    }
    const link = r.entries.find((e) => e.name === 'readme-link')!;
    t.equal(link.symlinkTarget, 'README.md');
    const run = r.entries.find((e) => e.name === 'run.sh')!;
    t.equal(run.attr!.mode & 0o777, 0o755, 'executable bits kept');
    await rejectsErrno(t, conn.listDir('README.md'), 'ENOTDIR', 'listing a file');
    await rejectsErrno(t, conn.listDir('nope'), 'ENOENT', 'listing a missing dir');
  });

  t.test('manifest and chunk reads return the exact bytes', async (t) => {
    const path = 'src/deep/er/data.bin';
    const m = await conn.getManifest(path);
    t.ok(m.chunks.length >= 2, `big file has ${m.chunks.length} chunks`);
    const back = await readAll(conn, path);
    t.ok(back.equals(await readFile(join(root, path))), 'reassembled bytes equal the file');
    t.ok((await readAll(conn, 'empty')).length === 0, 'empty file');
    await rejectsErrno(t, conn.getManifest('src'), 'EISDIR', 'manifest of a directory');
  });

  t.test('a file changed behind the index is never served stale', async (t) => {
    const m = await conn.getManifest('README.md');
    await writeFile(join(root, 'README.md'), '# changed\n');
    // The old chunk no longer exists anywhere: asking for it must fail, not return old bytes.
    await rejectsErrno(t, (async () => {
      for await (const _ of conn.readChunks(m.chunks.map((c) => c.hash), 'README.md')) void _;
    })(), 'ENOENT', 'stale chunk');
    t.equal((await readAll(conn, 'README.md')).toString(), '# changed\n');
  });

  t.test('upload and commit: new file, update, conflict copy', async (t) => {
    const data = randomBytes(3 * 1024 * 1024);
    const { m, missing } = await upload(conn, data);
    t.equal(missing.length, m.chunks.length, 'node lacks every chunk of new content');
    t.same(await conn.hasChunks(m.chunks.map((c) => c.hash)), [], 'after upload it has them all');
    const r = await conn.commit({ path: 'src/new.bin', expectAbsent: true, digest: m.digest, size: m.size, chunks: m.chunks, mode: 0o640 });
    t.equal(r.conflict, false);
    t.ok((await readFile(join(root, 'src/new.bin'))).equals(data), 'file on disk equals upload');
    t.equal((await stat(join(root, 'src/new.bin'))).mode & 0o777, 0o640, 'mode set');

    // Update with the right base digest.
    const data2 = Buffer.concat([data.subarray(0, 2_000_000), Buffer.from('edit'), data.subarray(2_000_000)]);
    const up2 = await upload(conn, data2);
    t.ok(up2.missing.length < up2.m.chunks.length, `only ${up2.missing.length} of ${up2.m.chunks.length} chunks travel for an edit`);
    const r2 = await conn.commit({ path: 'src/new.bin', baseDigest: m.digest, digest: up2.m.digest, size: up2.m.size, chunks: up2.m.chunks });
    t.equal(r2.conflict, false);
    t.ok((await readFile(join(root, 'src/new.bin'))).equals(data2));
    t.equal((await stat(join(root, 'src/new.bin'))).mode & 0o777, 0o640, 'update keeps the mode');

    // Someone else changed the file: the writer's stale base must not clobber it.
    const theirs = Buffer.from('their version\n');
    await writeFile(join(root, 'src/new.bin'), theirs);
    const mine = Buffer.from('my version\n');
    const up3 = await upload(conn, mine);
    const r3 = await conn.commit({ path: 'src/new.bin', baseDigest: up2.m.digest, digest: up3.m.digest, size: up3.m.size, chunks: up3.m.chunks, clientId: 'laptop' });
    t.equal(r3.conflict, true, 'reported as a conflict');
    t.match(r3.conflictPath, /^src\/new\.conflict-laptop-\d{8}T\d{6}Z\.bin$/);
    t.ok((await readFile(join(root, 'src/new.bin'))).equals(theirs), 'their version kept');
    t.ok((await readFile(join(root, r3.conflictPath))).equals(mine), 'mine beside it');

    // expectAbsent on an existing file is a conflict too.
    const r4 = await conn.commit({ path: 'empty', expectAbsent: true, digest: up3.m.digest, size: up3.m.size, chunks: up3.m.chunks });
    t.equal(r4.conflict, true);
    t.equal((await readFile(join(root, 'empty'))).length, 0, 'existing file untouched');

    // A commit retried after its answer was lost finds its own content: not a conflict, expectAbsent or not.
    const theirsUp = await upload(conn, theirs);
    const again = await conn.commit({ path: r3.conflictPath, expectAbsent: true, digest: up3.m.digest, size: up3.m.size, chunks: up3.m.chunks });
    t.equal(again.conflict, false, 'a retried create of identical content is no conflict');
    const againUpd = await conn.commit({ path: 'src/new.bin', baseDigest: up2.m.digest, digest: theirsUp.m.digest, size: theirsUp.m.size, chunks: theirsUp.m.chunks });
    t.equal(againUpd.conflict, false, 'a retried update whose content is already there is no conflict');

    // The writer's own earlier version, whose answer it never heard, is an accepted base.
    const next = await upload(conn, Buffer.from('my next version\n'));
    const lost = await conn.commit({ path: 'src/new.bin', baseDigest: up2.m.digest, digest: next.m.digest, size: next.m.size, chunks: next.m.chunks, alsoBases: [theirsUp.m.digest] });
    t.equal(lost.conflict, false, 'alsoBases names what the file holds: no conflict');
    t.ok((await readFile(join(root, 'src/new.bin'))).equals(Buffer.from('my next version\n')));
    const stale = await conn.commit({ path: 'src/new.bin', baseDigest: up2.m.digest, digest: up3.m.digest, size: up3.m.size, chunks: up3.m.chunks, alsoBases: [theirsUp.m.digest], clientId: 'laptop' });
    t.equal(stale.conflict, true, 'alsoBases that no longer match do not hide a conflict');

    // A digest that does not match the chunk list is refused.
    await rejectsErrno(t, conn.commit({ path: 'x', digest: Buffer.alloc(32), size: up3.m.size, chunks: up3.m.chunks }), 'EINVAL', 'bad digest');
    // Chunks the node never got: refused, whichever of the chunks read ahead is missing, and nothing is placed.
    // 16 MiB: about 16 chunks; 8 MiB of random bytes now and then cut into only 5.
    const partly = randomBytes(16 << 20);
    const whole = chunkBuffer(partly, DEFAULT_CHUNKING);
    t.ok(whole.chunks.length >= 6, `${whole.chunks.length} chunks`);
    const sent = whole.chunks.filter((_, i) => i !== 3); // the 4th never travels
    await conn.putChunks(sent.map((c) => ({ hash: c.hash, data: partly.subarray(c.offset, c.offset + c.length) })));
    await rejectsErrno(t, conn.commit({ path: 'src/partly.bin', expectAbsent: true, digest: whole.digest, size: whole.size, chunks: whole.chunks }), 'ENOENT', 'a chunk the node lacks');
    // Its ENOENT says it is about a chunk, over gRPC and over the bulk lane; one about a path does not.
    const viaGrpc = node.connect('default', { bulkLane: false });
    for (const [how, c] of [['over the lane', conn], ['over gRPC', viaGrpc]] as const) {
      const lacking = await c.commit({ path: 'src/partly.bin', expectAbsent: true, digest: whole.digest, size: whole.size, chunks: whole.chunks }).catch((err: unknown) => err);
      t.ok(lacksChunk(lacking), `${how}: the ENOENT names a chunk (${(lacking as Error).message})`);
      const noDir = await c.commit({ path: 'no/such/dir/f.bin', expectAbsent: true, digest: up3.m.digest, size: up3.m.size, chunks: up3.m.chunks }).catch((err: unknown) => err);
      t.equal(errnoOf(noDir), 'ENOENT', `${how}: a commit into a directory that is not there fails with ENOENT`);
      t.notOk(lacksChunk(noDir), `${how}: which names no chunk`);
    }
    viaGrpc.close();
    await t.rejects(stat(join(root, 'src/partly.bin')), 'no file placed');
    const temps = (await readdir(join(root, 'src'))).filter((n) => n.startsWith('.ghostfs-tmp-'));
    t.same(temps, [], 'no temp files left behind');
    // A staged chunk cut short on the node's disk (it is copied, not read back and checked): refused, nothing placed.
    const cut = randomBytes(4 << 20);
    const cutUp = await upload(conn, cut);
    await truncate(join(state, 'staging', 'default', cutUp.m.chunks[1]!.hash.toString('hex')), 1000);
    await rejectsErrno(t, conn.commit({ path: 'src/cut.bin', expectAbsent: true, digest: cutUp.m.digest, size: cutUp.m.size, chunks: cutUp.m.chunks }), 'EIO', 'a staged chunk shorter than its chunk');
    await t.rejects(stat(join(root, 'src/cut.bin')), 'no file placed');
  });

  t.test("chunks put in a file's draft: the commit takes the draft as the file", async (t) => {
    const commits = async (how: string): Promise<number> => Number(new RegExp(`^ghostfs_node_commits_total\\{how="${how}"\\} (\\d+)`, 'm').exec(await node.scrapeMetrics())?.[1] ?? 0);
    const drafts = () => node.openUnnamed(root);
    const put = (data: Buffer, chunks: { hash: Buffer; offset: number; length: number }[], draft?: string, path = 'src/x', at?: (c: { offset: number }) => number) =>
      conn.putChunks(chunks.map((c) => ({ hash: c.hash, data: data.subarray(c.offset, c.offset + c.length), draft, path, offset: at ? at(c) : c.offset })));

    // Every chunk into the draft: the node holds them, in one file.
    const data = randomBytes(12 << 20);
    const m = chunkBuffer(data, DEFAULT_CHUNKING);
    t.ok(m.chunks.length >= 4, `${m.chunks.length} chunks`);
    const before = await commits('draft');
    const chunkFiles = async (): Promise<string[]> => (await readdir(join(state, 'staging', 'default'))).filter((n) => /^[0-9a-f]{64}$/.test(n));
    const stagedBefore = await chunkFiles();
    await put(data, m.chunks, 'draft-1', 'src/drafted.bin');
    t.same(await conn.hasChunks(m.chunks.map((c) => c.hash)), [], 'the node counts the placed chunks as held');
    const open = await drafts();
    t.equal(open.length, 1, 'one draft');
    t.equal(open[0]?.size, data.length, 'holding the bytes at their offsets');
    t.same(await chunkFiles(), stagedBefore, 'and no chunk staged on its own');
    const r = await conn.commit({ path: 'src/drafted.bin', expectAbsent: true, digest: m.digest, size: m.size, chunks: m.chunks, mode: 0o640, draft: 'draft-1' });
    t.equal(r.conflict, false);
    t.ok((await readFile(join(root, 'src/drafted.bin'))).equals(data), 'the file has the bytes');
    t.equal((await stat(join(root, 'src/drafted.bin'))).mode & 0o777, 0o640, 'and the mode');
    t.equal((await stat(join(root, 'src/drafted.bin'))).ino, open[0]!.ino, 'the draft is the file');
    t.equal(await commits('draft'), before + 1, 'counted as a commit from a draft');
    t.same(await drafts(), [], 'no draft left');

    // A draft holding more, and less, than the file: one chunk only past the
    // end, another's bytes written over the next one's place. The commit
    // writes what is missing and cuts the rest.
    const data2 = randomBytes(10 << 20);
    const m2 = chunkBuffer(data2, DEFAULT_CHUNKING);
    const [c0, c1, c2] = m2.chunks;
    await put(data2, m2.chunks.slice(1), 'draft-2');
    await put(data2, [c1!], 'draft-2', 'src/x', () => c2!.offset); // c1's bytes over c2's place (and beyond, if longer)
    await put(data2, [c0!], 'draft-2', 'src/x', () => data2.length + (3 << 20)); // past the end
    const lacking = await conn.hasChunks(m2.chunks.map((c) => c.hash));
    t.ok(lacking.includes(2), `a chunk written over is no longer held (lacking: ${lacking.join(', ')})`);
    t.ok(!lacking.includes(0) && !lacking.includes(1), 'chunks placed intact are, wherever they are');
    // Sent again to its place, it is not trusted there either (which write won is not known): it is kept on its own.
    await put(data2, [c2!], 'draft-2');
    t.notOk((await conn.hasChunks([c2!.hash])).length, 'held once sent again');
    await put(data2, lacking.map((i) => m2.chunks[i]!)); // as a mount does: what the node lacks travels again
    const r2 = await conn.commit({ path: 'src/drafted2.bin', expectAbsent: true, digest: m2.digest, size: m2.size, chunks: m2.chunks, draft: 'draft-2' });
    t.equal(r2.conflict, false);
    t.ok((await readFile(join(root, 'src/drafted2.bin'))).equals(data2), 'the file has exactly its bytes, and its size');

    // A draft staged in another directory (the file was renamed while written): assembled anew, from the draft's chunks.
    const data5 = randomBytes(9 << 20);
    const m5 = chunkBuffer(data5, DEFAULT_CHUNKING);
    await put(data5, m5.chunks, 'draft-5', 'elsewhere.bin');
    const r5 = await conn.commit({ path: 'src/moved.bin', expectAbsent: true, digest: m5.digest, size: m5.size, chunks: m5.chunks, draft: 'draft-5' });
    t.ok(!r5.conflict && (await readFile(join(root, 'src/moved.bin'))).equals(data5), 'a draft from another directory is copied from, not linked');
    t.same(await drafts(), [], 'and then dropped');

    // Staged beside the file: a new file in a setgid directory takes the directory's group, as any other.
    await mkdir(join(root, 'src/shared'));
    await chown(join(root, 'src/shared'), 0, 4321);
    await chmod(join(root, 'src/shared'), 0o2775);
    const data6 = randomBytes(9 << 20);
    const m6 = chunkBuffer(data6, DEFAULT_CHUNKING);
    await put(data6, m6.chunks, 'draft-6', 'src/shared/g.bin');
    await conn.commit({ path: 'src/shared/g.bin', expectAbsent: true, digest: m6.digest, size: m6.size, chunks: m6.chunks, draft: 'draft-6' });
    const g = await stat(join(root, 'src/shared/g.bin'));
    t.equal(g.gid, 4321, "the file has the setgid directory's group");
    t.ok((await readFile(join(root, 'src/shared/g.bin'))).equals(data6), 'and the bytes');

    // A draft the node does not have (restarted, expired): assembled from chunks as before.
    const data3 = randomBytes(3 << 20);
    const up3 = await upload(conn, data3);
    const r3 = await conn.commit({ path: 'src/drafted3.bin', expectAbsent: true, digest: up3.m.digest, size: up3.m.size, chunks: up3.m.chunks, draft: 'never-made' });
    t.ok(!r3.conflict && (await readFile(join(root, 'src/drafted3.bin'))).equals(data3), 'an unknown draft is no error');

    // A draft whose commit is a conflict: its bytes become the conflict copy.
    const data4 = randomBytes(9 << 20);
    const m4 = chunkBuffer(data4, DEFAULT_CHUNKING);
    await put(data4, m4.chunks, 'draft-4', 'src/drafted.bin');
    const r4 = await conn.commit({ path: 'src/drafted.bin', expectAbsent: true, digest: m4.digest, size: m4.size, chunks: m4.chunks, clientId: 'laptop', draft: 'draft-4' });
    t.equal(r4.conflict, true);
    t.ok((await readFile(join(root, r4.conflictPath))).equals(data4), 'the conflict copy has the bytes');
    t.ok((await readFile(join(root, 'src/drafted.bin'))).equals(data), 'the file there untouched');
    // Chunks for a draft a commit took already are kept as any upload.
    await put(data4, m4.chunks.slice(0, 1), 'draft-4', 'src/drafted.bin');
    t.same(await drafts(), [], 'a late chunk does not start the draft again');

    await rejectsErrno(t, put(data4, m4.chunks.slice(0, 1), '../x'), 'EINVAL', 'a draft name with a slash');
    await rejectsErrno(t, put(data4, m4.chunks.slice(0, 1), 'draft-7', '../outside.bin'), 'EACCES', 'a draft for a path outside the workspace');
    await rejectsErrno(t, put(data4, m4.chunks.slice(0, 1), 'draft-7', 'escape/planted.bin'), 'EACCES', 'a draft through a symlink out of the workspace');
    await rejectsErrno(t, conn.commit({ path: 'src/x.bin', expectAbsent: true, digest: m4.digest, size: m4.size, chunks: m4.chunks, draft: 'a b' }), 'EINVAL', 'a draft name with a space');
    t.same(await drafts(), [], 'no draft left open');
  });

  t.test("a big file leaves the node's page cache as it reaches the disk", { skip: tmpfsSkip }, async (t) => {
    // Past the early-sync step (32 MiB): what that sync wrote is dropped from the cache.
    const data = randomBytes(48 << 20);
    const m = chunkBuffer(data, DEFAULT_CHUNKING);
    await conn.putChunks(m.chunks.map((c) => ({ hash: c.hash, data: data.subarray(c.offset, c.offset + c.length), draft: 'draft-cache', path: 'src/cold.bin', offset: c.offset })));
    const r = await conn.commit({ path: 'src/cold.bin', expectAbsent: true, digest: m.digest, size: m.size, chunks: m.chunks, draft: 'draft-cache' });
    t.equal(r.conflict, false);
    const resident = await residentBytes(join(root, 'src/cold.bin'));
    t.ok(resident <= data.length / 2, `${resident} of ${data.length} bytes still in the page cache`);
    t.ok((await readFile(join(root, 'src/cold.bin'))).equals(data), 'and the file has its bytes');

    // Assembled from chunks staged one by one (no draft: the kernel copies them in), the same.
    const data2 = randomBytes(192 << 20);
    const { m: m2 } = await upload(conn, data2);
    const r2 = await conn.commit({ path: 'src/cold2.bin', expectAbsent: true, digest: m2.digest, size: m2.size, chunks: m2.chunks });
    t.equal(r2.conflict, false);
    const resident2 = await residentBytes(join(root, 'src/cold2.bin'));
    t.ok(resident2 <= data2.length / 2, `assembled from staged chunks: ${resident2} of ${data2.length} bytes still in the page cache`);
    t.ok((await readFile(join(root, 'src/cold2.bin'))).equals(data2), 'and the file has its bytes');
  });

  t.test('CommitMany: each commit stands on its own, announced in order', async (t) => {
    await conn.mutate({ mkdir: { path: 'many', mode: 0o755 } });
    const h = await conn.handshake();
    const small = (i: number): Buffer => Buffer.from(`small file ${i}\n`.repeat(1 + (i % 7)));
    const req = (path: string, data: Buffer, extra: Record<string, unknown> = {}) => {
      const { m, inline: chunks } = inline(data);
      return { path, expectAbsent: true, digest: m.digest, size: m.size, chunks: m.chunks, mode: 0o600, inline: chunks, ...extra };
    };
    const names = Array.from({ length: 40 }, (_, i) => `many/f${i}.txt`);
    const announced = new Set<string>();
    // The commits of one call run side by side: they may land in any order.
    const events = watchUntil(conn, h.generation, h.epoch, (e) => e.kind === 'CHANGED' && names.includes(e.path) && announced.add(e.path).size === names.length);
    const bad = chunkBuffer(Buffer.from('x'), DEFAULT_CHUNKING);
    const r = await conn.commitMany([
      ...names.slice(0, 20).map((p, i) => req(p, small(i))),
      req('empty', Buffer.from('not expected to exist\n')), // exists: a conflict copy
      req('src', Buffer.from('a directory is in the way\n')), // EISDIR
      req('../outside.txt', Buffer.from('hostile\n')), // refused, nothing written
      { ...req('many/bad-digest', Buffer.from('x')), digest: Buffer.alloc(32), chunks: bad.chunks }, // EINVAL
      ...names.slice(20).map((p, i) => req(p, small(20 + i))),
    ]);
    t.equal(r.outcomes.length, 44, 'one outcome per commit');
    const ok = [...r.outcomes.slice(0, 20), ...r.outcomes.slice(24)];
    t.ok(ok.every((o) => o.reply && !o.reply.conflict && o.errno === ''), 'the 40 new files committed');
    for (const [i, p] of names.entries()) {
      if (!(await readFile(join(root, p))).equals(small(i))) t.fail(`${p} has the wrong bytes`);
      if (((await stat(join(root, p))).mode & 0o777) !== 0o600) t.fail(`${p} has the wrong mode`);
    }
    t.pass('every file on disk holds its own bytes and mode');
    t.equal(r.outcomes[20]!.reply?.conflict, true, 'an existing name became a conflict copy');
    t.equal((await readFile(join(root, 'empty'))).length, 0, 'the existing file is untouched');
    t.equal(r.outcomes[21]!.errno, 'EISDIR', 'a directory in the way: EISDIR for that file only');
    t.not(r.outcomes[22]!.errno, '', `a hostile path is refused (${r.outcomes[22]!.errno})`);
    t.equal(r.outcomes[23]!.errno, 'EINVAL', 'a digest that does not match its chunks: EINVAL');
    await rejectsErrno(t, stat(join(base, 'outside.txt')), 'ENOENT', 'nothing written outside the root');
    const seen = (await events).filter((e) => e.kind === 'CHANGED' && e.path.startsWith('many/f'));
    t.equal(new Set(seen.map((e) => e.path)).size, 40, 'each committed file announced');
    t.ok(seen.every((e, i) => i === 0 || e.generation > seen[i - 1]!.generation), 'announced in generation order');
    await rejectsErrno(t, conn.commitMany(names.concat(names).slice(0, 65).map((p) => req(p, Buffer.from('x')))), 'EINVAL', 'more than 64 commits in one call');
    const heavy = Array.from({ length: 9 }, (_, i) => req(`many/heavy${i}`, randomBytes(1024 * 1024 - 64)));
    await rejectsErrno(t, conn.commitMany(heavy, 60_000), 'EINVAL', 'more than 8 MiB of inline bytes in one call');
    t.same((await readdir(join(root, 'many'))).filter((n) => n.startsWith('heavy')), [], 'none of that call was committed');
    t.same((await readdir(join(root, 'many'))).filter((n) => n.startsWith('.ghostfs-tmp-')), [], 'no temp files left behind');
  });

  t.test('mutations', async (t) => {
    const mut = (m: Parameters<NodeConnection['mutate']>[0]) => conn.mutate(m);
    await mut({ mkdir: { path: 'm', mode: 0o750 } });
    t.equal((await stat(join(root, 'm'))).mode & 0o777, 0o750, 'mkdir with mode');
    await rejectsErrno(t, mut({ mkdir: { path: 'm', mode: 0o755 } }), 'EEXIST', 'mkdir existing');
    // A change of one name answers with that name and its directory, as the disk has them now.
    const asOnDisk = async (r: Awaited<ReturnType<typeof mut>>, names: string[], what: string) => {
      t.same(r.entries.map((e) => e.name).sort(), names.sort(), `${what}: the reply names ${names.join(' and ')}`);
      for (const e of r.entries) {
        const st = await lstat(join(root, e.name), { bigint: true });
        t.same([fromTimespec(e.attr!.mtime), e.attr!.nlink, e.attr!.ino], [st.mtimeNs, Number(st.nlink), Number(st.ino)], `${what}: ${e.name} as on disk`);
        t.same((await conn.stat(e.name)).attr, e.attr, `${what}: ${e.name} as the node serves it`);
      }
    };
    await asOnDisk(await mut({ mkdir: { path: 'm/sub', mode: 0o755 } }), ['m', 'm/sub'], 'mkdir');
    t.same((await conn.listDir('m/sub')).entries, [], 'the new directory lists empty');
    await writeFile(join(root, 'm/sub/late'), 'x');
    await asOnDisk(await mut({ unlink: { path: 'm/sub/late' } }), ['m/sub'], 'unlink');
    await rejectsErrno(t, conn.stat('m/sub/late'), 'ENOENT', 'the unlinked file is gone from the index');
    await asOnDisk(await mut({ rmdir: { path: 'm/sub' } }), ['m'], 'rmdir');
    await rejectsErrno(t, conn.stat('m/sub'), 'ENOENT', 'the removed directory is gone from the index');
    await writeFile(join(root, 'm/f'), 'f');
    await rejectsErrno(t, mut({ rmdir: { path: 'm' } }), 'ENOTEMPTY', 'rmdir non-empty');
    await mut({ rename: { from: 'm/f', to: 'm/g' } });
    t.equal(await readFile(join(root, 'm/g'), 'utf8'), 'f', 'renamed');
    await writeFile(join(root, 'm/h'), 'h');
    await rejectsErrno(t, mut({ rename: { from: 'm/g', to: 'm/h', noReplace: true } }), 'EEXIST', 'rename no-replace onto existing');
    t.equal(await readFile(join(root, 'm/h'), 'utf8'), 'h', 'target not clobbered');
    t.equal(await readFile(join(root, 'm/g'), 'utf8'), 'f', 'source still there');
    await mut({ rename: { from: 'm/g', to: 'm/i', noReplace: true } });
    t.equal(await readFile(join(root, 'm/i'), 'utf8'), 'f', 'no-replace rename to a free name');
    await mut({ mkdir: { path: 'm/d1', mode: 0o755 } });
    await mut({ mkdir: { path: 'm/d2', mode: 0o755 } });
    await rejectsErrno(t, mut({ rename: { from: 'm/d1', to: 'm/d2', noReplace: true } }), 'EEXIST', 'no-replace rename of a directory onto an existing one');
    await writeFile(join(root, 'm/x1'), 'one');
    await writeFile(join(root, 'm/x2'), 'two');
    const ex = await mut({ rename: { from: 'm/x1', to: 'm/x2', exchange: true } });
    t.same([await readFile(join(root, 'm/x1'), 'utf8'), await readFile(join(root, 'm/x2'), 'utf8')], ['two', 'one'], 'RENAME_EXCHANGE swaps two files');
    t.same(ex.entries.filter((e) => e.name !== 'm').map((e) => [e.name, e.attr!.size]).sort(), [['m/x1', 3], ['m/x2', 3]], 'and reports both');
    t.same(ex.entries.map((e) => e.name).sort(), ['m', 'm/x1', 'm/x2'], 'and the directory holding them');
    await writeFile(join(root, 'm/d1/inside'), 'in d1');
    await mut({ rename: { from: 'm/d1', to: 'm/d2', exchange: true } });
    t.equal((await readAll(conn, 'm/d2/inside')).toString(), 'in d1', 'exchanged directories serve their contents under the new names');
    await rejectsErrno(t, conn.stat('m/d1/inside'), 'ENOENT', 'and the old place is empty');
    for (const p of ['m/x1', 'm/x2', 'm/d1', 'm/d2/inside', 'm/d2']) await mut(p.endsWith('inside') || p.includes('x') ? { unlink: { path: p } } : { rmdir: { path: p } });
    await mut({ symlink: { path: 'm/ln', target: '../README.md' } });
    t.equal(await readlink(join(root, 'm/ln')), '../README.md');
    const l = await mut({ link: { existing: 'm/i', path: 'm/hard' } });
    t.equal((await stat(join(root, 'm/hard'))).ino, (await stat(join(root, 'm/i'))).ino, 'hard link shares the inode');
    t.ok(l.entries.every((e) => e.attr!.nlink === 2), 'both names report nlink 2');
    await mut({ chmod: { path: 'm/i', mode: 0o600 } });
    t.equal((await stat(join(root, 'm/i'))).mode & 0o777, 0o600, 'chmod');
    const viaOther = await conn.stat('m/hard');
    t.equal(viaOther.attr!.mode & 0o777, 0o600, 'a hard link shows the new mode through its other name');
    t.equal(fromTimespec(viaOther.attr!.ctime), (await lstat(join(root, 'm/hard'), { bigint: true })).ctimeNs, 'and the same ctime');
    await rejectsErrno(t, mut({ chmod: { path: 'm/ln', mode: 0o600 } }), 'EOPNOTSUPP', 'chmod of a symlink');
    await mut({ truncate: { path: 'm/h', size: 0 } });
    t.equal((await stat(join(root, 'm/h'))).size, 0, 'truncate');
    // utimens: omit atime, set mtime; atime must stay exactly as it was. On
    // a directory: a file's atime would move when the node re-hashes it
    // after the change (relatime), which is not what is tested here. Its
    // atime an hour ahead: the node's own listings of it (its watcher's)
    // do not move that under relatime either, whenever they come.
    await mut({ mkdir: { path: 'm/times', mode: 0o755 } });
    await utimes(join(root, 'm/times'), Date.now() / 1000 + 3600, 1_600_000_000.5);
    const before = await lstat(join(root, 'm/times'), { bigint: true });
    await mut({ utimens: { path: 'm/times', mtime: { sec: 1_500_000_000, nsec: 250_000_000 } } });
    const after = await lstat(join(root, 'm/times'), { bigint: true });
    t.equal(after.atimeNs, before.atimeNs, 'atime untouched (UTIME_OMIT)');
    t.equal(after.mtimeNs, 1_500_000_000_250_000_000n, 'mtime set');
    await mut({ utimens: { path: 'm/h', mtime: { sec: 1_500_000_000, nsec: 250_000_001 } } });
    t.equal((await lstat(join(root, 'm/h'), { bigint: true })).mtimeNs, 1_500_000_000_250_000_001n, 'mtime set on a file, to the nanosecond');
    if (process.getuid?.() === 0) {
      await mut({ chown: { path: 'm/h', uid: 1234, gid: -1 } });
      t.equal((await stat(join(root, 'm/h'))).uid, 1234, 'chown as root');
    }
    await mut({ unlink: { path: 'm/h' } });
    await rejectsErrno(t, stat(join(root, 'm/h')), 'ENOENT', 'unlinked');
    await rejectsErrno(t, mut({ unlink: { path: 'm' } }), 'EISDIR', 'unlink of a directory');
    await mut({ rename: { from: 'm', to: 'moved' } });
    const moved = await conn.listDir('moved');
    t.same(moved.entries.map((e) => e.name).sort(), ['hard', 'i', 'ln', 'times'], 'a renamed directory lists its children');
    t.equal((await readAll(conn, 'moved/i')).toString(), 'f', 'and serves their content');
  });

  t.test('new small files with their bytes inside the commit', async (t) => {
    await mkdir(join(root, 'small'));
    await mkdir(join(root, 'small/real'));
    // An absolute symlink that stays inside the root: allowed, though RESOLVE_BENEATH alone refuses it.
    await symlink(join(root, 'small/real'), join(root, 'small/abs-link'));

    // How each commit was written, from the node's metrics.
    const commits = async (how: string): Promise<number> => {
      const text = await node.scrapeMetrics();
      return Number(new RegExp(`^ghostfs_node_commits_total\\{how="${how}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    };
    const direct = !!nativeAddon(); // without the addon every commit is staged
    const before = { newFile: await commits('new-file'), staged: await commits('staged') };

    const body = randomBytes(4096);
    const a = inline(body);
    const mtime = { sec: 1_500_000_000, nsec: 123_456_789 };
    const r = await conn.commit({ path: 'small/a.txt', expectAbsent: true, digest: a.m.digest, size: a.m.size, chunks: a.m.chunks, inline: a.inline, mode: 0o640, mtime, atime: mtime });
    t.equal(r.conflict, false);
    const st = await lstat(join(root, 'small/a.txt'), { bigint: true });
    t.ok((await readFile(join(root, 'small/a.txt'))).equals(body), 'bytes on disk');
    t.equal(Number(st.mode) & 0o7777, 0o640, 'mode set');
    t.equal(st.mtimeNs, 1_500_000_000_123_456_789n, 'mtime exact to the nanosecond');
    t.equal(BigInt(r.entry!.attr!.ino), st.ino, 'the reply names the file that is there');
    t.equal(fromTimespec(r.entry!.attr!.mtime), st.mtimeNs, "the reply's mtime is the file's");
    t.equal(await commits('new-file'), before.newFile + (direct ? 1 : 0), 'written in one job where the addon is there');

    const empty = inline(Buffer.alloc(0));
    await conn.commit({ path: 'small/empty', expectAbsent: true, digest: empty.m.digest, size: 0, chunks: empty.m.chunks, inline: empty.inline });
    t.equal((await stat(join(root, 'small/empty'))).size, 0, 'an empty file');

    const b = inline(Buffer.from('through a link\n'));
    t.equal((await conn.commit({ path: 'small/abs-link/b.txt', expectAbsent: true, digest: b.m.digest, size: b.m.size, chunks: b.m.chunks, inline: b.inline })).conflict, false);
    t.equal(await readFile(join(root, 'small/real/b.txt'), 'utf8'), 'through a link\n', 'an absolute symlink inside the root is followed');
    // a.txt and the empty file went in one job each; this one needed the general path.
    t.same({ newFile: await commits('new-file'), staged: await commits('staged') }, direct ? { newFile: before.newFile + 2, staged: before.staged + 1 } : { newFile: before.newFile, staged: before.staged + 3 }, 'the link took the general path');

    await rejectsErrno(t, conn.commit({ path: 'escape/planted', expectAbsent: true, digest: b.m.digest, size: b.m.size, chunks: b.m.chunks, inline: b.inline }), 'EACCES', 'inline commit through an escaping symlink');
    t.same((await readdir(outside)).sort(), ['secret'], 'nothing created outside the root');

    // A name taken behind the node's back (not indexed yet): theirs stays, mine becomes a conflict copy.
    await writeFile(join(root, 'small/theirs.txt'), 'theirs\n');
    const c = inline(Buffer.from('mine\n'));
    const rc = await conn.commit({ path: 'small/theirs.txt', expectAbsent: true, digest: c.m.digest, size: c.m.size, chunks: c.m.chunks, inline: c.inline, clientId: 'laptop' });
    t.equal(rc.conflict, true, 'a conflict');
    t.equal(await readFile(join(root, 'small/theirs.txt'), 'utf8'), 'theirs\n', 'their file untouched');
    t.equal(await readFile(join(root, rc.conflictPath), 'utf8'), 'mine\n', 'mine beside it');

    // Written without a base: a file that is not there is created, one that is there is replaced.
    const d = inline(Buffer.from('no base\n'));
    await conn.commit({ path: 'small/a.txt', digest: d.m.digest, size: d.m.size, chunks: d.m.chunks, inline: d.inline });
    t.equal(await readFile(join(root, 'small/a.txt'), 'utf8'), 'no base\n', 'an existing file replaced');

    t.same((await readdir(join(root, 'small'))).filter((n) => n.startsWith('.ghostfs-tmp-')), [], 'no temp files');
    t.same(await node.openUnnamed(root), [], 'no unnamed file left open');
  });

  t.test('hostile paths are refused and change nothing', async (t) => {
    const bad: [string, string][] = [
      ['../outside/secret', 'EACCES'],
      ['/etc/passwd', 'EACCES'],
      ['a\0b', 'EINVAL'],
      ['src/../../outside', 'EACCES'],
      ['./README.md', 'EINVAL'],
      ['x'.repeat(256), 'ENAMETOOLONG'],
      [('d/').repeat(2100) + 'f', 'ENAMETOOLONG'],
    ];
    for (const [p, errno] of bad) {
      await rejectsErrno(t, conn.stat(p), errno, `stat ${JSON.stringify(p.slice(0, 30))}`);
      await rejectsErrno(t, conn.mutate({ mkdir: { path: p, mode: 0o755 } }), errno, `mkdir ${JSON.stringify(p.slice(0, 30))}`);
    }
    // Through a symlink that points out of the root.
    await rejectsErrno(t, conn.stat('escape/secret'), 'EACCES', 'stat through an escaping symlink');
    await rejectsErrno(t, conn.getManifest('escape/secret'), 'EACCES', 'read through an escaping symlink');
    await rejectsErrno(t, conn.mutate({ unlink: { path: 'escape/secret' } }), 'EACCES', 'unlink through an escaping symlink');
    await rejectsErrno(t, conn.mutate({ mkdir: { path: 'escape/new', mode: 0o755 } }), 'EACCES', 'mkdir through an escaping symlink');
    await rejectsErrno(t, conn.mutate({ rename: { from: 'README.md', to: 'escape/stolen' } }), 'EACCES', 'rename out through a symlink');
    const up = await upload(conn, Buffer.from('evil'));
    await rejectsErrno(t, conn.commit({ path: 'escape/secret', digest: up.m.digest, size: up.m.size, chunks: up.m.chunks }), 'EACCES', 'commit through an escaping symlink');
    await rejectsErrno(t, conn.commit({ path: '../evil', digest: up.m.digest, size: up.m.size, chunks: up.m.chunks }), 'EACCES', 'commit with ..');
    t.same((await readdir(outside)).sort(), ['secret'], 'nothing created outside the root');
    t.equal(await readFile(join(outside, 'secret'), 'utf8'), 'do not touch', 'nothing changed outside the root');
    // A chunk upload whose bytes do not match its hash is refused.
    await rejectsErrno(t, conn.putChunks([{ hash: Buffer.alloc(32, 1), data: Buffer.from('x') }]), 'EIO', 'chunk with a wrong hash');
    await rejectsErrno(t, node.connect('nope').stat(''), 'ENOENT', 'unknown workspace');
  });

  t.test('changes made behind the node are announced on Watch', async (t) => {
    const h = await conn.handshake();
    // The file is written once the watch is subscribed (READY): a change seen before would come as backlog.
    let subscribed!: () => void;
    const ready = new Promise<void>((r) => (subscribed = r));
    const events = watchUntil(conn, h.generation, h.epoch, (e) => e.kind === 'CHANGED' && e.path === 'outside-edit.txt', 15_000, subscribed);
    await Promise.race([ready, events]);
    const body = Buffer.from('written by another program\n');
    await writeFile(join(root, 'outside-edit.txt'), body);
    const seen = await events;
    t.equal(seen[0]!.kind, 'READY', 'backlog (none) first');
    const ev = seen.at(-1)!;
    t.ok(ev.entry!.digest.equals(chunkBuffer(body, DEFAULT_CHUNKING).digest), 'event carries the new digest');
    t.ok(ev.generation > h.generation, 'generation moved forward');
  });

  t.test('a burst of changes behind the node reaches the index whole', async (t) => {
    await mkdir(join(root, 'burst'));
    await writeFile(join(root, 'burst/kept.txt'), 'before');
    await writeFile(join(root, 'burst/gone.txt'), 'to be removed');
    const indexed = (p: string) => conn.stat(p).then(() => true, () => false);
    // Asked for at once, before the node's watcher saw the new directory: the
    // stat finds it on disk (it indexed the file alone, outside the directory's
    // later walk, and the removal below went unnoticed).
    await waitFor('the first files indexed', () => indexed('burst/gone.txt'));
    const made = Array.from({ length: 40 }, (_, i) => `burst/new/f${i}.txt`);
    const digestOf = (s: string): Buffer => chunkBuffer(Buffer.from(s), DEFAULT_CHUNKING).digest;
    // All inside one debounce of the watcher (its paths refreshed together): a new directory with files, an edit, a removal.
    await mkdir(join(root, 'burst/new'));
    await Promise.all(made.map((p, i) => writeFile(join(root, p), `file ${i}\n`)));
    await writeFile(join(root, 'burst/kept.txt'), 'after, longer');
    await rm(join(root, 'burst/gone.txt'));
    await waitFor('the burst indexed', async () => (await Promise.all(made.map(indexed))).every(Boolean) && !(await indexed('burst/gone.txt')));
    const wrong = [];
    for (const [i, p] of made.entries()) if (!(await conn.stat(p)).digest.equals(digestOf(`file ${i}\n`))) wrong.push(p);
    t.same(wrong, [], `all ${made.length} new files indexed with their digests`);
    await waitFor('the edit indexed', async () => (await conn.stat('burst/kept.txt')).digest.equals(digestOf('after, longer')));
    await rejectsErrno(t, conn.stat('burst/gone.txt'), 'ENOENT', 'the removed file is gone from the index');
  });

  t.test('a listing asked for right after another program changed the directory has the change', async (t) => {
    await mkdir(join(root, 'fresh'));
    await writeFile(join(root, 'fresh/old.txt'), 'old');
    await waitFor('the directory indexed', async () => (await conn.listDir('fresh')).entries.some((e) => e.name === 'old.txt'));
    // Faster than the watcher hears of it (its events wait for a short debounce).
    await writeFile(join(root, 'fresh/new.txt'), 'new');
    await rm(join(root, 'fresh/old.txt'));
    const names = (await conn.listDir('fresh')).entries.map((e) => e.name);
    t.same(names, ['new.txt'], 'the new file listed, the removed one not');
    t.equal(Number((await conn.stat('fresh/new.txt')).attr!.size), 3, 'and indexed with its size');
  });

  t.test('files made in a new directory while the node starts to watch it are all indexed', async (t) => {
    // A steady stream of files into new directories: some land after the
    // node's walk of a directory and before its watch of it exists (a node
    // serving a replica meets this with every directory the other node
    // makes). Such a file has no event of its own; once the directory's
    // times were refreshed after it, no listing looked again either.
    const dirs = Array.from({ length: 6 }, (_, i) => `stream/d${i}`);
    await mkdir(join(root, 'stream'));
    for (const d of dirs) {
      await mkdir(join(root, d));
      const until = Date.now() + 150;
      for (let i = 0; Date.now() < until; i++) {
        await writeFile(join(root, d, `f${i}`), `${d} ${i}`);
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    const missing = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const d of dirs) {
        const listed = new Set((await conn.listDir(d)).entries.map((e) => e.name));
        for (const n of await readdir(join(root, d))) if (!listed.has(n)) out.push(`${d}/${n}`);
      }
      return out;
    };
    await waitFor('every file listed', async () => (await missing()).length === 0, 10_000).catch(() => undefined);
    t.same(await missing(), [], 'every file on disk is listed by the node');
    // And indexed as it ended (the restart below counts what it has to hash again).
    const stale = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const d of dirs) {
        for (const n of await readdir(join(root, d))) {
          const want = chunkBuffer(await readFile(join(root, d, n)), DEFAULT_CHUNKING).digest;
          if (!(await conn.stat(`${d}/${n}`)).digest.equals(want)) out.push(`${d}/${n}`);
        }
      }
      return out;
    };
    await waitFor('every file indexed with its content', async () => (await stale()).length === 0, 10_000).catch(() => undefined);
    t.same(await stale(), [], 'with its digest');
  });

  await t.test('restart: nothing re-hashed, generation and changes persist', async (t) => {
    const h = await conn.handshake();
    conn.close();
    await node.stop();
    // Changed while the node was down.
    await writeFile(join(root, 'while-down.txt'), 'news');
    node = await NodeProc.start(['--root', root, '--state-dir', state, '--temp-ttl', '0']);
    conn = node.connect();
    const l = node.line('workspace indexed')!;
    t.equal(l.hashedFiles, 1, 'only the new file is hashed');
    t.equal(l.hashedBytes, 4);
    const h2 = await conn.handshake();
    t.equal(h2.epoch, h.epoch, 'same epoch');
    t.ok(h2.generation > h.generation, 'generation persisted and advanced');
    const seen = await watchUntil(conn, h.generation, h.epoch, (e) => e.kind === 'READY');
    t.ok(seen.some((e) => e.kind === 'CHANGED' && e.path === 'while-down.txt'), 'Watch from the old generation replays the change');
    const reset = await watchUntil(conn, h.generation, 'other-epoch', (e) => e.kind === 'READY');
    t.equal(reset[0]!.kind, 'RESET', 'an unknown epoch gets RESET');

    conn.close();
    await node.stop();
    node = await NodeProc.start(['--root', root, '--state-dir', state]);
    conn = node.connect();
    const l2 = node.line('workspace indexed')!;
    t.equal(l2.hashedFiles, 0, 'unchanged tree: hashedFiles 0');
    t.equal(l2.hashedBytes, 0, 'unchanged tree: hashedBytes 0');
  });

  await t.test('kill -9 during a commit leaves the old file intact', async (t) => {
    const old = randomBytes(1024);
    await writeFile(join(root, 'precious.bin'), old);
    await node.connect().stat('precious.bin').catch(() => undefined);
    const big = randomBytes(400 * 1024 * 1024);
    const up = await upload(conn, big);
    const commit = conn.commit({ path: 'precious.bin', digest: up.m.digest, size: up.m.size, chunks: up.m.chunks }, 120_000).catch((e) => e);
    // Wait until the new version is being assembled (a file with no name,
    // O_TMPFILE, open in the node; or a named temp file without the addon),
    // then kill the node mid-assembly.
    const assembling = async (): Promise<boolean> => (await node.openUnnamed(root)).length > 0 || (await readdir(root)).some((n) => n.startsWith('.ghostfs-tmp-'));
    for (let i = 0; i < 2000 && !(await assembling()); i++) await new Promise((r) => setTimeout(r, 5));
    await node.stop('SIGKILL');
    const res = await commit;
    t.ok(res instanceof Error, 'the commit did not report success');
    t.ok((await readFile(join(root, 'precious.bin'))).equals(old), 'old content intact');
    conn.close();
    node = await NodeProc.start(['--root', root, '--state-dir', state, '--temp-ttl', '0']);
    conn = node.connect();
    t.same((await readdir(root)).filter((n) => n.startsWith('.ghostfs-tmp-')), [], 'no partial file is left under any name');
    // With O_TMPFILE the partial file never had a name; without it, the named temp file was reclaimed on start.
    t.equal(node.line('workspace indexed')!.tempsRemoved, nativeAddon() ? 0 : 1);
  });
});

t.test('a stat or listing right after another program rewrote a file in place has the new content', async (t) => {
  const base = await tempDir(t);
  const root = join(base, 'ws');
  await mkdir(join(root, 'd'), { recursive: true });
  await writeFile(join(root, 'd/f.txt'), 'first version');
  // The watcher's changes reach the index only after a long delay here: a stat or listing must not answer from before them.
  const node = await NodeProc.start(['--root', root, '--state-dir', join(base, 'state'), '--watch-delay', '5s']);
  t.teardown(() => node.stop('SIGKILL'));
  const conn = node.connect();
  t.teardown(() => conn.close());
  t.equal(Number((await conn.stat('d/f.txt')).attr!.size), 13, 'indexed at start');
  const digestOf = (s: string): Buffer => {
    const b = Buffer.from(s);
    return fileDigest([{ hash: hashChunk(b), offset: 0, length: b.length }]);
  };
  // Rewritten where it is: its directory does not change, only the watcher hears of it.
  const rewrite = async (s: string): Promise<void> => {
    const fh = await open(join(root, 'd/f.txt'), 'r+');
    await fh.write(s, 0);
    await fh.close();
    await new Promise((r) => setTimeout(r, 300)); // the node has its event by now; its index would take it 5 s later
  };
  await rewrite('a longer second version');
  const st = await conn.stat('d/f.txt');
  t.equal(Number(st.attr!.size), 23, 'a stat has its new size');
  t.ok(st.digest.equals(digestOf('a longer second version')), 'and its new digest');
  await rewrite('the third version, longer still');
  const listed = (await conn.listDir('d')).entries.find((e) => e.name === 'f.txt');
  t.equal(Number(listed?.attr!.size), 31, 'a listing has its new size');
  t.ok(listed?.digest.equals(digestOf('the third version, longer still')), 'and its new digest');
});

t.test('bearer token', async (t) => {
  const base = await tempDir(t);
  await mkdir(join(base, 'ws'));
  await writeFile(join(base, 'ws', 'f'), 'x');
  const node = await NodeProc.start(['--root', join(base, 'ws'), '--state-dir', join(base, 'st')], { GHOSTFS_TOKEN: 's3cret' });
  t.teardown(() => node.stop('SIGKILL'));
  const anon = node.connect();
  const wrong = node.connect('default', { token: 'nope' });
  const right = node.connect('default', { token: 's3cret' });
  t.teardown(() => [anon, wrong, right].forEach((c) => c.close()));
  await t.rejects(anon.stat('f'), { code: grpc.status.UNAUTHENTICATED }, 'no token');
  await t.rejects(wrong.mutate({ unlink: { path: 'f' } }), { code: grpc.status.UNAUTHENTICATED }, 'wrong token');
  t.equal(await readFile(join(base, 'ws', 'f'), 'utf8'), 'x', 'refused request changed nothing');
  t.equal((await right.stat('f')).attr!.size, 1, 'right token works');
});

t.test('set-id bits a client asks for on a file are dropped unless the node is served with --allow-setid', async (t) => {
  for (const allow of [false, true]) {
    const base = await tempDir(t);
    const ws = join(base, 'ws');
    await mkdir(join(ws, 'dir'), { recursive: true });
    await writeFile(join(ws, 'tool'), '#!/bin/sh\n', { mode: 0o755 });
    const node = await NodeProc.start(['--root', ws, '--state-dir', join(base, 'st'), ...(allow ? ['--allow-setid'] : [])]);
    t.teardown(() => node.stop('SIGKILL'));
    const conn = node.connect();
    t.teardown(() => conn.close());
    const how = allow ? 'with --allow-setid' : 'by default';
    const fileMode = (m: number): number => (allow ? m : m & 0o777);
    const modeOf = async (p: string): Promise<number> => (await lstat(join(ws, p))).mode & 0o7777;

    const r = await conn.mutate({ chmod: { path: 'tool', mode: 0o4755 } });
    t.equal(await modeOf('tool'), fileMode(0o4755), `chmod 4755 of a file, ${how}`);
    t.equal(r.entries.find((e) => e.name === 'tool')!.attr!.mode & 0o7777, fileMode(0o4755), 'the answer has the mode the file got');
    await conn.mutate({ chmod: { path: 'dir', mode: 0o2775 } });
    t.equal(await modeOf('dir'), 0o2775, `a directory keeps set-group-ID, ${how}`);

    // A new small file written in one job (inline bytes), and one assembled from uploaded chunks.
    const small = inline(Buffer.from('small\n'));
    const c1 = await conn.commit({ path: 'dir/small', expectAbsent: true, digest: small.m.digest, size: small.m.size, chunks: small.m.chunks, inline: small.inline, mode: 0o6755 });
    t.equal(await modeOf('dir/small'), fileMode(0o6755), `a new file committed with mode 6755, ${how}`);
    t.equal(c1.entry!.attr!.mode & 0o7777, fileMode(0o6755), 'the commit answers with the mode the file got');
    const { m } = await upload(conn, randomBytes(3 << 20));
    await conn.commit({ path: 'tool', baseDigest: (await conn.getManifest('tool')).digest, digest: m.digest, size: m.size, chunks: m.chunks, mode: 0o2755 });
    t.equal(await modeOf('tool'), fileMode(0o2755), `a file rewritten with mode 2755, ${how}`);
    t.equal((await conn.stat('tool')).attr!.mode & 0o7777, fileMode(0o2755), 'and the node serves that mode');
  }
});

const notRoot = process.getuid?.() !== 0 && "giving a file another owner needs root";

t.test('a commit gives the file the owner its writer names, before the file takes its name', { skip: notRoot }, async (t) => {
  const base = await tempDir(t);
  const ws = join(base, 'ws');
  await mkdir(ws);
  for (const name of ['old', 'stale']) {
    await writeFile(join(ws, name), `${name}\n`);
    await chown(join(ws, name), 1000, 1001);
  }
  const node = await NodeProc.start(['--root', ws, '--state-dir', join(base, 'st'), '--allow-setid']);
  t.teardown(() => node.stop('SIGKILL'));
  const conn = node.connect();
  t.teardown(() => conn.close());
  const ownerOf = async (p: string) => {
    const st = await lstat(join(ws, p));
    return [st.uid, st.gid, (st.mode & 0o7777).toString(8)];
  };

  // A new small file, written in one job: the owner comes before the mode, whose set-id bits a chown would clear.
  const small = inline(Buffer.from('small\n'));
  const c1 = await conn.commit({ path: 'new', expectAbsent: true, digest: small.m.digest, size: small.m.size, chunks: small.m.chunks, inline: small.inline, mode: 0o4755, owner: { uid: 4321, gid: 4322 } });
  t.same(await ownerOf('new'), [4321, 4322, '4755'], 'a new small file has the owner and the mode, set-id bit included');
  t.same([c1.entry!.attr!.uid, c1.entry!.attr!.gid, c1.ownerErrno], [4321, 4322, ''], 'the answer says so');

  // A file replaced by one assembled from uploaded chunks, its user named, its group not (-1).
  const { m } = await upload(conn, randomBytes(3 << 20));
  const c2 = await conn.commit({ path: 'old', baseDigest: (await conn.getManifest('old')).digest, digest: m.digest, size: m.size, chunks: m.chunks, mode: 0o2755, owner: { uid: 4321, gid: -1 } });
  t.same(await ownerOf('old'), [4321, 1001, '2755'], 'a file rewritten from uploaded chunks: the user named, the group it had, the mode');
  t.same([c2.entry!.attr!.uid, c2.entry!.attr!.gid], [4321, 1001], 'the answer says so');
  const again = inline(Buffer.from('again\n'));
  await conn.commit({ path: 'old', baseDigest: m.digest, digest: again.m.digest, size: again.m.size, chunks: again.m.chunks, inline: again.inline, mode: 0o644 });
  t.same(await ownerOf('old'), [4321, 1001, '644'], 'rewritten with no owner named: it keeps the one it has');

  // A stale base: the writer's version becomes a conflict copy, which has the owner it named.
  const mine = inline(Buffer.from('mine\n'));
  const c3 = await conn.commit({ path: 'stale', baseDigest: small.m.digest, digest: mine.m.digest, size: mine.m.size, chunks: mine.m.chunks, inline: mine.inline, mode: 0o644, owner: { uid: 4321, gid: 4322 } });
  t.ok(c3.conflict, 'a conflict');
  t.same(await ownerOf(c3.conflictPath), [4321, 4322, '644'], 'the conflict copy has the owner named');
  t.same(await ownerOf('stale'), [1000, 1001, '644'], 'the file that stays keeps its own');

  // A directory and a symlink made for another user are theirs (the link itself: its target keeps its own).
  const md = await conn.mutate({ mkdir: { path: 'dir', mode: 0o750, owner: { uid: 4321, gid: 4322 } } });
  t.same(await ownerOf('dir'), [4321, 4322, '750'], 'a directory has the owner named');
  t.same([md.entries.find((e) => e.name === 'dir')?.attr?.uid, md.entries.find((e) => e.name === 'dir')?.attr?.gid], [4321, 4322], 'the answer says so');
  await conn.mutate({ symlink: { path: 'link', target: 'old', owner: { uid: 4323, gid: -1 } } });
  t.same((await ownerOf('link')).slice(0, 2), [4323, 0], 'a symlink has the user named, and the node\'s group');
  t.same((await ownerOf('old')).slice(0, 2), [4321, 1001], 'its target is untouched');

  for (const owner of [{ uid: 2 ** 32 - 1, gid: 0 }, { uid: 0, gid: -2 }]) {
    await rejectsErrno(t, conn.commit({ path: 'bad', expectAbsent: true, digest: small.m.digest, size: small.m.size, chunks: small.m.chunks, inline: small.inline, owner }), 'EINVAL', `owner ${owner.uid}:${owner.gid}`);
    await rejectsErrno(t, conn.mutate({ mkdir: { path: 'bad', mode: 0o755, owner } }), 'EINVAL', `a directory's owner ${owner.uid}:${owner.gid}`);
    await rejectsErrno(t, conn.mutate({ symlink: { path: 'bad', target: 'old', owner } }), 'EINVAL', `a symlink's owner ${owner.uid}:${owner.gid}`);
  }
  t.notOk(await lstat(join(ws, 'bad')).catch(() => undefined), 'nothing was made for them');
});

const noUserNamespace = spawnSync('unshare', ['-r', 'true']).status !== 0 && 'this machine makes no user namespaces (unshare -r)';

// Two nodes that cannot give a file the owner a commit names: one not run as root (EPERM), one
// root in a user namespace that maps no other id (EINVAL, as in rootless containers).
for (const c of [
  { name: 'not run as root', errno: 'EPERM', skip: nobodyCannotRun, as: nobody, owns: nobody },
  { name: 'in a user namespace that maps root alone', errno: 'EINVAL', skip: noUserNamespace, under: ['unshare', '-r'], owns: { uid: 0, gid: 0 } },
]) {
  t.test(`a node that cannot give files their owners (${c.name}) commits them all the same and says why, once`, { skip: c.skip }, async (t) => {
    const base = await tempDir(t);
    const ws = join(base, 'ws');
    await mkdir(ws);
    await mkdir(join(base, 'st'));
    if (c.as) for (const d of [base, ws, join(base, 'st')]) await chown(d, c.as.uid, c.as.gid);
    // --allow-setid: the bits are kept for a file that gets its writer's owner, not for one that does not.
    const node = await NodeProc.start(['--root', ws, '--state-dir', join(base, 'st'), '--allow-setid'], {}, { as: c.as, under: c.under });
    t.teardown(() => node.stop('SIGKILL'));
    const conn = node.connect();
    t.teardown(() => conn.close());
    t.same((await conn.handshake()).nodeOwner, c.owns, 'its handshake names the user it runs as (as it sees itself)');
    const owner = { uid: 4321, gid: 4322 };
    const small = inline(Buffer.from('small\n'));
    const c1 = await conn.commit({ path: 'small', expectAbsent: true, digest: small.m.digest, size: small.m.size, chunks: small.m.chunks, inline: small.inline, mode: 0o4755, owner });
    const data = randomBytes(3 << 20);
    const { m } = await upload(conn, data);
    const c2 = await conn.commit({ path: 'big', expectAbsent: true, digest: m.digest, size: m.size, chunks: m.chunks, mode: 0o6755, owner });
    t.equal(await readFile(join(ws, 'small'), 'utf8'), 'small\n', 'a new small file (one job) is committed');
    t.ok((await readFile(join(ws, 'big')).then((b) => b.equals(data))), 'a file from uploaded chunks is committed');
    for (const [name, r] of [['small', c1], ['big', c2]] as const) {
      const st = await lstat(join(ws, name));
      t.same([st.uid, st.gid], [c.owns.uid, c.owns.gid], `${name}: owned by the node's user`);
      t.equal((st.mode & 0o7777).toString(8), '755', `${name}: without the set-id bits its writer asked for`);
      t.same([r.entry!.attr!.uid, r.entry!.attr!.gid, r.ownerErrno], [c.owns.uid, c.owns.gid, c.errno], `${name}: the answer says which owner it has, and why not the one named`);
    }
    await conn.mutate({ mkdir: { path: 'dir', mode: 0o755, owner } });
    await conn.mutate({ symlink: { path: 'link', target: 'small', owner } });
    for (const name of ['dir', 'link']) {
      const st = await lstat(join(ws, name));
      t.same([st.uid, st.gid], [c.owns.uid, c.owns.gid], `${name}: made all the same, the node's user's`);
    }
    const said = node.lines.filter((l) => String(l.msg).startsWith('something made for a client did not get the owner it named'));
    t.same(said.filter((l) => l.level === 40).map((l) => [l.path, l.errno]), [['small', c.errno]], 'said once at warning level, with the first file and why');
    t.equal(said.length, 1, 'and not again at info level or above (the second at debug level)');
  });
}

t.test("a node whose state dir is on another filesystem than its workspace assembles uploaded files all the same", async (t) => {
  // Uploaded chunks are staged under the state dir; the kernel cannot copy from there into the workspace (EXDEV).
  const base = await tempDir(t);
  await mkdir(join(base, 'ws'));
  const state = await smallFs(t, '64m');
  const node = await NodeProc.start(['--root', join(base, 'ws'), '--state-dir', state]);
  t.teardown(() => node.stop('SIGKILL'));
  const conn = node.connect();
  t.teardown(() => conn.close());
  const data = randomBytes(10 << 20);
  const { m } = await upload(conn, data);
  t.ok(m.chunks.length >= 4, `${m.chunks.length} chunks, all staged on the other filesystem`);
  const r = await conn.commit({ path: 'big.bin', expectAbsent: true, digest: m.digest, size: m.size, chunks: m.chunks });
  t.equal(r.conflict, false);
  t.ok((await readFile(join(base, 'ws', 'big.bin'))).equals(data), 'the file on disk is what was uploaded');
});

t.test('uploads are not throttled by HTTP/2 flow control', async (t) => {
  // grpc-js's server keeps HTTP/2's 64 KiB receive window unless the node
  // widens it (server-window.ts); a raw HTTP/2 client sees what it was given.
  const base = await tempDir(t);
  await mkdir(join(base, 'ws'));
  const node = await NodeProc.start(['--root', join(base, 'ws'), '--state-dir', join(base, 'st')]);
  t.teardown(() => node.stop('SIGKILL'));
  const session = http2.connect(`http://${node.endpoint}`);
  t.teardown(() => session.destroy());
  const settings = await new Promise<http2.Settings>((resolve, reject) => {
    session.once('remoteSettings', resolve);
    session.once('error', reject);
  });
  t.equal(settings.initialWindowSize, FLOW_CONTROL_WINDOW, 'each stream may send a wide window before waiting');
  // The connection window grows by a WINDOW_UPDATE that follows the SETTINGS.
  for (let i = 0; i < 100 && (session.state.remoteWindowSize ?? 0) < FLOW_CONTROL_WINDOW; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(session.state.remoteWindowSize, FLOW_CONTROL_WINDOW, 'the connection as a whole too');
});

/**
 * A Watch subscription over plain HTTP/2, so that it can stop reading for
 * real: a grpc-js client takes in whatever arrives whether or not its
 * stream is paused, while a paused HTTP/2 stream stops granting flow
 * control window and the node's writes back up.
 */
function rawWatch(endpoint: string, req: { fromGeneration: number; epoch: string }) {
  const method = wire().ghostfs.v1.Node.service.Watch;
  const session = http2.connect(`http://${endpoint}`);
  const stream = session.request({ ':method': 'POST', ':path': method.path, 'content-type': 'application/grpc', te: 'trailers' });
  const msg = method.requestSerialize({ workspace: 'default', heartbeatMs: 0, ...req });
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  stream.end(Buffer.concat([head, msg]));
  stream.pause();
  const events: WChangeEventOut[] = [];
  let pending = Buffer.alloc(0);
  const ended = new Promise<{ status?: number; message?: string }>((resolve) => {
    stream.on('data', (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        const len = pending.readUInt32BE(1);
        events.push(method.responseDeserialize(pending.subarray(5, 5 + len)) as unknown as WChangeEventOut);
        pending = pending.subarray(5 + len);
      }
    });
    stream.on('trailers', (h) => resolve({ status: Number(h['grpc-status']), message: String(h['grpc-message'] ?? '') }));
    stream.on('close', () => resolve({}));
  });
  return { events, ended, resume: () => stream.resume(), close: () => session.destroy() };
}

t.test('a change-feed subscriber that stops reading is cut off, not buffered without end, and catches up from the log', async (t) => {
  const base = await tempDir(t);
  await mkdir(join(base, 'ws'));
  const node = await NodeProc.start(['--root', join(base, 'ws'), '--state-dir', join(base, 'st'), '--feed-max-unread', '200']);
  t.teardown(() => node.stop('SIGKILL'));
  const conn = node.connect();
  t.teardown(() => conn.close());
  const h = await conn.handshake();
  const N = 3000;
  const dirs = Array.from({ length: N }, (_, i) => `d${i}`);
  const mkdirs = async (names: string[]) => {
    for (let i = 0; i < names.length; i += 50) await Promise.all(names.slice(i, i + 50).map((p) => conn.mutate({ mkdir: { path: p, mode: 0o755 } })));
  };
  const made = (events: WChangeEventOut[]) => events.filter((e) => e.kind === 'CHANGED').map((e) => e.path);

  // A live subscriber that stops reading while many changes happen.
  const live = rawWatch(node.endpoint, { fromGeneration: h.generation, epoch: h.epoch });
  t.teardown(live.close);
  await mkdirs(dirs.slice(0, N / 2));
  live.resume();
  const first = await live.ended;
  t.equal(first.status, grpc.status.RESOURCE_EXHAUSTED, 'cut off once too far behind');
  t.match(decodeURIComponent(first.message ?? ''), /change events unread/);
  t.ok(made(live.events).length < N / 2, `it got part of the changes (${made(live.events).length} of ${N / 2})`);
  const last = Math.max(...live.events.map((e) => e.generation));

  // It subscribes again from the last event it applied: the rest comes from
  // the change log, a backlog longer than the limit, to a reader as slow:
  // paced by its reading, not cut off.
  await mkdirs(dirs.slice(N / 2));
  const again = rawWatch(node.endpoint, { fromGeneration: last, epoch: h.epoch });
  t.teardown(again.close);
  await new Promise((r) => setTimeout(r, 500));
  again.resume();
  await waitForReady(again.events);
  again.close();
  const seen = new Set([...made(live.events), ...made(again.events)]);
  t.same(dirs.filter((d) => !seen.has(d)), [], 'every change reached the subscriber, across the cut-off');
  const gens = again.events.filter((e) => e.kind === 'CHANGED').map((e) => e.generation);
  t.same(gens, [...gens].sort((a, b) => a - b), 'in generation order');
});

async function waitForReady(events: WChangeEventOut[]): Promise<void> {
  for (let i = 0; i < 300 && !events.some((e) => e.kind === 'READY'); i++) await new Promise((r) => setTimeout(r, 50));
  if (!events.some((e) => e.kind === 'READY')) throw new Error(`no READY after the backlog; got ${events.length} events`);
}
