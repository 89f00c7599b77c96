// --write-back async end to end: close() returns once the file is journaled
// on the mount and the node has it moments later. Checked on the node's own
// disk: files appear without anyone waiting, `ghostfs sync` waits for them,
// attribute changes right after close (tar) join the pending commit, fsync
// sends the file at once, a rename waits for the content it moves, and a
// write-back kept in its journal record survives kill -9 of the mount: shown,
// edited and committed after the restart, or kept aside when refused.
import t from 'tap';
import { lstat, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { BIN } from './helpers/logged-proc.js';
import { MountProc, run, sh, waitFor } from './helpers/mount-proc.js';
import { DIR_STABLE_PY, type DirStable } from './helpers/dir-stable.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('mount: asynchronous write-back', async (t) => {
  const base = await tempDir(t);
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  const cache = join(base, 'cache');
  const runDir = join(base, 'run');
  await mkdir(src);
  const env = { GHOSTFS_RUN_DIR: runDir };
  const node = await NodeProc.start(['--root', src, '--state-dir', join(base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const args = ['--cache-dir', cache, '--deadline', '3s', '--write-back', 'async'];
  let m = await MountProc.start(node.endpoint, mnt, args, env);
  t.teardown(() => m.kill());
  const M = (p: string) => join(mnt, p);
  const S = (p: string) => join(src, p);
  const ghostfs = (...a: string[]) => run('env', [`GHOSTFS_RUN_DIR=${runDir}`, process.execPath, BIN, ...a], { timeoutMs: 60_000 });
  const sync = () => ghostfs('sync', mnt, '--json');
  /** Files in the mount's dirty-copy dirs. */
  const dirtyCopies = async () => (await readdir(join(cache, 'dirty'), { recursive: true, withFileTypes: true })).filter((f) => f.isFile()).map((f) => join(f.parentPath, f.name));

  await t.test('many small files reach the node by themselves; ghostfs sync waits for the rest', async (t) => {
    const w = await sh(`mkdir '${M('many')}' && for i in $(seq 1 300); do echo "file $i" > '${M('many')}'/f$i; done`);
    t.equal(w.code, 0, w.stderr);
    t.equal((await run('cat', [M('many/f300')])).stdout, 'file 300\n', 'the mount shows what was closed at once');
    const s = await sync();
    t.equal(s.code, 0, s.stderr);
    t.equal(JSON.parse(s.stdout).pending, 0, 'nothing pending after sync');
    const names = await readdir(S('many'));
    t.equal(names.length, 300, 'every file on the node');
    t.equal(await readFile(S('many/f123'), 'utf8'), 'file 123\n');
    await sh(`echo again > '${M('many/f1')}'`);
    await waitFor('a closed file on the node without sync', async () => (await readFile(S('many/f1'), 'utf8')) === 'again\n');
  });

  await t.test('tar -x: modes and mtimes given right after close join the commit', async (t) => {
    const tree = join(base, 'tree');
    await mkdir(join(tree, 'sub'), { recursive: true });
    for (let i = 0; i < 40; i++) await writeFile(join(tree, 'sub', `f${i}.txt`), `content ${i}\n`.repeat(i + 1), { mode: i % 3 ? 0o644 : 0o755 });
    await sh(`touch -d '2001-02-03 04:05:06.123456789' '${tree}'/sub/* && chmod 750 '${tree}/sub' && touch -d '2002-03-04 05:06:07' '${tree}/sub' && tar --format=posix -C '${tree}' -cf '${base}/t.tar' .`);
    t.equal((await sh(`mkdir '${M('x')}' && tar -C '${M('x')}' -xf '${base}/t.tar'`)).code, 0);
    t.equal((await sync()).code, 0);
    const d = await sh(`tar -C '${S('x')}' -df '${base}/t.tar'`);
    t.equal(d.code, 0, `tar -d clean on the node (content, mode, mtime): ${d.stdout}${d.stderr}`);
    const st = await stat(S('x/sub/f3.txt'), { bigint: true });
    t.equal(st.mtimeNs % 1_000_000_000n, 123456789n, 'mtime to the nanosecond on the node');
    t.equal(Number(st.mode & 0o777n), 0o755, 'mode on the node');
    // tar sets a directory's mode and times as it leaves it, while its files are still queued: they land after them.
    const dir = await stat(S('x/sub'));
    t.equal(dir.mtime.toISOString(), new Date(2002, 2, 4, 5, 6, 7).toISOString(), "the directory's mtime on the node, after its files' commits");
    t.equal(dir.mode & 0o777, 0o750, "the directory's mode on the node");
  });

  await t.test("a directory's times given while its files are queued: kept, unless a name in it changes afterwards", async (t) => {
    const before = Date.now();
    const w = await sh(
      [
        `mkdir '${M('kt')}' '${M('nt')}' '${M('mt')}'`,
        `for i in $(seq 1 20); do echo $i > '${M('kt')}'/f$i; echo $i > '${M('nt')}'/f$i; echo $i > '${M('mt')}'/f$i; done`,
        // The last one big: its commit (upload, then commit) takes longest.
        `head -c 8M /dev/urandom > '${M('kt')}/big'`,
        `touch -d '2003-01-02 03:04:05' '${M('kt')}' '${M('nt')}' '${M('mt')}'`,
        `stat -c %Y '${M('kt')}'`,
        // A link to a file in kt is a new name in mt only: kt's times stay queued.
        `ln '${M('kt')}/f1' '${M('mt')}/l1'`,
        // Later changes of names: a file closed in nt, a directory made in mt.
        `echo late > '${M('nt')}/late'`,
        `mkdir '${M('mt')}/sub'`,
      ].join(' && '),
    );
    t.equal(w.code, 0, w.stderr);
    t.equal(Number(w.stdout.trim()), new Date(2003, 0, 2, 3, 4, 5).getTime() / 1000, 'the mount shows the times at once');
    t.equal((await sync()).code, 0);
    t.equal((await stat(S('kt'))).mtime.getTime(), new Date(2003, 0, 2, 3, 4, 5).getTime(), 'kept on the node after its 21 files landed (and a link to one of them made elsewhere)');
    t.equal((await readdir(S('kt'))).length, 21);
    t.ok((await stat(S('nt'))).mtimeMs >= before - 2000, 'a file closed in the directory afterwards moves its mtime on the node');
    t.equal(await readFile(S('nt/late'), 'utf8'), 'late\n');
    t.ok((await stat(S('mt'))).mtimeMs >= before - 2000, 'a directory made in it afterwards moves its mtime on the node');
    t.equal((await stat(S('mt/l1'))).ino, (await stat(S('kt/f1'))).ino, 'the link on the node');
  });

  await t.test("a closed file looks the same once it lands: its inode number, times and change time do not move with nobody writing", async (t) => {
    t.equal((await sh(`mkdir '${M('same')}' && echo before > '${M('same/old.txt')}'`)).code, 0);
    t.equal((await sync()).code, 0);
    // What a program sees of a file: vim compares it before saving, and refuses to save one "changed since reading".
    const look = `import os, sys, json
print(json.dumps({p: [s.st_ino, str(s.st_mtime_ns), str(s.st_ctime_ns), s.st_size] for p in sys.argv[1:] for s in [os.stat(p)]}))`;
    type Look = [number, string, string, number];
    const looked = async (...paths: string[]): Promise<Record<string, Look>> => {
      const r = await run('python3', ['-c', look, ...paths.map(M)]);
      t.equal(r.code, 0, r.stderr);
      return Object.fromEntries(Object.entries(JSON.parse(r.stdout) as Record<string, Look>).map(([p, v]) => [p.slice(mnt.length + 1), v]));
    };
    const onNode = await stat(S('same/old.txt'), { bigint: true });
    // A new file and a new version of one the node has, each looked at right after its close (before its commit: it lingers first).
    const w = await run('python3', ['-c', `import sys\nfor p, text in zip(sys.argv[1::2], sys.argv[2::2]): open(p, 'w').write(text)\nsys.argv[1:] = sys.argv[1::2]\n${look}`, M('same/new.txt'), 'new\n', M('same/old.txt'), 'after\n']);
    t.equal(w.code, 0, w.stderr);
    const shownAtClose = JSON.parse(w.stdout) as Record<string, Look>;
    const first: Record<string, Look> = { 'same/new.txt': shownAtClose[M('same/new.txt')]!, 'same/old.txt': shownAtClose[M('same/old.txt')]! };
    // Above any node's numbers, XFS's 64-bit ones too (2^52: see local-ino.ts).
    t.ok(first['same/new.txt'][0] >= 2 ** 52, 'the new file was looked at before it landed (a number of the mount\'s)');
    t.equal((await sync()).code, 0);
    t.equal(await readFile(S('same/new.txt'), 'utf8'), 'new\n');
    t.equal(await readFile(S('same/old.txt'), 'utf8'), 'after\n');
    // The kernel hears of a landed file a moment after the mount recorded it: looked at for a while.
    const later = [];
    for (let i = 0; i < 5; i++, await sleep(200)) later.push(await looked('same/new.txt', 'same/old.txt'));
    t.same(later, Array(5).fill(first), 'inode numbers, mtimes, change times and sizes as they were at close');
    t.not(first['same/old.txt']![0], Number(onNode.ino), "the new version has its own number, not its old inode's (which the node may give to another file)");
    for (const p of ['same/new.txt', 'same/old.txt']) {
      t.equal((await stat(S(p), { bigint: true })).mtimeNs, BigInt(first[p]![1]), `${p}: committed with the mtime it was shown with, not the commit's time`);
    }
    // A hard link to it shows the same number (git clone checks that its links are the files it linked).
    t.equal((await sh(`ln '${M('same/new.txt')}' '${M('same/new.link')}'`)).code, 0);
    const linked = await looked('same/new.txt', 'same/new.link');
    t.equal(linked['same/new.link']![0], linked['same/new.txt']![0], 'both names show one inode number');
    t.equal(linked['same/new.txt']![0], first['same/new.txt']![0], 'the one it had');
    // The save vim then makes: open for writing, truncate, write, fsync, close.
    const save = await run('python3', ['-c', `import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644); os.ftruncate(fd, 0); os.write(fd, b'saved\\n'); os.fsync(fd); os.close(fd)`, M('same/old.txt')]);
    t.equal(save.code, 0, save.stderr);
    t.equal(await readFile(S('same/old.txt'), 'utf8'), 'saved\n', 'the save is on the node (fsync sent it)');
  });

  await t.test("a directory's times stay as shown when the files closed in it land: tar archiving it at once does not see it change", async (t) => {
    const r = await run('python3', ['-c', DIR_STABLE_PY, M('stable'), '0.5']);
    t.equal(r.code, 0, r.stderr);
    const seen = JSON.parse(r.stdout) as DirStable;
    t.equal(seen.tar, 0, `tar -c right after the writes: ${seen.tarErr}`);
    t.equal((await sync()).code, 0);
    t.equal((await readdir(S('stable'))).length, 20, 'the files landed');
    t.same(seen.after, seen.before, "the directory's mtime and ctime did not move as they landed");
    t.ok(BigInt(seen.before[0]) > BigInt(seen.made[0]) && BigInt(seen.before[1]) > BigInt(seen.made[1]), `the creates moved them, as on a disk (${seen.made} → ${seen.before})`);
  });

  await t.test('fsync sends a queued file to the node at once', async (t) => {
    // The first close queues the file; dd then opens it again and fsyncs before its close.
    t.equal((await sh(`printf one > '${M('f.txt')}' && dd if=/dev/null of='${M('f.txt')}' oflag=append conv=notrunc,fsync status=none`)).code, 0);
    t.equal(await readFile(S('f.txt'), 'utf8'), 'one', 'on the node when the fsync returned');
  });

  await t.test('a file with two names (a hard link) written through one: the other shows it once close returns', async (t) => {
    t.equal((await sh(`mkdir '${M('linked')}' && echo v1 > '${M('linked/a')}' && ln '${M('linked/a')}' '${M('linked/b')}'`)).code, 0);
    // A queued version is shown under its own name only: this one is committed at its close.
    const r = await sh(`echo v2 >> '${M('linked/b')}' && cat '${M('linked/a')}'`);
    t.equal(r.stdout, 'v1\nv2\n', 'the other name reads what was written through the first, right after its close');
    t.equal(await readFile(S('linked/a'), 'utf8'), 'v1\nv2\n', 'on the node under both names');
    t.equal((await stat(S('linked/a'))).ino, (await stat(S('linked/b'))).ino, 'still one file there');
  });

  await t.test('a rename waits for the content it moves', async (t) => {
    t.equal((await sh(`echo moved > '${M('a.tmp')}' && mv '${M('a.tmp')}' '${M('a.txt')}'`)).code, 0);
    t.equal(await readFile(S('a.txt'), 'utf8'), 'moved\n', 'the renamed file has its content on the node');
    await t.rejects(stat(S('a.tmp')), 'the old name is gone');
  });

  await t.test('a file removed while a descriptor still holds it: gone from the node too', async (t) => {
    const syncCmd = `env GHOSTFS_RUN_DIR='${runDir}' '${process.execPath}' '${BIN}' sync '${mnt}' > /dev/null`;
    // A reader that opened each file while its creator still wrote it keeps the mount's copy in use through all of it.
    const w = await sh(
      [
        `exec 5>'${M('held1')}' 6>'${M('held2')}' 3<'${M('held1')}' 4<'${M('held2')}'`,
        `echo one >&5 && echo one >&6 && exec 5>&- 6>&-`,
        syncCmd,
        `test -f '${S('held1')}' && test -f '${S('held2')}'`,
        // held2 gets a newer version, queued over the one the node has.
        `echo two > '${M('held2')}'`,
        `rm '${M('held1')}' '${M('held2')}'`,
        syncCmd,
      ].join(' && ') + '; r=$?; exec 3<&- 4<&-; exit $r',
    );
    t.equal(w.code, 0, w.stderr);
    await t.rejects(stat(S('held1')), 'a landed file removed while still open is gone from the node');
    await t.rejects(stat(S('held2')), 'so is one with a newer version still queued');
  });

  await t.test('directories made through the mount: at once, with the node stopped too; the node makes them before what goes in them', async (t) => {
    process.kill(node.child.pid!, 'SIGSTOP');
    let w;
    try {
      // md/e stays empty: its mode and times (tar sets them as it leaves it)
      // wait for the directory, not for files in it. The root's times wait for md.
      w = await sh(
        `mkdir -p '${M('md/a/b')}' && echo deep > '${M('md/a/b/f')}' && mkdir '${M('md/c')}' '${M('md/e')}' && chmod 750 '${M('md/e')}' && touch -m -d @1000000000 '${M('md/e')}' '${mnt}' && ls '${M('md')}' && cat '${M('md/a/b/f')}' && stat -c '%i %F' '${M('md')}' '${M('md/a')}'`,
      );
    } finally {
      process.kill(node.child.pid!, 'SIGCONT');
    }
    t.equal(w.code, 0, `mkdir -p and a file in it with the node stopped: ${w.stderr}`);
    const lines = w.stdout.trim().split('\n');
    t.same(lines.slice(0, 3), ['a', 'c', 'e'], 'the mount lists them at once');
    t.equal(lines[3], 'deep', 'and shows the file closed in them');
    const inos = lines.slice(4);
    t.same(inos.map((l) => l.split(' ').slice(1).join(' ')), ['directory', 'directory']);
    t.equal((await sync()).code, 0);
    t.equal(await readFile(S('md/a/b/f'), 'utf8'), 'deep\n', 'the node has the directories and the file in them');
    t.ok((await stat(S('md/c'))).isDirectory());
    const e = await stat(S('md/e'));
    t.equal(e.mode & 0o777, 0o750, 'an empty directory made and chmodded with the node stopped has its mode on the node');
    t.equal(e.mtimeMs, 1e12, 'and its mtime');
    t.equal((await stat(src)).mtimeMs, 1e12, "the root's times given with the node stopped land after what was queued in it");
    const after = await run('stat', ['-c', '%i %F', M('md'), M('md/a')]);
    t.same(after.stdout.trim().split('\n'), inos, 'each keeps the inode number it was shown with (tar checks it)');
    // What must happen on the node below a directory it does not have yet waits for it.
    const w2 = await sh(
      [
        `mkdir '${M('q1')}' && ln -s ../md '${M('q1/ln')}'`,
        `mkdir '${M('q2')}' && rmdir '${M('q2')}'`,
        `mkdir '${M('q3')}' && echo z > '${M('q3/z')}' && mv '${M('q3')}' '${M('q4')}'`,
        `mkdir '${M('q5')}' && chmod 700 '${M('q5')}'`,
        `mkdir '${M('q6')}' && ln '${M('md/a/b/f')}' '${M('q6/hard')}'`,
      ].join(' && '),
    );
    t.equal(w2.code, 0, w2.stderr);
    t.equal((await sync()).code, 0);
    t.equal((await lstat(S('q1/ln'))).isSymbolicLink(), true, 'a symlink made in a queued directory');
    await t.rejects(stat(S('q2')), 'a queued directory removed again is gone on the node');
    t.equal(await readFile(S('q4/z'), 'utf8'), 'z\n', 'a queued directory renamed with a file in it');
    await t.rejects(stat(S('q3')));
    t.equal((await stat(S('q5'))).mode & 0o777, 0o700, 'a queued directory chmodded');
    t.equal((await stat(S('q6/hard'))).ino, (await stat(S('md/a/b/f'))).ino, 'a hard link made in a queued directory');
  });

  await t.test('a node that hangs: closes past the queue\'s size still return, and everything lands once it answers', async (t) => {
    // More records than the queue holds before close() waits (1024). A stopped
    // process still has its listening socket: connections open, nothing is answered.
    // In directories of their own, each given its times as tar gives them.
    const files = 1100;
    const dirs = 20;
    process.kill(node.child.pid!, 'SIGSTOP');
    let w;
    try {
      w = await sh(
        `mkdir '${M('hung')}' && for i in $(seq 1 ${files}); do echo "h $i" > '${M('hung')}'/f$i; done` +
          ` && for d in $(seq 1 ${dirs}); do mkdir '${M('hung')}'/d$d && for i in $(seq 1 10); do echo "$d $i" > '${M('hung')}'/d$d/f$i; done; touch -m -d @1000000000 '${M('hung')}'/d$d; done`,
        { timeoutMs: 180_000 },
      );
    } finally {
      process.kill(node.child.pid!, 'SIGCONT');
    }
    t.equal(w.code, 0, `every close returned while the node was stopped: ${w.stderr}`);
    // Nobody asks: the queue drains by itself once the node answers (it
    // did, at a few records a second, while directories' times were queued).
    const status = async () => JSON.parse((await ghostfs('status', mnt, '--json')).stdout) as { writeBack: { pending: number } };
    let pending = (await status()).writeBack.pending;
    for (let i = 0; i < 600 && pending > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      pending = (await status()).writeBack.pending;
    }
    t.equal(pending, 0, 'the queue drained by itself once the node answered');
    t.equal((await stat(S(`hung/d${dirs}`))).mtimeMs, 1e12, "with the directories' times");
    t.equal((await sync()).code, 0);
    const names = await readdir(S('hung'));
    t.equal(names.length, files + dirs, 'every file on the node once it answers');
    t.equal(await readFile(S(`hung/f${files}`), 'utf8'), `h ${files}\n`);
  });

  await t.test('kill -9 right after close: the next mount commits what was closed', async (t) => {
    t.equal((await sh(`mkdir '${M('kd')}' && echo before > '${M('based.txt')}'`)).code, 0);
    t.equal((await sync()).code, 0);
    await m.stop();
    // The node is away: closes are journaled and cannot be committed yet.
    process.kill(node.child.pid!, 'SIGSTOP');
    m = await MountProc.start(node.endpoint, mnt, args, env);
    t.equal((await sh(`for i in 1 2 3; do echo "kept $i" > '${M('kept')}'$i; done; echo blocked > '${M('blocked')}'; echo in > '${M('kd/f')}'; touch -d '2005-06-07 08:09:10' '${M('kd')}'; echo after > '${M('based.txt')}'`)).code, 0, 'closes (and a directory\'s times) return with the node stopped');
    t.equal((await sh(`mkdir -p '${M('kq/deep')}' '${M('kq-merge')}' '${M('kq-refused')}' && echo deep > '${M('kq/deep/f')}' && echo merged > '${M('kq-merge/f')}' && echo inside > '${M('kq-refused/f')}'`)).code, 0, 'directories made, and files closed in them, with the node stopped');
    // Small files queued by an asynchronous close are kept in their journal records, not in dirty copies.
    t.same(await dirtyCopies(), [], 'no dirty copy for queued small files');
    await m.kill();
    // A directory on the node where a queued file goes: the node refuses that one.
    await mkdir(S('blocked'));
    // A directory made there meanwhile takes what was queued for it; a file there refuses the directory (and what goes in it).
    await mkdir(S('kq-merge'));
    await writeFile(S('kq-merge/theirs'), 'theirs\n');
    await writeFile(S('kq-refused'), 'a file\n');
    // Remounted with the node still away: the journal's content is what the mount shows, and can be edited.
    m = await MountProc.start(node.endpoint, mnt, args, env);
    t.equal((await run('cat', [M('kept2')])).stdout, 'kept 2\n', 'a queued file read back after the restart');
    // A queued version of a file the node has looks after the restart as it will once it lands.
    const look = () => run('python3', ['-c', 'import os, sys; s = os.stat(sys.argv[1]); print(s.st_ino, s.st_mtime_ns)', M('based.txt')]).then((r) => r.stdout.trim());
    const queuedLook = await look();
    t.ok(Number(queuedLook.split(' ')[0]) >= 2 ** 52, `shown with a number of the mount's (${queuedLook})`);
    t.equal((await run('cat', [M('kq/deep/f')])).stdout, 'deep\n', 'a file in a queued directory read back after the restart');
    t.equal((await run('ls', [M('kq')])).stdout, 'deep\n', 'a queued directory listed after the restart');
    t.equal((await sh(`echo more >> '${M('kept1')}'`)).code, 0, 'a queued file appended to after the restart');
    t.equal((await run('cat', [M('kept1')])).stdout, 'kept 1\nmore\n');
    process.kill(node.child.pid!, 'SIGCONT');
    await waitFor('the journal replayed', async () => (await readFile(S('kept3'), 'utf8').catch(() => '')) === 'kept 3\n');
    await waitFor('the edit committed', async () => (await readFile(S('kept1'), 'utf8').catch(() => '')) === 'kept 1\nmore\n');
    t.equal(await readFile(S('kept2'), 'utf8'), 'kept 2\n');
    await waitFor('the queued version landed', async () => (await readFile(S('based.txt'), 'utf8').catch(() => '')) === 'after\n');
    t.equal(await look(), queuedLook, 'its inode number and mtime did not move as it landed');
    await waitFor("the directory's journaled times", async () => (await stat(S('kd'))).mtime.getTime() === new Date(2005, 5, 7, 8, 9, 10).getTime());
    t.equal(await readFile(S('kd/f'), 'utf8'), 'in\n', 'with the file closed in it before them');
    await waitFor('the queued directories replayed', async () => (await readFile(S('kq/deep/f'), 'utf8').catch(() => '')) === 'deep\n');
    await waitFor('a directory made on the node meanwhile took its file', async () => (await readFile(S('kq-merge/f'), 'utf8').catch(() => '')) === 'merged\n');
    t.equal((await run('ls', [M('kq-merge')])).stdout, 'f\ntheirs\n', 'and the mount lists what was in it already');
    // The refused file's bytes are kept aside in the cache dir, as for any refused write-back.
    await waitFor('the refused bytes kept aside', async () => (await dirtyCopies()).filter((f) => f.endsWith('.failed')).length === 2);
    const failed = (await dirtyCopies()).filter((f) => f.endsWith('.failed'));
    t.same((await Promise.all(failed.map((f) => readFile(f, 'utf8')))).sort(), ['blocked\n', 'inside\n'], 'two refused files kept aside, with the bytes that were closed');
    t.ok((await stat(S('blocked'))).isDirectory(), "the node's directory is untouched");
    // The refused file is not shown any more: what the node has there is.
    await waitFor("the node's directory shown where the file was refused", async () => (await sh(`test -d '${M('blocked')}'`)).code === 0).catch(() => undefined);
    t.equal((await sh(`test -d '${M('blocked')}'`)).code, 0, "the mount shows the node's directory in place of the refused file");
    t.equal(await readFile(S('kq-refused'), 'utf8'), 'a file\n', "the node's file where a directory was refused is untouched");
    t.equal((await run('cat', [M('kq-refused')])).stdout, 'a file\n', 'and the mount shows it in place of the refused directory');
  });

  t.equal(await m.stop(), 0, 'clean unmount');
});
