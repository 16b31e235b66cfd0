import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelError } from '../src/errors.js';
import { vulkanPresent } from '../src/backends/onnx.js';
import { readLabels } from '../src/model/labels.js';
import { resolveModel } from '../src/model/locate.js';
import { channelTriple, nonNegativeNumber, positiveInt, unitInterval } from '../src/parse.js';
import { COLOUR, FIX } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'classify-labels-'));
const file = (name: string, text: string) => {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
};

describe('readLabels', () => {
  it('reads one label per line, CRLF or LF, ignoring trailing blank lines', () => {
    expect(readLabels(file('a.txt', 'daisy\r\nrose\r\ntulip\r\n\r\n'))).toEqual(['daisy', 'rose', 'tulip']);
  });

  it('understands files whose every line is index:label', () => {
    expect(readLabels(join(FIX, 'labels-indexed.txt'))).toEqual(['red', 'green', 'blue']);
    expect(readLabels(file('b.txt', '1:rose\n0:background\n'))).toEqual(['background', 'rose']);
  });

  it('keeps a plain label that merely contains a colon', () => {
    expect(readLabels(file('c.txt', 'a:b\nplain\n'))).toEqual(['a:b', 'plain']);
  });

  it('rejects an empty file and a gap in the indices', () => {
    expect(() => readLabels(file('d.txt', '\n'))).toThrow(/empty/);
    expect(() => readLabels(file('e.txt', '0:a\n2:c\n'))).toThrow(/no entry for index 1/);
  });
});

describe('resolveModel', () => {
  it('finds model.onnx and labels.txt in a folder, and the metadata normalisation', () => {
    const m = resolveModel(COLOUR);
    expect(m.file).toBe(join(COLOUR, 'model.onnx'));
    expect(m.labelsFile).toBe(join(COLOUR, 'labels.txt'));
    expect(m.hints).toEqual([{ source: `${join(COLOUR, 'model.onnx')} metadata`, values: { mean: [0, 0, 0], std: [255, 255, 255] } }]);
  });

  it('reads classify.json beside the model', () => {
    const m = resolveModel(join(FIX, 'models', 'colour-nhwc', 'model.onnx'));
    expect(m.hints[0].source).toMatch(/classify\.json$/);
    expect(m.hints[0].values.std).toEqual([255, 255, 255]);
  });

  it('finds a Hugging Face export: onnx/model.onnx, labels from config.json id2label, preprocessor_config.json', () => {
    const hf = join(FIX, 'models', 'hf-colour');
    const m = resolveModel(hf);
    expect(m.file).toBe(join(hf, 'onnx', 'model.onnx'));
    expect(m.labelsFile).toBe(join(hf, 'config.json'));
    expect(readLabels(m.labelsFile)).toEqual(['red', 'green', 'blue']);
    expect(m.hints.map((h) => h.source)).toEqual([join(hf, 'preprocessor_config.json')]);
    expect(m.hints[0].inputSize).toEqual({ height: 16, width: 16 });
    // The model file named directly finds the same configuration one folder up.
    expect(resolveModel(join(hf, 'onnx', 'model.onnx')).labelsFile).toBe(join(hf, 'config.json'));
  });

  it('names the file and the reason when there is nothing to load', () => {
    expect(() => resolveModel(join(tmp, 'missing.onnx'))).toThrow(ModelError);
    expect(() => resolveModel(tmp)).toThrow(/looked for model\.onnx/);
    expect(() => resolveModel(file('model.txt', 'x'))).toThrow(/unrecognised model format/);
  });
});

describe('the value parsers (flags, model files, the server query)', () => {
  it('channelTriple: one value for all channels or three, numbers or decimal text', () => {
    expect(channelTriple('127.5', 'mean')).toEqual([127.5, 127.5, 127.5]);
    expect(channelTriple('1, 2,3', 'mean')).toEqual([1, 2, 3]);
    expect(channelTriple([4, 5, 6], 'mean')).toEqual([4, 5, 6]);
    expect(channelTriple('-1.5e1', 'mean')).toEqual([-15, -15, -15]);
  });

  it('reject anything else in one message form, plain decimals only', () => {
    expect(() => channelTriple('1,2', 'mean')).toThrow('Expected one or three numbers for mean but received "1,2"');
    expect(() => channelTriple('0', 'std', true)).toThrow(/positive numbers for std/);
    expect(() => channelTriple('0x10', 'mean')).toThrow(/for mean but received "0x10"/);
    expect(() => channelTriple([[0], 0, 0], 'mean')).toThrow(/for mean but received \[\[0\],0,0\]/);
    expect(() => channelTriple(Infinity, 'std', true)).toThrow(/for std but received Infinity/);
    for (const bad of ['0x1', '', ' 1', '1_0', 'Infinity', '-0.5', '1.5']) expect(() => unitInterval('t')(bad)).toThrow(/number between 0 and 1 for t/);
    expect(unitInterval('t')('1e-7')).toBe(1e-7);
    for (const bad of ['0', '-1', '1.0', '0x2', ' 5', '9007199254740993']) expect(() => positiveInt('k')(bad)).toThrow('Expected positive integer for k');
    expect(() => nonNegativeNumber('d', 10)('11')).toThrow('Expected number from 0 to 10 for d but received "11"');
  });
});

describe('vulkanPresent (whether --device auto tries WebGPU)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'classify-vulkan-'));
  const libs = join(dir, 'lib');
  const icds = join(dir, 'icd.d');
  const lavapipeOnly = join(dir, 'lvp.d');
  for (const d of [libs, icds, lavapipeOnly]) mkdirSync(d);
  writeFileSync(join(libs, 'libvulkan.so.1'), '');
  writeFileSync(join(icds, 'nvidia_icd.json'), '{}');
  writeFileSync(join(lavapipeOnly, 'lvp_icd.x86_64.json'), '{}');
  const linux = process.platform === 'linux';

  it('needs both a Vulkan loader and a driver manifest', () => {
    expect(vulkanPresent({}, [libs], [icds])).toBe(linux);
    expect(vulkanPresent({}, [dir], [icds])).toBe(false); // no loader
    expect(vulkanPresent({}, [libs], [dir])).toBe(false); // no driver
  });

  it('finds them through LD_LIBRARY_PATH and VK_DRIVER_FILES / VK_ICD_FILENAMES', () => {
    const env = { LD_LIBRARY_PATH: `/nonexistent:${libs}`, VK_DRIVER_FILES: join(icds, 'nvidia_icd.json') };
    expect(vulkanPresent(env, [], [])).toBe(linux);
    expect(vulkanPresent({ ...env, VK_DRIVER_FILES: undefined, VK_ICD_FILENAMES: join(icds, 'nvidia_icd.json') }, [], [])).toBe(linux);
    expect(vulkanPresent({ ...env, VK_DRIVER_FILES: join(icds, 'missing.json') }, [], [])).toBe(false);
  });

  it('ignores Mesa lavapipe, a CPU renderer slower than the CPU engine', () => {
    expect(vulkanPresent({}, [libs], [lavapipeOnly])).toBe(false);
  });
});
