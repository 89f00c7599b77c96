// Runs a real `ghostfs serve` as a child process and reads its JSON log.
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeConnection, type ConnectionOptions } from '../../src/mesh/connection.js';
import { BIN, LoggedProc } from './logged-proc.js';

export { BIN, type LogLine } from './logged-proc.js';

export class NodeProc extends LoggedProc {
  port = 0;

  /**
   * `how.as`: the user and group the node runs as (the test's own unless
   * given; another needs root). `how.under`: a command the node runs under
   * (e.g. `unshare -r`).
   */
  static async start(args: string[], env: Record<string, string> = {}, how: { as?: { uid: number; gid: number }; under?: string[] } = {}): Promise<NodeProc> {
    const cmd = [...(how.under ?? []), process.execPath, BIN, 'serve', '--listen', '127.0.0.1:0', ...args];
    const child = spawn(cmd[0]!, cmd.slice(1), {
      env: { ...process.env, GHOSTFS_LOG_PRETTY: '0', GHOSTFS_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...how.as,
    });
    const p = new NodeProc(child);
    const serving = await p.ready('node serving', 'node');
    p.port = Number(String(serving.listen).split(':').pop());
    return p;
  }

  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  connect(workspace = 'default', opts: ConnectionOptions = {}): NodeConnection {
    return new NodeConnection(this.endpoint, workspace, opts);
  }

  /**
   * The files this node holds open under `root` that have no name (O_TMPFILE)
   * or a temp name: its drafts (src/node/drafts.ts) and commits under way.
   */
  async openUnnamed(root: string): Promise<{ size: number; ino: number }[]> {
    const dir = `/proc/${this.child.pid}/fd`;
    const out: { size: number; ino: number }[] = [];
    for (const fd of await readdir(dir).catch(() => [] as string[])) {
      const l = await readlink(join(dir, fd)).catch(() => '');
      if (!l.startsWith(root + '/') || !(l.endsWith(' (deleted)') || l.includes('/.ghostfs-tmp-'))) continue;
      const st = await stat(join(dir, fd)).catch(() => undefined);
      if (st) out.push({ size: st.size, ino: st.ino });
    }
    return out;
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
