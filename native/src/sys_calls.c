/*
 * Filesystem calls Node lacks, for the node agent and the mount to use
 * where they make ghostfs safer. All are synchronous: each is one short
 * metadata system call. Failures throw Errors with Node's `code` names.
 */
#include "ghostfs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* renameat2(from, to, flags): 1 RENAME_NOREPLACE, 2 RENAME_EXCHANGE. */
static napi_value js_renameat2(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  double flags;
  char *from = get_string(env, argv[0]);
  char *to = from ? get_string(env, argv[1]) : NULL;
  if (!to || get_double(env, argv[2], &flags)) {
    free(from), free(to);
    return NULL;
  }
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, (unsigned)flags) != 0) throw_errno(env, errno, "renameat2", to);
  free(from), free(to);
  return NULL;
}

/* mknod(path, mode, rdev): a fifo, socket or device node (mode holds the
 * type bits); never follows a final symlink (EEXIST). Node has no mknod. */
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  double mode, rdev;
  char *path = get_string(env, argv[0]);
  if (!path) return NULL;
  if (get_double(env, argv[1], &mode) || get_double(env, argv[2], &rdev)) {
    free(path);
    return NULL;
  }
  if (mknodat(AT_FDCWD, path, (mode_t)mode, (dev_t)rdev) != 0) throw_errno(env, errno, "mknod", path);
  free(path);
  return NULL;
}

/* utimensat(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec) — exact nanoseconds,
 * never following a final symlink; a null second leaves that time, "now" sets it to now. */
static napi_value js_utimensat(napi_env env, napi_callback_info info) {
  GET_ARGS(5);
  struct timespec ts[2];
  char *path = get_string(env, argv[0]);
  if (!path) return NULL;
  if (get_timespec(env, argv[1], argv[2], &ts[0]) || get_timespec(env, argv[3], argv[4], &ts[1])) {
    free(path);
    return NULL;
  }
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) throw_errno(env, errno, "utimensat", path);
  free(path);
  return NULL;
}

/* futimens(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec) — as utimensat, on an open file. */
static napi_value js_futimens(napi_env env, napi_callback_info info) {
  GET_ARGS(5);
  double fd;
  struct timespec ts[2];
  if (get_double(env, argv[0], &fd) || get_timespec(env, argv[1], argv[2], &ts[0]) || get_timespec(env, argv[3], argv[4], &ts[1])) return NULL;
  if (futimens((int)fd, ts) != 0) throw_errno(env, errno, "futimens", NULL);
  return NULL;
}

/* linkTmpfile(fd, path): gives an O_TMPFILE file its name; EEXIST if taken. */
static napi_value js_link_tmpfile(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  double fd;
  if (get_double(env, argv[0], &fd)) return NULL;
  char *path = get_string(env, argv[1]);
  if (!path) return NULL;
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", (int)fd);
  /* /proc's link works without CAP_DAC_READ_SEARCH, unlike AT_EMPTY_PATH. */
  if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) != 0) throw_errno(env, errno, "linkat", path);
  free(path);
  return NULL;
}

/* openBeneath(root, rel, flags, mode) -> fd; `rel` may not leave `root`,
 * through "..", an absolute path or any symlink (RESOLVE_BENEATH). */
static napi_value js_open_beneath(napi_env env, napi_callback_info info) {
  GET_ARGS(4);
  double flags, mode;
  char *root = get_string(env, argv[0]);
  char *rel = root ? get_string(env, argv[1]) : NULL;
  if (!rel || get_double(env, argv[2], &flags) || get_double(env, argv[3], &mode)) {
    free(root), free(rel);
    return NULL;
  }
  int dfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    throw_errno(env, errno, "open", root);
    free(root), free(rel);
    return NULL;
  }
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = (uint64_t)flags | O_CLOEXEC;
  if (how.flags & (O_CREAT | O_TMPFILE)) how.mode = (uint64_t)mode;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  int fd = (int)syscall(SYS_openat2, dfd, rel[0] ? rel : ".", &how, sizeof how);
  int err = errno;
  close(dfd);
  if (fd < 0) {
    throw_errno(env, err, "openat2", rel);
    free(root), free(rel);
    return NULL;
  }
  free(root), free(rel);
  napi_value r;
  napi_create_int32(env, fd, &r);
  return r;
}

/* fsyncPath(path): fsync of a directory (or file) by name. */
static napi_value js_fsync_path(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  char *path = get_string(env, argv[0]);
  if (!path) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) throw_errno(env, errno, "fsync", path);
  if (fd >= 0) close(fd);
  free(path);
  return NULL;
}

/* syncfs(fd): everything of that filesystem to disk. */
static napi_value js_syncfs(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  double fd;
  if (get_double(env, argv[0], &fd)) return NULL;
  if (syncfs((int)fd) != 0) throw_errno(env, errno, "syncfs", NULL);
  return NULL;
}

/*
 * seekData(fd, offset) -> the offset of the first byte of data at or after
 * `offset` (lseek SEEK_DATA), or -1 when only a hole follows to the end of
 * the file. A filesystem that does not track holes reports everything as data.
 */
static napi_value js_seek_data(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  double fd, off;
  if (get_double(env, argv[0], &fd) || get_double(env, argv[1], &off)) return NULL;
  off_t at = lseek((int)fd, (off_t)off, SEEK_DATA);
  if (at < 0 && errno != ENXIO) {
    throw_errno(env, errno, "lseek SEEK_DATA", NULL);
    return NULL;
  }
  napi_value out;
  NAPI_TRY(env, napi_create_double(env, at < 0 ? -1 : (double)at, &out));
  return out;
}

/* lazyUnmount(path): detaches a mount, e.g. a FUSE mount whose process died. */
static napi_value js_lazy_unmount(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  char *path = get_string(env, argv[0]);
  if (!path) return NULL;
  if (umount2(path, MNT_DETACH) != 0) throw_errno(env, errno, "umount2", path);
  free(path);
  return NULL;
}

/*
 * keepMallocMemory(mmapThreshold, trimThreshold) -> whether glibc took it.
 * Chunk buffers are 1 MiB and come and go at hundreds per second. With
 * glibc's defaults each one is a fresh mmap (or heap memory trimmed back to
 * the kernel moments before), so every copy into it first takes 256 page
 * faults and the kernel zeroes the pages. Serving them from memory malloc
 * keeps instead halves the node's CPU time per GiB sent (measured here).
 */
static napi_value js_keep_malloc_memory(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  double mmap_threshold, trim_threshold;
  if (get_double(env, argv[0], &mmap_threshold) || get_double(env, argv[1], &trim_threshold)) return NULL;
  int ok = 0;
#ifdef __GLIBC__
  ok = mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, (int)trim_threshold) == 1;
#endif
  napi_value result;
  napi_get_boolean(env, ok, &result);
  return result;
}

/*
 * mallocStats() -> { inUseBytes, freeBytes, mappedBytes } or null, from
 * glibc's mallinfo2 summed over all arenas: what native code holds, the
 * free space within the allocator's heaps (keepMallocMemory lets each arena
 * keep plenty; a trim returns its pages but not its address space, so it
 * still counts here), and the large blocks mapped directly. Tells a leak
 * (in use grows) from a fragmented allocator (free space grows).
 */
static napi_value js_malloc_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 m = mallinfo2();
  napi_value v;
  napi_create_object(env, &result);
  napi_create_double(env, (double)(m.uordblks + m.hblkhd), &v);
  napi_set_named_property(env, result, "inUseBytes", v);
  napi_create_double(env, (double)m.fordblks, &v);
  napi_set_named_property(env, result, "freeBytes", v);
  napi_create_double(env, (double)m.hblkhd, &v);
  napi_set_named_property(env, result, "mappedBytes", v);
#else
  napi_get_null(env, &result);
#endif
  return result;
}

/*
 * mallocTrim() -> whether memory was returned. Hands the pages of freed
 * heap memory back to the kernel, in every arena. keepMallocMemory has each
 * arena keep what it freed; in a long-running process whose buffers come
 * and go unevenly that kept memory grows (measured: a 10-minute soak's
 * mount held 56 -> 113 MiB freed while what it used stayed at ~126 MiB).
 */
static napi_value js_malloc_trim(napi_env env, napi_callback_info info) {
  (void)info;
  int released = 0;
#ifdef __GLIBC__
  released = malloc_trim(0);
#endif
  napi_value result;
  napi_get_boolean(env, released, &result);
  return result;
}

napi_value sys_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "renameat2", js_renameat2);
  export_fn(env, exports, "utimensat", js_utimensat);
  export_fn(env, exports, "mknod", js_mknod);
  export_fn(env, exports, "futimens", js_futimens);
  export_fn(env, exports, "linkTmpfile", js_link_tmpfile);
  export_fn(env, exports, "openBeneath", js_open_beneath);
  export_fn(env, exports, "fsyncPath", js_fsync_path);
  export_fn(env, exports, "syncfs", js_syncfs);
  export_fn(env, exports, "seekData", js_seek_data);
  export_fn(env, exports, "lazyUnmount", js_lazy_unmount);
  export_fn(env, exports, "keepMallocMemory", js_keep_malloc_memory);
  export_fn(env, exports, "mallocStats", js_malloc_stats);
  export_fn(env, exports, "mallocTrim", js_malloc_trim);
  return exports;
}
