#!/usr/bin/env node
// Generates everything in fixtures/: small models whose right answer is known by construction,
// synthetic images, and broken files. Deterministic: running it again rewrites the same bytes.
//   npm run build && node scripts/make-fixtures.mjs
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { encodeModel } from '../dist/proto/onnx.js';
import { encodeGraphDef } from '../dist/tensorflow/graphdef.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
const write = (rel, bytes) => {
  const file = join(root, rel);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, bytes);
};

// ---- The dominant-colour classifier -------------------------------------------------------
// scores = softmax(GAIN * mean colour): an image's mean R, G, B in [0,1] (after the model's own
// normalisation, mean 0, std 255) decides the class. Pure red gives red with 0.9999.
const SIZE = 16;
const GAIN = 10;
const LABELS = 'red\ngreen\nblue\n';
const weights = new Float32Array([GAIN, 0, 0, 0, GAIN, 0, 0, 0, GAIN]);

function colourModel({ layout = 'NCHW', batch = 'N', softmax = true, metadata, input = 'image', output = 'scores', dims } = {}) {
  const nodes = [];
  let x = input;
  if (layout === 'NHWC') {
    nodes.push({ op: 'Transpose', inputs: [x], outputs: ['nchw'], attrs: { perm: [0, 3, 1, 2] } });
    x = 'nchw';
  }
  nodes.push(
    { op: 'GlobalAveragePool', inputs: [x], outputs: ['pooled'] },
    { op: 'Flatten', inputs: ['pooled'], outputs: ['mean_rgb'], attrs: { axis: 1 } },
    { op: 'MatMul', inputs: ['mean_rgb', 'W'], outputs: [softmax ? 'logits' : output] },
  );
  if (softmax) nodes.push({ op: 'Softmax', inputs: ['logits'], outputs: [output], attrs: { axis: -1 } });
  const shape = dims ?? (layout === 'NHWC' ? [batch, SIZE, SIZE, 3] : [batch, 3, SIZE, SIZE]);
  return encodeModel({
    name: 'dominant_colour',
    nodes,
    initializers: [{ name: 'W', dims: [3, 3], data: weights }],
    inputs: [{ name: input, shape }],
    outputs: [{ name: output, shape: [batch, 3] }],
    metadata,
  });
}

rmSync(join(root, 'models'), { recursive: true, force: true });
// NCHW, probabilities out, normalisation in the model's own metadata.
write('models/colour/model.onnx', colourModel({ metadata: { mean: '0', std: '255' } }));
write('models/colour/labels.txt', LABELS);
// NHWC, raw scores out (the CLI applies softmax), normalisation in classify.json.
write('models/colour-nhwc/model.onnx', colourModel({ layout: 'NHWC', softmax: false }));
write('models/colour-nhwc/labels.txt', LABELS);
write('models/colour-nhwc/classify.json', JSON.stringify({ mean: [0, 0, 0], std: 255 }, null, 2) + '\n');
// A fixed batch dimension of 1, as many exported models have.
write('models/colour-batch1/model.onnx', colourModel({ batch: 1, metadata: { mean: '0', std: '255' } }));
write('models/colour-batch1/labels.txt', LABELS);
// A Hugging Face export (the layout of transformers.js and Optimum): config.json with id2label,
// preprocessor_config.json, onnx/model.onnx; Hugging Face's names (pixel_values in, logits out)
// and every dimension symbolic, as their exports have it (the size comes from crop_size).
// A CLIP-style shorter-side resize and centre crop, bicubic, ViT-style normalisation: a test can
// tell whether each applied (fixtures/decode/blue-centre.png is blue only once cropped).
write('models/hf-colour/onnx/model.onnx', colourModel({ softmax: false, input: 'pixel_values', output: 'logits', dims: ['batch_size', 'num_channels', 'height', 'width'] }));
write(
  'models/hf-colour/config.json',
  JSON.stringify(
    {
      architectures: ['DominantColourForImageClassification'],
      id2label: { 0: 'red', 1: 'green', 2: 'blue' },
      label2id: { red: 0, green: 1, blue: 2 },
      model_type: 'dominant-colour',
    },
    null,
    2,
  ) + '\n',
);
write(
  'models/hf-colour/preprocessor_config.json',
  JSON.stringify(
    {
      crop_size: { height: SIZE, width: SIZE },
      do_center_crop: true,
      do_normalize: true,
      do_rescale: true,
      do_resize: true,
      image_mean: [0.5, 0.5, 0.5],
      image_processor_type: 'CLIPImageProcessor',
      image_std: [0.5, 0.5, 0.5],
      resample: 3,
      rescale_factor: 1 / 255,
      size: { shortest_edge: 20 },
    },
    null,
    2,
  ) + '\n',
);
// Not a model at all.
write('models/broken/model.onnx', Buffer.from('this is not an ONNX protobuf\n'.repeat(4)));
write('models/broken/labels.txt', LABELS);
write('labels-4.txt', 'red\ngreen\nblue\nyellow\n');
write('labels-indexed.txt', '0:red\n1:green\n2:blue\n');

// ---- The same classifier as a TensorFlow frozen graph (retrain.py's shape) ------------------
// input [?,16,16,3] -> Mean over H,W -> MatMul(GAIN * I) -> final_result (Softmax).
const b64 = (typed) => Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength).toString('base64');
const dims = (shape) => ({ dim: shape.map((size) => ({ size: String(size) })) });
const constNode = (name, dtype, shape, typed) => ({
  name,
  op: 'Const',
  attr: { dtype: { type: dtype }, value: { tensor: { dtype, tensorShape: dims(shape), tensorContent: b64(typed) } } },
});
const float = { T: { type: 'DT_FLOAT' } };
function colourGraph(extra = []) {
  return encodeGraphDef({
    node: [
      { name: 'input', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: dims([-1, SIZE, SIZE, 3]) } } },
      constNode('mean/axes', 'DT_INT32', [2], new Int32Array([1, 2])),
      { name: 'mean', op: 'Mean', input: ['input', 'mean/axes'], attr: { ...float, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } } },
      constNode('weights', 'DT_FLOAT', [3, 3], weights),
      { name: 'logits', op: 'MatMul', input: ['mean', 'weights'], attr: { ...float, transpose_a: { b: false }, transpose_b: { b: false } } },
      ...extra,
      { name: 'final_result', op: 'Softmax', input: [extra.length ? extra[extra.length - 1].name : 'logits'], attr: float },
    ],
    versions: { producer: 27 },
  });
}
write('models/colour-frozen/output_graph.pb', colourGraph());
write('models/colour-frozen/output_labels.txt', LABELS);
write('models/colour-frozen/classify.json', JSON.stringify({ mean: 0, std: 255 }, null, 2) + '\n');
// The same graph as a TF.js graph model: model.json (topology, weight manifest) + one shard.
{
  const shard = Buffer.concat([Buffer.from(new Int32Array([1, 2]).buffer), Buffer.from(weights.buffer)]);
  const topology = {
    node: [
      { name: 'input', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: dims([-1, SIZE, SIZE, 3]) } } },
      { name: 'mean/axes', op: 'Const', attr: { dtype: { type: 'DT_INT32' } } },
      { name: 'mean', op: 'Mean', input: ['input', 'mean/axes'], attr: { ...float, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } } },
      { name: 'weights', op: 'Const', attr: { dtype: { type: 'DT_FLOAT' } } },
      { name: 'logits', op: 'MatMul', input: ['mean', 'weights'], attr: { ...float, transpose_a: { b: false }, transpose_b: { b: false } } },
      { name: 'scores', op: 'Softmax', input: ['logits'], attr: float },
    ],
    versions: { producer: 27 },
  };
  const manifest = [
    {
      paths: ['group1-shard1of1.bin'],
      weights: [
        { name: 'mean/axes', shape: [2], dtype: 'int32' },
        { name: 'weights', shape: [3, 3], dtype: 'float32' },
      ],
    },
  ];
  write('models/colour-tfjs/model.json', JSON.stringify({ format: 'graph-model', generatedBy: 'classify fixtures', modelTopology: topology, weightsManifest: manifest }) + '\n');
  write('models/colour-tfjs/group1-shard1of1.bin', shard);
  write('models/colour-tfjs/labels.txt', LABELS);
  write('models/colour-tfjs/classify.json', JSON.stringify({ mean: 0, std: 255 }, null, 2) + '\n');
}
// A folder that looks like a SavedModel: what a user without native TensorFlow is told.
write('models/saved-model-stub/saved_model.pb', Buffer.from('not a real SavedModel\n'));
write('models/saved-model-stub/labels.txt', LABELS);
// An op TF.js has no kernel for, on the path to the output: must be refused at load.
write(
  'models/unsupported-op/output_graph.pb',
  colourGraph([{ name: 'odd/op', op: 'BatchNormWithGlobalNormalization', input: ['logits'], attr: float }]),
);
write('models/unsupported-op/output_labels.txt', LABELS);

// ---- Images -----------------------------------------------------------------------------------
// A "photo" of one dominant colour: a gradient with deterministic noise, so JPEG has work to do.
function photo(w, h, [r, g, b], seed) {
  const px = Buffer.alloc(w * h * 3);
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff) * 40 - 20;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const shade = 0.75 + (0.25 * x) / w;
      px[i] = Math.max(0, Math.min(255, r * shade + rnd()));
      px[i + 1] = Math.max(0, Math.min(255, g * shade + rnd()));
      px[i + 2] = Math.max(0, Math.min(255, b * shade + rnd()));
    }
  }
  return sharp(px, { raw: { width: w, height: h, channels: 3 } });
}

rmSync(join(root, 'images'), { recursive: true, force: true });
rmSync(join(root, 'broken'), { recursive: true, force: true });
write('images/red.jpg', await photo(160, 120, [230, 40, 30], 1).jpeg({ quality: 85 }).toBuffer());
write('images/green.jpg', await photo(120, 160, [30, 200, 40], 2).jpeg({ quality: 85 }).toBuffer());
write('images/blue.jpg', await photo(200, 100, [20, 50, 220], 3).jpeg({ quality: 85 }).toBuffer());
// Other formats sharp reads: PNG with alpha (flattened onto white), WebP, greyscale JPEG.
const blueRgba = await photo(64, 64, [20, 40, 230], 4).ensureAlpha(1).raw().toBuffer();
write('images/blue-alpha.png', await sharp(blueRgba, { raw: { width: 64, height: 64, channels: 4 } }).png().toBuffer());
write('images/green.webp', await photo(96, 64, [40, 210, 50], 5).webp({ quality: 80 }).toBuffer());
write('images/grey.jpg', await photo(64, 64, [128, 128, 128], 6).greyscale().jpeg().toBuffer());

// EXIF orientation 6 (rotate 90 clockwise to view): stored left half red, right half blue, so
// viewed upright the top half is red and the bottom half is blue.
const halves = Buffer.alloc(40 * 20 * 3);
for (let y = 0; y < 20; y++) {
  for (let x = 0; x < 40; x++) halves.set(x < 20 ? [255, 0, 0] : [0, 0, 255], (y * 40 + x) * 3);
}
write(
  'images/exif-rotated.jpg',
  await sharp(halves, { raw: { width: 40, height: 20, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer(),
);

// ---- Images that test one preprocessing step each ----------------------------------------------
rmSync(join(root, 'decode'), { recursive: true, force: true });
// 40x20: the outer 12 columns on each side red, the middle 16 blue. Stretched whole to 16x16 it is
// mostly red; its shorter side resized to 20 (itself) and the centre 16x16 cut out, all blue.
const centre = Buffer.alloc(40 * 20 * 3);
for (let y = 0; y < 20; y++) {
  for (let x = 0; x < 40; x++) centre.set(x >= 12 && x < 28 ? [0, 0, 255] : [255, 0, 0], (y * 40 + x) * 3);
}
write('decode/blue-centre.png', await sharp(centre, { raw: { width: 40, height: 20, channels: 3 } }).png().toBuffer());
// sRGB (200, 60, 60) written as Display P3 (sharp converts): stored about (184, 71, 65). With its
// profile applied it reads about (200, 60, 60) again; taken as stored (as TensorFlow and PIL do),
// about (184, 71, 65).
write(
  'decode/p3.jpg',
  await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 200, g: 60, b: 60 } } })
    .jpeg({ quality: 100, chromaSubsampling: '4:4:4' })
    .withIccProfile('p3')
    .toBuffer(),
);
// Benign libjpeg warnings, as some cameras' files carry: the pixels are all there.
const findMarker = (b, m) => {
  for (let i = 2; i < b.length - 1; i++) if (b[i] === 0xff && b[i + 1] === m) return i;
  throw new Error(`no marker ${m.toString(16)}`);
};
const redJpeg = await photo(64, 48, [230, 40, 30], 8).jpeg({ quality: 90 }).toBuffer();
{
  // "Invalid SOS parameters for sequential JPEG": a baseline scan whose Ah/Al byte is not 0.
  const b = Buffer.from(redJpeg);
  const sos = findMarker(b, 0xda);
  b[sos + 2 + b.readUInt16BE(sos + 2) - 1] = 0x01;
  write('decode/sos-warning.jpg', b);
  // "Corrupt JPEG data: 5 extraneous bytes before marker 0xdb".
  const dqt = findMarker(redJpeg, 0xdb);
  write('decode/extraneous-bytes.jpg', Buffer.concat([redJpeg.subarray(0, dqt), Buffer.from([1, 2, 3, 4, 5]), redJpeg.subarray(dqt)]));
}

// ---- Broken inputs ----------------------------------------------------------------------------
write('broken/empty.jpg', Buffer.alloc(0));
write('broken/not-an-image.jpg', Buffer.from('Just some text that happens to be named like a JPEG.\n'));
const big = await photo(256, 256, [200, 30, 30], 7).jpeg({ quality: 90 }).toBuffer();
write('broken/truncated.jpg', big.subarray(0, Math.floor(big.length * 0.6)));
// 12000 x 12000 = 144 megapixels in a few kilobytes: over the default --max-pixels.
const bomb = await sharp({ create: { width: 12000, height: 12000, channels: 3, background: '#ff0000' } })
  .png({ palette: true, colours: 2, compressionLevel: 9 })
  .toBuffer();
write('broken/bomb.png', bomb);
// A 16x16 JPEG whose header says 10000x10000: libjpeg decodes the rest as grey with a warning.
{
  const b = Buffer.from(await sharp({ create: { width: 16, height: 16, channels: 3, background: '#ff0000' } }).jpeg().toBuffer());
  const sof = findMarker(b, 0xc0);
  b.writeUInt16BE(10000, sof + 5);
  b.writeUInt16BE(10000, sof + 7);
  write('broken/claims-10000x10000.jpg', b);
}
mkdirSync(join(root, 'broken', 'a-directory.jpg'), { recursive: true });
write('broken/a-directory.jpg/.gitkeep', Buffer.alloc(0));

// ---- Folders of labelled photos for `classify retrain` ----------------------------------------
// retrain.py's layout: one folder per label (the dominant colour, which the colour models'
// bottleneck, the mean colour, tells apart), photos at any depth, some named with _nohash_,
// one file that is not an image; a folder whose second label holds no image; a folder with one
// label. Each photo's colour is moved a little (by its seed), so no two are alike.
rmSync(join(root, 'retrain'), { recursive: true, force: true });
const RETRAIN_COLOURS = { red: [220, 50, 40], green: [40, 190, 60], blue: [30, 60, 210], yellow: [215, 200, 50] };
for (const [label, rgb] of Object.entries(RETRAIN_COLOURS)) {
  for (let i = 0; i < 12; i++) {
    const seed = 100 * rgb[0] + i;
    const jitter = rgb.map((v, c) => Math.max(0, Math.min(255, v + (((seed * (c + 3) * 7919) % 61) - 30))));
    const name = label === 'green' && i < 4 ? `leaf_nohash_${i}.jpg` : `${label}-${i}.jpg`;
    const at = label === 'red' && i >= 8 ? `retrain/photos/${label}/more/deeper/${name}` : `retrain/photos/${label}/${name}`;
    write(at, await photo(24, 18, jitter, seed).jpeg({ quality: 85 }).toBuffer());
  }
}
write('retrain/photos/blue/notes.txt', Buffer.from('not an image, and not named like one: left alone\n'));
write('retrain/photos/blue/corrupt.jpg', Buffer.from('not a JPEG at all, though named like one\n'));
write('retrain/empty-label/red/red-0.jpg', await photo(24, 18, RETRAIN_COLOURS.red, 1).jpeg().toBuffer());
write('retrain/empty-label/green/.gitkeep', Buffer.alloc(0));
write('retrain/one-label/red/red-0.jpg', await photo(24, 18, RETRAIN_COLOURS.red, 2).jpeg().toBuffer());

console.log(`fixtures written to ${root}`);
