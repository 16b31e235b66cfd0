// A bug in preparing an image is a bug, exit 70 with the stack under -v; never "corrupt image".
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { InternalError } from '../src/errors.js';
import { decodeToRgb } from '../src/image/decode.js';
import { InputError } from '../src/image/read.js';
import { describeFailure } from '../src/output/format.js';
import { COLOUR, FIX } from './helpers.js';

const red = join(FIX, 'images', 'red.jpg');

describe('bugs are not bad images', () => {
  it('a TypeError while decoding is passed on as itself, a bad image as an InputError', async () => {
    const bytes = readFileSync(red);
    const buggy = decodeToRgb(bytes, {
      width: 16,
      height: 16,
      maxPixels: 1e8,
      steps: { resize: 'tf1', crop: null, icc: 'ignore', exifRotate: false },
      resizeInto: () => {
        throw new TypeError("Cannot read properties of undefined (reading 'x')");
      },
    });
    await expect(buggy).rejects.toBeInstanceOf(TypeError);
    await expect(decodeToRgb(Buffer.from('not an image'), { width: 16, height: 16, maxPixels: 1e8 })).rejects.toBeInstanceOf(InputError);
  });

  it("a bug is not an image's line: describeFailure passes it on; the filter exits 70 saying it is a bug", async () => {
    expect(() => describeFailure(new InternalError('in a decode thread: TypeError: x'))).toThrow(InternalError);
    expect(describeFailure(new InputError('corrupt', 'corrupt or truncated image'))).toEqual({ error: 'corrupt or truncated image', kind: 'corrupt' });
    const { run } = (await import('../dist/cli.js')) as typeof import('../src/cli.js');
    const { InternalError: BuiltInternalError } = (await import('../dist/errors.js')) as typeof import('../src/errors.js');
    let stderr = '';
    const stderrStream = new PassThrough().on('data', (d: Buffer) => (stderr += d));
    // A model whose decode thread hits a bug on every image.
    const buggy = {
      info: { inFlight: 4, batchSize: 1, version: undefined },
      labels: ['red', 'green', 'blue'],
      score: async () => {
        throw new BuiltInternalError('in a decode thread: TypeError: boom', 'TypeError: boom\n    at resize (resize.js:1:1)');
      },
      close: async () => undefined,
    };
    const code = await run(['-g', COLOUR, red], {
      stdin: Readable.from([]),
      stdout: new PassThrough(),
      stderr: stderrStream,
      loadClassifier: async () => buggy as never,
    });
    expect(code).toBe(70);
    expect(stderr).toBe('classify: internal error: in a decode thread: TypeError: boom (a bug in classify; --verbose shows the stack)\n');
  });
});
