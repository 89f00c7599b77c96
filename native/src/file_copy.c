/*
 * Byte ranges copied from one file into another, for the jobs that assemble
 * or split files on a worker thread (chunk_copy.c, cache_write.c): by the
 * kernel (copy_file_range: no trip through user space, a reflink where the
 * filesystem shares extents), or through a buffer where the kernel cannot
 * copy between the two files (another filesystem: EXDEV; a filesystem
 * without the call). Once refused, a copier uses the buffer from then on.
 */
#include "ghostfs.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define COPY_BUF_BYTES ((size_t)1 << 20)

/* The kernel cannot copy between these files: the caller copies through a buffer. */
static int copy_unsupported(int err) { return err == EXDEV || err == ENOSYS || err == EOPNOTSUPP || err == EINVAL; }

int copy_part(file_copier *c, int src, off_t in, int dst, off_t out, size_t length, const char **call) {
  loff_t from = in, to = out;
  size_t left = length;
  while (left > 0 && !c->by_buffer) {
    ssize_t n = copy_file_range(src, &from, dst, &to, left, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && copy_unsupported(errno)) {
      c->by_buffer = 1;
      break;
    }
    if (n < 0) {
      *call = "copy_file_range";
      return -1;
    }
    if (n == 0) break; /* the end of the source, or a filesystem that stops early: the reads below tell */
    left -= (size_t)n;
  }
  if (left > 0 && !c->buf && !(c->buf = malloc(COPY_BUF_BYTES))) {
    errno = ENOMEM, *call = "malloc";
    return -1;
  }
  while (left > 0) {
    ssize_t n = pread(src, c->buf, left < COPY_BUF_BYTES ? left : COPY_BUF_BYTES, from);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return COPY_SHORT;
    if (n < 0) {
      *call = "pread";
      return -1;
    }
    for (ssize_t done = 0; done < n;) {
      ssize_t w = pwrite(dst, c->buf + done, (size_t)(n - done), to + done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        if (w == 0) errno = EIO;
        *call = "pwrite";
        return -1;
      }
      done += w;
    }
    from += n, to += n, left -= (size_t)n;
  }
  return 0;
}

void copier_free(file_copier *c) {
  free(c->buf);
  c->buf = NULL;
}
