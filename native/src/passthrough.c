/*
 * FUSE passthrough (Linux 6.9+): the kernel serves reads of an open file
 * straight from a local "backing" file, with no request to the mount, and
 * through that file's page cache. libfuse 3.14 predates it, so it is
 * negotiated on the wire here: the session's device I/O goes through these
 * functions (libfuse's custom I/O hook), which add the passthrough flag to
 * the INIT reply and a backing file's id to the OPEN replies JS asks for.
 * Everything else passes through untouched.
 *
 * The INIT reply also gets the parallel-dirops flag when the driver asked
 * for it: libfuse 3.14 takes FUSE_CAP_PARALLEL_DIROPS and never tells the
 * kernel (fixed in later libfuse), which then ran one lookup or readdir of
 * a directory at a time.
 *
 * The structures are the kernel's (include/uapi/linux/fuse.h, protocol
 * 7.40); the installed headers are older.
 */
#include "ghostfs.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define FUSE_OPCODE_INIT 26
#define INIT_EXT (1u << 30)               /* flags: flags2 is valid */
#define PARALLEL_DIROPS (1u << 18)        /* lookups and readdirs of one directory side by side */
#define PASSTHROUGH_FLAGS2 (1u << (37 - 32)) /* FUSE_PASSTHROUGH, bit 37 of the 64-bit flags */
#define FOPEN_DIRECT_IO_BIT (1u << 0)
#define FOPEN_NOFLUSH_BIT (1u << 5)
#define FOPEN_PASSTHROUGH_BIT (1u << 7)

struct in_header {
  uint32_t len, opcode;
  uint64_t unique, nodeid;
  uint32_t uid, gid, pid;
  uint16_t total_extlen, padding;
};
struct init_in {
  uint32_t major, minor, max_readahead, flags, flags2, unused[11];
};
struct out_header {
  uint32_t len;
  int32_t error;
  uint64_t unique;
};
struct init_out {
  uint32_t major, minor, max_readahead, flags;
  uint16_t max_background, congestion_threshold;
  uint32_t max_write, time_gran;
  uint16_t max_pages, map_alignment;
  uint32_t flags2, max_stack_depth;
  uint16_t request_timeout, unused[11];
};
struct open_out {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};
struct backing_map {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
#define DEV_IOC_BACKING_OPEN _IOW(229, 1, struct backing_map)
#define DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

/* Set by pt_reply_open around its fuse_reply_open: libfuse writes that reply on the same thread, before returning. */
static __thread int32_t reply_backing_id;

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata) {
  gfs *g = userdata;
  ssize_t n = read(fd, buf, len);
  /* Kernels before 5.17 (protocol 7.35 and older) send the first four fields only: flags2 is there
   * from 7.36 on, and only then may passthrough be offered. */
  const ssize_t head = (ssize_t)sizeof(struct in_header), through_flags = head + 4 * (ssize_t)sizeof(uint32_t);
  if (n >= through_flags && ((struct in_header *)buf)->opcode == FUSE_OPCODE_INIT) {
    const struct init_in *in = (const void *)((char *)buf + head);
    g->pt.init_unique = ((struct in_header *)buf)->unique;
    g->pt.kernel_offers = n >= through_flags + (ssize_t)sizeof(uint32_t) && (in->flags & INIT_EXT) && (in->flags2 & PASSTHROUGH_FLAGS2);
    g->pt.kernel_parallel = (in->flags & PARALLEL_DIROPS) != 0;
  }
  return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata) {
  gfs *g = userdata;
  if (count == 2 && iov[0].iov_len == sizeof(struct out_header)) {
    const struct out_header *h = iov[0].iov_base;
    struct iovec patched[2] = {iov[0], iov[1]};
    if (reply_backing_id > 0 && h->error == 0 && iov[1].iov_len == sizeof(struct open_out)) {
      /* Passthrough allows no page-cache flags on the open (FOPEN_KEEP_CACHE...): only these. */
      struct open_out o = *(struct open_out *)iov[1].iov_base;
      o.open_flags = (o.open_flags & (FOPEN_DIRECT_IO_BIT | FOPEN_NOFLUSH_BIT)) | FOPEN_PASSTHROUGH_BIT;
      o.backing_id = reply_backing_id;
      patched[1].iov_base = &o;
      return writev(fd, patched, 2);
    }
    if (!g->pt.init_replied && h->unique == g->pt.init_unique && h->error == 0 && iov[1].iov_len == sizeof(struct init_out)) {
      g->pt.init_replied = 1;
      struct init_out o = *(struct init_out *)iov[1].iov_base;
      if (g->pt.parallel_want && g->pt.kernel_parallel) {
        o.flags |= PARALLEL_DIROPS;
        g->pt.parallel_asked = 1;
      }
      if (g->pt.want && g->pt.kernel_offers) {
        o.flags |= INIT_EXT;
        o.flags2 |= PASSTHROUGH_FLAGS2;
        /* Backing files sit on a plain filesystem: one level of stacking. */
        o.max_stack_depth = 1;
        g->pt.asked = 1;
      }
      patched[1].iov_base = &o;
      return writev(fd, patched, 2);
    }
  }
  return writev(fd, iov, count);
}

int pt_install(gfs *g) {
  static const struct fuse_custom_io io = {.read = io_read, .writev = io_writev};
  return fuse_session_custom_io(g->se, &io, fuse_session_fd(g->se));
}

int pt_reply_open(fuse_req_t req, const struct fuse_file_info *fi, int32_t backing_id) {
  reply_backing_id = backing_id;
  int r = fuse_reply_open(req, fi);
  reply_backing_id = 0;
  return r;
}

/* backingOpen(handle, fd) -> id: registers an open file as a backing file (root only: CAP_SYS_ADMIN). */
static napi_value js_backing_open(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  gfs *g = get_gfs(env, argv[0]);
  double fd;
  if (!g || get_double(env, argv[1], &fd)) return NULL;
  if (!g->pt.asked || !g->se) {
    throw_errno(env, EOPNOTSUPP, "backing_open", NULL);
    return NULL;
  }
  /* The kernel reads through this very open file: a reader's sequential reads get twice the
   * readahead window (measured here on a cold 1 GiB copy: 2.0-2.4 GB/s against 0.7-2.4). */
  (void)posix_fadvise((int)fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  struct backing_map map = {.fd = (int32_t)fd};
  int id = ioctl(fuse_session_fd(g->se), DEV_IOC_BACKING_OPEN, &map);
  if (id < 0) {
    throw_errno(env, errno, "backing_open", NULL);
    return NULL;
  }
  STAT_ADD(g, backing_files, 1);
  napi_value out;
  napi_create_int32(env, id, &out);
  return out;
}

/* backingClose(handle, id): files opened with it keep their backing; new opens cannot name it. */
static napi_value js_backing_close(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  gfs *g = get_gfs(env, argv[0]);
  double id;
  if (!g || get_double(env, argv[1], &id)) return NULL;
  uint32_t bid = (uint32_t)id;
  if (g->se && !g->destroyed && ioctl(fuse_session_fd(g->se), DEV_IOC_BACKING_CLOSE, &bid) < 0) {
    throw_errno(env, errno, "backing_close", NULL);
    return NULL;
  }
  return NULL;
}

napi_value passthrough_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "backingOpen", js_backing_open);
  export_fn(env, exports, "backingClose", js_backing_close);
  return exports;
}
