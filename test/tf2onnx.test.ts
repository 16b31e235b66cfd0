// GraphDef -> ONNX translation, op by op, with TensorFlow.js running the same graph as the oracle.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadEngine } from '../src/backends/load.js';
import { encodeGraphDef, type NodeJson } from '../src/tensorflow/graphdef.js';

const dir = mkdtempSync(join(tmpdir(), 'classify-tf2onnx-'));
const options = { threads: 1, device: 'cpu' };
const T = { T: { type: 'DT_FLOAT' } };
const dims = (shape: number[]) => ({ dim: shape.map((size) => ({ size: String(size) })) });
const b64 = (a: Float32Array | Int32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

/** Deterministic values in [-1, 1). */
function noise(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x40000000) - 1);
}

/** A tiny graph builder: every helper adds nodes and returns the name of its output. */
class G {
  nodes: NodeJson[] = [];
  private seed = 1;
  constructor(readonly h: number, readonly w: number) {
    this.nodes.push({ name: 'image', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: dims([-1, h, w, 3]) } } });
  }
  node(name: string, op: string, input: string[], attr: NodeJson['attr'] = {}) {
    this.nodes.push({ name, op, input, attr: { ...T, ...attr } });
    return name;
  }
  float(name: string, shape: number[], values?: Float32Array) {
    const v = values ?? noise(shape.reduce((a, b) => a * b, 1), this.seed++);
    this.nodes.push({ name, op: 'Const', attr: { dtype: { type: 'DT_FLOAT' }, value: { tensor: { dtype: 'DT_FLOAT', tensorShape: dims(shape), tensorContent: b64(v) } } } });
    return name;
  }
  int(name: string, shape: number[], values: number[]) {
    this.nodes.push({ name, op: 'Const', attr: { dtype: { type: 'DT_INT32' }, value: { tensor: { dtype: 'DT_INT32', tensorShape: dims(shape), tensorContent: b64(new Int32Array(values)) } } } });
    return name;
  }
  conv(name: string, x: string, k: number, cin: number, cout: number, stride: number, padding: string, dilation = 1) {
    return this.node(name, 'Conv2D', [x, this.float(`${name}/w`, [k, k, cin, cout])], {
      strides: { list: { i: ['1', String(stride), String(stride), '1'] } },
      dilations: { list: { i: ['1', String(dilation), String(dilation), '1'] } },
      padding: { s: btoa(padding) },
      data_format: { s: btoa('NHWC') },
    });
  }
  depthwise(name: string, x: string, k: number, cin: number, mult: number, stride: number, padding: string) {
    return this.node(name, 'DepthwiseConv2dNative', [x, this.float(`${name}/w`, [k, k, cin, mult])], {
      strides: { list: { i: ['1', String(stride), String(stride), '1'] } },
      padding: { s: btoa(padding) },
    });
  }
  pool(name: string, op: string, x: string, k: number, stride: number, padding: string) {
    return this.node(name, op, [x], {
      ksize: { list: { i: ['1', String(k), String(k), '1'] } },
      strides: { list: { i: ['1', String(stride), String(stride), '1'] } },
      padding: { s: btoa(padding) },
    });
  }
  /** Global mean over H, W, a dense layer to `classes`, softmax: every case ends as a classifier. */
  head(x: string, channels: number, classes = 5) {
    const m = this.node('head/mean', 'Mean', [x, this.int('head/axes', [2], [1, 2])], { Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } });
    const d = this.node('head/dense', 'MatMul', [m, this.float('head/w', [channels, classes])], { transpose_a: { b: false }, transpose_b: { b: false } });
    return this.node('out', 'Softmax', [this.node('head/logits', 'AddV2', [d, this.float('head/b', [classes])])]);
  }
  write(name: string) {
    const file = join(dir, `${name}.pb`);
    writeFileSync(file, encodeGraphDef({ node: this.nodes, versions: { producer: 27 } }));
    return file;
  }
}

async function compare(file: string, h: number, w: number, outputNode = 'out') {
  const spec = { format: 'frozen' as const, runtime: 'cpu' as const, file, options: { ...options, outputNode } };
  const onnx = await loadEngine({ ...spec, backend: 'onnx' });
  const tfjs = await loadEngine({ ...spec, backend: 'tfjs' });
  try {
    expect(onnx.name).toMatch(/onnxruntime/);
    expect(tfjs.name).toMatch(/TensorFlow\.js/);
    const input = noise(2 * h * w * 3, 99);
    const a = await onnx.run(input.slice(), 2);
    const b = await tfjs.run(input.slice(), 2);
    expect(a.length).toBe(b.length);
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    expect(maxDiff).toBeLessThan(1e-4);
    return maxDiff;
  } finally {
    await onnx.dispose();
    await tfjs.dispose();
  }
}

// Odd sizes on purpose: SAME padding is then uneven, which is where NHWC translations go wrong.
const H = 13;
const W = 11;

const CASES: [string, (g: G) => string][] = [
  ['Conv2D 3x3 SAME stride 1', (g) => g.head(g.conv('c', 'image', 3, 3, 4, 1, 'SAME'), 4)],
  ['Conv2D 3x3 SAME stride 2', (g) => g.head(g.conv('c', 'image', 3, 3, 4, 2, 'SAME'), 4)],
  ['Conv2D 4x4 VALID stride 2', (g) => g.head(g.conv('c', 'image', 4, 3, 6, 2, 'VALID'), 6)],
  ['Conv2D 3x3 SAME dilation 2', (g) => g.head(g.conv('c', 'image', 3, 3, 4, 1, 'SAME', 2), 4)],
  ['DepthwiseConv2dNative multiplier 2, SAME stride 2', (g) => g.head(g.depthwise('d', 'image', 3, 3, 2, 2, 'SAME'), 6)],
  ['DepthwiseConv2dNative multiplier 1, VALID', (g) => g.head(g.depthwise('d', 'image', 3, 3, 1, 1, 'VALID'), 3)],
  ['BiasAdd, Relu', (g) => g.head(g.node('r', 'Relu', [g.node('b', 'BiasAdd', [g.conv('c', 'image', 1, 3, 4, 1, 'VALID'), g.float('bias', [4])])]), 4)],
  ['Relu6', (g) => g.head(g.node('r', 'Relu6', [g.node('s', 'Mul', [g.conv('c', 'image', 3, 3, 4, 1, 'SAME'), g.float('k', [], new Float32Array([9]))])]), 4)],
  [
    'unfolded batch norm (Rsqrt/Mul/Sub/Add) after a conv',
    (g) => {
      const c = g.conv('c', 'image', 3, 3, 4, 1, 'SAME');
      const v = g.node('bn/var_eps', 'Add', [g.float('bn/var', [4], Float32Array.from([0.5, 1, 2, 3])), g.float('bn/eps', [], new Float32Array([0.001]))]);
      const s = g.node('bn/scale', 'Mul', [g.node('bn/rsqrt', 'Rsqrt', [v]), g.float('bn/gamma', [4])]);
      const shift = g.node('bn/shift', 'Sub', [g.float('bn/beta', [4]), g.node('bn/ms', 'Mul', [g.float('bn/mean', [4]), s])]);
      return g.head(g.node('bn/out', 'Add', [g.node('bn/x', 'Mul', [c, s]), shift]), 4);
    },
  ],
  [
    'FusedBatchNormV3 after a depthwise conv, FusedBatchNorm on its own',
    (g) => {
      const d = g.depthwise('d', 'image', 3, 3, 2, 1, 'SAME');
      const stats = (p: string) => [g.float(`${p}/g`, [6]), g.float(`${p}/b`, [6]), g.float(`${p}/m`, [6]), g.float(`${p}/v`, [6], Float32Array.from([1, 2, 0.5, 1.5, 1, 3]))];
      const bn = g.node('bn', 'FusedBatchNormV3', [d, ...stats('bn')], { epsilon: { f: 0.001 }, is_training: { b: false } });
      const r = g.node('r', 'Relu', [bn]);
      const bn2 = g.node('bn2', 'FusedBatchNorm', [r, ...stats('bn2')], { epsilon: { f: 0.001 } });
      return g.head(bn2, 6);
    },
  ],
  ['AvgPool 3x3 SAME stride 2 (padding not averaged)', (g) => g.head(g.pool('p', 'AvgPool', 'image', 3, 2, 'SAME'), 3)],
  ['MaxPool 2x2 VALID stride 2', (g) => g.head(g.pool('p', 'MaxPool', 'image', 2, 2, 'VALID'), 3)],
  ['MaxPool 3x3 SAME stride 2', (g) => g.head(g.pool('p', 'MaxPool', g.conv('c', 'image', 1, 3, 4, 1, 'VALID'), 3, 2, 'SAME'), 4)],
  ['Pad then VALID conv', (g) => g.head(g.conv('c', g.node('pad', 'Pad', ['image', g.int('pads', [4, 2], [0, 0, 1, 2, 2, 1, 0, 0])]), 3, 3, 4, 1, 'VALID'), 4)],
  ['ConcatV2 on channels', (g) => g.head(g.node('cat', 'ConcatV2', [g.conv('a', 'image', 1, 3, 2, 1, 'VALID'), g.conv('b', 'image', 3, 3, 3, 1, 'SAME'), g.int('axis', [], [3])], { N: { i: '2' } }), 5)],
  ['AddV2 residual, Sub, RealDiv, Maximum, Minimum', (g) => {
    const a = g.conv('a', 'image', 1, 3, 3, 1, 'VALID');
    const sum = g.node('res', 'AddV2', [a, 'image']);
    const x = g.node('sub', 'Sub', [sum, g.float('k1', [3])]);
    const y = g.node('div', 'RealDiv', [x, g.float('k2', [3], Float32Array.from([2, 3, 4]))]);
    return g.head(g.node('min', 'Minimum', [g.node('max', 'Maximum', [y, g.float('lo', [], new Float32Array([-0.5]))]), g.float('hi', [], new Float32Array([0.7]))]), 3);
  }],
  ['Rsqrt and Sqrt on activations', (g) => {
    const sq = g.node('sq', 'Mul', ['image', 'image']);
    const pos = g.node('pos', 'Add', [sq, g.float('one', [], new Float32Array([1]))]);
    return g.head(g.node('s', 'Sqrt', [g.node('r', 'Rsqrt', [pos])]), 3);
  }],
  ['Mean keep_dims + Squeeze + Reshape + MatMul transpose_b', (g) => {
    const m = g.node('m', 'Mean', ['image', g.int('ax', [2], [1, 2])], { Tidx: { type: 'DT_INT32' }, keep_dims: { b: true } });
    const s = g.node('sq', 'Squeeze', [m], { squeeze_dims: { list: { i: ['1', '2'] } } });
    const r = g.node('rs', 'Reshape', [s, g.int('shape', [2], [-1, 3])], { Tshape: { type: 'DT_INT32' } });
    const d = g.node('dense', 'MatMul', [r, g.float('w', [4, 3])], { transpose_a: { b: false }, transpose_b: { b: true } });
    return g.node('out', 'Softmax', [d]);
  }],
  ['BatchNormWithGlobalNormalization (old Inception graphs)', (g) => {
    const c = g.conv('c', 'image', 3, 3, 4, 1, 'SAME');
    const bn = g.node('bn', 'BatchNormWithGlobalNormalization', [c, g.float('m', [4]), g.float('v', [4], Float32Array.from([1, 2, 3, 4])), g.float('b', [4]), g.float('g', [4])], {
      variance_epsilon: { f: 0.001 },
      scale_after_normalization: { b: true },
    });
    return g.head(bn, 4);
  }],
];

describe('GraphDef -> ONNX, each op against TensorFlow.js', () => {
  for (const [name, build] of CASES) {
    it(name, async () => {
      const g = new G(H, W);
      build(g);
      await compare(g.write(name.replace(/\W+/g, '_')), H, W);
    });
  }

  it('a graph with an op outside the set falls back to TF.js, and --backend onnx refuses it', async () => {
    const g = new G(H, W);
    g.head(g.node('odd', 'Elu', [g.conv('c', 'image', 1, 3, 4, 1, 'VALID')]), 4);
    const file = g.write('fallback');
    const spec = { format: 'frozen' as const, runtime: 'cpu' as const, file, options };
    const auto = await loadEngine({ ...spec, backend: 'auto' });
    expect(auto.name).toMatch(/TensorFlow\.js/);
    expect(auto.notes[0]).toMatch(/not translated to ONNX \(no ONNX translation for: Elu \(e\.g\. node "odd"\)\)/);
    await auto.dispose();
    await expect(loadEngine({ ...spec, backend: 'onnx' })).rejects.toThrow(/no ONNX translation for: Elu/);
  });

  it('frozen graphs run on ONNX Runtime by default', async () => {
    const g = new G(H, W);
    g.head(g.conv('c', 'image', 3, 3, 4, 1, 'SAME'), 4);
    const engine = await loadEngine({ backend: 'auto', format: 'frozen', runtime: 'auto', file: g.write('default'), options });
    expect(engine.name).toMatch(/onnxruntime/);
    expect(engine.notes.join('\n')).toMatch(/translated to ONNX in \d+ ms/);
    await engine.dispose();
  });
});

describe('classify convert and classify info', () => {
  it('convert writes an ONNX file that runs with the same preprocessing and answers', async () => {
    const { runInProcess, FIX, jsonLines } = await import('./helpers.js');
    const out = join(dir, 'converted.onnx');
    const c = await runInProcess(['convert', join(FIX, 'models', 'colour-frozen'), out]);
    expect(c.code).toBe(0);
    expect(c.stderr).toBe('');
    const i = await runInProcess(['info', out, '--labels', join(FIX, 'models', 'colour-frozen', 'output_labels.txt'), '--json']);
    expect(i.code).toBe(0);
    const info = JSON.parse(i.stdout);
    expect(info.format).toBe('onnx');
    expect(info.input).toMatchObject({ name: 'input', layout: 'NHWC', height: 16, width: 16 });
    expect(info.preprocessing.std).toEqual([255, 255, 255]); // carried over from classify.json
    const r = await runInProcess(['-g', out, '--labels', join(FIX, 'models', 'colour-frozen', 'output_labels.txt'), join(FIX, 'images', 'blue.jpg')]);
    expect(jsonLines(r.stdout)[0].predictions[0].label).toBe('blue');
  });

  it('convert refuses what is not a frozen graph, exit 2', async () => {
    const { runInProcess, COLOUR } = await import('./helpers.js');
    const r = await runInProcess(['convert', COLOUR, join(dir, 'x.onnx')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/convert takes a frozen TensorFlow graph/);
  });

  it('info describes inputs, outputs, labels, preprocessing and engine', async () => {
    const { runInProcess, COLOUR } = await import('./helpers.js');
    const r = await runInProcess(['info', COLOUR]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^model +.*colour\/model\.onnx \(onnx\)$/m);
    expect(r.stdout).toMatch(/^engine +onnxruntime-node/m);
    expect(r.stdout).toMatch(/^input +"image" float32 NCHW 16x16, batch any$/m);
    expect(r.stdout).toMatch(/^output +"scores" 3 scores$/m);
    expect(r.stdout).toMatch(/^labels +.*labels\.txt \(3: red, green, blue\)$/m);
    expect(r.stdout).toMatch(/^preprocessing resize area \(the whole image to the input size\), embedded ICC profile applied, EXIF orientation applied, alpha flattened on white$/m);
    expect(r.stdout).toMatch(/^ +\(x - \[0, 0, 0\]\) \/ \[255, 255, 255\]$/m);
    expect(r.stdout).toMatch(/^ +resize, crop, icc, exif_rotate from classify's default for models that say nothing; mean, std from .*metadata$/m);
  });
});
