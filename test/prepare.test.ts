import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Preparer, type PrepareSpec } from '../src/image/prepare.js';
import { resizeRgb } from '../src/image/resize.js';
import { FIX } from './helpers.js';

const spec: PrepareSpec = {
  height: 16,
  width: 16,
  layout: 'NHWC',
  inputType: 'float32',
  preprocessing: { resize: 'tf1', crop: null, icc: 'ignore', exifRotate: false, mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] },
  maxPixels: 1e8,
  maxFileSize: 1e8,
};
const images = ['red.jpg', 'green.jpg', 'blue.jpg', 'grey.jpg', 'green.webp', 'blue-alpha.png'].map((f) => readFileSync(join(FIX, 'images', f)));

describe('Preparer', () => {
  for (const resize of ['tf1', 'area'] as const) {
    it(`images prepared at the same time each get their own pixels (the buffers are reused), ${resize}`, async () => {
      const modeSpec = { ...spec, preprocessing: { ...spec.preprocessing, resize } };
      const alone: Float32Array[] = [];
      for (const bytes of images) {
        const dst = new Float32Array(16 * 16 * 3);
        await new Preparer(modeSpec).prepare(bytes, dst);
        alone.push(dst);
      }
      const preparer = new Preparer(modeSpec);
      for (let round = 0; round < 3; round++) {
        const dsts = images.map(() => new Float32Array(16 * 16 * 3));
        await Promise.all(images.map((bytes, i) => preparer.prepare(bytes, dsts[i])));
        dsts.forEach((dst, i) => expect(dst).toEqual(alone[i]));
      }
    });
  }

  it('resizeRgb writes into the buffer it is given, the same values as into a new one', () => {
    const src = Uint8Array.from({ length: 7 * 5 * 3 }, (_, i) => (i * 37) % 256);
    const fresh = resizeRgb(src, 7, 5, 3, 2, 'tf1');
    const into = new Float32Array(3 * 2 * 3 + 5);
    const out = resizeRgb(src, 7, 5, 3, 2, 'tf1', undefined, into);
    expect(out).toBe(into);
    expect(out.subarray(0, 18)).toEqual(fresh);
  });
});
