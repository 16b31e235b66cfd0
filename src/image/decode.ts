// Image bytes -> RGB pixels at the model's input size: JPEGs whose pixels stay as stored are
// decoded in this thread by libjpeg-turbo (native.ts), everything else by sharp (libvips, off the
// JS thread); sharp resizes in the fast mode, the exact modes resize in resize.ts or natively.
import { createRequire } from 'node:module';
import type { Region, Sharp } from 'sharp';
import { jpegClaimsMoreThanItHolds, type JpegHeader, jpegHeader } from './jpeg-header.js';
import { NativeJpegDecoder, type RgbImage } from './native.js';
import { type ImageSteps, isExact, VIEWER_STEPS } from './preprocessing.js';
import { type Placement, placement, resizeRgb, type Sampling } from './resize.js';
import { InputError } from './read.js';
import type { Pixels } from './tensor.js';

export interface DecodeOptions {
  width: number;
  height: number;
  /** images with more pixels than this are refused before decoding (decompression bombs) */
  maxPixels: number;
  /** decoding and resizing; default VIEWER_STEPS */
  steps?: ImageSteps;
  /** gives a buffer the TensorFlow samplers may write their float output into (see resizeRgb);
   * called only when such a resize runs, after the decode */
  floatOut?: () => Float32Array;
  /** for the exact modes: resizes the decoded image into the caller's own destination and says
   * whether it did (decodeToRgb then answers undefined) */
  resizeInto?: (image: RgbImage, place: Placement, sampling: Sampling) => boolean;
  /** called when a decode in this thread has finished with the bytes (before any later await), so
   * that the caller may reuse their buffer; not called when sharp decodes them */
  consumed?: () => void;
}

type SharpModule = typeof import('sharp').default;
let loadedSharp: SharpModule | undefined;
/** sharp, loaded on first use: importing it costs about 100 ms of CPU, which a decode thread
 * given only JPEGs the addon decodes never needs (a start-up paid by every thread of every run). */
function sharp(): SharpModule {
  if (!loadedSharp) {
    loadedSharp = createRequire(import.meta.url)('sharp') as SharpModule;
    // libvips keeps its own threads; sharp's cache only helps when the same file is read again.
    loadedSharp.cache(false);
  }
  return loadedSharp;
}

/** Decodes and resizes to the model's size as `opts.steps` say (default: VIEWER_STEPS, how an image
 * viewer shows it), returning packed RGB (height * width * 3), or undefined where
 * `opts.resizeInto` took the decoded image. */
export async function decodeToRgb(bytes: Buffer, opts: DecodeOptions & { resizeInto?: undefined }): Promise<Pixels>;
export async function decodeToRgb(bytes: Buffer, opts: DecodeOptions): Promise<Pixels | undefined>;
export async function decodeToRgb(bytes: Buffer, opts: DecodeOptions): Promise<Pixels | undefined> {
  if (bytes.length === 0) throw new InputError('empty', 'empty file');
  // One reading of a JPEG's header serves both the check and the choice of decoder.
  const jpeg = jpegHeader(bytes);
  if (jpegClaimsMoreThanItHolds(bytes, jpeg)) throw corrupt();
  const steps = opts.steps ?? VIEWER_STEPS;
  try {
    const image = () => {
      const loaded = sharp()(bytes, { limitInputPixels: opts.maxPixels, failOn: 'error', ignoreIcc: steps.icc === 'ignore' });
      return steps.exifRotate ? loaded.rotate() : loaded;
    };
    // Vector images are rendered by libvips at the model's size: no framework trained on them, and
    // rendering one at its full declared size first costs minutes for a 1 KB SVG filter bomb.
    if (isSvg(bytes)) return await areaResize(image(), opts, steps);
    if (!isExact(steps.resize)) {
      const shrunk = shrunkJpeg(bytes, jpeg, steps, opts);
      if (!shrunk) return await areaResize(image(), opts, steps);
      opts.consumed?.();
      try {
        return await areaResize(shrunk, opts, steps);
      } finally {
        shrunk.release();
      }
    }
    // Full-size decode (no shrink-on-load: DCT scaling changes the pixels), then the exact resize:
    // by the caller into its own destination where it can (natively), else here (resize.ts).
    const stored = storedJpeg(bytes, jpeg, steps, opts.maxPixels);
    if (stored) opts.consumed?.();
    const decoded = stored ?? (await fullDecode(image()));
    const place = placement(decoded.width, decoded.height, opts.width, opts.height, steps.crop);
    if (opts.resizeInto?.(decoded, place, steps.resize as Sampling)) return undefined;
    return resizeRgb(decoded.data, decoded.width, decoded.height, opts.width, opts.height, steps.resize as Sampling, place, opts.floatOut?.());
  } catch (err) {
    // libvips' errors are plain Errors about the image; these are bugs of our own.
    if (err instanceof InputError || err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError) throw err;
    throw await describeSharpError(bytes, opts, err as Error);
  }
}

/** Alpha is dropped, as TensorFlow's decoders (channels=3) and PIL's convert('RGB') do. */
async function fullDecode(image: Sharp): Promise<RgbImage> {
  const { data, info } = await image.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new InputError('corrupt', `decoded to ${info.channels} channels, expected 3`);
  return { data, width: info.width, height: info.height };
}

let nativeJpeg: NativeJpegDecoder | null | undefined;

/** Whether the steps leave a JPEG's pixels as stored: no profile to apply, no rotation. */
function asStored(header: JpegHeader | undefined, steps: ImageSteps): header is JpegHeader {
  return header !== undefined && !(steps.icc === 'apply' && header.icc) && !(steps.exifRotate && header.exif);
}

function nativeDecoder(): NativeJpegDecoder | null {
  if (nativeJpeg === undefined) nativeJpeg = NativeJpegDecoder.create() ?? null;
  return nativeJpeg;
}

/** A JPEG whose steps leave its pixels as stored, decoded in this thread by libjpeg-turbo called
 * directly (native.ts); undefined for anything sharp is to decode. */
function storedJpeg(bytes: Buffer, header: JpegHeader | undefined, steps: ImageSteps, maxPixels: number): RgbImage | undefined {
  return asStored(header, steps) ? nativeDecoder()?.decode(bytes, maxPixels, header) : undefined;
}

/** The fast mode's JPEG decoded in this thread at the scale sharp's shrink-on-load would choose,
 * for libvips to resize: the same pixels as sharp's own decode (tested), without its decoding
 * pipeline. Only where the scale divides the size: otherwise libvips' shrunk image differs from
 * libjpeg's by its edge, and sharp decodes it itself. */
function shrunkJpeg(bytes: Buffer, header: JpegHeader | undefined, steps: ImageSteps, opts: DecodeOptions): SizedImage | undefined {
  if (!asStored(header, steps)) return undefined;
  const native = nativeDecoder();
  if (!native) return undefined;
  const { width, height } = steps.crop ? placement(header.width, header.height, opts.width, opts.height, steps.crop) : opts;
  const scale = sharpShrinkOnLoad(header.width / width, header.height / height);
  if (header.width % scale !== 0 || header.height % scale !== 0) return undefined;
  // A buffer of its own: libvips reads it after this returns, while the thread decodes the next image.
  const decoded = native.decode(bytes, opts.maxPixels, header, scale, true);
  if (!decoded) return undefined;
  const raw = { width: decoded.width, height: decoded.height, channels: 3 as const };
  return { raw: sharp()(decoded.data, { raw }), sourceWidth: header.width, sourceHeight: header.height, release: () => native.giveBack(decoded) };
}

/** sharp's choice of JPEG shrink-on-load for a resize shrinking by `x` and `y` (its pipeline.cc,
 * fastShrinkOnLoad): the largest of 8, 4, 2 within the smaller shrink, halved when it equals that
 * shrink's integer part. */
export function sharpShrinkOnLoad(x: number, y: number): number {
  const shrink = Math.min(x, y);
  const scale = shrink >= 8 ? 8 : shrink >= 4 ? 4 : shrink >= 2 ? 2 : 1;
  return scale > 1 && Math.trunc(shrink) === scale ? scale / 2 : scale;
}

/** SVG is text: its first non-blank byte (after a UTF-8 byte-order mark) is '<'; no raster format's is. */
function isSvg(bytes: Uint8Array): boolean {
  let i = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  while (i < bytes.length && i < 4096 && (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d)) i++;
  return bytes[i] === 0x3c;
}

/** An image already decoded (by native.ts), and the size of the file it was decoded from. */
interface SizedImage {
  raw: Sharp;
  sourceWidth: number;
  sourceHeight: number;
  /** gives the pixels' buffer back once libvips has read them */
  release: () => void;
}

/** The size of the image as the steps will show it (rotated or not). */
async function shownSize(image: Sharp, steps: ImageSteps): Promise<[number, number]> {
  const meta = await image.metadata();
  return steps.exifRotate && meta.autoOrient ? [meta.autoOrient.width, meta.autoOrient.height] : [meta.width, meta.height];
}

/** libvips' antialiased resize, JPEGs shrunk while decoding; alpha flattened onto white. */
async function areaResize(input: Sharp | SizedImage, opts: DecodeOptions, steps: ImageSteps): Promise<Buffer> {
  let window: Region | undefined;
  let [width, height] = [opts.width, opts.height];
  let image = 'sourceWidth' in input ? input.raw : input;
  if (steps.crop) {
    const [w, h] = 'sourceWidth' in input ? [input.sourceWidth, input.sourceHeight] : await shownSize(image, steps);
    const place = placement(w, h, opts.width, opts.height, steps.crop);
    ({ width, height } = place);
    window = { left: place.left, top: place.top, width: opts.width, height: opts.height };
  }
  image = image.flatten({ background: '#ffffff' }).resize(width, height, { fit: 'fill' });
  if (window) image = image.extract(window);
  const { data, info } = await image.toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new InputError('corrupt', `decoded to ${info.channels} channels, expected 3`);
  return data;
}

/** A JPEG of the given size for warming the decoders up: colour noise, so that every decoding
 * step does real work (a flat image skips most of the IDCT). */
export function warmUpJpeg(width: number, height: number): Promise<Buffer> {
  const noise = { type: 'gaussian' as const, mean: 128, sigma: 40 };
  return sharp()({ create: { width, height, channels: 3, background: '#808080', noise } }).jpeg({ quality: 90 }).toBuffer();
}

async function describeSharpError(bytes: Buffer, opts: DecodeOptions, err: Error): Promise<InputError> {
  const msg = err.message;
  if (/unsupported image format/i.test(msg)) return new InputError('not-an-image', 'not an image (unrecognised format)');
  if (/pixel limit/i.test(msg)) {
    const meta = await sharp()(bytes, { limitInputPixels: false }).metadata().catch(() => undefined);
    const size = meta?.width && meta?.height ? `${meta.width}x${meta.height} ` : '';
    return new InputError('too-large', `image ${size}exceeds the pixel limit of ${opts.maxPixels} (--max-pixels)`);
  }
  // No detail from libvips: its messages come from process-wide buffers that concurrent decodes
  // clear and fill, so the same file would read differently from run to run.
  return corrupt();
}

const corrupt = () => new InputError('corrupt', 'corrupt or truncated image');
