// ONNX files through ONNX's own schema (src/proto/vendor/onnx/onnx.proto): a model's metadata is
// read from the file's top-level fields alone, the graph skipped over unread; a model is extended
// by hand to the very bytes protobufjs would write.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { batchDimension, decodeMetadata, decodeModelProto, encodeModel, encodeModelProto, extendModel, FIELDS, nodeProto, onnxSchema, readMetadata, tensorProto } from '../src/proto/onnx.js';
import { COLOUR, FIX } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'classify-proto-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A ModelProto field 14 (metadata_props) entry, by hand: key = 1, value = 2. */
function metadataField(key: string, value: string): Buffer {
  const entry = Buffer.concat([Buffer.from([0x0a, key.length]), Buffer.from(key), Buffer.from([0x12, value.length]), Buffer.from(value)]);
  return Buffer.concat([Buffer.from([(14 << 3) | 2, entry.length]), entry]);
}

describe('ONNX metadata', () => {
  it('reads the metadata of a model written with the vendored schema', () => {
    const bytes = encodeModel({
      name: 'g',
      nodes: [{ op: 'Identity', inputs: ['x'], outputs: ['y'] }],
      initializers: [],
      inputs: [{ name: 'x', shape: ['N', 2] }],
      outputs: [{ name: 'y' }],
      metadata: { resize: 'tf1', mean: '1,2,3' },
    });
    const file = join(dir, 'written.onnx');
    writeFileSync(file, bytes);
    expect(readMetadata(file)).toEqual({ resize: 'tf1', mean: '1,2,3' });
    expect(decodeMetadata(bytes)).toEqual({ resize: 'tf1', mean: '1,2,3' });
  });

  it('reads a fixture model the same from its file as from its bytes', () => {
    const file = join(COLOUR, 'model.onnx');
    expect(readMetadata(file)).toEqual(decodeMetadata(readFileSync(file)));
    expect(Object.keys(readMetadata(file)).length).toBeGreaterThan(0);
  });

  it('never decodes the graph: metadata after a graph of garbage is still read', () => {
    // Field 7 (graph), length-delimited, 100000 bytes that are no protobuf at all: decoding the
    // whole model would fail on them.
    const garbage = Buffer.alloc(100_000, 0xff);
    const length = Buffer.from([0xa0, 0x8d, 0x06]); // varint 100000
    const file = join(dir, 'garbage-graph.onnx');
    writeFileSync(file, Buffer.concat([metadataField('a', '1'), Buffer.from([(7 << 3) | 2]), length, garbage, metadataField('b', '2')]));
    expect(readMetadata(file)).toEqual({ a: '1', b: '2' });
  });

  it('refuses a file that is not a protobuf message, or one cut short', () => {
    expect(() => readMetadata(join(FIX, 'models', 'broken', 'model.onnx'))).toThrow(/invalid wire type 4 at offset 0/);
    const file = join(dir, 'cut.onnx');
    writeFileSync(file, Buffer.concat([metadataField('a', '1'), Buffer.from([(7 << 3) | 2, 0x64]), Buffer.alloc(10)]));
    expect(() => readMetadata(file)).toThrow(/runs past the end of the file/);
  });
});

describe('extending an encoded model by hand', () => {
  it('uses the field numbers of the schema', () => {
    const { root } = onnxSchema();
    for (const [message, fields] of Object.entries(FIELDS)) {
      for (const [name, id] of Object.entries(fields)) expect([message, name, root.lookupType(message).fields[name].id]).toEqual([message, name, id]);
    }
  });

  it('gives the bytes that decoding, adding and encoding with protobufjs give', () => {
    const base = encodeModel({
      name: 'g',
      nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['r'] }, { op: 'Identity', inputs: ['r'], outputs: ['y'] }],
      initializers: [{ name: 'w', dims: [2], data: Float32Array.of(1, 2) }],
      inputs: [{ name: 'w', shape: [2] }, { name: 'x', shape: ['batch', 2] }],
      outputs: [{ name: 'y', shape: ['batch', 2] }],
      metadata: { old: 'gone' },
    });
    const nodes = [
      { op: 'Flatten', inputs: ['y'], outputs: ['f'], name: 'f', attrs: { axis: 1, neg: -1, big: 2 ** 40, f: { float: 0.5 }, s: 'text', ints: [3, -2], fs: { floats: [1.5, -2] } } },
      { op: 'Softmax', inputs: ['f'], outputs: ['out'], name: 'out', attrs: { t: { name: 'c', dims: [1], data: Float32Array.of(7) } } },
    ];
    const initializers = [{ name: 'w2', dims: [3, 1], data: Float32Array.of(1, 2, 3) }];
    const outputs = [{ name: 'out', shape: ['batch' as const, 1] }];
    const metadata = { labels: '["a"]', émoji: '✓' };
    const expected = decodeModelProto(base);
    expected.graph.node.push(...nodes.map((n) => nodeProto(n)));
    expected.graph.initializer.push(...initializers.map(tensorProto));
    expected.graph.output = [{ name: 'out', type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_param: 'batch' }, { dim_value: 1 }] } } } }];
    expected.producer_name = 'classify retrain';
    expected.metadata_props = Object.entries(metadata).map(([key, value]) => ({ key, value }));
    const extended = extendModel(base, { nodes, initializers, outputs, producer: 'classify retrain', metadata });
    expect(Buffer.from(extended).toString('hex')).toBe(Buffer.from(encodeModelProto(expected)).toString('hex'));
    expect(decodeMetadata(extended)).toEqual(metadata);
  });

  it("reads the batch dimension of the first input that is not an initializer", () => {
    const model = (inputs: { name: string; shape: (number | string)[] }[]) =>
      encodeModel({ name: 'g', nodes: [], initializers: [{ name: 'w', dims: [1], data: Float32Array.of(1) }], inputs, outputs: [] });
    expect(batchDimension(model([{ name: 'w', shape: [1] }, { name: 'x', shape: ['N', 3] }]))).toBe('N');
    expect(batchDimension(model([{ name: 'x', shape: [300, 3] }]))).toBe(300);
    expect(batchDimension(model([]))).toBeUndefined();
  });
});
