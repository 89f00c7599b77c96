// Deterministic benchmark data shared by the benchmarks: a seeded PRNG, a
// realistic source tree that is a real git repository, and a large
// incompressible file. The same parameters give the same bytes and the same
// commit ids on every machine, so figures from two machines describe the same
// work, and a tree kept with --keep can be reused instead of regenerated.
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { chmod, mkdir, open, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

// ---------------------------------------------------------------------------
// randomness

/** sfc32: small, fast, good enough statistically, and fully determined by its seed. */
export function prng(seed: number): () => number {
  let a = 0x9e3779b9 ^ seed,
    b = 0x243f6a88 ^ Math.imul(seed, 0x85ebca6b),
    c = 0xb7e15162,
    d = 1;
  const next = (): number => {
    a |= 0; b |= 0; c |= 0; d |= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) next(); // mix the seed in before use
  return next;
}

/** A generator for one purpose: mixing in a tag keeps the streams of different purposes independent. */
export const stream = (seed: number, ...tags: number[]): (() => number) =>
  prng(tags.reduce((s, t, i) => s ^ Math.imul(t + 1, 0x9e3779b1 + 2 * i), seed >>> 0));

export const unit = (r: () => number): number => r() / 2 ** 32;
export const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(unit(r) * xs.length)]!;
export const logUniform = (r: () => number, lo: number, hi: number): number => Math.exp(Math.log(lo) + unit(r) * (Math.log(hi) - Math.log(lo)));

/** Runs fn(i) for each index with bounded concurrency (enough to keep the disk busy, not so many fds). */
export async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// ---------------------------------------------------------------------------
// the incompressible file

/**
 * Writes `size` bytes of AES-128-CTR keystream keyed by the seed: as
 * incompressible as random bytes, but reproducible, and far faster than a JS
 * PRNG (AES-NI).
 */
export async function writeIncompressible(file: string, size: number, seed: number): Promise<void> {
  const key = createHash('sha256').update(`ghostfs-bench-big:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const block = 8 * 1024 ** 2;
  const zeros = Buffer.alloc(block);
  const fh = await open(file, 'w');
  try {
    for (let done = 0; done < size; ) {
      const n = Math.min(block, size - done);
      const buf = cipher.update(n === block ? zeros : zeros.subarray(0, n));
      const { bytesWritten } = await fh.write(buf, 0, buf.length, null);
      if (bytesWritten !== buf.length) throw new Error(`short write to ${file} (disk full?)`);
      done += n;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Whether a kept incompressible file (`kept`: what its marker says) is the one these parameters ask for. */
export function keptFileMatches(kept: { size: number; seed: number } | undefined, file: string, size: number, seed: number): boolean {
  return !!(kept && kept.size === size && kept.seed === seed && existsSync(file) && statSync(file).size === size);
}

// ---------------------------------------------------------------------------
// the source tree

export interface SourceTreeParams {
  files: number;
  seed: number;
}

export interface SourceTreeSummary {
  files: number;
  dirs: number;
  maxDepth: number;
  bytes: number;
  commits: number;
  /** What `git status --porcelain` should show after generation. */
  modified: number;
  deleted: number;
  untracked: number;
  /** Files matching .gitignore (not shown by git status, skipped by rg). */
  ignored: number;
  /** A word rg can count: it appears in a few percent of comment lines. */
  pattern: string;
}

interface PlannedFile {
  path: string;
  size: number;
  exec: boolean;
  /** The commit that adds it (0-based). */
  commit: number;
}

const WORDS = (
  'alpha beta cache chunk client config core data delta engine event fetch field filter format graph handler ' +
  'index inode kernel layer ledger loader manifest mesh model module mount node object parser path pipeline ' +
  'pool proto queue reader record replica request router schema server session shard signal store stream sync ' +
  'table task token tracer tree util vector view watcher worker writer'
).split(' ');
const TOP = ['packages', 'services', 'libs', 'tools', 'docs', 'apps', 'internal', 'vendor'];
const EXTS: ReadonlyArray<readonly [ext: string, weight: number, comment: string]> = [
  ['.ts', 30, '//'], ['.js', 10, '//'], ['.py', 14, '#'], ['.go', 10, '//'], ['.c', 5, '//'], ['.h', 5, '//'],
  ['.rs', 5, '//'], ['.md', 8, ''], ['.json', 6, ''], ['.yaml', 3, '#'], ['.sh', 2, '#'], ['.txt', 2, ''],
];
const EXT_TOTAL = EXTS.reduce((s, e) => s + e[1], 0);
const COMMITS = 3;
const MAX_DEPTH = 12;
const POOL_BYTES = 4 * 1024 ** 2;
export const TREE_PATTERN = 'TODO';

function chooseExt(r: () => number): (typeof EXTS)[number] {
  let x = unit(r) * EXT_TOTAL;
  for (const e of EXTS) if ((x -= e[1]) < 0) return e;
  return EXTS[0]!;
}

/** Code-like text lines: what rg, git and the kernel see in a real repository, compressible like one. */
function makeTextPool(seed: number): Buffer {
  const r = stream(seed, 1);
  const id = (): string => pick(r, WORDS) + (unit(r) < 0.5 ? pick(r, WORDS).replace(/^./, (c) => c.toUpperCase()) : '');
  const lines: string[] = [];
  let bytes = 0;
  let depth = 0;
  while (bytes < POOL_BYTES) {
    const x = unit(r);
    let line: string;
    if (x < 0.12) line = unit(r) < 0.25 ? `// ${TREE_PATTERN}(${pick(r, WORDS)}): ${id()} ${id()} ${id()}` : `// ${id()} ${pick(r, WORDS)} ${pick(r, WORDS)} ${id()}.`;
    else if (x < 0.22 && depth < 5) { line = `if (${id()}.${id()} ${pick(r, ['<', '>', '===', '!=='])} ${Math.floor(unit(r) * 4096)}) {`; depth++; }
    else if (x < 0.32 && depth > 0) { line = '}'; depth--; }
    else if (x < 0.40) line = `import { ${id()}, ${id()} } from './${pick(r, WORDS)}/${pick(r, WORDS)}';`;
    else if (x < 0.55) line = `return ${id()}(${id()}, '${pick(r, WORDS)}-${Math.floor(unit(r) * 1e6)}');`;
    else if (x < 0.60) line = '';
    else line = `const ${id()} = ${id()}.${id()}(${id()}, ${Math.floor(unit(r) * 1e4)});`;
    line = '  '.repeat(line === '}' ? depth : depth + (x >= 0.12 && x < 0.22 ? -1 : 0)) + line + '\n';
    lines.push(line);
    bytes += line.length;
  }
  return Buffer.from(lines.join(''));
}

/** One file's bytes: a header unique to (path, round), then pool slices starting at line boundaries. */
function fileContent(pool: Buffer, seed: number, index: number, f: PlannedFile, round: number, comment: string): Buffer {
  const r = stream(seed, 2, index, round);
  const header = Buffer.from(`${comment ? comment + ' ' : ''}${f.path} (bench tree seed ${seed}, file ${index}, revision ${round})\n`);
  const parts: Buffer[] = [header];
  let len = header.length;
  while (len < f.size) {
    let start = Math.floor(unit(r) * (pool.length - 1));
    const nl = pool.indexOf(10, start);
    start = nl < 0 ? 0 : nl + 1;
    const take = Math.min(f.size - len, pool.length - start, 64 * 1024);
    if (take <= 0) continue;
    parts.push(pool.subarray(start, start + take));
    len += take;
  }
  return Buffer.concat(parts, len);
}

/**
 * The plan: a random recursive directory tree (each new directory hangs under
 * a uniformly chosen existing one, so depths of 8–12 are common, like a
 * monorepo), ~9 files per directory, sizes mostly 1–20 KiB with a tail of
 * larger files.
 */
function planSourceTree(p: SourceTreeParams): { dirs: string[]; files: PlannedFile[]; maxDepth: number } {
  const r = stream(p.seed, 3);
  const nDirs = Math.max(1, Math.round(p.files / 9));
  const dirs: { path: string; depth: number; names: Set<string> }[] = [{ path: '', depth: 0, names: new Set() }];
  let maxDepth = 0;
  while (dirs.length < nDirs) {
    const parent = dirs[Math.floor(unit(r) * dirs.length)]!;
    if (parent.depth >= MAX_DEPTH) continue;
    let name: string;
    if (parent.depth === 0) {
      if (parent.names.size >= TOP.length) continue;
      name = TOP[parent.names.size]!;
    } else {
      name = unit(r) < 0.3 ? `${pick(r, WORDS)}-${pick(r, WORDS)}` : pick(r, WORDS);
      for (let k = 2; parent.names.has(name); k++) name = `${name.replace(/\d+$/, '')}${k}`;
    }
    parent.names.add(name);
    const d = { path: parent.path ? `${parent.path}/${name}` : name, depth: parent.depth + 1, names: new Set<string>() };
    maxDepth = Math.max(maxDepth, d.depth);
    dirs.push(d);
  }
  const files: PlannedFile[] = [];
  const fixed = ['README.md', 'package.json', '.gitignore'];
  for (let i = 0; i < p.files; i++) {
    const dir = i < fixed.length ? dirs[0]! : dirs[1 + Math.floor(unit(r) * (dirs.length - 1))] ?? dirs[0]!;
    let name: string;
    if (i < fixed.length) name = fixed[i]!;
    else {
      const [ext] = chooseExt(r);
      name = `${pick(r, WORDS)}${unit(r) < 0.6 ? '_' + pick(r, WORDS) : ''}${ext}`;
      for (let k = 2; dir.names.has(name); k++) name = name.replace(/(_\d+)?(\.[a-z]+)$/, `_${k}$2`);
    }
    dir.names.add(name);
    const x = unit(r);
    const size = Math.round(x < 0.92 ? logUniform(r, 1024, 20 * 1024) : x < 0.99 ? logUniform(r, 20 * 1024, 100 * 1024) : logUniform(r, 100 * 1024, 1024 ** 2));
    // Earlier files land in earlier commits, so the history grows the tree over time.
    const commit = i < p.files * 0.6 ? 0 : i < p.files * 0.9 ? 1 : 2;
    files.push({ path: dir.path ? `${dir.path}/${name}` : name, size, exec: name.endsWith('.sh'), commit });
  }
  return { dirs: dirs.slice(1).map((d) => d.path), files, maxDepth };
}

const GIT_ENV = {
  // Ignore the machine's git configuration: the repository and its commits must not depend on it.
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'ghostfs bench',
  GIT_AUTHOR_EMAIL: 'bench@ghostfs.invalid',
  GIT_COMMITTER_NAME: 'ghostfs bench',
  GIT_COMMITTER_EMAIL: 'bench@ghostfs.invalid',
};
export const gitEnv = (): NodeJS.ProcessEnv => ({ ...process.env, ...GIT_ENV });

/** Runs git; stdin, when given, is written with back-pressure by `feed`. */
function git(cwd: string, args: string[], feed?: (write: (b: Buffer | string) => Promise<void>) => Promise<void>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, { cwd, env: gitEnv(), stdio: [feed ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`git ${args[0]} failed (${code}): ${err.trim().slice(0, 500)}`))));
    if (feed) {
      const stdin = child.stdin!;
      stdin.on('error', () => undefined); // an early git exit is reported through its exit code
      const write = (b: Buffer | string): Promise<void> =>
        stdin.write(b) ? Promise.resolve() : new Promise((res) => stdin.once('drain', () => res()));
      feed(write).then(() => stdin.end(), (e: unknown) => { child.kill(); reject(e as Error); });
    }
  });
}

/**
 * Generates the repository at `root` (which must not exist): three commits
 * through `git fast-import` (one pass, straight into a pack like a cloned
 * repository, no 27k loose objects), then a few modified, deleted, untracked
 * and ignored files so that `git status` has real work to report.
 */
export async function generateSourceTree(root: string, p: SourceTreeParams): Promise<SourceTreeSummary> {
  const plan = planSourceTree(p);
  const pool = makeTextPool(p.seed);
  const commentOf = (path: string): string => EXTS.find(([e]) => path.endsWith(e))?.[2] ?? '#';
  await mkdir(root, { recursive: true });
  // Parents before children, siblings in parallel: creating inodes is what costs here.
  const byDepth = new Map<number, string[]>();
  for (const d of plan.dirs) {
    const depth = d.split('/').length;
    if (!byDepth.has(depth)) byDepth.set(depth, []);
    byDepth.get(depth)!.push(d);
  }
  for (const depth of [...byDepth.keys()].sort((a, b) => a - b)) await forEachLimited(byDepth.get(depth)!, 32, (d) => mkdir(join(root, d)));
  await git(root, ['init', '-q', '-b', 'main']);

  const r = stream(p.seed, 4);
  const pending = new Set<Promise<void>>();
  const writeFileLimited = async (path: string, data: Buffer, exec: boolean): Promise<void> => {
    while (pending.size >= 64) await Promise.race(pending);
    const job = (async () => {
      await writeFile(join(root, path), data);
      if (exec) await chmod(join(root, path), 0o755);
    })();
    const tracked = job.finally(() => pending.delete(tracked));
    pending.add(tracked);
  };

  let bytes = 0;
  await git(root, ['fast-import', '--quiet', '--done'], async (write) => {
    let mark = 0;
    const baseTime = 1_700_000_000;
    for (let c = 0; c < COMMITS; c++) {
      const changes: string[] = [];
      for (let i = 0; i < plan.files.length; i++) {
        const f = plan.files[i]!;
        // Files of this commit are added; a few of the earlier ones are changed (round c).
        const add = f.commit === c;
        const change = f.commit < c && unit(r) < 0.03;
        if (!add && !change) continue;
        const data = i === 2 ? Buffer.from('*.log\n/build/\nnode_modules/\n') : fileContent(pool, p.seed, i, f, c, commentOf(f.path));
        await write(`blob\nmark :${++mark}\ndata ${data.length}\n`);
        await write(data);
        await write('\n');
        changes.push(`M ${f.exec ? '100755' : '100644'} :${mark} ${f.path}\n`);
        await writeFileLimited(f.path, data, f.exec);
        if (add) bytes += data.length;
      }
      const msg = `bench tree, step ${c + 1} of ${COMMITS}\n`;
      const when = `${baseTime + c * 86_400} +0000`;
      await write(`commit refs/heads/main\nmark :${++mark}\nauthor ${GIT_ENV.GIT_AUTHOR_NAME} <${GIT_ENV.GIT_AUTHOR_EMAIL}> ${when}\n`);
      await write(`committer ${GIT_ENV.GIT_COMMITTER_NAME} <${GIT_ENV.GIT_COMMITTER_EMAIL}> ${when}\ndata ${msg.length}\n${msg}`);
      await write(changes.join(''));
      await write('\n');
    }
    await write('done\n');
  });
  await Promise.all(pending);

  // The index: from HEAD, then refreshed so it holds every file's stat data, as
  // in a checkout someone works in (git status then compares stat data only).
  await git(root, ['read-tree', 'HEAD']);
  await git(root, ['update-index', '-q', '--refresh']);

  // Work in progress for git status to find.
  const n = p.files;
  const modified = Math.max(2, Math.round(n / 500));
  const deleted = Math.max(1, Math.round(n / 5000));
  const untracked = Math.max(2, Math.round(n / 1000));
  const ignored = Math.max(1, Math.round(n / 2000));
  const step = Math.max(1, Math.floor((n - 3) / (modified + deleted)));
  for (let j = 0; j < modified + deleted; j++) {
    const i = 3 + j * step;
    const f = plan.files[i];
    if (!f) break;
    if (j < modified) await writeFile(join(root, f.path), fileContent(pool, p.seed, i, f, COMMITS, commentOf(f.path)));
    else await unlink(join(root, f.path));
  }
  for (let j = 0; j < untracked + ignored; j++) {
    const dir = plan.dirs[Math.floor(unit(r) * plan.dirs.length)] ?? '';
    const f: PlannedFile = { path: join(dir, j < untracked ? `new_${pick(r, WORDS)}_${j}.ts` : `debug_${j}.log`), size: Math.round(logUniform(r, 512, 8192)), exec: false, commit: COMMITS };
    await writeFile(join(root, f.path), fileContent(pool, p.seed, n + j, f, 0, '//'));
  }
  return { files: n, dirs: plan.dirs.length, maxDepth: plan.maxDepth, bytes, commits: COMMITS, modified, deleted, untracked, ignored, pattern: TREE_PATTERN };
}
