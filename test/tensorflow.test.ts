// TensorFlow models through TF.js: frozen graphs from the fixture script and the real shared ones.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadEngine } from '../src/backends/load.js';
import { encodeGraphDef } from '../src/tensorflow/graphdef.js';
import { FIX, jsonLines, SHARED, sharedAvailable, runInProcess } from './helpers.js';

const frozen = join(FIX, 'models', 'colour-frozen');
const img = (name: string) => join('fixtures', 'images', name);
const options = { threads: 0, device: 'cpu' };
/** What a frozen graph gets by default, for an ONNX twin that should see the same pixels. */
const TF_PREPROCESSING = ['--resize', 'tf1', '--icc', 'ignore', '--no-exif-rotate'];
/** A little-endian float32 file, copied out (small Buffers share one pooled ArrayBuffer). */
const f32 = (file: string) => {
  const b = readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
};

describe('frozen GraphDef via TensorFlow.js (generated fixtures)', () => {
  it('classifies like the ONNX twin of the same model', async () => {
    const paths = ['red.jpg', 'green.jpg', 'blue.jpg', 'blue-alpha.png'].map(img);
    const tf = await runInProcess(['-g', frozen, '-v', '--backend', 'tfjs'], paths.join('\n'));
    const onnx = await runInProcess(['-g', join(FIX, 'models', 'colour'), ...TF_PREPROCESSING], paths.join('\n'));
    expect(tf.code).toBe(0);
    expect(tf.stderr).toMatch(/engine TensorFlow\.js [\d.]+ \((wasm|cpu)\)/);
    expect(tf.stderr).toMatch(/labels .*output_labels\.txt/);
    const a = jsonLines(tf.stdout);
    const b = jsonLines(onnx.stdout);
    expect(a.map((o) => o.predictions[0].label)).toEqual(['red', 'green', 'blue', 'blue']);
    a.forEach((o, i) => o.predictions.forEach((p: { score: number }, j: number) => expect(p.score).toBeCloseTo(b[i].predictions[j].score, 5)));
  });

  it('runs a TF.js graph model folder (model.json + weight shards)', async () => {
    const r = await runInProcess(['-g', join(FIX, 'models', 'colour-tfjs'), '-k', '1'], [img('red.jpg'), img('blue.jpg')].join('\n'));
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(['red', 'blue']);
  });

  it('refuses an op TF.js cannot run at load, naming the op and a node', async () => {
    const r = await runInProcess(['-g', join(FIX, 'models', 'unsupported-op')], `${img('red.jpg')}\n`);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/TensorFlow\.js cannot run these ops: BatchNormWithGlobalNormalization \(e\.g\. node "odd\/op"\)/);
    expect(r.stdout).toBe('');
  });

  it('a constant without a value is a model error naming the graph file, not a node', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'classify-noconst-'));
    try {
      const dims = (shape: number[]) => ({ dim: shape.map((size) => ({ size: String(size) })) });
      const float = { T: { type: 'DT_FLOAT' } };
      const graph = encodeGraphDef({
        node: [
          { name: 'input', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: dims([-1, 4, 4, 3]) } } },
          { name: 'scale', op: 'Const', attr: { dtype: { type: 'DT_FLOAT' } } }, // no value
          { name: 'final_result', op: 'Mul', input: ['input', 'scale'], attr: float },
        ],
        versions: { producer: 27 },
      });
      const file = join(dir, 'output_graph.pb');
      writeFileSync(file, graph);
      writeFileSync(join(dir, 'output_labels.txt'), 'a\n');
      const r = await runInProcess(['-g', dir, '--backend', 'tfjs'], '');
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^classify: ${file.replace(/[.]/g, '\\.')}: `));
      expect(r.stderr).toMatch(/constant "scale" has no value/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('wrong --input-node / --output-node are model errors naming the node', async () => {
    const input = await runInProcess(['-g', frozen, '--input-node', 'nope'], '');
    expect(input.code).toBe(2);
    expect(input.stderr).toMatch(/no node named "nope" \(--input-node\)/);
    const output = await runInProcess(['-g', frozen, '--output-node', 'missing'], '');
    expect(output.code).toBe(2);
    expect(output.stderr).toMatch(/no node named "missing" \(--output-node\)/);
  });

  it('--output-node reads another node (here the logits, softmaxed by --softmax auto)', async () => {
    const r = await runInProcess(['-g', frozen, '--output-node', 'logits', img('green.jpg')]);
    expect(r.code).toBe(0);
    const [o] = jsonLines(r.stdout);
    expect(o.predictions[0].label).toBe('green');
    expect(o.predictions.reduce((s: number, p: { score: number }) => s + p.score, 0)).toBeCloseTo(1, 4);
  });

  it('by default a frozen graph is translated to ONNX and runs on ONNX Runtime, with the same answers', async () => {
    const r = await runInProcess(['-g', frozen, '-v', img('green.jpg')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/engine onnxruntime-node/);
    expect(r.stderr).toMatch(/translated to ONNX in \d+ ms/);
    expect(jsonLines(r.stdout)[0].predictions[0].label).toBe('green');
  });

  it('--backend onnx on a TF.js model and tfjs on an ONNX model are refused clearly', async () => {
    const r = await runInProcess(['-g', join(FIX, 'models', 'colour-tfjs'), '--backend', 'onnx'], '');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--backend onnx runs \.onnx models and frozen graphs/);
    const s = await runInProcess(['-g', join(FIX, 'models', 'colour'), '--backend', 'tfjs-wasm'], '');
    expect(s.code).toBe(2);
  });

  it('a SavedModel without the native binding says what to install', async () => {
    const r = await runInProcess(['-g', join(FIX, 'models', 'saved-model-stub')], '');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/SavedModel needs native TensorFlow; install the native TensorFlow binding: npm install @tensorflow\/tfjs-node/);
  });
});

describe.runIf(sharedAvailable('TensorFlow parity tests'))('shared frozen graphs: parity with OpenCV and end to end', () => {
  const models = [
    ['mobilenet_v1_0.25_128', 'frozen_graph.pb'],
    ['retrained_3class', 'output_graph.pb'],
  ];

  for (const [name, graph] of models) for (const backend of ['onnx', 'tfjs'] as const) {
    it(`${name} on ${backend === 'onnx' ? 'ONNX Runtime (translated)' : 'TensorFlow.js'}: reproduces the reference outputs within 1e-4, batched`, async () => {
      const ref = join(SHARED, 'reference', name);
      const cases = JSON.parse(readFileSync(join(ref, 'cases.json'), 'utf8')).cases as { input: string; output: string; top1: number }[];
      const engine = await loadEngine({ backend, format: 'frozen', runtime: 'auto', file: join(SHARED, 'models', name, graph), options });
      expect(engine.name).toMatch(backend === 'onnx' ? /onnxruntime/ : /TensorFlow\.js/);
      try {
        const size = 128 * 128 * 3;
        const batch = new Float32Array(cases.length * size);
        cases.forEach((c, i) => batch.set(f32(join(ref, c.input)), i * size));
        const out = await engine.run(batch, cases.length);
        const n = engine.signature.outputSize;
        cases.forEach((c, i) => {
          const want = f32(join(ref, c.output));
          expect(n).toBe(want.length);
          const got = out.subarray(i * n, (i + 1) * n);
          let maxDiff = 0;
          for (let k = 0; k < n; k++) maxDiff = Math.max(maxDiff, Math.abs(got[k] - want[k]));
          expect(maxDiff).toBeLessThan(1e-4);
          expect(got.indexOf(Math.max(...got))).toBe(c.top1);
        });
      } finally {
        await engine.dispose();
      }
    });
  }

  it('the ImageNet MobileNet graph calls flower2.jpg a daisy, end to end', async () => {
    const flowers = join(SHARED, 'images', 'flowers');
    const r = await runInProcess(['-g', join(SHARED, 'models', 'mobilenet_v1_0.25_128', 'frozen_graph.pb'), '-k', '1'], `${join(flowers, 'flower2.jpg')}\n`);
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout)[0].predictions[0].label).toBe('daisy');
  });

  it('the retrain.py graph classifies every flower photo with its 3 labels', async () => {
    const flowers = ['flower1.jpg', 'flower2.jpg', 'flower3.jpg', 'flower4.jpg', 'flower5.jpg'].map((f) => join(SHARED, 'images', 'flowers', f));
    const r = await runInProcess(['-g', join(SHARED, 'models', 'retrained_3class')], flowers.join('\n'));
    expect(r.code).toBe(0);
    const out = jsonLines(r.stdout);
    expect(out.map((o) => o.path)).toEqual(flowers);
    for (const o of out) expect(o.predictions.map((p: { label: string }) => p.label).sort()).toEqual(['licenseplate', 'mirror', 'rectangle']);
  });

  it('a graph that decodes JPEG itself is fed after its decode, and agrees with its ONNX twin', async () => {
    const photo = join(SHARED, 'images', 'flowers', 'flower3.jpg');
    const tf = await runInProcess(['-g', join(SHARED, 'models', 'mobilenetv2_224_random_frozen'), '-v', '-k', '3', '--backend', 'tfjs', photo]);
    expect(tf.code).toBe(0);
    expect(tf.stderr).toMatch(/fed after its decode and resize, at "Mul"/);
    const norm = /normalisation mean ([\d.]+),[\d.]+,[\d.]+ std ([\d.]+),/.exec(tf.stderr)!;
    const onnx = await runInProcess(['-g', join(SHARED, 'models', 'mobilenetv2_224_random_onnx'), '--mean', norm[1], '--std', norm[2], ...TF_PREPROCESSING, '-k', '3', photo]);
    const translated = await runInProcess(['-g', join(SHARED, 'models', 'mobilenetv2_224_random_frozen'), '-v', '-k', '3', photo]);
    expect(translated.stderr).toMatch(/engine onnxruntime-node/);
    const [b] = jsonLines(onnx.stdout);
    for (const [a] of [jsonLines(tf.stdout), jsonLines(translated.stdout)]) {
      expect(a.predictions.map((p: { label: string }) => p.label)).toEqual(b.predictions.map((p: { label: string }) => p.label));
      a.predictions.forEach((p: { score: number }, i: number) => expect(Math.abs(p.score - b.predictions[i].score)).toBeLessThan(1e-4));
    }
  }, 60_000);
});
