/*
 * The content-defined chunker's inner loop (src/content/chunker.ts), in C:
 * the JavaScript loop scans about 0.5 GB/s here, which made chunking the
 * slowest part of hashing a file. The cut rule and the gear table are the
 * JavaScript ones (the table is handed over once), so both find the same
 * cut points; the tests compare them on the same bytes.
 */
#include "ghostfs.h"

#include <stdint.h>
#include <string.h>

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

/*
 * gearScan(buf, from, normal, limit, maskS, maskL) -> index just past the
 * cut, or -1 if no cut before limit. Bytes [from, normal) are tested with
 * maskS, [normal, limit) with maskL; the hash starts at 0 at `from`.
 */
static napi_value js_gear_scan(napi_env env, napi_callback_info info) {
  GET_ARGS(6);
  uint8_t *buf;
  size_t len;
  double from_d, normal_d, limit_d, ms_d, ml_d;
  NAPI_TRY(env, napi_get_buffer_info(env, argv[0], (void **)&buf, &len));
  if (get_double(env, argv[1], &from_d) || get_double(env, argv[2], &normal_d) || get_double(env, argv[3], &limit_d) || get_double(env, argv[4], &ms_d) ||
      get_double(env, argv[5], &ml_d))
    return NULL;
  size_t from = (size_t)from_d, normal = (size_t)normal_d, limit = (size_t)limit_d;
  if (!gear_ready || from > normal || normal > limit || limit > len) {
    napi_throw_range_error(env, "EINVAL", gear_ready ? "gearScan: bounds out of order or past the buffer" : "gearScan: no gear table yet");
    return NULL;
  }
  /* The masks arrive as signed 32-bit numbers (JavaScript's bitwise results). */
  uint32_t mask_s = (uint32_t)(int32_t)ms_d, mask_l = (uint32_t)(int32_t)ml_d;
  uint32_t h = 0;
  double cut = -1;
  size_t i = from;
  for (; i < normal; i++) {
    h = (h << 1) + gear[buf[i]];
    if ((h & mask_s) == 0) {
      cut = (double)(i + 1);
      goto done;
    }
  }
  for (; i < limit; i++) {
    h = (h << 1) + gear[buf[i]];
    if ((h & mask_l) == 0) {
      cut = (double)(i + 1);
      goto done;
    }
  }
done:;
  napi_value out;
  NAPI_TRY(env, napi_create_double(env, cut, &out));
  return out;
}

napi_value gear_exports(napi_env env, napi_value exports) {
  export_fn(env, exports, "gearTable", js_gear_table);
  export_fn(env, exports, "gearScan", js_gear_scan);
  return exports;
}
