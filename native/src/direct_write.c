/*
 * The write fast path. A file written front to back in big writes (cp, dd,
 * a linker's output) gets, once JS has taken its first writes, its dirty
 * copy's descriptor registered here for its handle. Its further writes are
 * written into the dirty copy in C and answered at once, by the helper
 * thread that read the request or, for one the JS thread read, by the bulk
 * pool (bulk_pool.c): no wait for JS. JS hears of each one afterwards
 * (OP_WROTE, with the bytes), queued before the answer, so
 * that it comes ahead of anything the writer does next; JS keeps the file's
 * size, times and early upload in step from it.
 *
 * JS takes the registration back (directWriteStop) before it handles any
 * other request that changes the file or hands its copy over; that waits
 * for the writes under way here. A write that fails here, or finds JS too
 * far behind in taking the bytes, goes to JS like any other.
 */
#include "ghostfs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DW_BUCKETS 256
/* Bytes of OP_WROTE messages JS has not taken yet beyond which writes go the slow way (and wait for JS). */
#define DW_MAX_BEHIND (64u << 20)

typedef struct dwfile {
  struct dwfile *next;
  uint64_t fh;
  int fd;
} dwfile;

struct gfs_dwrite {
  pthread_rwlock_t lock;
  int64_t behind;
  dwfile *b[DW_BUCKETS];
};

gfs_dwrite *dwrite_new(void) {
  gfs_dwrite *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  /* Taking a registration back must not wait behind a stream of writes. */
  pthread_rwlockattr_t a;
  pthread_rwlockattr_init(&a);
  pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&w->lock, &a);
  pthread_rwlockattr_destroy(&a);
  return w;
}

void dwrite_free(gfs_dwrite *w) {
  if (!w) return;
  for (int i = 0; i < DW_BUCKETS; i++) {
    dwfile *x = w->b[i];
    while (x) {
      dwfile *n = x->next;
      free(x);
      x = n;
    }
  }
  pthread_rwlock_destroy(&w->lock);
  free(w);
}

static dwfile **slot(gfs_dwrite *w, uint64_t fh) {
  dwfile **p = &w->b[fh % DW_BUCKETS];
  while (*p && (*p)->fh != fh) p = &(*p)->next;
  return p;
}

int dwrite_wanted(gfs *g, uint64_t fh) {
  gfs_dwrite *w = g->dwrite;
  if (!w || __atomic_load_n(&w->behind, __ATOMIC_RELAXED) > (int64_t)DW_MAX_BEHIND) return 0;
  pthread_rwlock_rdlock(&w->lock);
  int there = *slot(w, fh) != NULL;
  pthread_rwlock_unlock(&w->lock);
  return there;
}

int dwrite_try(gfs *g, fuse_req_t req, fuse_ino_t ino, uint64_t fh, char *data, void *block, size_t size, off_t off) {
  gfs_dwrite *w = g->dwrite;
  if (!w || size == 0) return 0;
  if (__atomic_load_n(&w->behind, __ATOMIC_RELAXED) > (int64_t)DW_MAX_BEHIND) return 0;
  pthread_rwlock_rdlock(&w->lock);
  dwfile *x = *slot(w, fh);
  /* The message first: once written, the write must be told. */
  gfs_msg *m = x ? calloc(1, sizeof *m) : NULL;
  int done = 0;
  if (m) {
    size_t at = 0;
    while (at < size) {
      ssize_t n = pwrite(x->fd, data + at, size - at, off + (off_t)at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      at += (size_t)n;
    }
    if (at == size) {
      m->op = OP_WROTE;
      m->ino = ino;
      m->fh = fh;
      m->off = off;
      m->size = size;
      m->data = data;
      m->data_block = block;
      __atomic_add_fetch(&w->behind, (int64_t)size, __ATOMIC_RELAXED);
      /* Queued while still holding the lock: a stop that follows finds it in the queue. */
      gfs_enqueue(g, m);
      done = 1;
    }
    /* A short or failed write: JS writes it all again, and reports the error if there is one. */
  }
  pthread_rwlock_unlock(&w->lock);
  if (!done) {
    free(m);
    return 0;
  }
  STAT_ADD(g, direct_writes, 1);
  fuse_reply_write(req, size);
  return 1;
}

static void free_wrote(napi_env env, void *data, void *hint) {
  (void)env;
  payload_free(data, hint);
}

/* JS took an OP_WROTE message's bytes. */
void dwrite_taken(gfs *g, uint64_t size) {
  if (g->dwrite) __atomic_sub_fetch(&g->dwrite->behind, (int64_t)size, __ATOMIC_RELAXED);
}

/* directWriteStart(handle, fh, fd): writes to `fh` go into `fd` from now on. */
static napi_value js_direct_write_start(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  gfs *g = get_gfs(env, argv[0]);
  uint64_t fh, fd;
  if (!g || get_u64(env, argv[1], &fh) || get_u64(env, argv[2], &fd)) return NULL;
  if (!g->dwrite) return NULL;
  dwfile *x = calloc(1, sizeof *x);
  if (!x) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  x->fh = fh;
  x->fd = (int)fd;
  pthread_rwlock_wrlock(&g->dwrite->lock);
  dwfile **p = slot(g->dwrite, fh);
  if (*p) {
    (*p)->fd = x->fd;
    free(x);
  } else {
    x->next = g->dwrite->b[fh % DW_BUCKETS];
    g->dwrite->b[fh % DW_BUCKETS] = x;
  }
  pthread_rwlock_unlock(&g->dwrite->lock);
  return NULL;
}

/* Takes the OP_WROTE messages of `fh` out of a list (unlinking them), oldest last as the list has them. */
static gfs_msg *take_wrote(gfs_msg **list, uint64_t fh) {
  gfs_msg *taken = NULL, **p = list;
  while (*p) {
    gfs_msg *m = *p;
    if (m->op == OP_WROTE && m->fh == fh) {
      *p = m->next;
      m->next = taken;
      taken = m;
    } else {
      p = &m->next;
    }
  }
  return taken; /* reversed: the list's last match first */
}

/*
 * directWriteStop(handle, fh) -> [offset, bytes, offset, bytes, ...]: once
 * it returns no write to `fh` is under way here and none starts. It returns
 * the writes made here that JS has not heard of yet, in the order they were
 * made, taken out of the queue: JS applies them before the request that
 * stopped it, so that request sees the file as the writer left it.
 */
static napi_value js_direct_write_stop(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  gfs *g = get_gfs(env, argv[0]);
  uint64_t fh;
  napi_value out;
  NAPI_TRY(env, napi_create_array(env, &out));
  if (!g || get_u64(env, argv[1], &fh) || !g->dwrite) return out;
  pthread_rwlock_wrlock(&g->dwrite->lock);
  dwfile **p = slot(g->dwrite, fh);
  if (*p) {
    dwfile *x = *p;
    *p = x->next;
    free(x);
  }
  pthread_rwlock_unlock(&g->dwrite->lock);
  /* Oldest first: those left in the batch JS is going through (arrived
   * first; kept in arrival order), then the queue (kept newest first). */
  gfs_msg *in_batch = take_wrote(&g->draining, fh); /* newest first now */
  pthread_mutex_lock(&g->qlock);
  gfs_msg *queued = take_wrote(&g->queue, fh); /* oldest first now */
  pthread_mutex_unlock(&g->qlock);
  gfs_msg *ordered = NULL;
  while (in_batch) { /* reversed again: oldest first */
    gfs_msg *n = in_batch->next;
    in_batch->next = ordered;
    ordered = in_batch;
    in_batch = n;
  }
  gfs_msg **tail = &ordered;
  while (*tail) tail = &(*tail)->next;
  *tail = queued;
  uint32_t i = 0;
  for (gfs_msg *m = ordered; m;) {
    gfs_msg *n = m->next;
    napi_value off, data;
    dwrite_taken(g, m->size);
    napi_create_double(env, (double)m->off, &off);
    if (napi_create_external_buffer(env, m->size, m->data, free_wrote, m->data_block, &data) == napi_ok) m->data = NULL;
    else napi_create_buffer_copy(env, m->size, m->data, NULL, &data);
    napi_set_element(env, out, i++, off);
    napi_set_element(env, out, i++, data);
    payload_free(m->data, m->data_block), free(m);
    m = n;
  }
  return out;
}

napi_value dwrite_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "directWriteStart", js_direct_write_start);
  export_fn(env, exports, "directWriteStop", js_direct_write_stop);
  return exports;
}
