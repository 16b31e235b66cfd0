// NaN or infinite scores are never an answer: refused at load, an image's error at run time.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeModel } from '../src/proto/onnx.js';
import { FIX, jsonLines, runInProcess } from './helpers.js';

let dir: string;

/** scores = sqrt(LIMIT - mean colour in [0,1]): NaN for any colour channel above LIMIT. */
function sqrtModel(limit: number): Uint8Array {
  return encodeModel({
    name: 'sqrt_of_colour',
    nodes: [
      { op: 'GlobalAveragePool', inputs: ['image'], outputs: ['pooled'] },
      { op: 'Flatten', inputs: ['pooled'], outputs: ['mean_rgb'], attrs: { axis: 1 } },
      { op: 'Sub', inputs: ['limit', 'mean_rgb'], outputs: ['room'] },
      { op: 'Sqrt', inputs: ['room'], outputs: ['scores'] },
    ],
    initializers: [{ name: 'limit', dims: [1], data: new Float32Array([limit]) }],
    inputs: [{ name: 'image', shape: ['N', 3, 16, 16] }],
    outputs: [{ name: 'scores', shape: ['N', 3] }],
    metadata: { mean: '0', std: '255' },
  });
}

function writeModel(name: string, bytes: Uint8Array): string {
  const folder = join(dir, name);
  mkdirSync(folder);
  writeFileSync(join(folder, 'model.onnx'), bytes);
  writeFileSync(join(folder, 'labels.txt'), 'a\nb\nc\n');
  return folder;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'classify-finite-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('scores that are not numbers', () => {
  it('a model whose test inference gives NaN is refused at load (exit 2), before reading input', async () => {
    const model = writeModel('always-nan', sqrtModel(-1));
    const r = await runInProcess(['-g', model], join(FIX, 'images', 'red.jpg') + '\n');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/model\.onnx: test inference gives NaN scores/);
    expect(r.stdout).toBe('');
  });

  it('NaN for one image is that image\'s error line (exit 1); the others are answered', async () => {
    // The warm-up image is grey; red has a channel above 0.7.
    const model = writeModel('nan-on-red', sqrtModel(0.7));
    const red = join(FIX, 'images', 'red.jpg');
    const grey = join(FIX, 'images', 'grey.jpg');
    const r = await runInProcess(['-g', model, '-q'], `${red}\n${grey}\n`);
    const out = jsonLines(r.stdout);
    expect(r.code).toBe(1);
    expect(out[0]).toEqual({ path: red, error: 'inference failed: the model gave NaN scores for this image' });
    expect(out[1].predictions.length).toBeGreaterThan(0);
  });

  it('a normalisation that makes the input infinite is refused: --std 1e-320, a mean beyond float32', async () => {
    const colour = join(FIX, 'models', 'colour');
    for (const flags of [['--std', '1e-320'], ['--mean', '1e39', '--std', '1']]) {
      const r = await runInProcess(['-g', colour, ...flags], '');
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/model\.onnx: mean .* and std .* make pixel value \d+ infinite as float32 input \(mean from .*; std from /);
    }
  });
});
