/*
 * The request loop. Two threads read requests from the session's device:
 * the JS thread, through libuv, and one helper thread beside it. The
 * kernel wakes both for each request; whichever reads it first decodes it
 * (the op_* functions answer some in C and queue the rest for JS), and the
 * other finds nothing (EAGAIN) and waits again.
 *
 * Why the JS thread reads at all: a request it reads itself wakes one
 * thread, not a worker that in turn wakes the JS thread. On a virtual
 * machine a wake-up costs tens of microseconds, about a quarter of a
 * lookup's round trip here. Why a helper as well: while the JS thread is
 * busy (hashing a big file's writes, verifying fetched chunks), the
 * requests C answers alone (reads of cached chunks, direct writes) would
 * wait for it; the helper answers them meanwhile. With the JS thread
 * reading alone, a 256 MiB dd was a tenth slower, and 4 KiB random reads
 * of a file being fetched ran at half the rate. (Both woken, a lone
 * lookup costs what it did with libfuse's threads; tar -x and small files
 * gained. See README, Kernel drivers.) A read of chunk files not in the
 * page cache goes to the bulk pool (bulk_pool.c), and so does a write
 * into a dirty copy the JS thread read: it never waits for file data on a
 * disk.
 */
#include "ghostfs.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <uv.h>

/* Requests decoded before JS gets them: enough for a burst, few enough that JS answers early ones soon. */
#define LOOP_BURST 64
/* How soon the helper notices the loop's end when no request comes. */
#define HELPER_CHECK_MS 50

__thread int gfs_in_request_loop;
__thread struct fuse_buf *gfs_request_buf;

static void *helper_main(void *arg) {
  gfs *g = arg;
  gfs_block_signals();
  struct fuse_buf buf = {0};
  gfs_request_buf = &buf;
  struct pollfd p = {.fd = fuse_session_fd(g->se), .events = POLLIN};
  while (!__atomic_load_n(&g->helper_stop, __ATOMIC_RELAXED) && !fuse_session_exited(g->se)) {
    if (poll(&p, 1, HELPER_CHECK_MS) <= 0) continue;
    int res = fuse_session_receive_buf(g->se, &buf);
    if (res == -EAGAIN || res == -EINTR) continue; /* the JS thread took it */
    /* The end (the JS thread sees the device fail or the session exit too), or a request libfuse
     * could not read (out of memory): the JS thread reads on alone. */
    if (res <= 0 || fuse_session_exited(g->se)) break;
    STAT_ADD(g, helper_requests, 1);
    fuse_session_process_buf(g->se, &buf);
  }
  free(buf.mem);
  return NULL;
}

/* A handle of the loop's (the device's poll, the wake-up signal) is freed once libuv is done with it. */
static void handle_closed(uv_handle_t *h) { free(h); }

/*
 * After the loop: the helper, the pool and the notify thread stop, and JS
 * hears of the end. On a thread of its own, since that can wait on JS: a
 * notification under way may wait in the kernel for a directory lock held
 * by a request JS has not answered yet (see notify.c).
 */
static void *ender_main(void *arg) {
  gfs *g = arg;
  gfs_block_signals();
  if (g->helper_started) {
    __atomic_store_n(&g->helper_stop, 1, __ATOMIC_RELAXED);
    pthread_join(g->helper, NULL);
    g->helper_started = 0;
  }
  /* Every request handed to the pool is answered before the end is reported. */
  pool_stop(g->pool);
  /* Invalidations stop; replies still due from JS only free their requests.
   * The session fd is closed by fuse_session_destroy, once the last reply
   * is in, so no reply ever writes to a closed (and perhaps reused)
   * descriptor. There is no unmount here: the mount is detached by path
   * already, and by now the path may hold a new mount. */
  notify_stop(g->notify);
  g->notify = NULL;
  pthread_mutex_lock(&g->reply_lock);
  g->closing = 1;
  pthread_mutex_unlock(&g->reply_lock);
  gfs_enqueue(g, g->exit_msg);
  return NULL;
}

/* The connection is gone (unmounted, aborted) or the session was told to exit. */
static void loop_end(gfs *g) {
  uv_poll_stop(g->poll);
  uv_close((uv_handle_t *)g->poll, handle_closed);
  g->poll = NULL;
  g->ender_started = pthread_create(&g->ender, NULL, ender_main, g) == 0;
  if (g->ender_started) return;
  gfs_in_request_loop = 0; /* the end reported with a wake-up, like any message from another thread */
  ender_main(g);           /* no thread to spare: here, at the risk the comment above names */
}

void loop_joined(gfs *g) {
  if (g->ender_started) pthread_join(g->ender, NULL);
  g->ender_started = 0;
}

static void hand_to_js(gfs *g);

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  gfs *g = h->data;
  int ended = status < 0;
  gfs_in_request_loop = 1;
  gfs_request_buf = &g->fbuf;
  for (int i = 0; !ended && i < LOOP_BURST; i++) {
    int res = fuse_session_receive_buf(g->se, &g->fbuf);
    if (res == -EAGAIN) break;
    if (res == -EINTR) continue;
    /* 0: the session exited (ENODEV included); below 0: the device failed, or libfuse could not read a request. */
    if (res <= 0 || fuse_session_exited(g->se)) ended = 1;
    else fuse_session_process_buf(g->se, &g->fbuf);
    if (fuse_session_exited(g->se)) ended = 1;
  }
  if (ended) loop_end(g);
  gfs_in_request_loop = 0;
  pthread_mutex_lock(&g->qlock);
  int queued = g->queue != NULL;
  pthread_mutex_unlock(&g->qlock);
  if (!queued) return; /* all answered in C */
  hand_to_js(g);
}

/* Messages queued by other threads, or the rest of a batch gfs_drain cut short. */
static void on_wake(uv_async_t *a) { hand_to_js(a->data); }

/*
 * Has JS handed the queue in a later callback of the event loop's. Calls
 * made before it runs are merged into one, and one made from its own
 * callback runs in the next turn, after libuv looked at sockets and
 * timers. (A thread-safe function call would not do: Node goes on running
 * the calls queued on one for as long as more come, so a stream of 1 MiB
 * writes from the helper kept JS from its sockets, and the early upload
 * from the node's answers, for a third of a second at a time.) Any thread
 * may call it; the handle stays until loop_free, when no thread queues any
 * more.
 */
void loop_wake(gfs *g) {
  if (g->wake) uv_async_send(g->wake);
  else napi_call_threadsafe_function(g->tsfn, NULL, napi_tsfn_nonblocking);
}

static void hand_to_js(gfs *g) {
  napi_env env = g->env;
  napi_handle_scope hs;
  napi_value resource, dispatcher;
  napi_callback_scope cs;
  int drained = 0;
  if (napi_open_handle_scope(env, &hs) == napi_ok) {
    /* A callback scope: promises the handlers settle run when it closes, as after any libuv callback. */
    if (napi_create_object(env, &resource) == napi_ok && napi_open_callback_scope(env, resource, g->async_ctx, &cs) == napi_ok) {
      g->in_scope = 1;
      if (napi_get_reference_value(env, g->dispatcher, &dispatcher) == napi_ok) drained = (gfs_drain(env, dispatcher, g), 1);
      napi_close_callback_scope(env, cs);
      g->in_scope = 0;
    }
    napi_close_handle_scope(env, hs);
  }
  /* finish() came during the drain (the loop's end): its context is released now the scope is closed. */
  if (g->finished) loop_free(g, env);
  /* Not handed over (N-API refused a scope): the thread-safe function's call drains the queue later. */
  else if (!drained) napi_call_threadsafe_function(g->tsfn, NULL, napi_tsfn_nonblocking);
}

/* Starts watching the device; on failure the caller undoes what was done (loop_free, pool_free). */
int loop_start(gfs *g, napi_env env, napi_value dispatcher) {
  uv_loop_t *loop;
  napi_value name;
  int fd = fuse_session_fd(g->se);
  int fl = fcntl(fd, F_GETFL);
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  if (!(g->pool = pool_new(g))) return -1;
  if (napi_create_string_utf8(env, "ghostfs-requests", NAPI_AUTO_LENGTH, &name) != napi_ok || napi_async_init(env, NULL, name, &g->async_ctx) != napi_ok ||
      napi_create_reference(env, dispatcher, 1, &g->dispatcher) != napi_ok)
    return -1;
  uv_async_t *t = calloc(1, sizeof *t);
  if (!t || uv_async_init(loop, t, on_wake) != 0) {
    free(t);
    return -1;
  }
  t->data = g;
  uv_poll_t *h = calloc(1, sizeof *h);
  if (!h || uv_poll_init(loop, h, fd) != 0) {
    free(h);
    uv_close((uv_handle_t *)t, handle_closed);
    return -1;
  }
  g->wake = t;
  g->env = env;
  h->data = g;
  g->poll = h;
  if (uv_poll_start(h, UV_READABLE, on_readable) != 0) {
    g->poll = NULL;
    g->wake = NULL;
    uv_close((uv_handle_t *)h, handle_closed);
    uv_close((uv_handle_t *)t, handle_closed);
    return -1;
  }
  /* Without a helper the JS thread reads alone: slower, still complete. */
  g->helper_started = pthread_create(&g->helper, NULL, helper_main, g) == 0;
  return 0;
}

/* After the loop ended, on the JS thread, outside its callback scope. */
void loop_free(gfs *g, napi_env env) {
  if (g->wake) uv_close((uv_handle_t *)g->wake, handle_closed);
  g->wake = NULL;
  if (g->dispatcher) napi_delete_reference(env, g->dispatcher);
  g->dispatcher = NULL;
  if (g->async_ctx) napi_async_destroy(env, g->async_ctx);
  g->async_ctx = NULL;
}
