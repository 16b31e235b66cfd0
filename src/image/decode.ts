// Image bytes -> RGB pixels at the model's input size, with sharp (libvips, off the JS thread).
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';

/** Why one input could not be classified. `kind` lets callers map it (HTTP status, counters). */
export type InputErrorKind = 'not-found' | 'not-a-file' | 'permission' | 'empty' | 'not-an-image' | 'corrupt' | 'too-large' | 'read';

export class InputError extends Error {
  constructor(
    readonly kind: InputErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'InputError';
  }
}

export interface DecodeOptions {
  width: number;
  height: number;
  /** images with more pixels than this are refused before decoding (decompression bombs) */
  maxPixels: number;
}

// libvips keeps its own threads; sharp's cache only helps when the same file is read again.
sharp.cache(false);

const FS_ERRORS: Record<string, [InputErrorKind, string]> = {
  ENOENT: ['not-found', 'no such file'],
  ENOTDIR: ['not-found', 'no such file (a parent is not a directory)'],
  EISDIR: ['not-a-file', 'is a directory'],
  EACCES: ['permission', 'permission denied'],
  EPERM: ['permission', 'permission denied'],
  ENAMETOOLONG: ['not-found', 'file name too long'],
};

/** Reads image files whole. While reads are quick (the page cache, a local disk) it reads with
 * readFileSync: fs/promises' readFile takes four thread-pool trips per file (open, stat, read,
 * close), which cost a decode-bound model about 9% of its throughput on the 2-core machine. The
 * first read slower than `slowMs` (a network share, a cold spinning disk) switches it to
 * asynchronous reads for good, so that slow reads overlap instead of holding up the main thread. */
export class ImageReader {
  private sync = true;

  constructor(private readonly slowMs = 4) {}

  get mode(): 'sync' | 'async' {
    return this.sync ? 'sync' : 'async';
  }

  async read(path: string): Promise<Buffer> {
    try {
      if (!this.sync) return await readFile(path);
      const start = performance.now();
      const bytes = readFileSync(path);
      if (performance.now() - start > this.slowMs) this.sync = false;
      return bytes;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      const known = FS_ERRORS[code];
      if (known) throw new InputError(known[0], known[1]);
      throw new InputError('read', `cannot read: ${(err as Error).message}`);
    }
  }
}

/** Decodes, applies EXIF orientation, flattens alpha onto white, resizes (no crop) to the
 * model's size and returns packed RGB bytes (height * width * 3). */
export async function decodeToRgb(bytes: Buffer, opts: DecodeOptions): Promise<Buffer> {
  if (bytes.length === 0) throw new InputError('empty', 'empty file');
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: opts.maxPixels, failOn: 'error' })
      .rotate()
      .flatten({ background: '#ffffff' })
      .resize(opts.width, opts.height, { fit: 'fill' })
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new InputError('corrupt', `decoded to ${info.channels} channels, expected 3`);
    return data;
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw await describeSharpError(bytes, opts, err as Error);
  }
}

/** A grey JPEG of the given size, for warming the decoder up. */
export function blankJpeg(width: number, height: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: '#808080' } }).jpeg().toBuffer();
}

async function describeSharpError(bytes: Buffer, opts: DecodeOptions, err: Error): Promise<InputError> {
  const msg = err.message;
  if (/unsupported image format/i.test(msg)) return new InputError('not-an-image', 'not an image (unrecognised format)');
  if (/pixel limit/i.test(msg)) {
    const meta = await sharp(bytes, { limitInputPixels: false }).metadata().catch(() => undefined);
    const size = meta?.width && meta?.height ? `${meta.width}x${meta.height} ` : '';
    return new InputError('too-large', `image ${size}exceeds the pixel limit of ${opts.maxPixels} (--max-pixels)`);
  }
  // libvips' detail is sometimes only "Unknown error" for the same file: say what is certain.
  const detail = msg.split('\n')[0].trim();
  return new InputError('corrupt', /unknown error/i.test(detail) ? 'corrupt or truncated image' : `corrupt or truncated image (${detail})`);
}
