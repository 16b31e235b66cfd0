// Where image paths come from: stdin, one per line (or NUL-separated with -0), or arguments.
import type { Readable } from 'node:stream';
import split2 from 'split2';

/** A path longer than this is not a path: stop rather than buffer without bound. */
const MAX_LINE = 1 << 20;

export function pathsFromStream(stream: Readable, nulSeparated: boolean): AsyncIterable<string> {
  const lines = stream.pipe(split2(nulSeparated ? '\0' : /\r?\n/, { maxLength: MAX_LINE }));
  stream.on('error', (err) => lines.destroy(err));
  // A source destroyed on purpose (Ctrl-C) ends the input rather than leaving it hanging.
  stream.on('close', () => {
    if (!lines.writableEnded) lines.end();
  });
  return filterBlank(lines, nulSeparated);
}

async function* filterBlank(lines: AsyncIterable<string>, nulSeparated: boolean): AsyncGenerator<string> {
  for await (const line of lines) {
    if (nulSeparated ? line.length > 0 : line.trim().length > 0) yield line;
  }
}

export async function* pathsFromArgs(args: string[]): AsyncGenerator<string> {
  yield* args;
}
