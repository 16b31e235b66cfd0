// Reading an image file: regular files only, their size checked before anything is read, and
// every way a read fails as an InputError (its kind and the text a user sees). Apart from
// decode.ts, so that what only reads files (the cache, retrain's store) does not load sharp.
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';

/** Why one input could not be classified. `kind` lets callers map it (HTTP status, counters). */
export type InputErrorKind = 'not-found' | 'not-a-file' | 'permission' | 'empty' | 'not-an-image' | 'corrupt' | 'too-large' | 'read';

export const IS_A_DIRECTORY = 'is a directory';

export class InputError extends Error {
  constructor(
    readonly kind: InputErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'InputError';
  }
}

const FS_ERRORS: Record<string, [InputErrorKind, string]> = {
  ENOENT: ['not-found', 'no such file'],
  ENOTDIR: ['not-found', 'no such file (a parent is not a directory)'],
  EISDIR: ['not-a-file', IS_A_DIRECTORY],
  EACCES: ['permission', 'permission denied'],
  EPERM: ['permission', 'permission denied'],
  ENAMETOOLONG: ['not-found', 'file name too long'],
  ELOOP: ['not-found', 'too many levels of symbolic links'],
  // opening a Unix socket
  ENXIO: ['not-a-file', 'not a regular file'],
  ERR_INVALID_ARG_VALUE: ['not-found', 'path contains a NUL byte'],
};

/** --max-file-size's default: far above any photo, far below what would strain memory. */
export const DEFAULT_MAX_FILE_SIZE = 100 * 1024 * 1024;

// O_NONBLOCK: opening a FIFO with no writer, or a device, must not wait; fstat then refuses it.
const OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NONBLOCK;

/** A file's name as given: a string, or the raw bytes of a name that is not valid UTF-8 (Linux
 * names are bytes; such a name read as text would name another file, or none). */
export type FilePath = string | Buffer;

/** The size of a regular file of at most `maxBytes`; anything else is an InputError. */
function checkRegular(stats: Stats, maxBytes: number): number {
  if (stats.isDirectory()) throw new InputError('not-a-file', IS_A_DIRECTORY);
  if (!stats.isFile()) throw new InputError('not-a-file', 'not a regular file');
  if (stats.size > maxBytes) throw new InputError('too-large', `file of ${stats.size} bytes is over the limit of ${maxBytes} (--max-file-size)`);
  return stats.size;
}

/** What the file was as fstat saw it before its bytes were read. */
export type StatsSeen = (stats: Stats) => void;

/** A regular file's bytes, checked with fstat on a descriptor opened without blocking before
 * anything is read: a FIFO, a device or a file over `maxBytes` is an InputError, never a hang.
 * Read into `into(size)`'s buffer (at least `size` bytes) when given, else a new one; that fstat
 * handed to `seen` when given. */
export function readRegularFileSync(path: FilePath, maxBytes: number, into?: (size: number) => Buffer, seen?: StatsSeen): Buffer {
  const fd = openSync(path, OPEN_FLAGS);
  try {
    const stats = fstatSync(fd);
    const size = checkRegular(stats, maxBytes);
    seen?.(stats);
    const bytes = into ? into(size) : Buffer.allocUnsafe(size);
    let at = 0;
    for (let n = -1; at < size && n !== 0; at += n) n = readSync(fd, bytes, at, size - at, at);
    return at < bytes.length ? bytes.subarray(0, at) : bytes;
  } finally {
    closeSync(fd);
  }
}

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

  /** The file's bytes; `seen` is handed the file's fstat, taken before they were read. */
  async read(path: FilePath, seen?: StatsSeen): Promise<Buffer> {
    try {
      if (!this.sync) return await this.readAsync(path, seen);
      const start = performance.now();
      const bytes = readRegularFileSync(path, this.maxBytes, undefined, seen);
      if (performance.now() - start > this.slowMs) this.sync = false;
      return bytes;
    } catch (err) {
      throw readError(err);
    }
  }

  /** Reads synchronously whatever the mode (a decode thread's reads), into `into(size)`'s buffer
   * when given; `seen` as in read(). */
  readNow(path: FilePath, into?: (size: number) => Buffer, seen?: StatsSeen): Buffer {
    try {
      return readRegularFileSync(path, this.maxBytes, into, seen);
    } catch (err) {
      throw readError(err);
    }
  }

  private async readAsync(path: FilePath, seen?: StatsSeen): Promise<Buffer> {
    const file = await open(path, OPEN_FLAGS);
    try {
      const stats = await file.stat();
      const size = checkRegular(stats, this.maxBytes);
      seen?.(stats);
      const bytes = Buffer.allocUnsafe(size);
      let at = 0;
      for (let n = -1; at < size && n !== 0; at += n) n = (await file.read(bytes, at, size - at, at)).bytesRead;
      return at < size ? bytes.subarray(0, at) : bytes;
    } finally {
      await file.close();
    }
  }
}

function readError(err: unknown): InputError {
  if (err instanceof InputError) return err;
  const known = FS_ERRORS[(err as NodeJS.ErrnoException).code ?? ''];
  return known ? new InputError(known[0], known[1]) : new InputError('read', `cannot read: ${(err as Error).message}`);
}
