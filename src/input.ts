// Where image paths come from: stdin, one per line (or NUL-separated with -0), or arguments.
// Every line that is not blank becomes exactly one PathLine: a path, or the reason it is not one.
import type { Readable } from 'node:stream';
import { UsageError } from './errors.js';

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

/** One line of the input as Latin-1 text (one character per byte, so that a name that is not
 * UTF-8 keeps its bytes), and whether it was longer than MAX_LINE bytes and cut there. */
interface Line {
  text: string;
  cut: boolean;
}

/** Splits bytes into lines, holding at most MAX_LINE bytes of any one line: a longer line is
 * kept that long and marked cut, so that it becomes an error rather than ending the run. The
 * stream's bytes are split here directly, with no stream in between: this runs for every path. */
class LineSplitter {
  private partial = '';
  private cut = false;
  private first = true;
  private firstLine = true;

  constructor(private readonly separator: number) {}

  /** The lines this chunk ends; the line it leaves open waits for the next chunk. */
  push(chunk: Buffer): Line[] {
    if (this.first && chunk.length > 0) {
      this.first = false;
      const kind = imageKind(chunk);
      if (kind) throw new UsageError(`stdin holds ${kind} image data, not paths: give the image's path instead (classify -g MODEL photo.jpg, or ls *.jpg | classify -g MODEL)`);
    }
    // A NUL before the first line ends, however the bytes arrive: names from find -print0, which
    // no path can contain.
    if (this.firstLine && this.separator === 0x0a) {
      const nl = chunk.indexOf(0x0a);
      const nul = chunk.indexOf(0);
      if (nul >= 0 && (nl < 0 || nul < nl)) throw new UsageError('stdin is NUL-separated (as find -print0 and xargs -0 write it): add -0 to read it so');
      if (nl >= 0) this.firstLine = false;
    }
    const lines: Line[] = [];
    let start = 0;
    for (;;) {
      const end = chunk.indexOf(this.separator, start);
      const stop = end === -1 ? chunk.length : end;
      const room = MAX_LINE - this.partial.length;
      if (stop - start <= room) {
        if (stop > start) this.partial += chunk.toString('latin1', start, stop);
      } else {
        // The part that fits is kept (to name the line in its error); the rest dropped.
        if (room > 0) this.partial += chunk.toString('latin1', start, start + room);
        this.cut = true;
      }
      if (end === -1) return lines;
      // CRLF line ends: the CR belongs to the separator.
      const text = this.separator === 0x0a && this.partial.endsWith('\r') ? this.partial.slice(0, -1) : this.partial;
      lines.push({ text, cut: this.cut });
      this.partial = '';
      this.cut = false;
      start = end + 1;
    }
  }

  /** The last line when the input ends without a separator after it. */
  end(): Line | undefined {
    return this.partial === '' ? undefined : { text: this.partial, cut: this.cut };
  }
}

/** A line split as Latin-1 (one character per byte) back to its name. */
function nameOf(line: string): PathLine {
  if (!/[^\x00-\x7f]/.test(line)) return { path: line };
  const file = Buffer.from(line, 'latin1');
  const path = file.toString('utf8');
  return Buffer.from(path, 'utf8').equals(file) ? { path } : { path, file };
}

/** A line's PathLine, or undefined for a blank line. */
function pathLine({ text, cut }: Line, nulSeparated: boolean): PathLine | undefined {
  if (cut) return { path: `${nameOf(text.slice(0, SHOWN_OF_LONG_LINE)).path}...`, problem: `line longer than ${MAX_LINE} bytes: not a path` };
  if (nulSeparated ? text.length === 0 : text.trim().length === 0) return undefined;
  if (!nulSeparated && text.includes('\0')) {
    return { path: nameOf(text).path, problem: 'path contains a NUL byte: the input looks NUL-separated (find -print0, xargs -0); use -0' };
  }
  return nameOf(text);
}

/** Lines of a stream as paths. The last line counts only if the stream really ended: a source
 * destroyed on purpose (an interrupt) does not make its unterminated tail a path. */
export async function* pathsFromStream(stream: Readable, opts: StreamInputOptions): AsyncGenerator<PathLine> {
  const { nulSeparated, signal } = opts;
  const splitter = new LineSplitter(nulSeparated ? 0 : 0x0a);
  const stop = () => stream.destroy();
  signal?.addEventListener('abort', stop, { once: true });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      for (const line of splitter.push(chunk)) {
        if (signal?.aborted) return;
        const path = pathLine(line, nulSeparated);
        if (path) yield path;
      }
    }
    const last = splitter.end();
    const path = last && pathLine(last, nulSeparated);
    if (path && !signal?.aborted) yield path;
  } catch (err) {
    if (err instanceof UsageError) throw err;
    // Destroyed on purpose (interrupt, stdin closed under us): the input ends here.
    if (signal?.aborted || (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') return;
    throw err;
  } finally {
    signal?.removeEventListener('abort', stop);
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
