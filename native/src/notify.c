/*
 * Kernel cache invalidation. The change feed tells JS what changed on the
 * node; JS queues an invalidation here and returns at once. A thread of
 * its own delivers them: a notification can wait on kernel locks held by a
 * request that is itself waiting for the JS thread, so sending it from the
 * JS thread could deadlock.
 */
#include "ghostfs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct nmsg {
  struct nmsg *next;
  int kind; /* 0 inode, 1 entry, 2 delete */
  uint64_t ino, parent;
  char *name;
} nmsg;

struct gfs_notify {
  gfs *g;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  nmsg *head, *tail;
  int stop;
};

static void *notify_main(void *arg) {
  gfs_notify *n = arg;
  gfs_block_signals();
  pthread_mutex_lock(&n->lock);
  for (;;) {
    while (!n->head && !n->stop) pthread_cond_wait(&n->cond, &n->lock);
    if (!n->head && n->stop) break;
    nmsg *m = n->head;
    n->head = m->next;
    if (!n->head) n->tail = NULL;
    pthread_mutex_unlock(&n->lock);
    int r = 0;
    struct fuse_session *se = n->g->se;
    if (se && !n->stop) {
      /* Attributes only (offset -1): the kernel drops stale pages itself once
       * it sees the new mtime or size (auto_inval_data). Invalidating pages
       * here waits for page locks that a write in flight holds; if the
       * mount is killed then, this thread never returns, the process cannot
       * exit and the mount hangs (seen in the kill -9 write test). */
      if (m->kind == 0) r = fuse_lowlevel_notify_inval_inode(se, m->ino, -1, 0);
      /* A directory's pages hold only its cached listing (no write holds
       * them): dropped with its attributes when a child came or went. */
      else if (m->kind == 3) r = fuse_lowlevel_notify_inval_inode(se, m->ino, 0, 0);
      else if (m->kind == 1) r = fuse_lowlevel_notify_inval_entry(se, m->parent, m->name, strlen(m->name));
      else r = fuse_lowlevel_notify_delete(se, m->parent, m->ino, m->name, strlen(m->name));
      STAT_ADD(n->g, notifications, 1);
      /* ENOENT: the kernel does not know it, nothing was cached. */
      if (r != 0 && r != -ENOENT) STAT_ADD(n->g, notify_errors, 1);
    }
    free(m->name);
    free(m);
    pthread_mutex_lock(&n->lock);
  }
  pthread_mutex_unlock(&n->lock);
  return NULL;
}

gfs_notify *notify_start(gfs *g) {
  gfs_notify *n = calloc(1, sizeof *n);
  if (!n) return NULL;
  n->g = g;
  pthread_mutex_init(&n->lock, NULL);
  pthread_cond_init(&n->cond, NULL);
  if (pthread_create(&n->thread, NULL, notify_main, n) != 0) {
    free(n);
    return NULL;
  }
  return n;
}

void notify_stop(gfs_notify *n) {
  if (!n) return;
  pthread_mutex_lock(&n->lock);
  n->stop = 1;
  pthread_cond_signal(&n->cond);
  pthread_mutex_unlock(&n->lock);
  pthread_join(n->thread, NULL);
  nmsg *m = n->head;
  while (m) {
    nmsg *x = m->next;
    free(m->name);
    free(m);
    m = x;
  }
  pthread_mutex_destroy(&n->lock);
  pthread_cond_destroy(&n->cond);
  free(n);
}

static void push(gfs_notify *n, nmsg *m) {
  pthread_mutex_lock(&n->lock);
  if (n->tail) n->tail->next = m;
  else n->head = m;
  n->tail = m;
  pthread_cond_signal(&n->cond);
  pthread_mutex_unlock(&n->lock);
}

static napi_value inode_common(napi_env env, napi_callback_info info, int kind) {
  GET_ARGS(2);
  gfs *g = get_gfs(env, argv[0]);
  uint64_t ino;
  if (!g || get_u64(env, argv[1], &ino)) return NULL;
  dattr_drop(g, ino); /* at once: a GETATTR from now on is answered by JS */
  if (!g->notify) return NULL;
  nmsg *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->kind = kind;
  m->ino = ino;
  push(g->notify, m);
  return NULL;
}

/* invalInode(handle, ino): attributes. invalListing(handle, dirIno): attributes and cached listing. */
static napi_value js_inval_inode(napi_env env, napi_callback_info info) { return inode_common(env, info, 0); }
static napi_value js_inval_listing(napi_env env, napi_callback_info info) { return inode_common(env, info, 3); }

/* invalEntry(handle, parentIno, name) / notifyDelete(handle, parentIno, ino, name) */
static napi_value entry_common(napi_env env, napi_callback_info info, int kind) {
  GET_ARGS(4);
  gfs *g = get_gfs(env, argv[0]);
  uint64_t parent, ino = 0;
  if (!g || get_u64(env, argv[1], &parent)) return NULL;
  if (kind == 2 && get_u64(env, argv[2], &ino)) return NULL;
  dattr_drop(g, parent);
  if (kind == 2) dattr_drop(g, ino);
  char *name = get_string(env, argv[kind == 2 ? 3 : 2]);
  if (!name) return NULL;
  if (!g->notify) {
    free(name);
    return NULL;
  }
  nmsg *m = calloc(1, sizeof *m);
  if (!m) {
    free(name);
    return NULL;
  }
  m->kind = kind;
  m->parent = parent;
  m->ino = ino;
  m->name = name;
  push(g->notify, m);
  return NULL;
}

static napi_value js_inval_entry(napi_env env, napi_callback_info info) { return entry_common(env, info, 1); }
static napi_value js_notify_delete(napi_env env, napi_callback_info info) { return entry_common(env, info, 2); }

napi_value notify_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "invalInode", js_inval_inode);
  export_fn(env, exports, "invalListing", js_inval_listing);
  export_fn(env, exports, "invalEntry", js_inval_entry);
  export_fn(env, exports, "notifyDelete", js_notify_delete);
  return exports;
}
