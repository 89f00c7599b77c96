/*
 * copyChunks: a commit's staged chunks copied into the file it assembles,
 * in one job on a libuv worker thread. From JavaScript each chunk was read
 * into a buffer and written out again (open, stat, read, close, write: five
 * thread-pool round trips per chunk, and the bytes through user space
 * twice); here the kernel copies them (copy_file_range: within the page
 * cache, no user-space buffer), one chunk file after the other.
 *
 * While it copies, every EARLY_WRITEBACK bytes the stretch just copied is
 * handed to the disk (sync_file_range, SYNC_FILE_RANGE_WRITE: writeback
 * starts, nothing waits for it), so the commit's closing fsync finds most
 * of the file written already. The stretch before it, written by then, is
 * made durable and its pages dropped from the page cache, as write_out.c does
 * for the other ways a big file is assembled (and for the same reasons).
 *
 * Where the kernel cannot copy between the two files (the node's state dir
 * on another filesystem than the workspace: EXDEV; or a filesystem without
 * the call), the bytes go through a buffer instead, still in this job.
 *
 * A chunk file of another size than its chunk fails the job with EIO; any
 * failure rejects with an Error carrying Node's errno `code` and the chunk
 * file's path. The destination then holds part of the file: the caller
 * discards it.
 */
#include "ghostfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EARLY_WRITEBACK ((off_t)32 << 20)

typedef struct {
  char *path;
  off_t offset; /* in the destination */
  size_t length;
} chunk_part;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int dst;
  chunk_part *parts;
  uint32_t count;
  file_copier copier;
  /* results */
  int err;
  const char *call;
  const char *at; /* the chunk file the error concerns */
} copy_job;

static int copy_one(copy_job *j, const chunk_part *p) {
  int src = open(p->path, O_RDONLY | O_CLOEXEC);
  if (src < 0) {
    j->err = errno, j->call = "open", j->at = p->path;
    return -1;
  }
  struct stat st;
  if (fstat(src, &st) != 0) {
    j->err = errno, j->call = "fstat", j->at = p->path;
    close(src);
    return -1;
  }
  if (st.st_size != (off_t)p->length) {
    j->err = EIO, j->call = "open (the chunk file has another size than its chunk)", j->at = p->path;
    close(src);
    return -1;
  }
  int r = copy_part(&j->copier, src, 0, j->dst, p->offset, p->length, &j->call);
  if (r != 0) {
    j->err = r == COPY_SHORT ? EIO : errno, j->at = p->path;
    if (r == COPY_SHORT) j->call = "read (the chunk file is short)";
  }
  close(src);
  return r == 0 ? 0 : -1;
}

/*
 * Makes [from, to) durable and drops its pages. fdatasync, not a waiting
 * sync_file_range: on overlayfs that one touches the overlay's own inode,
 * which holds no pages, and leaves the real file's dirty (nothing would be
 * dropped). A failure fails the job: the wait consumes the file's writeback
 * error, so the closing fsync on this descriptor would not report it again.
 */
static int written_out(copy_job *j, off_t from, off_t to) {
  if (sync_and_drop(j->dst, from, to - from) == 0) return 0;
  j->err = errno, j->call = "fdatasync", j->at = NULL;
  return -1;
}

static void execute(napi_env env, void *arg) {
  (void)env;
  copy_job *j = arg;
  off_t unsynced_from = -1, unsynced_to = 0;
  off_t started_from = -1, started_to = 0; /* the stretch whose writeback was started last */
  for (uint32_t i = 0; i < j->count; i++) {
    const chunk_part *p = &j->parts[i];
    if (copy_one(j, p) != 0) return;
    /* Chunks come in file order: the stretch copied since the last hand-off grows at its end. */
    off_t end = p->offset + (off_t)p->length;
    if (unsynced_from < 0 || p->offset < unsynced_from) unsynced_from = p->offset;
    if (end > unsynced_to) unsynced_to = end;
    if (unsynced_to - unsynced_from >= EARLY_WRITEBACK) {
      if (started_from >= 0 && written_out(j, started_from, started_to) != 0) return;
      /* Only a head start: its failure is the next wait's, or the closing fsync's, to report. */
      (void)sync_file_range(j->dst, unsynced_from, unsynced_to - unsynced_from, SYNC_FILE_RANGE_WRITE);
      started_from = unsynced_from, started_to = unsynced_to;
      unsynced_from = -1, unsynced_to = 0;
    }
  }
}

static void free_job(copy_job *j) {
  copier_free(&j->copier);
  if (j->parts)
    for (uint32_t i = 0; i < j->count; i++) free(j->parts[i].path);
  free(j->parts);
  free(j);
}

static void complete(napi_env env, napi_status status, void *arg) {
  copy_job *j = arg;
  if (status != napi_ok && !j->err) {
    j->err = ECANCELED;
    j->call = "copyChunks";
  }
  settle_void(env, j->deferred, j->err, j->call, j->at);
  napi_delete_async_work(env, j->work);
  free_job(j);
}

/*
 * copyChunks(dstFd, paths, offsets, lengths) -> Promise<void>: the whole
 * of each file paths[i] (lengths[i] bytes) into dstFd at offsets[i].
 */
static napi_value js_copy_chunks(napi_env env, napi_callback_info info) {
  GET_ARGS(4);
  double fd;
  uint32_t n = 0, n2 = 0, n3 = 0;
  if (get_double(env, argv[0], &fd) != 0) return NULL;
  if (!(fd >= 0 && fd <= 2147483647 && fd == (double)(int)fd)) {
    napi_throw_range_error(env, "EINVAL", "copyChunks: the destination must be a file descriptor");
    return NULL;
  }
  if (napi_get_array_length(env, argv[1], &n) != napi_ok || napi_get_array_length(env, argv[2], &n2) != napi_ok || napi_get_array_length(env, argv[3], &n3) != napi_ok || n != n2 || n != n3) {
    napi_throw_type_error(env, "EINVAL", "copyChunks: paths, offsets and lengths must be arrays of one length");
    return NULL;
  }
  copy_job *j = calloc(1, sizeof *j);
  if (!j || !(j->parts = calloc(n ? n : 1, sizeof *j->parts))) {
    free(j);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->dst = (int)fd;
  j->count = n;
  for (uint32_t i = 0; i < n; i++) {
    double off, len;
    if (element_string(env, argv[1], i, &j->parts[i].path) || element_double(env, argv[2], i, &off) || element_double(env, argv[3], i, &len)) goto bad;
    if (!whole_offset(off) || !whole_offset(len)) {
      napi_throw_range_error(env, "EINVAL", "copyChunks: offsets and lengths must be whole numbers, not negative");
      goto bad;
    }
    j->parts[i].offset = (off_t)off;
    j->parts[i].length = (size_t)len;
  }
  return queue_job(env, "ghostfs.copyChunks", execute, complete, j, &j->deferred, &j->work);
bad:
  free_job(j);
  return NULL;
}

napi_value chunk_copy_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "copyChunks", js_copy_chunks);
  return exports;
}
