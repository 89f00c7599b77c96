/*
 * The read fast path. When JS opens a file for reading it registers the
 * handle's chunk list here, with a flag per chunk saying whether the chunk
 * is in the local chunk cache (a file under chunks/ab/<hash>, verified when
 * it arrived, so trusted). A read whose chunks are all local is answered
 * by the thread that read the request, with pread()s straight into the
 * reply: no JS round trip. Anything else (a chunk not fetched yet, a chunk
 * evicted meanwhile) goes to JS, which fetches and later marks the chunk
 * local.
 *
 * The threads that read requests (request_loop.c), the JS thread among
 * them, serve a read here only from the page cache (RWF_NOWAIT); one that
 * would wait for the disk goes to the bulk pool, whose threads read side
 * by side.
 */
#include "ghostfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

typedef struct {
  uint64_t off;
  uint32_t len;
  int local;
  uint8_t hash[32];
} fchunk;

typedef struct ffile {
  struct ffile *next;
  uint64_t fh;
  uint64_t size;
  uint32_t n;
  fchunk c[];
} ffile;

#define BUCKETS 4096

struct gfs_fast {
  pthread_rwlock_t lock;
  /* The chunk files live in memory (tmpfs): a read never waits for a disk, and RWF_NOWAIT is refused there. */
  int in_memory;
  char dir[PATH_MAX - 80]; /* room left for /ab/<64 hex> */
  ffile *b[BUCKETS];
};

gfs_fast *fast_new(const char *chunk_dir) {
  gfs_fast *f = calloc(1, sizeof *f);
  if (!f || strlen(chunk_dir) >= sizeof f->dir) {
    free(f);
    return NULL; /* no fast path: every read goes to JS */
  }
  /* Registering and closing handles must not wait behind a stream of reads. */
  pthread_rwlockattr_t a;
  pthread_rwlockattr_init(&a);
  pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&f->lock, &a);
  pthread_rwlockattr_destroy(&a);
  snprintf(f->dir, sizeof f->dir, "%s", chunk_dir);
  struct statfs sf;
  f->in_memory = statfs(chunk_dir, &sf) == 0 && (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC);
  return f;
}

void fast_free(gfs_fast *f) {
  if (!f) return;
  for (int i = 0; i < BUCKETS; i++) {
    ffile *x = f->b[i];
    while (x) {
      ffile *n = x->next;
      free(x);
      x = n;
    }
  }
  pthread_rwlock_destroy(&f->lock);
  free(f);
}

static ffile **slot(gfs_fast *f, uint64_t fh) {
  ffile **p = &f->b[fh % BUCKETS];
  while (*p && (*p)->fh != fh) p = &(*p)->next;
  return p;
}

/* Drops a handle's registration (under the write lock). */
static void forget_file(gfs_fast *f, uint64_t fh) {
  ffile **p = slot(f, fh);
  if (*p) {
    ffile *old = *p;
    *p = old->next;
    free(old);
  }
}

static void chunk_path(const gfs_fast *f, const uint8_t *hash, char *out, size_t cap) {
  static const char hexd[] = "0123456789abcdef";
  char hx[65];
  for (int i = 0; i < 32; i++) {
    hx[2 * i] = hexd[hash[i] >> 4];
    hx[2 * i + 1] = hexd[hash[i] & 15];
  }
  hx[64] = 0;
  snprintf(out, cap, "%s/%c%c/%s", f->dir, hx[0], hx[1], hx);
}

/* The chunk holding `off` (chunks are sorted and contiguous). */
static uint32_t chunk_at(const ffile *x, uint64_t off) {
  uint32_t lo = 0, hi = x->n - 1;
  while (lo < hi) {
    uint32_t mid = (lo + hi + 1) / 2;
    if (x->c[mid].off <= off) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* A read of the page cache only: -1 with EAGAIN where it would wait for the disk. */
static ssize_t pread_nowait(int fd, void *buf, size_t len, off_t at) {
  struct iovec v = {buf, len};
  return preadv2(fd, &v, 1, at, RWF_NOWAIT);
}

int fast_try_read(gfs *g, fuse_req_t req, uint64_t fh, int64_t off, uint64_t size, int nowait) {
  gfs_fast *f = g->fast;
  if (!f || off < 0) return 0;
  pthread_rwlock_rdlock(&f->lock);
  ffile *x = *slot(f, fh);
  if (!x) {
    pthread_rwlock_unlock(&f->lock);
    return 0;
  }
  if ((uint64_t)off >= x->size || x->n == 0) {
    pthread_rwlock_unlock(&f->lock);
    STAT_ADD(g, fast_reads, 1); /* counted before the reply: a reader that has its answer finds it counted */
    fuse_reply_buf(req, NULL, 0);
    return 1;
  }
  uint64_t end = (uint64_t)off + size;
  if (end > x->size) end = x->size;
  uint32_t first = chunk_at(x, (uint64_t)off), last = first;
  while (last + 1 < x->n && x->c[last + 1].off < end) last++;
  for (uint32_t i = first; i <= last; i++) {
    if (!__atomic_load_n(&x->c[i].local, __ATOMIC_RELAXED)) {
      pthread_rwlock_unlock(&f->lock);
      return 0;
    }
  }
  size_t total = end - (uint64_t)off;
  char *buf = malloc(total ? total : 1);
  if (!buf) {
    pthread_rwlock_unlock(&f->lock);
    return 0;
  }
  size_t done = 0;
  char path[PATH_MAX];
  /* tmpfs has no disk to wait for (and refuses RWF_NOWAIT): read there as the pool would. */
  int page_cache_only = nowait && !f->in_memory;
  for (uint32_t i = first; i <= last; i++) {
    fchunk *c = &x->c[i];
    uint64_t from = (uint64_t)off > c->off ? (uint64_t)off : c->off;
    uint64_t to = end < c->off + c->len ? end : c->off + c->len;
    chunk_path(f, c->hash, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM) fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t want = (ssize_t)(to - from), got = -1;
    if (fd >= 0) {
      got = page_cache_only ? pread_nowait(fd, buf + done, (size_t)want, (off_t)(from - c->off)) : pread(fd, buf + done, (size_t)want, (off_t)(from - c->off));
      close(fd);
    }
    if (page_cache_only && fd >= 0 && got != want) {
      /* Not all in the page cache (or no RWF_NOWAIT on this filesystem: overlayfs): the bulk pool reads it, and judges a short read. */
      pthread_rwlock_unlock(&f->lock);
      free(buf);
      return FAST_WOULD_BLOCK;
    }
    if (got != want) {
      /* Evicted or damaged since it was marked: JS fetches it again. */
      __atomic_store_n(&c->local, 0, __ATOMIC_RELAXED);
      pthread_rwlock_unlock(&f->lock);
      free(buf);
      STAT_ADD(g, fast_fallbacks, 1);
      return 0;
    }
    done += (size_t)got;
  }
  /* A sequential reader comes for the next chunk soon: have the disk start
   * on it now, while this reply travels (chunk files are separate files, so
   * the kernel's own readahead stops at each one's end). Only in the bulk
   * pool, which reads from the disk anyway: starting disk reads can wait,
   * and the threads that read requests do not. */
  if (!nowait && last + 1 < x->n && end == x->c[last].off + x->c[last].len) {
    chunk_path(f, x->c[last + 1].hash, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      posix_fadvise(fd, 0, x->c[last + 1].len, POSIX_FADV_WILLNEED);
      close(fd);
    }
  }
  pthread_rwlock_unlock(&f->lock);
  STAT_ADD(g, fast_reads, 1);
  STAT_ADD(g, fast_bytes, done);
  fuse_reply_buf(req, buf, done);
  free(buf);
  return 1;
}

/* fastOpen(handle, fh, size, hashes: Buffer(n*32), offsets: Float64Array, lengths: Float64Array, local: Uint8Array) */
static napi_value js_fast_open(napi_env env, napi_callback_info info) {
  GET_ARGS(7);
  if (argc < 7) {
    napi_throw_type_error(env, NULL, "fastOpen(handle, fh, size, hashes, offsets, lengths, local)");
    return NULL;
  }
  gfs *g = get_gfs(env, argv[0]);
  uint64_t fh, size;
  if (!g || get_u64(env, argv[1], &fh) || get_u64(env, argv[2], &size)) return NULL;
  if (!g->fast) return NULL;
  void *hashes, *offs, *lens, *local;
  size_t hlen, n_off, n_len, n_loc;
  napi_typedarray_type t;
  if (napi_get_buffer_info(env, argv[3], &hashes, &hlen) != napi_ok ||
      napi_get_typedarray_info(env, argv[4], &t, &n_off, &offs, NULL, NULL) != napi_ok || t != napi_float64_array ||
      napi_get_typedarray_info(env, argv[5], &t, &n_len, &lens, NULL, NULL) != napi_ok || t != napi_float64_array ||
      napi_get_typedarray_info(env, argv[6], &t, &n_loc, &local, NULL, NULL) != napi_ok || t != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "fastOpen: bad chunk arrays");
    return NULL;
  }
  size_t n = n_off;
  if (n_len != n || n_loc != n || hlen != n * 32) {
    napi_throw_range_error(env, NULL, "fastOpen: chunk arrays differ in length");
    return NULL;
  }
  ffile *x = malloc(sizeof *x + n * sizeof(fchunk));
  if (!x) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  x->fh = fh;
  x->size = size;
  x->n = (uint32_t)n;
  for (size_t i = 0; i < n; i++) {
    x->c[i].off = (uint64_t)((double *)offs)[i];
    x->c[i].len = (uint32_t)((double *)lens)[i];
    x->c[i].local = ((uint8_t *)local)[i] != 0;
    memcpy(x->c[i].hash, (uint8_t *)hashes + i * 32, 32);
  }
  pthread_rwlock_wrlock(&g->fast->lock);
  forget_file(g->fast, fh);
  x->next = g->fast->b[fh % BUCKETS];
  g->fast->b[fh % BUCKETS] = x;
  pthread_rwlock_unlock(&g->fast->lock);
  return NULL;
}

/* fastMark(handle, fh, index): that chunk is now in the cache. */
static napi_value js_fast_mark(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  gfs *g = get_gfs(env, argv[0]);
  uint64_t fh, idx;
  if (!g || get_u64(env, argv[1], &fh) || get_u64(env, argv[2], &idx) || !g->fast) return NULL;
  pthread_rwlock_rdlock(&g->fast->lock);
  ffile *x = *slot(g->fast, fh);
  if (x && idx < x->n) __atomic_store_n(&x->c[idx].local, 1, __ATOMIC_RELAXED);
  pthread_rwlock_unlock(&g->fast->lock);
  return NULL;
}

/* fastClose(handle, fh) */
static napi_value js_fast_close(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  gfs *g = get_gfs(env, argv[0]);
  uint64_t fh;
  if (!g || get_u64(env, argv[1], &fh) || !g->fast) return NULL;
  pthread_rwlock_wrlock(&g->fast->lock);
  forget_file(g->fast, fh);
  pthread_rwlock_unlock(&g->fast->lock);
  return NULL;
}

napi_value fast_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "fastOpen", js_fast_open);
  export_fn(env, exports, "fastMark", js_fast_mark);
  export_fn(env, exports, "fastClose", js_fast_close);
  return exports;
}
