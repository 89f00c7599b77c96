// One soak worker: a child process doing a random mix of file operations in
// its own directory of the mount until a deadline, checking every answer
// against what it knows it wrote, and reading ranges of shared files to
// compare with the node's copies. It prints one JSON summary line at the end
// (the parent checks the node side once the mount is unmounted).
//
//   node dist/scripts/soak/worker.js <mountDir> <sourceDir> <untilEpochMs> <seed> [tolerant]
//
// Tolerant (the fault scenarios): an operation may fail with an errno that
// a remote filesystem under faults owes its caller (EIO, EHOSTDOWN,
// ENOTCONN...). Such a failure is counted, not an error, and the files it
// touched drop out of the check (their state is legitimately unknown); a
// file whose close() returned success must still be on the node intact.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeAt } from '../../src/util/positional-io.js';

export interface WorkerSummary {
  ops: number;
  /** Unexpected errors by code: each one is a failure. */
  errors: Record<string, number>;
  /** The first few error messages, for the report. */
  examples: string[];
  /** Tolerant mode: operations that failed with an errno owed to a fault, by code. */
  faulted: Record<string, number>;
  /** Reads that returned other bytes than were written (or than the node's copy holds). */
  corrupted: number;
  /** Names this worker wrote that the mount no longer listed. */
  lost: number;
  maxOpMs: number;
  /** Which operation that was, and how it ended (ok or its errno). */
  slowestOp?: string;
  /** What the node must hold at the end: name → sha256. */
  files: Record<string, string>;
}

/** What a remote filesystem may answer while its node or link misbehaves: clear errnos, never hangs. */
const FAULT_ERRNOS = new Set(['EIO', 'EHOSTDOWN', 'ETIMEDOUT', 'ENOTCONN', 'ECONNABORTED', 'EROFS', 'ENOSPC', 'EAGAIN', 'ESTALE', 'ENOENT']);

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A small deterministic generator, so a run can be repeated with its seed. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/**
 * The worker's directory, made through the mount. Under faults that may
 * take a few tries (its parent is the mount's root, which exists: any
 * failure is the fault's). A plain mkdir, not a recursive one: that would
 * report a failed mkdir as the ENOENT of the stat it makes next.
 */
/** A file big enough for the native driver to pass through to a local copy (drivers/passthrough.ts). */
const BIG_BYTES = 6 * 1024 * 1024;

async function makeOwnDir(dir: string, tolerant: boolean): Promise<void> {
  for (let tries = 1; ; tries++) {
    try {
      await mkdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (code === 'EEXIST') return; // made by a try whose answer was lost
      if (!tolerant || !FAULT_ERRNOS.has(code) || tries >= 30) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

async function main(): Promise<void> {
  const [dir, sourceDir, untilArg, seedArg, mode] = process.argv.slice(2);
  const tolerant = mode === 'tolerant';
  if (!dir || !sourceDir || !untilArg) throw new Error('usage: worker <mountDir> <sourceDir> <untilEpochMs> <seed>');
  const until = Number(untilArg);
  const rand = rng(Number(seedArg ?? 1));
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const sizeOf = (): number => (rand() < 0.5 ? Math.floor(rand() * 8192) : Math.floor(rand() * 1.5 * 1024 * 1024));
  const shared = (await readdir(sourceDir)).filter((n) => n.startsWith('shared-'));
  await makeOwnDir(dir, tolerant);

  const files = new Map<string, Buffer>();
  /** What last happened to each name, and when: for the report of a name missing from a listing. */
  const lastOp = new Map<string, string>();
  const noteOp = (name: string, what: string): void => {
    lastOp.delete(name); // the newest last: the oldest are dropped first
    lastOp.set(name, `${what} at ${new Date().toISOString()}`);
    if (lastOp.size > 200) lastOp.delete(lastOp.keys().next().value!);
  };
  /** The names the running operation changes: unknown state if it fails. */
  let touching: string[] = [];
  const s: WorkerSummary = { ops: 0, errors: {}, examples: [], faulted: {}, corrupted: 0, lost: 0, maxOpMs: 0, files: {} };
  let n = 0;
  const corrupt = (what: string): void => {
    s.corrupted++;
    if (s.examples.length < 5) s.examples.push(`corrupted: ${what}`);
  };

  /** Overwrites a range of one of our files (maybe extending it) through another descriptor; returns the bytes written. */
  const editInPlace = async (name: string, at: number, what: string): Promise<Buffer> => {
    const old = files.get(name)!;
    const patch = randomBytes(Math.floor(rand() * 65536) + 1);
    const fh = await open(join(dir, name), 'r+');
    try {
      // A write may be short (the kernel splits it at page boundaries, and a full disk stops it
      // part way): like any careful writer, go on with the rest until it is written or fails.
      await writeAt(fh, patch, at);
    } catch (err) {
      // Left to the garbage collector, a handle whose close fails (a dead mount) would crash the worker.
      await fh.close().catch(() => undefined);
      throw err;
    }
    await fh.close();
    const next = Buffer.alloc(Math.max(old.length, at + patch.length));
    old.copy(next);
    patch.copy(next, at);
    files.set(name, next);
    noteOp(name, what);
    return patch;
  };

  const ops: [number, string, () => Promise<void>][] = [
    [
      4,
      'create',
      async () => {
        if (files.size >= 40) return;
        const name = `f${n++}`;
        const data = randomBytes(sizeOf());
        touching = [name];
        await writeFile(join(dir, name), data);
        files.set(name, data);
        noteOp(name, 'created');
      },
    ],
    [
      4,
      'read',
      async () => {
        if (!files.size) return;
        const name = pick([...files.keys()]);
        const got = await readFile(join(dir, name));
        if (!got.equals(files.get(name)!)) corrupt(`read of ${name} through the mount: ${got.length} bytes (sha256 ${sha(got).slice(0, 12)}), expected ${files.get(name)!.length} (sha256 ${sha(files.get(name)!).slice(0, 12)})`);
      },
    ],
    [
      2,
      'edit in place',
      async () => {
        if (!files.size) return;
        // An edit in place: a range overwritten (and maybe the file extended).
        const name = pick([...files.keys()]);
        touching = [name];
        await editInPlace(name, Math.floor(rand() * (files.get(name)!.length + 1)), 'edited in place');
      },
    ],
    [
      1,
      'edit beside a reader',
      async () => {
        // A big file held open for reading (the native driver may pass it through to a local
        // copy) while the same worker edits it in place: the held descriptor sees the edit.
        const name = 'big';
        const old = files.get(name);
        touching = [name];
        if (!old) {
          const data = randomBytes(BIG_BYTES);
          await writeFile(join(dir, name), data);
          files.set(name, data);
          noteOp(name, 'created');
          return;
        }
        const reader = await open(join(dir, name), 'r');
        try {
          const at = Math.floor(rand() * old.length);
          const patch = await editInPlace(name, at, 'edited beside a reader');
          const seen = Buffer.alloc(patch.length);
          // Read on until all is there, as careful readers do: when the mount dies in the
          // middle of a read, the kernel returns the bytes it had copied rather than an
          // error, and only the next read fails (with the fault's errno).
          let got = 0;
          while (got < patch.length) {
            const { bytesRead } = await reader.read(seen, got, patch.length - got, at + got);
            if (!bytesRead) break;
            got += bytesRead;
          }
          if (got !== patch.length || !seen.equals(patch)) corrupt(`a reader holding ${name} reads ${got} bytes at ${at} that differ from what the edit beside it wrote (${patch.length} bytes)`);
        } finally {
          await reader.close().catch(() => undefined);
        }
      },
    ],
    [
      1,
      'rename',
      async () => {
        if (!files.size) return;
        const from = pick([...files.keys()]);
        const to = `f${n++}`;
        touching = [from, to];
        await rename(join(dir, from), join(dir, to));
        files.set(to, files.get(from)!);
        files.delete(from);
        noteOp(to, `renamed from ${from}`);
      },
    ],
    [
      1,
      'unlink',
      async () => {
        if (files.size < 10) return;
        const name = pick([...files.keys()]);
        touching = [name];
        await unlink(join(dir, name));
        files.delete(name);
      },
    ],
    [
      1,
      'mkdir+rmdir',
      async () => {
        const d = join(dir, `d${n++}`);
        await mkdir(d);
        await rmdir(d);
      },
    ],
    [
      2,
      'list',
      async () => {
        const listed = new Set(await readdir(dir));
        for (const name of files.keys()) {
          if (listed.has(name)) continue;
          s.lost++;
          if (s.examples.length >= 5) continue;
          // Gone for good, or missing from the listing only: a stat and a second listing tell.
          const seen = await stat(join(dir, name)).then(
            () => 'a stat finds it',
            (err: NodeJS.ErrnoException) => `a stat says ${err.code}`,
          );
          const again = (await readdir(dir)).includes(name) ? 'listed again at once' : 'not listed again';
          s.examples.push(`lost: ${name}, ${lastOp.get(name) ?? 'no record'}, is not in the listing of its directory; ${seen}, ${again}`);
        }
        if (files.size) {
          const name = pick([...files.keys()]);
          const size = (await stat(join(dir, name))).size;
          if (size !== files.get(name)!.length) corrupt(`stat of ${name} through the mount: size ${size}, expected ${files.get(name)!.length}`);
        }
      },
    ],
    [
      3,
      'read shared range',
      async () => {
        if (!shared.length) return;
        // A range of a shared file, compared with the node's own copy.
        const name = pick(shared);
        const size = (await stat(join(sourceDir, name))).size;
        const at = Math.floor(rand() * size);
        const len = Math.min(size - at, Math.floor(rand() * 2 * 1024 * 1024) + 1);
        const [a, b] = await Promise.all([readRange(join(dir, '..', name), at, len), readRange(join(sourceDir, name), at, len)]);
        if (!a.equals(b)) corrupt(`shared ${name} bytes ${at}+${len} through the mount differ from the node's (${a.length} vs ${b.length} bytes)`);
      },
    ],
  ];
  const total = ops.reduce((x, [w]) => x + w, 0);

  while (Date.now() < until) {
    let r = rand() * total;
    const [, opName, op] = ops.find(([w]) => (r -= w) < 0)!;
    const started = performance.now();
    let outcome = 'ok';
    touching = [];
    try {
      await op();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'ERROR';
      outcome = code;
      if (tolerant && FAULT_ERRNOS.has(code)) {
        s.faulted[code] = (s.faulted[code] ?? 0) + 1;
        for (const name of touching) files.delete(name);
      } else {
        s.errors[code] = (s.errors[code] ?? 0) + 1;
        if (s.examples.length < 5) s.examples.push((err as Error).message);
      }
    }
    const ms = performance.now() - started;
    if (ms > s.maxOpMs) {
      s.maxOpMs = ms;
      s.slowestOp = `${opName}: ${outcome}`;
    }
    s.ops++;
  }
  for (const [name, data] of files) s.files[name] = sha(data);
  process.stdout.write(JSON.stringify(s) + '\n');
}

async function readRange(path: string, at: number, len: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  let closed = false;
  try {
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await fh.read(buf, got, len - got, at + got);
      if (!bytesRead) break;
      got += bytesRead;
    }
    const out = buf.subarray(0, got);
    closed = true;
    await fh.close();
    return out;
  } finally {
    if (!closed) await fh.close().catch(() => undefined);
  }
}

main().catch((err) => {
  process.stderr.write(`soak worker failed: ${(err as Error).stack}\n`);
  process.exit(1);
});
