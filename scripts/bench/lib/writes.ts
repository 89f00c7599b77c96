// Write workloads shared by the benchmarks (write, peers): the small-file
// writer, the check of its files on the server side, and a source tree turned
// into the archive that `tar -x` extracts with the hash list its copies are
// checked against.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { failed, runCmd } from './session.js';

export const SMALL_SIZE = 4096;

/**
 * The small-file writer, run as `node -e` in its own process: N times
 * open(O_CREAT|O_TRUNC)+write+close via writeFileSync, timed by itself so node's
 * start-up is not counted. It also reports each file's latency, so a few stalls
 * can be told from a uniformly slow path, and when it started (epoch ms), so a
 * caller can time how long the files take to show up elsewhere.
 *
 * With a fourth argument "durable" each file is made durable the way a node
 * commits one: written to a 0600 temporary name, fsynced, renamed into place,
 * and its directory fsynced. That is the local baseline a synchronous
 * write-back is measured against: the most a disk allows at that guarantee.
 */
export const SMALL_WRITER = `
const fs = require('fs'), path = require('path');
const [dir, n, basePath, how] = process.argv.slice(1);
const body = fs.readFileSync(basePath);
fs.mkdirSync(dir);
const durable = how === 'durable';
const dirFd = durable ? fs.openSync(dir, 'r') : -1;
const lat = new Float64Array(Number(n));
const t0 = performance.now();
for (let i = 0; i < lat.length; i++) {
  const s = performance.now();
  body.writeUInt32LE(i, 0);
  const name = path.join(dir, 'f' + String(i).padStart(6, '0') + '.dat');
  if (durable) {
    const tmp = name + '.tmp';
    const fd = fs.openSync(tmp, 'wx', 0o600);
    fs.writeSync(fd, body);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, name);
    fs.fsyncSync(dirFd);
  } else fs.writeFileSync(name, body);
  lat[i] = performance.now() - s;
}
const ms = performance.now() - t0;
lat.sort();
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
process.stdout.write(JSON.stringify({ ms, startEpochMs: performance.timeOrigin + t0, p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1] }) + '\\n');
`;

/** What SMALL_WRITER prints. */
export interface SmallWriterResult {
  ms: number;
  startEpochMs: number;
  p50: number;
  p99: number;
  max: number;
}

const smallName = (i: number): string => `f${String(i).padStart(6, '0')}.dat`;

export interface SmallCheck {
  ok: number;
  missing: number;
  wrongSize: number;
  wrongContent: number;
  extra: number;
}

/** The server's copy of the small files, read straight from its directory: how many are there with the right size and bytes. */
export async function checkSmall(dir: string, n: number, body: Buffer): Promise<SmallCheck> {
  let names: Set<string>;
  try {
    names = new Set(await readdir(dir));
  } catch {
    names = new Set();
  }
  const r = { ok: 0, missing: 0, wrongSize: 0, wrongContent: 0, extra: 0 };
  const want = Buffer.from(body);
  for (let i = 0; i < n; i++) {
    const name = smallName(i);
    if (!names.delete(name)) {
      r.missing++;
      continue;
    }
    const p = join(dir, name);
    if ((await stat(p)).size !== SMALL_SIZE) {
      r.wrongSize++;
      continue;
    }
    want.writeUInt32LE(i, 0);
    if (!(await readFile(p)).equals(want)) r.wrongContent++;
    else r.ok++;
  }
  r.extra = names.size;
  return r;
}

/** Every regular file under the current dir as `sha256  ./path`, sorted bytewise: the content identity of a tree (mtimes and modes left out on purpose). */
export const HASH_LIST = `find . -path ./.git -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum`;

/** What differs between two HASH_LIST outputs, in one line. */
export function diffLists(want: string, got: string): string {
  const parse = (s: string): Map<string, string> => new Map(s.split('\n').filter(Boolean).map((l) => [l.slice(66), l.slice(0, 64)]));
  const a = parse(want),
    b = parse(got);
  const missing = [...a.keys()].filter((k) => !b.has(k));
  const extra = [...b.keys()].filter((k) => !a.has(k));
  const differ = [...a.keys()].filter((k) => b.has(k) && b.get(k) !== a.get(k));
  const show = (xs: string[]): string => (xs.length ? `${xs.length} (${xs.slice(0, 3).join(', ')}${xs.length > 3 ? ', …' : ''})` : '0');
  return `missing ${show(missing)}, different content ${show(differ)}, extra ${show(extra)}`;
}

export interface ArchiveInfo {
  count: number;
  dirs: number;
  bytes: number;
  tarBytes: number;
}

/**
 * Archives the working tree at `src` into `tar` and writes its HASH_LIST to
 * `list`. The generator makes a git checkout; the archive holds the working
 * tree only (the .git pack is one big binary file, not what "a source tree"
 * measures). Fixed owner and mtime make the archive itself reproducible.
 */
export async function archiveTree(src: string, tar: string, list: string): Promise<ArchiveInfo> {
  const opts = { timeoutMs: 30 * 60_000, args: [tar, list] };
  const mk = await runCmd('tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --exclude=./.git -cf "$1" .', src, opts);
  if (mk.code !== 0) throw failed('tar -c', mk);
  const h = await runCmd(`${HASH_LIST} > "$2"`, src, opts);
  if (h.code !== 0) throw failed('hashing the tree', h);
  const sizes = await runCmd("find . -path ./.git -prune -o -type f -printf '%s\\n'; echo dirs $(find . -path ./.git -prune -o -mindepth 1 -type d -print | wc -l); stat -c %s \"$1\"", src, { ...opts, capture: true });
  if (sizes.code !== 0) throw failed('sizing the tree', sizes);
  const lines = sizes.stdout.trim().split('\n');
  const tarBytes = Number(lines.pop());
  const dirs = Number(lines.pop()!.split(' ')[1]);
  return { count: lines.length, dirs, bytes: lines.reduce((s, l) => s + Number(l), 0), tarBytes };
}
