// -o FILE: lines appended to a file, each with one write(2) on a descriptor opened O_APPEND, so
// a process killed at any moment leaves whole lines and at most one partial last line, which the
// next run cuts off before it appends anything.
//
// fsync policy: a killed process loses nothing already written (the kernel holds it), so lines
// are not synced one by one; the file is fdatasync'ed at most once a second and at the end, which
// bounds what a power cut can lose to about the last second's lines.
import { closeSync, fdatasyncSync, fstatSync, ftruncateSync, openSync, readSync, type Stats, writeSync } from 'node:fs';
import { OutputError, UsageError } from '../errors.js';

const SYNC_EVERY_MS = 1000;

export class AppendFile {
  private lastSync = Date.now();
  private dirty = false;

  private constructor(
    readonly file: string,
    readonly fd: number,
    /** bytes of a partial last line cut off at open; -1: a line end added after one kept */
    readonly repaired: number,
    /** what FILE is when not a regular file (a character device, a FIFO), for messages */
    readonly kind = 'a regular file',
  ) {}

  /** a regular file: synced, repaired, locked; anything else (/dev/null, a pipe) cannot be */
  get regular(): boolean {
    return this.kind === 'a regular file';
  }

  /** Opens (creating) FILE for appending and cuts off a partial last line. `json`: only a tail
   * that starts as classify's JSON lines do is cut; any other is refused, FILE untouched; text
   * and tsv: a partial last line is ended with a newline instead (`repaired` is then -1). A FILE
   * that is not a regular file (/dev/null, a FIFO) is written as it is: nothing to cut or sync. */
  static open(file: string, json = false): AppendFile {
    let fd: number;
    try {
      fd = openSync(file, 'a+');
    } catch (err) {
      throw new UsageError(`${file}: cannot open for appending (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) return new AppendFile(file, fd, 0, kindOf(st));
      // Text and tsv lines cannot be told from the user's own: a last line without its end is
      // kept, and ended, never cut.
      if (!json) return new AppendFile(file, fd, endLastLine(fd, st.size));
      return new AppendFile(file, fd, cutPartialLine(fd));
    } catch (err) {
      closeSync(fd);
      throw new UsageError(`${file}: cannot repair its last line (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }

  /** Appends one line whole, or throws: a short write is reported, and repaired next run. */
  writeLine(line: string): void {
    const bytes = Buffer.from(line + '\n');
    let written: number;
    try {
      written = writeSync(this.fd, bytes);
    } catch (err) {
      throw new OutputError(err as NodeJS.ErrnoException, this.file);
    }
    if (written !== bytes.length) throw new OutputError(new Error(`wrote ${written} of ${bytes.length} bytes; the disk may be full`), this.file);
    this.dirty = true;
    if (Date.now() - this.lastSync >= SYNC_EVERY_MS) this.sync();
  }

  private sync(): void {
    if (this.dirty && this.regular) fdatasyncSync(this.fd);
    this.dirty = false;
    this.lastSync = Date.now();
  }

  close(): void {
    try {
      this.sync();
    } finally {
      closeSync(this.fd);
    }
  }
}

function kindOf(st: Stats): string {
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isFIFO()) return 'a pipe';
  if (st.isSocket()) return 'a socket';
  if (st.isBlockDevice()) return 'a block device';
  return 'something other than a regular file';
}

/** Longer than any line classify writes (a path is at most 1 MiB, escaped at most 6x): a tail
 * this long without a newline means FILE is something else, which is not cut. */
const MAX_PARTIAL = 8 * 1024 * 1024;

/** Appends a newline when the file's last byte is not one; -1 when it did, else 0. */
function endLastLine(fd: number, size: number): number {
  if (size === 0) return 0;
  const last = Buffer.alloc(1);
  readSync(fd, last, 0, 1, size - 1);
  if (last[0] === 0x0a) return 0;
  writeSync(fd, '\n');
  return -1;
}

/** Truncates the file after its last newline; returns how many bytes went. */
function cutPartialLine(fd: number): number {
  const size = fstatSync(fd).size;
  const chunk = Buffer.alloc(64 * 1024);
  let end = size;
  while (end > 0) {
    if (size - end > MAX_PARTIAL) throw new Error(`its last ${size - end} bytes hold no line end: not a file classify -o wrote`);
    const start = Math.max(0, end - chunk.length);
    const n = readSync(fd, chunk, 0, end - start, start);
    const nl = chunk.subarray(0, n).lastIndexOf(0x0a);
    if (nl >= 0) return cutFrom(fd, start + nl + 1, size);
    end = start;
  }
  return cutFrom(fd, 0, size);
}

function cutFrom(fd: number, keep: number, size: number): number {
  if (keep === size) return 0;
  const head = Buffer.alloc(Math.min(2, size - keep));
  readSync(fd, head, 0, head.length, keep);
  if (head.toString('latin1') !== '{"'.slice(0, head.length)) throw new Error(`it ends with a partial line that is not one classify -o writes`);
  ftruncateSync(fd, keep);
  return size - keep;
}
