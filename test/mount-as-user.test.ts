// Owners through a mount run by another user than the node's (--idmap):
// the node's files are the mount user's, and what the mount user makes is
// the node's user's on the node. Real node, real mounts, commands run as
// the mount's user from child processes.
import t from 'tap';
import { chmod, chown, lstat, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NodeProc, tempDir } from './helpers/node-proc.js';
import { MountProc, sh, type RunAs } from './helpers/mount-proc.js';
import { nobody, nobodyCannotRun } from './helpers/users.js';

const root = { uid: 0, gid: 0 };
const ids = async (p: string): Promise<string> => {
  const s = await lstat(p);
  return `${s.uid}:${s.gid}`;
};

/**
 * A directory that `user` may mount and keep its cache in. Its mountpoint
 * and cache are the user's; the base is open to it (tempDir makes it 0700).
 */
async function placeFor(t: Parameters<typeof tempDir>[0], user: RunAs): Promise<{ base: string; mnt: string; args: string[]; env: Record<string, string> }> {
  const base = await tempDir(t);
  await chmod(base, 0o755);
  for (const d of ['mnt', 'cache', 'run']) {
    await mkdir(join(base, d));
    await chown(join(base, d), user.uid, user.gid);
  }
  return { base, mnt: join(base, 'mnt'), args: ['--cache-dir', join(base, 'cache')], env: { GHOSTFS_RUN_DIR: join(base, 'run'), HOME: base } };
}

/**
 * libfuse opens /dev/fuse as the user who mounts. Distributions make it
 * 0666 (udev); a container may leave it 0600 root, so it is opened to
 * everyone for this test, as there, and put back after (a test killed
 * meanwhile leaves it as distributions have it).
 */
async function fuseDeviceOpen(t: Parameters<typeof tempDir>[0]): Promise<void> {
  const mode = (await stat('/dev/fuse')).mode & 0o777;
  if ((mode & 0o006) === 0o006) return;
  await chmod('/dev/fuse', mode | 0o006);
  t.teardown(() => chmod('/dev/fuse', mode));
}

t.test('a mount run by another user than the node\'s shows the node\'s files as its user\'s, and makes its files as the node\'s', { skip: nobodyCannotRun }, async (t) => {
  const place = await placeFor(t, nobody);
  const ws = join(place.base, 'ws');
  await mkdir(join(ws, 'sub'), { recursive: true });
  await writeFile(join(ws, 'private.txt'), 'for the owner only\n', { mode: 0o600 });
  await chmod(join(ws, 'private.txt'), 0o600);
  await writeFile(join(ws, 'theirs.txt'), 'a node-side file of the uid the mount runs as\n');
  await chown(join(ws, 'theirs.txt'), nobody.uid, nobody.gid);
  await fuseDeviceOpen(t);

  const node = await NodeProc.start(['--root', ws, '--state-dir', join(place.base, 'state')]);
  t.teardown(() => node.stop('SIGKILL'));
  const m = await MountProc.start(node.endpoint, place.mnt, [...place.args, '--driver', 'native'], place.env, nobody);
  t.teardown(() => m.kill());
  // Into the mount once the user's (a child changes directory before it changes user, and root may not enter this mount).
  const asUser = (script: string) => sh(`cd '${place.mnt}' && ${script}`, { as: nobody });

  const shown = await asUser("stat -c '%n %u:%g' . private.txt sub theirs.txt");
  t.equal(shown.code, 0, shown.stderr);
  t.same(shown.stdout.trim().split('\n'), ['. 65534:65534', 'private.txt 65534:65534', 'sub 65534:65534', 'theirs.txt 0:0'], "the node's user (root) shows as the mount's, and the mount's uid on the node as the node's user");

  const read = await asUser('cat private.txt');
  t.equal(read.stdout, 'for the owner only\n', 'a 0600 file of the node\'s user is readable by the mount\'s user');

  const wrote = await asUser('echo more >> private.txt && echo new > new.txt && mkdir made && echo in > made/f && touch sub/g && ln -s new.txt link');
  t.equal(wrote.code, 0, `the mount's user writes, creates, makes directories and links where the node's user owns: ${wrote.stderr}`);
  t.equal(await readFile(join(ws, 'private.txt'), 'utf8'), 'for the owner only\nmore\n', 'the append reached the node');
  for (const p of ['private.txt', 'new.txt', 'made', 'made/f', 'sub/g', 'link']) {
    t.equal(await ids(join(ws, p)), '0:0', `${p} belongs to the node's user on the node`);
  }
  const after = await asUser("stat -c '%n %u:%g' new.txt made made/f sub/g link");
  t.same(after.stdout.trim().split('\n'), ['new.txt 65534:65534', 'made 65534:65534', 'made/f 65534:65534', 'sub/g 65534:65534', 'link 65534:65534'], 'and to the mount\'s user through the mount, once closed too');

  // A chown to oneself is the node's user's on the node: nothing to change.
  const chowned = await asUser(`chown ${nobody.uid}:${nobody.gid} new.txt && echo again >> new.txt`);
  t.equal(chowned.code, 0, chowned.stderr);
  t.equal(await ids(join(ws, 'new.txt')), '0:0', 'a chown to the mount\'s own user keeps the node\'s');
  t.equal(await readFile(join(ws, 'new.txt'), 'utf8'), 'new\nagain\n');

  t.same((await m.status()).owners, { node: root, shownAs: nobody }, 'status says whose files are shown as whose');
  await m.stop();

  // With no node reachable, the mount maps by what the node said last time.
  await node.stop('SIGKILL');
  const offline = await MountProc.start(node.endpoint, place.mnt, [...place.args, '--driver', 'native'], place.env, nobody);
  t.teardown(() => offline.kill());
  const cached = await asUser("stat -c '%n %u:%g' private.txt theirs.txt; cat private.txt");
  t.equal(cached.stdout, 'private.txt 65534:65534\ntheirs.txt 0:0\nfor the owner only\nmore\n', `offline, the same owners are shown: ${cached.stderr}`);
  t.same((await offline.status()).owners, { node: root, shownAs: nobody });
  // A file closed meanwhile waits for the node; after a restart it is still shown as the mount user's.
  const queued = await asUser('echo queued > queued.txt');
  t.equal(queued.code, 0, queued.stderr);
  await offline.stop();
  const again = await MountProc.start(node.endpoint, place.mnt, [...place.args, '--driver', 'native'], place.env, nobody);
  t.teardown(() => again.kill());
  const pending = await asUser("stat -c '%n %u:%g' queued.txt && echo more >> queued.txt && cat queued.txt");
  t.equal(pending.stdout, 'queued.txt 65534:65534\nqueued\nmore\n', `a pending file is the mount user's after a restart: ${pending.stderr}`);
  await again.stop();

  // --idmap none: owners as the node has them, so the node's user's files are closed to this one.
  const none = await MountProc.start(node.endpoint, place.mnt, [...place.args, '--driver', 'native', '--idmap', 'none'], place.env, nobody);
  t.teardown(() => none.kill());
  const refused = await asUser("stat -c '%u:%g' private.txt; cat private.txt");
  t.match(refused.stdout, /^0:0\n$/, 'shown as the node has it');
  t.match(refused.stderr, /Permission denied/, 'and not readable by the mount\'s user');
  t.notOk((await none.status()).owners, 'status names no swap');
  await none.stop();
});

// The map is the same for the drivers and for a mount run by root: here a
// root mount told to map, of a node run as nobody (each driver once).
for (const driver of ['native', 'fuse-native']) {
  t.test(`--idmap user on a root mount of a node run as another user (${driver})`, { skip: nobodyCannotRun }, async (t) => {
    const place = await placeFor(t, root);
    const ws = join(place.base, 'ws');
    await mkdir(ws);
    await writeFile(join(ws, 'node-user.txt'), 'made by the node\'s user\n');
    await writeFile(join(ws, 'roots.txt'), 'made by root\n');
    await symlink('roots.txt', join(ws, 'link'));
    await chown(ws, nobody.uid, nobody.gid);
    await chown(join(ws, 'node-user.txt'), nobody.uid, nobody.gid);
    const state = join(place.base, 'state');
    await mkdir(state);
    await chown(state, nobody.uid, nobody.gid);

    const node = await NodeProc.start(['--root', ws, '--state-dir', state], {}, { as: nobody });
    t.teardown(() => node.stop('SIGKILL'));
    const m = await MountProc.start(node.endpoint, place.mnt, [...place.args, '--driver', driver, '--idmap', 'user'], place.env);
    t.teardown(() => m.kill());
    const inMount = (script: string) => sh(script, { cwd: place.mnt });

    const shown = await inMount("stat -c '%n %u:%g' . node-user.txt roots.txt link");
    t.same(shown.stdout.trim().split('\n'), ['. 0:0', 'node-user.txt 0:0', 'roots.txt 65534:65534', 'link 65534:65534'], 'the node\'s user shows as root, root (roots.txt and the link to it) as the node\'s user');
    const made = await inMount("echo x > made.txt && mkdir dir && stat -c '%n %u:%g' made.txt dir");
    t.same(made.stdout.trim().split('\n'), ['made.txt 0:0', 'dir 0:0'], made.stderr);
    t.same((await m.status()).owners, { node: nobody, shownAs: root });
    await m.stop();

    // Root's default is none: owners as the node has them (root may open anything, and tar -x as root restores them as they are).
    const plain = await MountProc.start(node.endpoint, place.mnt, [...place.args, '--driver', driver], place.env);
    t.teardown(() => plain.kill());
    const raw = await inMount("stat -c '%n %u:%g' node-user.txt roots.txt made.txt");
    t.same(raw.stdout.trim().split('\n'), ['node-user.txt 65534:65534', 'roots.txt 0:0', 'made.txt 65534:65534'], 'a root mount shows owners as they are by default');
    t.notOk((await plain.status()).owners);
    await plain.stop();
  });
}

// --allow-other: a root mount shared with other users. Each one's permissions
// are checked by the kernel, and what each makes is theirs on the node (a
// node run as root gives it), with a set-group-ID directory's group.
for (const writeBack of ['sync', 'async']) {
  t.test(`--allow-other: what another user makes through a root mount is theirs (--write-back ${writeBack})`, { skip: nobodyCannotRun }, async (t) => {
    const place = await placeFor(t, root);
    const ws = join(place.base, 'ws');
    await mkdir(join(ws, 'team'), { recursive: true });
    await chmod(ws, 0o777);
    await writeFile(join(ws, 'roots.txt'), "root's\n");
    await chown(join(ws, 'team'), 0, 4242);
    await chmod(join(ws, 'team'), 0o2777);
    const node = await NodeProc.start(['--root', ws, '--state-dir', join(place.base, 'state')]);
    t.teardown(() => node.stop('SIGKILL'));
    const m = await MountProc.start(node.endpoint, place.mnt, [...place.args, '--driver', 'native', '--allow-other', '--write-back', writeBack], place.env);
    t.teardown(() => m.kill());
    const asUser = (script: string) => sh(`cd '${place.mnt}' && ${script}`, { as: nobody });

    const made = await asUser('echo mine > mine.txt && mkdir mydir && ln -s mine.txt mylink && echo ours > team/t.txt && mkdir team/sub');
    t.equal(made.code, 0, `another user creates, makes directories and links: ${made.stderr}`);
    const expected = ['mine.txt 65534:65534', 'mydir 65534:65534', 'mylink 65534:65534', 'team/t.txt 65534:4242', 'team/sub 65534:4242'];
    const shown = await asUser(`stat -c '%n %u:%g' ${expected.map((l) => l.split(' ')[0]).join(' ')}`);
    t.same(shown.stdout.trim().split('\n'), expected, 'shown as theirs, the set-group-ID directory\'s group in it');
    const synced = await m.sync();
    t.equal(synced.code, 0, `everything closed is on the node: ${synced.stderr}`);
    for (const line of expected) {
      const [p, want] = line.split(' ');
      t.equal(await ids(join(ws, p!)), want, `${p} is theirs on the node`);
    }
    t.equal(((await stat(join(ws, 'team/sub'))).mode & 0o2000) !== 0, true, 'a directory made in it has the set-group-ID bit too');
    const refused = await asUser('cat roots.txt && echo more >> roots.txt');
    t.equal(refused.stdout, "root's\n", "root's 0644 file is readable by them");
    t.match(refused.stderr, /Permission denied/, 'and not writable: the kernel checks their permissions');
    t.equal(await readFile(join(ws, 'roots.txt'), 'utf8'), "root's\n");

    // The mount's own user (root) writing in the set-group-ID directory: its group from the start.
    const own = await sh(`cd '${place.mnt}' && exec 3> team/own.txt && stat -c '%u:%g' team/own.txt && exec 3>&-`);
    t.equal(own.stdout, '0:4242\n', `a file the mount's user holds open there is shown in the directory's group: ${own.stderr}`);
    await m.stop();
    if (writeBack === 'sync') return;

    // Queued while no node answers, then the mount restarts: each is still theirs, and the node makes it theirs.
    await node.stop('SIGKILL');
    const offline = await MountProc.start(node.endpoint, place.mnt, [...place.args, '--driver', 'native', '--allow-other', '--write-back', writeBack], place.env);
    t.teardown(() => offline.kill());
    const queued = await asUser('mkdir later && echo x > later/f && mkdir team/later');
    t.equal(queued.code, 0, queued.stderr);
    await offline.stop();
    const back = await MountProc.start(node.endpoint, place.mnt, [...place.args, '--driver', 'native', '--allow-other', '--write-back', writeBack], place.env);
    t.teardown(() => back.kill());
    const later = ['later 65534:65534', 'later/f 65534:65534', 'team/later 65534:4242'];
    const queuedShown = await asUser("stat -c '%n %u:%g' later later/f team/later");
    t.same(queuedShown.stdout.trim().split('\n'), later, `after a restart, what is queued is shown as theirs: ${queuedShown.stderr}`);
    const again = await NodeProc.start(['--root', ws, '--state-dir', join(place.base, 'state'), '--listen', node.endpoint]);
    t.teardown(() => again.stop('SIGKILL'));
    const landed = await back.sync();
    t.equal(landed.code, 0, landed.stderr);
    for (const line of later) {
      const [p, want] = line.split(' ');
      t.equal(await ids(join(ws, p!)), want, `${p} is theirs on the node`);
    }
    await back.stop();
  });
}
