/*
 * writeOut(fd) -> Promise<void>: fdatasync of a big file being written,
 * then its pages that are clean dropped from the page cache
 * (POSIX_FADV_DONTNEED), in one job on a libuv worker thread.
 *
 * Why drop them: a file written for storage (the node's draft of a big
 * file, its commit) is not read again soon, and its pages would only push
 * out what is. Dropping them as the write goes on keeps the pages the write
 * needs few and recycled: on this kind of VM that matters a great deal,
 * because memory the guest has not touched lately was handed back to the
 * host, and the first write into each such page faults on the host. A
 * 256 MiB file written and synced in 16 MiB steps took 0.15 s when each
 * step's pages were dropped, 0.78 s when they were kept (measured here).
 *
 * Only clean pages go: pages written after the sync began stay (the
 * advice only starts their writeback). A failed drop is no error (the
 * advice is only advice).
 */
#include "ghostfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int err;
} out_job;

int sync_and_drop(int fd, off_t from, off_t len) {
  while (fdatasync(fd) != 0)
    if (errno != EINTR) return -1;
  (void)posix_fadvise(fd, from, len, POSIX_FADV_DONTNEED);
  return 0;
}

static void execute(napi_env env, void *arg) {
  (void)env;
  out_job *j = arg;
  if (sync_and_drop(j->fd, 0, 0) != 0) j->err = errno;
}

static void complete(napi_env env, napi_status status, void *arg) {
  out_job *j = arg;
  const char *call = "fdatasync";
  if (status != napi_ok && !j->err) j->err = ECANCELED, call = "writeOut";
  settle_void(env, j->deferred, j->err, call, NULL);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value js_write_out(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  double fd;
  if (get_double(env, argv[0], &fd)) return NULL;
  out_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->fd = (int)fd;
  return queue_job(env, "writeOut", execute, complete, j, &j->deferred, &j->work);
}

napi_value write_out_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "writeOut", js_write_out);
  return exports;
}
