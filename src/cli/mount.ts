// `ghostfs mount`: expose a workspace served by mesh nodes at a local
// directory. Without --foreground it returns once the mount is ready and
// leaves the mount process running in the background (like sshfs); with it,
// the process stays attached and unmounts cleanly on SIGINT/SIGTERM.
import { Command, Option } from 'commander';
import { spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { mkdirSync, readFileSync } from 'node:fs';
import { parseChoice, parseDuration, parseIntIn, parseListen, parseSize } from '../config/parse.js';
import { ALLOW_OTHER_DRIVER, defaultAttrTimeout, defaultDriver, DRIVERS, type MountConfig, WRITE_BACK_MODES } from '../mount/mount-config.js';
import { defaultIdMap, ID_MAPS } from '../mount/owner-map.js';
import { defaultCacheDir, env, fail, flagOn, printConfig } from './common.js';

const collect = (v: string, prev: string[]): string[] => [...prev, v];

export function mountCommand(): Command {
  return new Command('mount')
    .description('mount a workspace served by mesh nodes at a local directory')
    .argument('<endpoint>', 'a node serving the workspace (host:port)')
    .argument('<mountpoint>', 'the directory to mount at (created if missing)')
    .addOption(env(new Option('--replica <endpoint...>', 'another node serving the same workspace (repeatable), used when the first fails').argParser(collect).default([]), 'REPLICA'))
    .addOption(env(new Option('--workspace <id>', 'the workspace to mount').default('default'), 'WORKSPACE'))
    .addOption(env(new Option('--cache-dir <dir>', 'where cached metadata and chunks live').default(defaultCacheDir()), 'CACHE_DIR'))
    .addOption(env(new Option('--token <token>', 'bearer token the nodes require'), 'TOKEN'))
    .addOption(env(new Option('--tls-ca <file>', 'CA that signed the nodes\' certificates (enables TLS)'), 'TLS_CA'))
    .addOption(env(new Option('--tls-cert <file>', 'client certificate for mutual TLS'), 'TLS_CERT'))
    .addOption(env(new Option('--tls-key <file>', 'client key for mutual TLS'), 'TLS_KEY'))
    .addOption(env(new Option('--driver <name>', 'kernel driver').argParser(parseChoice(DRIVERS)).default(defaultDriver(), `${defaultDriver()} (native when its addon is built)`), 'DRIVER'))
    .addOption(env(new Option('--deadline <duration>', 'deadline of each remote call').argParser(parseDuration).default(parseDuration('10s'), '10s'), 'DEADLINE'))
    .addOption(env(new Option('--attr-timeout <seconds>', 'how long the kernel trusts attributes and names (default: 30 with the native driver, which the change feed keeps current; 1 with fuse-native)').argParser(parseIntIn(0, 3600)), 'ATTR_TIMEOUT'))
    .addOption(env(new Option('--write-back <mode>', 'sync: close() returns once the node has the file; async: once it is journaled locally (the node gets it moments later, many files at once)').argParser(parseChoice(WRITE_BACK_MODES)).default('sync'), 'WRITE_BACK'))
    .addOption(env(new Option('--bulk-lane <on|off>', 'fetch chunk bytes, and send small commits, over the node\'s bulk lane (same port, less CPU than gRPC) when it offers one').argParser(parseChoice(['on', 'off'] as const)).default('on'), 'BULK_LANE'))
    .addOption(env(new Option('--passthrough <on|off>', 'native driver: a big file read again is read by the kernel from a whole local copy, without the mount (FUSE passthrough; needs root)').argParser(parseChoice(['on', 'off'] as const)).default('on'), 'PASSTHROUGH'))
    .addOption(env(new Option('--idmap <user|none>', 'user: files of the user the node runs as are shown as yours, and yours are made as its (a swap of the two; other owners show as they are); none: owners as the node has them').argParser(parseChoice(ID_MAPS)).default(defaultIdMap(), `${defaultIdMap()} (none when run as root)`), 'IDMAP'))
    .addOption(env(new Option('--allow-other', 'let other users use the mount too (the kernel checks their permissions; what each makes is theirs where the node runs as root); as a user, needs user_allow_other in /etc/fuse.conf'), 'ALLOW_OTHER'))
    .addOption(env(new Option('--readahead <chunks>', 'chunks fetched ahead of a sequential reader').argParser(parseIntIn(0, 64)).default(8), 'READAHEAD'))
    .addOption(env(new Option('--cache-quota <size>', 'most bytes of chunks the cache keeps (least recently used go first)').argParser(parseSize).default(parseSize('10G'), '10G'), 'CACHE_QUOTA'))
    .addOption(env(new Option('--min-free <size>', 'free space the cache leaves on its filesystem').argParser(parseSize).default(parseSize('1G'), '1G'), 'MIN_FREE'))
    .addOption(env(new Option('--client-id <id>', 'name of this mount in conflict copies and node logs').default(hostname()), 'CLIENT_ID'))
    .addOption(env(new Option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics').argParser(parseListen), 'METRICS'))
    .option('--foreground', 'stay attached; unmount on SIGINT/SIGTERM')
    .option('--print-config', 'print the effective settings (flags, GHOSTFS_* variables, defaults) and exit')
    .option('--fuse-debug', 'print every FUSE request (libfuse debug output)')
    .action(async (endpoint: string, mountpoint: string, o, cmd: Command) => {
      if ((o.tlsCert && !o.tlsKey) || (!o.tlsCert && o.tlsKey)) fail('--tls-cert and --tls-key go together.');
      const allowOther = flagOn(cmd, 'allowOther', 'ALLOW_OTHER');
      const config: MountConfig = {
        endpoints: [endpoint, ...(o.replica as string[])],
        mountpoint: resolve(mountpoint),
        workspace: o.workspace,
        cacheDir: resolve(o.cacheDir),
        token: o.token,
        tls: o.tlsCa || o.tlsCert ? { ca: o.tlsCa, cert: o.tlsCert, key: o.tlsKey } : undefined,
        driver: o.driver,
        deadlineMs: o.deadline,
        attrTimeoutS: o.attrTimeout ?? defaultAttrTimeout(o.driver),
        readaheadChunks: o.readahead,
        bulkLane: o.bulkLane === 'on',
        writeBack: o.writeBack,
        clientId: o.clientId,
        cacheQuotaBytes: o.cacheQuota,
        minFreeBytes: o.minFree,
        passthrough: o.passthrough === 'on',
        idmap: o.idmap,
        allowOther,
        debug: !!o.fuseDebug,
      };
      if (o.printConfig) return printConfig({ ...config, metrics: o.metrics });
      if (allowOther && o.driver !== 'native') fail(ALLOW_OTHER_DRIVER);
      if (allowOther && !mayAllowOther()) fail('--allow-other needs root, or user_allow_other in /etc/fuse.conf (fusermount3 refuses it otherwise).');
      if (!o.foreground) return background(config);
      // The mount itself is loaded only here: the rest of this command, and every other one, starts without it.
      const { foreground } = await import('./mount-foreground.js');
      await foreground(config, o.metrics);
    });
}

/** Starts the mount as a detached process and returns once it reports ready. */
async function background(config: MountConfig): Promise<void> {
  mkdirSync(config.cacheDir, { recursive: true });
  const logFile = process.env.GHOSTFS_LOG_FILE || join(config.cacheDir, 'mount.log');
  const args = [...process.execArgv, process.argv[1]!, ...process.argv.slice(2), '--foreground'];
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    env: { ...process.env, GHOSTFS_LOG_FILE: logFile },
  });
  const outcome = await new Promise<{ mounted?: boolean; error?: string }>((resolveOutcome) => {
    const t = setTimeout(() => resolveOutcome({ error: `the mount did not become ready within 60 s (see ${logFile})` }), 60_000);
    child.once('message', (m) => {
      clearTimeout(t);
      resolveOutcome(m as { mounted?: boolean; error?: string });
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      resolveOutcome({ error: `the mount process exited (${code}) before it was ready (see ${logFile})` });
    });
  });
  if (outcome.error) fail(outcome.error);
  child.unref();
  child.disconnect?.();
  process.stdout.write(`mounted ${config.endpoints[0]} (workspace ${config.workspace}) at ${config.mountpoint}; pid ${child.pid}, log ${logFile}\n`);
}

/**
 * Whether fusermount3 will take allow_other from this user: root, or
 * user_allow_other in /etc/fuse.conf, read as fusermount3 reads it (what
 * follows a # is a comment; a last line without its newline is ignored).
 */
function mayAllowOther(): boolean {
  if (process.geteuid?.() === 0) return true;
  try {
    const lines = readFileSync('/etc/fuse.conf', 'utf8').split('\n').slice(0, -1);
    return lines.some((l) => l.replace(/#.*/, '').trim() === 'user_allow_other');
  } catch {
    return false;
  }
}
