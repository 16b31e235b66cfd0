// Which exit code an error gets, and what is said about it.
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { exitFor } from '../src/cli.js';
import { EXIT, ModelError, OutputError, UsageError } from '../src/errors.js';

describe('exitFor', () => {
  const said: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (said.push(String(chunk)), true));
  afterEach(() => void said.splice(0));
  afterAll(() => spy.mockRestore());

  it('a bug is an internal error (70), not a usage error, with the stack only under --verbose', () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'x')");
    expect(exitFor(bug, false)).toBe(EXIT.internal);
    expect(said).toEqual([`classify: internal error: ${bug.message} (a bug in classify; --verbose shows the stack)\n`]);
    said.splice(0);
    expect(exitFor(bug, true)).toBe(70);
    expect(said[1]).toMatch(/^TypeError: Cannot read properties.*\n\s+at /);
  });

  it('usage, model and output errors keep their own codes and one line each', () => {
    expect(exitFor(new UsageError('stdin holds JPEG image data'), false)).toBe(2);
    expect(exitFor(new ModelError('m.onnx', 'not a valid ONNX model'), false)).toBe(2);
    const full = Object.assign(new Error('write ENOSPC'), { code: 'ENOSPC' });
    expect(exitFor(new OutputError(full), false)).toBe(74);
    expect(said).toEqual([
      'classify: stdin holds JPEG image data\n',
      'classify: m.onnx: not a valid ONNX model\n',
      'classify: cannot write output: no space left on device (ENOSPC)\n',
    ]);
  });
});
