// ONNX model files: writing one (the translator's output), reading a model's metadata, and adding
// to a model already encoded. Writing and decoding whole models go through ONNX's own schema with
// protobufjs; reading metadata and adding to a model walk protobuf's wire format by hand, so that
// they need neither protobufjs nor the schema (about 35 ms to load and parse).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Root, Type } from 'protobufjs';

/** ONNX's own onnx.proto, vendored (src/proto/vendor/README.md says which version and whence).
 * The same path from src/proto/ and dist/proto/, which sit side by side. */
const SCHEMA = fileURLToPath(new URL('../../src/proto/vendor/onnx/onnx.proto', import.meta.url));

/** The field numbers (onnx.proto) of what is read and written here by hand, message by message;
 * test/proto.test.ts holds them to the schema. */
export const FIELDS = {
  'onnx.ModelProto': { producer_name: 2, graph: 7, metadata_props: 14 },
  'onnx.GraphProto': { node: 1, initializer: 5, input: 11, output: 12 },
  'onnx.NodeProto': { input: 1, output: 2, name: 3, op_type: 4, attribute: 5 },
  'onnx.AttributeProto': { name: 1, f: 2, i: 3, s: 4, t: 5, floats: 7, ints: 8, type: 20 },
  'onnx.TensorProto': { dims: 1, data_type: 2, name: 8, raw_data: 9 },
  'onnx.ValueInfoProto': { name: 1, type: 2 },
  'onnx.TypeProto': { tensor_type: 1 },
  'onnx.TypeProto.Tensor': { elem_type: 1, shape: 2 },
  'onnx.TensorShapeProto': { dim: 1 },
  'onnx.TensorShapeProto.Dimension': { dim_value: 1, dim_param: 2 },
  'onnx.StringStringEntryProto': { key: 1, value: 2 },
} as const;
const F = FIELDS;

let schema: { root: Root; ModelProto: Type } | undefined;
/** ONNX's schema, parsed at its first use. */
export function onnxSchema(): { root: Root; ModelProto: Type } {
  if (!schema) {
    const { Root } = createRequire(import.meta.url)('protobufjs') as typeof import('protobufjs');
    const root = new Root().loadSync(SCHEMA, { keepCase: true });
    schema = { root, ModelProto: root.lookupType('onnx.ModelProto') };
  }
  return schema;
}

export const TensorType = { FLOAT: 1, UINT8: 2, INT32: 6, INT64: 7 } as const;
const AttributeType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

/** A number is an INT attribute when it is whole; `{ float }` says FLOAT whatever its value. */
export type AttributeValue = number | string | number[] | { float: number } | { floats: number[] } | OnnxTensor;

export interface OnnxTensor {
  name: string;
  dims: number[];
  data: Float32Array | Int32Array | BigInt64Array;
}

export interface OnnxNode {
  op: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  attrs?: Record<string, AttributeValue>;
}

export interface OnnxValueInfo {
  name: string;
  elemType?: number;
  /** a number for a fixed size, a string for a named dynamic one (batch); absent: unknown */
  shape?: (number | string)[];
}

export interface OnnxGraph {
  name: string;
  nodes: OnnxNode[];
  initializers: OnnxTensor[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  opset?: number;
  metadata?: Record<string, string>;
  producer?: string;
}

function tensorProto(t: OnnxTensor) {
  const dataType =
    t.data instanceof Float32Array ? TensorType.FLOAT : t.data instanceof Int32Array ? TensorType.INT32 : TensorType.INT64;
  const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return { name: t.name, dims: t.dims, data_type: dataType, raw_data: bytes };
}

function attributeProto(name: string, value: AttributeValue) {
  if (typeof value === 'number') {
    return Number.isInteger(value) ? { name, type: AttributeType.INT, i: value } : { name, type: AttributeType.FLOAT, f: value };
  }
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: Buffer.from(value) };
  if (Array.isArray(value)) return { name, type: AttributeType.INTS, ints: value };
  if ('float' in value) return { name, type: AttributeType.FLOAT, f: value.float };
  if ('floats' in value) return { name, type: AttributeType.FLOATS, floats: value.floats };
  return { name, type: AttributeType.TENSOR, t: tensorProto(value) };
}

function valueInfo(v: OnnxValueInfo) {
  return {
    name: v.name,
    type: {
      tensor_type: {
        elem_type: v.elemType ?? TensorType.FLOAT,
        ...(v.shape ? { shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } : {}),
      },
    },
  };
}

/** A node as ONNX's NodeProto (protobuf-JSON form), e.g. to add to a decoded model. */
export function nodeProto(n: OnnxNode, i = 0) {
  return {
    op_type: n.op,
    name: n.name ?? `${n.op}_${i}`,
    input: n.inputs,
    output: n.outputs,
    attribute: Object.entries(n.attrs ?? {}).map(([k, v]) => attributeProto(k, v)),
  };
}

export { tensorProto };

/** Serialises a graph as an ONNX model file's bytes. */
export function encodeModel(g: OnnxGraph): Uint8Array {
  const model = {
    ir_version: 7,
    producer_name: g.producer ?? 'classify',
    opset_import: [{ domain: '', version: g.opset ?? 13 }],
    metadata_props: Object.entries(g.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: {
      name: g.name,
      node: g.nodes.map(nodeProto),
      initializer: g.initializers.map(tensorProto),
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
    },
  };
  return encodeModelProto(model);
}

/** A whole ModelProto, graph and weights, in protobuf-JSON form with ONNX's field names (bytes as
 * Uint8Array, 64-bit integers as numbers): for rewriting a model, e.g. adding an output. */
export type ModelJson = Record<string, unknown> & { graph: GraphJson; metadata_props?: { key: string; value: string }[]; opset_import?: { domain?: string; version: number }[] };
export interface GraphJson {
  name?: string;
  node: NodeJson[];
  initializer: (Record<string, unknown> & { name: string; dims?: number[] })[];
  input: ValueInfoJson[];
  output: ValueInfoJson[];
  value_info?: ValueInfoJson[];
}
export interface NodeJson {
  op_type: string;
  name?: string;
  input: string[];
  output: string[];
  attribute?: (Record<string, unknown> & { name: string; ints?: number[]; t?: { dims?: number[] } })[];
}
export interface ValueInfoJson {
  name: string;
  type?: { tensor_type?: { elem_type?: number; shape?: { dim?: { dim_value?: number; dim_param?: string }[] } } };
}

export function decodeModelProto(bytes: Uint8Array): ModelJson {
  const { ModelProto } = onnxSchema();
  const json = ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, arrays: true }) as ModelJson;
  if (!json.graph) throw new Error('no graph');
  for (const key of ['node', 'initializer', 'input', 'output'] as const) json.graph[key] ??= [];
  return json;
}

export function encodeModelProto(model: object): Uint8Array {
  const { ModelProto } = onnxSchema();
  const err = ModelProto.verify(model);
  if (err) throw new Error(`internal error building ONNX model: ${err}`);
  return ModelProto.encode(ModelProto.fromObject(model)).finish();
}

/** A model's metadata_props (key/value strings, e.g. preprocessing hints), from its bytes. */
export function decodeMetadata(bytes: Uint8Array): Record<string, string> {
  return scanMetadata((at, length) => bytes.subarray(at, at + length), bytes.length);
}

/** A model file's metadata_props, read without reading the model: only the top-level fields'
 * headers and the metadata itself, a few small reads whatever the model's size (the graph and
 * its weights, nearly all of the file, are skipped over unread). Throws for a file that is not
 * a protobuf message. */
export function readMetadata(file: string): Record<string, string> {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    return scanMetadata((at, length) => {
      const buf = Buffer.alloc(Math.max(0, Math.min(length, size - at)));
      let got = 0;
      for (let n = -1; got < buf.length && n !== 0; got += n) n = readSync(fd, buf, got, buf.length - got, at + got);
      return buf.subarray(0, got);
    }, size);
  } finally {
    closeSync(fd);
  }
}

/** Walks a ModelProto's top-level fields, decoding metadata_props and skipping everything else
 * by its length. */
function scanMetadata(read: (at: number, length: number) => Uint8Array, size: number): Record<string, string> {
  const out: Record<string, string> = {};
  walkFields(read, size, (field, at, length) => {
    if (field !== F['onnx.ModelProto'].metadata_props) return;
    const entry = fields(read(at, length));
    const text = (no: number) => entry.filter((f) => f.field === no).map((f) => Buffer.from(f.value).toString('utf8')).pop();
    const key = text(F['onnx.StringStringEntryProto'].key);
    if (key !== undefined) out[key] = text(F['onnx.StringStringEntryProto'].value) ?? '';
  });
  return out;
}

/** Calls `visit` with each top-level field of a protobuf message of `size` bytes, read through
 * `read` (a few bytes at a time: a field's value is read only by a visitor that wants it): its
 * number, where its value starts, the value's length (0 but for a length-delimited field), where
 * the field starts, and a varint's value. Throws for bytes that are not a protobuf message. */
function walkFields(read: (at: number, length: number) => Uint8Array, size: number, visit: (field: number, at: number, length: number, start: number, n?: number) => void): void {
  let at = 0;
  // A varint is at most 10 bytes; read a little ahead and decode from that window.
  const varint = (): number => {
    const window = read(at, 10);
    let value = 0;
    for (let i = 0; i < window.length; i++) {
      value += (window[i] & 0x7f) * 2 ** (7 * i);
      if ((window[i] & 0x80) === 0) {
        at += i + 1;
        return value;
      }
    }
    throw new Error(`truncated varint at offset ${at}`);
  };
  while (at < size) {
    const start = at;
    const tag = varint();
    const [field, wireType] = [Math.floor(tag / 8), tag % 8];
    let [length, n]: [number, number | undefined] = [0, undefined];
    if (wireType === 0) n = varint();
    else if (wireType === 1 || wireType === 5) at += wireType === 1 ? 8 : 4;
    else if (wireType === 2) length = varint();
    else throw new Error(`invalid wire type ${wireType} at offset ${start}`);
    if (field === 0) throw new Error(`invalid field number 0 at offset ${start}`);
    if (at + length > size) throw new Error(`field ${field} at offset ${start} runs past the end of the file`);
    visit(field, at, length, start, n);
    at += length;
  }
}

interface Field {
  field: number;
  /** the field's bytes, tag included */
  whole: Uint8Array;
  /** a length-delimited field's contents */
  value: Uint8Array;
  /** a varint's value */
  n?: number;
}

/** A message's top-level fields, in order. */
function fields(bytes: Uint8Array): Field[] {
  const out: Field[] = [];
  walkFields(
    (at, length) => bytes.subarray(at, at + length),
    bytes.length,
    (field, at, length, start, n) => out.push({ field, whole: bytes.subarray(start, at + length), value: bytes.subarray(at, at + length), n }),
  );
  return out;
}

// Writing protobuf's wire format, as protobufjs writes ONNX's proto2 schema: fields in the order
// of their numbers, repeated numbers unpacked, int64 as 64-bit two's complement.
type Bytes = Uint8Array | number[];
const varint = (value: number): number[] => {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(value));
  for (; v > 127n; v >>= 7n) out.push(Number(v & 127n) | 128);
  out.push(Number(v));
  return out;
};
const join = (parts: Bytes[]): Buffer => Buffer.concat(parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p))));
const int = (no: number, v: number): number[] => [...varint(no * 8), ...varint(v)];
const float = (no: number, v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return join([varint(no * 8 + 5), b]);
};
const delimited = (no: number, payload: Uint8Array): Buffer => join([varint(no * 8 + 2), varint(payload.length), payload]);
const text = (no: number, s: string): Buffer => delimited(no, Buffer.from(s));

function tensorBytes(t: OnnxTensor): Buffer {
  const f = F['onnx.TensorProto'];
  const p = tensorProto(t);
  return join([...p.dims.map((d) => int(f.dims, d)), int(f.data_type, p.data_type), text(f.name, p.name), delimited(f.raw_data, p.raw_data)]);
}

function attributeBytes(name: string, value: AttributeValue): Buffer {
  const f = F['onnx.AttributeProto'];
  const a = attributeProto(name, value) as { name: string; type: number; f?: number; i?: number; s?: Buffer; t?: ReturnType<typeof tensorProto>; floats?: number[]; ints?: number[] };
  return join([
    text(f.name, a.name),
    ...(a.f === undefined ? [] : [float(f.f, a.f)]),
    ...(a.i === undefined ? [] : [int(f.i, a.i)]),
    ...(a.s === undefined ? [] : [delimited(f.s, a.s)]),
    ...(typeof value === 'object' && 'data' in value ? [delimited(f.t, tensorBytes(value))] : []),
    ...(a.floats ?? []).map((v) => float(f.floats, v)),
    ...(a.ints ?? []).map((v) => int(f.ints, v)),
    int(f.type, a.type),
  ]);
}

function nodeBytes(n: OnnxNode): Buffer {
  const f = F['onnx.NodeProto'];
  const p = nodeProto(n);
  return join([
    ...p.input.map((i) => text(f.input, i)),
    ...p.output.map((o) => text(f.output, o)),
    text(f.name, p.name),
    text(f.op_type, p.op_type),
    ...Object.entries(n.attrs ?? {}).map(([k, v]) => delimited(f.attribute, attributeBytes(k, v))),
  ]);
}

function valueInfoBytes(v: OnnxValueInfo): Buffer {
  const dim = F['onnx.TensorShapeProto.Dimension'];
  const dims = (v.shape ?? []).map((d) => delimited(F['onnx.TensorShapeProto'].dim, join([typeof d === 'number' ? int(dim.dim_value, d) : text(dim.dim_param, d)])));
  const tensor = join([int(F['onnx.TypeProto.Tensor'].elem_type, v.elemType ?? TensorType.FLOAT), ...(v.shape ? [delimited(F['onnx.TypeProto.Tensor'].shape, join(dims))] : [])]);
  return join([text(F['onnx.ValueInfoProto'].name, v.name), delimited(F['onnx.ValueInfoProto'].type, delimited(F['onnx.TypeProto'].tensor_type, tensor))]);
}

/** What extendModel changes: nodes and initializers added at the end of the graph's, the graph's
 * outputs, and the model's producer and metadata, replaced. */
export interface Extension {
  nodes: OnnxNode[];
  initializers: OnnxTensor[];
  outputs: OnnxValueInfo[];
  producer: string;
  metadata: Record<string, string>;
}

/** An encoded model (as encodeModelProto writes it) with `ext`, without decoding it: its graph and
 * weights are copied as bytes and only what is added is encoded, each field where protobufjs puts
 * it (by its number), so the bytes are those of decoding, adding and encoding again
 * (test/proto.test.ts) without loading the schema. MobileNet 0.25 cut at its bottleneck: about 1 ms,
 * against 60 through protobufjs. */
export function extendModel(model: Uint8Array, ext: Extension): Uint8Array {
  const byNumber = (parts: { field: number; whole: Uint8Array }[]) => join(parts.sort((a, b) => a.field - b.field).map((p) => p.whole));
  const m = F['onnx.ModelProto'];
  const g = F['onnx.GraphProto'];
  const top = fields(model);
  const graph = top.find((f) => f.field === m.graph);
  if (!graph) throw new Error('no graph');
  // Array.prototype.sort is stable: the fields added come after those of their number already there.
  const graphFields = [
    ...fields(graph.value).filter((f) => f.field !== g.output),
    ...ext.nodes.map((n) => ({ field: g.node, whole: delimited(g.node, nodeBytes(n)) })),
    ...ext.initializers.map((t) => ({ field: g.initializer, whole: delimited(g.initializer, tensorBytes(t)) })),
    ...ext.outputs.map((v) => ({ field: g.output, whole: delimited(g.output, valueInfoBytes(v)) })),
  ];
  const entry = F['onnx.StringStringEntryProto'];
  return byNumber([
    ...top.filter((f) => f.field !== m.graph && f.field !== m.producer_name && f.field !== m.metadata_props),
    { field: m.producer_name, whole: text(m.producer_name, ext.producer) },
    { field: m.graph, whole: delimited(m.graph, byNumber(graphFields)) },
    ...Object.entries(ext.metadata).map(([key, value]) => ({ field: m.metadata_props, whole: delimited(m.metadata_props, join([text(entry.key, key), text(entry.value, value)])) })),
  ]);
}

/** The first dimension (the batch: a number, or a name) of an encoded model's first input that is
 * not an initializer, read without decoding the model. */
export function batchDimension(model: Uint8Array): number | string | undefined {
  const g = F['onnx.GraphProto'];
  const first = (bytes: Uint8Array, no: number) => fields(bytes).find((f) => f.field === no)?.value;
  const graph = first(model, F['onnx.ModelProto'].graph);
  if (!graph) return undefined;
  const all = fields(graph);
  const initializers = new Set(all.filter((f) => f.field === g.initializer).map((f) => Buffer.from(first(f.value, F['onnx.TensorProto'].name) ?? []).toString()));
  const inputs = all.filter((f) => f.field === g.input);
  const input = inputs.find((f) => !initializers.has(Buffer.from(first(f.value, F['onnx.ValueInfoProto'].name) ?? []).toString())) ?? inputs[0];
  const path = [F['onnx.ValueInfoProto'].type, F['onnx.TypeProto'].tensor_type, F['onnx.TypeProto.Tensor'].shape, F['onnx.TensorShapeProto'].dim] as const;
  const dim = path.reduce<Uint8Array | undefined>((bytes, no) => bytes && first(bytes, no), input?.value);
  if (!dim) return undefined;
  const value = fields(dim)[0];
  if (value?.field === F['onnx.TensorShapeProto.Dimension'].dim_param) return Buffer.from(value.value).toString();
  return value?.field === F['onnx.TensorShapeProto.Dimension'].dim_value ? value.n : undefined;
}
