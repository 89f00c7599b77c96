// `ghostfs demo`: a newcomer's first look. Creates a sample workspace, runs
// a node on loopback, mounts it (as a separate process, the way a user
// would), runs ordinary tools on the mount, shows a change made on the node
// arriving through the change feed and changes made through the mount
// landing on the node, and unmounts and cleans up.
import { Command } from 'commander';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, writeFile, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { PROFILES } from '../config/profiles.js';
import type { NodeAgent, NodeConfig } from '../node/agent.js';
import { isMounted } from '../mount/mount-table.js';

const say = (s = ''): boolean => process.stdout.write(s + '\n');
const BIN = fileURLToPath(new URL('../../../bin/ghostfs.js', import.meta.url));

/** Runs a tool as its own process (the demo never reads the mount from inside a mount process). */
function tool(cmd: string, args: string[]): Promise<{ out: string; err: string; ms: number }> {
  const t = performance.now();
  return new Promise((resolve) =>
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 }, (_e, out, err) => resolve({ out, err, ms: performance.now() - t })),
  );
}

const indent = (s: string): string =>
  s
    .trimEnd()
    .split('\n')
    .map((l) => `     ${l}`)
    .join('\n');

export function demoCommand(): Command {
  return new Command('demo').description('serve a sample workspace on loopback, mount it and show tools working on it').action(async () => {
    // Loaded here, not with the command line, so that every other command starts without them.
    const [{ NodeAgent }, { DEFAULT_CHUNKING }, { log }] = await Promise.all([import('../node/agent.js'), import('../content/chunker.js'), import('../log.js')]);
    // The demo's own lines tell the story; the log speaks only of trouble unless asked.
    if (!process.env.GHOSTFS_LOG_LEVEL) log.level = 'warn';
    if (!isMountable()) {
      process.stderr.write('ghostfs demo: FUSE is not available here (no /dev/fuse or no fusermount); run `npm run setup` as root.\n');
      process.exit(1);
    }
    const base = await mkdtemp(join(tmpdir(), 'ghostfs-demo-'));
    const root = join(base, 'workspace');
    const mnt = join(base, 'mnt');
    const cache = join(base, 'cache');
    let agent: NodeAgent | undefined;
    try {
      say(`1. A sample workspace on the "node" side: ${root}`);
      await mkdir(join(root, 'src'), { recursive: true });
      await writeFile(join(root, 'README.md'), '# demo project\n\nServed by a ghostfs node, read through a FUSE mount.\n');
      await writeFile(join(root, 'src/app.ts'), 'export const answer = 42;\n');
      await writeFile(join(root, 'src/util.ts'), 'export const double = (n: number) => 2 * n; // the answer, twice\n');
      await writeFile(join(root, 'data.bin'), randomBytes(32 * 1024 * 1024));

      const config: NodeConfig = {
        workspaces: [{ id: 'demo', root }],
        listen: { host: '127.0.0.1', port: 0 },
        stateDir: join(base, 'node-state'),
        nodeId: 'demo-node',
        chunking: DEFAULT_CHUNKING,
        ...PROFILES.ssd,
        tempTtlMs: 600_000,
        reconcileIntervalMs: 300_000,
        watch: true,
      };
      agent = await NodeAgent.start(config);
      const endpoint = `127.0.0.1:${agent.port}`;
      say(`2. A node serves it on ${endpoint} (hash index in RocksDB, change feed on)`);

      const m = await tool(process.execPath, [BIN, 'mount', endpoint, mnt, '--workspace', 'demo', '--cache-dir', cache]);
      if (!(await isMounted(mnt))) throw new Error(`the mount did not come up: ${m.err || m.out}`);
      say(`3. ghostfs mount ${endpoint} ${mnt}`);
      say(indent(m.out));

      say('4. Ordinary tools on the mount:');
      say(`   $ ls -l ${mnt}`);
      say(indent((await tool('ls', ['-l', mnt])).out));
      say(`   $ cat README.md`);
      say(indent((await tool('cat', [join(mnt, 'README.md')])).out));
      say(`   $ grep -rn answer src`);
      say(indent((await tool('grep', ['-rn', 'answer', join(mnt, 'src')])).out.split(mnt + '/').join('')));

      const cold = await tool('sha256sum', [join(mnt, 'data.bin')]);
      const warm = await tool('sha256sum', [join(mnt, 'data.bin')]);
      const local = await tool('sha256sum', [join(root, 'data.bin')]);
      const same = cold.out.split(' ')[0] === local.out.split(' ')[0];
      say(`5. data.bin (32 MiB) read lazily in content-defined chunks: sha256 ${same ? 'matches the node\'s copy' : 'DIFFERS from the node\'s copy'}`);
      say(`     first read ${Math.round(cold.ms)} ms (fetched from the node), second ${Math.round(warm.ms)} ms (cached)`);
      say(`   $ ghostfs status ${mnt}`);
      say(indent((await tool(process.execPath, [BIN, 'status', mnt])).out));

      await writeFile(join(root, 'src/app.ts'), 'export const answer = 43; // edited on the node\n');
      let seen = '';
      for (let i = 0; i < 50 && !seen.includes('43'); i++) {
        await new Promise((r) => setTimeout(r, 100));
        seen = (await tool('cat', [join(mnt, 'src/app.ts')])).out;
      }
      say(`6. Someone edits src/app.ts on the node; the change feed brings it to the mount:`);
      say(indent(seen));

      await tool('sh', ['-c', `echo 'written through the mount' > '${join(mnt, 'notes.txt')}'`]);
      await tool('sed', ['-i', 's/43/44/', join(mnt, 'src/app.ts')]);
      say('7. Writing through the mount: a new file and an in-place edit (sed -i: temp file + rename), on the node once closed:');
      say(`   $ cat ${root}/notes.txt`);
      say(indent(await readFile(join(root, 'notes.txt'), 'utf8')));
      say(`   $ cat ${root}/src/app.ts`);
      say(indent(await readFile(join(root, 'src/app.ts'), 'utf8')));

      spawnSync('fusermount', ['-u', mnt]);
      for (let i = 0; i < 50 && (await isMounted(mnt)); i++) await new Promise((r) => setTimeout(r, 100));
      const pid = Number(/pid (\d+)/.exec(m.out)?.[1]);
      for (let i = 0; i < 100 && pid && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
      say(`8. fusermount -u ${mnt}: ${(await isMounted(mnt)) ? 'STILL MOUNTED' : 'unmounted'}; the mount process ${pid && alive(pid) ? 'is STILL RUNNING' : 'exited by itself'}`);
      say('Done. Cleaned up.');
    } finally {
      if (await isMounted(mnt)) spawnSync('fusermount', ['-uz', mnt]);
      await agent?.stop();
      await rm(base, { recursive: true, force: true, maxRetries: 5 });
    }
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function isMountable(): boolean {
  return spawnSync('sh', ['-c', 'test -e /dev/fuse && command -v fusermount >/dev/null']).status === 0;
}
