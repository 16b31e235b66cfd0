// Reading a frozen GraphDef into TF.js's GraphDef types, plus helpers over its nodes. The schema
// below is the part of TensorFlow's tensorflow/core/framework/*.proto that a frozen graph uses,
// with TensorFlow's field numbers: no package this project can install ships those .proto files
// (src/proto/vendor/README.md). The types are tfjs-converter's, so TF.js reads what this writes.
import type { AttrValue, DataType, IAttrValue, IGraphDef, INodeDef, ITensor, IVersionDef } from '@tensorflow/tfjs-converter/dist/data/compiled_api.js';
import { createRequire } from 'node:module';
import type { Type } from 'protobufjs';

const SCHEMA = `
syntax = "proto3";
package tensorflow;
enum DataType {
  DT_INVALID = 0; DT_FLOAT = 1; DT_DOUBLE = 2; DT_INT32 = 3; DT_UINT8 = 4; DT_INT16 = 5; DT_INT8 = 6;
  DT_STRING = 7; DT_COMPLEX64 = 8; DT_INT64 = 9; DT_BOOL = 10; DT_QINT8 = 11; DT_QUINT8 = 12;
  DT_QINT32 = 13; DT_BFLOAT16 = 14; DT_QINT16 = 15; DT_QUINT16 = 16; DT_UINT16 = 17;
  DT_COMPLEX128 = 18; DT_HALF = 19; DT_RESOURCE = 20; DT_VARIANT = 21; DT_UINT32 = 22; DT_UINT64 = 23;
}
message TensorShapeProto {
  message Dim { int64 size = 1; string name = 2; }
  repeated Dim dim = 2;
  bool unknown_rank = 3;
}
message TensorProto {
  DataType dtype = 1;
  TensorShapeProto tensor_shape = 2;
  int32 version_number = 3;
  bytes tensor_content = 4;
  repeated int32 half_val = 13 [packed = true];
  repeated float float_val = 5 [packed = true];
  repeated double double_val = 6 [packed = true];
  repeated int32 int_val = 7 [packed = true];
  repeated bytes string_val = 8;
  repeated int64 int64_val = 10 [packed = true];
  repeated bool bool_val = 11 [packed = true];
}
message NameAttrList { string name = 1; map<string, AttrValue> attr = 2; }
message AttrValue {
  message ListValue {
    repeated bytes s = 2;
    repeated int64 i = 3 [packed = true];
    repeated float f = 4 [packed = true];
    repeated bool b = 5 [packed = true];
    repeated DataType type = 6 [packed = true];
    repeated TensorShapeProto shape = 7;
    repeated TensorProto tensor = 8;
    repeated NameAttrList func = 9;
  }
  oneof value {
    bytes s = 2;
    int64 i = 3;
    float f = 4;
    bool b = 5;
    DataType type = 6;
    TensorShapeProto shape = 7;
    TensorProto tensor = 8;
    ListValue list = 1;
    NameAttrList func = 10;
    string placeholder = 9;
  }
}
message NodeDef {
  string name = 1;
  string op = 2;
  repeated string input = 3;
  string device = 4;
  map<string, AttrValue> attr = 5;
}
message VersionDef { int32 producer = 1; int32 min_consumer = 2; repeated int32 bad_consumers = 3; }
message GraphDef {
  repeated NodeDef node = 1;
  VersionDef versions = 4;
}
`;

let graphDef: Type | undefined;
/** The schema, parsed at its first use (with protobufjs, about 25 ms): what only reads a graph's
 * names, or runs where the graph is already cut (a rerun of retrain), needs none of it. */
const GraphDefType = (): Type => (graphDef ??= (createRequire(import.meta.url)('protobufjs') as typeof import('protobufjs')).parse(SCHEMA).root.lookupType('tensorflow.GraphDef'));

/** A DataType by name, as protobuf JSON spells it ("DT_FLOAT"). */
export type DataTypeName = keyof typeof DataType;

/** TF.js's own GraphDef types (tfjs-converter's compiled_api), in the protobuf-JSON form that
 * model.json holds and tf.io.fromMemory() takes: enums by name, bytes in base64, int64 as text. */
export type TensorJson = Omit<ITensor, 'dtype' | 'tensorContent'> & { dtype?: DataTypeName; tensorContent?: string };
type ListJson = Omit<AttrValue.IListValue, 'type' | 'tensor'> & { type?: DataTypeName[]; tensor?: TensorJson[] };
export type AttrJson = Omit<IAttrValue, 'type' | 'tensor' | 'list'> & { type?: DataTypeName; tensor?: TensorJson; list?: ListJson };
export type NodeJson = Omit<INodeDef, 'name' | 'op' | 'attr'> & { name: string; op: string; attr?: Record<string, AttrJson> };
export type GraphJson = Omit<IGraphDef, 'node' | 'versions'> & { node: NodeJson[]; versions?: IVersionDef };

export function decodeGraphDef(bytes: Uint8Array): GraphJson {
  const msg = GraphDefType().decode(bytes);
  // Bytes written as base64 by Node, not by toObject's own encoder in JavaScript, which took 30 ms
  // of the 110 ms MobileNet 0.25's translation takes (its weights are 1.9 MB of tensor content).
  const graph = GraphDefType().toObject(msg, { longs: String, enums: String, defaults: false, arrays: false });
  base64InPlace(graph);
  return graph as GraphJson;
}

/** Every bytes value in a toObject result as base64 text, in place. */
function base64InPlace(value: object): void {
  for (const [key, v] of Object.entries(value)) {
    if (v instanceof Uint8Array) (value as Record<string, unknown>)[key] = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
    else if (v !== null && typeof v === 'object') base64InPlace(v);
  }
}

export function encodeGraphDef(graph: GraphJson): Uint8Array {
  return GraphDefType().encode(GraphDefType().fromObject(graph)).finish();
}

/** "name:1" and "^name" (control input) both refer to node "name". */
export const inputNode = (input: string) => input.replace(/^\^/, '').replace(/:\d+$/, '');

/** The name in a model that a user's name means: as given; TensorFlow's tensor form `node:0` (as
 * label_image takes it) for the node; or a node name for its tensor `node:0`, as tf2onnx names
 * an ONNX model's inputs and outputs. */
export function resolveName(wanted: string, has: (name: string) => boolean): string | undefined {
  if (has(wanted)) return wanted;
  const node = /^(.+):0$/.exec(wanted)?.[1];
  if (node !== undefined && has(node)) return node;
  return has(`${wanted}:0`) ? `${wanted}:0` : undefined;
}

export const decodeString = (b64: string | null | undefined) => (b64 == null ? '' : Buffer.from(b64, 'base64').toString('latin1'));

export const shapeOf = (shape: AttrJson['shape'] | TensorJson['tensorShape']): number[] =>
  (shape?.dim ?? []).map((d) => Number(d.size));

export interface ConstValue {
  dtype: 'float32' | 'int32' | 'bool';
  shape: number[];
  values: Float32Array | Int32Array | Uint8Array;
}

/** A Const tensor's values, expanding TensorFlow's short forms (one value repeated to fill). */
export function constValue(t: TensorJson): ConstValue {
  const shape = shapeOf(t.tensorShape);
  const count = shape.reduce((a, b) => a * b, 1);
  const content = t.tensorContent ? Buffer.from(t.tensorContent, 'base64') : undefined;
  const fill = <T extends Float32Array | Int32Array | Uint8Array>(out: T, vals: ArrayLike<number> | null | undefined): T => {
    const src = vals ?? [];
    for (let i = 0; i < count; i++) out[i] = src.length === 0 ? 0 : src[Math.min(i, src.length - 1)];
    return out;
  };
  switch (t.dtype) {
    case 'DT_FLOAT': {
      if (content) return { dtype: 'float32', shape, values: new Float32Array(content.buffer.slice(content.byteOffset, content.byteOffset + count * 4)) };
      return { dtype: 'float32', shape, values: fill(new Float32Array(count), t.floatVal) };
    }
    case 'DT_DOUBLE': {
      if (content) return { dtype: 'float32', shape, values: Float32Array.from(new Float64Array(content.buffer.slice(content.byteOffset, content.byteOffset + count * 8))) };
      return { dtype: 'float32', shape, values: fill(new Float32Array(count), t.doubleVal) };
    }
    case 'DT_INT32':
    case 'DT_INT16':
    case 'DT_INT8':
    case 'DT_UINT8': {
      if (content && t.dtype === 'DT_INT32') return { dtype: 'int32', shape, values: new Int32Array(content.buffer.slice(content.byteOffset, content.byteOffset + count * 4)) };
      return { dtype: 'int32', shape, values: fill(new Int32Array(count), t.intVal) };
    }
    case 'DT_QUINT8': {
      if (content) return { dtype: 'int32', shape, values: Int32Array.from(content.subarray(0, count)) };
      return { dtype: 'int32', shape, values: fill(new Int32Array(count), t.intVal) };
    }
    case 'DT_INT64': {
      if (content) {
        const wide = new BigInt64Array(content.buffer.slice(content.byteOffset, content.byteOffset + count * 8));
        return { dtype: 'int32', shape, values: Int32Array.from(wide, (v) => Number(v)) };
      }
      return { dtype: 'int32', shape, values: fill(new Int32Array(count), (t.int64Val ?? []).map(Number)) };
    }
    case 'DT_BOOL': {
      if (content) return { dtype: 'bool', shape, values: new Uint8Array(content.subarray(0, count)) };
      return { dtype: 'bool', shape, values: fill(new Uint8Array(count), (t.boolVal ?? []).map(Number)) };
    }
    default:
      throw new Error(`constant of type ${t.dtype} is not supported`);
  }
}
