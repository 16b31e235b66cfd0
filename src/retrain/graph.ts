// The base model cut at its bottleneck (the pooled activations the classifier layer reads), and
// the retrained model: that cut plus a new layer and a softmax. Both are ONNX: the cut is what
// the engine runs to compute bottlenecks, and the very same graph becomes the body of the output
// model, so the features a model was trained on are the ones it computes when classifying.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ModelError } from '../errors.js';
import type { ImpliedNormalisation } from '../image/preprocessing.js';
import type { ResolvedModel } from '../model/locate.js';
import { batchDimension, decodeModelProto, encodeModelProto, extendModel, type GraphJson, nodeProto, type OnnxNode, tensorProto } from '../proto/onnx.js';
import type { ConstValue, GraphJson as TfGraph, NodeJson as TfNode } from '../tensorflow/graphdef.js';

/** TensorFlow's reader and the translator, imported only to cut a TensorFlow base anew or to
 * write --format pb: a rerun reads the cut kept in the store and needs neither (three modules,
 * 44 KB of JavaScript: 4-5 ms of a cached rerun on the digits, 2026-12-05). */
async function tensorflow() {
  const [{ translateFrozenGraph }, { encodeGraphDef, inputNode }, { decodeFrozenGraph, readFrozenGraph }] = await Promise.all([
    import('../convert/tf2onnx.js'),
    import('../tensorflow/graphdef.js'),
    import('../tensorflow/plan.js'),
  ]);
  return { translateFrozenGraph, encodeGraphDef, inputNode, decodeFrozenGraph, readFrozenGraph };
}
type TensorFlow = Awaited<ReturnType<typeof tensorflow>>;

export interface FeatureGraph {
  /** the base model up to the bottleneck, which is its only output */
  onnx: Uint8Array;
  /** the bottleneck as the base model names it */
  node: string;
  /** the ONNX tensor that holds it */
  output: string;
  /** a frozen graph's implied normalisation (the ONNX model's own metadata says nothing of it) */
  normalisation?: ImpliedNormalisation;
  notes: string[];
}

/** Ops between a classifier layer's output and the model's output that do not change which
 * layer it is: activations, reshapes, pass-throughs. */
const ONNX_HEAD_OPS = new Set(['Softmax', 'LogSoftmax', 'Sigmoid', 'Identity', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Dropout', 'Cast']);
const TF_HEAD_OPS = new Set(['Softmax', 'Sigmoid', 'Identity', 'Reshape', 'Squeeze', 'StopGradient', 'PlaceholderWithDefault', 'Snapshot']);
const TF_PASS_THROUGH = new Set(['Identity', 'PlaceholderWithDefault', 'StopGradient', 'Snapshot']);
const AFFINE = new Set(['Add', 'AddV2', 'BiasAdd', 'Sub', 'Mul', 'Div', 'RealDiv']);

/** The base model cut at `node`, or at the bottleneck found from the graph. Throws ModelError. */
export async function featureGraph(model: ResolvedModel, node?: string): Promise<FeatureGraph> {
  const bytes = readFileSync(model.file);
  if (model.format === 'onnx') return onnxFeatures(model.file, bytes, node);
  if (model.format === 'frozen') return frozenFeatures(await tensorflow(), model.file, bytes, node);
  if (model.format === 'tfjs-graph') {
    const tf = await tensorflow();
    return frozenFeatures(tf, model.file, tfjsAsGraphDef(tf, model.file, bytes), node);
  }
  throw new ModelError(model.file, `retrain takes an ONNX model, a frozen TensorFlow graph or a TF.js graph model as its base; this is a ${model.format} model`);
}

/** A TF.js graph model (model.json, weights in shards beside it) as the frozen GraphDef it was
 * converted from: each weight back in its Const node, so it is translated as a frozen graph is. */
function tfjsAsGraphDef(tf: TensorFlow, file: string, json: Uint8Array): Uint8Array {
  type Spec = { name: string; shape: number[]; dtype: string; quantization?: unknown };
  const manifest = JSON.parse(Buffer.from(json).toString('utf8')) as { modelTopology?: { node?: TfNode[]; versions?: object }; weightsManifest?: { paths: string[]; weights: Spec[] }[] };
  if (!manifest.modelTopology?.node) throw new ModelError(file, 'model.json is not a TF.js graph model (no modelTopology.node)');
  const groups = manifest.weightsManifest ?? [];
  const data = Buffer.concat(groups.flatMap((g) => g.paths.map((p) => readFileSync(join(dirname(file), p)))));
  const weights = new Map<string, TfNode['attr']>();
  let at = 0;
  for (const w of groups.flatMap((g) => g.weights)) {
    const dtype = ({ float32: 'DT_FLOAT', int32: 'DT_INT32' } as Record<string, 'DT_FLOAT' | 'DT_INT32'>)[w.dtype];
    if (!dtype || w.quantization) throw new ModelError(file, `weight "${w.name}" is ${w.quantization ? 'quantized' : w.dtype}; retrain reads float32 and int32 weights`);
    const bytes = 4 * w.shape.reduce((a, b) => a * b, 1);
    const tensor = { dtype, tensorShape: { dim: w.shape.map((n) => ({ size: String(n) })) }, tensorContent: data.subarray(at, at + bytes).toString('base64') };
    weights.set(w.name, { dtype: { type: dtype }, value: { tensor } });
    at += bytes;
  }
  const node = manifest.modelTopology.node.map((n) => (n.op === 'Const' && weights.has(n.name) ? { ...n, attr: { ...n.attr, ...weights.get(n.name) } } : n));
  return tf.encodeGraphDef({ node, versions: manifest.modelTopology.versions });
}

function onnxFeatures(file: string, bytes: Uint8Array, chosen?: string): FeatureGraph {
  let m;
  try {
    m = decodeModelProto(bytes);
  } catch (err) {
    throw new ModelError(file, `not a valid ONNX model: ${(err as Error).message}`);
  }
  const g = m.graph;
  const producer = new Map(g.node.flatMap((n) => n.output.map((o) => [o, n] as const)));
  const constant = new Set([...g.initializer.map((t) => t.name), ...g.node.filter((n) => n.op_type === 'Constant').flatMap((n) => n.output)]);
  let output = chosen;
  if (output !== undefined) {
    if (!producer.has(output)) throw new ModelError(file, `no node output named "${output}" (--bottleneck-node)`);
  } else {
    let t = g.output[0]?.name;
    for (;;) {
      const n = t === undefined ? undefined : producer.get(t);
      if (!n) throw notFound(file, t ?? 'the graph output');
      const data = n.input.filter((i) => i !== '' && !constant.has(i));
      if (ONNX_HEAD_OPS.has(n.op_type) || (AFFINE.has(n.op_type) && data.length === 1)) t = data[0];
      else if (isOnnxClassifierLayer(n, constant, g)) {
        output = n.input[0];
        break;
      } else throw notFound(file, `${n.op_type} "${n.name ?? t}"`);
    }
    while (['Identity', 'Dropout'].includes(producer.get(output)?.op_type ?? '')) output = producer.get(output)!.input[0];
  }
  // Only what the bottleneck needs: the classifier layer's weights would be dead weight.
  const needed = new Set<string>();
  const stack = [output];
  while (stack.length > 0) {
    const n = producer.get(stack.pop()!);
    if (!n || needed.has(n.output[0])) continue;
    for (const o of n.output) needed.add(o);
    stack.push(...n.input.filter(Boolean));
  }
  const nodes = g.node.filter((n) => n.output.some((o) => needed.has(o))).flatMap((n) => readableClip(n, g));
  const used = new Set(nodes.flatMap((n) => n.input));
  g.node = nodes;
  g.initializer = g.initializer.filter((t) => used.has(t.name));
  g.output = [{ name: output }];
  g.value_info = (g.value_info ?? []).filter((v) => needed.has(v.name));
  return { onnx: encodeModelProto(m), node: output, output, notes: [] };
}

/** Clip with a constant minimum and maximum, as min(max(x, lo), hi) = hi - Relu(hi - lo - Relu(x -
 * lo)): OpenCV 4.6 reads Clip only in its opset-6 form (attributes), and the output model should
 * load there too. Anything else is left as it is. */
function readableClip(n: GraphJson['node'][number], g: GraphJson): GraphJson['node'] {
  if (n.op_type !== 'Clip' || n.input.length !== 3) return [n];
  const scalar = (name: string) => {
    const t = g.initializer.find((i) => i.name === name) as { dims?: number[]; data_type?: number; raw_data?: Uint8Array; float_data?: number[] } | undefined;
    if (!t || (t.dims?.length ?? 0) !== 0 || t.data_type !== 1) return undefined;
    return t.float_data?.length ? t.float_data[0] : t.raw_data?.length === 4 ? Buffer.from(t.raw_data).readFloatLE(0) : undefined;
  };
  const [lo, hi] = [scalar(n.input[1]), scalar(n.input[2])];
  if (lo === undefined || hi === undefined) return [n];
  const y = n.output[0];
  const at = (s: string) => `${y}/clip/${s}`;
  g.initializer.push(tensorProto({ name: at('lo'), dims: [], data: Float32Array.of(lo) }), tensorProto({ name: at('span'), dims: [], data: Float32Array.of(hi - lo) }), tensorProto({ name: at('hi'), dims: [], data: Float32Array.of(hi) }));
  const steps: [string, string[], string][] = [
    ['Sub', [n.input[0], at('lo')], at('shifted')],
    ['Relu', [at('shifted')], at('above')],
    ['Sub', [at('span'), at('above')], at('room')],
    ['Relu', [at('room')], at('below')],
    ['Sub', [at('hi'), at('below')], y],
  ];
  return steps.map(([op, inputs, output]) => nodeProto({ op, inputs, outputs: [output], name: output }));
}

function isOnnxClassifierLayer(n: GraphJson['node'][number], constant: Set<string>, g: GraphJson): boolean {
  if ((n.op_type === 'MatMul' || n.op_type === 'Gemm') && constant.has(n.input[1])) return true;
  if (n.op_type !== 'Conv' || !constant.has(n.input[1])) return false;
  const dims = g.initializer.find((t) => t.name === n.input[1])?.dims;
  return dims?.length === 4 && Number(dims[2]) === 1 && Number(dims[3]) === 1;
}

function frozenFeatures(tf: TensorFlow, file: string, bytes: Uint8Array, chosen?: string): FeatureGraph {
  const { inputNode } = tf;
  // Decoded once for both the search for the bottleneck and the translation.
  const graph = tf.decodeFrozenGraph(file, bytes);
  if (chosen !== undefined && !graph.node.some((n) => n.name === inputNode(chosen))) {
    throw new ModelError(file, `no node named "${chosen}" (--bottleneck-node)`);
  }
  const node = chosen === undefined ? tfBottleneck(tf, file, bytes, graph) : inputNode(chosen);
  const t = tf.translateFrozenGraph(file, bytes, { outputNode: node, graph });
  const output = decodeModelProto(t.onnx).graph.output[0].name;
  return { onnx: t.onnx, node, output, normalisation: t.plan.normalisation, notes: [...t.plan.notes] };
}

/** Walks back from the classifier's output through softmax, reshapes and the bias to the layer
 * with constant weights (MatMul, or a 1x1 convolution as in MobileNet), and returns what it reads. */
function tfBottleneck(tf: TensorFlow, file: string, bytes: Uint8Array, graph: TfGraph): string {
  const { inputNode } = tf;
  const { plan, constOf } = tf.readFrozenGraph(file, bytes, { graph });
  const byName = new Map(plan.nodes.map((n) => [n.name, n]));
  const isConst = (ref: string): boolean => {
    const n = byName.get(inputNode(ref));
    if (!n) return constOf(inputNode(ref)) !== undefined;
    return n.op === 'Const' || (n.op === 'Identity' && isConst(n.input![0]));
  };
  const constShape = (ref: string): number[] | undefined => {
    let n = byName.get(inputNode(ref));
    while (n?.op === 'Identity') n = byName.get(inputNode(n.input![0]));
    return n ? (constOf(n.name) as ConstValue | undefined)?.shape : undefined;
  };
  const dataInputs = (n: TfNode) => (n.input ?? []).filter((i) => !i.startsWith('^') && !isConst(i));
  let name = plan.outputName;
  for (;;) {
    const n = byName.get(name);
    if (!n) throw notFound(file, name);
    const data = dataInputs(n);
    if (TF_HEAD_OPS.has(n.op) || (AFFINE.has(n.op) && data.length === 1)) {
      name = inputNode(data[0]);
      continue;
    }
    const weights = n.input?.[1];
    const shape = weights && isConst(weights) ? constShape(weights) : undefined;
    if ((n.op === 'MatMul' && shape) || (n.op === 'Conv2D' && shape?.[0] === 1 && shape[1] === 1)) {
      name = inputNode(n.input![0]);
      while (TF_PASS_THROUGH.has(byName.get(name)?.op ?? '')) name = inputNode(byName.get(name)!.input![0]);
      return name;
    }
    throw notFound(file, `${n.op} "${n.name}"`);
  }
}

function notFound(file: string, where: string): ModelError {
  return new ModelError(file, `cannot find the classifier layer (stopped at ${where}); name the bottleneck with --bottleneck-node`);
}

export interface Head {
  /** bottleneck size x labels, row-major */
  weights: Float32Array;
  biases: Float32Array;
  labels: string[];
}

/** The output model: the feature graph, flattened, through MatMul + Add + Softmax ("final_result",
 * retrain.py's name), with `metadata` (the preprocessing, the labels) in its metadata_props. The
 * feature graph's bytes are extended as they are, not decoded (see extendModel). */
export function retrainedModel(features: FeatureGraph, head: Head, metadata: Record<string, string>): Uint8Array {
  const size = head.biases.length;
  const nodes: OnnxNode[] = [
    { op: 'Flatten', inputs: [features.output], outputs: ['retrain/bottleneck'], attrs: { axis: 1 } },
    { op: 'MatMul', inputs: ['retrain/bottleneck', 'final_training_ops/weights'], outputs: ['retrain/matmul'] },
    { op: 'Add', inputs: ['retrain/matmul', 'final_training_ops/biases'], outputs: ['retrain/logits'] },
    { op: 'Softmax', inputs: ['retrain/logits'], outputs: ['final_result'], attrs: { axis: -1 } },
  ];
  return extendModel(features.onnx, {
    nodes: nodes.map((n) => ({ ...n, name: n.outputs[0] })),
    initializers: [
      { name: 'final_training_ops/weights', dims: [head.weights.length / size, size], data: head.weights },
      { name: 'final_training_ops/biases', dims: [size], data: head.biases },
    ],
    outputs: [{ name: 'final_result', shape: [batchDimension(features.onnx) ?? 'N', size] }],
    producer: 'classify retrain',
    metadata,
  });
}

/** retrain.py's own output, for tools that load it: the frozen base graph up to the bottleneck,
 * then Reshape to [-1, size], MatMul, Add and Softmax named final_result. */
export async function retrainedGraphDef(file: string, features: FeatureGraph, head: Head): Promise<Uint8Array> {
  const tf = await tensorflow();
  const { plan, versions } = tf.readFrozenGraph(file, readFileSync(file), { outputNode: features.node });
  const size = head.biases.length;
  const T = { type: 'DT_FLOAT' as const };
  const constant = (name: string, dtype: 'DT_FLOAT' | 'DT_INT32', shape: number[], values: Float32Array | Int32Array): TfNode => ({
    name,
    op: 'Const',
    attr: {
      dtype: { type: dtype },
      value: { tensor: { dtype, tensorShape: { dim: shape.map((n) => ({ size: String(n) })) }, tensorContent: Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64') } },
    },
  });
  const nodes: TfNode[] = [
    ...plan.nodes,
    constant('final_training_ops/shape', 'DT_INT32', [2], Int32Array.of(-1, head.weights.length / size)),
    { name: 'final_training_ops/bottleneck', op: 'Reshape', input: [features.node, 'final_training_ops/shape'], attr: { T, Tshape: { type: 'DT_INT32' } } },
    constant('final_training_ops/weights/final_weights', 'DT_FLOAT', [head.weights.length / size, size], head.weights),
    constant('final_training_ops/biases/final_biases', 'DT_FLOAT', [size], head.biases),
    {
      name: 'final_training_ops/Wx_plus_b/MatMul',
      op: 'MatMul',
      input: ['final_training_ops/bottleneck', 'final_training_ops/weights/final_weights'],
      attr: { T, transpose_a: { b: false }, transpose_b: { b: false } },
    },
    { name: 'final_training_ops/Wx_plus_b/add', op: 'Add', input: ['final_training_ops/Wx_plus_b/MatMul', 'final_training_ops/biases/final_biases'], attr: { T } },
    { name: 'final_result', op: 'Softmax', input: ['final_training_ops/Wx_plus_b/add'], attr: { T } },
  ];
  return tf.encodeGraphDef({ node: nodes, versions });
}
