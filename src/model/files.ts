// Reading a model folder's files: whether a name is a file, which model files a folder may hold,
// and its JSON settings files, read defensively (ModelError naming the file).
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelFormat } from '../backends/load.js';
import { ModelError } from '../errors.js';

export function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Files a model folder may hold, in the order they are looked for. */
export const MODEL_FILES: [string, ModelFormat][] = [
  ['model.onnx', 'onnx'],
  [join('onnx', 'model.onnx'), 'onnx'],
  ['model.json', 'tfjs-graph'],
  ['saved_model.pb', 'saved-model'],
  ['output_graph.pb', 'frozen'],
  ['frozen_graph.pb', 'frozen'],
];

export function readJson(file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelError(file, `not valid JSON: ${(err as Error).message}`);
  }
  // Every setting classify reads is a number, a string or a short list: deeper nesting is not
  // one of its files, and walking it would overflow the stack.
  if (nestingOver(value, 8)) throw new ModelError(file, 'nested deeper than any model settings file');
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ModelError(file, 'expected a JSON object');
  return value as Record<string, unknown>;
}

/** Whether a parsed JSON value nests deeper than `depth`, found without recursion. */
export function nestingOver(value: unknown, depth: number): boolean {
  let level: unknown[] = [value];
  for (let d = 0; level.length > 0; d++) {
    if (d > depth) return true;
    level = level.flatMap((v) => (typeof v === 'object' && v !== null ? Object.values(v) : []));
  }
  return false;
}
