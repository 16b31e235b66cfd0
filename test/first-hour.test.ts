// What a new user meets in the first hour: messages in one form, hints where a habit misleads,
// and a terminal that stays readable.
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { COLOUR, FIX, jsonLines, ROOT, runCli, runInProcess } from './helpers.js';

const red = join(FIX, 'images', 'red.jpg');

describe('messages', () => {
  it.each([
    [['--verbos'], 'classify: unknown option --verbos (did you mean --verbose?)\n'],
    [['-g', COLOUR, '--top-k', '-1'], 'classify: Expected positive integer for --top-k but received "-1"\n'],
    // One rule for flags, model files and the server's query: plain decimals only.
    [['-g', COLOUR, '--threshold', '0x1'], 'classify: Expected number between 0 and 1 for --threshold but received "0x1"\n'],
    [['-g', COLOUR, '--format', 'xml'], 'classify: Expected one of json, text, tsv for --format but received "xml"\n'],
    [['srve', '-g', COLOUR, '-p', '8080'], 'classify: unknown command srve (did you mean serve?)\n'],
    [['serve', '-g', COLOUR, '-p', '70000'], 'classify: Expected integer from 0 to 65535 for --port but received "70000"\n'],
    [['-g', COLOUR, '--batch-size', ' 4'], 'classify: Expected integer from 0 to 1024 for --batch-size but received " 4"\n'],
    [['-g'], 'classify: option -g, --graph <model> argument missing\n'],
    [['srve', '-g', COLOUR], 'classify: unknown command srve (did you mean serve?)\n'],
    [['-g', COLOUR, '--device', 'cuda'], /^classify: \S+model\.onnx: ONNX Runtime cannot load it: the CUDA execution provider is not installed .*\n$/],
    // ONNX Runtime's own (coloured) log line would come first: it is off.
    [['-g', COLOUR, '--device', 'tensorrt'], /^classify: \S+model\.onnx: ONNX Runtime cannot load it: [^\x1b\n]*\n$/],
    [['-g', COLOUR, '--device', 'webgpu'], /^classify: \S+model\.onnx: ONNX Runtime cannot load it: the WebGPU provider drives the GPU through Vulkan, and no Vulkan loader .*\n$/],
  ])('%j: one line on stderr, exit 2, nothing read', async (args, said) => {
    const r = await runInProcess(args as string[], `${red}\n`);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    if (typeof said === 'string') expect(r.stderr).toBe(said);
    else expect(r.stderr).toMatch(said);
  });

  it('an execution provider that cannot start is one line from the real process: no native log on stderr', async () => {
    for (const device of ['tensorrt', 'webgpu']) {
      const r = await runCli(['-g', COLOUR, '--device', device, red]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^classify: \S+model\.onnx: ONNX Runtime cannot load it: [^\n]*\n$/);
    }
  });

  it('a folder given as a path is its error line, with one hint at find -print0', async () => {
    const r = await runInProcess(['-g', COLOUR, join(FIX, 'images'), join(FIX, 'models'), red]);
    expect(r.code).toBe(1);
    expect(jsonLines(r.stdout).map((o) => o.error ?? o.predictions[0].label)).toEqual(['is a directory', 'is a directory', 'red']);
    const hints = r.stderr.split('\n').filter((l) => l.includes('find '));
    expect(hints).toEqual([`classify: to classify the images a folder holds, give their paths: find ${join(FIX, 'images')} -type f -print0 | classify -0 ...`]);
  });

  it('a name that starts like an image file\'s magic (GIF89a-cat.jpg, as ls gives it) is a path, not image data', async () => {
    const r = await runInProcess(['-g', COLOUR], 'GIF89a-cat.jpg\n');
    expect(r.code).toBe(1);
    expect(jsonLines(r.stdout)).toEqual([{ path: 'GIF89a-cat.jpg', error: 'no such file' }]);
  });

  it('- among the arguments stands for the paths on stdin, in its place', async () => {
    const green = join(FIX, 'images', 'green.jpg');
    const r = await runInProcess(['-g', COLOUR, green, '-', green], `${red}\n${red}\n`);
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(['green', 'red', 'red', 'green']);
  });
});

describe('on a terminal', () => {
  it('no progress line while the user types paths on it; a summary line stays at the end', async () => {
    const typed = await runInProcess(['-g', COLOUR], `${red}\n`, { stdinTTY: true, stderrTTY: true });
    expect(typed.code).toBe(0);
    expect(typed.stderr).not.toContain('\r');
    expect(typed.stderr).toMatch(/^classify: reading image paths from stdin.*\nclassify: 1 image, 0 failed in \d+\.\d s \(\d+\.\d images\/s\)\n$/);
    // Piped in, on a terminal: the summary too; off a terminal: quiet.
    const piped = await runInProcess(['-g', COLOUR], `${red}\nnope.jpg\n`, { stderrTTY: true });
    expect(piped.stderr.split('\n').at(-2)).toMatch(/^\r\x1b\[Kclassify: 2 images, 1 failed in /);
    expect((await runInProcess(['-g', COLOUR], `${red}\n`)).stderr).toBe('');
  });
});

describe('coming from label_image', () => {
  const frozen = join(FIX, 'models', 'colour-frozen');

  it("label_image's command line works as it is: --image, --output_layer and --input_layer with :0, --input_mean/--input_std", async () => {
    const green = join(FIX, 'images', 'green.jpg');
    const r = await runInProcess([
      `--graph=${join(frozen, 'output_graph.pb')}`,
      `--labels=${join(frozen, 'output_labels.txt')}`,
      '--output_layer=final_result:0',
      '--input_layer',
      'input:0',
      '--input_mean=0',
      '--input_std=255',
      `--image=${red}`,
      '--image',
      green,
    ]);
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((o) => [o.path, o.predictions[0].label])).toEqual([
      [red, 'red'],
      [green, 'green'],
    ]);
    // --input_mean and --input_std mean what --mean and --std mean: (pixel - mean) / std.
    const shifted = await runInProcess(['-g', frozen, '--input_mean=255', '--input_std=255', '-k', '1', red]);
    const plain = await runInProcess(['-g', frozen, '--mean', '255', '--std', '255', '-k', '1', red]);
    expect(shifted.stdout).toBe(plain.stdout);
  });

  it('a tensor name that is not there is named in the error, and -- ends the translation', async () => {
    const r = await runInProcess(['-g', frozen, '--output_layer=final_result:1', red]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no node named "final_result:1"/);
    const { fromLabelImage } = await import('../src/cli.js');
    expect(fromLabelImage(['--image=a.jpg', '--', '--image=b.jpg'])).toEqual(['--', 'a.jpg', '--image=b.jpg']);
    // An --image value is a path, whatever it starts with.
    expect(fromLabelImage(['-g', 'm', '--image=-o.jpg', '--image', '-rf.jpg'])).toEqual(['-g', 'm', '--', '-o.jpg', '-rf.jpg']);
    const bare = await runInProcess(['-g', frozen, '--image']);
    expect([bare.code, bare.stderr]).toEqual([2, 'classify: option --image <path> argument missing\n']);
  });

  it('after --, a photo named like a command (serve, info) is a photo, from the command line and from --image', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'classify-named-'));
    const names = ['serve', 'info', 'retrain'].map((n) => join(dir, n));
    for (const n of names) copyFileSync(red, n);
    process.chdir(dir);
    onTestFinished(() => process.chdir(ROOT));
    for (const args of [['-g', COLOUR, '-k', '1', '--', 'serve', 'info', 'retrain'], ['-g', COLOUR, '-k', '1', '--image', 'serve', '--image=info', '--image', 'retrain']]) {
      const r = await runInProcess(args);
      expect(r.code, args.join(' ')).toBe(0);
      expect(jsonLines(r.stdout).map((o) => [o.path, o.predictions[0].label])).toEqual(['serve', 'info', 'retrain'].map((n) => [n, 'red']));
    }
    // A command named before the -- is still that command.
    expect((await runInProcess(['info', '--', COLOUR])).stdout).toMatch(/^model\s+\S+colour/);
  });

  it('names resolve as given, node:0 to the node, a node to its tensor node:0', async () => {
    const { resolveName } = await import('../src/tensorflow/graphdef.js');
    const names = new Set(['input', 'logits:0', 'odd:0:0']);
    const has = (n: string) => names.has(n);
    expect([resolveName('input', has), resolveName('input:0', has), resolveName('logits', has), resolveName('logits:0', has)]).toEqual(['input', 'input', 'logits:0', 'logits:0']);
    expect([resolveName('input:1', has), resolveName('nothing', has)]).toEqual([undefined, undefined]);
  });
});
