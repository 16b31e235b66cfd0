// Packs decoded RGB pixels into a model's input batch: layout and normalisation.
import type { Layout } from './layout.js';
import { NativeResizer, type RgbImage } from './native.js';
import type { Placement, Sampling } from './resize.js';

/** RGB pixels at the model's size, HWC, in 0-255: 8-bit, or float where the resize that made them
 * keeps fractions (TensorFlow resizes in float, and rounding would change the model's input). */
export type Pixels = Uint8Array | Float32Array;

export interface Normalisation {
  /** per-channel (R, G, B) mean and standard deviation in 0-255 pixel units: x' = (x - mean) / std */
  mean: [number, number, number];
  std: [number, number, number];
}

/** Precomputed so the per-pixel work is one multiply-add. */
export class TensorPacker {
  private readonly scale: Float64Array;
  private readonly offset: Float64Array;
  /** scale then offset, for the native resize */
  private readonly norm: Float64Array;
  private readonly resizer = NativeResizer.create();
  readonly imageSize: number;

  constructor(
    readonly height: number,
    readonly width: number,
    readonly layout: Layout,
    norm: Normalisation,
  ) {
    // Float64: in float32, 1/127.5 makes 255 come out as 1.0000001 rather than 1.
    this.scale = Float64Array.from(norm.std, (s) => 1 / s);
    this.offset = Float64Array.from(norm.mean, (m, c) => -m / norm.std[c]);
    this.norm = Float64Array.of(...this.scale, ...this.offset);
    this.imageSize = height * width * 3;
  }

  /** Resizes `image` to `place` with TensorFlow's bilinear and writes it normalised into a float
   * batch's slot `slot`, in one native pass: the values resizeRgb then writeFloat would give.
   * False, having written nothing, for another sampling or where the addon is not loaded. */
  resizeFloat(image: RgbImage, place: Placement, sampling: Sampling, dst: Float32Array, slot: number): boolean {
    if (!this.resizer || (sampling !== 'tf1' && sampling !== 'bilinear')) return false;
    const into = dst.subarray(slot * this.imageSize, (slot + 1) * this.imageSize);
    return this.resizer.resize(image, place, this.width, this.height, sampling === 'bilinear', this.layout === 'NCHW', this.norm, into);
  }

  /** Writes one image (packed RGB, HWC) into slot `slot` of a float batch. A classifier only ever
   * passes one kind of `rgb` (its resize mode decides), so the loop stays monomorphic. */
  writeFloat(rgb: Pixels, dst: Float32Array, slot: number): void {
    const base = slot * this.imageSize;
    const [s0, s1, s2] = this.scale;
    const [o0, o1, o2] = this.offset;
    const pixels = this.height * this.width;
    if (this.layout === 'NHWC') {
      for (let p = 0, i = 0; p < pixels; p++, i += 3) {
        dst[base + i] = rgb[i] * s0 + o0;
        dst[base + i + 1] = rgb[i + 1] * s1 + o1;
        dst[base + i + 2] = rgb[i + 2] * s2 + o2;
      }
    } else {
      const g = base + pixels;
      const b = g + pixels;
      for (let p = 0, i = 0; p < pixels; p++, i += 3) {
        dst[base + p] = rgb[i] * s0 + o0;
        dst[g + p] = rgb[i + 1] * s1 + o1;
        dst[b + p] = rgb[i + 2] * s2 + o2;
      }
    }
  }

  /** uint8 models take raw pixels: only the layout changes (float pixels are rounded). */
  writeUint8(rgb: Pixels, dst: Uint8Array, slot: number): void {
    const base = slot * this.imageSize;
    if (rgb instanceof Float32Array) rgb = Uint8ClampedArray.from(rgb.subarray(0, this.imageSize)) as unknown as Uint8Array;
    if (this.layout === 'NHWC') {
      dst.set(rgb.subarray(0, this.imageSize), base);
      return;
    }
    const pixels = this.height * this.width;
    for (let p = 0, i = 0; p < pixels; p++, i += 3) {
      dst[base + p] = rgb[i];
      dst[base + pixels + p] = rgb[i + 1];
      dst[base + 2 * pixels + p] = rgb[i + 2];
    }
  }
}
