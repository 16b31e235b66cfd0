/* What native/jpeg.c (the addon's entry) and native/resize.c share. */
#ifndef CLASSIFY_IMAGE_H
#define CLASSIFY_IMAGE_H
#include <stdint.h>

/* One image's resize: `src` (src_w x src_h RGB) resized to place_w x place_h, of which the
 * out_w x out_h window at (left, top) is written, normalised (v * scale + offset per channel),
 * into `dst` in NHWC or NCHW order. */
struct resize_job {
  const uint8_t *src;
  int src_w, src_h;
  int place_w, place_h, left, top;
  int out_w, out_h;
  int half_pixel, nchw;
  double scale[3], offset[3];
  float *dst;
};

/* 0 when out of memory */
int resize_tf(const struct resize_job *job);
#endif
