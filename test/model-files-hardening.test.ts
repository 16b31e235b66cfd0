// Model files and flags as an attacker writes them: each refused with exit 2 and a short reason,
// never an internal error or a message that echoes megabytes.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COLOUR, FIX, runInProcess } from './helpers.js';

let dir: string;
const red = join(FIX, 'images', 'red.jpg');
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'classify-model-files-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A copy of a fixture model with one file replaced. */
function variant(name: string, from: string, file: string, text: string): string {
  const to = join(dir, name);
  cpSync(from, to, { recursive: true });
  writeFileSync(join(to, file), text);
  return to;
}

describe('model files', () => {
  it.each([
    ['2,000,000 nested [ in classify.json', 'classify.json', `{"mean":${'['.repeat(2e6)}${']'.repeat(2e6)}}`, /classify\.json: nested deeper than any model settings file$/],
    ['a 2 MB value', 'classify.json', JSON.stringify({ mean: 'x'.repeat(2e6) }), /classify\.json: Expected one or three numbers for mean but received "x{79}\.\.\. \(2000002 characters\)$/],
  ])('%s: exit 2 naming the file, in one short line', async (name, file, text, said) => {
    const r = await runInProcess(['-g', variant(name.replace(/\W+/g, '-'), COLOUR, file, text), red]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(said);
    expect(r.stderr.length).toBeLessThan(400);
  });

  it('id2label values that are not strings are refused, not printed as [object Object]', async () => {
    const hf = join(FIX, 'models', 'hf-colour');
    const config = JSON.parse(readFileSync(join(hf, 'config.json'), 'utf8'));
    config.id2label['1'] = { name: 'green' };
    const r = await runInProcess(['-g', variant('id2label', hf, 'config.json', JSON.stringify(config)), red]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/config\.json: Expected a label \(a string\) for id2label "1" but received \{"name":"green"\}/);
  });

  it('a Hugging Face export that states no image size is blamed on the missing size, not the layout', async () => {
    const hf = join(FIX, 'models', 'hf-colour');
    const pre = JSON.parse(readFileSync(join(hf, 'preprocessor_config.json'), 'utf8'));
    delete pre.size;
    delete pre.crop_size;
    const r = await runInProcess(['-g', variant('no-size', hf, 'preprocessor_config.json', JSON.stringify(pre)), red]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/has no fixed size \(shape \[batch_size,num_channels,height,width\]\) and the model states none/);
  });
});

describe('--crop', () => {
  it.each(['0', '1000000000', '16385x224'])('--crop %s is refused, exit 2 (0 used to be none, 1e9 an internal error)', async (crop) => {
    const r = await runInProcess(['-g', COLOUR, '--crop', crop, red]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`classify: Expected none, a positive integer up to 16384 (the shorter side) or HEIGHTxWIDTH for --crop but received "${crop}"\n`);
  });

  it('an explicit default (--crop none) keeps the fingerprint, so --resume and the cache still apply', async () => {
    const print = async (flags: string[]) => /model fingerprint (\w+)/.exec((await runInProcess(['-g', COLOUR, '-v', '-o', join(dir, `fp${flags.length}.ndjson`), ...flags, red])).stderr)?.[1];
    const plain = await print([]);
    expect(plain).toMatch(/^[0-9a-f]{16}$/);
    expect(await print(['--crop', 'none'])).toBe(plain);
    expect(await print(['--crop', '16'])).not.toBe(plain);
  });

  it("naming the model's own input or output, in any spelling, keeps the fingerprint; another node changes it", async () => {
    const frozen = join(FIX, 'models', 'colour-frozen', 'output_graph.pb');
    const print = async (flags: string[]) =>
      /model fingerprint (\w+)/.exec((await runInProcess([`--graph=${frozen}`, '-v', '-o', join(dir, `nodes${flags.join('')}.ndjson`), ...flags, red])).stderr)?.[1];
    const plain = await print([]);
    expect(plain).toMatch(/^[0-9a-f]{16}$/);
    for (const flags of [['--output_layer=final_result:0'], ['--output-node', 'final_result'], ['--input_layer=input:0']]) expect(await print(flags), flags.join(' ')).toBe(plain);
    expect(await print(['--output-node', 'logits'])).not.toBe(plain);
  });
});
