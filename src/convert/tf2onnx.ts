// Translates a frozen TensorFlow classifier graph into an ONNX model in process, so frozen
// graphs run on ONNX Runtime. Semantics stay NHWC: the ONNX model takes the same NHWC input,
// and only convolutions and pools are wrapped in transposes, which ONNX Runtime's layout
// optimizer cancels between neighbours. Constants are folded first and batch norms (folded or
// not) are merged into the convolution before them, so the runtime sees fused Conv+bias.
import { type ConstValue, decodeString, type GraphJson, inputNode, type NodeJson } from '../tensorflow/graphdef.js';
import { type AttributeValue, type OnnxNode, type OnnxTensor, encodeModel } from '../proto/onnx.js';
import { ModelError } from '../errors.js';
import { type GraphPlan, readFrozenGraph, unsupportedOps } from '../tensorflow/plan.js';

/** TF ops this translator covers (Const and Placeholder are handled as values and inputs). */
export const TRANSLATED_OPS = new Set([
  'Const', 'Placeholder', 'Identity', 'CheckNumerics', 'StopGradient', 'Snapshot', 'Conv2D', 'DepthwiseConv2dNative', 'BiasAdd', 'Relu', 'Relu6', 'Add', 'AddV2',
  'Mul', 'Sub', 'RealDiv', 'Maximum', 'Minimum', 'Rsqrt', 'Sqrt', 'AvgPool', 'MaxPool', 'Mean', 'Pad', 'ConcatV2',
  'Reshape', 'Squeeze', 'Softmax', 'MatMul', 'FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3', 'Tanh', 'Sigmoid',
]);

export interface Translation {
  onnx: Uint8Array;
  plan: GraphPlan;
  /** nodes folded into constants or merged into convolutions */
  folded: number;
  ms: number;
}

/** Throws ModelError naming the ops outside the set, so the caller can fall back to TF.js. */
export function translateFrozenGraph(
  file: string,
  bytes: Uint8Array,
  /** `metadata`: what the model file's metadata_props say, from the plan (its normalisation);
   * `graph`: the bytes already decoded */
  opts: { inputNode?: string; outputNode?: string; metadata?: (plan: GraphPlan) => Record<string, string>; graph?: GraphJson },
): Translation {
  const start = performance.now();
  const { plan, constOf, define } = readFrozenGraph(file, bytes, opts);
  const missing = unsupportedOps(plan.nodes, TRANSLATED_OPS);
  if (missing.length > 0) throw new UntranslatableError(file, missing);

  const t = new Translator(plan, constOf, define);
  const onnx = t.build(opts.metadata?.(plan));
  return { onnx, plan, folded: t.folded, ms: performance.now() - start };
}

export class UntranslatableError extends ModelError {
  constructor(
    file: string,
    readonly ops: string[],
  ) {
    super(file, `no ONNX translation for: ${ops.join(', ')}`);
  }
}

type Const = ConstValue & { values: Float32Array | Int32Array | Uint8Array };
const ref = (input: string) => (input.endsWith(':0') ? input.slice(0, -2) : input);

class Translator {
  private readonly out: OnnxNode[] = [];
  private readonly initializers: OnnxTensor[] = [];
  private readonly emitted = new Set<string>();
  /** TF tensor name -> the ONNX tensor holding it (aliases from Identity, fusions) */
  private readonly alias = new Map<string, string>();
  folded = 0;
  private readonly nodes: Map<string, NodeJson>;
  private readonly shapes = new Map<string, (number | string)[] | undefined>();

  constructor(
    private readonly plan: GraphPlan,
    private readonly constOf: (name: string) => ConstValue | undefined,
    private readonly define: (name: string, v: ConstValue) => void,
  ) {
    this.nodes = new Map(plan.nodes.map((n) => [n.name, n]));
  }

  build(metadata?: Record<string, string>): Uint8Array {
    const order = topological(this.plan.nodes);
    const consumers = new Map<string, number>();
    for (const n of order) for (const i of n.input ?? []) consumers.set(inputNode(i), (consumers.get(inputNode(i)) ?? 0) + 1);
    const skip = new Set<string>();
    const consumerNodes = new Map<string, NodeJson[]>();
    for (const n of order) {
      for (const i of n.input ?? []) {
        if (i.startsWith('^')) continue;
        const src = inputNode(i);
        if (!consumerNodes.has(src)) consumerNodes.set(src, []);
        consumerNodes.get(src)!.push(n);
      }
    }
    // Constants first: a batch norm's scale may come after its convolution in graph order, and
    // it can be merged into the convolution only once it is known (OpenCV also misreads a
    // per-channel Mul left in NHWC).
    for (const n of order) if (n.name !== this.plan.inputName && this.foldConstant(n)) skip.add(n.name);
    for (const n of order) {
      if (skip.has(n.name) || n.name === this.plan.inputName) continue;
      if (n.op === 'Conv2D' || n.op === 'DepthwiseConv2dNative') {
        this.conv(n, consumerNodes, consumers, skip);
        continue;
      }
      this.translate(n);
    }
    const output = this.tensor(this.plan.outputName);
    return encodeModel({
      name: 'translated_from_tensorflow',
      producer: 'classify tf2onnx',
      // Opset 10: the last whose Clip, Squeeze and Pad take attributes, the forms OpenCV 4.6's
      // importer reads (opset 13 moved them to inputs).
      opset: 10,
      nodes: this.out,
      initializers: this.initializers,
      inputs: [{ name: this.plan.inputName, shape: ['N', this.plan.height, this.plan.width, 3] }],
      // A graph output without a shape fails ONNX's checker and OpenCV's importer.
      outputs: [{ name: output, shape: this.shapeOf(this.plan.outputName) }],
      metadata,
    });
  }

  /** The static shape of a TF tensor (batch as "N"), traced through the ops a classifier's head
   * is made of; undefined where it cannot be told without running the graph. */
  private shapeOf(tfRef: string): (number | string)[] | undefined {
    const name = inputNode(tfRef);
    if (!this.shapes.has(name)) this.shapes.set(name, this.traceShape(name));
    return this.shapes.get(name);
  }

  private traceShape(name: string): (number | string)[] | undefined {
    const n = this.nodes.get(name);
    if (!n) return undefined;
    if (n.name === this.plan.inputName) return ['N', this.plan.height, this.plan.width, 3];
    const ins = (n.input ?? []).filter((i) => !i.startsWith('^'));
    const data = ins.find((i) => !this.value(i));
    switch (n.op) {
      case 'Softmax':
      case 'Identity':
      case 'Relu':
      case 'Relu6':
      case 'Tanh':
      case 'Sigmoid':
      case 'BiasAdd':
      case 'Add':
      case 'AddV2':
      case 'Sub':
      case 'Mul':
      case 'FusedBatchNorm':
      case 'FusedBatchNormV2':
      case 'FusedBatchNormV3':
        // elementwise with a per-channel constant, or a residual sum of two equal shapes
        return data && ins.every((i) => (this.value(i)?.shape.length ?? 0) <= 1) ? this.shapeOf(data) : undefined;
      case 'Conv2D':
      case 'DepthwiseConv2dNative':
      case 'AvgPool':
      case 'MaxPool': {
        const x = this.shapeOf(ins[0]);
        const pool = n.op.endsWith('Pool');
        const filter = pool ? undefined : this.value(ins[1])?.shape;
        if (!x || x.length !== 4 || typeof x[1] !== 'number' || typeof x[2] !== 'number' || (!pool && filter?.length !== 4)) return undefined;
        const [kh, kw] = pool ? listI(n, 'ksize').slice(1, 3) : filter!;
        const [sh, sw] = listI(n, 'strides').slice(1, 3);
        const [dh, dw] = listI(n, 'dilations', [1, 1, 1, 1]).slice(1, 3);
        const same = decodeString(n.attr?.padding?.s) === 'SAME';
        const out = (size: number, k: number, s: number, d: number) => Math.ceil((same ? size : size - (k - 1) * d) / s);
        const channels = pool ? x[3] : n.op === 'Conv2D' ? filter![3] : filter![2] * filter![3];
        return [x[0], out(x[1], kh, sh, dh), out(x[2], kw, sw, dw), channels];
      }
      case 'MatMul': {
        const w = this.value(ins[1]);
        const a = this.shapeOf(ins[0]);
        if (!w || w.shape.length !== 2 || !a || a.length !== 2 || n.attr?.transpose_a?.b) return undefined;
        return [a[0], w.shape[n.attr?.transpose_b?.b ? 0 : 1]];
      }
      case 'ConcatV2': {
        const parts = ins.slice(0, -1).map((i) => this.shapeOf(i));
        const axis = this.value(ins[ins.length - 1])?.values[0];
        if (axis === undefined || parts.some((p) => !p || typeof p[(axis + p.length) % p.length] !== 'number')) return undefined;
        const at = (axis + parts[0]!.length) % parts[0]!.length;
        return parts[0]!.map((d, i) => (i === at ? parts.reduce((sum, p) => sum + (p![i] as number), 0) : d));
      }
      case 'Mean':
      case 'Squeeze': {
        const x = this.shapeOf(ins[0]);
        const axes = n.op === 'Mean' ? this.value(ins[1])?.values : listI(n, 'squeeze_dims', listI(n, 'axis', []));
        if (!x || !axes || axes.length === 0 || (n.op === 'Mean' && n.attr?.keep_dims?.b)) return undefined;
        const drop = new Set([...axes].map((a) => (a < 0 ? a + x.length : a)));
        return x.filter((_, i) => !drop.has(i));
      }
      case 'Reshape': {
        const shape = this.value(ins[1])?.values;
        if (!shape || shape.length === 0 || [...shape].slice(1).some((d) => d < 0)) return undefined;
        return [...shape].map((d, i) => (i === 0 && d < 0 ? 'N' : d));
      }
      default:
        return undefined;
    }
  }

  private tensor(tfRef: string): string {
    const name = ref(tfRef);
    return this.alias.get(name) ?? name;
  }

  private value(tfRef: string): Const | undefined {
    return this.constOf(inputNode(this.tensor(tfRef))) as Const | undefined;
  }

  /** An initializer for a TF constant, emitted once. */
  private input(tfRef: string): string {
    const name = this.tensor(tfRef);
    const v = this.constOf(name);
    if (v && !this.emitted.has(name)) {
      this.emitted.add(name);
      this.initializers.push({ name, dims: v.shape, data: v.dtype === 'float32' ? (v.values as Float32Array) : BigInt64Array.from(v.values, (x) => BigInt(x)) });
    }
    return name;
  }

  private addInit(name: string, dims: number[], data: Float32Array | BigInt64Array): string {
    this.initializers.push({ name, dims, data });
    return name;
  }

  private emit(op: string, inputs: string[], output: string, attrs?: OnnxNode['attrs']): string {
    this.out.push({ op, inputs, outputs: [output], attrs, name: output });
    return output;
  }

  /** Evaluates nodes whose inputs are all constant. */
  private foldConstant(n: NodeJson): boolean {
    if (n.op === 'Const') return true;
    const ins = (n.input ?? []).filter((i) => !i.startsWith('^'));
    const vals = ins.map((i) => this.value(i));
    if (vals.length === 0 || vals.some((v) => !v || v.dtype !== 'float32')) {
      if (n.op === 'Identity' && ins.length === 1) {
        this.alias.set(n.name, this.tensor(ins[0]));
        return true;
      }
      return false;
    }
    const f = vals.map((v) => v!.values as Float32Array);
    let result: { shape: number[]; values: Float32Array } | undefined;
    const unary = (fn: (x: number) => number) => ({ shape: vals[0]!.shape, values: f[0].map(fn) });
    switch (n.op) {
      case 'Identity':
        result = { shape: vals[0]!.shape, values: f[0] };
        break;
      case 'Rsqrt':
        result = unary((x) => 1 / Math.sqrt(x));
        break;
      case 'Sqrt':
        result = unary(Math.sqrt);
        break;
      case 'Add':
      case 'AddV2':
      case 'BiasAdd':
        result = broadcast(vals[0]!, vals[1]!, (a, b) => a + b);
        break;
      case 'Sub':
        result = broadcast(vals[0]!, vals[1]!, (a, b) => a - b);
        break;
      case 'Mul':
        result = broadcast(vals[0]!, vals[1]!, (a, b) => a * b);
        break;
      case 'RealDiv':
        result = broadcast(vals[0]!, vals[1]!, (a, b) => a / b);
        break;
    }
    if (!result) return false;
    this.define(n.name, { dtype: 'float32', shape: result.shape, values: result.values });
    this.folded++;
    return true;
  }

  /** Conv2D / DepthwiseConv2dNative, with the per-channel scales and shifts after it merged in. */
  private conv(n: NodeJson, consumerNodes: Map<string, NodeJson[]>, consumers: Map<string, number>, skip: Set<string>): void {
    const filter = this.value(n.input![1]);
    if (!filter || filter.shape.length !== 4) throw new Error(`${n.name}: filter must be a constant`);
    const [kh, kw, cin, k3] = filter.shape;
    const depthwise = n.op === 'DepthwiseConv2dNative';
    const cout = depthwise ? cin * k3 : k3;
    // TF filter [kh, kw, cin, cout|mult] -> ONNX [cout, cin/group, kh, kw]
    const w = new Float32Array(cout * (depthwise ? 1 : cin) * kh * kw);
    const src = filter.values as Float32Array;
    for (let y = 0; y < kh; y++)
      for (let x = 0; x < kw; x++)
        for (let c = 0; c < cin; c++)
          for (let k = 0; k < k3; k++) {
            const v = src[((y * kw + x) * cin + c) * k3 + k];
            if (depthwise) w[((c * k3 + k) * kh + y) * kw + x] = v;
            else w[((k * cin + c) * kh + y) * kw + x] = v;
          }
    const bias = new Float32Array(cout);
    const perChannel = (v: Const | undefined) =>
      v && v.dtype === 'float32' && (v.values.length === 1 || (v.values.length === cout && v.shape[v.shape.length - 1] === cout))
        ? (c: number) => (v.values as Float32Array)[v.values.length === 1 ? 0 : c]
        : undefined;
    const perOut = cout > 0 ? w.length / cout : 0;

    // Merge the chain of per-channel affine ops that only this conv feeds.
    let last = n.name;
    for (;;) {
      if ((consumers.get(last) ?? 0) !== 1) break;
      const next = consumerNodes.get(last)?.[0];
      if (!next) break;
      const other = (next.input ?? []).find((i) => inputNode(i) !== last);
      const k = other !== undefined ? perChannel(this.value(other)) : undefined;
      if ((next.op === 'Mul') && k) {
        for (let c = 0; c < cout; c++) {
          const s = k(c);
          for (let i = 0; i < perOut; i++) w[c * perOut + i] *= s;
          bias[c] *= s;
        }
      } else if ((next.op === 'Add' || next.op === 'AddV2' || next.op === 'BiasAdd') && k) {
        for (let c = 0; c < cout; c++) bias[c] += k(c);
      } else if (next.op === 'Sub' && k && inputNode(next.input![0]) === last) {
        for (let c = 0; c < cout; c++) bias[c] -= k(c);
      } else if (next.op.startsWith('FusedBatchNorm') && decodeString(next.attr?.data_format?.s || '') !== 'NCHW') {
        const [scale, offset, mean, variance] = next.input!.slice(1, 5).map((i) => this.value(i));
        if (!scale || !offset || !mean || !variance) break;
        const eps = next.attr?.epsilon?.f ?? 1e-3;
        for (let c = 0; c < cout; c++) {
          const s = (scale.values as Float32Array)[c] / Math.sqrt((variance.values as Float32Array)[c] + eps);
          for (let i = 0; i < perOut; i++) w[c * perOut + i] *= s;
          bias[c] = (bias[c] - (mean.values as Float32Array)[c]) * s + (offset.values as Float32Array)[c];
        }
      } else break;
      skip.add(next.name);
      this.folded++;
      last = next.name;
    }

    const strides = listI(n, 'strides');
    const dilations = listI(n, 'dilations', [1, 1, 1, 1]);
    const pad = decodeString(n.attr?.padding?.s);
    const x = this.emit('Transpose', [this.tensor(n.input![0])], `${n.name}/to_nchw`, { perm: [0, 3, 1, 2] });
    const wName = this.addInit(`${n.name}/weights_oihw`, [cout, depthwise ? 1 : cin, kh, kw], w);
    const bName = this.addInit(`${n.name}/bias`, [cout], bias);
    // TF's SAME is ONNX's SAME_UPPER (the odd pixel of padding goes after), except that ONNX
    // Runtime refuses auto_pad with dilation. TF allows dilation only at stride 1, where the
    // padding does not depend on the input size: spell it out.
    const dilated = dilations[1] > 1 || dilations[2] > 1;
    const padding: Record<string, AttributeValue> =
      pad === 'SAME' && dilated
        ? { pads: [((kh - 1) * dilations[1]) >> 1, ((kw - 1) * dilations[2]) >> 1, ((kh - 1) * dilations[1] + 1) >> 1, ((kw - 1) * dilations[2] + 1) >> 1] }
        : { auto_pad: pad === 'SAME' ? 'SAME_UPPER' : 'VALID' };
    const y = this.emit('Conv', [x, wName, bName], `${n.name}/nchw`, {
      strides: [strides[1], strides[2]],
      dilations: [dilations[1], dilations[2]],
      kernel_shape: [kh, kw],
      group: depthwise ? cin : 1,
      ...padding,
    });
    this.emit('Transpose', [y], last, { perm: [0, 2, 3, 1] });
  }

  private translate(n: NodeJson): void {
    const ins = (n.input ?? []).filter((i) => !i.startsWith('^'));
    const x = () => this.input(ins[0]);
    switch (n.op) {
      case 'Identity':
      case 'CheckNumerics':
      case 'StopGradient':
      case 'Snapshot':
        // Pass-through at inference: the output is the input.
        this.alias.set(n.name, this.tensor(ins[0]));
        return;
      case 'Relu':
      case 'Tanh':
      case 'Sigmoid':
      case 'Sqrt':
        this.emit(n.op, [x()], n.name);
        return;
      case 'Rsqrt':
        this.emit('Reciprocal', [this.emit('Sqrt', [x()], `${n.name}/sqrt`)], n.name);
        return;
      case 'Relu6':
        // Clip in its opset-6 form (bounds as attributes): the one OpenCV 4.6 reads, and ONNX
        // Runtime fuses it into the convolution before it as it does the opset-13 form.
        this.emit('Clip', [x()], n.name, { min: { float: 0 }, max: { float: 6 } });
        return;
      case 'Softmax':
        this.emit('Softmax', [x()], n.name, { axis: -1 });
        return;
      case 'Add':
      case 'AddV2':
      case 'BiasAdd':
      case 'Mul':
      case 'Sub':
      case 'RealDiv':
      case 'Maximum':
      case 'Minimum': {
        const op = { Add: 'Add', AddV2: 'Add', BiasAdd: 'Add', Mul: 'Mul', Sub: 'Sub', RealDiv: 'Div', Maximum: 'Max', Minimum: 'Min' }[n.op]!;
        this.emit(op, [this.input(ins[0]), this.input(ins[1])], n.name);
        return;
      }
      case 'FusedBatchNorm':
      case 'FusedBatchNormV2':
      case 'FusedBatchNormV3': {
        const [scale, offset, mean, variance] = ins.slice(1, 5).map((i) => this.value(i));
        if (!scale || !offset || !mean || !variance) throw new Error(`${n.name}: batch norm statistics must be constant`);
        const eps = n.attr?.epsilon?.f ?? 1e-3;
        const s = Float32Array.from(scale.values as Float32Array, (g, c) => g / Math.sqrt((variance.values as Float32Array)[c] + eps));
        const b = Float32Array.from(offset.values as Float32Array, (o, c) => o - (mean.values as Float32Array)[c] * s[c]);
        const scaled = this.emit('Mul', [x(), this.addInit(`${n.name}/scale`, [s.length], s)], `${n.name}/scaled`);
        this.emit('Add', [scaled, this.addInit(`${n.name}/shift`, [b.length], b)], n.name);
        return;
      }
      case 'AvgPool':
      case 'MaxPool': {
        const k = listI(n, 'ksize');
        const s = listI(n, 'strides');
        const t = this.emit('Transpose', [x()], `${n.name}/to_nchw`, { perm: [0, 3, 1, 2] });
        const y = this.emit(n.op === 'AvgPool' ? 'AveragePool' : 'MaxPool', [t], `${n.name}/nchw`, {
          kernel_shape: [k[1], k[2]],
          strides: [s[1], s[2]],
          auto_pad: decodeString(n.attr?.padding?.s) === 'SAME' ? 'SAME_UPPER' : 'VALID',
        });
        this.emit('Transpose', [y], n.name, { perm: [0, 2, 3, 1] });
        return;
      }
      case 'Mean': {
        const axes = this.intConst(ins[1], n);
        this.emit('ReduceMean', [x()], n.name, { axes, keepdims: n.attr?.keep_dims?.b ? 1 : 0 });
        return;
      }
      case 'Pad': {
        const p = this.intConst(ins[1], n);
        const rank = p.length / 2;
        const pads = [...Array.from({ length: rank }, (_, i) => p[2 * i]), ...Array.from({ length: rank }, (_, i) => p[2 * i + 1])];
        this.emit('Pad', [x()], n.name, { mode: 'constant', pads });
        return;
      }
      case 'ConcatV2': {
        const [axis] = this.intConst(ins[ins.length - 1], n);
        this.emit('Concat', ins.slice(0, -1).map((i) => this.input(i)), n.name, { axis });
        return;
      }
      case 'Reshape': {
        const shape = this.intConst(ins[1], n);
        this.emit('Reshape', [x(), this.addInit(`${n.name}/shape`, [shape.length], BigInt64Array.from(shape, BigInt))], n.name);
        return;
      }
      case 'Squeeze': {
        const axes = listI(n, 'squeeze_dims', listI(n, 'axis', []));
        this.emit('Squeeze', [x()], n.name, axes.length > 0 ? { axes } : undefined);
        return;
      }
      case 'MatMul': {
        let a = this.input(ins[0]);
        let b = this.input(ins[1]);
        if (n.attr?.transpose_a?.b) a = this.emit('Transpose', [a], `${n.name}/a_t`, { perm: [1, 0] });
        if (n.attr?.transpose_b?.b) b = this.emit('Transpose', [b], `${n.name}/b_t`, { perm: [1, 0] });
        this.emit('MatMul', [a, b], n.name);
        return;
      }
      default:
        throw new Error(`${n.name}: op ${n.op} has no translation`);
    }
  }

  private intConst(tfRef: string, n: NodeJson): number[] {
    const v = this.constOf(inputNode(this.tensor(tfRef)));
    if (!v) throw new Error(`${n.name}: ${n.op} needs a constant ${tfRef}`);
    return [...v.values];
  }
}

function listI(n: NodeJson, name: string, def?: number[]): number[] {
  const l = n.attr?.[name]?.list?.i;
  if (l && l.length > 0) return l.map(Number);
  if (def) return def;
  throw new Error(`${n.name}: missing attribute ${name}`);
}

/** numpy-style broadcasting of two constant float tensors. */
function broadcast(a: ConstValue, b: ConstValue, fn: (x: number, y: number) => number): { shape: number[]; values: Float32Array } {
  const rank = Math.max(a.shape.length, b.shape.length);
  const pa = [...Array(rank - a.shape.length).fill(1), ...a.shape];
  const pb = [...Array(rank - b.shape.length).fill(1), ...b.shape];
  const shape = pa.map((d, i) => {
    if (d !== pb[i] && d !== 1 && pb[i] !== 1) throw new Error(`cannot broadcast [${a.shape}] with [${b.shape}]`);
    return Math.max(d, pb[i]);
  });
  const total = shape.reduce((x, y) => x * y, 1);
  const out = new Float32Array(total);
  const av = a.values as Float32Array;
  const bv = b.values as Float32Array;
  const idx = new Array(rank).fill(0);
  for (let i = 0; i < total; i++) {
    let ia = 0;
    let ib = 0;
    for (let d = 0; d < rank; d++) {
      ia = ia * pa[d] + (pa[d] === 1 ? 0 : idx[d]);
      ib = ib * pb[d] + (pb[d] === 1 ? 0 : idx[d]);
    }
    out[i] = fn(av[ia], bv[ib]);
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return { shape, values: out };
}

/** Graph order is usually topological in frozen graphs, but not promised. */
function topological(nodes: NodeJson[]): NodeJson[] {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const done = new Set<string>();
  const out: NodeJson[] = [];
  const visit = (n: NodeJson) => {
    const stack: [NodeJson, number][] = [[n, 0]];
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      const [node, i] = top;
      if (done.has(node.name)) {
        stack.pop();
        continue;
      }
      const inputs = node.input ?? [];
      if (i < inputs.length) {
        top[1]++;
        const dep = byName.get(inputNode(inputs[i]));
        if (dep && !done.has(dep.name)) stack.push([dep, 0]);
      } else {
        done.add(node.name);
        out.push(node);
        stack.pop();
      }
    }
  };
  for (const n of nodes) visit(n);
  return out;
}
