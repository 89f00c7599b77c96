// A mount's write-back and VFS in the test's own process, on a real node
// behind a fault proxy: real gRPC, real RocksDB journal and metadata, a real
// chunk cache on disk; no FUSE (the VFS and the write-back are called
// directly, as the drivers call them).
import type { Test } from 'tap';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Store } from '../../src/store/db.js';
import { MetaStore } from '../../src/cache/meta-store.js';
import { Journal } from '../../src/cache/journal.js';
import { ChunkStore } from '../../src/cache/chunk-store.js';
import { HashPool } from '../../src/content/hash-pool.js';
import { DEFAULT_CHUNKING } from '../../src/content/chunker.js';
import { MeshClient } from '../../src/mesh/mesh-client.js';
import { WriteBack } from '../../src/mount/write-back.js';
import { ChunkReader } from '../../src/mount/chunk-reader.js';
import { Vfs, type VfsOptions } from '../../src/mount/vfs.js';
import { FaultProxy } from '../../scripts/soak/lib/fault-proxy.js';
import { NodeProc, tempDir } from './node-proc.js';

/**
 * A node serving `files` behind a fault proxy, and a mount's write-back and
 * VFS on it (in this process). `replica`: a second node serving the same
 * root (with its own state), the mesh's second endpoint, no proxy.
 * `journal`: what the write-back gets in place of its journal (the same,
 * with a hold on some call: a test that orders a race). `lingerMs`: how
 * long an asynchronous close's record waits before its commit may start.
 * `nodeArgs`: more flags for `ghostfs serve`; `nodeUnder`: a command the
 * node runs under (NodeProc.start). `writer`: the name the mesh gives the
 * node for this mount's changes (MutateRequest.writer).
 */
export async function writeBackRig(t: Test, files: Record<string, Buffer>, deadlineMs: number, vfsOpts: Partial<VfsOptions> = {}, rig: { replica?: boolean; journal?: (j: Journal) => Journal; lingerMs?: number; nodeArgs?: string[]; nodeUnder?: string[]; writer?: string } = {}) {
  const base = await tempDir(t);
  const root = join(base, 'ws');
  const cache = join(base, 'cache');
  await mkdir(root);
  for (const [name, data] of Object.entries(files)) await writeFile(join(root, name), data);
  const node = await NodeProc.start(['--root', root, '--state-dir', join(base, 'state'), ...(rig.nodeArgs ?? [])], {}, { under: rig.nodeUnder });
  t.teardown(() => node.stop('SIGKILL'));
  const proxy = await FaultProxy.start(node.endpoint);
  t.teardown(() => proxy.close());
  const replica = rig.replica ? await NodeProc.start(['--root', root, '--state-dir', join(base, 'state-replica')]) : undefined;
  if (replica) t.teardown(() => replica.stop('SIGKILL'));

  const store = await Store.open(join(cache, 'db'));
  t.teardown(() => store.close());
  const meta = new MetaStore(store, 'default');
  await meta.load();
  const chunks = new ChunkStore(join(cache, 'chunks'), { quotaBytes: Infinity, minFreeBytes: 0 });
  await chunks.init();
  t.teardown(() => chunks.close());
  const hasher = new HashPool(1, DEFAULT_CHUNKING, 4 * 1024 * 1024);
  t.teardown(() => hasher.close());
  const mesh = new MeshClient(replica ? [proxy.endpoint, replica.endpoint] : [proxy.endpoint], 'default', { deadlineMs, backoffMs: 1, writer: rig.writer });
  t.teardown(() => mesh.close());
  await mesh.handshake();
  const journal = new Journal(store, 'default');
  const wb = new WriteBack(meta, mesh, rig.journal?.(journal) ?? journal, chunks, hasher, join(cache, 'dirty'), { clientId: 'test', deadlineMs, lingerMs: rig.lingerMs });
  await wb.init();
  t.teardown(() => wb.stop());
  const vfs = new Vfs(meta, mesh, new ChunkReader(chunks, mesh), wb, { readaheadChunks: 4, wholeFileBytes: 4 << 20, ...vfsOpts });
  /** A write-back started on the same journal and dirty copies (a mount's restart), the first one stopped. */
  const restart = async (): Promise<WriteBack> => {
    await wb.stop();
    const again = new WriteBack(meta, mesh, new Journal(store, 'default'), chunks, hasher, join(cache, 'dirty'), { clientId: 'test', deadlineMs, lingerMs: rig.lingerMs });
    t.teardown(() => again.stop());
    await again.init();
    return again;
  };
  return { base, root, node, proxy, replica, mesh, wb, vfs, store, cache, restart };
}

