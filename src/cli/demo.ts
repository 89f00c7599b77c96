// `ghostfs demo`: a newcomer's first look. Creates a sample workspace, runs
// a node on loopback, and shows what it serves and remembers: indexing,
// listing with attributes, a chunked read, an atomic commit with a conflict
// copy, and a restart that re-hashes nothing. (The FUSE mount joins this
// demo when `ghostfs mount` lands.)
import { Command } from 'commander';
import { mkdtemp, mkdir, writeFile, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DEFAULT_CHUNKING } from '../content/chunker.js';
import { chunkBuffer } from '../content/chunk-file.js';
import { PROFILES } from '../config/profiles.js';
import { NodeAgent, type NodeConfig } from '../node/agent.js';
import { NodeConnection } from '../mesh/connection.js';
import { log } from '../log.js';

const say = (s = ''): boolean => process.stdout.write(s + '\n');

export function demoCommand(): Command {
  return new Command('demo').description('serve a sample workspace on loopback and show ghostfs at work').action(async () => {
    // The demo's own lines tell the story; the log speaks only of trouble unless asked.
    if (!process.env.GHOSTFS_LOG_LEVEL) log.level = 'warn';
    const base = await mkdtemp(join(tmpdir(), 'ghostfs-demo-'));
    const root = join(base, 'workspace');
    try {
      say(`1. A sample workspace in ${root}`);
      await mkdir(join(root, 'src'), { recursive: true });
      await writeFile(join(root, 'README.md'), '# demo project\n');
      await writeFile(join(root, 'src/app.ts'), 'export const answer = 42;\n');
      await writeFile(join(root, 'data.bin'), randomBytes(8 * 1024 * 1024));

      const config: NodeConfig = {
        workspaces: [{ id: 'demo', root }],
        listen: { host: '127.0.0.1', port: 0 },
        stateDir: join(base, 'node-state'),
        nodeId: 'demo-node',
        chunking: DEFAULT_CHUNKING,
        ...PROFILES.ssd,
        tempTtlMs: 600_000,
        reconcileIntervalMs: 300_000,
        watch: true,
      };
      let agent = await NodeAgent.start(config);
      say(`2. A node serves it on 127.0.0.1:${agent.port} (index in RocksDB under ${config.stateDir})`);
      let conn = new NodeConnection(`127.0.0.1:${agent.port}`, 'demo', { clientId: 'demo-client' });

      const list = await conn.listDir('');
      say('3. Listing, with attributes in the same reply:');
      for (const e of list.entries) say(`     ${(e.attr!.mode & 0o777).toString(8)} ${String(e.attr!.size).padStart(9)}  ino ${e.attr!.ino}  ${e.name}`);

      const m = await conn.getManifest('data.bin');
      let bytes = 0;
      for await (const c of conn.readChunks(m.chunks.map((c) => c.hash), 'data.bin')) bytes += c.data.length;
      say(`4. data.bin is ${m.chunks.length} content-defined chunks; read back ${bytes} bytes by hash`);

      const base1 = await conn.getManifest('src/app.ts');
      const edit = Buffer.from('export const answer = 43;\n');
      const em = chunkBuffer(edit, DEFAULT_CHUNKING);
      await conn.putChunks(em.chunks.map((c) => ({ hash: c.hash, data: edit })));
      await conn.commit({ path: 'src/app.ts', baseDigest: base1.digest, digest: em.digest, size: em.size, chunks: em.chunks });
      say(`5. Committed an edit atomically: src/app.ts now reads "${(await readFile(join(root, 'src/app.ts'), 'utf8')).trim()}"`);

      await writeFile(join(root, 'src/app.ts'), 'export const answer = 44; // edited on the node\n');
      const late = Buffer.from('export const answer = 45;\n');
      const lm = chunkBuffer(late, DEFAULT_CHUNKING);
      await conn.putChunks(lm.chunks.map((c) => ({ hash: c.hash, data: late })));
      const r = await conn.commit({ path: 'src/app.ts', baseDigest: em.digest, digest: lm.digest, size: lm.size, chunks: lm.chunks });
      say(`6. A stale writer does not clobber: conflict=${r.conflict}, its version went to ${r.conflictPath}`);

      conn.close();
      await agent.stop();
      agent = await NodeAgent.start(config);
      conn = new NodeConnection(`127.0.0.1:${agent.port}`, 'demo');
      const h = await conn.handshake();
      say(`7. Restarted the node: generation ${h.generation} remembered, nothing re-hashed (see "workspace indexed" in the log with GHOSTFS_LOG_LEVEL=info)`);
      conn.close();
      await agent.stop();
      say('Done. Cleaned up.');
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
}
