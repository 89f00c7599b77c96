/*
 * sendFileRange: a frame header and then a range of a file, written to a TCP
 * socket by the kernel (sendfile), on a libuv worker thread.
 *
 * Why: the node's bulk lane used to read each chunk into a buffer and write
 * that buffer to the socket: two copies of every byte on the node (page
 * cache to JS, JS to the socket) and four thread-pool hops per chunk. With
 * sendfile the file's cached pages go to the socket directly. On a machine
 * where node and mount share two cores, the node's CPU is taken from the
 * mount's. The mount sends the chunks it uploads from its dirty copies the
 * same way (src/mesh/bulk-client.ts).
 *
 * The socket belongs to libuv. The job works on a dup of its descriptor, so
 * that libuv closing its own (the connection destroyed meanwhile) cannot
 * hand the number to an unrelated file under a running sendfile. The socket
 * stays non-blocking: a full send buffer is waited out with poll, in slices,
 * checking `cancel[0]` between them (set from JS when the connection
 * closes, or the send's deadline passes). The caller must not write to the socket itself until the promise
 * settles, and must destroy the connection when it rejects: a frame may
 * have been cut short. A file shorter than the range rejects with ENODATA.
 * A file sendfile cannot read from (EINVAL) is copied with pread and send
 * by the same job, so the frame is never left half sent for that.
 */
#include "ghostfs.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref head_ref, cancel_ref; /* kept alive while the worker reads them */
  int sock;                      /* a dup, closed by the job */
  int file;                      /* the caller's, open until the promise settles */
  const char *head;
  size_t head_len;
  off_t off;
  size_t len;
  const int32_t *cancel;
  int err;
  const char *call;
} send_job;

/* Waits until the socket takes more bytes; -1 with errno set when it cannot or the send was cancelled. */
static int wait_writable(send_job *j) {
  for (;;) {
    if (__atomic_load_n(j->cancel, __ATOMIC_RELAXED)) {
      errno = ECANCELED;
      return -1;
    }
    struct pollfd p = {.fd = j->sock, .events = POLLOUT};
    int n = poll(&p, 1, 250);
    if (n < 0 && errno != EINTR) return -1;
    if (n <= 0) continue;
    if (p.revents & POLLOUT) return 0;
    errno = (p.revents & POLLHUP) ? EPIPE : ECONNRESET;
    return -1;
  }
}

/* The range by pread and send, for files sendfile cannot take; 0, or -1 with errno and j->call set. */
static int copy_range(send_job *j, off_t off, size_t left) {
  enum { BUF = 256 * 1024 };
  char *buf = malloc(BUF);
  if (!buf) {
    errno = ENOMEM;
    j->call = "malloc";
    return -1;
  }
  int rc = -1;
  while (left > 0) {
    ssize_t got = pread(j->file, buf, left < BUF ? left : BUF, off);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (got == 0) errno = ENODATA;
      j->call = "pread";
      goto out;
    }
    for (ssize_t sent = 0; sent < got;) {
      ssize_t n = send(j->sock, buf + sent, (size_t)(got - sent), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (wait_writable(j) != 0) {
          j->call = "poll";
          goto out;
        }
        continue;
      }
      if (n < 0) {
        j->call = "send";
        goto out;
      }
      sent += n;
    }
    off += got;
    left -= (size_t)got;
  }
  rc = 0;
out:
  free(buf);
  return rc;
}

#define FAIL(what)  \
  do {              \
    j->err = errno; \
    j->call = what; \
    return;         \
  } while (0)

static void execute(napi_env env, void *arg) {
  (void)env;
  send_job *j = arg;
  /* MSG_MORE: the header goes out in one segment with the first bytes of the file. */
  for (size_t done = 0; done < j->head_len;) {
    ssize_t n = send(j->sock, j->head + done, j->head_len - done, MSG_NOSIGNAL | MSG_MORE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_writable(j) != 0) FAIL("poll");
      continue;
    }
    if (n < 0) FAIL("send");
    done += (size_t)n;
  }
  off_t off = j->off;
  for (size_t left = j->len; left > 0;) {
    ssize_t n = sendfile(j->sock, j->file, &off, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_writable(j) != 0) FAIL("poll");
      continue;
    }
    if (n < 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      /* A filesystem sendfile cannot read from: the frame is under way, so finish it by copying. */
      if (copy_range(j, off, left) != 0) FAIL(j->call);
      return;
    }
    if (n < 0) FAIL("sendfile");
    if (n == 0) {
      errno = ENODATA; /* the file ended before the range did: it changed */
      FAIL("sendfile");
    }
    left -= (size_t)n;
  }
}

static void complete(napi_env env, napi_status status, void *arg) {
  send_job *j = arg;
  if (status != napi_ok && !j->err) {
    j->err = ECANCELED;
    j->call = "sendFileRange";
  }
  settle_void(env, j->deferred, j->err, j->call, NULL);
  close(j->sock);
  napi_delete_reference(env, j->head_ref);
  napi_delete_reference(env, j->cancel_ref);
  napi_delete_async_work(env, j->work);
  free(j);
}

/* sendFileRange(socketFd, head: Buffer, fileFd, offset, length, cancel: Int32Array) -> Promise<void> */
static napi_value js_send_file_range(napi_env env, napi_callback_info info) {
  GET_ARGS(6);
  double sock, file, off, len;
  if (get_double(env, argv[0], &sock) || get_double(env, argv[2], &file) || get_double(env, argv[3], &off) || get_double(env, argv[4], &len)) return NULL;
  void *head;
  size_t head_len;
  if (napi_get_buffer_info(env, argv[1], &head, &head_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "sendFileRange: head must be a Buffer");
    return NULL;
  }
  napi_typedarray_type type;
  size_t count;
  void *cancel;
  if (napi_get_typedarray_info(env, argv[5], &type, &count, &cancel, NULL, NULL) != napi_ok || type != napi_int32_array || count < 1) {
    napi_throw_type_error(env, NULL, "sendFileRange: cancel must be an Int32Array");
    return NULL;
  }
  if (off < 0 || len < 0) {
    napi_throw_range_error(env, "EINVAL", "sendFileRange: offset and length must not be negative");
    return NULL;
  }
  int dup_fd = fcntl((int)sock, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) {
    throw_errno(env, errno, "dup", NULL);
    return NULL;
  }
  send_job *j = calloc(1, sizeof *j);
  if (!j) {
    close(dup_fd);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->sock = dup_fd;
  j->file = (int)file;
  j->head = head;
  j->head_len = head_len;
  j->off = (off_t)off;
  j->len = (size_t)len;
  j->cancel = cancel;
  napi_create_reference(env, argv[1], 1, &j->head_ref);
  napi_create_reference(env, argv[5], 1, &j->cancel_ref);
  return queue_job(env, "ghostfs.sendFileRange", execute, complete, j, &j->deferred, &j->work);
}

napi_value send_range_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "sendFileRange", js_send_file_range);
  return exports;
}
