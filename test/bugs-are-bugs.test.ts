// A bug in preparing an image is a bug, exit 70 with the stack under -v; never "corrupt image".
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { describeError, EngineError, InternalError, ModelError } from '../src/errors.js';
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

  it('an engine failure keeps its class to the line: "inference failed", never a bug or a bad image', async () => {
    const { Classifier } = await import('../dist/classifier/classifier.js');
    const { classifierSettings } = await import('../dist/settings.js');
    const built = await import('../dist/errors.js');
    const classifier = await Classifier.load(classifierSettings(COLOUR, { engine: { device: 'cpu' }, pipeline: { decodeJobs: 1 } }));
    try {
      // The engine thread gone, as a crash in the runtime would leave it.
      await (classifier as unknown as { engine: { dispose(): Promise<void> } }).engine.dispose();
      const err = await classifier.score({ path: red }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(built.EngineError);
      expect(built.describeError(err)).toMatch(/^inference failed: engine thread exited \(\d+\)$/);
    } finally {
      await classifier.close();
    }
  });

  it('one wording for every failure: a model names its file, an engine failure is an inference that failed', () => {
    expect(describeFailure(new EngineError('input shape mismatch'))).toEqual({ error: 'inference failed: input shape mismatch' });
    expect(describeFailure(new Error('socket hang up'))).toEqual({ error: 'inference failed: socket hang up' });
    const cases: [unknown, string][] = [
      [new ModelError('m/2/model.onnx', 'not an ONNX model'), 'm/2/model.onnx: not an ONNX model'],
      [new EngineError('engine thread exited (1)'), 'inference failed: engine thread exited (1)'],
      [new InternalError('in a decode thread: TypeError: x'), 'internal error: in a decode thread: TypeError: x'],
    ];
    for (const [err, said] of cases) expect(describeError(err)).toBe(said);
  });
});
