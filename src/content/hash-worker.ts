// A hashing thread: chunks and hashes whole files off the main thread, so a
// node indexing a workspace keeps answering requests. The pool bounds how
// many of these run at once. Its I/O is synchronous: blocking this thread is
// its purpose, and it keeps hashing off libuv's small shared pool.
import { parentPort } from 'node:worker_threads';
import { closeSync, constants as C, fstatSync, lstatSync, openSync } from 'node:fs';
import { chunkFd } from './chunk-file.js';
import { attrFromStats, isReg, sameTuple } from './attr.js';
import type { HashJob, HashReply } from './hash-pool.js';

let scratch: Buffer | undefined;

function hashOnce(job: HashJob): HashReply {
  const before = attrFromStats(lstatSync(job.path, { bigint: true }));
  if (!isReg(before.mode)) return { id: job.id, error: { code: 'EINVAL', message: 'not a regular file' } };
  const fd = openSync(job.path, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  try {
    const opened = attrFromStats(fstatSync(fd, { bigint: true }));
    if (!scratch) scratch = Buffer.allocUnsafe(3 * job.params.max);
    const manifest = chunkFd(fd, job.params, job.readSize, scratch);
    const after = attrFromStats(fstatSync(fd, { bigint: true }));
    const stable = sameTuple(before, opened) && sameTuple(opened, after) && manifest.size === after.size;
    return { id: job.id, manifest, attr: after, stable };
  } finally {
    closeSync(fd);
  }
}

parentPort!.on('message', (job: HashJob) => {
  let reply: HashReply | undefined;
  try {
    // A file written while it is hashed is hashed again (a few times at
    // most): an index entry must describe one consistent version.
    for (let attempt = 0; attempt < 3; attempt++) {
      reply = hashOnce(job);
      if (reply.error || reply.stable) break;
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    reply = { id: job.id, error: { code: e.code ?? 'EIO', message: e.message } };
  }
  parentPort!.postMessage(reply);
});
