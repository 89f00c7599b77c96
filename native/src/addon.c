/* Module registration and the small N-API helpers the other files share. */
#include "ghostfs.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void gfs_block_signals(void) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
}

void stat_max(uint64_t *slot, uint64_t v) {
  uint64_t cur = __atomic_load_n(slot, __ATOMIC_RELAXED);
  while (v > cur && !__atomic_compare_exchange_n(slot, &cur, v, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

int size_bucket(uint64_t n) {
  if (n <= 4096) return 0;
  if (n <= 32768) return 1;
  if (n <= 131072) return 2;
  if (n <= 262144) return 3;
  if (n <= 524288) return 4;
  return 5;
}

gfs *get_gfs(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "expected a mount handle");
    return NULL;
  }
  return (gfs *)p;
}

/* An Error whose `code` is the errno name, as Node's own fs errors have. */
napi_value errno_error(napi_env env, int err, const char *call, const char *path) {
  char msg[1024];
  const char *name = strerrorname_np(err);
  if (path)
    snprintf(msg, sizeof msg, "%s: %s, %s '%s'", name ? name : "EIO", strerror(err), call, path);
  else
    snprintf(msg, sizeof msg, "%s: %s, %s", name ? name : "EIO", strerror(err), call);
  napi_value m, e, code, no;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_string_utf8(env, name ? name : "EIO", NAPI_AUTO_LENGTH, &code);
  napi_set_named_property(env, e, "code", code);
  napi_create_int32(env, -err, &no);
  napi_set_named_property(env, e, "errno", no);
  return e;
}

int throw_errno(napi_env env, int err, const char *call, const char *path) {
  napi_throw(env, errno_error(env, err, call, path));
  return -1;
}

int get_double(napi_env env, napi_value v, double *out) {
  if (napi_get_value_double(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a number");
    return -1;
  }
  return 0;
}

int get_u64(napi_env env, napi_value v, uint64_t *out) {
  double d;
  if (get_double(env, v, &d)) return -1;
  *out = (uint64_t)d;
  return 0;
}

int get_timespec(napi_env env, napi_value sec, napi_value nsec, struct timespec *ts) {
  napi_valuetype t;
  napi_typeof(env, sec, &t);
  if (t == napi_null || t == napi_undefined) {
    ts->tv_sec = 0;
    ts->tv_nsec = UTIME_OMIT;
    return 0;
  }
  if (t == napi_string) { /* "now" */
    ts->tv_sec = 0;
    ts->tv_nsec = UTIME_NOW;
    return 0;
  }
  double s, ns;
  if (get_double(env, sec, &s) || get_double(env, nsec, &ns)) return -1;
  ts->tv_sec = (time_t)s;
  ts->tv_nsec = (long)ns;
  return 0;
}

char *get_string(napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a string");
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    napi_throw_type_error(env, "EINVAL", "a path must not contain NUL bytes");
    return NULL;
  }
  return s;
}

bool one_component(const char *name) {
  return name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

int element_string(napi_env env, napi_value v, uint32_t i, char **out) {
  napi_value e;
  if (napi_get_element(env, v, i, &e) != napi_ok || !(*out = get_string(env, e))) return -1;
  return 0;
}

int element_double(napi_env env, napi_value v, uint32_t i, double *out) {
  napi_value e;
  if (napi_get_element(env, v, i, &e) != napi_ok) return -1;
  return get_double(env, e, out);
}

bool whole_offset(double v) { return v >= 0 && v <= 9007199254740991.0 && v == (double)(int64_t)v; }

void settle_void(napi_env env, napi_deferred deferred, int err, const char *call, const char *path) {
  if (err) {
    napi_reject_deferred(env, deferred, errno_error(env, err, call, path));
    return;
  }
  napi_value u;
  napi_get_undefined(env, &u);
  napi_resolve_deferred(env, deferred, u);
}

napi_value queue_job(napi_env env, const char *name, napi_async_execute_callback execute, napi_async_complete_callback complete, void *job, napi_deferred *deferred, napi_async_work *work) {
  napi_value promise, resource;
  napi_create_promise(env, deferred, &promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource);
  napi_create_async_work(env, NULL, resource, execute, complete, job, work);
  napi_queue_async_work(env, *work);
  return promise;
}

void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

static napi_value init(napi_env env, napi_value exports) {
  driver_exports(env, exports);
  fast_exports(env, exports);
  dwrite_exports(env, exports);
  notify_exports(env, exports);
  sys_exports(env, exports);
  gear_exports(env, exports);
  atomic_write_exports(env, exports);
  send_range_exports(env, exports);
  cache_write_exports(env, exports);
  chunk_copy_exports(env, exports);
  write_out_exports(env, exports);
  passthrough_exports(env, exports);
  tree_watch_exports(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
