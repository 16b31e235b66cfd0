/* A JPEG decoder for classify's decode threads: libjpeg-turbo (with its x86-64 SIMD), linked in
 * statically, called through Node-API. One call decodes one image from the caller's bytes into
 * the caller's buffer: no allocation visible to JavaScript, no copy, no thread hand-off.
 *
 * It takes only what it decodes to the pixels sharp (libvips, also libjpeg-turbo with SIMD)
 * gives: 8-bit sequential Huffman-coded YCbCr or greyscale JPEGs in 4:4:4, 4:2:0 or greyscale,
 * decoded with the accurate integer IDCT and fancy upsampling, as libvips asks for them.
 * Anything else, and any warning or error from libjpeg, is answered with a status and the caller
 * decodes with sharp, which then says what is wrong. Errors and warnings unwind with longjmp
 * back to this call: a damaged file never reaches the process's default handler (exit). */
#include <limits.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <node_api.h>

#include "image.h"

/* What decode() answers; the JavaScript side (src/image/native.ts) names them too. */
enum status {
  DECODED = 0,
  DECLINED = 1, /* not a kind taken here, or larger than the caller allows: sharp decodes it */
  WARNED = 2,   /* libjpeg warned (corrupt data it would decode anyway): sharp decides */
  FAILED = 3,   /* libjpeg refused it: sharp decides, and says why */
};

struct error_manager {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
};

static void error_exit(j_common_ptr cinfo) {
  longjmp(((struct error_manager *)cinfo->err)->jump, FAILED);
}

/* msg_level < 0 is a warning (corrupt data): stop at the first one, as TurboJPEG's
 * TJFLAG_STOPONWARNING does; trace messages (>= 0) are ignored. */
static void emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) longjmp(((struct error_manager *)cinfo->err)->jump, WARNED);
}

/* Messages are never printed (libjpeg's default writes to stderr), so never formatted. */
static void output_message(j_common_ptr cinfo) { (void)cinfo; }
static void format_message(j_common_ptr cinfo, char *buffer) {
  (void)cinfo;
  buffer[0] = 0;
}
static void reset_error_mgr(j_common_ptr cinfo) {
  cinfo->err->num_warnings = 0;
  cinfo->err->msg_code = 0;
}

/* What jpeg_std_error sets, with the handlers above. Written out rather than called: the
 * static library's jerror.o is not position-independent (it names stderr), and nothing else
 * in it is needed. */
static struct jpeg_error_mgr *error_manager_init(struct error_manager *err) {
  memset(err, 0, sizeof *err);
  err->pub.error_exit = error_exit;
  err->pub.emit_message = emit_message;
  err->pub.output_message = output_message;
  err->pub.format_message = format_message;
  err->pub.reset_error_mgr = reset_error_mgr;
  return &err->pub;
}

static int subsampling_taken(struct jpeg_decompress_struct *cinfo) {
  if (cinfo->num_components == 1) return cinfo->jpeg_color_space == JCS_GRAYSCALE;
  if (cinfo->num_components != 3 || cinfo->jpeg_color_space != JCS_YCbCr) return 0;
  jpeg_component_info *c = cinfo->comp_info;
  for (int i = 1; i < 3; i++)
    if (c[i].h_samp_factor != 1 || c[i].v_samp_factor != 1) return 0;
  /* 4:4:4 or 4:2:0: the two tested equal to sharp's decode */
  return (c[0].h_samp_factor == 1 && c[0].v_samp_factor == 1) || (c[0].h_samp_factor == 2 && c[0].v_samp_factor == 2);
}

/* Everything libjpeg touches between setjmp and the return lives in this frame or in the caller's
 * memory, and `cinfo` is volatile-free: after a longjmp only jpeg_destroy_decompress runs on it. */
static int decode(const unsigned char *src, size_t src_size, unsigned char *dst, size_t dst_size,
                  int scale_denom, double max_pixels, int32_t *info) {
  struct jpeg_decompress_struct cinfo;
  struct error_manager err;
  cinfo.err = error_manager_init(&err);
  int jumped = setjmp(err.jump);
  if (jumped) {
    jpeg_destroy_decompress(&cinfo);
    return jumped;
  }
  /* A decompressor per image: libjpeg keeps an image's tables for the next one, and a JPEG
   * without its own would be decoded with another image's. */
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, src, (unsigned long)src_size);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.progressive_mode || cinfo.arith_code || cinfo.data_precision != 8 || !subsampling_taken(&cinfo) ||
      (double)cinfo.image_width * cinfo.image_height > max_pixels) {
    jpeg_destroy_decompress(&cinfo);
    return DECLINED;
  }
  cinfo.out_color_space = JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  cinfo.scale_num = 1;
  cinfo.scale_denom = (unsigned int)scale_denom;
  jpeg_calc_output_dimensions(&cinfo);
  size_t stride = (size_t)cinfo.output_width * 3;
  info[0] = (int32_t)cinfo.output_width;
  info[1] = (int32_t)cinfo.output_height;
  if (cinfo.output_components != 3 || stride * cinfo.output_height > dst_size) {
    jpeg_destroy_decompress(&cinfo);
    return DECLINED;
  }
  jpeg_start_decompress(&cinfo);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rows[4];
    for (int i = 0; i < 4; i++) rows[i] = dst + (size_t)(cinfo.output_scanline + i) * stride;
    unsigned int left = cinfo.output_height - cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, rows, left < 4 ? left : 4);
  }
  /* Reads to the end of the image: a warning about the data after the last scan counts too, as
   * it does for TurboJPEG and libvips. */
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return DECODED;
}

/* The data and length (in elements) of a typed array of `want`'s type. */
static int typed(napi_env env, napi_value value, napi_typedarray_type want, void **data, size_t *length) {
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  return napi_get_typedarray_info(env, value, &type, length, data, &buffer, &offset) == napi_ok && type == want;
}

/* decode(src: Uint8Array, dst: Uint8Array, scaleDenom: 1|2|4|8, maxPixels: number,
 *        info: Int32Array(2)) -> status; info receives the output's width and height. */
static napi_value js_decode(napi_env env, napi_callback_info cb) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, cb, &argc, argv, NULL, NULL);
  void *src, *dst, *info;
  size_t src_size, dst_size, info_length;
  int32_t scale = 0;
  double max_pixels = 0;
  if (argc < 5 || !typed(env, argv[0], napi_uint8_array, &src, &src_size) || !typed(env, argv[1], napi_uint8_array, &dst, &dst_size) ||
      napi_get_value_int32(env, argv[2], &scale) != napi_ok || napi_get_value_double(env, argv[3], &max_pixels) != napi_ok ||
      !typed(env, argv[4], napi_int32_array, &info, &info_length) || info_length < 2 || (scale != 1 && scale != 2 && scale != 4 && scale != 8)) {
    napi_throw_type_error(env, NULL, "decode(src: Uint8Array, dst: Uint8Array, scaleDenom: 1|2|4|8, maxPixels: number, info: Int32Array)");
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, src_size == 0 ? FAILED : decode(src, src_size, dst, dst_size, scale, max_pixels, info), &result);
  return result;
}

/* resizeTf(src: Uint8Array, dst: Float32Array, geometry: Int32Array [srcW, srcH, placeW, placeH,
 *          left, top, outW, outH, halfPixel, nchw], norm: Float64Array [scale x3, offset x3])
 *   -> boolean (false: out of memory) */
static napi_value js_resize_tf(napi_env env, napi_callback_info cb) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, cb, &argc, argv, NULL, NULL);
  void *src, *dst, *geometry, *norm;
  size_t src_length, dst_length, geometry_length, norm_length;
  int ok = argc == 4 && typed(env, argv[0], napi_uint8_array, &src, &src_length) && typed(env, argv[1], napi_float32_array, &dst, &dst_length) &&
           typed(env, argv[2], napi_int32_array, &geometry, &geometry_length) && geometry_length >= 10 &&
           typed(env, argv[3], napi_float64_array, &norm, &norm_length) && norm_length >= 6;
  const int32_t *g = geometry;
  ok = ok && g[0] > 0 && g[1] > 0 && g[2] > 0 && g[3] > 0 && g[6] > 0 && g[7] > 0 && (double)g[0] * g[1] * 3 <= (double)src_length &&
       (double)g[6] * g[7] * 3 <= (double)dst_length;
  if (!ok) {
    napi_throw_type_error(env, NULL, "resizeTf(src: Uint8Array, dst: Float32Array, geometry: Int32Array(10), norm: Float64Array(6)) with sizes that fit");
    return NULL;
  }
  const double *n = norm;
  struct resize_job job = {src, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], {n[0], n[1], n[2]}, {n[3], n[4], n[5]}, dst};
  napi_value result;
  napi_get_boolean(env, resize_tf(&job), &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn, version;
  napi_create_function(env, "decode", NAPI_AUTO_LENGTH, js_decode, NULL, &fn);
  napi_set_named_property(env, exports, "decode", fn);
  napi_create_function(env, "resizeTf", NAPI_AUTO_LENGTH, js_resize_tf, NULL, &fn);
  napi_set_named_property(env, exports, "resizeTf", fn);
  napi_create_int32(env, LIBJPEG_TURBO_VERSION_NUMBER, &version);
  napi_set_named_property(env, exports, "libjpegTurboVersion", version);
  return exports;
}
