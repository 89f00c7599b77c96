// A hashing thread: chunks and hashes whole files off the main thread, so a
// node indexing a workspace keeps answering requests. The pool bounds how
// many of these run at once.
import { parentPort } from 'node:worker_threads';
import { open, lstat } from 'node:fs/promises';
import { constants as C } from 'node:fs';
import { chunkHandle } from './chunk-file.js';
import { attrFromStats, sameTuple } from './attr.js';
import type { HashJob, HashReply } from './hash-pool.js';

let scratch: Buffer | undefined;

async function hashOnce(job: HashJob): Promise<HashReply> {
  const before = attrFromStats(await lstat(job.path, { bigint: true }));
  if ((before.mode & 0o170000) !== 0o100000) return { id: job.id, error: { code: 'EINVAL', message: 'not a regular file' } };
  const fh = await open(job.path, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  try {
    const opened = attrFromStats(await fh.stat({ bigint: true }));
    if (!scratch) scratch = Buffer.allocUnsafe(3 * job.params.max);
    const manifest = await chunkHandle(fh, job.params, job.readSize, undefined, scratch);
    const after = attrFromStats(await fh.stat({ bigint: true }));
    const stable = sameTuple(before, opened) && sameTuple(opened, after) && manifest.size === after.size;
    return { id: job.id, manifest, attr: after, stable };
  } finally {
    await fh.close();
  }
}

parentPort!.on('message', (job: HashJob) => {
  void (async () => {
    let reply: HashReply | undefined;
    try {
      // A file written while it is hashed is hashed again (a few times at
      // most): an index entry must describe one consistent version.
      for (let attempt = 0; attempt < 3; attempt++) {
        reply = await hashOnce(job);
        if (reply.error || reply.stable) break;
      }
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      reply = { id: job.id, error: { code: e.code ?? 'EIO', message: e.message } };
    }
    parentPort!.postMessage(reply);
  })();
});
