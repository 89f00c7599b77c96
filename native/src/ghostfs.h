/*
 * ghostfs native addon: shared declarations.
 *
 * fuse_driver.c  the libfuse3 low-level session and the hand-off of
 *                requests to JavaScript (and of replies back)
 * request_loop.c requests read and decoded on the JS thread and a helper
 * bulk_pool.c    threads for the fast paths' reads and writes that may wait
 * fast_read.c    reads served in C from cached chunk files, without JS
 * direct_write.c writes made in C into a dirty copy, JS told afterwards
 * notify.c       kernel cache invalidation, from a thread of its own
 * sys_calls.c    filesystem calls Node lacks (renameat2, O_TMPFILE, ...)
 * atomic_write.c a new file written, made durable and named in one worker job
 * passthrough.c  FUSE passthrough negotiated on the wire, backing files
 * write_out.c    a big file's pages synced and dropped from the page cache
 * file_copy.c    byte ranges copied between files, by the kernel or a buffer
 * tree_watch.c   the node's inotify, read by a thread, handed to JS in batches
 * addon.c        module registration and small N-API helpers
 */
#ifndef GHOSTFS_H
#define GHOSTFS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

/* Frees a payload (none once `data` is NULL: handed on): its own allocation, or the block it lies in. */
static inline void payload_free(char *data, void *block) {
  if (data) free(block ? block : (void *)data);
}

/* Operation codes shared with src/mount/drivers/native.ts. */
enum gfs_op {
  OP_EXIT = 0,
  OP_LOOKUP = 1,
  OP_GETATTR = 2,
  OP_SETATTR = 3,
  OP_READLINK = 4,
  OP_MKDIR = 5,
  OP_UNLINK = 6,
  OP_RMDIR = 7,
  OP_SYMLINK = 8,
  OP_RENAME = 9,
  OP_LINK = 10,
  OP_OPEN = 11,
  OP_READ = 12,
  OP_WRITE = 13,
  OP_FLUSH = 14,
  OP_RELEASE = 15,
  OP_FSYNC = 16,
  OP_OPENDIR = 17, /* answered in C: never sent to JS */
  OP_READDIR = 18,
  OP_READDIRPLUS = 19,
  OP_RELEASEDIR = 20, /* likewise */
  OP_STATFS = 21,
  OP_CREATE = 22,
  OP_MKNOD = 23,
  OP_FORGET = 24, /* no reply: the kernel dropped `size` references to `ino` */
  OP_WROTE = 25,  /* no reply: a write to `fh` was made in C (direct_write.c); its bytes */
  OP_FALLOCATE = 26,
  OP_LSEEK = 27, /* SEEK_DATA / SEEK_HOLE only: the kernel does the others itself */
};

/* One kernel request on its way to JavaScript. */
typedef struct gfs_msg {
  struct gfs_msg *next;
  int op;
  fuse_req_t req;
  uint64_t ino;  /* inode, or parent directory */
  uint64_t ino2; /* new parent (rename, link) */
  uint64_t fh;
  int64_t off;
  uint64_t size;
  uint32_t flags; /* open/rename flags; setattr's to_set; a write's WRITE_FROM_CACHE */
  uint32_t mode;
  uint32_t uid, gid; /* the caller */
  double set[9];     /* setattr: mode uid gid size atime_s atime_ns mtime_s mtime_ns (set[8] unused) */
  char *name, *name2;
  char *data; /* write payload; JavaScript owns it once handed over */
  void *data_block; /* the allocation holding `data` when it does not start there (a request buffer taken whole) */
} gfs_msg;

typedef struct gfs_fast gfs_fast;
typedef struct gfs_pool gfs_pool;
typedef struct gfs_dwrite gfs_dwrite;
typedef struct gfs_notify gfs_notify;

/* Counters read by stats(); updated with atomic adds from any thread. */
typedef struct gfs_stats {
  uint64_t forwarded;
  uint64_t batches;
  uint64_t drain_splits; /* hand-offs to JS cut short after DRAIN_DATA_BYTES (see gfs_drain) */
  uint64_t reads, read_bytes, read_max;
  uint64_t fast_reads, fast_bytes, fast_fallbacks;
  uint64_t pool_reads, pool_writes; /* fast-path reads and direct writes handed to the bulk pool */
  uint64_t helper_requests;         /* requests a helper thread decoded (request_loop.c) */
  uint64_t writes, write_bytes, write_max;
  uint64_t direct_writes; /* writes made into a dirty copy in C (direct_write.c) */
  uint64_t read_sizes[6]; /* <=4K <=32K <=128K <=256K <=512K <=1M+ */
  uint64_t write_sizes[6];
  uint64_t notifications, notify_errors;
  uint64_t opendirs; /* opendir requests the kernel sent (none once it opens directories itself) */
  uint64_t backing_files, passthrough_opens;
  uint64_t dir_attr_hits; /* GETATTRs of directories answered here (dir_attrs.c) */
} gfs_stats;

/* Directory attributes kept in C (dir_attrs.c): a slot per node id modulo DATTR_SLOTS. */
#define DATTR_SLOTS 1024
#define DATTR_PENDING 64
#define DATTR_CHANGES 256
typedef struct {
  uint64_t ino;
  int valid;
  double expires; /* CLOCK_MONOTONIC seconds */
  struct stat st;
} dattr_slot;
typedef struct {
  fuse_req_t req; /* a GETATTR handed to JS */
  uint64_t ino;
  uint64_t stamp; /* inval_seq when it came in */
} dattr_pending;
typedef struct {
  fuse_req_t req; /* a change to one or two directories, handed to JS and not answered yet */
  uint64_t ino[2];
} dattr_change;
typedef struct {
  pthread_mutex_t lock;
  int untracked; /* more changes were under way at once than `changes` holds: nothing is kept */
  dattr_change changes[DATTR_CHANGES];
  uint64_t inval_seq; /* bumped by every invalidation */
  unsigned next_pending;
  dattr_pending pending[DATTR_PENDING];
  dattr_slot slots[DATTR_SLOTS];
} dattr_cache;

typedef struct gfs {
  struct fuse_session *se;
  char *mountpoint;
  /* The request loop (request_loop.c), on the JS thread. */
  uv_poll_t *poll;
  uv_async_t *wake; /* has JS handed the queue in a turn of its own (loop_wake) */
  napi_env env;
  napi_ref dispatcher;
  napi_async_context async_ctx;
  struct fuse_buf fbuf; /* the request being decoded */
  gfs_pool *pool;
  pthread_t helper; /* reads requests beside the JS thread (request_loop.c) */
  int helper_started, helper_stop;
  pthread_t ender; /* stops the loop's threads and reports the end */
  int ender_started;
  int in_scope; /* the JS thread is inside the loop's callback scope */

  napi_threadsafe_function tsfn; /* hands JS the queue where the loop's own hand-off cannot (loop_wake, hand_to_js); keeps the loop alive until finish */
  pthread_mutex_t qlock;
  gfs_msg *queue; /* newest first; reversed when drained */
  int signaled;
  gfs_msg *draining; /* the rest of the batch JS is being handed, or that a cut one left for the next hand-off; oldest first (JS thread only) */

  int64_t outstanding; /* requests handed to JS and not answered yet */
  gfs_msg *exit_msg;   /* allocated up front: the loop's end is always reported */
  /* Replies from JS take this lock; once `closing` is set the session fd is
   * being closed and replies only free their request. */
  pthread_mutex_t reply_lock;
  int closing;
  int finished;        /* unmounted and released: replies free the session when the last is in */
  int destroyed;

  double attr_timeout, entry_timeout;
  unsigned max_write, max_readahead;
  int writeback_cache;
  unsigned negotiated_max_write, negotiated_max_readahead, negotiated_want, kernel_capable;

  gfs_fast *fast;
  gfs_dwrite *dwrite;
  gfs_notify *notify;
  gfs_stats stats;
  dattr_cache dattr;

  /* FUSE passthrough (passthrough.c): wanted by JS, offered by the kernel, asked for in the INIT reply;
   * and parallel dirops, which libfuse 3.14 leaves out of that reply: wanted (op_init), offered, asked for. */
  struct {
    int want;
    int kernel_offers, init_replied, asked;
    int parallel_want, kernel_parallel, parallel_asked;
    uint64_t init_unique;
  } pt;
} gfs;

#define STAT_ADD(g, field, n) __atomic_fetch_add(&(g)->stats.field, (n), __ATOMIC_RELAXED)
void stat_max(uint64_t *slot, uint64_t v);
int size_bucket(uint64_t n);

/* fuse_driver.c */
napi_value driver_exports(napi_env env, napi_value exports);
void gfs_request_done(gfs *g);
/* Hands a message to the JS thread. */
void gfs_enqueue(gfs *g, gfs_msg *m);
/* A READ or WRITE for JS (a write's bytes, see payload_free, JS's from now on); ENOMEM answered here. */
/* flags of an OP_WRITE: WRITE_FROM_CACHE, the kernel writing back a shared mapping's pages. */
#define WRITE_FROM_CACHE 1u
void gfs_forward_io(int op, fuse_req_t req, fuse_ino_t ino, uint64_t fh, int64_t off, uint64_t size, char *data, void *block, uint32_t flags);
/* Gives JS every queued message (on the JS thread). */
void gfs_drain(napi_env env, napi_value js_cb, gfs *g);

/* request_loop.c */
/* Set on the JS thread while the loop decodes a burst: messages queued then need no wake-up, and
 * no file data is waited for on a disk. */
extern __thread int gfs_in_request_loop;
/* The request buffer being decoded on this thread (a write may take it whole). */
extern __thread struct fuse_buf *gfs_request_buf;
int loop_start(gfs *g, napi_env env, napi_value dispatcher);
void loop_free(gfs *g, napi_env env);
/* Has JS handed the queue soon, in a turn of the event loop of its own; from any thread. */
void loop_wake(gfs *g);
/* After the end was reported: the thread that reported it is gone. */
void loop_joined(gfs *g);

/* bulk_pool.c */
gfs_pool *pool_new(gfs *g);
/* Queues a READ or a WRITE (with its bytes, the pool's from then on) for the fast paths; -1 when it cannot. */
int pool_post(gfs_pool *p, int op, fuse_req_t req, fuse_ino_t ino, uint64_t fh, int64_t off, uint64_t size, char *data, void *block);
/* Answers what is queued and stops the threads. */
void pool_stop(gfs_pool *p);
void pool_free(gfs_pool *p);

/* dir_attrs.c */
void dattr_init(gfs *g);
void dattr_destroy(gfs *g);
/* Answers a GETATTR of a directory from kept attributes; 0 means "ask JS". */
int dattr_try_reply(gfs *g, fuse_req_t req, fuse_ino_t ino);
/* A GETATTR goes to JS: its answer may be kept (dattr_answered), unless something is invalidated meanwhile. */
void dattr_forwarded(gfs *g, fuse_req_t req, fuse_ino_t ino);
/* The node's kept attributes (if any) are no longer to be trusted, nor any answer still on its way. */
void dattr_drop(gfs *g, fuse_ino_t ino);
/* A request that changes directory a (and b, if not 0) goes to JS: dropped now and again once answered (dattr_answered). */
void dattr_changing(gfs *g, fuse_req_t req, fuse_ino_t a, fuse_ino_t b);
/* JS answers `req` (with attributes `st`, or NULL): a GETATTR's are kept, a change to directories is over. */
void dattr_answered(gfs *g, fuse_req_t req, const struct stat *st);
/* The kernel forgot the node id. */
void dattr_forget(gfs *g, fuse_ino_t ino);

/* fast_read.c */
gfs_fast *fast_new(const char *chunk_dir);
void fast_free(gfs_fast *f);
/* Answers a read from chunk files if every chunk it needs is local; 0 means "ask JS". With
 * `nowait`, only from the page cache: FAST_WOULD_BLOCK means the disk is needed (the bulk pool's job). */
#define FAST_WOULD_BLOCK 2
int fast_try_read(gfs *g, fuse_req_t req, uint64_t fh, int64_t off, uint64_t size, int nowait);
napi_value fast_exports(napi_env env, napi_value exports);

/* direct_write.c */
gfs_dwrite *dwrite_new(void);
void dwrite_free(gfs_dwrite *w);
/* Whether writes to `fh` go into its dirty copy here (checked again when the write is made). */
int dwrite_wanted(gfs *g, uint64_t fh);
/* Makes a write into the registered dirty copy and answers it, the bytes (see payload_free) going
 * on to JS in the OP_WROTE message; 0 means "ask JS" (the bytes are still the caller's). */
int dwrite_try(gfs *g, fuse_req_t req, fuse_ino_t ino, uint64_t fh, char *data, void *block, size_t size, off_t off);
void dwrite_taken(gfs *g, uint64_t size);
napi_value dwrite_exports(napi_env env, napi_value exports);

/* notify.c */
gfs_notify *notify_start(gfs *g);
void notify_stop(gfs_notify *n);
napi_value notify_exports(napi_env env, napi_value exports);

/* sys_calls.c */
napi_value sys_exports(napi_env env, napi_value exports);

/* atomic_write.c */
napi_value atomic_write_exports(napi_env env, napi_value exports);

/* send_range.c */
napi_value send_range_exports(napi_env env, napi_value exports);

/* passthrough.c */
int pt_install(gfs *g);
/* fuse_reply_open, with the file passed through to the backing file `backing_id` (> 0). */
int pt_reply_open(fuse_req_t req, const struct fuse_file_info *fi, int32_t backing_id);
napi_value passthrough_exports(napi_env env, napi_value exports);

/* cache_write.c */
napi_value cache_write_exports(napi_env env, napi_value exports);

/* chunk_copy.c */
napi_value chunk_copy_exports(napi_env env, napi_value exports);

/* write_out.c */
napi_value write_out_exports(napi_env env, napi_value exports);
/* fdatasync of fd, then its clean pages in [from, from + len) (len 0: to the end) dropped from the page cache: 0, or -1 with errno set. */
int sync_and_drop(int fd, off_t from, off_t len);

/* file_copy.c */
typedef struct {
  int by_buffer; /* the kernel refused to copy between these files: through `buf` from then on */
  char *buf;     /* allocated on first use; copier_free releases it */
} file_copier;
/* copy_part's answer when the source ends before the range does. */
#define COPY_SHORT 1
/* `length` bytes of src at `in` into dst at `out`: 0, COPY_SHORT, or -1 with errno set and *call naming the failed call. */
int copy_part(file_copier *c, int src, off_t in, int dst, off_t out, size_t length, const char **call);
void copier_free(file_copier *c);

/* gear_scan.c */
napi_value gear_exports(napi_env env, napi_value exports);

/* tree_watch.c */
napi_value tree_watch_exports(napi_env env, napi_value exports);

/* addon.c: helpers */
/* For the addon's own threads: signals belong to Node's thread, which unmounts on SIGINT/SIGTERM. */
void gfs_block_signals(void);
gfs *get_gfs(napi_env env, napi_value v);
napi_value errno_error(napi_env env, int err, const char *call, const char *path);
int throw_errno(napi_env env, int err, const char *call, const char *path);
int get_double(napi_env env, napi_value v, double *out);
int get_u64(napi_env env, napi_value v, uint64_t *out);
char *get_string(napi_env env, napi_value v); /* malloc'd, NULL on failure (an exception is pending) */
/* A time from seconds and nanoseconds; a null or undefined second is UTIME_OMIT, the string "now" UTIME_NOW. */
int get_timespec(napi_env env, napi_value sec, napi_value nsec, struct timespec *ts);
void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);
/* A name that is one path component: not empty, no '/', not "." or "..". */
bool one_component(const char *name);
/* Element i of the array `v`, as get_string / get_double read it (-1, an exception pending, on failure). */
int element_string(napi_env env, napi_value v, uint32_t i, char **out);
int element_double(napi_env env, napi_value v, uint32_t i, double *out);
/* A whole number a file offset or length can be: 0 to 2^53 - 1 (NaN is not). */
bool whole_offset(double v);
/* Settles a promise that carries no value: resolved with undefined, or (err != 0) rejected as errno_error says. */
void settle_void(napi_env env, napi_deferred deferred, int err, const char *call, const char *path);
/* Runs `execute(job)` on a libuv worker thread, then `complete` on the JS thread; returns the promise
 * that `complete` settles through *deferred. */
napi_value queue_job(napi_env env, const char *name, napi_async_execute_callback execute, napi_async_complete_callback complete, void *job, napi_deferred *deferred, napi_async_work *work);

/* Declares argv[n] (and argc) with the call's arguments; missing ones are undefined. */
#define GET_ARGS(n)                                                                \
  size_t argc = (n);                                                               \
  napi_value argv[(n)];                                                            \
  NAPI_TRY(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL))

#define NAPI_TRY(env, call)                                                        \
  do {                                                                             \
    if ((call) != napi_ok) {                                                       \
      const napi_extended_error_info *info_;                                       \
      napi_get_last_error_info((env), &info_);                                     \
      bool pending_;                                                               \
      napi_is_exception_pending((env), &pending_);                                 \
      if (!pending_) napi_throw_error((env), NULL, info_ && info_->error_message ? info_->error_message : #call); \
      return NULL;                                                                 \
    }                                                                              \
  } while (0)

#endif
