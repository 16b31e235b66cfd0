/* TensorFlow's resize_bilinear (TF1's legacy scaler or half-pixel centres) and the model's
 * normalisation, written straight into the model's input slot: src/image/resize.ts and
 * src/image/tensor.ts do the same in JavaScript for every other case, and these must give their
 * values bit for bit. So each step is that code's, operation for operation: JavaScript computes
 * in double and rounds to float where it calls Math.fround or stores into a Float32Array, and so
 * does this (built with -ffp-contract=off: a fused multiply-add would round once where the
 * JavaScript rounds twice). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "image.h"

static inline double fr(double x) { return (double)(float)x; }

static inline int clamp(double x, int hi) { return x < 0 ? 0 : x > hi ? hi : (int)x; }

/* resize.ts bilinearTaps: source indices (times `stride`) and weights for `count` outputs. */
static void taps(int in, int out, int start, int count, int half_pixel, int stride, int *lo, int *hi, float *frac) {
  double scale = fr((double)in / out);
  for (int i = 0; i < count; i++) {
    int d = start + i < 0 ? 0 : start + i > out - 1 ? out - 1 : start + i;
    double pos = half_pixel ? fr(fr(fr(d + 0.5) * scale) - 0.5) : fr(d * scale);
    double lower = floor(pos);
    lo[i] = clamp(lower, in - 1) * stride;
    hi[i] = clamp(ceil(pos), in - 1) * stride;
    frac[i] = (float)(pos - lower);
  }
}

/* resize.ts lerp2. Where JavaScript rounds a double result to float and that double is exact or
 * its rounding cannot change the float (a sum or product of two floats: double has more than
 * twice float's precision), float arithmetic gives the same value and is used; b - t is not
 * rounded to float in JavaScript, so it stays double. */
static inline float lerp2(float tl, float tr, float bl, float br, float xl, double yl) {
  float t = tl + (tr - tl) * xl;
  float b = bl + (br - bl) * xl;
  return t + (float)(((double)b - t) * yl);
}

int resize_tf(const struct resize_job *job) {
  int *lo = malloc(sizeof(int) * 2 * ((size_t)job->out_w + job->out_h));
  float *frac = malloc(sizeof(float) * ((size_t)job->out_w + job->out_h));
  if (!lo || !frac) {
    free(lo);
    free(frac);
    return 0;
  }
  int *xlo = lo, *xhi = lo + job->out_w, *ylo = xhi + job->out_w, *yhi = ylo + job->out_h;
  float *xf = frac, *yf = frac + job->out_w;
  taps(job->src_w, job->place_w, job->left, job->out_w, job->half_pixel, 3, xlo, xhi, xf);
  taps(job->src_h, job->place_h, job->top, job->out_h, job->half_pixel, job->src_w * 3, ylo, yhi, yf);
  const uint8_t *src = job->src;
  size_t pixels = (size_t)job->out_w * job->out_h;
  /* tensor.ts writeFloat: NHWC steps 1 between channels and 3 between pixels, NCHW the reverse */
  size_t channel_step = job->nchw ? pixels : 1, pixel_step = job->nchw ? 1 : 3;
  for (int y = 0; y < job->out_h; y++) {
    float *row = job->dst + (size_t)y * job->out_w * pixel_step;
    for (int x = 0; x < job->out_w; x++) {
      const uint8_t *tl = src + ylo[y] + xlo[x], *tr = src + ylo[y] + xhi[x];
      const uint8_t *bl = src + yhi[y] + xlo[x], *br = src + yhi[y] + xhi[x];
      for (int c = 0; c < 3; c++) {
        float v = lerp2(tl[c], tr[c], bl[c], br[c], xf[x], yf[y]);
        row[x * pixel_step + c * channel_step] = (float)((double)v * job->scale[c] + job->offset[c]);
      }
    }
  }
  free(lo);
  free(frac);
  return 1;
}
