// Image bytes -> RGB pixels at the model's input size, with sharp (libvips, off the JS thread).
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
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
  ELOOP: ['not-found', 'too many levels of symbolic links'],
  ERR_INVALID_ARG_VALUE: ['not-found', 'path contains a NUL byte'],
};

/** --max-file-size's default: far above any photo, far below what would strain memory. */
export const DEFAULT_MAX_FILE_SIZE = 100 * 1024 * 1024;

// O_NONBLOCK: opening a FIFO with no writer, or a device, must not wait; fstat then refuses it.
const OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NONBLOCK;

/** Reads image files whole: regular files only, up to `maxBytes`, checked with fstat on the open
 * descriptor before anything is read (a FIFO would block for ever, /dev/zero never end).
 * While reads are quick (the page cache, a local disk) it reads synchronously: fs/promises takes
 * a thread-pool trip per step, which cost a decode-bound model about 9% of its throughput on the
 * 2-core machine. The first read slower than `slowMs` (a network share, a cold spinning disk)
 * switches it to asynchronous reads for good, so that slow reads overlap instead of holding up
 * the main thread. */
export class ImageReader {
  private sync = true;

  constructor(
    private readonly maxBytes = DEFAULT_MAX_FILE_SIZE,
    private readonly slowMs = 4,
  ) {}

  get mode(): 'sync' | 'async' {
    return this.sync ? 'sync' : 'async';
  }

  async read(path: string): Promise<Buffer> {
    try {
      if (!this.sync) return await this.readAsync(path);
      const start = performance.now();
      const bytes = this.readSync(path);
      if (performance.now() - start > this.slowMs) this.sync = false;
      return bytes;
    } catch (err) {
      if (err instanceof InputError) throw err;
      const code = (err as NodeJS.ErrnoException).code ?? '';
      const known = FS_ERRORS[code];
      if (known) throw new InputError(known[0], known[1]);
      throw new InputError('read', `cannot read: ${(err as Error).message}`);
    }
  }

  private check(stats: Stats): number {
    if (stats.isDirectory()) throw new InputError('not-a-file', 'is a directory');
    if (!stats.isFile()) throw new InputError('not-a-file', 'not a regular file');
    if (stats.size > this.maxBytes) {
      throw new InputError('too-large', `file of ${stats.size} bytes is over the limit of ${this.maxBytes} (--max-file-size)`);
    }
    return stats.size;
  }

  private readSync(path: string): Buffer {
    const fd = openSync(path, OPEN_FLAGS);
    try {
      const size = this.check(fstatSync(fd));
      const bytes = Buffer.allocUnsafe(size);
      let at = 0;
      for (let n = -1; at < size && n !== 0; at += n) n = readSync(fd, bytes, at, size - at, at);
      return at < size ? bytes.subarray(0, at) : bytes;
    } finally {
      closeSync(fd);
    }
  }

  private async readAsync(path: string): Promise<Buffer> {
    const file = await open(path, OPEN_FLAGS);
    try {
      const size = this.check(await file.stat());
      const bytes = Buffer.allocUnsafe(size);
      let at = 0;
      for (let n = -1; at < size && n !== 0; at += n) n = (await file.read(bytes, at, size - at, at)).bytesRead;
      return at < size ? bytes.subarray(0, at) : bytes;
    } finally {
      await file.close();
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
