// Small JPEGs decoded by libjpeg-turbo compiled to WebAssembly (the build that @cwasm/jpeg-turbo
// ships; the loader is ours), synchronously in the calling thread. On a small photo most of
// sharp's time is not the decode but libvips' pipeline and two thread hand-offs (about 0.3 ms of
// its 1.2-1.4 ms on the flower photos); here the decode is all there is. For larger images the
// native, SIMD decoder in sharp is faster, so this takes only what it is fastest at, and only what
// it decodes to the same pixels (tested against sharp): anything else, and any warning or error
// from libjpeg, answers undefined and the caller decodes with sharp, exactly as before.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/** Decoded RGB, 3 bytes a pixel. `data` views the decoder's memory: valid until its next call. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Above this many pixels sharp's SIMD decoder wins (measured, 2-core EPYC: 500x375 took 1.44 ms
 * here against sharp's 1.75 ms of CPU, 1000x750 5.2 against 4.7). */
export const WASM_MAX_PIXELS = 300_000;
/** Larger files go to sharp whatever their size in pixels: this decoder's memory never shrinks. */
const WASM_MAX_BYTES = 4 * 1024 * 1024;

// turbojpeg's constants
const TJPF_RGB = 0;
const TJFLAG_STOPONWARNING = 8192;
/** TJSAMP_444, _420, _GRAY: the subsamplings tested equal to sharp's decode (4:2:2 and the rarer
 * ones go to sharp: libjpeg-turbo versions have upsampled some of them differently) */
const SUBSAMPLINGS = new Set([0, 2, 3]);
/** TJCS_YCbCr, TJCS_GRAY: CMYK, YCCK and RGB JPEGs go to sharp */
const COLOURSPACES = new Set([1, 2]);

interface TurboJpeg {
  memory: WebAssembly.Memory;
  malloc(size: number): number;
  free(ptr: number): void;
  tjInitDecompress(): number;
  tjDecompressHeader3(handle: number, src: number, size: number, width: number, height: number, subsamp: number, colourspace: number): number;
  tjDecompress2(handle: number, src: number, size: number, dst: number, width: number, pitch: number, height: number, format: number, flags: number): number;
}

/** libjpeg reports errors and warnings by longjmp; the build's setjmp always answers 0, so the
 * jump is made a JS exception that unwinds the WebAssembly stack. */
class Jump extends Error {}
const jump = (): never => {
  throw new Jump('libjpeg error');
};

let compiled: WebAssembly.Module | null | undefined;

function compile(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      const file = createRequire(import.meta.url).resolve('@cwasm/jpeg-turbo/jpeg-turbo.wasm');
      compiled = new WebAssembly.Module(readFileSync(file));
    } catch {
      compiled = null; // not installed: sharp decodes everything
    }
  }
  return compiled;
}

/** One decoder per thread; its buffers are kept between images. */
export class WasmJpegDecoder {
  private turbo: TurboJpeg | undefined;
  private handle = 0;
  private header = 0;
  private input = { ptr: 0, size: 0 };
  private output = { ptr: 0, size: 0 };

  /** undefined where the WebAssembly build is not installed */
  static create(): WasmJpegDecoder | undefined {
    return compile() ? new WasmJpegDecoder() : undefined;
  }

  /** The image's RGB pixels, or undefined when sharp should decode it: too large, a subsampling
   * or colour space not taken here, or anything libjpeg warned about or failed on. */
  decode(bytes: Uint8Array, maxPixels: number): RgbImage | undefined {
    if (bytes.length > WASM_MAX_BYTES) return undefined;
    try {
      return this.tryDecode(bytes, Math.min(maxPixels, WASM_MAX_PIXELS));
    } catch {
      // After a jump libjpeg's state (and what it had allocated) is lost: start afresh.
      this.turbo = undefined;
      return undefined;
    }
  }

  private tryDecode(bytes: Uint8Array, maxPixels: number): RgbImage | undefined {
    const turbo = this.turbo ?? this.instantiate();
    const src = this.reserve(turbo, this.input, bytes.length);
    new Uint8Array(turbo.memory.buffer, src, bytes.length).set(bytes);
    const h = this.header;
    if (turbo.tjDecompressHeader3(this.handle, src, bytes.length, h, h + 4, h + 8, h + 12) !== 0) return undefined;
    const [width, height, subsampling, colourspace] = new Int32Array(turbo.memory.buffer, h, 4);
    if (width * height > maxPixels || !SUBSAMPLINGS.has(subsampling) || !COLOURSPACES.has(colourspace)) return undefined;
    const size = width * height * 3;
    const dst = this.reserve(turbo, this.output, size);
    if (turbo.tjDecompress2(this.handle, src, bytes.length, dst, width, width * 3, height, TJPF_RGB, TJFLAG_STOPONWARNING) !== 0) return undefined;
    return { data: new Uint8Array(turbo.memory.buffer, dst, size), width, height };
  }

  private instantiate(): TurboJpeg {
    const imports = {
      env: { setjmp: () => 0, longjmp: jump },
      wasi_snapshot_preview1: { proc_exit: jump, environ_sizes_get: () => 0, environ_get: jump, fd_close: jump, fd_seek: jump, fd_write: jump },
    };
    const turbo = new WebAssembly.Instance(compile()!, imports).exports as unknown as TurboJpeg;
    this.handle = turbo.tjInitDecompress();
    this.header = turbo.malloc(16);
    if (this.handle === 0 || this.header === 0) throw new Error('cannot start the WebAssembly JPEG decoder');
    this.input = { ptr: 0, size: 0 };
    this.output = { ptr: 0, size: 0 };
    this.turbo = turbo;
    return turbo;
  }

  /** A buffer of at least `size` bytes in the decoder's memory, grown by doubling. */
  private reserve(turbo: TurboJpeg, buffer: { ptr: number; size: number }, size: number): number {
    if (size > buffer.size) {
      if (buffer.ptr) turbo.free(buffer.ptr);
      buffer.size = Math.max(size, buffer.size * 2);
      buffer.ptr = turbo.malloc(buffer.size);
      if (buffer.ptr === 0) throw new Error('out of WebAssembly memory');
    }
    return buffer.ptr;
  }
}

/** What decides whether an embedded profile or EXIF orientation could change a JPEG's pixels:
 * an APP2 ICC_PROFILE or an APP1 Exif segment before the image data. Reads the header only. */
export function jpegMetadata(bytes: Uint8Array): { icc: boolean; exif: boolean } {
  const found = { icc: false, exif: false };
  let pos = 2;
  while (pos + 4 <= bytes.length && bytes[pos] === 0xff) {
    const marker = bytes[pos + 1];
    if (marker === 0xff) {
      pos++;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) break; // start of scan, end of image
    const length = (bytes[pos + 2] << 8) | bytes[pos + 3];
    if (marker === 0xe1 && startsWith(bytes, pos + 4, EXIF)) found.exif = true;
    if (marker === 0xe2 && startsWith(bytes, pos + 4, ICC_PROFILE)) found.icc = true;
    pos += 2 + length;
  }
  return found;
}

const EXIF = [0x45, 0x78, 0x69, 0x66, 0, 0]; // "Exif\0\0"
const ICC_PROFILE = [0x49, 0x43, 0x43, 0x5f, 0x50, 0x52, 0x4f, 0x46, 0x49, 0x4c, 0x45, 0]; // "ICC_PROFILE\0"

function startsWith(bytes: Uint8Array, at: number, prefix: number[]): boolean {
  if (at + prefix.length > bytes.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false;
  return true;
}
