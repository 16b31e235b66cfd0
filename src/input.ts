// Where image paths come from: stdin, one per line (or NUL-separated with -0), or arguments.
// Every line that is not blank becomes exactly one PathLine: a path, or the reason it is not one.
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { createRequire } from 'node:module';
import { UsageError } from './errors.js';

/** Required, not imported, as every CommonJS package here is (see src/cli.ts). */
const split2 = createRequire(import.meta.url)('split2') as typeof import('split2');

/** A line longer than this is not a path (PATH_MAX is 4096): it becomes that line's error. */
export const MAX_LINE = 1 << 20;
/** How much of an over-long line is kept to name it in the output. */
const SHOWN_OF_LONG_LINE = 256;

export interface PathLine {
  /** the name as text, for the output line (U+FFFD where its bytes are not UTF-8) */
  path: string;
  /** the name's raw bytes, when they are not valid UTF-8: what the file is opened by */
  file?: Buffer;
  /** set when the line cannot be a path: the line's error, reported in its output line */
  problem?: string;
}

export interface StreamInputOptions {
  nulSeparated: boolean;
  /** aborted (Ctrl-C, SIGTERM): no further line is yielded, not even ones already buffered */
  signal?: AbortSignal;
}

/** Image files start with these bytes; a path list does not. */
const IMAGE_MAGIC: [string, number[]][] = [
  ['JPEG', [0xff, 0xd8, 0xff]],
  ['PNG', [0x89, 0x50, 0x4e, 0x47]],
  ['GIF', [0x47, 0x49, 0x46, 0x38]],
  ['TIFF', [0x49, 0x49, 0x2a, 0x00]],
  ['TIFF', [0x4d, 0x4d, 0x00, 0x2a]],
];

function imageKind(head: Buffer): string | undefined {
  // A name can start with the magic too (ls in a folder holding "GIF89a-cat.jpg"); image data
  // has a byte no path line has within its first 16.
  const binary = head.subarray(0, 16).some((b) => (b < 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09) || b >= 0x80);
  if (!binary) return undefined;
  for (const [kind, magic] of IMAGE_MAGIC) if (magic.every((b, i) => head[i] === b)) return kind;
  if (head.toString('latin1', 0, 4) === 'RIFF' && head.toString('latin1', 8, 12) === 'WEBP') return 'WebP';
  return undefined;
}

/** Passes bytes through, cutting every line at MAX_LINE bytes so that split2 never holds more,
 * and numbering the lines it cut, so that they become errors rather than ending the run. Bytes
 * from 0x80 up are passed on as the UTF-8 of the Latin-1 character of that value, so that
 * split2's UTF-8 decoding yields one character per byte and a name that is not UTF-8 keeps its
 * bytes (file names on Linux are bytes, not text). */
class LineCap extends Transform {
  /** indices (0-based, counting every line, blank ones too) of lines that were cut */
  readonly cut = new Set<number>();
  private line = 0;
  private length = 0;
  private first = true;
  private firstLine = true;

  constructor(private readonly separator: number) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.first && chunk.length > 0) {
      this.first = false;
      const kind = imageKind(chunk);
      if (kind) {
        done(new UsageError(`stdin holds ${kind} image data, not paths: give the image's path instead (classify -g MODEL photo.jpg, or ls *.jpg | classify -g MODEL)`));
        return;
      }
    }
    // A NUL before the first line ends, however the bytes arrive: names from find -print0, which
    // no path can contain.
    if (this.firstLine && this.separator === 0x0a) {
      const nl = chunk.indexOf(0x0a);
      const nul = chunk.indexOf(0);
      if (nul >= 0 && (nl < 0 || nul < nl)) {
        done(new UsageError('stdin is NUL-separated (as find -print0 and xargs -0 write it): add -0 to read it so'));
        return;
      }
      if (nl >= 0) this.firstLine = false;
    }
    let start = 0;
    for (;;) {
      const end = chunk.indexOf(this.separator, start);
      const stop = end === -1 ? chunk.length : end;
      const room = MAX_LINE - this.length;
      if (stop - start <= room) {
        if (stop > start) this.push(asLatin1(chunk.subarray(start, stop)));
        this.length += stop - start;
      } else {
        // The part that fits is passed on (split2 sees a line of MAX_LINE at most); the rest dropped.
        if (room > 0) this.push(asLatin1(chunk.subarray(start, start + room)));
        this.length = MAX_LINE;
        this.cut.add(this.line);
      }
      if (end === -1) break;
      this.push(chunk.subarray(end, end + 1));
      this.line++;
      this.length = 0;
      start = end + 1;
    }
    done();
  }
}

function asLatin1(bytes: Buffer): Buffer {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] >= 0x80) return Buffer.from(bytes.toString('latin1'), 'utf8');
  return bytes;
}

/** A line split as Latin-1 (one character per byte) back to its name. */
function nameOf(line: string): PathLine {
  if (!/[^\x00-\x7f]/.test(line)) return { path: line };
  const file = Buffer.from(line, 'latin1');
  const path = file.toString('utf8');
  return Buffer.from(path, 'utf8').equals(file) ? { path } : { path, file };
}

/** Lines of a stream as paths. The last line counts only if the stream really ended: a source
 * destroyed on purpose (an interrupt) does not make its unterminated tail a path. */
export async function* pathsFromStream(stream: Readable, opts: StreamInputOptions): AsyncGenerator<PathLine> {
  const sep = opts.nulSeparated ? 0 : 0x0a;
  const cap = new LineCap(sep);
  // Past the cap a line is at most MAX_LINE characters; split2's own limit is only a backstop.
  const lines = split2(opts.nulSeparated ? '\0' : /\r?\n/, { maxLength: MAX_LINE + 1 });
  stream.pipe(cap).pipe(lines);
  let ended = false;
  stream.once('end', () => (ended = true));
  const stop = () => {
    // destroy(), not end(): end() would make split2 flush the unterminated tail as a line.
    if (!ended) lines.destroy();
  };
  stream.once('close', stop);
  stream.once('error', (err) => lines.destroy(err));
  cap.once('error', (err) => lines.destroy(err));
  opts.signal?.addEventListener('abort', () => lines.destroy(), { once: true });

  let index = 0;
  try {
    for await (const line of lines as AsyncIterable<string>) {
      if (opts.signal?.aborted) return;
      const i = index++;
      if (cap.cut.delete(i)) {
        yield { path: `${nameOf(line.slice(0, SHOWN_OF_LONG_LINE)).path}...`, problem: `line longer than ${MAX_LINE} bytes: not a path` };
        continue;
      }
      if (opts.nulSeparated ? line.length === 0 : line.trim().length === 0) continue;
      if (!opts.nulSeparated && line.includes('\0')) {
        yield { path: nameOf(line).path, problem: 'path contains a NUL byte: the input looks NUL-separated (find -print0, xargs -0); use -0' };
        continue;
      }
      yield nameOf(line);
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
    // Destroyed on purpose (interrupt, stdin closed under us): the input ends here.
    if (opts.signal?.aborted || (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') return;
    throw err;
  } finally {
    stream.off('close', stop);
  }
}

/** Paths given as arguments; `-` stands for the paths on stdin, as in GNU tools. */
export async function* pathsFromArgs(args: string[], signal?: AbortSignal, stdin?: () => AsyncIterable<PathLine>): AsyncGenerator<PathLine> {
  for (const path of args) {
    if (signal?.aborted) return;
    if (path === '-' && stdin) yield* stdin();
    else yield { path };
  }
}
