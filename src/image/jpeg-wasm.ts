// Small JPEGs decoded by libjpeg-turbo compiled to WebAssembly (the build that @cwasm/jpeg-turbo
// ships; the loader is ours), synchronously in the calling thread. On a small photo most of
// sharp's time is not the decode but libvips' pipeline and two thread hand-offs (about 0.3 ms of
// its 1.2-1.4 ms on the flower photos); here the decode is all there is. For larger images the
// native, SIMD decoder in sharp is faster, so this takes only what it is fastest at, and only what
// it decodes to the same pixels (tested against sharp): anything else, and any warning or error
// from libjpeg, answers undefined and the caller decodes with sharp, exactly as before.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { type JpegHeader, jpegHeader } from './jpeg-header.js';

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
  tjDestroy(handle: number): number;
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

/** Whether the WebAssembly build is installed and compiles (for --verbose). */
export function wasmJpegAvailable(): boolean {
  return compile() !== null;
}

/** One decoder per thread; its buffers are kept between images. */
export class WasmJpegDecoder {
  private turbo: TurboJpeg | undefined;
  private broken = false;
  private header = 0;
  private input = { ptr: 0, size: 0 };
  private output = { ptr: 0, size: 0 };

  /** undefined where the WebAssembly build is not installed */
  static create(): WasmJpegDecoder | undefined {
    return compile() ? new WasmJpegDecoder() : undefined;
  }

  /** The image's RGB pixels, or undefined when sharp should decode it: not a plain sequential
   * JPEG (see jpegHeader), too large, a subsampling or colour space not taken here, or anything
   * libjpeg warned about or failed on. */
  decode(bytes: Uint8Array, maxPixels: number, header: JpegHeader | undefined = jpegHeader(bytes)): RgbImage | undefined {
    if (this.broken || bytes.length > WASM_MAX_BYTES || !header?.sequential) return undefined;
    const limit = Math.min(maxPixels, WASM_MAX_PIXELS);
    // The header's size first: a large photo is not even copied into this decoder's memory.
    if (header.width * header.height > limit) return undefined;
    let turbo = this.turbo;
    if (!turbo) {
      try {
        turbo = this.instantiate();
      } catch {
        this.broken = true; // it will not start next time either: sharp decodes everything
        return undefined;
      }
    }
    try {
      return this.tryDecode(turbo, bytes, limit);
    } catch {
      // After a jump libjpeg's state, and the C stack pointer the jump skipped restoring, are
      // lost: start afresh.
      this.turbo = undefined;
      return undefined;
    }
  }

  private tryDecode(turbo: TurboJpeg, bytes: Uint8Array, maxPixels: number): RgbImage | undefined {
    const src = this.reserve(turbo, this.input, bytes.length, WASM_MAX_BYTES);
    new Uint8Array(turbo.memory.buffer, src, bytes.length).set(bytes);
    // A decompressor per image: libjpeg keeps an image's tables for the next one, and a JPEG
    // without its own would be decoded with another image's.
    const handle = turbo.tjInitDecompress();
    if (handle === 0) throw new Error('cannot start the WebAssembly JPEG decoder');
    try {
      const h = this.header;
      if (turbo.tjDecompressHeader3(handle, src, bytes.length, h, h + 4, h + 8, h + 12) !== 0) return undefined;
      const [width, height, subsampling, colourspace] = new Int32Array(turbo.memory.buffer, h, 4);
      if (width * height > maxPixels || !SUBSAMPLINGS.has(subsampling) || !COLOURSPACES.has(colourspace)) return undefined;
      const size = width * height * 3;
      const dst = this.reserve(turbo, this.output, size, WASM_MAX_PIXELS * 3);
      if (turbo.tjDecompress2(handle, src, bytes.length, dst, width, width * 3, height, TJPF_RGB, TJFLAG_STOPONWARNING) !== 0) return undefined;
      return { data: new Uint8Array(turbo.memory.buffer, dst, size), width, height };
    } finally {
      turbo.tjDestroy(handle);
    }
  }

  private instantiate(): TurboJpeg {
    let memory: WebAssembly.Memory | undefined;
    // The C library asks for the environment once: none, zero variables of zero bytes.
    const noEnvironment = (count: number, size: number) => {
      const view = new DataView(memory!.buffer);
      view.setUint32(count, 0, true);
      view.setUint32(size, 0, true);
      return 0;
    };
    const imports = {
      env: { setjmp: () => 0, longjmp: jump },
      wasi_snapshot_preview1: { proc_exit: jump, environ_sizes_get: noEnvironment, environ_get: jump, fd_close: jump, fd_seek: jump, fd_write: jump },
    };
    const turbo = new WebAssembly.Instance(compile()!, imports).exports as unknown as TurboJpeg;
    memory = turbo.memory;
    this.header = turbo.malloc(16);
    if (this.header === 0) throw new Error('cannot start the WebAssembly JPEG decoder');
    this.input = { ptr: 0, size: 0 };
    this.output = { ptr: 0, size: 0 };
    this.turbo = turbo;
    return turbo;
  }

  /** A buffer of at least `size` bytes in the decoder's memory, grown by doubling up to `limit`. */
  private reserve(turbo: TurboJpeg, buffer: { ptr: number; size: number }, size: number, limit: number): number {
    if (size > buffer.size) {
      if (buffer.ptr) turbo.free(buffer.ptr);
      buffer.size = Math.max(size, Math.min(buffer.size * 2, limit));
      buffer.ptr = turbo.malloc(buffer.size);
      if (buffer.ptr === 0) throw new Error('out of WebAssembly memory');
    }
    return buffer.ptr;
  }
}
