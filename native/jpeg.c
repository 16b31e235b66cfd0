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

/* What decode() answers; the JavaScript side (src/image/jpeg-native.ts) names them too. */
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

static int typed_bytes(napi_env env, napi_value value, unsigned char **data, size_t *size) {
  napi_typedarray_type type;
  size_t length;
  void *base;
  napi_value buffer;
  size_t offset;
  if (napi_get_typedarray_info(env, value, &type, &length, &base, &buffer, &offset) != napi_ok) return 0;
  if (type != napi_uint8_array && type != napi_uint8_clamped_array) return 0;
  *data = base;
  *size = length;
  return 1;
}

/* decode(src: Uint8Array, dst: Uint8Array, scaleDenom: 1|2|4|8, maxPixels: number,
 *        info: Int32Array(2)) -> status; info receives the output's width and height. */
static napi_value js_decode(napi_env env, napi_callback_info cb) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, cb, &argc, argv, NULL, NULL);
  unsigned char *src, *dst;
  size_t src_size, dst_size;
  int32_t scale = 0;
  double max_pixels = 0;
  napi_typedarray_type type;
  size_t info_length;
  void *info;
  napi_value ignored;
  size_t offset;
  if (argc < 5 || !typed_bytes(env, argv[0], &src, &src_size) || !typed_bytes(env, argv[1], &dst, &dst_size) ||
      napi_get_value_int32(env, argv[2], &scale) != napi_ok || napi_get_value_double(env, argv[3], &max_pixels) != napi_ok ||
      napi_get_typedarray_info(env, argv[4], &type, &info_length, &info, &ignored, &offset) != napi_ok || type != napi_int32_array ||
      info_length < 2 || (scale != 1 && scale != 2 && scale != 4 && scale != 8)) {
    napi_throw_type_error(env, NULL, "decode(src: Uint8Array, dst: Uint8Array, scaleDenom: 1|2|4|8, maxPixels: number, info: Int32Array)");
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, src_size == 0 ? FAILED : decode(src, src_size, dst, dst_size, scale, max_pixels, info), &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn, version;
  napi_create_function(env, "decode", NAPI_AUTO_LENGTH, js_decode, NULL, &fn);
  napi_set_named_property(env, exports, "decode", fn);
  napi_create_int32(env, LIBJPEG_TURBO_VERSION_NUMBER, &version);
  napi_set_named_property(env, exports, "libjpegTurboVersion", version);
  return exports;
}
