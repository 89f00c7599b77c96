/*
 * The FUSE session on libfuse3's low-level (inode) API.
 *
 * Requests are read from /dev/fuse by the JS thread and by a helper thread
 * (request_loop.c), and libfuse calls the op_* functions below on whichever
 * read it. None of them waits for JS: a request is copied into a gfs_msg
 * and queued. The JS thread hands JS the queue at the end of each burst it
 * read; messages from other threads (the helper's, the bulk pool's) wake
 * it through an async handle of the request loop's, once per burst (only
 * when no wake-up is pending; see loop_wake). JS answers each request later,
 * whenever it is ready, through the reply* functions; many requests are in
 * flight at once. Reads of files whose chunks are all cached are answered
 * in C (fast_read.c) and never reach JS; so are writes into a registered
 * dirty copy (direct_write.c). On the JS thread these take no disk wait:
 * what needs one goes to the bulk pool.
 */
#include "ghostfs.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- from the worker threads to JS ------------------------------------- */

void gfs_enqueue(gfs *g, gfs_msg *m) {
  int wake;
  if (m->req) __atomic_fetch_add(&g->outstanding, 1, __ATOMIC_RELAXED);
  STAT_ADD(g, forwarded, 1);
  pthread_mutex_lock(&g->qlock);
  m->next = g->queue;
  g->queue = m;
  wake = !g->signaled;
  g->signaled = 1;
  pthread_mutex_unlock(&g->qlock);
  /* The request loop hands JS the queue itself at the end of its burst. */
  if (wake && !gfs_in_request_loop) loop_wake(g);
}

static gfs_msg *new_msg(int op, fuse_req_t req, fuse_ino_t ino) {
  gfs_msg *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->op = op;
  m->req = req;
  m->ino = ino;
  if (req) {
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    m->uid = ctx->uid;
    m->gid = ctx->gid;
  }
  return m;
}

/* Queues the request, or answers ENOMEM when not even that is possible. */
static void forward(gfs_msg *m, fuse_req_t req) {
  if (!m) {
    dattr_answered(fuse_req_userdata(req), req, NULL); /* a change it registered is over */
    fuse_reply_err(req, ENOMEM);
    return;
  }
  gfs_enqueue(fuse_req_userdata(req), m);
}

void gfs_forward_io(int op, fuse_req_t req, fuse_ino_t ino, uint64_t fh, int64_t off, uint64_t size, char *data, void *block, uint32_t flags) {
  gfs_msg *m = new_msg(op, req, ino);
  if (m) {
    m->flags = flags;
    m->fh = fh;
    m->off = off;
    m->size = size;
    m->data = data;
    m->data_block = block;
  } else {
    payload_free(data, block);
  }
  forward(m, req);
}

static char *dup_name(const char *s) { return s ? strdup(s) : NULL; }

/* Names travel to the node as UTF-8 strings: other bytes cannot name anything there. */
static int valid_utf8(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    int n = *p < 0x80 ? 0 : (*p >> 5) == 6 ? 1 : (*p >> 4) == 14 ? 2 : (*p >> 3) == 30 ? 3 : -1;
    if (n < 0 || (n == 1 && *p < 0xc2)) return 0;
    p++;
    while (n--) {
      if ((*p & 0xc0) != 0x80) return 0;
      p++;
    }
  }
  return 1;
}

/* Refuses a request whose text (a name, a symlink's target) is not UTF-8 (a
 * lookup then simply finds nothing). Returns 1 if refused. */
static int refuse_text(fuse_req_t req, const char *text, int is_lookup) {
  if (!text || valid_utf8(text)) return 0;
  if (is_lookup) {
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    fuse_reply_entry(req, &e);
  } else {
    fuse_reply_err(req, EILSEQ);
  }
  return 1;
}

/* Refuses a name as refuse_text does, and one longer than NAME_MAX with
 * ENAMETOOLONG, as a local disk answers (the kernel lets FUSE names reach 1024). */
static int refuse_name(fuse_req_t req, const char *name, int is_lookup) {
  if (name && strlen(name) > NAME_MAX) {
    fuse_reply_err(req, ENAMETOOLONG);
    return 1;
  }
  return refuse_text(req, name, is_lookup);
}

static uint64_t fh_of(struct fuse_file_info *fi) { return fi ? fi->fh : 0; }

/* ---- the operations ---------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn) {
  gfs *g = userdata;
  g->kernel_capable = conn->capable;
  /* Large requests both ways: libfuse sizes max_pages from max_write. */
  conn->max_write = g->max_write;
  conn->max_read = 0; /* no limit below max_pages */
  if (g->max_readahead) conn->max_readahead = g->max_readahead;
  unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_ATOMIC_O_TRUNC |
                  FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_CACHE_SYMLINKS;
  if (g->writeback_cache) want |= FUSE_CAP_WRITEBACK_CACHE;
  conn->want |= want & conn->capable;
  /* No lock ops are implemented: the kernel keeps locks local. */
  conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
  g->negotiated_max_write = conn->max_write;
  g->negotiated_max_readahead = conn->max_readahead;
  g->negotiated_want = conn->want;
  g->pt.parallel_want = (conn->want & FUSE_CAP_PARALLEL_DIROPS) != 0; /* passed on by passthrough.c's INIT patch */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  if (refuse_name(req, name, 1)) return;
  gfs_msg *m = new_msg(OP_LOOKUP, req, parent);
  if (m) m->name = dup_name(name);
  forward(m, req);
}

/* The kernel's references to a node id: JS keeps the count, no reply is due. */
static void forget_one(gfs *g, fuse_ino_t ino, uint64_t nlookup) {
  dattr_forget(g, ino); /* JS may give the node id to another path */
  gfs_msg *m = new_msg(OP_FORGET, NULL, ino);
  if (!m) return; /* the node id lingers in JS: harmless */
  m->size = nlookup;
  gfs_enqueue(g, m);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  forget_one(fuse_req_userdata(req), ino, nlookup);
  fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  gfs *g = fuse_req_userdata(req);
  for (size_t i = 0; i < count; i++) forget_one(g, forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  gfs *g = fuse_req_userdata(req);
  if (dattr_try_reply(g, req, ino)) return;
  gfs_msg *m = new_msg(OP_GETATTR, req, ino);
  if (m) {
    m->fh = fh_of(fi);
    dattr_forwarded(g, req, ino);
  }
  forward(m, req);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  dattr_changing(fuse_req_userdata(req), req, ino, 0);
  gfs_msg *m = new_msg(OP_SETATTR, req, ino);
  if (m) {
    m->fh = fh_of(fi);
    m->flags = (uint32_t)to_set;
    m->set[0] = attr->st_mode;
    m->set[1] = attr->st_uid;
    m->set[2] = attr->st_gid;
    m->set[3] = (double)attr->st_size;
    m->set[4] = (double)attr->st_atim.tv_sec;
    m->set[5] = (double)attr->st_atim.tv_nsec;
    m->set[6] = (double)attr->st_mtim.tv_sec;
    m->set[7] = (double)attr->st_mtim.tv_nsec;
  }
  forward(m, req);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino) { forward(new_msg(OP_READLINK, req, ino), req); }

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  if (refuse_name(req, name, 0)) return;
  dattr_changing(fuse_req_userdata(req), req, parent, 0); /* the directory changes */
  gfs_msg *m = new_msg(OP_MKNOD, req, parent);
  if (m) {
    m->name = dup_name(name);
    m->mode = mode;
    m->size = (uint64_t)rdev; /* a device node's number (the message has no field of its own for it) */
  }
  forward(m, req);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  if (refuse_name(req, name, 0)) return;
  dattr_changing(fuse_req_userdata(req), req, parent, 0); /* the directory changes */
  gfs_msg *m = new_msg(OP_MKDIR, req, parent);
  if (m) {
    m->name = dup_name(name);
    m->mode = mode;
  }
  forward(m, req);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  if (refuse_name(req, name, 0)) return;
  dattr_changing(fuse_req_userdata(req), req, parent, 0); /* the directory changes */
  gfs_msg *m = new_msg(OP_UNLINK, req, parent);
  if (m) m->name = dup_name(name);
  forward(m, req);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  if (refuse_name(req, name, 0)) return;
  dattr_changing(fuse_req_userdata(req), req, parent, 0); /* the directory changes */
  gfs_msg *m = new_msg(OP_RMDIR, req, parent);
  if (m) m->name = dup_name(name);
  forward(m, req);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  if (refuse_name(req, name, 0) || refuse_text(req, link, 0)) return;
  dattr_changing(fuse_req_userdata(req), req, parent, 0); /* the directory changes */
  gfs_msg *m = new_msg(OP_SYMLINK, req, parent);
  if (m) {
    m->name = dup_name(name);
    m->name2 = dup_name(link);
  }
  forward(m, req);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  if (refuse_name(req, name, 0) || refuse_name(req, newname, 0)) return;
  dattr_changing(fuse_req_userdata(req), req, parent, newparent); /* both directories change */
  gfs_msg *m = new_msg(OP_RENAME, req, parent);
  if (m) {
    m->name = dup_name(name);
    m->ino2 = newparent;
    m->name2 = dup_name(newname);
    m->flags = flags;
  }
  forward(m, req);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  if (refuse_name(req, newname, 0)) return;
  dattr_changing(fuse_req_userdata(req), req, newparent, 0); /* the directory changes */
  gfs_msg *m = new_msg(OP_LINK, req, ino);
  if (m) {
    m->ino2 = newparent;
    m->name = dup_name(newname);
  }
  forward(m, req);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  gfs_msg *m = new_msg(OP_OPEN, req, ino);
  if (m) m->flags = (uint32_t)fi->flags;
  forward(m, req);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  gfs *g = fuse_req_userdata(req);
  STAT_ADD(g, reads, 1);
  STAT_ADD(g, read_bytes, size);
  STAT_ADD(g, read_sizes[size_bucket(size)], 1);
  stat_max(&g->stats.read_max, size);
  /* From the page cache here; what needs the disk goes to the pool, whose threads read side by side
   * (a helper that waited for each cold read in turn made warm sequential reads a third slower). */
  int fast = fast_try_read(g, req, fi->fh, off, size, 1);
  if (fast == 1) return;
  /* Cached, but not all in the page cache: read by the pool (or here, waiting, if it cannot take the job).
   * Counted before the hand-off, which may answer the reader before this thread runs on (and a test
   * that reads the counters once its reader has its bytes must find the request counted). */
  if (fast == FAST_WOULD_BLOCK) {
    STAT_ADD(g, pool_reads, 1);
    if (pool_post(g->pool, OP_READ, req, ino, fi->fh, off, size, NULL, NULL) == 0) return;
    STAT_ADD(g, pool_reads, (uint64_t)-1);
    if (fast_try_read(g, req, fi->fh, off, size, 0)) return;
  }
  gfs_forward_io(OP_READ, req, ino, fi->fh, off, size, NULL, NULL, 0);
}

/* Writes at least this big keep libfuse's request buffer (a megabyte and a page) instead of a copy. */
#define TAKE_BUFFER_BYTES (512u << 10)

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  gfs *g = fuse_req_userdata(req);
  STAT_ADD(g, writes, 1);
  STAT_ADD(g, write_bytes, size);
  STAT_ADD(g, write_sizes[size_bucket(size)], 1);
  stat_max(&g->stats.write_max, size);
  /* libfuse reuses its buffer once we return. A big write takes it whole (libfuse allocates
   * another for the next request): no copy of a megabyte. A smaller one is copied, so that no
   * buffer of a megabyte is held for a few bytes. */
  struct fuse_buf *rb = gfs_request_buf;
  char *block = NULL, *data = (char *)buf;
  if (size >= TAKE_BUFFER_BYTES && rb && rb->mem && buf >= (char *)rb->mem && buf + size <= (char *)rb->mem + rb->size) {
    block = rb->mem;
    rb->mem = NULL;
  } else if (!(data = malloc(size ? size : 1))) {
    fuse_reply_err(req, ENOMEM);
    return;
  } else {
    memcpy(data, buf, size);
  }
  /* Into a registered dirty copy: right here on the helper thread; the JS thread hands it to the
   * pool, since fresh pages can take milliseconds. */
  if (size && dwrite_wanted(g, fi->fh)) {
    if (!gfs_in_request_loop) {
      if (dwrite_try(g, req, ino, fi->fh, data, block, size, off)) return;
    } else {
      STAT_ADD(g, pool_writes, 1); /* before the hand-off, as the pool's reads */
      if (pool_post(g->pool, OP_WRITE, req, ino, fi->fh, off, size, data, block) == 0) return;
      STAT_ADD(g, pool_writes, (uint64_t)-1);
    }
  }
  /* A write the kernel makes from its page cache (a shared mapping's dirty pages) goes at its offset,
   * even through an O_APPEND handle: the kernel only borrowed that handle for it. */
  gfs_forward_io(OP_WRITE, req, ino, fi->fh, off, size, data, block, fi->writepage ? WRITE_FROM_CACHE : 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  gfs_msg *m = new_msg(OP_FLUSH, req, ino);
  if (m) m->fh = fi->fh;
  forward(m, req);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  gfs_msg *m = new_msg(OP_RELEASE, req, ino);
  if (m) m->fh = fi->fh;
  forward(m, req);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  gfs_msg *m = new_msg(OP_FALLOCATE, req, ino);
  if (m) {
    m->fh = fi->fh;
    m->mode = (uint32_t)mode;
    m->off = offset;
    m->size = (uint64_t)length;
  }
  forward(m, req);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi) {
  /* With the writeback cache the kernel holds writes JS has not seen (it does
   * not flush them before an LSEEK): ENOSYS, and the kernel answers every
   * lseek itself from then on (all data). */
  if (((gfs *)fuse_req_userdata(req))->writeback_cache) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  gfs_msg *m = new_msg(OP_LSEEK, req, ino);
  if (m) {
    m->fh = fi->fh;
    m->mode = (uint32_t)whence;
    m->off = off;
  }
  forward(m, req);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  gfs_msg *m = new_msg(OP_FSYNC, req, ino);
  if (m) {
    m->fh = fi->fh;
    m->flags = (uint32_t)datasync;
  }
  forward(m, req);
}

/*
 * Directories need no handle (listings are kept per directory in JS). A
 * kernel that supports it is told so with ENOSYS once: it then opens and
 * releases directories itself, with no request at all, and keeps their
 * listings cached across opens (FOPEN_CACHE_DIR is its default then,
 * checked here: a warm `find` asks nothing). Older kernels get the same
 * caching through the reply. Changes through this mount and invalidations
 * from the change feed drop a cached listing.
 */
static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino;
  gfs *g = fuse_req_userdata(req);
  STAT_ADD(g, opendirs, 1);
  if (g->kernel_capable & FUSE_CAP_NO_OPENDIR_SUPPORT) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  fi->fh = 0;
  fi->keep_cache = 1;
  fi->cache_readdir = 1;
  fuse_reply_open(req, fi);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  fuse_reply_err(req, 0);
}

static void readdir_common(int op, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  gfs_msg *m = new_msg(op, req, ino);
  if (m) {
    m->fh = fi->fh;
    m->off = off;
    m->size = size;
  }
  forward(m, req);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  readdir_common(OP_READDIR, req, ino, size, off, fi);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  readdir_common(OP_READDIRPLUS, req, ino, size, off, fi);
}

/* Directory changes reach the node when they happen: nothing to sync. */
static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  (void)ino;
  (void)datasync;
  (void)fi;
  fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino) { forward(new_msg(OP_STATFS, req, ino), req); }

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  if (refuse_name(req, name, 0)) return;
  gfs_msg *m = new_msg(OP_CREATE, req, parent);
  if (m) {
    m->name = dup_name(name);
    m->mode = mode;
    m->flags = (uint32_t)fi->flags;
  }
  forward(m, req);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
    .readdir = op_readdir,
    .opendir = op_opendir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .create = op_create,
};

/* ---- on the JS thread: draining the queue ------------------------------ */

static napi_value num(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

static napi_value str_or_undef(napi_env env, const char *s) {
  napi_value r;
  if (s) napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  else napi_get_undefined(env, &r);
  return r;
}

static void free_payload(napi_env env, void *data, void *hint) {
  (void)env;
  payload_free(data, hint);
}

/*
 * Bytes of written data (OP_WROTE, WRITE) JS is handed in one go. JS cuts
 * and hashes them as they come (a big file's early upload), about a
 * millisecond a MiB here: handed a whole burst of 1 MiB writes at once, it
 * went 60-175 ms without looking at its sockets, and the early upload's
 * calls to the node waited that long for each answer. So a batch stops
 * after this much and goes on in the next turn of the event loop.
 */
#define DRAIN_DATA_BYTES (8u << 20)

static void free_msgs(gfs *g, gfs_msg *list) {
  while (list) {
    gfs_msg *n = list->next;
    if (list->req) fuse_reply_err(list->req, EIO);
    free(list->name), free(list->name2), payload_free(list->data, list->data_block);
    if (list != g->exit_msg) free(list);
    list = n;
  }
}

/*
 * Calls the dispatcher once per request:
 *   (op, id, ino, ino2, fh, off, size, flags, mode, name, name2, data, set, uid, gid)
 * `id` is the request's address; a reply* function takes it back.
 */
void gfs_drain(napi_env env, napi_value js_cb, gfs *g) {
  pthread_mutex_lock(&g->qlock);
  gfs_msg *list = g->queue;
  g->queue = NULL;
  g->signaled = 0;
  pthread_mutex_unlock(&g->qlock);
  if (env == NULL) {
    /* The environment is going away: nobody will answer these. */
    free_msgs(g, g->draining);
    g->draining = NULL;
    free_msgs(g, list);
    return;
  }
  /* The queue is newest first: serve in arrival order. */
  gfs_msg *fifo = NULL;
  while (list) {
    gfs_msg *n = list->next;
    list->next = fifo;
    fifo = list;
    list = n;
  }
  if (!fifo && !g->draining) return; /* a wake-up whose messages an earlier hand-off took */
  STAT_ADD(g, batches, 1);
  napi_value global;
  napi_get_global(env, &global);
  /* Kept in g->draining as it goes: directWriteStop, called by JS in the
   * middle of the batch, takes its file's OP_WROTE messages out of it.
   * What an earlier drain left there arrived first. */
  gfs_msg **tail = &g->draining;
  while (*tail) tail = &(*tail)->next;
  *tail = fifo;
  uint64_t data_bytes = 0;
  while (g->draining) {
    if (data_bytes >= DRAIN_DATA_BYTES && !g->finished && g->wake) {
      /* Asked for as for a message from another thread. */
      pthread_mutex_lock(&g->qlock);
      int wake = !g->signaled;
      g->signaled = 1;
      pthread_mutex_unlock(&g->qlock);
      if (wake) loop_wake(g);
      STAT_ADD(g, drain_splits, 1);
      break;
    }
    gfs_msg *m = g->draining;
    g->draining = m->next;
    if (m->data) data_bytes += m->size;
    if (m->op == OP_WROTE) dwrite_taken(g, m->size);
    /* A scope per request: a burst of thousands must not pile up handles. */
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    napi_value argv[15];
    argv[0] = num(env, m->op);
    argv[1] = num(env, (double)(uintptr_t)m->req);
    argv[2] = num(env, (double)m->ino);
    argv[3] = num(env, (double)m->ino2);
    argv[4] = num(env, (double)m->fh);
    argv[5] = num(env, (double)m->off);
    argv[6] = num(env, (double)m->size);
    argv[7] = num(env, m->flags);
    argv[8] = num(env, m->mode);
    argv[9] = str_or_undef(env, m->name);
    argv[10] = str_or_undef(env, m->name2);
    if (m->data) {
      if (napi_create_external_buffer(env, m->size, m->data, free_payload, m->data_block, &argv[11]) == napi_ok) m->data = NULL;
      else napi_create_buffer_copy(env, m->size, m->data, NULL, &argv[11]);
    } else {
      napi_get_undefined(env, &argv[11]);
    }
    if (m->op == OP_SETATTR) {
      napi_create_array_with_length(env, 8, &argv[12]);
      for (int i = 0; i < 8; i++) napi_set_element(env, argv[12], i, num(env, m->set[i]));
    } else {
      napi_get_undefined(env, &argv[12]);
    }
    argv[13] = num(env, m->uid);
    argv[14] = num(env, m->gid);
    napi_value result;
    /* The dispatcher answers every request itself, errors included (it
     * catches its own exceptions); one that still escapes is dropped here. */
    if (napi_call_function(env, global, js_cb, 15, argv, &result) != napi_ok) {
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
    }
    napi_close_handle_scope(env, scope);
    free(m->name), free(m->name2), payload_free(m->data, m->data_block);
    if (m != g->exit_msg) free(m);
  }
}

/* The thread-safe function's call: a hand-off the request loop could not make (N-API refused it a scope), or the queue left at teardown (env NULL). */
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)data;
  gfs_drain(env, js_cb, context);
}

/* ---- session lifetime -------------------------------------------------- */

static void destroy_session(gfs *g) {
  if (g->destroyed) return;
  g->destroyed = 1;
  fuse_session_destroy(g->se);
  g->se = NULL;
  fast_free(g->fast);
  g->fast = NULL;
  dwrite_free(g->dwrite);
  g->dwrite = NULL;
  pool_free(g->pool);
  g->pool = NULL;
  free(g->fbuf.mem);
  g->fbuf.mem = NULL;
}

/* Called on the JS thread after each reply. */
void gfs_request_done(gfs *g) {
  int64_t left = __atomic_sub_fetch(&g->outstanding, 1, __ATOMIC_RELAXED);
  if (left == 0 && g->finished) destroy_session(g);
}

static int get_prop_double(napi_env env, napi_value obj, const char *key, double dflt, double *out) {
  bool has;
  napi_has_named_property(env, obj, key, &has);
  if (!has) {
    *out = dflt;
    return 0;
  }
  napi_value v;
  napi_get_named_property(env, obj, key, &v);
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_undefined) {
    *out = dflt;
    return 0;
  }
  if (t == napi_boolean) {
    bool b;
    napi_get_value_bool(env, v, &b);
    *out = b;
    return 0;
  }
  return get_double(env, v, out);
}

static char *get_prop_string(napi_env env, napi_value obj, const char *key) {
  napi_value v;
  napi_get_named_property(env, obj, key, &v);
  return get_string(env, v);
}

/*
 * mount(mountpoint, options, dispatcher) -> handle
 * options: { fsname, chunkDir, attrTimeout, entryTimeout, maxWrite,
 *            maxReadahead, writebackCache, debug, autoUnmount, allowOther }
 */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "mount(mountpoint, options, dispatcher)");
    return NULL;
  }
  char *mp = get_string(env, argv[0]);
  if (!mp) return NULL;
  char *fsname = get_prop_string(env, argv[1], "fsname");
  char *chunk_dir = fsname ? get_prop_string(env, argv[1], "chunkDir") : NULL;
  double attr_timeout, entry_timeout, max_write, max_readahead, wb, debug, auto_unmount, allow_other, passthrough;
  if (!chunk_dir || get_prop_double(env, argv[1], "attrTimeout", 1, &attr_timeout) || get_prop_double(env, argv[1], "entryTimeout", 1, &entry_timeout) ||
      get_prop_double(env, argv[1], "maxWrite", 1 << 20, &max_write) || get_prop_double(env, argv[1], "maxReadahead", 1 << 20, &max_readahead) ||
      get_prop_double(env, argv[1], "writebackCache", 0, &wb) || get_prop_double(env, argv[1], "debug", 0, &debug) ||
      get_prop_double(env, argv[1], "autoUnmount", 1, &auto_unmount) || get_prop_double(env, argv[1], "allowOther", 0, &allow_other) ||
      get_prop_double(env, argv[1], "passthrough", 0, &passthrough)) {
    free(mp), free(fsname), free(chunk_dir);
    return NULL;
  }

  gfs *g = calloc(1, sizeof *g);
  gfs_msg *exit_msg = calloc(1, sizeof *exit_msg);
  if (!g || !exit_msg) {
    free(g), free(exit_msg), free(mp), free(fsname);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  exit_msg->op = OP_EXIT;
  g->exit_msg = exit_msg;
  pthread_mutex_init(&g->reply_lock, NULL);
  dattr_init(g);
  g->mountpoint = mp;
  g->attr_timeout = attr_timeout;
  g->entry_timeout = entry_timeout;
  g->max_write = (unsigned)max_write;
  g->max_readahead = (unsigned)max_readahead;
  g->writeback_cache = wb != 0;
  /* The kernel refuses passthrough beside its writeback cache. */
  g->pt.want = passthrough != 0 && !g->writeback_cache;
  g->fast = fast_new(chunk_dir);
  g->dwrite = dwrite_new(); /* without it every write goes to JS */
  free(chunk_dir);
  pthread_mutex_init(&g->qlock, NULL);

  /* Mount options: the kernel checks permissions against the attributes
   * (the mount answers as the node reports them); subtype shows in mtab. */
  char opts[1024];
  snprintf(opts, sizeof opts, "fsname=%s,subtype=ghostfs,default_permissions%s%s", fsname, auto_unmount ? ",auto_unmount" : "", allow_other ? ",allow_other" : "");
  free(fsname);
  char *args_v[] = {"ghostfs", "-o", opts, debug ? "-d" : NULL, NULL};
  struct fuse_args args = FUSE_ARGS_INIT(debug ? 4 : 3, args_v);
  g->se = fuse_session_new(&args, &ops, sizeof ops, g);
  if (!g->se) {
    napi_throw_error(env, "EINVAL", "libfuse refused the session options");
    goto fail;
  }
  if (fuse_session_mount(g->se, mp) != 0) {
    napi_throw_error(env, "EMOUNT", "mounting failed (see the libfuse message above): is the mountpoint a directory, is /dev/fuse there, is fusermount3 installed?");
    goto fail;
  }
  /* The device I/O hook, for passthrough and for the flags libfuse leaves out of the INIT reply. */
  if (pt_install(g) != 0) g->pt.want = 0; /* mounted all the same, without either */

  napi_value name;
  napi_create_string_utf8(env, "ghostfs-fuse", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[2], NULL, name, 0, 1, NULL, NULL, g, call_js, &g->tsfn) != napi_ok) {
    fuse_session_unmount(g->se);
    napi_throw_error(env, NULL, "cannot create the request hand-off");
    goto fail;
  }
  if (loop_start(g, env, argv[2]) != 0) {
    loop_free(g, env);
    fuse_session_unmount(g->se);
    napi_release_threadsafe_function(g->tsfn, napi_tsfn_abort);
    napi_throw_error(env, NULL, "cannot start the request loop");
    goto fail;
  }
  g->notify = notify_start(g);

  napi_value handle;
  /* No finalizer: the session outlives its handle until finish() and the last reply. */
  napi_create_external(env, g, NULL, NULL, &handle);
  return handle;

fail:
  if (g->se) fuse_session_destroy(g->se);
  fast_free(g->fast);
  dwrite_free(g->dwrite);
  pool_free(g->pool);
  free(g->mountpoint);
  pthread_mutex_destroy(&g->qlock);
  pthread_mutex_destroy(&g->reply_lock);
  dattr_destroy(g);
  free(g->exit_msg);
  free(g);
  return NULL;
}

/* unmount(handle): the loop stops after the mount is detached (JS detaches
 * it by path, and aborts the connection if users keep it busy). */
static napi_value js_unmount(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  gfs *g = get_gfs(env, argv[0]);
  if (!g) return NULL;
  if (g->se && !g->finished) fuse_session_exit(g->se);
  return NULL;
}

/* finish(handle): after OP_EXIT; frees what nothing needs any more. */
static napi_value js_finish(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  gfs *g = get_gfs(env, argv[0]);
  if (!g || g->finished) return NULL;
  loop_joined(g);
  if (!g->in_scope) loop_free(g, env); /* else when the scope closes (request_loop.c) */
  napi_release_threadsafe_function(g->tsfn, napi_tsfn_release);
  g->finished = 1;
  if (__atomic_load_n(&g->outstanding, __ATOMIC_RELAXED) == 0) destroy_session(g);
  return NULL;
}

/* ---- replies, from JS -------------------------------------------------- */

/* Attributes travel as 15 numbers: ino mode nlink uid gid rdev size blocks
 * atime_s atime_ns mtime_s mtime_ns ctime_s ctime_ns, then the kernel node
 * id of the entry (ino is what stat shows; the node id is the kernel's
 * handle for the file, given out by JS). */
#define ATTR_LEN 15

static int attr_from(const double *a, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)a[0];
  st->st_mode = (mode_t)a[1];
  st->st_nlink = (nlink_t)a[2];
  st->st_uid = (uid_t)a[3];
  st->st_gid = (gid_t)a[4];
  st->st_rdev = (dev_t)a[5];
  st->st_size = (off_t)a[6];
  st->st_blocks = (blkcnt_t)a[7];
  st->st_blksize = 1 << 20;
  st->st_atim.tv_sec = (time_t)a[8];
  st->st_atim.tv_nsec = (long)a[9];
  st->st_mtim.tv_sec = (time_t)a[10];
  st->st_mtim.tv_nsec = (long)a[11];
  st->st_ctim.tv_sec = (time_t)a[12];
  st->st_ctim.tv_nsec = (long)a[13];
  return 0;
}

/* An empty array's data may be NULL: success is the return value, not the pointer. */
static int get_f64(napi_env env, napi_value v, size_t min_len, double **out) {
  napi_typedarray_type t;
  size_t len;
  void *data;
  bool is_ta;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta || napi_get_typedarray_info(env, v, &t, &len, &data, NULL, NULL) != napi_ok || t != napi_float64_array || len < min_len) {
    napi_throw_type_error(env, NULL, "expected a Float64Array of attributes");
    return -1;
  }
  *out = data;
  return 0;
}

/*
 * Sends a reply unless the session is closing, in which case the request is
 * only freed (its caller is gone with the connection). The lock keeps the
 * session fd from being closed while a reply is written to it.
 */
#define SEND(r, call)                              \
  do {                                             \
    pthread_mutex_lock(&(r)->g->reply_lock);       \
    if ((r)->g->closing) fuse_reply_none((r)->req); \
    else (void)(call);                             \
    pthread_mutex_unlock(&(r)->g->reply_lock);     \
  } while (0)

typedef struct {
  size_t argc;
  napi_value argv[8];
  fuse_req_t req;
  gfs *g;
} reply_args;

static int reply_begin(napi_env env, napi_callback_info info, reply_args *r, size_t want) {
  r->argc = 8;
  if (napi_get_cb_info(env, info, &r->argc, r->argv, NULL, NULL) != napi_ok || r->argc < want) {
    napi_throw_type_error(env, NULL, "missing reply arguments");
    return -1;
  }
  double id;
  if (get_double(env, r->argv[0], &id)) return -1;
  r->req = (fuse_req_t)(uintptr_t)id;
  r->g = fuse_req_userdata(r->req);
  return 0;
}

static napi_value reply_end(reply_args *r) {
  gfs_request_done(r->g);
  return NULL;
}

/* replyErr(id, errno) */
static napi_value js_reply_err(napi_env env, napi_callback_info info) {
  reply_args r;
  double e;
  if (reply_begin(env, info, &r, 2) || get_double(env, r.argv[1], &e)) return NULL;
  dattr_answered(r.g, r.req, NULL);
  SEND(&r, fuse_reply_err(r.req, (int)e));
  return reply_end(&r);
}

/* replyEntry(id, attr | null) — null is a negative entry the kernel may cache. */
static napi_value js_reply_entry(napi_env env, napi_callback_info info) {
  reply_args r;
  if (reply_begin(env, info, &r, 2)) return NULL;
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  napi_valuetype t;
  napi_typeof(env, r.argv[1], &t);
  if (t != napi_null && t != napi_undefined) {
    double *a;
    if (get_f64(env, r.argv[1], ATTR_LEN, &a)) return NULL;
    attr_from(a, &e.attr);
    e.ino = (fuse_ino_t)a[14];
    e.attr_timeout = r.g->attr_timeout;
  }
  e.entry_timeout = r.g->entry_timeout;
  dattr_answered(r.g, r.req, NULL);
  SEND(&r, fuse_reply_entry(r.req, &e));
  return reply_end(&r);
}

/* replyAttr(id, attr) */
static napi_value js_reply_attr(napi_env env, napi_callback_info info) {
  reply_args r;
  if (reply_begin(env, info, &r, 2)) return NULL;
  double *a;
  if (get_f64(env, r.argv[1], ATTR_LEN, &a)) return NULL;
  struct stat st;
  attr_from(a, &st);
  dattr_answered(r.g, r.req, &st);
  SEND(&r, fuse_reply_attr(r.req, &st, r.g->attr_timeout));
  return reply_end(&r);
}

static void open_flags(struct fuse_file_info *fi, uint32_t bits) {
  fi->keep_cache = (bits & 1) != 0;
  fi->direct_io = (bits & 2) != 0;
  fi->nonseekable = (bits & 4) != 0;
  fi->cache_readdir = (bits & 8) != 0;
  fi->noflush = (bits & 16) != 0;
}

/*
 * replyOpen(id, fh, bits[, backingId]) — bits: 1 keep_cache, 2 direct_io, 4 nonseekable,
 * 8 cache_readdir, 16 noflush. A backing id passes the file through to that backing file.
 */
static napi_value js_reply_open(napi_env env, napi_callback_info info) {
  reply_args r;
  double fh, bits, backing = 0;
  if (reply_begin(env, info, &r, 3) || get_double(env, r.argv[1], &fh) || get_double(env, r.argv[2], &bits)) return NULL;
  napi_valuetype t = napi_undefined;
  if (r.argc > 3) napi_typeof(env, r.argv[3], &t);
  if (t != napi_undefined && get_double(env, r.argv[3], &backing)) return NULL;
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  fi.fh = (uint64_t)fh;
  open_flags(&fi, (uint32_t)bits);
  if (backing > 0) {
    STAT_ADD(r.g, passthrough_opens, 1);
    SEND(&r, pt_reply_open(r.req, &fi, (int32_t)backing));
  } else {
    SEND(&r, fuse_reply_open(r.req, &fi));
  }
  return reply_end(&r);
}

/* replyCreate(id, attr, fh, bits) */
static napi_value js_reply_create(napi_env env, napi_callback_info info) {
  reply_args r;
  double fh, bits;
  if (reply_begin(env, info, &r, 4) || get_double(env, r.argv[2], &fh) || get_double(env, r.argv[3], &bits)) return NULL;
  double *a;
  if (get_f64(env, r.argv[1], ATTR_LEN, &a)) return NULL;
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  attr_from(a, &e.attr);
  e.ino = (fuse_ino_t)a[14];
  e.attr_timeout = r.g->attr_timeout;
  e.entry_timeout = r.g->entry_timeout;
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  fi.fh = (uint64_t)fh;
  open_flags(&fi, (uint32_t)bits);
  SEND(&r, fuse_reply_create(r.req, &e, &fi));
  return reply_end(&r);
}

/* replyBuf(id, buffer, length) */
static napi_value js_reply_buf(napi_env env, napi_callback_info info) {
  reply_args r;
  double n;
  if (reply_begin(env, info, &r, 3) || get_double(env, r.argv[2], &n)) return NULL;
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, r.argv[1], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return NULL;
  }
  if (n < 0 || (size_t)n > len) n = (double)len;
  SEND(&r, fuse_reply_buf(r.req, data, (size_t)n));
  return reply_end(&r);
}

/* replyBufs(id, buffers[]) — the data of a read in pieces (views of cached
 * chunks), gathered by the kernel write: no copy into one buffer first. */
#define REPLY_IOV_MAX 64
static napi_value js_reply_bufs(napi_env env, napi_callback_info info) {
  reply_args r;
  if (reply_begin(env, info, &r, 2)) return NULL;
  uint32_t n = 0;
  if (napi_get_array_length(env, r.argv[1], &n) != napi_ok || n > REPLY_IOV_MAX) {
    napi_throw_type_error(env, NULL, "expected an array of at most 64 Buffers");
    return NULL;
  }
  struct iovec iov[REPLY_IOV_MAX];
  for (uint32_t i = 0; i < n; i++) {
    napi_value b;
    if (napi_get_element(env, r.argv[1], i, &b) != napi_ok || napi_get_buffer_info(env, b, &iov[i].iov_base, &iov[i].iov_len) != napi_ok) {
      napi_throw_type_error(env, NULL, "expected an array of Buffers");
      return NULL;
    }
  }
  SEND(&r, fuse_reply_iov(r.req, iov, (int)n));
  return reply_end(&r);
}

/* replyWrite(id, count) */
static napi_value js_reply_write(napi_env env, napi_callback_info info) {
  reply_args r;
  double n;
  if (reply_begin(env, info, &r, 2) || get_double(env, r.argv[1], &n)) return NULL;
  SEND(&r, fuse_reply_write(r.req, (size_t)n));
  return reply_end(&r);
}

/* replyLseek(id, offset) */
static napi_value js_reply_lseek(napi_env env, napi_callback_info info) {
  reply_args r;
  double off;
  if (reply_begin(env, info, &r, 2) || get_double(env, r.argv[1], &off)) return NULL;
  SEND(&r, fuse_reply_lseek(r.req, (off_t)off));
  return reply_end(&r);
}

/* replyReadlink(id, target) */
static napi_value js_reply_readlink(napi_env env, napi_callback_info info) {
  reply_args r;
  if (reply_begin(env, info, &r, 2)) return NULL;
  char *s = get_string(env, r.argv[1]);
  if (!s) return NULL;
  SEND(&r, fuse_reply_readlink(r.req, s));
  free(s);
  return reply_end(&r);
}

/* replyStatfs(id, [bsize, frsize, blocks, bfree, bavail, files, ffree, favail, namemax]) */
static napi_value js_reply_statfs(napi_env env, napi_callback_info info) {
  reply_args r;
  if (reply_begin(env, info, &r, 2)) return NULL;
  double *a;
  if (get_f64(env, r.argv[1], 9, &a)) return NULL;
  struct statvfs s;
  memset(&s, 0, sizeof s);
  s.f_bsize = (unsigned long)a[0];
  s.f_frsize = (unsigned long)a[1];
  s.f_blocks = (fsblkcnt_t)a[2];
  s.f_bfree = (fsblkcnt_t)a[3];
  s.f_bavail = (fsblkcnt_t)a[4];
  s.f_files = (fsfilcnt_t)a[5];
  s.f_ffree = (fsfilcnt_t)a[6];
  s.f_favail = (fsfilcnt_t)a[7];
  s.f_namemax = (unsigned long)a[8];
  SEND(&r, fuse_reply_statfs(r.req, &s));
  return reply_end(&r);
}

/*
 * replyDir(id, size, plus, firstOffset, names[], attrs) — packs entries
 * until the kernel's buffer is full. Entry i gets offset firstOffset+i+1:
 * the kernel asks from there next time. Returns how many entries fitted.
 */
static napi_value js_reply_dir(napi_env env, napi_callback_info info) {
  reply_args r;
  double size_d, plus_d, first_d;
  if (reply_begin(env, info, &r, 6) || get_double(env, r.argv[1], &size_d) || get_double(env, r.argv[2], &plus_d) || get_double(env, r.argv[3], &first_d)) return NULL;
  uint32_t count;
  if (napi_get_array_length(env, r.argv[4], &count) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected an array of names");
    return NULL;
  }
  double *attrs;
  if (get_f64(env, r.argv[5], (size_t)count * ATTR_LEN, &attrs)) return NULL;
  size_t size = (size_t)size_d;
  char *buf = malloc(size ? size : 1);
  if (!buf) {
    SEND(&r, fuse_reply_err(r.req, ENOMEM));
    return reply_end(&r);
  }
  size_t used = 0;
  uint32_t i;
  char name[1024];
  for (i = 0; i < count; i++) {
    napi_value v;
    size_t nlen;
    napi_get_element(env, r.argv[4], i, &v);
    if (napi_get_value_string_utf8(env, v, name, sizeof name, &nlen) != napi_ok) break;
    off_t next = (off_t)first_d + i + 1;
    size_t need;
    if (plus_d != 0) {
      struct fuse_entry_param e;
      memset(&e, 0, sizeof e);
      attr_from(attrs + (size_t)i * ATTR_LEN, &e.attr);
      /* "." and ".." carry no entry: the kernel does not look them up. */
      int dots = strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
      e.ino = dots ? 0 : (fuse_ino_t)attrs[(size_t)i * ATTR_LEN + 14];
      e.attr_timeout = dots ? 0 : r.g->attr_timeout;
      e.entry_timeout = dots ? 0 : r.g->entry_timeout;
      if (dots) e.attr.st_ino = e.attr.st_ino ? e.attr.st_ino : 1;
      need = fuse_add_direntry_plus(r.req, buf + used, size - used, name, &e, next);
    } else {
      struct stat st;
      attr_from(attrs + (size_t)i * ATTR_LEN, &st);
      need = fuse_add_direntry(r.req, buf + used, size - used, name, &st, next);
    }
    if (need > size - used) break;
    used += need;
  }
  SEND(&r, fuse_reply_buf(r.req, buf, used));
  free(buf);
  reply_end(&r);
  napi_value out;
  napi_create_uint32(env, i, &out);
  return out;
}

/*
 * reqGroups(id) -> [gid, ...] | null: the supplementary groups of the
 * process that made a request not answered yet (libfuse reads them from
 * /proc); null when they cannot be had (the process is gone, or the
 * request came from the kernel itself). FUSE passes only the caller's
 * uid and gid: this is for the rare check the kernel leaves to the mount.
 */
static napi_value js_req_groups(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  double id;
  if (get_double(env, argv[0], &id)) return NULL;
  fuse_req_t req = (fuse_req_t)(uintptr_t)id;
  gid_t small[64], *list = small;
  int n = fuse_req_getgroups(req, 64, list);
  if (n > 64) {
    /* More than fit: asked again with room for them (the caller waits in its call meanwhile, so they are the same). */
    int room = n;
    list = malloc((size_t)room * sizeof *list);
    n = list ? fuse_req_getgroups(req, room, list) : -ENOMEM;
    if (n > room) n = room;
  }
  napi_value out = NULL;
  napi_status st = n < 0 ? napi_get_null(env, &out) : napi_create_array_with_length(env, (size_t)n, &out);
  for (int i = 0; st == napi_ok && i < n; i++) st = napi_set_element(env, out, (uint32_t)i, num(env, list[i]));
  if (list != small) free(list);
  if (st != napi_ok) napi_throw_error(env, NULL, "reqGroups: cannot make the array");
  return st == napi_ok ? out : NULL;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  gfs *g = get_gfs(env, argv[0]);
  if (!g) return NULL;
  napi_value o;
  napi_create_object(env, &o);
#define PUT(key, val) napi_set_named_property(env, o, key, num(env, (double)(val)))
#define LOAD(field) __atomic_load_n(&g->stats.field, __ATOMIC_RELAXED)
  PUT("forwarded", LOAD(forwarded));
  PUT("batches", LOAD(batches));
  PUT("drainSplits", LOAD(drain_splits));
  PUT("outstanding", __atomic_load_n(&g->outstanding, __ATOMIC_RELAXED));
  PUT("reads", LOAD(reads));
  PUT("readBytes", LOAD(read_bytes));
  PUT("readMax", LOAD(read_max));
  PUT("fastReads", LOAD(fast_reads));
  PUT("fastBytes", LOAD(fast_bytes));
  PUT("fastFallbacks", LOAD(fast_fallbacks));
  PUT("poolReads", LOAD(pool_reads));
  PUT("poolWrites", LOAD(pool_writes));
  PUT("helperRequests", LOAD(helper_requests));
  PUT("directWrites", LOAD(direct_writes));
  PUT("writes", LOAD(writes));
  PUT("writeBytes", LOAD(write_bytes));
  PUT("writeMax", LOAD(write_max));
  PUT("notifications", LOAD(notifications));
  PUT("notifyErrors", LOAD(notify_errors));
  PUT("opendirs", LOAD(opendirs));
  PUT("backingFiles", LOAD(backing_files));
  PUT("passthroughOpens", LOAD(passthrough_opens));
  PUT("dirAttrHits", LOAD(dir_attr_hits));
  /* 0: not wanted or not offered by the kernel; 1: asked for in the INIT reply (backingOpen then tells whether the kernel agreed). */
  PUT("passthrough", g->pt.asked);
  PUT("kernelPassthrough", g->pt.kernel_offers);
  /* 1: lookups and readdirs of one directory run side by side (asked for in the INIT reply; the kernel offered it). */
  PUT("parallelDirops", g->pt.parallel_asked);
  PUT("maxWrite", g->negotiated_max_write);
  PUT("maxReadahead", g->negotiated_max_readahead);
  PUT("capable", g->kernel_capable);
  PUT("want", g->negotiated_want);
  static const char *bucket_names[6] = {"4K", "32K", "128K", "256K", "512K", "1M"};
  napi_value rs, ws;
  napi_create_object(env, &rs);
  napi_create_object(env, &ws);
  for (int i = 0; i < 6; i++) {
    napi_set_named_property(env, rs, bucket_names[i], num(env, (double)LOAD(read_sizes[i])));
    napi_set_named_property(env, ws, bucket_names[i], num(env, (double)LOAD(write_sizes[i])));
  }
  napi_set_named_property(env, o, "readSizes", rs);
  napi_set_named_property(env, o, "writeSizes", ws);
#undef PUT
#undef LOAD
  return o;
}

napi_value driver_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "mount", js_mount);
  export_fn(env, exports, "unmount", js_unmount);
  export_fn(env, exports, "finish", js_finish);
  export_fn(env, exports, "replyErr", js_reply_err);
  export_fn(env, exports, "replyEntry", js_reply_entry);
  export_fn(env, exports, "replyAttr", js_reply_attr);
  export_fn(env, exports, "replyOpen", js_reply_open);
  export_fn(env, exports, "replyCreate", js_reply_create);
  export_fn(env, exports, "replyBuf", js_reply_buf);
  export_fn(env, exports, "replyBufs", js_reply_bufs);
  export_fn(env, exports, "replyWrite", js_reply_write);
  export_fn(env, exports, "replyLseek", js_reply_lseek);
  export_fn(env, exports, "replyReadlink", js_reply_readlink);
  export_fn(env, exports, "replyStatfs", js_reply_statfs);
  export_fn(env, exports, "replyDir", js_reply_dir);
  export_fn(env, exports, "stats", js_stats);
  export_fn(env, exports, "reqGroups", js_req_groups);
  return exports;
}
