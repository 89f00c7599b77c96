// `ghostfs demo` (what `npm run demo` runs) works and says what it did.
import t from 'tap';
import { run } from './helpers/mount-proc.js';
import { BIN } from './helpers/node-proc.js';

t.test('the demo serves, mounts, reads, sees a change and unmounts', async (t) => {
  const r = await run(process.execPath, [BIN, 'demo'], { timeoutMs: 120_000 });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /A node serves it on 127\.0\.0\.1:\d+/);
  t.match(r.stdout, /mounted 127\.0\.0\.1:\d+ \(workspace demo\)/);
  t.match(r.stdout, /src\/app\.ts:1:export const answer = 42;/, 'grep ran on the mount');
  t.match(r.stdout, /sha256 matches the node's copy/);
  t.match(r.stdout, /cache +\d+ chunks, [\d.]+ MiB/, 'status shows the cache figures');
  t.match(r.stdout, /export const answer = 43; \/\/ edited on the node/, 'the change feed delivered the edit');
  t.match(r.stdout, /written through the mount\n/, 'a file written through the mount is on the node');
  t.match(r.stdout, /export const answer = 44; \/\/ edited on the node/, 'sed -i through the mount reached the node');
  t.match(r.stdout, /: unmounted; the mount process exited by itself/);
  t.match(r.stdout, /Done\. Cleaned up\./);
});
