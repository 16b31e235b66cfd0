// JPEGs decoded by libjpeg-turbo with its x86-64 SIMD, called directly through a small Node-API
// addon (native/jpeg.c, built by scripts/build-native.sh, shipped prebuilt for linux-x64), in the
// calling decode thread. It is OpenCV's decoder without OpenCV: no libvips pipeline, no thread
// hand-off, the pixels written straight into this thread's buffer. It takes only the JPEGs it
// decodes to sharp's pixels (tested, damaged files included); anything else, and any warning or
// error from libjpeg, answers undefined and the caller decodes with sharp. Where the addon cannot
// load (another platform, musl, an older glibc) sharp decodes everything.
import { createRequire } from 'node:module';
import type { JpegHeader } from './jpeg-header.js';

/** Decoded RGB, 3 bytes a pixel. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

interface Addon {
  /** decodes into `dst` at 1/`scaleDenom` scale; `info` receives the output's width and height */
  decode(src: Uint8Array, dst: Uint8Array, scaleDenom: number, maxPixels: number, info: Int32Array): number;
  libjpegTurboVersion: number;
}

/** native/jpeg.c's answer when it decoded the image; anything else sends it to sharp */
const DECODED = 0;
/** The buffer a thread keeps between images (a 5-megapixel decode); a larger image gets its own. */
const KEPT_BYTES = 16 * 1024 * 1024;
/** Set to 0 to leave the addon unloaded: the WebAssembly decoder and sharp then decode. */
export const NATIVE_SWITCH = 'CLASSIFY_NATIVE_JPEG';

let addon: Addon | null | undefined;

function load(): Addon | null {
  if (addon === undefined) {
    addon = null;
    if (process.env[NATIVE_SWITCH] !== '0' && process.platform === 'linux' && process.arch === 'x64') {
      try {
        // The same relative path from src/image (tests) and dist/image (the package).
        addon = createRequire(import.meta.url)('../../native/prebuilt/linux-x64/jpeg.node') as Addon;
      } catch {
        addon = null; // musl, a glibc older than the build's, a damaged install: the fallbacks decode
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

/** One decoder per thread; its output buffer is kept between images. */
export class NativeJpegDecoder {
  private buffer = new Uint8Array(0);
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
   * of the image's own. */
  decode(bytes: Uint8Array, maxPixels: number, header: JpegHeader | undefined, scale = 1, own = false): RgbImage | undefined {
    if (!header?.sequential || header.width * header.height > maxPixels) return undefined;
    const size = Math.ceil(header.width / scale) * Math.ceil(header.height / scale) * 3;
    const dst = own || size > KEPT_BYTES ? new Uint8Array(size) : this.reserve(size);
    if (this.addon.decode(bytes, dst, scale, maxPixels, this.info) !== DECODED) return undefined;
    const [width, height] = this.info;
    return { data: dst.subarray(0, width * height * 3), width, height };
  }

  private reserve(size: number): Uint8Array {
    if (size > this.buffer.length) this.buffer = new Uint8Array(Math.min(Math.max(size, this.buffer.length * 2), KEPT_BYTES));
    return this.buffer;
  }
}
