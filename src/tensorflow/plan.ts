// Reading a TensorFlow graph as a classifier: which node to feed, which to read, what lies between,
// and the preprocessing its authors used. Runtime-independent: any engine that runs TF graphs uses it.
import { type AttrJson, type ConstValue, constValue, decodeGraphDef, decodeString, type GraphJson, inputNode, type NodeJson, resolveName, shapeOf } from './graphdef.js';
import type { ImpliedNormalisation } from '../image/preprocessing.js';
import { ModelError } from '../errors.js';

export interface GraphPlan {
  inputName: string;
  outputName: string;
  height: number;
  width: number;
  /** the nodes the output needs, the input turned into a Placeholder, in graph order */
  nodes: NodeJson[];
  /** set when the graph's own preprocessing is skipped (fed after DecodeJpeg) and must be redone */
  normalisation: ImpliedNormalisation;
  notes: string[];
  /** the input and output named by --input-node and --output-node where they are not the ones
   * the graph gives without them (the fingerprint counts only a real choice) */
  chosen: { input?: string; output?: string };
}

export interface PlanOptions {
  inputNode?: string;
  outputNode?: string;
  /** looks up a Const node's value (frozen graphs carry it; TF.js model.json keeps it in shards) */
  constOf: (name: string) => ConstValue | undefined;
}

const ELEMENTWISE_PREPROCESS = new Set(['Sub', 'Mul', 'RealDiv', 'Div', 'Add', 'AddV2']);

export function planGraph(file: string, all: NodeJson[], opts: PlanOptions): GraphPlan {
  const byName = new Map(all.map((n) => [n.name, n]));
  const consumers = new Map<string, NodeJson[]>();
  for (const n of all) {
    for (const i of n.input ?? []) {
      const src = inputNode(i);
      if (!consumers.has(src)) consumers.set(src, []);
      consumers.get(src)!.push(n);
    }
  }
  const notes: string[] = [];
  const known = (name: string) => byName.has(name);
  const outputName = opts.outputNode !== undefined ? resolveName(opts.outputNode, known) : defaultOutput(all, consumers);
  if (!outputName || !byName.has(outputName)) {
    throw new ModelError(file, opts.outputNode ? `no node named "${opts.outputNode}" (--output-node)` : 'cannot tell the output node; name it with --output-node');
  }

  const defaultFeed = (): { inputName: string; height: number; width: number; normalisation?: ImpliedNormalisation; decodes?: boolean } => {
    const placeholders = ancestors(byName, outputName).filter((n) => n.op === 'Placeholder' && n.attr?.dtype?.type === 'DT_FLOAT');
    if (placeholders.length === 1) {
      const [height, width] = imageSizeOf(placeholders[0], file);
      return { inputName: placeholders[0].name, height, width };
    }
    const decodeFeed = afterDecode(all, consumers, opts.constOf);
    if (!decodeFeed) {
      const names = placeholders.map((p) => p.name).join(', ') || 'none';
      throw new ModelError(file, `cannot tell the image input (float placeholders: ${names}); name it with --input-node`);
    }
    return { ...decodeFeed, decodes: true };
  };
  let inputName: string;
  let height: number;
  let width: number;
  let normalisation: ImpliedNormalisation | undefined;
  let defaultInput: string | undefined;
  if (opts.inputNode) {
    const node = byName.get(resolveName(opts.inputNode, known) ?? opts.inputNode);
    if (!node) throw new ModelError(file, `no node named "${opts.inputNode}" (--input-node)`);
    inputName = node.name;
    [height, width] = imageSizeOf(node, file);
    try {
      defaultInput = defaultFeed().inputName;
    } catch {
      // the graph has no input of its own to choose: the named one is a real choice
    }
  } else {
    const feed = defaultFeed();
    ({ inputName, height, width, normalisation } = feed);
    defaultInput = inputName;
    if (feed.decodes) notes.push(`graph decodes JPEG itself; fed after its decode and resize, at "${inputName}"`);
  }
  const chosen = {
    ...(inputName !== defaultInput ? { input: inputName } : {}),
    ...(opts.outputNode !== undefined && outputName !== defaultOutput(all, consumers) ? { output: outputName } : {}),
  };
  normalisation ??=
    height === 299
      ? { mean: [128, 128, 128], std: [128, 128, 128], source: 'Inception v3 default (299 px input)' }
      : { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], source: 'MobileNet default' };

  const needed = new Set(ancestors(byName, outputName, inputName).map((n) => n.name));
  const nodes: NodeJson[] = [];
  for (const n of all) {
    if (!needed.has(n.name)) continue;
    if (n.name === inputName) {
      nodes.push({
        name: n.name,
        op: 'Placeholder',
        attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: { dim: [-1, height, width, 3].map((s) => ({ size: String(s) })) } } },
      });
    } else if (n.op === 'PlaceholderWithDefault') {
      // retrain.py's bottleneck input: always its default here. Identity runs the same and avoids
      // a TF.js 4.22 bug that frees the default tensor while still needed.
      nodes.push({ name: n.name, op: 'Identity', input: n.input, attr: { T: n.attr?.dtype ?? { type: 'DT_FLOAT' } } });
    } else {
      nodes.push(withTfDefaults(n));
    }
  }
  return { inputName, outputName, height, width, nodes, normalisation, notes, chosen };
}

function defaultOutput(all: NodeJson[], consumers: Map<string, NodeJson[]>): string | undefined {
  if (all.some((n) => n.name === 'final_result')) return 'final_result';
  const softmaxes = all.filter((n) => n.op === 'Softmax');
  if (softmaxes.length > 0) return softmaxes[softmaxes.length - 1].name;
  const sinks = all.filter((n) => !consumers.has(n.name) && !['Const', 'NoOp', 'Assert'].includes(n.op));
  return sinks.length === 1 ? sinks[0].name : undefined;
}

/** Nodes `to` depends on (itself included), not looking past `stop`. */
function ancestors(byName: Map<string, NodeJson>, to: string, stop?: string): NodeJson[] {
  const seen = new Set<string>();
  const stack = [to];
  const out: NodeJson[] = [];
  while (stack.length > 0) {
    const name = stack.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const node = byName.get(name);
    if (!node) continue;
    out.push(node);
    if (name === stop) continue;
    for (const i of node.input ?? []) if (!i.startsWith('^')) stack.push(inputNode(i));
  }
  return out;
}

function imageSizeOf(node: NodeJson, file: string): [number, number] {
  const shape = shapeOf(node.attr?.shape?.shape);
  if (shape.length !== 4 || shape[3] !== 3 || !(shape[1] > 0) || !(shape[2] > 0)) {
    throw new ModelError(file, `input "${node.name}" has shape [${shape.join(',')}]; expected [batch, height, width, 3] with a fixed size`);
  }
  return [shape[1], shape[2]];
}

/** Old retrain.py graphs (Inception) start from JPEG bytes: DecodeJpeg, Cast, ExpandDims,
 * ResizeBilinear, then Sub/Mul normalisation. TF.js cannot decode, so feed the tensor after the
 * last normalisation step and redo that step ourselves with the graph's own constants. */
function afterDecode(all: NodeJson[], consumers: Map<string, NodeJson[]>, constOf: PlanOptions['constOf']): { inputName: string; height: number; width: number; normalisation: ImpliedNormalisation } | undefined {
  const resize = all.find((n) => n.op === 'ResizeBilinear' && all.some((d) => d.op === 'DecodeJpeg'));
  if (!resize) return undefined;
  const sizeConst = constOf(inputNode(resize.input?.[1] ?? ''));
  if (!sizeConst || sizeConst.values.length !== 2) return undefined;
  const [height, width] = [...sizeConst.values];
  let mean = 0;
  let scale = 1;
  let feed = resize;
  for (;;) {
    const next = consumers.get(feed.name) ?? [];
    if (next.length !== 1 || !ELEMENTWISE_PREPROCESS.has(next[0].op)) break;
    const operand = constOf(inputNode(next[0].input?.find((i) => inputNode(i) !== feed.name) ?? ''));
    if (!operand || operand.values.length !== 1) break;
    const v = operand.values[0];
    if (next[0].op === 'Sub') mean += v / scale;
    else if (next[0].op === 'Add' || next[0].op === 'AddV2') mean -= v / scale;
    else if (next[0].op === 'Mul') scale *= v;
    else scale /= v;
    feed = next[0];
  }
  // The graph's constants are float32: 1/127.5 comes back as 127.49999...; say 127.5.
  const std = Number((1 / scale).toPrecision(7));
  mean = Number(mean.toPrecision(7));
  return {
    inputName: feed.name,
    height,
    width,
    normalisation: {
      mean: [mean, mean, mean],
      std: [std, std, std],
      source: `the graph's own constants (${feed.name})`,
    },
  };
}

/** Attrs that TensorFlow fills with a default when a graph omits them (graphs older than the attr
 * do); TF.js expects them spelled out. */
const TF_DEFAULTS: Record<string, Record<string, AttrJson>> = {
  Conv2D: { dilations: { list: { i: ['1', '1', '1', '1'] } }, data_format: { s: btoa('NHWC') } },
  DepthwiseConv2dNative: { dilations: { list: { i: ['1', '1', '1', '1'] } }, data_format: { s: btoa('NHWC') } },
  AvgPool: { data_format: { s: btoa('NHWC') } },
  MaxPool: { data_format: { s: btoa('NHWC') } },
  Mean: { keep_dims: { b: false } },
  Max: { keep_dims: { b: false } },
  Sum: { keep_dims: { b: false } },
  ResizeBilinear: { align_corners: { b: false }, half_pixel_centers: { b: false } },
};

export function withTfDefaults(n: NodeJson): NodeJson {
  const defaults = TF_DEFAULTS[n.op];
  return defaults ? { ...n, attr: { ...defaults, ...n.attr } } : n;
}

/** Replaces Dequantize nodes of constant 8-bit weights (graphs shrunk by TensorFlow's
 * quantize_weights, as some retrain.py outputs are) with the float constants they compute, so
 * engines without a Dequantize op run them. MIN_FIRST and MIN_COMBINED agree for quint8. */
export function foldDequantize(nodes: NodeJson[], constOf: PlanOptions['constOf'], define: (name: string, v: ConstValue) => void): NodeJson[] {
  return nodes.map((n) => {
    if (n.op !== 'Dequantize' || n.attr?.T?.type !== 'DT_QUINT8') return n;
    const mode = decodeString(n.attr?.mode?.s) || 'MIN_COMBINED';
    const [q, lo, hi] = (n.input ?? []).map((i) => constOf(inputNode(i)));
    if (!q || !lo || !hi || (mode !== 'MIN_FIRST' && mode !== 'MIN_COMBINED')) return n;
    // As TensorFlow's QuantizedToFloat: the minimum is snapped to a whole number of steps first,
    // which moves every weight of the layer (up to half a step) and shows in the scores.
    const step = (hi.values[0] - lo.values[0]) / 255;
    const min = Math.round(lo.values[0] / Math.fround(step)) * Math.fround(step);
    define(n.name, { dtype: 'float32', shape: q.shape, values: Float32Array.from(q.values, (v) => min + v * step) });
    return { name: n.name, op: 'Const', attr: { dtype: { type: 'DT_FLOAT' } } };
  });
}

/** Rewrites BatchNormWithGlobalNormalization (old Inception graphs; TF.js lacks it) with constant
 * statistics as x * scale + shift, scale = gamma / sqrt(var + eps), shift = beta - mean * scale. */
export function foldGlobalBatchNorm(nodes: NodeJson[], constOf: PlanOptions['constOf'], define: (name: string, v: ConstValue) => void): NodeJson[] {
  return nodes.flatMap((n): NodeJson[] => {
    if (n.op !== 'BatchNormWithGlobalNormalization') return [n];
    const [x, ...rest] = n.input ?? [];
    const [mean, variance, beta, gamma] = rest.map((i) => constOf(inputNode(i)));
    if (!mean || !variance || !beta || !gamma) return [n];
    const eps = n.attr?.variance_epsilon?.f ?? 0;
    const scaled = n.attr?.scale_after_normalization?.b ?? false;
    const scale = Float32Array.from(variance.values, (v, c) => (scaled ? gamma.values[c] : 1) / Math.sqrt(v + eps));
    const shift = Float32Array.from(beta.values, (b, c) => b - mean.values[c] * scale[c]);
    define(`${n.name}/folded_scale`, { dtype: 'float32', shape: [scale.length], values: scale });
    define(`${n.name}/folded_shift`, { dtype: 'float32', shape: [shift.length], values: shift });
    const T: AttrJson = { type: 'DT_FLOAT' };
    return [
      { name: `${n.name}/folded_scale`, op: 'Const', attr: { dtype: T } },
      { name: `${n.name}/folded_shift`, op: 'Const', attr: { dtype: T } },
      { name: `${n.name}/folded_mul`, op: 'Mul', input: [x, `${n.name}/folded_scale`], attr: { T } },
      { name: n.name, op: 'AddV2', input: [`${n.name}/folded_mul`, `${n.name}/folded_shift`], attr: { T } },
    ];
  });
}

export interface FrozenGraph {
  plan: GraphPlan;
  /** a Const's value by node name, folded constants included */
  constOf: (name: string) => ConstValue | undefined;
  define: (name: string, v: ConstValue) => void;
  versions: GraphJson['versions'];
}

/** A frozen GraphDef's bytes decoded; a ModelError naming `file` when they are not one. */
export function decodeFrozenGraph(file: string, bytes: Uint8Array): GraphJson {
  let graph: GraphJson;
  try {
    graph = decodeGraphDef(bytes);
  } catch (err) {
    throw new ModelError(file, `not a TensorFlow GraphDef: ${(err as Error).message}`);
  }
  if (!graph.node?.length) throw new ModelError(file, 'not a TensorFlow GraphDef (no nodes)');
  return graph;
}

/** A frozen GraphDef's bytes -> its plan, with quantized weights and global batch norms folded.
 * `graph`: the bytes already decoded (decodeFrozenGraph), for a caller that reads them twice. */
export function readFrozenGraph(file: string, bytes: Uint8Array, opts: { inputNode?: string; outputNode?: string; graph?: GraphJson }): FrozenGraph {
  const graph = opts.graph ?? decodeFrozenGraph(file, bytes);
  const consts = new Map<string, ConstValue>();
  const constNodes = new Map(graph.node.filter((n) => n.op === 'Const').map((n) => [n.name, n]));
  const constOf = (name: string) => {
    const tensor = constNodes.get(name)?.attr?.value?.tensor;
    if (!consts.has(name) && tensor) consts.set(name, constValue(tensor));
    return consts.get(name);
  };
  const define = (name: string, v: ConstValue) => void consts.set(name, v);
  const nodes = foldGlobalBatchNorm(foldDequantize(graph.node, constOf, define), constOf, define);
  const plan = planGraph(file, nodes, { inputNode: opts.inputNode, outputNode: opts.outputNode, constOf });
  return { plan, constOf, define, versions: graph.versions };
}

/** Op types in `nodes` that `supported` lacks, each with one node that uses it. */
export function unsupportedOps(nodes: NodeJson[], supported: Set<string>): string[] {
  const first = new Map<string, string>();
  for (const n of nodes) if (!supported.has(n.op) && !first.has(n.op)) first.set(n.op, n.name);
  return [...first].map(([op, node]) => `${op} (e.g. node "${node}")`);
}
