// Finds what --graph names: the model file, which backend runs it, its labels and its
// preprocessing. Everything here fails with a ModelError naming the file and the reason.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ModelError } from './backends/engine.js';
import type { EngineSpec } from './backends/index.js';
import type { Normalisation } from './image/tensor.js';
import { decodeMetadata } from './proto/onnx.js';

export interface ResolvedModel {
  backend: EngineSpec['backend'];
  file: string;
  labelsFile: string;
  /** normalisation hints found with the model (classify.json, ONNX metadata); flags override */
  normalisation: Partial<Normalisation>;
  normalisationSource: string;
}

const LABEL_FILES = ['labels.txt', 'output_labels.txt', 'retrained_labels.txt'];

/** ImageNet statistics in 0-255 units: what most exported ONNX classifiers were trained with. */
export const IMAGENET: Normalisation = { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375] };

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

export function resolveModel(graph: string, labels?: string): ResolvedModel {
  if (!existsSync(graph)) throw new ModelError(graph, 'no such file or directory');
  let file = graph;
  if (!isFile(graph)) {
    const inside = join(graph, 'model.onnx');
    if (!isFile(inside)) throw new ModelError(graph, 'folder holds no model (looked for model.onnx)');
    file = inside;
  }
  if (!file.endsWith('.onnx')) {
    throw new ModelError(file, `unrecognised model format "${basename(file)}" (expected .onnx)`);
  }
  const dir = dirname(file);
  const labelsFile = labels ?? LABEL_FILES.map((n) => join(dir, n)).find(isFile);
  if (!labelsFile) throw new ModelError(file, `no labels file beside it (looked for ${LABEL_FILES.join(', ')}); pass --labels FILE`);
  const { normalisation, source } = normalisationHints(file, dir);
  return { backend: 'onnx', file, labelsFile, normalisation, normalisationSource: source };
}

function normalisationHints(file: string, dir: string): { normalisation: Partial<Normalisation>; source: string } {
  const configFile = join(dir, 'classify.json');
  if (isFile(configFile)) {
    let config: { mean?: unknown; std?: unknown };
    try {
      config = JSON.parse(readFileSync(configFile, 'utf8'));
    } catch (err) {
      throw new ModelError(configFile, `not valid JSON: ${(err as Error).message}`);
    }
    return {
      normalisation: {
        mean: config.mean === undefined ? undefined : channelTriple(config.mean, 'mean', configFile),
        std: config.std === undefined ? undefined : channelTriple(config.std, 'std', configFile, true),
      },
      source: configFile,
    };
  }
  let meta: Record<string, string>;
  try {
    meta = decodeMetadata(readFileSync(file));
  } catch (err) {
    throw new ModelError(file, `not a valid ONNX model: ${(err as Error).message}`);
  }
  if (meta.mean !== undefined || meta.std !== undefined) {
    return {
      normalisation: {
        mean: meta.mean === undefined ? undefined : channelTriple(meta.mean, 'mean', file),
        std: meta.std === undefined ? undefined : channelTriple(meta.std, 'std', file, true),
      },
      source: `${file} metadata`,
    };
  }
  return { normalisation: {}, source: 'defaults' };
}

/** Accepts 127.5, "127.5", [1,2,3] or "1,2,3" and returns one value per channel. */
export function channelTriple(value: unknown, what: string, where: string, positive = false): [number, number, number] {
  const parts = Array.isArray(value) ? value : typeof value === 'number' ? [value] : String(value).split(',');
  const nums = parts.map((v) => (typeof v === 'number' ? v : Number(String(v).trim())));
  const ok = (nums.length === 1 || nums.length === 3) && nums.every((n) => Number.isFinite(n) && (!positive || n > 0));
  if (!ok) {
    throw new ModelError(
      where,
      `Expected one or three ${positive ? 'positive ' : ''}numbers for ${what} but received ${JSON.stringify(value)}`,
    );
  }
  return (nums.length === 1 ? [nums[0], nums[0], nums[0]] : nums) as [number, number, number];
}

/** One label per line, or every line `index:label` (as TF's ImageNet label files are). */
export function readLabels(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ModelError(file, `cannot read labels: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();
  if (lines.length === 0) throw new ModelError(file, 'labels file is empty');
  const indexed = lines.map((l) => /^(\d+):(.*)$/.exec(l));
  if (indexed.every((m) => m !== null)) {
    const labels: string[] = [];
    for (const m of indexed) labels[Number(m![1])] = m![2].trim();
    for (let i = 0; i < labels.length; i++) {
      if (labels[i] === undefined) throw new ModelError(file, `labels file has no entry for index ${i}`);
    }
    return labels;
  }
  return lines.map((l) => l.trim());
}
