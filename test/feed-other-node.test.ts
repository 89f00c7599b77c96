// A mount whose change feed comes from one node while its commits go to
// another sharing the same disk (after a failover, the feed stays where it
// went). The feed's node learns of those commits from its watcher, and can
// announce a version from before one of them after it: the mount must not
// take that for the current version. Real nodes, real gRPC, the write-back
// and VFS in this process (helpers/write-back-rig.ts); a relay in front of
// the feed's node keeps its events back (helpers/relay-proxy.ts).
import t from 'tap';
import { DEFAULT_CHUNKING } from '../src/content/chunker.js';
import { chunkBuffer } from '../src/content/chunk-file.js';
import { MeshClient } from '../src/mesh/mesh-client.js';
import { ChangeFeed } from '../src/mount/change-feed.js';
import { O_TRUNC } from '../src/mount/vfs.js';
import type { WChangeEventOut } from '../src/wire/types.js';
import { writeBackRig } from './helpers/write-back-rig.js';
import { RelayProxy } from './helpers/relay-proxy.js';
import { waitFor } from './helpers/mount-proc.js';

const digestOf = (s: string): Buffer => chunkBuffer(Buffer.from(s), DEFAULT_CHUNKING).digest;

t.test("an event of another node than the one that took this mount's commit, announcing the version before it, does not bring that version back", async (t) => {
  const { proxy, replica, vfs, wb } = await writeBackRig(t, {}, 5_000, {}, { replica: true });
  const relay = await RelayProxy.start(replica!.endpoint);
  t.teardown(() => relay.stop());
  // The feed from the second node (first in its mesh's order); the commits go to the first (the rig's mesh).
  const feedMesh = new MeshClient([relay.endpoint, proxy.endpoint], 'default', { deadlineMs: 5_000 });
  t.teardown(() => feedMesh.close());
  const feed = new ChangeFeed(vfs.meta, feedMesh, vfs, { busy: (p) => wb.busy(p), underWay: () => wb.underWay(), pending: (p) => wb.pendingFor(p) !== undefined });
  feed.start();
  t.teardown(() => feed.stop());
  await feed.ready;

  const write = async (text: string, create: boolean): Promise<void> => {
    const h = create ? (await vfs.create('', 'f.txt', 0o644)).handle : await vfs.open('f.txt', 1 | O_TRUNC);
    await vfs.write(h.fh, 0, Buffer.from(text));
    await vfs.flush(h.fh);
    await vfs.release(h.fh);
  };
  const about = (digest: Buffer) => (e: WChangeEventOut): boolean => e.path === 'f.txt' && e.kind === 'CHANGED' && Buffer.from(e.entry?.digest ?? []).equals(digest);

  // Version one, through the first node; the feed's node announces it, and the relay keeps that back.
  relay.holdWatch();
  await write('version one', true);
  await waitFor("the feed's node to announce version one", async () => relay.held.some(about(digestOf('version one'))));
  // Version two, through the first node too. Then the old announcement reaches the mount.
  await write('version two', false);
  t.ok(vfs.meta.get('f.txt')?.digest?.equals(digestOf('version two')), 'the mount has version two, from its commit');
  const applied = feed.applied;
  relay.releaseWatch(about(digestOf('version one')));
  await waitFor('the mount to take in the event', async () => feed.applied > applied);
  t.ok(vfs.meta.get('f.txt')?.digest?.equals(digestOf('version two')), 'and still has it after the event announcing version one');
  relay.releaseWatch();
});
