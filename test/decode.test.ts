import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeToRgb } from '../src/image/decode.js';
import { ImageReader, InputError } from '../src/image/read.js';
import { TensorPacker } from '../src/image/tensor.js';
import { FIX } from './helpers.js';

const opts = { width: 8, height: 8, maxPixels: 100_000_000 };
const img = (name: string) => readFileSync(join(FIX, 'images', name));
const pixel = (rgb: Buffer, w: number, x: number, y: number) => [...rgb.subarray((y * w + x) * 3, (y * w + x) * 3 + 3)];

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    return (err as InputError).kind;
  }
}

describe('decodeToRgb', () => {
  it('resizes to the model size as packed RGB', async () => {
    const rgb = await decodeToRgb(img('red.jpg'), opts);
    expect(rgb.length).toBe(8 * 8 * 3);
    const [r, g, b] = pixel(rgb, 8, 4, 4);
    expect(r).toBeGreaterThan(150);
    expect(g).toBeLessThan(90);
    expect(b).toBeLessThan(90);
  });

  it('applies EXIF orientation before resizing', async () => {
    // Stored as left red / right blue with orientation 6: upright, the top is red, the bottom blue.
    const rgb = await decodeToRgb(img('exif-rotated.jpg'), { ...opts, width: 10, height: 20 });
    const top = pixel(rgb, 10, 5, 2);
    const bottom = pixel(rgb, 10, 5, 17);
    expect(top[0]).toBeGreaterThan(200);
    expect(top[2]).toBeLessThan(60);
    expect(bottom[2]).toBeGreaterThan(200);
    expect(bottom[0]).toBeLessThan(60);
  });

  it('gives three channels for greyscale and for images with alpha', async () => {
    expect((await decodeToRgb(img('grey.jpg'), opts)).length).toBe(8 * 8 * 3);
    expect((await decodeToRgb(img('blue-alpha.png'), opts)).length).toBe(8 * 8 * 3);
  });

  it('classifies every kind of bad input', async () => {
    const broken = (name: string) => join(FIX, 'broken', name);
    const files = new ImageReader();
    expect(await kindOf(files.read(join(FIX, 'nope.jpg')))).toBe('not-found');
    expect(await kindOf(files.read(broken('a-directory.jpg')))).toBe('not-a-file');
    expect(await kindOf(decodeToRgb(readFileSync(broken('empty.jpg')), opts))).toBe('empty');
    expect(await kindOf(decodeToRgb(readFileSync(broken('not-an-image.jpg')), opts))).toBe('not-an-image');
    expect(await kindOf(decodeToRgb(readFileSync(broken('truncated.jpg')), opts))).toBe('corrupt');
    expect(await kindOf(decodeToRgb(readFileSync(broken('bomb.png')), opts))).toBe('too-large');
    expect(await kindOf(decodeToRgb(img('red.jpg'), { ...opts, maxPixels: 100 }))).toBe('too-large');
  });
});

describe('ImageReader', () => {
  it('reads synchronously until one read is slow, then asynchronously, with the same bytes and errors', async () => {
    const quick = new ImageReader(undefined, Infinity);
    const slow = new ImageReader(undefined, -1); // every read counts as slow
    expect(slow.mode).toBe('sync');
    const first = await slow.read(join(FIX, 'images', 'red.jpg'));
    expect(slow.mode).toBe('async');
    expect(await slow.read(join(FIX, 'images', 'red.jpg'))).toEqual(first);
    expect(await quick.read(join(FIX, 'images', 'red.jpg'))).toEqual(readFileSync(join(FIX, 'images', 'red.jpg')));
    expect(quick.mode).toBe('sync');
    for (const files of [quick, slow]) {
      const err = await files.read(join(FIX, 'nope.jpg')).catch((e: InputError) => e);
      expect([err.kind, err.message]).toEqual(['not-found', 'no such file']);
      expect(await kindOf(files.read(join(FIX, 'broken', 'a-directory.jpg')))).toBe('not-a-file');
    }
  });
});

describe('ImageReader refuses what is not a regular file, before reading it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'classify-reader-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const [mode, slowMs] of [['sync', Infinity], ['async', -1]] as const) {
    it(`${mode}: a FIFO with no writer and a character device are "not a regular file" at once`, async () => {
      const fifo = join(dir, `fifo-${mode}.jpg`);
      execFileSync('mkfifo', [fifo]);
      const files = new ImageReader(undefined, slowMs);
      if (mode === 'async') await files.read(join(FIX, 'images', 'red.jpg')); // switches it to async
      for (const path of [fifo, '/dev/zero']) {
        const err = await files.read(path).catch((e: InputError) => e);
        expect([err.kind, err.message]).toEqual(['not-a-file', 'not a regular file']);
      }
    });

    it(`${mode}: a file over the size limit is refused from its size alone`, async () => {
      const sparse = join(dir, `sparse-${mode}.jpg`);
      writeFileSync(sparse, '');
      truncateSync(sparse, 1.5 * 1024 ** 3); // 1.5 GB of holes: reading it would take 1.5 GB
      const files = new ImageReader(10_000, slowMs);
      if (mode === 'async') await files.read(join(FIX, 'images', 'red.jpg'));
      const err = await files.read(sparse).catch((e: InputError) => e);
      expect(err.kind).toBe('too-large');
      expect(err.message).toBe(`file of ${1.5 * 1024 ** 3} bytes is over the limit of 10000 (--max-file-size)`);
      expect(await files.read(join(FIX, 'images', 'red.jpg'))).toEqual(readFileSync(join(FIX, 'images', 'red.jpg')));
    });
  }
});

describe('TensorPacker', () => {
  const rgb = Uint8Array.from([0, 128, 255, 255, 0, 128]); // two pixels
  const norm = { mean: [0, 127.5, 255] as [number, number, number], std: [255, 127.5, 255] as [number, number, number] };

  it('normalises and keeps HWC for NHWC models', () => {
    const out = new Float32Array(12);
    new TensorPacker(1, 2, 'NHWC', norm).writeFloat(rgb, out, 1);
    expect([...out.subarray(6)].map((x) => +x.toFixed(3))).toEqual([0, 0.004, 0, 1, -1, -0.498]);
  });

  it('moves channels first for NCHW models', () => {
    const out = new Float32Array(6);
    new TensorPacker(1, 2, 'NCHW', norm).writeFloat(rgb, out, 0);
    // R plane, G plane, B plane
    expect([...out].map((x) => +x.toFixed(3))).toEqual([0, 1, 0.004, -1, 0, -0.498]);
  });
});
