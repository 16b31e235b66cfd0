// ONNX model files: writing one (the translator's output) and reading a model's metadata, with
// ONNX's own schema.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

/** ONNX's own onnx.proto, vendored (src/proto/vendor/README.md says which version and whence).
 * The same path from src/proto/ and dist/proto/, which sit side by side. */
const SCHEMA = fileURLToPath(new URL('../../src/proto/vendor/onnx/onnx.proto', import.meta.url));

const root = new protobuf.Root().loadSync(SCHEMA, { keepCase: true });
const ModelProto = root.lookupType('onnx.ModelProto');
const StringStringEntryProto = root.lookupType('onnx.StringStringEntryProto');
/** ModelProto's metadata_props, by its number in the schema rather than by hand. */
const METADATA_FIELD = ModelProto.fields.metadata_props.id;

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

export { tensorProto, valueInfo };

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
  const json = ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, arrays: true }) as ModelJson;
  if (!json.graph) throw new Error('no graph');
  for (const key of ['node', 'initializer', 'input', 'output'] as const) json.graph[key] ??= [];
  return json;
}

export function encodeModelProto(model: object): Uint8Array {
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

/** Walks a ModelProto's top-level fields (protobuf wire format), decoding metadata_props and
 * skipping everything else by its length. */
function scanMetadata(read: (at: number, length: number) => Uint8Array, size: number): Record<string, string> {
  const out: Record<string, string> = {};
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
    switch (wireType) {
      case 0:
        varint();
        break;
      case 1:
        at += 8;
        break;
      case 2: {
        const length = varint();
        if (field === METADATA_FIELD) {
          const { key, value } = StringStringEntryProto.decode(read(at, length)) as unknown as { key?: string; value?: string };
          if (key !== undefined) out[key] = value ?? '';
        }
        at += length;
        break;
      }
      case 5:
        at += 4;
        break;
      default:
        throw new Error(`invalid wire type ${wireType} at offset ${start}`);
    }
    if (field === 0) throw new Error(`invalid field number 0 at offset ${start}`);
    if (at > size) throw new Error(`field ${field} at offset ${start} runs past the end of the file`);
  }
  return out;
}
