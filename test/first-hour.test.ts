// What a new user meets in the first hour: messages in one form, hints where a habit misleads,
// and a terminal that stays readable.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COLOUR, FIX, jsonLines, runInProcess } from './helpers.js';

const red = join(FIX, 'images', 'red.jpg');

describe('messages', () => {
  it.each([
    [['--verbos'], 'classify: unknown option --verbos (did you mean --verbose?)\n'],
    [['-g', COLOUR, '--top-k', '-1'], 'classify: Expected positive integer for --top-k but received "-1"\n'],
    [['-g'], 'classify: option -g, --graph <model> argument missing\n'],
    [['srve', '-g', COLOUR], 'classify: unknown command srve (did you mean serve?)\n'],
    [['-g', COLOUR, '--device', 'cuda'], /^classify: \S+model\.onnx: ONNX Runtime cannot load it: the CUDA execution provider is not installed .*\n$/],
  ])('%j: one line on stderr, exit 2, nothing read', async (args, said) => {
    const r = await runInProcess(args as string[], `${red}\n`);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    if (typeof said === 'string') expect(r.stderr).toBe(said);
    else expect(r.stderr).toMatch(said);
  });

  it('a folder given as a path is its error line, with one hint at find -print0', async () => {
    const r = await runInProcess(['-g', COLOUR, join(FIX, 'images'), join(FIX, 'models'), red]);
    expect(r.code).toBe(1);
    expect(jsonLines(r.stdout).map((o) => o.error ?? o.predictions[0].label)).toEqual(['is a directory', 'is a directory', 'red']);
    const hints = r.stderr.split('\n').filter((l) => l.includes('find '));
    expect(hints).toEqual([`classify: to classify the images a folder holds, give their paths: find ${join(FIX, 'images')} -type f -print0 | classify -0 ...`]);
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
