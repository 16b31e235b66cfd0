// Resizing decoded pixels to a model's input the way the frameworks that trained it do. Pure
// functions over raw buffers (RGB, HWC, 8 bits in): no sharp, no I/O, so they can run anywhere,
// a worker thread included.

/** The samplers implemented here (`area` is libvips' own, in decode.ts). */
export type Sampling = 'tf1' | 'bilinear' | 'pil-bilinear' | 'pil-bicubic';

/** What part of the image becomes the model's input. `null`: the whole image, stretched to the
 * model's size. `shorter`: the shorter side resized to that many pixels (aspect ratio kept),
 * then the model-size centre cut out (torchvision `Resize(n)` + `CenterCrop`). `height`/`width`:
 * the whole image resized to that size, then the centre cut out. */
export type Crop = { shorter: number } | { height: number; width: number } | null;

/** The whole image resized to `width` x `height`, of which the window at (`left`, `top`) of the
 * output's size is kept. */
export interface Placement {
  width: number;
  height: number;
  left: number;
  top: number;
}

/** Where an `srcW` x `srcH` image's output window lies for `crop`. Sizes as Hugging Face's
 * image processors and torchvision compute them: the longer side truncated, offsets rounded down. */
export function placement(srcW: number, srcH: number, outW: number, outH: number, crop: Crop): Placement {
  let width = outW;
  let height = outH;
  if (crop && 'shorter' in crop) {
    const s = crop.shorter;
    if (srcW <= srcH) [width, height] = [s, Math.floor((s * srcH) / srcW)];
    else [width, height] = [Math.floor((s * srcW) / srcH), s];
  } else if (crop) {
    ({ width, height } = crop);
  }
  // A resized image narrower than the window (a very long, thin image): the window is centred and
  // the part outside the image repeats its edge, never reads outside the buffer.
  return { width, height, left: Math.floor((width - outW) / 2), top: Math.floor((height - outH) / 2) };
}

/** Resizes `src` (`srcW` x `srcH`, RGB) and returns the `outW` x `outH` window that `place`
 * describes: float32 for the TensorFlow samplers (TensorFlow resizes in float), 8-bit for PIL's
 * (PIL rounds to 8 bits after each pass). The TensorFlow samplers write into `floatOut` when
 * given one (at least outW * outH * 3): a model-size float array per image is a large object for
 * V8 to allocate and collect. */
export function resizeRgb(
  src: Uint8Array,
  srcW: number,
  srcH: number,
  outW: number,
  outH: number,
  sampling: Sampling,
  place: Placement = { width: outW, height: outH, left: 0, top: 0 },
  floatOut?: Float32Array,
): Float32Array | Uint8Array {
  if (src.length < srcW * srcH * 3) throw new RangeError(`expected ${srcW * srcH * 3} bytes of RGB, got ${src.length}`);
  switch (sampling) {
    case 'tf1':
    case 'bilinear':
      return resizeBilinearTf(src, srcW, srcH, outW, outH, sampling === 'bilinear', place, floatOut);
    case 'pil-bilinear':
      return resizePil(src, srcW, srcH, outW, outH, PIL_BILINEAR, place);
    case 'pil-bicubic':
      return resizePil(src, srcW, srcH, outW, outH, PIL_BICUBIC, place);
  }
}

// ---- TensorFlow's resize_bilinear ------------------------------------------------------------

interface Taps {
  /** first and second source index (times 3 for columns), and the weight of the second */
  lo: Int32Array;
  hi: Int32Array;
  frac: Float32Array;
}

/** TF's compute_interpolation_weights: LegacyScaler (source = dest x in/out, TF1's default) or
 * HalfPixelScaler (source = (dest + 0.5) x in/out - 0.5: TF2, ONNX Resize, OpenCV), in float32
 * as TensorFlow computes them. */
function bilinearTaps(inSize: number, outSize: number, start: number, count: number, halfPixel: boolean, stride: number): Taps {
  const f = Math.fround;
  const scale = f(inSize / outSize);
  const taps: Taps = { lo: new Int32Array(count), hi: new Int32Array(count), frac: new Float32Array(count) };
  for (let i = 0; i < count; i++) {
    // Indices outside the resized image (a window wider than it) repeat its edge.
    const d = Math.min(Math.max(start + i, 0), outSize - 1);
    const pos = halfPixel ? f(f(f(d + 0.5) * scale) - 0.5) : f(d * scale);
    const floor = Math.floor(pos);
    taps.lo[i] = Math.min(Math.max(floor, 0), inSize - 1) * stride;
    taps.hi[i] = Math.min(Math.max(Math.ceil(pos), 0), inSize - 1) * stride;
    taps.frac[i] = f(pos - floor);
  }
  return taps;
}

/** TF's compute_lerp: two horizontal lerps, then one vertical, in float32. */
function lerp2(tl: number, tr: number, bl: number, br: number, xl: number, yl: number): number {
  const t = Math.fround(tl + Math.fround((tr - tl) * xl));
  const b = Math.fround(bl + Math.fround((br - bl) * xl));
  return t + Math.fround((b - t) * yl);
}

function resizeBilinearTf(
  src: Uint8Array,
  srcW: number,
  srcH: number,
  outW: number,
  outH: number,
  halfPixel: boolean,
  place: Placement,
  into?: Float32Array,
): Float32Array {
  const xs = bilinearTaps(srcW, place.width, place.left, outW, halfPixel, 3);
  const ys = bilinearTaps(srcH, place.height, place.top, outH, halfPixel, srcW * 3);
  const out = into && into.length >= outW * outH * 3 ? into : new Float32Array(outW * outH * 3);
  let o = 0;
  for (let y = 0; y < outH; y++) {
    const top = ys.lo[y];
    const bottom = ys.hi[y];
    const yl = ys.frac[y];
    for (let x = 0; x < outW; x++) {
      const tl = top + xs.lo[x];
      const tr = top + xs.hi[x];
      const bl = bottom + xs.lo[x];
      const br = bottom + xs.hi[x];
      const xl = xs.frac[x];
      out[o++] = lerp2(src[tl], src[tr], src[bl], src[br], xl, yl);
      out[o++] = lerp2(src[tl + 1], src[tr + 1], src[bl + 1], src[br + 1], xl, yl);
      out[o++] = lerp2(src[tl + 2], src[tr + 2], src[bl + 2], src[br + 2], xl, yl);
    }
  }
  return out;
}

// ---- PIL's Image.resize (Pillow's Resample.c, 8 bits per channel) ----------------------------

interface PilFilter {
  support: number;
  weight: (x: number) => number;
}

const PIL_BILINEAR: PilFilter = {
  support: 1,
  weight: (x) => {
    x = Math.abs(x);
    return x < 1 ? 1 - x : 0;
  },
};

const PIL_BICUBIC: PilFilter = {
  support: 2,
  weight: (x) => {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  },
};

/** Pillow keeps 22 fractional bits in its 8-bit fixed-point weights. */
const PRECISION_BITS = 22;

interface PilTaps {
  ksize: number;
  /** per output index: first source index and number of taps */
  first: Int32Array;
  count: Int32Array;
  /** ksize fixed-point weights per output index */
  weights: Int32Array;
}

/** precompute_coeffs + normalize_coeffs_8bpc: a filter as wide as the scale when shrinking
 * (antialiasing), weights normalised over the taps inside the image, then made fixed-point. */
function pilTaps(inSize: number, outSize: number, start: number, count: number, filter: PilFilter): PilTaps {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const taps: PilTaps = { ksize, first: new Int32Array(count), count: new Int32Array(count), weights: new Int32Array(count * ksize) };
  const k = new Float64Array(ksize);
  const ss = 1 / filterScale; // multiplied, not divided: the same doubles as Pillow
  for (let i = 0; i < count; i++) {
    const xx = Math.min(Math.max(start + i, 0), outSize - 1);
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const n = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let total = 0;
    for (let x = 0; x < n; x++) total += k[x] = filter.weight((x + xmin - center + 0.5) * ss);
    for (let x = 0; x < n; x++) {
      const w = total !== 0 ? k[x] / total : k[x];
      taps.weights[i * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    taps.first[i] = xmin;
    taps.count[i] = n;
  }
  return taps;
}

const clip8 = (ss: number) => {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
};

/** Horizontal pass first, rounded to 8 bits, then the vertical pass, as Pillow does; only the
 * rows and columns the window needs are computed. */
function resizePil(src: Uint8Array, srcW: number, srcH: number, outW: number, outH: number, filter: PilFilter, place: Placement): Uint8Array {
  const xs = pilTaps(srcW, place.width, place.left, outW, filter);
  const ys = pilTaps(srcH, place.height, place.top, outH, filter);
  let rowFirst = srcH;
  let rowEnd = 0;
  for (let y = 0; y < outH; y++) {
    rowFirst = Math.min(rowFirst, ys.first[y]);
    rowEnd = Math.max(rowEnd, ys.first[y] + ys.count[y]);
  }
  const half = 1 << (PRECISION_BITS - 1);
  const rows = rowEnd - rowFirst;
  const tmp = new Uint8Array(rows * outW * 3);
  for (let r = 0, t = 0; r < rows; r++) {
    const rowBase = (rowFirst + r) * srcW * 3;
    for (let x = 0; x < outW; x++) {
      const wBase = x * xs.ksize;
      let s = rowBase + xs.first[x] * 3;
      let s0 = half;
      let s1 = half;
      let s2 = half;
      for (let k = 0, n = xs.count[x]; k < n; k++, s += 3) {
        const w = xs.weights[wBase + k];
        s0 += src[s] * w;
        s1 += src[s + 1] * w;
        s2 += src[s + 2] * w;
      }
      tmp[t++] = clip8(s0);
      tmp[t++] = clip8(s1);
      tmp[t++] = clip8(s2);
    }
  }
  const out = new Uint8Array(outW * outH * 3);
  const stride = outW * 3;
  for (let y = 0, o = 0; y < outH; y++) {
    const wBase = y * ys.ksize;
    const first = (ys.first[y] - rowFirst) * stride;
    const n = ys.count[y];
    for (let i = 0; i < stride; i++) {
      let ss = half;
      for (let k = 0, s = first + i; k < n; k++, s += stride) ss += tmp[s] * ys.weights[wBase + k];
      out[o++] = clip8(ss);
    }
  }
  return out;
}
