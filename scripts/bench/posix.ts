// POSIX conformance: the pjdfstest suite on local disk and through a ghostfs
// mount, in one run, and the checks local disk passes that ghostfs fails.
//
// pjdfstest is not shipped here: pass a built checkout (its `pjdfstest`
// program beside its `tests/` directory). Each test script runs as a child
// process, with its working directory in a fresh local directory, then in
// one on a fresh mount (the native driver unless --driver says otherwise)
// of a node on loopback (`ghostfs serve`, and `ghostfs mount --foreground
// --allow-other`: the suite acts as other users too; fuse-native cannot
// let them in). By default the node is served with --allow-devices and
// --allow-setid, what a disk exported over NFS without root squashing
// allows; --node-defaults measures the node as it is served by default
// (device nodes and set-id bits on files refused).
//
//   scripts/bench/posix --suite DIR [--only chmod,rename,...] [--driver native|fuse-native] [--write-back sync|async]
//                       [--node-defaults] [--keep --dir DIR] [--json out.json]
//
// Needs root (the suite changes owners and makes device nodes), FUSE and
// bash. Each script's TAP lines (`ok N`, `not ok N - tried ...`) are read
// directly; checks are matched between the two runs by script and number.
import { Command } from 'commander';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertCliBuilt, ghostfsDirs, spawnMount, spawnNode, stopNodeProcess, terminateMount, waitMounted, waitServing } from './lib/ghostfs.js';
import { progress } from './lib/session.js';

interface Check {
  /** `dir/NN.t #N` */
  id: string;
  ok: boolean;
  /** What the suite says of a failed check ("tried ..., expected ..., got ..."). */
  says: string;
}

/** Runs one test script with `cwd` as its working directory; its checks (a script that dies early has fewer). */
function runScript(script: string, cwd: string, timeoutMs: number): Promise<Check[]> {
  return new Promise((res) => {
    const child = spawn('bash', [script], { cwd, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', () => {
      clearTimeout(timer);
      const name = script.split('/').slice(-2).join('/');
      const checks: Check[] = [];
      for (const line of out.split('\n')) {
        const m = /^(not ok|ok) (\d+)\s*(.*)$/.exec(line);
        if (m) checks.push({ id: `${name} #${m[2]}`, ok: m[1] === 'ok', says: m[3]!.replace(/^- /, '') });
      }
      res(checks);
    });
  });
}

async function runSuite(scripts: string[], cwd: string, label: string): Promise<Map<string, Check>> {
  const all = new Map<string, Check>();
  for (const [i, s] of scripts.entries()) {
    progress(`\r${label}: ${i + 1}/${scripts.length} ${s.split('/').slice(-2).join('/')}   `);
    for (const c of await runScript(s, cwd, 300_000)) all.set(c.id, c);
  }
  progress('\n');
  return all;
}

const program = new Command('posix')
  .description('pjdfstest on local disk and through ghostfs: checks passed by each, and what ghostfs fails that local disk passes')
  .requiredOption('--suite <dir>', 'a built pjdfstest checkout (its pjdfstest program and tests/ directory)')
  .option('--only <dirs>', 'test directories to run (comma-separated, e.g. chmod,rename)')
  .option('--driver <name>', 'the kernel driver: native or fuse-native', 'native')
  .option('--write-back <mode>', "the mount's write-back: sync or async", 'sync')
  .option('--node-defaults', 'serve the node as by default (no --allow-devices, no --allow-setid)')
  .option('--dir <dir>', 'work directory (default: a new one under the system temp directory)')
  .option('--keep', 'keep the work directory')
  .option('--json <file>', 'write every check of both runs there')
  .parse();

async function main(): Promise<void> {
  const o = program.opts<{ suite: string; only?: string; driver: string; writeBack: string; nodeDefaults?: boolean; dir?: string; keep?: boolean; json?: string }>();
  if (o.driver !== 'native' && o.driver !== 'fuse-native') throw new Error(`--driver is native or fuse-native, not "${o.driver}"`);
  if (o.writeBack !== 'sync' && o.writeBack !== 'async') throw new Error(`--write-back is sync or async, not "${o.writeBack}"`);
  assertCliBuilt();
  const testsDir = join(o.suite, 'tests');
  if (!existsSync(join(o.suite, 'pjdfstest')) || !existsSync(testsDir)) throw new Error(`${o.suite} has no pjdfstest program and tests/ directory (build the suite first)`);
  if (process.getuid?.() !== 0) throw new Error('pjdfstest needs root (it changes owners and makes device nodes)');
  const only = o.only ? new Set(o.only.split(',')) : undefined;
  const scripts = readdirSync(testsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && (!only || only.has(d.name)))
    .flatMap((d) => readdirSync(join(testsDir, d.name)).filter((f) => f.endsWith('.t')).map((f) => join(testsDir, d.name, f)))
    .sort();
  if (scripts.length === 0) throw new Error(`no test scripts under ${testsDir}${only ? ` for ${o.only}` : ''}`);

  const work = o.dir ?? (await mkdtemp(join(tmpdir(), 'ghostfs-posix-')));
  const local = join(work, 'local');
  const root = join(work, 'root');
  await mkdir(local, { recursive: true });
  await mkdir(root, { recursive: true });
  const { stateDir, cacheDir, mnt } = ghostfsDirs(work);
  if (!o.nodeDefaults) {
    process.env.GHOSTFS_ALLOW_DEVICES = '1';
    process.env.GHOSTFS_ALLOW_SETID = '1';
  }
  const localChecks = await runSuite(scripts, local, 'local disk');
  const node = spawnNode(root, stateDir);
  await waitServing(node, 60_000);
  // fuse-native cannot let others in (it does not say who asks): the suite's checks run as other users fail there.
  const others = o.driver === 'native' ? ['--allow-other'] : [];
  const m = spawnMount(node.endpoint, mnt, cacheDir, ['--driver', o.driver, ...others, '--write-back', o.writeBack]);
  let ghostChecks: Map<string, Check>;
  try {
    const how = await waitMounted(m);
    if (how !== 'ok') throw new Error(`the mount ${how}:\n${m.tail.join('\n')}`);
    // The suite's scripts create and remove their names in their working directory: one made through the mount.
    const made = spawn('mkdir', [join(mnt, 'posix')]);
    await new Promise((r) => made.once('close', r));
    ghostChecks = await runSuite(scripts, join(mnt, 'posix'), 'ghostfs');
  } finally {
    await terminateMount(m, { noteEarlyExit: true });
    await stopNodeProcess(node.child);
  }

  const passed = (c: Map<string, Check>) => [...c.values()].filter((x) => x.ok).length;
  const missed = [...localChecks.values()].filter((c) => c.ok && !ghostChecks.get(c.id)?.ok);
  const byDir = new Map<string, { local: number; ghostfs: number; checks: number }>();
  for (const c of localChecks.values()) {
    const dir = c.id.split('/')[0]!;
    const row = byDir.get(dir) ?? { local: 0, ghostfs: 0, checks: 0 };
    row.checks++;
    if (c.ok) row.local++;
    if (ghostChecks.get(c.id)?.ok) row.ghostfs++;
    byDir.set(dir, row);
  }
  console.log(`pjdfstest from ${o.suite}, ${scripts.length} scripts; node ${o.nodeDefaults ? 'as served by default' : 'served with --allow-devices --allow-setid'}; ${o.driver} mount with --write-back ${o.writeBack}${others.length ? '' : ' (no --allow-other: checks run as other users fail)'}\n`);
  console.log(['directory', 'checks', 'local disk', 'ghostfs'].join('\t'));
  for (const [dir, r] of [...byDir].sort()) console.log([dir, r.checks, r.local, r.ghostfs].join('\t'));
  console.log(['all', localChecks.size, passed(localChecks), passed(ghostChecks)].join('\t'));
  console.log(`\nghostfs passes ${missed.length === 0 ? 'every' : `${passed(localChecks) - missed.length} of the ${passed(localChecks)}`} checks local disk passes (${((100 * (passed(localChecks) - missed.length)) / passed(localChecks)).toFixed(1)} %).`);
  if (missed.length > 0) {
    console.log('\nPassed on local disk, failed on ghostfs:');
    // Names near NAME_MAX and paths near PATH_MAX are runs of hex: shown by their length.
    const brief = (s: string): string =>
      s
        .replace(/(?:[0-9a-f]{40,}\/){2,}[0-9a-f]{40,}x?/g, (p) => `<a path of ${p.split('/').length} names, ${p.length} bytes>`)
        .replace(/[0-9a-f]{40,}x?/g, (h) => `<a name of ${h.length} bytes>`)
        .slice(0, 240);
    const notRun = 'not run: the script stopped before it (some run checks only on the filesystems they name)';
    for (const c of missed) console.log(`  ${c.id}: ${brief(ghostChecks.get(c.id)?.says ?? notRun)}`);
  }
  if (o.json) await writeFile(o.json, JSON.stringify({ suite: o.suite, driver: o.driver, writeBack: o.writeBack, nodeDefaults: !!o.nodeDefaults, local: [...localChecks.values()], ghostfs: [...ghostChecks.values()] }, null, 1));
  if (!o.keep && !o.dir) await rm(work, { recursive: true, force: true });
}

main().catch((err: Error) => {
  console.error(`posix: ${err.message}`);
  process.exitCode = 1;
});
