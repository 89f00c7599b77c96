/*
 * writeCacheFile: one file of the mount's chunk cache, written in one job
 * on a libuv worker thread. From JavaScript it took four thread-pool round
 * trips (open, write, close, rename); each wakes a worker from the JS
 * thread, which on this 2-core VM showed as ~0.5 s of the JS thread's time
 * per GiB read cold. Here:
 *
 *   an O_TMPFILE file in the directory (no name while incomplete), written
 *   whole, then linked under its name. A name already taken is left as it
 *   is (the cache is content-addressed: it holds the same bytes), and the
 *   promise resolves false.
 *
 * Not fsynced, as the JavaScript path was not: the cache is a cache. Any
 * failure rejects with an Error carrying Node's errno `code` (ENOSPC for a
 * full disk, EOPNOTSUPP or EISDIR where the filesystem has no O_TMPFILE);
 * nothing is left behind.
 */
#include "ghostfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref data_ref; /* keeps the bytes alive while the worker reads them */
  char *dir, *name;
  const char *data;
  size_t len;
  /* results */
  int err;
  const char *call;
  bool created;
} cache_job;

static void execute(napi_env env, void *arg) {
  (void)env;
  cache_job *j = arg;
  char proc[64], *target = NULL;
  int fd = open(j->dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    j->err = errno, j->call = "open O_TMPFILE";
    return;
  }
  for (size_t done = 0; done < j->len;) {
    ssize_t n = pwrite(fd, j->data + done, j->len - done, (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      j->err = n < 0 ? errno : EIO, j->call = "pwrite";
      goto out;
    }
    done += (size_t)n;
  }
  if (asprintf(&target, "%s/%s", j->dir, j->name) < 0) {
    target = NULL;
    j->err = ENOMEM, j->call = "asprintf";
    goto out;
  }
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  /* /proc's link works without CAP_DAC_READ_SEARCH, unlike AT_EMPTY_PATH. */
  if (linkat(AT_FDCWD, proc, AT_FDCWD, target, AT_SYMLINK_FOLLOW) == 0) j->created = true;
  else if (errno != EEXIST) j->err = errno, j->call = "linkat";
out:
  free(target);
  close(fd);
}

static void complete(napi_env env, napi_status status, void *arg) {
  cache_job *j = arg;
  if (status != napi_ok && !j->err) {
    j->err = ECANCELED;
    j->call = "writeCacheFile";
  }
  if (j->err) {
    napi_reject_deferred(env, j->deferred, errno_error(env, j->err, j->call, j->name));
  } else {
    napi_value b;
    napi_get_boolean(env, j->created, &b);
    napi_resolve_deferred(env, j->deferred, b);
  }
  napi_delete_reference(env, j->data_ref);
  napi_delete_async_work(env, j->work);
  free(j->dir), free(j->name);
  free(j);
}

/*
 * Fills `j` from the arguments (dir, name, data) of `fn`; on a bad one it
 * throws, frees what it took and returns -1. The bytes stay the caller's
 * Buffer's: the caller keeps it alive while the job reads them.
 */
static int job_args(napi_env env, napi_value *argv, cache_job *j, const char *fn) {
  void *data;
  char msg[96];
  if (!(j->dir = get_string(env, argv[0])) || !(j->name = get_string(env, argv[1]))) goto bad;
  if (!one_component(j->name)) {
    snprintf(msg, sizeof msg, "%s: the name must be one path component", fn);
    napi_throw_type_error(env, "EINVAL", msg);
    goto bad;
  }
  if (napi_get_buffer_info(env, argv[2], &data, &j->len) != napi_ok) {
    snprintf(msg, sizeof msg, "%s: data must be a Buffer", fn);
    napi_throw_type_error(env, NULL, msg);
    goto bad;
  }
  j->data = data;
  return 0;
bad:
  free(j->dir), free(j->name);
  j->dir = j->name = NULL;
  return -1;
}

/*
 * writeCacheFile(dir, name, data) -> Promise<boolean>: true when the file
 * was made, false when the name was taken already.
 */
static napi_value js_write_cache_file(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  cache_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  if (job_args(env, argv, j, "writeCacheFile")) {
    free(j);
    return NULL;
  }
  napi_create_reference(env, argv[2], 1, &j->data_ref);
  return queue_job(env, "ghostfs.writeCacheFile", execute, complete, j, &j->deferred, &j->work);
}

/*
 * writeCacheFileSync(dir, name, data) -> boolean: the same, in the calling
 * thread. For small chunks: four system calls cost less than handing a job
 * to a worker thread and hearing back (~80 us of the JS thread here).
 */
static napi_value js_write_cache_file_sync(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  cache_job j = {0};
  if (job_args(env, argv, &j, "writeCacheFileSync")) return NULL;
  napi_value out = NULL;
  execute(env, &j);
  if (j.err) throw_errno(env, j.err, j.call, j.name);
  else napi_get_boolean(env, j.created, &out);
  free(j.dir), free(j.name);
  return out;
}

napi_value cache_write_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "writeCacheFile", js_write_cache_file);
  export_fn(env, exports, "writeCacheFileSync", js_write_cache_file_sync);
  return exports;
}
