/*
 * Directory attributes answered without JavaScript.
 *
 * With default_permissions the kernel checks a directory's mode before each
 * create in it, and each create marks the directory's cached attributes
 * stale (its mtime moved): so every new file costs a GETATTR of its
 * directory on the next one. Answered by JS that is a round trip through
 * the event loop per file (2,000 files written one after another: 2,037
 * GETATTRs, all but a few of the directory).
 *
 * Here the attributes JS last gave for a directory are kept, for as long as
 * the kernel itself may keep them (the attribute timeout), and such a
 * GETATTR is answered from them. What JS answers would be the same: a
 * create through the mount does not change what JS knows of the directory
 * (its new times come from the node's change feed, which invalidates). Kept
 * attributes are dropped whenever they may no longer be what JS would say:
 * JS invalidates the node (change feed), the directory is changed through
 * the mount in any other way (mkdir, unlink, rename, ... and setattr: when
 * the request comes in and again when it is answered), or the kernel
 * forgets the node id (JS may give it to another path). A reply is kept
 * only if nothing was invalidated since its request came in and no change
 * to that directory is under way: an answer that raced a change is never
 * stored (the kernel drops such answers too, by its attribute versions).
 */
#include "ghostfs.h"

#include <string.h>
#include <sys/stat.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void dattr_init(gfs *g) { pthread_mutex_init(&g->dattr.lock, NULL); }

void dattr_destroy(gfs *g) { pthread_mutex_destroy(&g->dattr.lock); }

static dattr_slot *slot_of(gfs *g, uint64_t ino) { return &g->dattr.slots[ino % DATTR_SLOTS]; }

/* Whatever is kept for `ino` goes (its slot may hold another node id's attributes: those stay). */
static void forget_slot(gfs *g, uint64_t ino) {
  dattr_slot *s = slot_of(g, ino);
  if (s->ino == ino) s->valid = 0;
}

/* Dropped, and no answer on its way may be kept any more. */
static void drop_locked(gfs *g, fuse_ino_t ino) {
  g->dattr.inval_seq++;
  forget_slot(g, ino);
}

/* Whether a change to directory `ino` is under way (or one was lost track of: then none is kept any more). */
static int changing(gfs *g, uint64_t ino) {
  if (g->dattr.untracked) return 1;
  for (int i = 0; i < DATTR_CHANGES; i++) {
    const dattr_change *c = &g->dattr.changes[i];
    if (c->req && (c->ino[0] == ino || c->ino[1] == ino)) return 1;
  }
  return 0;
}

/* The pending GETATTR record of `req`, taken out of the table (0: none, or overwritten since). */
static int take_pending(gfs *g, fuse_req_t req, dattr_pending *out) {
  if (!req) return 0; /* (a free record's id) */
  for (int i = 0; i < DATTR_PENDING; i++) {
    dattr_pending *p = &g->dattr.pending[i];
    if (p->req != req) continue;
    *out = *p;
    p->req = NULL;
    return 1;
  }
  return 0;
}

int dattr_try_reply(gfs *g, fuse_req_t req, fuse_ino_t ino) {
  struct stat st;
  double left = 0;
  pthread_mutex_lock(&g->dattr.lock);
  dattr_slot *s = slot_of(g, ino);
  int hit = s->valid && s->ino == ino && (left = s->expires - now_s()) > 0;
  if (hit) st = s->st;
  else forget_slot(g, ino); /* expired */
  pthread_mutex_unlock(&g->dattr.lock);
  if (!hit) return 0;
  STAT_ADD(g, dir_attr_hits, 1);
  fuse_reply_attr(req, &st, left);
  return 1;
}

void dattr_forwarded(gfs *g, fuse_req_t req, fuse_ino_t ino) {
  pthread_mutex_lock(&g->dattr.lock);
  dattr_pending old;
  (void)take_pending(g, req, &old); /* a request id is reused once answered */
  dattr_pending *p = &g->dattr.pending[g->dattr.next_pending++ % DATTR_PENDING];
  p->req = req;
  p->ino = ino;
  p->stamp = g->dattr.inval_seq;
  pthread_mutex_unlock(&g->dattr.lock);
}

void dattr_answered(gfs *g, fuse_req_t req, const struct stat *st) {
  pthread_mutex_lock(&g->dattr.lock);
  /* A GETATTR's attributes are kept if nothing was invalidated since it came in and no change to the directory is under way. */
  dattr_pending p;
  if (take_pending(g, req, &p) && st && p.stamp == g->dattr.inval_seq && S_ISDIR(st->st_mode) && g->attr_timeout > 0 && !changing(g, p.ino)) {
    dattr_slot *s = slot_of(g, p.ino);
    s->ino = p.ino;
    s->st = *st;
    s->expires = now_s() + g->attr_timeout;
    s->valid = 1;
  }
  /* A change answered: what was kept of its directories while it ran may predate it. */
  for (int i = 0; i < DATTR_CHANGES; i++) {
    dattr_change *c = &g->dattr.changes[i];
    if (c->req != req) continue;
    drop_locked(g, c->ino[0]);
    if (c->ino[1]) drop_locked(g, c->ino[1]);
    c->req = NULL;
  }
  pthread_mutex_unlock(&g->dattr.lock);
}

void dattr_drop(gfs *g, fuse_ino_t ino) {
  pthread_mutex_lock(&g->dattr.lock);
  drop_locked(g, ino);
  pthread_mutex_unlock(&g->dattr.lock);
}

void dattr_changing(gfs *g, fuse_req_t req, fuse_ino_t a, fuse_ino_t b) {
  pthread_mutex_lock(&g->dattr.lock);
  drop_locked(g, a);
  if (b) drop_locked(g, b);
  dattr_change *free_slot = NULL;
  for (int i = 0; i < DATTR_CHANGES && !free_slot; i++)
    if (!g->dattr.changes[i].req) free_slot = &g->dattr.changes[i];
  if (free_slot) {
    free_slot->req = req;
    free_slot->ino[0] = a;
    free_slot->ino[1] = b;
  } else {
    /* More changes under way than can be followed: keep nothing from now on (still correct, only slower). */
    g->dattr.untracked = 1;
    for (int i = 0; i < DATTR_SLOTS; i++) g->dattr.slots[i].valid = 0;
  }
  pthread_mutex_unlock(&g->dattr.lock);
}

void dattr_forget(gfs *g, fuse_ino_t ino) {
  /* No GETATTR of a forgotten node id is under way (it would hold a reference): only the slot goes. */
  pthread_mutex_lock(&g->dattr.lock);
  forget_slot(g, ino);
  pthread_mutex_unlock(&g->dattr.lock);
}
