/*
 * The bulk pool: a few threads for the fast paths' work that may wait on a
 * disk. Requests are read and decoded on the JS thread and a helper
 * (request_loop.c), which do not wait for one; they hand these threads the
 * reads whose chunk files are not all in the page cache (fast_read.c),
 * and the JS thread the writes going into dirty copies in C
 * (direct_write.c), whose fresh pages can take milliseconds. A job the
 * fast path turns down after all (a chunk evicted meanwhile, a
 * registration taken back) goes to JS like any request.
 */
#include "ghostfs.h"

#include <stdlib.h>

/* Readers of cold chunk files in parallel, and a writer or two. */
#define POOL_THREADS 4

typedef struct pool_job {
  struct pool_job *next;
  int op; /* OP_READ or OP_WRITE */
  fuse_req_t req;
  fuse_ino_t ino;
  uint64_t fh;
  int64_t off;
  uint64_t size;
  char *data; /* a write's bytes, and the block holding them (see payload_free) */
  void *block;
} pool_job;

struct gfs_pool {
  gfs *g;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  pool_job *head, *tail;
  int stop;
  int threads;
  pthread_t tid[POOL_THREADS];
};

static void run(gfs *g, pool_job *j) {
  if (j->op == OP_READ) {
    if (!fast_try_read(g, j->req, j->fh, j->off, j->size, 0)) gfs_forward_io(OP_READ, j->req, j->ino, j->fh, j->off, j->size, NULL, NULL, 0);
  } else if (dwrite_try(g, j->req, j->ino, j->fh, j->data, j->block, j->size, j->off)) {
    j->data = NULL, j->block = NULL; /* JS has the bytes now, in the OP_WROTE message */
  } else {
    gfs_forward_io(OP_WRITE, j->req, j->ino, j->fh, j->off, j->size, j->data, j->block, 0);
    j->data = NULL, j->block = NULL;
  }
}

static void *worker(void *arg) {
  gfs_pool *p = arg;
  gfs_block_signals();
  pthread_mutex_lock(&p->lock);
  for (;;) {
    while (!p->head && !p->stop) pthread_cond_wait(&p->cond, &p->lock);
    pool_job *j = p->head;
    if (!j) break; /* stopped, and every job taken */
    p->head = j->next;
    if (!p->head) p->tail = NULL;
    pthread_mutex_unlock(&p->lock);
    run(p->g, j);
    payload_free(j->data, j->block);
    free(j);
    pthread_mutex_lock(&p->lock);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

gfs_pool *pool_new(gfs *g) {
  gfs_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->g = g;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->cond, NULL);
  while (p->threads < POOL_THREADS && pthread_create(&p->tid[p->threads], NULL, worker, p) == 0) p->threads++;
  if (p->threads == 0) {
    pool_free(p);
    return NULL;
  }
  return p;
}

int pool_post(gfs_pool *p, int op, fuse_req_t req, fuse_ino_t ino, uint64_t fh, int64_t off, uint64_t size, char *data, void *block) {
  pool_job *j = p ? calloc(1, sizeof *j) : NULL;
  if (!j) return -1;
  *j = (pool_job){.op = op, .req = req, .ino = ino, .fh = fh, .off = off, .size = size, .data = data, .block = block};
  pthread_mutex_lock(&p->lock);
  if (p->tail) p->tail->next = j;
  else p->head = j;
  p->tail = j;
  pthread_cond_signal(&p->cond);
  pthread_mutex_unlock(&p->lock);
  return 0;
}

void pool_stop(gfs_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->lock);
  p->stop = 1;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->lock);
  /* The jobs still queued are done first: each is a request that must be answered. */
  for (int i = 0; i < p->threads; i++) pthread_join(p->tid[i], NULL);
  p->threads = 0;
}

void pool_free(gfs_pool *p) {
  if (!p) return;
  pool_stop(p);
  pthread_cond_destroy(&p->cond);
  pthread_mutex_destroy(&p->lock);
  free(p);
}
