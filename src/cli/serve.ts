// `ghostfs serve`: run a mesh node agent for one or more workspace roots.
import { Command, Option } from 'commander';
import { hostname, homedir } from 'node:os';
import { join } from 'node:path';
import { parseChoice, parseDuration, parseIntIn, parseListen, parseSize } from '../config/parse.js';
import { env, fail } from './common.js';

function defaultStateDir(): string {
  return join(process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'ghostfs', 'node');
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

export function serveCommand(): Command {
  return new Command('serve')
    .description('serve workspace directories to ghostfs mounts (a mesh node agent)')
    .addOption(env(new Option('--root <dir>', 'the workspace directory to serve'), 'ROOT'))
    .addOption(env(new Option('--workspace <id|id=dir...>', 'workspace id for --root, or id=dir (repeatable) to serve several').argParser(collect).default([]), 'WORKSPACE'))
    .addOption(env(new Option('--listen <host:port>', 'address to listen on').argParser(parseListen).default(parseListen('127.0.0.1:7070'), '127.0.0.1:7070'), 'LISTEN'))
    .addOption(env(new Option('--state-dir <dir>', 'where the index database and staged uploads live').default(defaultStateDir()), 'STATE_DIR'))
    .addOption(env(new Option('--node-id <id>', 'name of this node in handshakes and conflict copies').default(hostname()), 'NODE_ID'))
    .addOption(env(new Option('--token <token>', 'require this bearer token from clients'), 'TOKEN'))
    .addOption(env(new Option('--tls-cert <file>', 'TLS certificate (PEM)'), 'TLS_CERT'))
    .addOption(env(new Option('--tls-key <file>', 'TLS private key (PEM)'), 'TLS_KEY'))
    .addOption(env(new Option('--tls-ca <file>', 'CA for client certificates: enables mutual TLS'), 'TLS_CA'))
    .addOption(env(new Option('--profile <name>', 'the workspace disk: ssd (local: metadata calls made inline) or nfs (a network filesystem: every call through the thread pool, fewer stats at once)').argParser(parseChoice(['ssd', 'nfs'] as const)).default('ssd'), 'PROFILE'))
    .addOption(env(new Option('--hash-concurrency <n>', 'files hashed at once (default: from the profile)').argParser(parseIntIn(1, 64)), 'HASH_CONCURRENCY'))
    .addOption(env(new Option('--read-size <size>', 'read size while hashing (default: from the profile)').argParser(parseSize), 'READ_SIZE'))
    .addOption(env(new Option('--temp-ttl <duration>', 'age after which stale temp files and staged uploads are removed').argParser(parseDuration).default(parseDuration('10m'), '10m'), 'TEMP_TTL'))
    .addOption(env(new Option('--reconcile-interval <duration>', 'full re-walk behind the inotify watches').argParser(parseDuration).default(parseDuration('5m'), '5m'), 'RECONCILE_INTERVAL'))
    .addOption(env(new Option('--client-keepalive <duration>', 'how often the node pings each mount; one that does not answer within 10 s (or this, if shorter) is dropped (0: never)').argParser(parseDuration).default(parseDuration('30s'), '30s'), 'CLIENT_KEEPALIVE'))
    .addOption(env(new Option('--feed-max-unread <n>', 'change events a subscribed mount may leave unread before the node cuts it off (it then subscribes again and catches up from the change log)').argParser(parseIntIn(100, 10_000_000)).default(10_000), 'FEED_MAX_UNREAD'))
    .addOption(env(new Option('--no-watch', 'do not watch for changes (rely on the periodic reconcile)'), 'NO_WATCH'))
    .addOption(env(new Option('--watch-delay <duration>', 'how long changes noticed on disk are gathered before the index takes them (a listing or stat asked meanwhile waits for them)').argParser(parseDuration).default(parseDuration('30ms'), '30ms'), 'WATCH_DELAY'))
    .addOption(env(new Option('--allow-setid', 'keep the set-user-ID and set-group-ID bits clients set on files (dropped by default: with them, whoever holds the token could leave a program that runs as its owner, root included, for anyone who logs in here)'), 'ALLOW_SETID'))
    .addOption(env(new Option('--allow-devices', 'make the device nodes clients ask for (mknod of a block or character device; refused by default: on this machine each is a real device, open to any local user its mode lets in)'), 'ALLOW_DEVICES'))
    .addOption(env(new Option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics').argParser(parseListen), 'METRICS'))
    .option('--print-config', 'print the effective settings (flags, GHOSTFS_* variables, defaults) and exit')
    .action(async (o, cmd: Command) => {
      const workspaces = parseWorkspaces(o.root, o.workspace as string[]);
      if (o.tlsCert && !o.tlsKey) fail('--tls-cert needs --tls-key.');
      if (!o.tlsCert && (o.tlsKey || o.tlsCa)) fail('--tls-key and --tls-ca need --tls-cert.');
      if (o.watchDelay > 60_000) fail('--watch-delay is at most 60s.');
      // The node itself is loaded only here, so every other command starts without it.
      const { serveNode } = await import('./serve-node.js');
      await serveNode(workspaces, o, cmd);
    });
}

function parseWorkspaces(root: string | undefined, specs: string[]): { id: string; root: string }[] {
  const out: { id: string; root: string }[] = [];
  const plain: string[] = [];
  for (const s of specs) {
    const i = s.indexOf('=');
    if (i > 0) out.push({ id: s.slice(0, i), root: s.slice(i + 1) });
    else plain.push(s);
  }
  if (root) {
    if (plain.length > 1) fail('--root takes one --workspace ID; use --workspace id=dir to serve several.');
    out.unshift({ id: plain[0] ?? 'default', root });
  } else if (plain.length > 0) {
    fail(`--workspace ${plain[0]} needs --root DIR (or write it as id=dir).`);
  }
  if (out.length === 0) fail('nothing to serve: give --root DIR (or --workspace id=dir).');
  const ids = new Set<string>();
  for (const w of out) {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(w.id)) fail(`workspace id "${w.id}" must be 1-64 letters, digits, '.', '_' or '-'.`);
    if (ids.has(w.id)) fail(`workspace id "${w.id}" is given twice.`);
    ids.add(w.id);
  }
  return out;
}
