// A ghostfs child process whose JSON log lines (stderr) are collected and
// can be waited for: the tests' way to know a node is serving or a mount
// is up, and to check what either reported.
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../../bin/ghostfs.js', import.meta.url));

export interface LogLine {
  msg: string;
  level: number;
  [k: string]: unknown;
}

export class LoggedProc {
  readonly lines: LogLine[] = [];
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
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

  line(msg: string): LogLine | undefined {
    return this.lines.find((l) => l.msg === msg);
  }

  /** The process's Prometheus metrics, from the address its "metrics serving" line gave. */
  async scrapeMetrics(): Promise<string> {
    const at = this.line('metrics serving')?.metrics;
    if (!at) throw new Error('this process does not serve metrics (yet)');
    const port = String(at).split(':').pop();
    return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
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

  /** The first line with this message; rejects with the whole log if the process exits first. */
  ready(msg: string, what: string): Promise<LogLine> {
    return Promise.race([
      this.waitFor((l) => l.msg === msg, 60_000),
      this.exited.then((code): LogLine => {
        throw new Error(`${what} exited (${code}) before it was ready:\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}`);
      }),
    ]);
  }
}
