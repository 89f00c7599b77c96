/*
 * The content-defined chunker's inner loop (src/content/chunker.ts), in C:
 * the JavaScript loop scans about 0.5 GB/s here, which made chunking the
 * slowest part of hashing a file. The cut rule and the gear table are the
 * JavaScript ones (the table is handed over once), so both find the same
 * cut points; the tests compare them on the same bytes.
 *
 * One hash chain runs at about one byte per two cycles: each step waits for
 * the one before (shift, add). The hash at a byte depends on the 32 bytes
 * up to it only (bits shifted past the 32nd are gone), so a range is
 * scanned as four stretches side by side, each starting from the hash
 * rebuilt from the 32 bytes before it: the same hashes, about twice the
 * bytes a second (1.9 -> 3.6 GB/s of file here, measured with
 * DEFAULT_CHUNKING on 256 MiB).
 */
#include "ghostfs.h"

#include <stdint.h>
#include <string.h>
#include <sys/types.h>

static uint32_t gear[256];
static int gear_ready;

/* gearTable(Int32Array of 256) */
static napi_value js_gear_table(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  napi_typedarray_type type;
  size_t length;
  void *data;
  NAPI_TRY(env, napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL));
  if (type != napi_int32_array || length != 256) {
    napi_throw_type_error(env, "EINVAL", "the gear table is an Int32Array of 256 values");
    return NULL;
  }
  memcpy(gear, data, sizeof gear);
  gear_ready = 1;
  return NULL;
}

/* Bytes each of the four stretches covers in one round of the scan. */
#define STRETCH 4096
/* A gear hash depends on this many bytes before it, no more. */
#define GEAR_WINDOW 32

/*
 * The hash before byte `at` of a scan that started at `from` with hash h0,
 * rebuilt from the bytes just before (h0 is shifted out once 32 bytes follow it).
 */
static inline uint32_t hash_before(const uint8_t *buf, size_t from, size_t at, uint32_t h0) {
  uint32_t h = at - from > GEAR_WINDOW ? 0 : h0;
  for (size_t i = at - from > GEAR_WINDOW ? at - GEAR_WINDOW : from; i < at; i++) h = (h << 1) + gear[buf[i]];
  return h;
}

/* The first i in [start, end) whose hash, carried in *h and updated, has no bit of `mask`; -1 if none. */
static inline ssize_t scan_one(const uint8_t *buf, size_t start, size_t end, uint32_t mask, uint32_t *h) {
  uint32_t x = *h;
  for (size_t i = start; i < end; i++) {
    x = (x << 1) + gear[buf[i]];
    if ((x & mask) == 0) {
      *h = x;
      return (ssize_t)i;
    }
  }
  *h = x;
  return -1;
}

/* The first i in [start, end) whose hash (hashing from `from`, starting at h0) has no bit of `mask`; -1 if none. */
static ssize_t scan_range(const uint8_t *buf, size_t from, size_t start, size_t end, uint32_t mask, uint32_t h0) {
  size_t p = start;
  for (; end - p >= 4 * STRETCH; p += 4 * STRETCH) {
    const uint8_t *b0 = buf + p, *b1 = b0 + STRETCH, *b2 = b1 + STRETCH, *b3 = b2 + STRETCH;
    uint32_t h[4] = {hash_before(buf, from, p, h0), hash_before(buf, from, p + STRETCH, h0), hash_before(buf, from, p + 2 * STRETCH, h0),
                     hash_before(buf, from, p + 3 * STRETCH, h0)};
    uint32_t x0 = h[0], x1 = h[1], x2 = h[2], x3 = h[3];
    size_t t = 0;
    for (; t < STRETCH; t++) {
      x0 = (x0 << 1) + gear[b0[t]];
      x1 = (x1 << 1) + gear[b1[t]];
      x2 = (x2 << 1) + gear[b2[t]];
      x3 = (x3 << 1) + gear[b3[t]];
      if (((x0 & mask) == 0) | ((x1 & mask) == 0) | ((x2 & mask) == 0) | ((x3 & mask) == 0)) break;
    }
    if (t == STRETCH) continue;
    /* A stretch cut at t. An earlier stretch may still cut after t, which comes first in the file. */
    h[0] = x0, h[1] = x1, h[2] = x2, h[3] = x3;
    int hit = 0;
    while (h[hit] & mask) hit++;
    for (int k = 0; k < hit; k++) {
      ssize_t at = scan_one(buf, p + k * STRETCH + t + 1, p + (k + 1) * STRETCH, mask, &h[k]);
      if (at >= 0) return at;
    }
    return (ssize_t)(p + hit * STRETCH + t);
  }
  uint32_t h = hash_before(buf, from, p, h0);
  return scan_one(buf, p, end, mask, &h);
}

/*
 * gearScan(buf, from, normal, limit, maskS, maskL, h0) -> index just past
 * the cut, or -1 if no cut before limit. Bytes [from, normal) are tested
 * with maskS, [normal, limit) with maskL; the hash is h0 at `from` (0 where
 * a scan starts; where it goes on from the bytes of another buffer, the
 * hash it had reached there).
 */
static napi_value js_gear_scan(napi_env env, napi_callback_info info) {
  GET_ARGS(7);
  uint8_t *buf;
  size_t len;
  double from_d, normal_d, limit_d, ms_d, ml_d, h0_d;
  NAPI_TRY(env, napi_get_buffer_info(env, argv[0], (void **)&buf, &len));
  if (get_double(env, argv[1], &from_d) || get_double(env, argv[2], &normal_d) || get_double(env, argv[3], &limit_d) || get_double(env, argv[4], &ms_d) ||
      get_double(env, argv[5], &ml_d) || get_double(env, argv[6], &h0_d))
    return NULL;
  size_t from = (size_t)from_d, normal = (size_t)normal_d, limit = (size_t)limit_d;
  if (!gear_ready || from > normal || normal > limit || limit > len) {
    napi_throw_range_error(env, "EINVAL", gear_ready ? "gearScan: bounds out of order or past the buffer" : "gearScan: no gear table yet");
    return NULL;
  }
  /* The masks arrive as signed 32-bit numbers (JavaScript's bitwise results). */
  uint32_t mask_s = (uint32_t)(int32_t)ms_d, mask_l = (uint32_t)(int32_t)ml_d, h0 = (uint32_t)(int32_t)h0_d;
  ssize_t at = scan_range(buf, from, from, normal, mask_s, h0);
  if (at < 0) at = scan_range(buf, from, normal, limit, mask_l, h0);
  double cut = at < 0 ? -1 : (double)(at + 1);
  napi_value out;
  NAPI_TRY(env, napi_create_double(env, cut, &out));
  return out;
}

napi_value gear_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "gearTable", js_gear_table);
  export_fn(env, exports, "gearScan", js_gear_scan);
  return exports;
}
