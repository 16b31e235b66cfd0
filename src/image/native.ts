// The image addon (native/*.c, built by scripts/build-native.sh, shipped prebuilt for linux-x64),
// called in the decode thread. Its JPEG decoder is libjpeg-turbo with its x86-64 SIMD called
// directly, OpenCV's decoder without OpenCV: no libvips pipeline, no thread hand-off, the pixels
// written straight into this thread's buffer. It takes only the JPEGs it decodes to sharp's
// pixels (tested, damaged files included); anything else, and any warning or error from libjpeg,
// answers undefined and the caller decodes with sharp. Its resize is TensorFlow's bilinear and the
// normalisation in one pass into the model's input, the same values as resize.ts and tensor.ts
// (tested). Where the addon cannot load (another platform, musl, an older glibc) sharp decodes
// and the JavaScript resizes.
import { createRequire } from 'node:module';
import type { JpegHeader } from './jpeg-header.js';
import type { Placement } from './resize.js';

/** Decoded RGB, 3 bytes a pixel. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

interface Addon {
  /** decodes into `dst` at 1/`scaleDenom` scale; `info` receives the output's width and height */
  decode(src: Uint8Array, dst: Uint8Array, scaleDenom: number, maxPixels: number, info: Int32Array): number;
  /** geometry: srcW, srcH, placeW, placeH, left, top, outW, outH, halfPixel, nchw; norm: scale
   * x3, offset x3; false when out of memory */
  resizeTf(src: Uint8Array, dst: Float32Array, geometry: Int32Array, norm: Float64Array): boolean;
  libjpegTurboVersion: number;
}

/** native/jpeg.c's answer when it decoded the image; anything else sends it to sharp */
const DECODED = 0;
/** The buffer a thread keeps between images (a 5-megapixel decode); a larger image gets its own. */
const KEPT_BYTES = 16 * 1024 * 1024;
/** Set to 0 to leave the addon unloaded, as where it cannot load. */
export const NATIVE_SWITCH = 'CLASSIFY_NATIVE_JPEG';

let addon: Addon | null | undefined;

function load(): Addon | null {
  if (addon === undefined) {
    addon = null;
    if (process.env[NATIVE_SWITCH] !== '0' && process.platform === 'linux' && process.arch === 'x64') {
      try {
        // The same relative path from src/image (tests) and dist/image (the package).
        addon = createRequire(import.meta.url)('../../native/prebuilt/linux-x64/image.node') as Addon;
      } catch {
        addon = null; // musl, a glibc older than the build's, a damaged install: the fallbacks run
      }
    }
  }
  return addon;
}

/** libjpeg-turbo's version in the addon ("2.1.5"), or undefined where it did not load (for --verbose). */
export function nativeJpegVersion(): string | undefined {
  const v = load()?.libjpegTurboVersion;
  return v === undefined ? undefined : `${Math.floor(v / 1e6)}.${Math.floor(v / 1e3) % 1000}.${v % 1000}`;
}

/** Buffers of images decoded with `own` kept for the next ones: libvips may still be resizing a
 * few while the thread decodes more, and a new buffer each time is garbage that only a full
 * collection frees (peak RSS over 100,000 lines with V8's young generation capped: 242 MB with
 * these, 264 without). */
const SPARE_OWN = 4;

/** One decoder per thread; its output buffers are kept between images. */
export class NativeJpegDecoder {
  private buffer = new Uint8Array(0);
  private readonly spare: Uint8Array[] = [];
  private readonly info = new Int32Array(2);

  private constructor(private readonly addon: Addon) {}

  /** undefined where the addon does not load */
  static create(): NativeJpegDecoder | undefined {
    const loaded = load();
    return loaded ? new NativeJpegDecoder(loaded) : undefined;
  }

  /** The image's RGB pixels at 1/`scale` of its size (libjpeg's DCT scaling: 1, 2, 4 or 8), or
   * undefined when sharp should decode it: not a plain sequential JPEG, over `maxPixels`, a
   * colour space or subsampling not taken here, or anything libjpeg warned about or failed on.
   * `data` views this decoder's buffer, valid until its next call, unless `own` asks for a buffer
   * of the image's own (given back with giveBack when nothing reads it any more). */
  decode(bytes: Uint8Array, maxPixels: number, header: JpegHeader | undefined, scale = 1, own = false): RgbImage | undefined {
    if (!header?.sequential || header.width * header.height > maxPixels) return undefined;
    const size = Math.ceil(header.width / scale) * Math.ceil(header.height / scale) * 3;
    const dst = own ? this.ownBuffer(size) : size > KEPT_BYTES ? new Uint8Array(size) : this.reserve(size);
    if (this.addon.decode(bytes, dst, scale, maxPixels, this.info) !== DECODED) return undefined;
    const [width, height] = this.info;
    return { data: dst.subarray(0, width * height * 3), width, height };
  }

  /** Takes back the buffer of an image decoded with `own`. */
  giveBack(image: RgbImage): void {
    const buffer = new Uint8Array(image.data.buffer);
    if (this.spare.length < SPARE_OWN && buffer.length <= KEPT_BYTES) this.spare.push(buffer);
  }

  private ownBuffer(size: number): Uint8Array {
    const i = this.spare.findIndex((b) => b.length >= size);
    return i >= 0 ? this.spare.splice(i, 1)[0] : new Uint8Array(size);
  }

  private reserve(size: number): Uint8Array {
    if (size > this.buffer.length) this.buffer = new Uint8Array(Math.min(Math.max(size, this.buffer.length * 2), KEPT_BYTES));
    return this.buffer;
  }
}

/** TensorFlow's bilinear resize and the normalisation, natively (native/resize.c). */
export class NativeResizer {
  private readonly geometry = new Int32Array(10);

  private constructor(private readonly addon: Addon) {}

  /** undefined where the addon does not load */
  static create(): NativeResizer | undefined {
    const loaded = load();
    return loaded ? new NativeResizer(loaded) : undefined;
  }

  /** Writes `image` resized to `place` (its window of `outW` x `outH`), normalised by `norm` (three
   * scales, three offsets), into `dst` in the layout given; false when it could not. */
  resize(image: RgbImage, place: Placement, outW: number, outH: number, halfPixel: boolean, nchw: boolean, norm: Float64Array, dst: Float32Array): boolean {
    const g = this.geometry;
    [g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]] = [image.width, image.height, place.width, place.height, place.left, place.top, outW, outH, +halfPixel, +nchw];
    return this.addon.resizeTf(image.data, dst, g, norm);
  }
}
