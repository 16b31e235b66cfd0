// Preprocessing as the model was trained with: where each setting comes from, what each step does
// to the pixels, and parity with TensorFlow's own pipeline on the real photos and graphs.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
// The built module: its engine thread is dist/backends/thread-entry.js.
import { Classifier } from '../dist/classifier/classifier.js';
import { classifierSettings, type PreprocessingSettings } from '../dist/settings.js';
import { loadEngine } from '../dist/backends/load.js';
import { decodeToRgb } from '../dist/image/decode.js';
import { InputError } from '../dist/image/read.js';
import { jpegClaimsMoreThanItHolds } from '../dist/image/jpeg-header.js';
import { type ImageSteps, VIEWER_STEPS } from '../dist/image/preprocessing.js';
import { huggingFaceHints } from '../dist/model/huggingface.js';
import { readLabels } from '../dist/model/labels.js';
import { resolveModel } from '../dist/model/locate.js';
import { choosePreprocessing } from '../dist/model/preprocessing.js';
import { decodeMetadata } from '../dist/proto/onnx.js';
import { COLOUR, FIX, jsonLines, SHARED, sharedAvailable, runInProcess } from './helpers.js';

const HF = join(FIX, 'models', 'hf-colour');
const fixture = (...p: string[]) => join(FIX, ...p);
const tmp = mkdtempSync(join(tmpdir(), 'classify-preprocessing-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A model as the CLI loads it with no flags, on the CPU and one decode thread, with these preprocessing flags. */
const load = (graph: string, preprocessing: PreprocessingSettings = {}) => Classifier.load(classifierSettings(graph, { engine: { device: 'cpu' }, preprocessing, pipeline: { decodeJobs: 1 } }));

/** Decoded pixel (x, y) of a `width` x `height` decode, rounded. */
async function pixel(file: string, steps: ImageSteps, width: number, height: number, x: number, y: number): Promise<number[]> {
  const rgb = await decodeToRgb(readFileSync(file), { width, height, maxPixels: 1e8, steps });
  return [...rgb.subarray((y * width + x) * 3, (y * width + x) * 3 + 3)].map(Math.round);
}

describe('where each setting comes from', () => {
  it('frozen graphs get retrain.py\'s pipeline: tf1, ICC ignored, no EXIF rotation; ONNX models without metadata the viewer-style default', () => {
    const frozen = choosePreprocessing(resolveModel(fixture('models', 'colour-frozen')), undefined);
    expect(frozen.preprocessing).toMatchObject({ resize: 'tf1', crop: null, icc: 'ignore', exifRotate: false });
    expect(frozen.sources.resize).toMatch(/frozen graph/);
    expect(frozen.sources.std).toMatch(/classify\.json/);
    const onnx = choosePreprocessing(resolveModel(join(FIX, 'models', 'colour-batch1')), undefined);
    expect(onnx.preprocessing).toMatchObject({ ...VIEWER_STEPS, mean: [0, 0, 0] });
    expect(onnx.sources.resize).toMatch(/default for models that say nothing/);
    expect(onnx.sources.mean).toMatch(/metadata/);
  });

  it('takes each setting from the first that states it: flags, classify.json, ONNX metadata, preprocessor_config.json', () => {
    const dir = join(tmp, 'layers');
    mkdirSync(join(dir, 'onnx'), { recursive: true });
    copyFileSync(join(COLOUR, 'model.onnx'), join(dir, 'onnx', 'model.onnx')); // metadata: mean 0, std 255
    copyFileSync(join(HF, 'config.json'), join(dir, 'config.json'));
    copyFileSync(join(HF, 'preprocessor_config.json'), join(dir, 'preprocessor_config.json'));
    writeFileSync(join(dir, 'classify.json'), JSON.stringify({ resize: 'bilinear', exif_rotate: false }));
    const model = resolveModel(dir);
    const { preprocessing: p, sources } = choosePreprocessing(model, undefined, { icc: 'apply' });
    expect(p).toEqual({ resize: 'bilinear', crop: { shorter: 20 }, icc: 'apply', exifRotate: false, mean: [0, 0, 0], std: [255, 255, 255] });
    expect(sources).toEqual({
      resize: join(dir, 'classify.json'),
      crop: join(dir, 'preprocessor_config.json'),
      icc: 'flags',
      exifRotate: join(dir, 'classify.json'),
      mean: `${join(dir, 'onnx', 'model.onnx')} metadata`,
      std: `${join(dir, 'onnx', 'model.onnx')} metadata`,
    });
  });

  it('refuses a bad value in classify.json, naming the file and the key', () => {
    const dir = join(tmp, 'bad');
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(COLOUR, 'model.onnx'), join(dir, 'model.onnx'));
    writeFileSync(join(dir, 'classify.json'), JSON.stringify({ resize: 'lanczos' }));
    expect(() => resolveModel(dir, join(COLOUR, 'labels.txt'))).toThrow(/Expected one of tf1, bilinear, area, pil-bilinear, pil-bicubic for resize but received "lanczos"/);
    writeFileSync(join(dir, 'classify.json'), JSON.stringify({ crop: '0x5' }));
    expect(() => resolveModel(dir, join(COLOUR, 'labels.txt'))).toThrow(/for crop but received "0x5"/);
  });

  it('reads Hugging Face processor configs as their image processors apply them', () => {
    const vit = huggingFaceHints({ size: { height: 224, width: 224 }, resample: 2, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5], rescale_factor: 1 / 255 }, 'vit');
    expect(vit.values).toEqual({ resize: 'pil-bilinear', crop: null, icc: 'ignore', exifRotate: true, mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] });
    expect(vit.inputSize).toEqual({ height: 224, width: 224 });
    // ConvNext: shortest_edge / crop_pct, then the crop
    const convnext = huggingFaceHints({ image_processor_type: 'ConvNextImageProcessor', size: { shortest_edge: 224 }, crop_pct: 0.875, resample: 3 }, 'c');
    expect(convnext.values).toMatchObject({ resize: 'pil-bicubic', crop: { shorter: 256 } });
    // A bare number: the shorter side for CLIP-like processors, a square for DeiT-like ones.
    const clip = huggingFaceHints({ image_processor_type: 'CLIPImageProcessor', size: 224, do_center_crop: true, crop_size: 224, resample: 3 }, 'clip');
    expect(clip.values.crop).toEqual({ shorter: 224 });
    const deit = huggingFaceHints({ image_processor_type: 'DeiTImageProcessor', size: 256, do_center_crop: true, crop_size: 224 }, 'deit');
    expect(deit.values.crop).toEqual({ height: 256, width: 256 });
    expect(deit.inputSize).toEqual({ height: 224, width: 224 });
    // ImageNet statistics in 0-1 units become 0-255 units; no normalisation leaves x * rescale.
    const imagenet = huggingFaceHints({ size: { shortest_edge: 256 }, do_center_crop: true, crop_size: { height: 224, width: 224 }, image_mean: [0.485, 0.456, 0.406], image_std: [0.229, 0.224, 0.225] }, 'r');
    expect(imagenet.values.mean).toEqual([123.675, 116.28, 103.53]);
    expect(imagenet.values.std).toEqual([58.395, 57.12, 57.375]);
    expect(huggingFaceHints({ do_normalize: false, rescale_factor: 1 / 255 }, 'n').values).toMatchObject({ mean: [0, 0, 0], std: [255, 255, 255] });
    expect(huggingFaceHints({ resample: 1 }, 'lanczos.json').source).toMatch(/resample 1 \(lanczos\) is not implemented; pil-bicubic is the nearest/);
  });
});

describe('a Hugging Face export runs with no flags', () => {
  it('classifies with its labels, its crop and its normalisation', async () => {
    // blue-centre.png is red at both ends: blue only once the centre is cut out, as the config says.
    const paths = [fixture('decode', 'blue-centre.png'), fixture('images', 'red.jpg'), fixture('images', 'green.jpg')];
    const r = await runInProcess(['-g', HF, '-k', '1', '-v'], paths.join('\n'));
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(['blue', 'red', 'green']);
    expect(r.stderr).toMatch(/labels .*hf-colour\/config\.json \(3 classes\)/);
    expect(r.stderr).toMatch(/input pixel_values float32 NCHW 16x16/); // every dimension symbolic: the size from crop_size
    expect(r.stderr).toMatch(/preprocessing resize pil-bicubic \(the shorter side to 20, then the centre cut out\), embedded ICC profile ignored, EXIF orientation applied/);
    expect(r.stderr).toMatch(/resize, crop, icc, exif_rotate, mean, std from .*preprocessor_config\.json/);
    // The same model without its configuration sees mostly red.
    const plain = await runInProcess(['-g', join(HF, 'onnx', 'model.onnx'), '--labels', join(COLOUR, 'labels.txt'), '--resize', 'area', '--crop', 'none', '-k', '1', paths[0]]);
    expect(jsonLines(plain.stdout)[0].predictions[0].label).toBe('red');
  });

  it('packs exactly what the processor would: (x / 255 - 0.5) / 0.5 of the cropped pixels', async () => {
    const classifier = await load(HF);
    try {
      const input = await classifier.preprocessFile(fixture('decode', 'blue-centre.png'));
      expect(input).toBeInstanceOf(Float32Array);
      // NCHW: the R and G planes all -1, the B plane all 1 (pure blue, nothing of the red ends).
      expect(new Set(input.subarray(0, 512))).toEqual(new Set([-1]));
      expect(new Set(input.subarray(512))).toEqual(new Set([1]));
    } finally {
      await classifier.close();
    }
  });

  it('info says which preprocessing applies and why', async () => {
    const r = await runInProcess(['info', HF, '--json']);
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.labels).toMatchObject({ count: 3, first: ['red', 'green', 'blue'] });
    expect(info.preprocessing).toMatchObject({ resize: 'pil-bicubic', crop: '20', icc: 'ignore', exifRotate: true, mean: [127.5, 127.5, 127.5] });
    expect(info.preprocessing.matches).toMatch(/PIL's Image.resize BICUBIC/);
    expect(info.preprocessing.sources.crop).toMatch(/preprocessor_config\.json$/);
    const text = await runInProcess(['info', fixture('models', 'colour-frozen')]);
    expect(text.stdout).toMatch(/preprocessing resize tf1 \(the whole image to the input size\), embedded ICC profile ignored, EXIF orientation not applied/);
    expect(text.stdout).toMatch(/tf1: .*TF1 resize_bilinear as retrain.py and label_image.py use it/);
    expect(text.stdout).toMatch(/resize, crop, icc, exif_rotate from TensorFlow frozen graph: retrain.py's pipeline; mean, std from .*classify\.json/);
  });
});

describe('flags', () => {
  it('override the model, and bad values are refused before anything runs', async () => {
    const r = await runInProcess(['-g', HF, '--resize', 'tf1', '--crop', 'none', '--mean', '0', '--std', '255', '--no-exif-rotate', '-v', fixture('images', 'red.jpg')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/preprocessing resize tf1 \(the whole image to the input size\), embedded ICC profile ignored, EXIF orientation not applied/);
    expect(r.stderr).toMatch(/resize, crop, exif_rotate, mean, std from flags; icc from/);
    for (const [flag, value, expected] of [
      ['--resize', 'nearest', 'one of tf1, bilinear, area, pil-bilinear, pil-bicubic'],
      ['--crop', '-3', 'none, a positive integer up to 16384 (the shorter side) or HEIGHTxWIDTH'],
      ['--icc', 'maybe', 'one of apply, ignore'],
    ]) {
      const bad = await runInProcess(['-g', COLOUR, flag, value, fixture('images', 'red.jpg')]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain(`Expected ${expected} for ${flag} but received "${value}"`);
    }
  });

  it('a crop smaller than the model input is a load-time error naming where it came from', async () => {
    const r = await runInProcess(['-g', COLOUR, '--crop', '8', fixture('images', 'red.jpg')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/crop 8 is smaller than the model's input 16x16 \(crop from flags\)/);
    expect(r.stdout).toBe('');
  });
});

describe('decoding steps', () => {
  const steps = (s: Partial<ImageSteps>): ImageSteps => ({ ...VIEWER_STEPS, ...s });

  it('applies or ignores an embedded ICC profile, in every mode', async () => {
    // p3.jpg stores about (184, 71, 65) under a Display P3 profile: about (200, 60, 60) in sRGB.
    for (const resize of ['area', 'tf1'] as const) {
      const applied = await pixel(fixture('decode', 'p3.jpg'), steps({ resize, icc: 'apply' }), 8, 8, 4, 4);
      const ignored = await pixel(fixture('decode', 'p3.jpg'), steps({ resize, icc: 'ignore' }), 8, 8, 4, 4);
      applied.forEach((v, c) => expect(Math.abs(v - [200, 60, 60][c]), `${resize} applied`).toBeLessThanOrEqual(3));
      ignored.forEach((v, c) => expect(Math.abs(v - [184, 71, 65][c]), `${resize} ignored`).toBeLessThanOrEqual(3));
    }
  });

  it('applies the EXIF orientation or keeps the pixels as stored', async () => {
    // Stored 40x20, left half red, right half blue, orientation 6.
    const file = fixture('images', 'exif-rotated.jpg');
    for (const resize of ['area', 'bilinear'] as const) {
      // upright (20x40): red on top, blue below
      expect((await pixel(file, steps({ resize, exifRotate: true }), 10, 20, 5, 2))[0]).toBeGreaterThan(200);
      expect((await pixel(file, steps({ resize, exifRotate: true }), 10, 20, 5, 17))[2]).toBeGreaterThan(200);
      // as stored (40x20): red on the left, blue on the right
      expect((await pixel(file, steps({ resize, exifRotate: false }), 20, 10, 2, 5))[0]).toBeGreaterThan(200);
      expect((await pixel(file, steps({ resize, exifRotate: false }), 20, 10, 17, 5))[2]).toBeGreaterThan(200);
    }
  });

  it('drops alpha in the exact modes (as TensorFlow and PIL do) and flattens it on white in area', async () => {
    const clear = await sharp(Buffer.from([0, 0, 255, 0]), { raw: { width: 1, height: 1, channels: 4 } }).png().toFile(join(tmp, 'clear.png'));
    expect(clear.channels).toBe(4);
    expect(await pixel(join(tmp, 'clear.png'), steps({ resize: 'bilinear' }), 2, 2, 0, 0)).toEqual([0, 0, 255]);
    expect(await pixel(join(tmp, 'clear.png'), steps({ resize: 'area' }), 2, 2, 0, 0)).toEqual([255, 255, 255]);
  });

  it('crops in area mode too', async () => {
    const file = fixture('decode', 'blue-centre.png');
    // stretched, the left edge is red; the shorter side to 10 (20x10) and the centre 8x8 cut out, blue
    expect((await pixel(file, steps({ resize: 'area', crop: null }), 8, 8, 0, 4))[0]).toBeGreaterThan(240);
    expect((await pixel(file, steps({ resize: 'area', crop: { shorter: 10 } }), 8, 8, 0, 4))[2]).toBeGreaterThan(200);
  });
});

describe('JPEGs that are broken, and JPEGs that only look it', () => {
  const decode = (file: string, resize: ImageSteps['resize']) =>
    decodeToRgb(readFileSync(file), { width: 16, height: 16, maxPixels: 1e8, steps: { ...VIEWER_STEPS, resize } });

  it('a header claiming 10000x10000 over 16x16 of data is corrupt, with the same text every time', async () => {
    const file = fixture('broken', 'claims-10000x10000.jpg');
    expect(jpegClaimsMoreThanItHolds(readFileSync(file))).toBe(true);
    // Many at once, beside other failing and succeeding decodes: libvips' messages are process-wide.
    const jobs = Array.from({ length: 24 }, (_, i) => [file, fixture('broken', 'truncated.jpg'), fixture('images', 'red.jpg')][i % 3]);
    const results = await Promise.allSettled(jobs.map((f, i) => decode(f, i % 2 ? 'area' : 'tf1')));
    results.forEach((r, i) => {
      if (jobs[i].endsWith('red.jpg')) return expect(r.status).toBe('fulfilled');
      const err = (r as PromiseRejectedResult).reason;
      expect(err).toBeInstanceOf(InputError);
      expect([err.kind, err.message]).toEqual(['corrupt', 'corrupt or truncated image']);
    });
    const r = await runInProcess(['-g', COLOUR, file, file]);
    expect(r.code).toBe(1);
    expect(jsonLines(r.stdout).map((o) => o.error)).toEqual(['corrupt or truncated image', 'corrupt or truncated image']);
  });

  it('JPEGs with benign libjpeg warnings (bad SOS parameters, extraneous bytes) still classify', async () => {
    const files = ['sos-warning.jpg', 'extraneous-bytes.jpg'].map((f) => fixture('decode', f));
    for (const f of files) expect(jpegClaimsMoreThanItHolds(readFileSync(f))).toBe(false);
    for (const graph of [COLOUR, fixture('models', 'colour-frozen')]) {
      const r = await runInProcess(['-g', graph, '-k', '1', ...files]);
      expect(r.code).toBe(0);
      expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(['red', 'red']);
    }
  });

  it('never refuses a flat image, the least data a JPEG can hold per block', async () => {
    for (const jpeg of [{}, { progressive: true }, { mozjpeg: true }, { optimiseCoding: false }]) {
      const flat = await sharp({ create: { width: 1600, height: 1200, channels: 3, background: '#808080' } }).jpeg(jpeg).toBuffer();
      expect(jpegClaimsMoreThanItHolds(flat), JSON.stringify(jpeg)).toBe(false);
    }
  });
});

describe('convert writes the whole preprocessing into the ONNX metadata', () => {
  it('so the ONNX file preprocesses exactly as the frozen graph', async () => {
    const out = join(tmp, 'colour.onnx');
    const c = await runInProcess(['convert', fixture('models', 'colour-frozen'), out]);
    expect(c.code).toBe(0);
    expect(decodeMetadata(readFileSync(out))).toMatchObject({ resize: 'tf1', crop: 'none', icc: 'ignore', exif_rotate: 'false', mean: '0,0,0', std: '255,255,255' });
    const labels = fixture('models', 'colour-frozen', 'output_labels.txt');
    const info = JSON.parse((await runInProcess(['info', out, '--labels', labels, '--json'])).stdout);
    expect(info.preprocessing).toMatchObject({ resize: 'tf1', icc: 'ignore', exifRotate: false });
    expect(info.preprocessing.sources.resize).toBe(`${out} metadata`);
    // The same scores, to the last printed digit, on an image whose orientation matters.
    const paths = [fixture('images', 'exif-rotated.jpg'), fixture('decode', 'p3.jpg')];
    const a = await runInProcess(['-g', out, '--labels', labels], paths.join('\n'));
    const b = await runInProcess(['-g', fixture('models', 'colour-frozen')], paths.join('\n'));
    expect(a.stdout).toBe(b.stdout);
  });
});

// ---- parity with the frameworks, from the JPEG files through the whole pipeline --------------------

/** A little-endian float32 file, copied out (small Buffers share one pooled ArrayBuffer). */
const f32 = (file: string) => {
  const b = readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
};
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

describe.runIf(sharedAvailable('preprocessing parity with TensorFlow'))('parity with the frameworks on the shared photos and graphs', () => {
  const graphs = [
    ['mobilenet_v1_0.25_128', 'frozen_graph.pb'],
    ['retrained_3class', 'output_graph.pb'],
  ];
  const photos = [1, 2, 3, 4, 5].map((i) => `flower${i}`);
  const runs = [
    { reference: 'reference-tf', flags: {}, cli: [] as string[], what: 'the default (tf1, ICC ignored, no EXIF rotation)' },
    { reference: 'reference-bilinear', flags: { resize: 'bilinear' as const }, cli: ['--resize', 'bilinear'], what: '--resize bilinear' },
  ];

  for (const [name, file] of graphs) for (const run of runs) {
    it(`${name}, ${run.what}: inputs within 1e-5 and outputs within 1e-4 of ${run.reference}, all five photos`, async () => {
      const graph = join(SHARED, 'models', name, file);
      const ref = (what: string) => join(SHARED, run.reference, name, what);
      const classifier = await load(graph, run.flags);
      const engine = await loadEngine({ backend: 'auto', format: 'frozen', runtime: 'auto', file: graph, options: { threads: 0, device: 'cpu' } });
      try {
        for (const photo of photos) {
          const input = (await classifier.preprocessFile(join(SHARED, 'images', 'flowers', `${photo}.jpg`))) as Float32Array;
          expect(maxDiff(input, f32(ref(`${photo}.input.f32`))), `${photo} input`).toBeLessThan(1e-5);
          const output = await engine.run(input, 1);
          expect(maxDiff(output, f32(ref(`${photo}.output.f32`))), `${photo} output`).toBeLessThan(1e-4);
        }
      } finally {
        await classifier.close();
        await engine.dispose();
      }
      // And the CLI, batched as it runs: the reference's top-1 label and score.
      const cases = JSON.parse(readFileSync(ref('cases.json'), 'utf8')).cases as { image: string; top1: number; top1_score: number }[];
      const labels = readLabels(resolveModel(graph).labelsFile);
      const r = await runInProcess(['-g', graph, '-k', '1', ...run.cli], cases.map((c) => join(SHARED, 'images', 'flowers', c.image)).join('\n'));
      expect(r.code).toBe(0);
      jsonLines(r.stdout).forEach((o, i) => {
        expect(o.predictions[0].label, cases[i].image).toBe(labels[cases[i].top1]);
        expect(Math.abs(o.predictions[0].score - cases[i].top1_score), cases[i].image).toBeLessThan(1e-4);
      });
    }, 60_000);
  }

  it("--resize bilinear is within 0.75 of a pixel level of OpenCV's INTER_LINEAR (reference/, rounded to 8 bits)", async () => {
    const classifier = await load(join(SHARED, 'models', 'retrained_3class', 'output_graph.pb'), { resize: 'bilinear' });
    try {
      for (const photo of photos) {
        const input = await classifier.preprocessFile(join(SHARED, 'images', 'flowers', `${photo}.jpg`));
        const levels = maxDiff(input, f32(join(SHARED, 'reference', 'retrained_3class', `${photo}.input.f32`))) * 127.5;
        expect(levels, photo).toBeLessThanOrEqual(0.75 + 1e-3);
      }
    } finally {
      await classifier.close();
    }
  });
});
