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
  int closed;  /* the thread is stopped and the fds closed (JS thread only) */
  int refs;    /* the JS handle and the hand-off: the last to go frees this (JS thread only) */
  pthread_t thread;
  napi_threadsafe_function tsfn;
  pthread_mutex_t lock; /* buf, len, cap, told; reading events out of fd */
  char *buf;
  size_t len, cap;
  int told; /* JS was asked to take the batch and has not yet */
} tree_watch;

/* Reads what the kernel queued into buf. Called with the lock held. 0, or
 * -1 when it stopped with events left (no room: JS is not taking them). */
static int read_queue(tree_watch *w) {
  for (;;) {
    if (w->len >= HELD_MAX) return -1;
    if (w->cap - w->len < READ_ROOM) {
      size_t cap = w->cap * 2 > w->len + READ_ROOM ? w->cap * 2 : w->len + READ_ROOM;
      if (cap > HELD_MAX + READ_ROOM) cap = HELD_MAX + READ_ROOM;
      char *b = realloc(w->buf, cap);
      if (!b) return -1;
      w->buf = b;
      w->cap = cap;
    }
    ssize_t n = read(w->fd, w->buf + w->len, w->cap - w->len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0; /* EAGAIN: nothing more */
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
    int full = read_queue(w);
    int tell = w->len > 0 && !w->told;
    if (tell) w->told = 1;
    pthread_mutex_unlock(&w->lock);
    if (tell && napi_call_threadsafe_function(w->tsfn, NULL, napi_tsfn_nonblocking) != napi_ok) break;
    /* Events left in the kernel's queue keep fd readable: not a reason to spin until JS takes the batch. */
    if (full && poll(&p[1], 1, 100) > 0) break;
  }
  return NULL;
}

/* Stops the thread and closes the fds (JS thread; once). */
static void stop_watch(tree_watch *w) {
  if (w->closed) return;
  w->closed = 1;
  uint64_t one = 1;
  while (write(w->stop_fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
  pthread_join(w->thread, NULL);
  close(w->fd);
  close(w->stop_fd);
}

static void unref_watch(tree_watch *w) {
  if (--w->refs > 0) return;
  pthread_mutex_destroy(&w->lock);
  free(w->buf);
  free(w);
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

/* The hand-off is gone: after close, or at the process's exit without one
 * (the thread must not outlive what it reads into). */
static void finalize_tsfn(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  tree_watch *w = data;
  stop_watch(w);
  unref_watch(w);
}

/* The JS handle was collected. */
static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  unref_watch(data);
}

static const napi_type_tag WATCH_TAG = {0x67686f737466735full, 0x7472656577617463ull};

static tree_watch *get_watch(napi_env env, napi_value v) {
  tree_watch *w = NULL;
  bool tagged = false;
  if (napi_check_object_type_tag(env, v, &WATCH_TAG, &tagged) != napi_ok || !tagged || napi_get_value_external(env, v, (void **)&w) != napi_ok || !w) {
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
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, w, finalize_tsfn, w, call_js, &w->tsfn) != napi_ok) {
    close(w->fd);
    close(w->stop_fd);
    pthread_mutex_destroy(&w->lock);
    free(w);
    napi_throw_error(env, NULL, "cannot create the tree watch's hand-off");
    return NULL;
  }
  /* Like fs.watch({ persistent: false }): the watch keeps no process alive. */
  napi_unref_threadsafe_function(env, w->tsfn);
  w->refs = 1;
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
  if (napi_create_external(env, w, finalize_handle, NULL, &handle) != napi_ok) {
    napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort); /* stops the thread, frees w */
    napi_throw_error(env, NULL, "cannot make the tree watch's handle");
    return NULL;
  }
  w->refs = 2;
  if (napi_type_tag_object(env, handle, &WATCH_TAG) != napi_ok) {
    napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort); /* stops the thread; the handle's finalizer frees w */
    napi_throw_error(env, NULL, "cannot make the tree watch's handle");
    return NULL;
  }
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
  stop_watch(w);
  napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort); /* its finalizer lets go of w */
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
