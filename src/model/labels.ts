// A model's labels: a labels file beside it (one per line, or index:label), or a Hugging Face
// config.json's id2label.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { invalidValue, ModelError } from '../errors.js';
import { isFile, readJson } from './files.js';

export const LABEL_FILES = ['labels.txt', 'output_labels.txt', 'retrained_labels.txt'];
/** Hugging Face exports (transformers.js, Optimum): labels in config.json's id2label. */
export const HF_CONFIG = 'config.json';

export function hfLabelsFile(dirs: string[]): string | undefined {
  return dirs.map((d) => join(d, HF_CONFIG)).find((f) => isFile(f) && readJson(f).id2label !== undefined);
}

/** One label per line, or every line `index:label` (as TF's ImageNet label files are), or a
 * Hugging Face config.json's id2label. */
export function readLabels(file: string): string[] {
  if (file.endsWith('.json')) return labelsFromId2label(readJson(file).id2label, file);
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

export function labelsFromId2label(id2label: unknown, file: string): string[] {
  if (typeof id2label !== 'object' || id2label === null) throw new ModelError(file, 'has no id2label object (the class names)');
  const entries = Object.entries(id2label as Record<string, unknown>);
  if (entries.length === 0) throw new ModelError(file, 'id2label is empty');
  const labels: string[] = [];
  for (const [k, v] of entries) {
    if (!/^\d+$/.test(k)) throw new ModelError(file, `id2label key ${JSON.stringify(k)} is not a class index`);
    if (typeof v !== 'string') throw new ModelError(file, invalidValue('a label (a string)', `id2label ${JSON.stringify(k)}`, v));
    labels[Number(k)] = v;
  }
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] === undefined) throw new ModelError(file, `id2label has no entry for index ${i}`);
  }
  return labels;
}
