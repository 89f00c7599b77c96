// Configuration from flags and GHOSTFS_* variables: validated, visible.
import t from 'tap';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN } from './helpers/node-proc.js';

const ghostfs = (args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    import('node:child_process').then(({ execFile }) =>
      execFile(process.execPath, [...nodeArgs, BIN, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' }, (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as NodeJS.ErrnoException).code ?? 1) : 0, stdout, stderr }),
      ),
    );
  });

t.test('--print-config shows the effective settings, from flags and environment', async (t) => {
  const r = await ghostfs(['serve', '--root', '/tmp', '--print-config'], { GHOSTFS_PROFILE: 'nfs', GHOSTFS_TOKEN: 'secret', GHOSTFS_LISTEN: '127.0.0.1:7171' });
  t.equal(r.code, 0, r.stderr);
  const c = JSON.parse(r.stdout);
  t.equal(c.listen.port, 7171, 'GHOSTFS_LISTEN applied');
  t.equal(c.readSize, 1024 * 1024, 'the nfs profile applied');
  t.equal(c.token, '***', 'the token is masked');
  t.equal(c.allowSetId, false, 'set-id bits are dropped unless asked');
  const m = await ghostfs(['mount', '127.0.0.1:7070', '/tmp/x', '--print-config', '--cache-quota', '2G']);
  t.equal(JSON.parse(m.stdout).cacheQuotaBytes, 2 * 1024 ** 3);
  const idmap = async (env: Record<string, string>) => JSON.parse((await ghostfs(['mount', '127.0.0.1:7070', '/tmp/x', '--print-config'], env)).stdout).idmap;
  t.equal(await idmap({}), process.geteuid?.() === 0 ? 'none' : 'user', "the node's user is shown as the mount's unless the mount runs as root");
  const other = process.geteuid?.() === 0 ? 'user' : 'none';
  t.equal(await idmap({ GHOSTFS_IDMAP: other }), other, 'GHOSTFS_IDMAP');
  const allowOther = async (args: string[], env: Record<string, string>) => JSON.parse((await ghostfs(['mount', '127.0.0.1:7070', '/tmp/x', '--print-config', '--driver', 'native', ...args], env)).stdout).allowOther;
  t.same([await allowOther([], {}), await allowOther(['--allow-other'], {}), await allowOther([], { GHOSTFS_ALLOW_OTHER: '1' }), await allowOther([], { GHOSTFS_ALLOW_OTHER: 'no' })], [false, true, true, false], 'other users are kept out unless --allow-other (or GHOSTFS_ALLOW_OTHER=1)');
  // A security flag from the environment: what the variable says counts, not only that it is there.
  const allowSetId = async (args: string[], env: Record<string, string>) => JSON.parse((await ghostfs(['serve', '--root', '/tmp', '--print-config', ...args], env)).stdout).allowSetId;
  t.equal(await allowSetId(['--allow-setid'], {}), true, '--allow-setid');
  t.equal(await allowSetId([], { GHOSTFS_ALLOW_SETID: '1' }), true, 'GHOSTFS_ALLOW_SETID=1');
  t.equal(await allowSetId([], { GHOSTFS_ALLOW_SETID: 'false' }), false, 'GHOSTFS_ALLOW_SETID=false');
  t.equal(await allowSetId([], { GHOSTFS_ALLOW_SETID: '0' }), false, 'GHOSTFS_ALLOW_SETID=0');
  const watch = async (env: Record<string, string>) => JSON.parse((await ghostfs(['serve', '--root', '/tmp', '--print-config'], env)).stdout).watch;
  t.same([await watch({ GHOSTFS_NO_WATCH: '1' }), await watch({ GHOSTFS_NO_WATCH: 'no' }), await watch({})], [false, true, true], 'GHOSTFS_NO_WATCH=1 and =no');
});

t.test('a bad value stops the command with one clear sentence', async (t) => {
  const state = await mkdtemp(join(tmpdir(), 'ghostfs-cli-test-'));
  t.teardown(() => rm(state, { recursive: true, force: true }));
  const cases: [string[], Record<string, string>, RegExp][] = [
    [['serve', '--root', '/tmp'], { GHOSTFS_PROFILE: 'fast' }, /"fast" is not one of ssd, nfs/],
    [['serve', '--root', '/tmp', '--listen', 'nowhere'], {}, /"nowhere" is not HOST:PORT/],
    [['serve', '--root', '/tmp', '--temp-ttl', 'soon'], {}, /"soon" is not a duration/],
    [['mount', 'x:1', '/tmp/y', '--cache-quota', 'lots'], {}, /"lots" is not a size/],
    [['mount', 'x:1', '/tmp/y', '--idmap', 'root'], {}, /"root" is not one of user, none/],
    [['mount', 'x:1', '/tmp/y', '--allow-other', '--driver', 'fuse-native'], {}, /--allow-other needs the native driver/],
    [['serve', '--root', '/does/not/exist', '--state-dir', join(state, 'never-made')], {}, /is not a usable directory/],
    [['serve', '--root', '/tmp'], { GHOSTFS_ALLOW_SETID: 'maybe' }, /GHOSTFS_ALLOW_SETID="maybe": give 1, true, yes or on/],
  ];
  for (const [args, env, msg] of cases) {
    const r = await ghostfs(args, env);
    t.not(r.code, 0, `${args.join(' ')} fails`);
    t.match(r.stderr, msg);
  }
  await t.rejects(stat(join(state, 'never-made')), 'a root that cannot serve fails before the state directory is made');
});

t.test('commands that only talk to a mount or read a cache start without the node, the mount and their libraries', async (t) => {
  const cache = await mkdtemp(join(tmpdir(), 'ghostfs-cli-test-'));
  t.teardown(() => rm(cache, { recursive: true, force: true }));
  const hook = ['--import', fileURLToPath(new URL('./helpers/loaded-packages.js', import.meta.url))];
  // The libraries of the node and the mount: each takes tens of milliseconds to load, all together about half a second here.
  const heavy = ['@grpc/grpc-js', 'rocksdb-native', 'fuse-native', 'pino', 'prom-client', '@napi-rs/blake-hash'];
  for (const args of [['--help'], ['status', '--cache-dir', cache], ['unmount', join(cache, 'not-mounted')], ['sync', join(cache, 'not-mounted')], ['serve', '--help'], ['mount', '--help']]) {
    const r = await ghostfs(args, {}, hook);
    const line = /loaded packages: (.*)/.exec(r.stderr);
    t.ok(line, `ghostfs ${args[0]} ran to its end (${r.stderr.trim().split('\n')[0]})`);
    const loaded = line?.[1]!.split(' ') ?? [];
    t.same(heavy.filter((p) => loaded.includes(p)), [], `ghostfs ${args.join(' ')} loaded none of them`);
  }
  // The check sees them when they are loaded.
  const serve = /loaded packages: (.*)/.exec((await ghostfs(['serve', '--root', '/tmp', '--print-config'], {}, hook)).stderr)?.[1]!.split(' ') ?? [];
  t.ok(serve.includes('@grpc/grpc-js') && serve.includes('rocksdb-native'), `ghostfs serve loads what the node needs: ${serve.join(' ')}`);
});
