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
/**
 * Opens a file to hash without moving its access time: the node reading for
 * its index is not an access anyone made. O_NOATIME is allowed only to the
 * file's owner (or with CAP_FOWNER); other files are opened plainly.
 */
function openQuietly(path: string): number {
  const flags = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;
  try {
    return openSync(path, flags | C.O_NOATIME);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    return openSync(path, flags);
  }
}

function hashOnce(job: HashJob): HashReply {
  const before = attrFromStats(lstatSync(job.path, { bigint: true }));
  if (!isReg(before.mode)) return { id: job.id, error: { code: 'EINVAL', message: 'not a regular file' } };
  const fd = openQuietly(job.path);
  try {
    const opened = attrFromStats(fstatSync(fd, { bigint: true }));
    if (!scratch) scratch = Buffer.allocUnsafe(3 * job.params.max);
    const manifest = chunkFd(fd, job.params, job.readSize, scratch);
    const after = attrFromStats(fstatSync(fd, { bigint: true }));
    const stable = sameTuple(before, opened) && sameTuple(opened, after) && manifest.size === after.size;
    // Written while it was read: the tuple recorded must not match the disk,
    // or no later look would hash it again. The file that was opened, with
    // the size that was hashed, is what the digest describes.
    return { id: job.id, manifest, attr: stable ? after : { ...opened, size: manifest.size }, stable };
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
