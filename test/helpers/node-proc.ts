// Runs a real `ghostfs serve` as a child process and reads its JSON log.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NodeConnection, type ConnectionOptions } from '../../src/mesh/connection.js';

export const BIN = fileURLToPath(new URL('../../../bin/ghostfs.js', import.meta.url));

export interface LogLine {
  msg: string;
  level: number;
  [k: string]: unknown;
}

export class NodeProc {
  readonly lines: LogLine[] = [];
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  port = 0;
  exited: Promise<number | null>;

  private constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let parsed: LogLine;
        try {
          parsed = JSON.parse(line);
        } catch {
          parsed = { msg: line, level: 50 };
        }
        this.lines.push(parsed);
        this.waiters = this.waiters.filter((w) => (w.pred(parsed) ? (w.resolve(parsed), false) : true));
      }
    });
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  static async start(args: string[], env: Record<string, string> = {}): Promise<NodeProc> {
    const child = spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', ...args], {
      env: { ...process.env, GHOSTFS_LOG_PRETTY: '0', GHOSTFS_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const p = new NodeProc(child);
    const serving = await Promise.race([
      p.waitFor((l) => l.msg === 'node serving', 60_000),
      p.exited.then((code) => {
        throw new Error(`node exited (${code}) before serving:\n${p.lines.map((l) => JSON.stringify(l)).join('\n')}`);
      }),
    ]);
    p.port = Number(String(serving.listen).split(':').pop());
    return p;
  }

  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  line(msg: string): LogLine | undefined {
    return this.lines.find((l) => l.msg === msg);
  }

  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    const found = this.lines.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('timed out waiting for a log line')), timeoutMs);
      t.unref(); // a wait that lost a race must not keep the test process alive
      this.waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(t);
          resolve(l);
        },
      });
    });
  }

  connect(workspace = 'default', opts: ConnectionOptions = {}): NodeConnection {
    return new NodeConnection(this.endpoint, workspace, opts);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

export async function tempDir(t: { teardown(fn: () => unknown): void }, prefix = 'ghostfs-test-'): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}
