import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { decodeToRgb, InputError } from '../src/image/decode.js';
import { jpegHeader } from '../src/image/jpeg-header.js';
import { WASM_MAX_PIXELS, WasmJpegDecoder } from '../src/image/jpeg-wasm.js';
import { COLOUR, FIX, SHARED, sharedAvailable, runInProcess } from './helpers.js';

const decoder = WasmJpegDecoder.create()!;

/** Colour noise: every 8x8 block and both chroma planes carry detail, so a different IDCT,
 * upsampling or colour conversion would show. */
async function noisy(width: number, height: number, jpeg: sharp.JpegOptions = {}, grey = false): Promise<Buffer> {
  let image = sharp({ create: { width, height, channels: 3, noise: { type: 'gaussian', mean: 128, sigma: 60 } } });
  if (grey) image = image.greyscale();
  return image.jpeg({ quality: 90, ...jpeg }).toBuffer();
}

/** What the sharp path decodes, as decode.ts asks it to. */
async function bySharp(bytes: Buffer): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(bytes, { ignoreIcc: true }).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

describe('the WebAssembly JPEG decoder', () => {
  it('is installed (a dependency) and starts: without it every JPEG would silently take the slower path', async () => {
    expect(decoder).toBeInstanceOf(WasmJpegDecoder);
    expect(decoder.decode(await noisy(8, 8), Infinity)?.width).toBe(8);
  });

  const variants: [string, () => Promise<Buffer>][] = [
    ['4:2:0, odd size', () => noisy(333, 251)],
    ['4:4:4', () => noisy(320, 240, { chromaSubsampling: '4:4:4' })],
    ['optimised Huffman tables, 4:4:4', () => noisy(257, 129, { optimiseCoding: true, chromaSubsampling: '4:4:4' })],
    ['greyscale', () => noisy(200, 150, {}, true)],
    ['1x1', () => noisy(1, 1)],
    ['17x9, 4:2:0', () => noisy(17, 9)],
    ['quality 50', () => noisy(240, 240, { quality: 50 })],
  ];
  for (const [name, make] of variants) {
    it(`decodes the same pixels as sharp: ${name}`, async () => {
      const bytes = await make();
      const expected = await bySharp(bytes);
      const got = decoder.decode(bytes, Infinity);
      expect(got).toBeDefined();
      expect([got!.width, got!.height]).toEqual([expected.width, expected.height]);
      expect(Buffer.from(got!.data).equals(expected.data)).toBe(true);
    });
  }

  it.runIf(sharedAvailable('the flower photos decoded by both decoders'))('decodes the shared flower photos to the same pixels as sharp', async () => {
    for (let i = 1; i <= 5; i++) {
      const bytes = readFileSync(join(SHARED, 'images', 'flowers', `flower${i}.jpg`));
      const got = decoder.decode(bytes, Infinity);
      expect(got).toBeDefined();
      expect(Buffer.from(got!.data).equals((await bySharp(bytes)).data)).toBe(true);
    }
  });

  it('--verbose says which decoder takes which images', async () => {
    const exact = await runInProcess(['-g', COLOUR, '--resize', 'tf1', '-v'], '');
    expect(exact.stderr).toMatch(/decoding small sequential JPEGs by libjpeg-turbo in WebAssembly/);
    const area = await runInProcess(['-g', COLOUR, '--resize', 'area', '-v'], '');
    expect(area.stderr).toMatch(/decoding by sharp/);
  });

  it('reads the frame size from the header, so a large photo is left to sharp before it is copied', async () => {
    expect(jpegHeader(await noisy(33, 17))).toMatchObject({ width: 33, height: 17 });
  });

  it('leaves to sharp what it does not take: over its pixel size, over --max-pixels, CMYK', async () => {
    const side = Math.ceil(Math.sqrt(WASM_MAX_PIXELS)) + 1;
    expect(decoder.decode(await noisy(side, side), Infinity)).toBeUndefined();
    expect(decoder.decode(await noisy(100, 100), 99 * 100)).toBeUndefined();
    const cmyk = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#c04080' } }).toColourspace('cmyk').jpeg().toBuffer();
    expect(decoder.decode(cmyk, Infinity)).toBeUndefined();
  });

  it('gives up on a truncated or warned-about JPEG, and decodes the next one correctly', async () => {
    const good = await noisy(160, 120);
    const broken = [
      good.subarray(0, good.length >> 1), // premature end: a warning, with the rest grey
      readFileSync(join(FIX, 'decode', 'extraneous-bytes.jpg')),
      readFileSync(join(FIX, 'broken', 'truncated.jpg')),
      Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 2]), // a header and nothing more
    ];
    const expected = (await bySharp(good)).data;
    for (const bytes of broken) {
      expect(decoder.decode(bytes, Infinity)).toBeUndefined();
      expect(Buffer.from(decoder.decode(good, Infinity)!.data).equals(expected)).toBe(true);
    }
  });

  it('reads whether a profile or EXIF could change the pixels, as libvips would', async () => {
    const plain = await noisy(16, 16);
    expect(jpegHeader(plain)).toMatchObject({ sequential: true, icc: false, exif: false, width: 16, height: 16 });
    const withIcc = await sharp(plain).withIccProfile('p3').jpeg().toBuffer();
    expect(jpegHeader(withIcc)?.icc).toBe(true);
    const withExif = await sharp(plain).withMetadata({ orientation: 6 }).jpeg().toBuffer();
    expect(jpegHeader(withExif)?.exif).toBe(true);
    // A marker without a length (RST0, TEM) before the profile: libjpeg skips it silently.
    expect(jpegHeader(Buffer.concat([withIcc.subarray(0, 2), Buffer.from([0xff, 0xd0]), withIcc.subarray(2)]))?.icc).toBe(true);
    expect(jpegHeader(Buffer.concat([withExif.subarray(0, 2), Buffer.from([0xff, 0x01]), withExif.subarray(2)]))?.exif).toBe(true);
    // libvips matches "ICC_PROFILE" without the NUL after it.
    const renamed = Buffer.from(withIcc);
    renamed[renamed.indexOf('ICC_PROFILE') + 11] = 0x78;
    expect(jpegHeader(renamed)?.icc).toBe(true);
    // Bytes between markers: not laid out plainly, so sharp decodes it.
    expect(jpegHeader(Buffer.concat([plain.subarray(0, 2), Buffer.from([0x00, 0x00]), plain.subarray(2)]))).toBeUndefined();
  });

  it('leaves progressive JPEGs to sharp: one cut after an early scan is smoothed differently by other libjpeg versions', async () => {
    const progressive = await noisy(120, 90, { progressive: true });
    expect(jpegHeader(progressive)?.sequential).toBe(false);
    expect(decoder.decode(progressive, Infinity)).toBeUndefined();
  });

  it('does not decode a JPEG with the tables of the image before it', async () => {
    const donor = await noisy(64, 64);
    const victim = withoutSegment(await noisy(64, 64), 0xdb); // no quantisation tables of its own
    expect(decoder.decode(donor, Infinity)).toBeDefined();
    expect(decoder.decode(victim, Infinity)).toBeUndefined();
    const steps = { resize: 'tf1' as const, crop: null, icc: 'ignore' as const, exifRotate: false };
    await decodeToRgb(donor, { width: 8, height: 8, maxPixels: 1e8, steps });
    const err = await decodeToRgb(victim, { width: 8, height: 8, maxPixels: 1e8, steps }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).kind).toBe('corrupt');
  });

  it('is used only where the steps leave the pixels as stored: a rotated JPEG is still rotated', async () => {
    // exif-rotated.jpg is stored 20 wide and 10 high with orientation 6; the model's input is
    // 10x20: rotated, it fills it without stretching and the top is red.
    const bytes = readFileSync(join(FIX, 'images', 'exif-rotated.jpg'));
    const rgb = await decodeToRgb(bytes, { width: 10, height: 20, maxPixels: 1e8, steps: { resize: 'bilinear', crop: null, icc: 'ignore', exifRotate: true } });
    const top = [...rgb.subarray((2 * 10 + 5) * 3, (2 * 10 + 5) * 3 + 3)];
    expect(top[0]).toBeGreaterThan(200);
    expect(top[2]).toBeLessThan(60);
  });
});

/** The JPEG without its segments of marker `marker` (before the first scan). */
function withoutSegment(jpeg: Buffer, marker: number): Buffer {
  const parts: Buffer[] = [jpeg.subarray(0, 2)];
  let pos = 2;
  while (jpeg[pos + 1] !== 0xda) {
    const end = pos + 2 + jpeg.readUInt16BE(pos + 2);
    if (jpeg[pos + 1] !== marker) parts.push(jpeg.subarray(pos, end));
    pos = end;
  }
  parts.push(jpeg.subarray(pos));
  return Buffer.concat(parts);
}
