// ONNX files through ONNX's own schema (src/proto/vendor/onnx/onnx.proto): a model's metadata is
// read from the file's top-level fields alone, the graph skipped over unread.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeMetadata, encodeModel, readMetadata } from '../src/proto/onnx.js';
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
