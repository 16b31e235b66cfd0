import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { decodeToRgb, sharpShrinkOnLoad } from '../src/image/decode.js';
import { InputError } from '../src/image/read.js';
import { jpegHeader } from '../src/image/jpeg-header.js';
import { NativeJpegDecoder } from '../src/image/native.js';
import { placement, resizeRgb } from '../src/image/resize.js';
import { TensorPacker } from '../src/image/tensor.js';
import { COLOUR, FIX, jsonLines, ROOT, runCli, runInProcess, SHARED, sharedAvailable } from './helpers.js';

const decoder = NativeJpegDecoder.create()!;
const decode = (bytes: Uint8Array, maxPixels = Infinity, scale = 1) => decoder.decode(bytes, maxPixels, jpegHeader(bytes), scale);
const flowers = sharedAvailable('the flower photos in the native decoder tests')
  ? [1, 2, 3, 4, 5].map((i) => readFileSync(join(SHARED, 'images', 'flowers', `flower${i}.jpg`)))
  : [];

/** Colour noise: every 8x8 block and both chroma planes carry detail, so a different IDCT,
 * upsampling or colour conversion would show. */
async function noisy(width: number, height: number, jpeg: sharp.JpegOptions = {}, grey = false): Promise<Buffer> {
  let image = sharp({ create: { width, height, channels: 3, noise: { type: 'gaussian', mean: 128, sigma: 60 } } });
  if (grey) image = image.greyscale();
  return image.jpeg({ quality: 90, ...jpeg }).toBuffer();
}

/** What the sharp path decodes, as decode.ts asks it to; undefined where sharp refuses it. */
type Placement = ReturnType<typeof placement> & { outW: number; outH: number };

async function bySharp(bytes: Buffer): Promise<Buffer | undefined> {
  return sharp(bytes, { ignoreIcc: true, failOn: 'error' }).removeAlpha().toColourspace('srgb').raw().toBuffer().catch(() => undefined);
}

const same = (a: Uint8Array | undefined, b: Buffer | undefined) => a !== undefined && b !== undefined && Buffer.from(a).equals(b);

describe('the native JPEG decoder (libjpeg-turbo with SIMD, native/jpeg.c)', () => {
  it('loads here (linux-x64): without it every JPEG would silently take the slower path', async () => {
    expect(decoder).toBeInstanceOf(NativeJpegDecoder);
    expect(decode(await noisy(8, 8))?.width).toBe(8);
  });

  const variants: [string, () => Promise<Buffer>][] = [
    ['4:2:0, odd size', () => noisy(333, 251)],
    ['4:4:4', () => noisy(320, 240, { chromaSubsampling: '4:4:4' })],
    ['optimised Huffman tables, 4:4:4', () => noisy(257, 129, { optimiseCoding: true, chromaSubsampling: '4:4:4' })],
    ['greyscale', () => noisy(200, 150, {}, true)],
    ['1x1', () => noisy(1, 1)],
    ['17x9, 4:2:0', () => noisy(17, 9)],
    ['quality 50', () => noisy(240, 240, { quality: 50 })],
    ['quality 100, 4:4:4', () => noisy(96, 64, { quality: 100, chromaSubsampling: '4:4:4' })],
    ['restart markers', () => sharp(readFileSync(join(FIX, 'images', 'blue.jpg'))).jpeg({ quality: 90 }).toBuffer()],
    ['larger than a small photo, 1200x900', () => noisy(1200, 900)],
  ];
  for (const [name, make] of variants) {
    it(`decodes the same pixels as sharp: ${name}`, async () => {
      const bytes = await make();
      const got = decode(bytes);
      expect(got).toBeDefined();
      const { info } = await sharp(bytes).raw().toBuffer({ resolveWithObject: true });
      expect([got!.width, got!.height]).toEqual([info.width, info.height]);
      expect(same(got!.data, await bySharp(bytes))).toBe(true);
    });
  }

  it.runIf(flowers.length > 0)('decodes the shared flower photos to the same pixels as sharp', async () => {
    for (const bytes of flowers) expect(same(decode(bytes)?.data, await bySharp(bytes))).toBe(true);
  });

  it("gives the fast mode sharp's own pixels: its shrink-on-load scale decoded here, then resized by libvips", async () => {
    const steps = { resize: 'area' as const, crop: null, icc: 'ignore' as const, exifRotate: false };
    // 1024x768 to 64x48 shrinks on load by 8, to 100x100 by 4 (7.68: 4), 300x300 by 1 (2.56 -> 2 = its integer part, halved)
    const photo = await noisy(1024, 768);
    const bySharpArea = (width: number, height: number, window?: Placement) => {
      const image = sharp(photo, { ignoreIcc: true }).flatten({ background: '#ffffff' }).resize(width, height, { fit: 'fill' });
      return (window ? image.extract({ ...window, width: window.outW, height: window.outH }) : image).toColourspace('srgb').raw().toBuffer();
    };
    for (const [width, height, scale] of [[64, 48, 8], [100, 100, 4], [300, 300, 1], [200, 120, 4]]) {
      expect(sharpShrinkOnLoad(1024 / width, 768 / height)).toBe(scale);
      const got = await decodeToRgb(photo, { width, height, maxPixels: 1e8, steps });
      expect(Buffer.from(got).equals(await bySharpArea(width, height))).toBe(true);
      const crop = { shorter: Math.max(width, height) + 8 };
      const place = placement(1024, 768, width, height, crop);
      const cropped = await decodeToRgb(photo, { width, height, maxPixels: 1e8, steps: { ...steps, crop } });
      expect(Buffer.from(cropped).equals(await bySharpArea(place.width, place.height, { ...place, outW: width, outH: height }))).toBe(true);
    }
    expect(decode(photo, Infinity, 8)).toMatchObject({ width: 128, height: 96 });
  });

  it('--verbose says which decoder takes which images', async () => {
    const exact = await runInProcess(['-g', COLOUR, '--resize', 'tf1', '-v'], '');
    expect(exact.stderr).toMatch(/decoding sequential 4:2:0, 4:4:4 and grey JPEGs by libjpeg-turbo 2\.\d+\.\d+ \(SIMD, called directly\) in the decode threads, the rest by sharp/);
    const area = await runInProcess(['-g', COLOUR, '--resize', 'area', '-v'], '');
    expect(area.stderr).toMatch(/at sharp's shrink-on-load scale, then resized by sharp/);
  });

  it('leaves to sharp what it does not take: over --max-pixels, CMYK, progressive', async () => {
    expect(decode(await noisy(100, 100), 99 * 100)).toBeUndefined();
    const cmyk = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#c04080' } }).toColourspace('cmyk').jpeg().toBuffer();
    expect(decode(cmyk)).toBeUndefined();
    // One cut after an early scan is smoothed differently by other libjpeg versions.
    const progressive = await noisy(120, 90, { progressive: true });
    expect(jpegHeader(progressive)?.sequential).toBe(false);
    expect(decoder.decode(progressive, Infinity, { ...jpegHeader(progressive)!, sequential: true })).toBeUndefined();
  });

  it('gives up on a truncated or warned-about JPEG, and decodes the next one correctly', async () => {
    const good = await noisy(160, 120);
    const broken = [
      good.subarray(0, good.length >> 1), // premature end: a warning, with the rest grey
      readFileSync(join(FIX, 'decode', 'extraneous-bytes.jpg')),
      readFileSync(join(FIX, 'decode', 'sos-warning.jpg')),
      readFileSync(join(FIX, 'broken', 'truncated.jpg')),
      readFileSync(join(FIX, 'broken', 'claims-10000x10000.jpg')),
      Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 2]), // a header and nothing more
    ];
    const expected = await bySharp(good);
    for (const bytes of broken) {
      const header = jpegHeader(bytes) ?? { sequential: true, icc: false, exif: false, width: 1, height: 1, blocks: 0, bitsPerBlock: 0, scanAt: 0 };
      expect(decoder.decode(bytes, Infinity, header)).toBeUndefined();
      expect(same(decode(good)?.data, expected)).toBe(true);
    }
  });

  it('does not decode a JPEG with the tables of the image before it', async () => {
    const donor = await noisy(64, 64);
    const victim = withoutSegment(await noisy(64, 64), 0xdb); // no quantisation tables of its own
    expect(decode(donor)).toBeDefined();
    expect(decode(victim)).toBeUndefined();
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
    for (const resize of ['bilinear', 'area'] as const) {
      const rgb = await decodeToRgb(bytes, { width: 10, height: 20, maxPixels: 1e8, steps: { resize, crop: null, icc: 'ignore', exifRotate: true } });
      const top = [...rgb.subarray((2 * 10 + 5) * 3, (2 * 10 + 5) * 3 + 3)];
      expect(top[0]).toBeGreaterThan(200);
      expect(top[2]).toBeLessThan(60);
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
});

describe('the committed addon', () => {
  // The committed file was built on Debian 12 (gcc 12, libjpeg-turbo 2.1.5): elsewhere the same
  // source builds other bytes.
  const debian12 = existsSync('/etc/debian_version') && readFileSync('/etc/debian_version', 'utf8').startsWith('12');
  const toolchain = debian12 && ['/usr/bin/gcc', '/usr/lib/x86_64-linux-gnu/libjpeg.a'].every((f) => existsSync(f));
  if (!toolchain) console.warn('skipping the rebuild of the addon: not Debian 12 with gcc and libjpeg62-turbo-dev');
  it.runIf(toolchain)('is what scripts/build-native.sh builds from native/ (a change to the C must be rebuilt and committed)', () => {
    const out = mkdtempSync(join(tmpdir(), 'classify-native-'));
    const built = spawnSync('sh', [join(ROOT, 'scripts', 'build-native.sh')], { cwd: ROOT, env: { ...process.env, NATIVE_OUT: out }, encoding: 'utf8' });
    expect(built.status, built.stderr).toBe(0);
    expect(readFileSync(join(out, 'image.node')).equals(readFileSync(join(ROOT, 'native', 'prebuilt', 'linux-x64', 'image.node')))).toBe(true);
  });
});

describe('the native resize (TensorFlow bilinear and the normalisation in one pass, native/resize.c)', () => {
  it('writes bit for bit what resizeRgb then writeFloat write: both samplers, both layouts, crops, upscaling, odd normalisations', () => {
    const random = seeded(23);
    const norms = [
      { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] },
      { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375] },
      { mean: [0, 0, 0], std: [1, 1, 1] },
    ] as const;
    for (let i = 0; i < 60; i++) {
      const [srcW, srcH, outW, outH] = [1 + random(700), 1 + random(500), 1 + random(230), 1 + random(230)];
      const data = Uint8Array.from({ length: srcW * srcH * 3 }, () => random(256));
      const sampling = (['tf1', 'bilinear'] as const)[i % 2];
      const layout = (['NHWC', 'NCHW'] as const)[(i >> 1) % 2];
      const crop = [null, { shorter: Math.max(outW, outH) + random(40) }, { height: outH + random(9), width: outW + random(9) }][i % 3];
      const place = placement(srcW, srcH, outW, outH, crop);
      const norm = norms[i % 3];
      const packer = new TensorPacker(outH, outW, layout, { mean: [...norm.mean], std: [...norm.std] });
      const want = new Float32Array(packer.imageSize * 2);
      packer.writeFloat(resizeRgb(data, srcW, srcH, outW, outH, sampling, place), want, 1);
      const got = new Float32Array(packer.imageSize * 2);
      expect(packer.resizeFloat({ data, width: srcW, height: srcH }, place, sampling, got, 1)).toBe(true);
      expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer)), `case ${i}: ${srcW}x${srcH} to ${outW}x${outH} ${sampling} ${layout}`).toBe(true);
    }
  });

  it('leaves the PIL samplers to the JavaScript', () => {
    const packer = new TensorPacker(4, 4, 'NHWC', { mean: [0, 0, 0], std: [1, 1, 1] });
    const image = { data: new Uint8Array(8 * 8 * 3), width: 8, height: 8 };
    expect(packer.resizeFloat(image, placement(8, 8, 4, 4, null), 'pil-bilinear', new Float32Array(48), 0)).toBe(false);
  });
});

describe('damaged JPEGs (issue 20, item 7)', () => {
  it('every mutated JPEG the native decoder accepts decodes to exactly what sharp gives; none crashes the process', async () => {
    // Damaged tables (DQT: coefficients dequantised far out of range, which a C IDCT wraps and the
    // SIMD one clamps), damaged entropy-coded data and damaged headers, each from a fixed seed.
    const sources = [
      ...flowers,
      readFileSync(join(FIX, 'images', 'blue.jpg')),
      readFileSync(join(FIX, 'images', 'grey.jpg')),
      await noisy(64, 48),
      await noisy(40, 40, { quality: 75, chromaSubsampling: '4:4:4' }),
      await noisy(48, 32, { quality: 95 }, true),
    ];
    const random = seeded(20_7);
    const tally = { tables: 0, data: 0, header: 0, refused: 0 };
    for (let i = 0; i < 480; i++) {
      const [kind, bytes] = mutate(sources[i % sources.length], random);
      const got = decode(bytes);
      if (!got) {
        tally.refused++;
        continue;
      }
      tally[kind]++;
      expect(same(got.data, await bySharp(bytes)), `mutation ${i} (${kind})`).toBe(true);
    }
    // The set holds each kind of damage that libjpeg decodes without a warning.
    expect(Math.min(tally.tables, tally.data, tally.header)).toBeGreaterThan(20);
  });
});

describe('without the native decoder (CLASSIFY_NATIVE_JPEG=0, as where it cannot load)', () => {
  it('sharp decodes everything, to the same answers', async () => {
    const images = ['red.jpg', 'green.jpg', 'blue.jpg', 'grey.jpg', 'exif-rotated.jpg'].map((f) => join(FIX, 'images', f));
    const paths = [...images, ...(flowers.length ? [1, 2, 3, 4, 5].map((i) => join(SHARED, 'images', 'flowers', `flower${i}.jpg`)) : [])].join('\n');
    for (const resize of ['tf1', 'area']) {
      const args = ['-g', COLOUR, '--resize', resize, '-v'];
      // The switch is read as the process starts: the fallback is a process of its own.
      const [native, fallback] = await Promise.all([runInProcess(args, paths), runCli(args, paths, { env: { ...process.env, NO_COLOR: '1', CLASSIFY_NATIVE_JPEG: '0' } })]);
      expect(fallback.stderr).toMatch(/decoding by sharp \(CLASSIFY_NATIVE_JPEG=0\)/);
      expect(native.code).toBe(0);
      expect(jsonLines(fallback.stdout)).toEqual(jsonLines(native.stdout));
    }
  });
});

type Damage = 'tables' | 'data' | 'header';

/** A copy of `jpeg` with a few bytes changed: in a quantisation table, in the entropy-coded data or
 * anywhere in the header. */
function mutate(jpeg: Buffer, random: (n: number) => number): [Damage, Buffer] {
  const bytes = Buffer.from(jpeg);
  const tables: [number, number][] = [];
  let pos = 2;
  while (bytes[pos + 1] !== 0xda) {
    const length = bytes.readUInt16BE(pos + 2);
    if (bytes[pos + 1] === 0xdb) tables.push([pos + 5, length - 3]);
    pos += 2 + length;
  }
  const data = pos + 2 + bytes.readUInt16BE(pos + 2);
  const kind = (['tables', 'data', 'header'] as const)[random(3)];
  for (let n = 1 + random(3); n > 0; n--) {
    const [start, length] = kind === 'tables' ? tables[random(tables.length)] : kind === 'data' ? [data, bytes.length - 2 - data] : [2, data - 2];
    bytes[start + random(length)] = random(3) === 0 ? 255 : random(256);
  }
  return [kind, bytes];
}

/** Integers below n from a fixed seed (a linear congruential generator): the same set every run. */
function seeded(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return Math.floor((state / 2 ** 32) * n);
  };
}

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
