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
#include <limits.h>
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
 * cacheFromFile: a committed dirty copy's chunks made cache files in one
 * worker job, each an O_TMPFILE file filled by the kernel (copy_file_range:
 * no trip through user space; a reflink where the filesystem shares
 * extents; through a buffer where it cannot: file_copy.c) and linked under
 * its name. Read back and written from JavaScript, a 256 MiB file's chunks
 * cost the mount ~0.25 s of CPU and slowed the write after it by a fifth
 * (measured here).
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *src;
  char **dirs, **names;
  off_t *offsets;
  size_t *lengths;
  uint32_t count;
  uint8_t *made; /* per chunk: 0 not made, 1 made, 2 the name was taken already */
  file_copier copier;
  /* results */
  int err;
  const char *call;
  const char *at;
} from_job;

static void from_execute(napi_env env, void *arg) {
  (void)env;
  from_job *j = arg;
  int src = open(j->src, O_RDONLY | O_CLOEXEC);
  if (src < 0) {
    j->err = errno, j->call = "open", j->at = j->src;
    return;
  }
  char proc[64], target[PATH_MAX];
  for (uint32_t i = 0; i < j->count && !j->err; i++) {
    j->at = j->names[i];
    int fd = open(j->dirs[i], O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
      j->err = errno, j->call = "open O_TMPFILE";
      break;
    }
    int r = copy_part(&j->copier, src, j->offsets[i], fd, 0, j->lengths[i], &j->call);
    /* A source shorter than a chunk (changed since it was hashed) only loses that chunk. */
    if (r < 0) j->err = errno;
    else if (r == 0) {
      snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
      if (snprintf(target, sizeof target, "%s/%s", j->dirs[i], j->names[i]) >= (int)sizeof target) j->err = ENAMETOOLONG, j->call = "linkat";
      else if (linkat(AT_FDCWD, proc, AT_FDCWD, target, AT_SYMLINK_FOLLOW) == 0) j->made[i] = 1;
      else if (errno == EEXIST) j->made[i] = 2;
      else j->err = errno, j->call = "linkat";
    }
    close(fd);
  }
  close(src);
}

static void free_from_job(from_job *j) {
  for (uint32_t i = 0; i < j->count; i++) {
    if (j->dirs) free(j->dirs[i]);
    if (j->names) free(j->names[i]);
  }
  free(j->dirs), free(j->names), free(j->offsets), free(j->lengths), free(j->made), free(j->src);
  copier_free(&j->copier);
  free(j);
}

static void from_complete(napi_env env, napi_status status, void *arg) {
  from_job *j = arg;
  if (status != napi_ok && !j->err) j->err = ECANCELED, j->call = "cacheFromFile";
  napi_value out, made, ab, err;
  void *bytes;
  napi_create_object(env, &out);
  if (napi_create_arraybuffer(env, j->count, &bytes, &ab) == napi_ok && napi_create_typedarray(env, napi_uint8_array, j->count, ab, 0, &made) == napi_ok) {
    if (j->count) memcpy(bytes, j->made, j->count);
    napi_set_named_property(env, out, "made", made);
  }
  if (j->err) {
    err = errno_error(env, j->err, j->call, j->at);
    napi_set_named_property(env, out, "error", err);
  }
  napi_resolve_deferred(env, j->deferred, out);
  napi_delete_async_work(env, j->work);
  free_from_job(j);
}

/*
 * cacheFromFile(src, dirs, names, offsets, lengths) -> Promise<{ made:
 * Uint8Array, error?: Error }>: for each i, the `lengths[i]` bytes of the
 * file `src` at `offsets[i]` become the file `dirs[i]/names[i]`. `made[i]`
 * is 1 when that file was made, 2 when the name was taken already (left as
 * it is: the cache is content-addressed), 0 when a failure (`error`, with
 * Node's errno `code`) stopped the job before it.
 */
static napi_value js_cache_from_file(napi_env env, napi_callback_info info) {
  GET_ARGS(5);
  uint32_t count = 0, c2 = 0, c3 = 0, c4 = 0;
  if (napi_get_array_length(env, argv[1], &count) != napi_ok || napi_get_array_length(env, argv[2], &c2) != napi_ok || napi_get_array_length(env, argv[3], &c3) != napi_ok ||
      napi_get_array_length(env, argv[4], &c4) != napi_ok || c2 != count || c3 != count || c4 != count) {
    napi_throw_type_error(env, "EINVAL", "cacheFromFile: dirs, names, offsets and lengths must be arrays of one length");
    return NULL;
  }
  from_job *j = calloc(1, sizeof *j);
  if (!j || !(j->dirs = calloc(count + 1, sizeof *j->dirs)) || !(j->names = calloc(count + 1, sizeof *j->names)) || !(j->offsets = calloc(count + 1, sizeof *j->offsets)) ||
      !(j->lengths = calloc(count + 1, sizeof *j->lengths)) || !(j->made = calloc(count + 1, 1))) {
    if (j) free_from_job(j);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->count = count;
  if (!(j->src = get_string(env, argv[0]))) goto bad;
  for (uint32_t i = 0; i < count; i++) {
    double off, len;
    if (element_string(env, argv[1], i, &j->dirs[i]) || element_string(env, argv[2], i, &j->names[i]) || element_double(env, argv[3], i, &off) || element_double(env, argv[4], i, &len)) goto bad;
    if (!one_component(j->names[i])) {
      napi_throw_type_error(env, "EINVAL", "cacheFromFile: each name must be one path component");
      goto bad;
    }
    if (!whole_offset(off) || !whole_offset(len)) {
      napi_throw_range_error(env, "EINVAL", "cacheFromFile: offsets and lengths must be whole numbers, not negative");
      goto bad;
    }
    j->offsets[i] = (off_t)off, j->lengths[i] = (size_t)len;
  }
  return queue_job(env, "ghostfs.cacheFromFile", from_execute, from_complete, j, &j->deferred, &j->work);
bad:
  free_from_job(j);
  return NULL;
}

napi_value cache_write_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "writeCacheFile", js_write_cache_file);
  export_fn(env, exports, "cacheFromFile", js_cache_from_file);
  return exports;
}
