// A child process that holds a file open read-only, to check what a reader
// that keeps its descriptor sees while others change the file.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { waitFor } from './mount-proc.js';

/**
 * Holds a file open read-only and, for each line on stdin, reads it whole
 * through that descriptor and prints the sha256 and size ("q" ends it).
 */
const HOLDER = `
  const fs = require('fs'), crypto = require('crypto');
  const fd = fs.openSync(process.argv[1], 'r');
  const report = () => {
    const size = fs.fstatSync(fd).size, b = Buffer.alloc(size);
    for (let at = 0; at < size; ) { const n = fs.readSync(fd, b, at, size - at, at); if (n === 0) break; at += n; }
    process.stdout.write(crypto.createHash('sha256').update(b).digest('hex') + ' ' + size + '\\n');
  };
  report();
  process.stdin.on('data', (d) => (String(d).trim() === 'q' ? (fs.closeSync(fd), process.exit(0)) : report()));`;

export class Holder {
  private out = '';
  private constructor(readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.on('data', (d: Buffer) => (this.out += d.toString()));
  }

  static async open(file: string): Promise<{ h: Holder; first: string }> {
    const h = new Holder(spawn(process.execPath, ['-e', HOLDER, file]));
    return { h, first: await h.next() };
  }

  private async next(): Promise<string> {
    await waitFor('the holder to report', async () => this.out.includes('\n'), 30_000);
    const i = this.out.indexOf('\n');
    const line = this.out.slice(0, i);
    this.out = this.out.slice(i + 1);
    return line;
  }

  /** Reads the file again through the descriptor it holds. */
  async read(): Promise<string> {
    this.child.stdin.write('r\n');
    return this.next();
  }

  async close(): Promise<void> {
    this.child.stdin.write('q\n');
    await new Promise((r) => this.child.once('exit', r));
  }
}
