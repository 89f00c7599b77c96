/*
 * writeNewFile: the node's commit of a new small file in one job on a libuv
 * worker thread. Done step by step from JavaScript, the same system calls
 * cost about ten thread-pool round trips (each a wake-up of the event loop)
 * and several times the calls' own time. Here they run back to back:
 *
 *   the directory, opened beneath the workspace root (openat2 with
 *   RESOLVE_BENEATH: no "..", absolute path or symlink leads out);
 *   an O_TMPFILE file in it (no name while incomplete), written, given its
 *   owner (when one is asked for), mode and times, fsynced; then linked
 *   under its name, which fails with EEXIST if the name is taken (nothing
 *   is ever replaced); its attributes read; the directory fsynced, and its
 *   attributes read.
 *
 * Any failure rejects with an Error carrying Node's errno `code`; nothing is
 * left behind (an unnamed file vanishes with its descriptor).
 */
#include "ghostfs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref data_ref; /* keeps the bytes alive while the worker reads them */
  char *root, *dir, *name;
  const char *data;
  size_t len;
  mode_t mode;
  uid_t uid; /* (uid_t)-1 / (gid_t)-1: as created */
  gid_t gid;
  struct timespec times[2]; /* UTIME_OMIT where not given */
  /* results */
  int err;
  int owner_err; /* the chown's, which does not fail the job */
  const char *call;
  struct stat st;
  struct stat dir_st; /* the directory's, after the name was added */
  int has_dir_st;
} write_job;

static int open_dir_beneath(const char *root, const char *dir) {
  int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rfd < 0) return -1;
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  int dfd = (int)syscall(SYS_openat2, rfd, dir[0] ? dir : ".", &how, sizeof how);
  int saved = errno;
  close(rfd);
  errno = saved;
  return dfd;
}

#define FAIL(what)   \
  do {               \
    j->err = errno;  \
    j->call = what;  \
    goto out;        \
  } while (0)

static void execute(napi_env env, void *arg) {
  (void)env;
  write_job *j = arg;
  int fd = -1;
  int dfd = open_dir_beneath(j->root, j->dir);
  if (dfd < 0) FAIL("openat2");
  fd = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) FAIL("open O_TMPFILE");
  for (size_t done = 0; done < j->len;) {
    ssize_t n = pwrite(fd, j->data + done, j->len - done, (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) FAIL("pwrite");
    if (n == 0) {
      errno = EIO;
      FAIL("pwrite");
    }
    done += (size_t)n;
  }
  /* The owner before the mode: a chown clears set-id bits. One not given
   * (EPERM: not root; EINVAL: an id the user namespace does not map) leaves
   * the file the process's, and is reported beside the attributes; the file
   * then gets no set-id bits, which would run its writer's bytes as the
   * process's user. */
  if ((j->uid != (uid_t)-1 || j->gid != (gid_t)-1) && fchown(fd, j->uid, j->gid) != 0) j->owner_err = errno;
  if (fchmod(fd, j->owner_err ? j->mode & ~(mode_t)06000 : j->mode) != 0) FAIL("fchmod");
  if (futimens(fd, j->times) != 0) FAIL("futimens");
  if (fsync(fd) != 0) FAIL("fsync");
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  /* /proc's link works without CAP_DAC_READ_SEARCH, unlike AT_EMPTY_PATH. */
  if (linkat(AT_FDCWD, proc, dfd, j->name, AT_SYMLINK_FOLLOW) != 0) FAIL("linkat");
  if (fstat(fd, &j->st) != 0) FAIL("fstat");
  if (fsync(dfd) != 0) FAIL("fsync of the directory");
  /* Its times and size changed with the new name: the writer is told them with the file's. */
  j->has_dir_st = fstat(dfd, &j->dir_st) == 0;
out:
  if (fd >= 0) close(fd);
  if (dfd >= 0) close(dfd);
}

static void put_num(napi_env env, napi_value o, const char *key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, o, key, n);
}

static void put_ns(napi_env env, napi_value o, const char *key, struct timespec t) {
  napi_value n;
  napi_create_bigint_int64(env, (int64_t)t.tv_sec * 1000000000 + t.tv_nsec, &n);
  napi_set_named_property(env, o, key, n);
}

/* Attributes as lstat gives them to JS, times in nanoseconds (BigInt). */
static napi_value stat_object(napi_env env, const struct stat *s) {
  napi_value o;
  napi_create_object(env, &o);
  put_num(env, o, "dev", (double)s->st_dev);
  put_num(env, o, "ino", (double)s->st_ino);
  put_num(env, o, "mode", (double)s->st_mode);
  put_num(env, o, "nlink", (double)s->st_nlink);
  put_num(env, o, "uid", (double)s->st_uid);
  put_num(env, o, "gid", (double)s->st_gid);
  put_num(env, o, "rdev", (double)s->st_rdev);
  put_num(env, o, "size", (double)s->st_size);
  put_num(env, o, "blocks", (double)s->st_blocks);
  put_ns(env, o, "atimeNs", s->st_atim);
  put_ns(env, o, "mtimeNs", s->st_mtim);
  put_ns(env, o, "ctimeNs", s->st_ctim);
  return o;
}

static void complete(napi_env env, napi_status status, void *arg) {
  write_job *j = arg;
  if (status != napi_ok && !j->err) {
    j->err = ECANCELED;
    j->call = "writeNewFile";
  }
  if (j->err) {
    napi_reject_deferred(env, j->deferred, errno_error(env, j->err, j->call, j->name));
  } else {
    napi_value o = stat_object(env, &j->st);
    if (j->has_dir_st) napi_set_named_property(env, o, "dir", stat_object(env, &j->dir_st));
    if (j->owner_err) {
      napi_value code;
      const char *name = strerrorname_np(j->owner_err);
      napi_create_string_utf8(env, name ? name : "EIO", NAPI_AUTO_LENGTH, &code);
      napi_set_named_property(env, o, "ownerErrno", code);
    }
    napi_resolve_deferred(env, j->deferred, o);
  }
  napi_delete_reference(env, j->data_ref);
  napi_delete_async_work(env, j->work);
  free(j->root), free(j->dir), free(j->name);
  free(j);
}

/*
 * writeNewFile(root, dir, name, data, mode, atimeSec, atimeNsec, mtimeSec, mtimeNsec, uid, gid)
 *   -> Promise<attributes as lstat's, times in nanoseconds (BigInt),
 *      `dir`: the directory's likewise, and ownerErrno (the errno's name)
 *      when the owner could not be given>
 * `dir` is relative to `root` ("" for the root itself), `name` one path
 * component; a null second leaves that time as the creation set it; a uid
 * or gid of -1 leaves that as the creation set it.
 */
static napi_value js_write_new_file(napi_env env, napi_callback_info info) {
  GET_ARGS(11);
  write_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  double mode, uid, gid;
  void *data;
  size_t len;
  if (!(j->root = get_string(env, argv[0])) || !(j->dir = get_string(env, argv[1])) || !(j->name = get_string(env, argv[2]))) goto bad;
  if (!one_component(j->name)) {
    napi_throw_type_error(env, "EINVAL", "writeNewFile: the name must be one path component");
    goto bad;
  }
  if (napi_get_buffer_info(env, argv[3], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "writeNewFile: data must be a Buffer");
    goto bad;
  }
  if (get_double(env, argv[4], &mode) || get_double(env, argv[9], &uid) || get_double(env, argv[10], &gid)) goto bad;
  if (!(uid == -1 || (uid >= 0 && uid < 4294967295.0 && uid == (double)(uint32_t)uid)) || !(gid == -1 || (gid >= 0 && gid < 4294967295.0 && gid == (double)(uint32_t)gid))) {
    napi_throw_range_error(env, "EINVAL", "writeNewFile: uid and gid must be -1 or an id below 2^32 - 1");
    goto bad;
  }
  if (get_timespec(env, argv[5], argv[6], &j->times[0]) || get_timespec(env, argv[7], argv[8], &j->times[1])) goto bad;
  j->data = data;
  j->len = len;
  j->mode = (mode_t)mode & 07777;
  j->uid = uid == -1 ? (uid_t)-1 : (uid_t)uid;
  j->gid = gid == -1 ? (gid_t)-1 : (gid_t)gid;
  napi_create_reference(env, argv[3], 1, &j->data_ref);
  return queue_job(env, "ghostfs.writeNewFile", execute, complete, j, &j->deferred, &j->work);
bad:
  free(j->root), free(j->dir), free(j->name);
  free(j);
  return NULL;
}

napi_value atomic_write_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "writeNewFile", js_write_new_file);
  return exports;
}
