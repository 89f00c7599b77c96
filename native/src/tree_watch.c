/*
 * Inotify for the node's watcher (src/node/watcher.ts), read by a thread of
 * its own that hands JS the events of a whole delay at once.
 *
 * Why not fs.watch: libuv reads inotify on the JS thread, so every event
 * wakes it, and each commit the node makes itself gives two to six events
 * (the new file's writes and attributes, its name, a staged file's rename).
 * With fs.watch the node switched tasks about 4.5 times more per small file
 * a mount wrote, which on this kind of VM costs a hypervisor call each. Here
 * the thread wakes on the first event of a burst, waits out the delay,
 * reads all that came and wakes JS once.
 *
 * JS can also take what is waiting at once (treeWatchDrain): a stat or a
 * listing asked within the delay first looks at what the watcher noticed.
 *
 *   treeWatchOpen(onEvents(buf), delayMs) -> handle
 *   treeWatchAdd(handle, dir) -> wd            (throws an errno error)
 *   treeWatchRemove(handle, wd)
 *   treeWatchDrain(handle) -> Buffer | undefined
 *   treeWatchClose(handle)
 *
 * A batch is the raw struct inotify_event records, in the order read.
 */
#include "ghostfs.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

/* What a directory's watch reports: what fs.watch asks for, without
 * following a symlink, and nothing more of a file once it is unlinked (one
 * still open and written to would report every write). */
#define WATCH_MASK                                                                               \
  (IN_ATTRIB | IN_CREATE | IN_MODIFY | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_MOVED_FROM | \
   IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
/* Room read at a time; an event is at most 16 + NAME_MAX + 1 bytes. */
#define READ_ROOM 65536
/* Events kept for a JS thread that does not take them; beyond, the kernel's
 * queue overflows and says so (IN_Q_OVERFLOW), and the watcher walks the tree. */
#define HELD_MAX (64u << 20)

typedef struct {
  int fd;      /* inotify, non-blocking */
  int stop_fd; /* eventfd: the thread ends */
  int delay_ms;
  int closed;
  pthread_t thread;
  napi_threadsafe_function tsfn;
  pthread_mutex_t lock; /* buf, len, cap, told; reads of fd */
  char *buf;
  size_t len, cap;
  int told; /* JS was asked to take the batch and has not yet */
} tree_watch;

/* Reads what the kernel queued into buf. Called with the lock held. */
static void read_queue(tree_watch *w) {
  while (w->len < HELD_MAX) {
    if (w->cap - w->len < READ_ROOM) {
      size_t cap = w->len + READ_ROOM;
      char *b = realloc(w->buf, cap);
      if (!b) return;
      w->buf = b;
      w->cap = cap;
    }
    ssize_t n = read(w->fd, w->buf + w->len, w->cap - w->len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return; /* EAGAIN: nothing more */
    w->len += (size_t)n;
  }
}

/* The events waiting, as a Buffer (undefined if none). Called with the lock held. */
static napi_value take(napi_env env, tree_watch *w) {
  napi_value out;
  if (w->len == 0) {
    napi_get_undefined(env, &out);
    return out;
  }
  void *data;
  if (napi_create_buffer_copy(env, w->len, w->buf, &data, &out) != napi_ok) return NULL;
  w->len = 0;
  /* A burst's room is not kept for the quiet that follows. */
  if (w->cap > 4 * READ_ROOM) {
    free(w->buf);
    w->buf = NULL;
    w->cap = 0;
  }
  return out;
}

static void *watch_main(void *arg) {
  tree_watch *w = arg;
  gfs_block_signals();
  struct pollfd p[2] = {{.fd = w->fd, .events = POLLIN}, {.fd = w->stop_fd, .events = POLLIN}};
  for (;;) {
    p[0].revents = p[1].revents = 0;
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) break;
    /* The rest of the burst comes meanwhile (an end asked for cuts it short). */
    if (poll(&p[1], 1, w->delay_ms) > 0) break;
    pthread_mutex_lock(&w->lock);
    read_queue(w);
    int tell = w->len > 0 && !w->told;
    if (tell) w->told = 1;
    pthread_mutex_unlock(&w->lock);
    if (tell && napi_call_threadsafe_function(w->tsfn, NULL, napi_tsfn_nonblocking) != napi_ok) break;
  }
  return NULL;
}

/* On the JS thread: the batch the thread announced (and whatever came since). */
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)data;
  tree_watch *w = context;
  if (!env || w->closed) return;
  pthread_mutex_lock(&w->lock);
  w->told = 0;
  napi_value batch = take(env, w);
  pthread_mutex_unlock(&w->lock);
  napi_valuetype type;
  if (!batch || napi_typeof(env, batch, &type) != napi_ok || type == napi_undefined) return;
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, js_cb, 1, &batch, NULL);
}

/* Once the hand-off is gone (after close): nothing uses the watch any more. */
static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  tree_watch *w = data;
  pthread_mutex_destroy(&w->lock);
  free(w->buf);
  free(w);
}

static tree_watch *get_watch(napi_env env, napi_value v) {
  tree_watch *w = NULL;
  if (napi_get_value_external(env, v, (void **)&w) != napi_ok || !w) {
    napi_throw_type_error(env, NULL, "expected a tree watch handle");
    return NULL;
  }
  if (w->closed) {
    napi_throw_error(env, "EBADF", "the tree watch is closed");
    return NULL;
  }
  return w;
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  double delay;
  if (get_double(env, argv[1], &delay)) return NULL;
  tree_watch *w = calloc(1, sizeof *w);
  if (!w) {
    throw_errno(env, ENOMEM, "treeWatchOpen", NULL);
    return NULL;
  }
  w->delay_ms = delay < 0 ? 0 : delay > 60000 ? 60000 : (int)delay;
  w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  w->stop_fd = w->fd < 0 ? -1 : eventfd(0, EFD_CLOEXEC);
  if (w->fd < 0 || w->stop_fd < 0) {
    int err = errno;
    const char *call = w->fd < 0 ? "inotify_init1" : "eventfd";
    if (w->fd >= 0) close(w->fd);
    free(w);
    throw_errno(env, err, call, NULL);
    return NULL;
  }
  pthread_mutex_init(&w->lock, NULL);
  napi_value name;
  napi_create_string_utf8(env, "ghostfs-tree-watch", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, w, finalize, w, call_js, &w->tsfn) != napi_ok) {
    close(w->fd);
    close(w->stop_fd);
    pthread_mutex_destroy(&w->lock);
    free(w);
    napi_throw_error(env, NULL, "cannot create the tree watch's hand-off");
    return NULL;
  }
  /* Like fs.watch({ persistent: false }): the watch keeps no process alive. */
  napi_unref_threadsafe_function(env, w->tsfn);
  int err = pthread_create(&w->thread, NULL, watch_main, w);
  if (err) {
    close(w->fd);
    close(w->stop_fd);
    w->closed = 1;
    napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort); /* frees w */
    throw_errno(env, err, "pthread_create", NULL);
    return NULL;
  }
  napi_value handle;
  napi_create_external(env, w, NULL, NULL, &handle);
  return handle;
}

static napi_value js_add(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  tree_watch *w = get_watch(env, argv[0]);
  if (!w) return NULL;
  char *dir = get_string(env, argv[1]);
  if (!dir) return NULL;
  int wd = inotify_add_watch(w->fd, dir, WATCH_MASK);
  if (wd < 0) {
    throw_errno(env, errno, "inotify_add_watch", dir);
    free(dir);
    return NULL;
  }
  free(dir);
  napi_value out;
  napi_create_int32(env, wd, &out);
  return out;
}

static napi_value js_remove(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  tree_watch *w = get_watch(env, argv[0]);
  double wd;
  if (!w || get_double(env, argv[1], &wd)) return NULL;
  /* EINVAL: the kernel removed it already (its directory is gone). */
  (void)inotify_rm_watch(w->fd, (int)wd);
  return NULL;
}

static napi_value js_drain(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  tree_watch *w = get_watch(env, argv[0]);
  if (!w) return NULL;
  pthread_mutex_lock(&w->lock);
  read_queue(w);
  napi_value out = take(env, w);
  pthread_mutex_unlock(&w->lock);
  return out;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  tree_watch *w = get_watch(env, argv[0]);
  if (!w) return NULL;
  uint64_t one = 1;
  while (write(w->stop_fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
  pthread_join(w->thread, NULL);
  w->closed = 1;
  close(w->fd);
  close(w->stop_fd);
  napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort); /* finalize frees w */
  return NULL;
}

napi_value tree_watch_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "treeWatchOpen", js_open);
  export_fn(env, exports, "treeWatchAdd", js_add);
  export_fn(env, exports, "treeWatchRemove", js_remove);
  export_fn(env, exports, "treeWatchDrain", js_drain);
  export_fn(env, exports, "treeWatchClose", js_close);
  return exports;
}
