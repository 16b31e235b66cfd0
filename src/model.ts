// Finds what --graph names: the model file, which backend runs it, its labels and its
// preprocessing. Everything here fails with a ModelError naming the file and the reason.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { type Engine, type EngineOptions, ModelError } from './backends/engine.js';
import type { EngineSpec, ModelFormat } from './backends/index.js';
import type { TfjsRuntime } from './backends/tfjs.js';
import type { Normalisation } from './image/tensor.js';
import { decodeMetadata } from './proto/onnx.js';
import type { Log } from './report.js';

/** --backend: an engine, or a TF.js runtime by name. */
export const BACKENDS = ['auto', 'onnx', 'tfjs', 'tfjs-node-gpu', 'tfjs-node', 'tfjs-wasm', 'tfjs-cpu'] as const;
export type BackendChoice = (typeof BACKENDS)[number];

/** Version folders, TF-Serving style: MODEL/1/, MODEL/2/, ... Highest number first. */
export function listVersions(dir: string): number[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  return entries
    .filter((e) => /^\d+$/.test(e) && !isFile(join(dir, e)))
    .map(Number)
    .sort((a, b) => b - a);
}

/** --graph as a folder of numbered versions (not a model folder that happens to hold numbers). */
function versionsOf(graph: string): number[] {
  if (!existsSync(graph) || isFile(graph) || MODEL_FILES.some(([n]) => isFile(join(graph, n)))) return [];
  return listVersions(graph);
}

/** Loads --graph; a folder of versions gives its highest version that loads, saying which
 * failed and why (a broken new version must not stop the CLI or the server). */
export async function loadNewestWorking<T>(
  graph: string,
  load: (graph: string, version?: string) => Promise<T>,
  log: Log,
): Promise<T> {
  const versions = versionsOf(graph);
  if (versions.length < 2) return load(graph);
  for (const [i, v] of versions.entries()) {
    try {
      return await load(join(graph, String(v)), String(v));
    } catch (err) {
      if (i === versions.length - 1) throw err;
      const why = err instanceof ModelError ? `${err.file}: ${err.message}` : (err as Error).message;
      log(`version ${v} failed to load, trying version ${versions[i + 1]}: ${why}`);
    }
  }
  throw new Error('unreachable');
}

export interface ResolvedModel {
  /** the version folder's number, when --graph named a folder of versions */
  version?: string;
  backend: EngineSpec['backend'];
  runtime: TfjsRuntime;
  format: ModelFormat;
  file: string;
  /** undefined only when resolved with requireLabels false (classify info) */
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

/** Files a model folder may hold, in the order they are looked for. */
const MODEL_FILES: [string, ModelFormat][] = [
  ['model.onnx', 'onnx'],
  ['model.json', 'tfjs-graph'],
  ['saved_model.pb', 'saved-model'],
  ['output_graph.pb', 'frozen'],
  ['frozen_graph.pb', 'frozen'],
];

function formatOf(file: string): ModelFormat | undefined {
  const name = basename(file);
  if (name.endsWith('.onnx')) return 'onnx';
  if (name === 'saved_model.pb') return 'saved-model';
  if (name.endsWith('.pb')) return 'frozen';
  if (name === 'model.json') return 'tfjs-graph';
  return undefined;
}

function findModelFile(graph: string): string {
  if (!existsSync(graph)) throw new ModelError(graph, 'no such file or directory');
  if (isFile(graph)) return graph;
  for (const [name] of MODEL_FILES) if (isFile(join(graph, name))) return join(graph, name);
  const graphs = readdirSync(graph).filter((f) => f.endsWith('.pb'));
  if (graphs.length === 1) return join(graph, graphs[0]);
  throw new ModelError(graph, `folder holds no model (looked for ${MODEL_FILES.map(([n]) => n).join(', ')}, or a single .pb)`);
}

export function resolveModel(graph: string, labels?: string, backend: BackendChoice = 'auto', requireLabels = true): ResolvedModel {
  let version: string | undefined;
  const latest = versionsOf(graph)[0];
  if (latest !== undefined) {
    version = String(latest);
    graph = join(graph, version);
  }
  const file = findModelFile(graph);
  const format = formatOf(file);
  if (!format) {
    throw new ModelError(file, `unrecognised model format "${basename(file)}" (expected .onnx, a frozen graph .pb, model.json or saved_model.pb)`);
  }
  const engine: EngineSpec['backend'] = backend === 'auto' ? 'auto' : backend === 'onnx' ? 'onnx' : 'tfjs';
  if (engine === 'onnx' && format !== 'onnx' && format !== 'frozen') {
    throw new ModelError(file, `--backend onnx runs .onnx models and frozen graphs; this is a ${format} model (use --backend auto or tfjs)`);
  }
  if (engine === 'tfjs' && format === 'onnx') throw new ModelError(file, `--backend ${backend} runs TensorFlow models; this is an ONNX model`);
  const runtime: TfjsRuntime = backend.startsWith('tfjs-') ? (backend.slice(5) as TfjsRuntime) : 'auto';
  const dir = dirname(file);
  const labelsFile = labels ?? LABEL_FILES.map((n) => join(dir, n)).find(isFile);
  if (!labelsFile && requireLabels) throw new ModelError(file, `no labels file beside it (looked for ${LABEL_FILES.join(', ')}); pass --labels FILE`);
  const { normalisation, source } = normalisationHints(file, dir, format);
  return { version, backend: engine, runtime, format, file, labelsFile: labelsFile ?? '', normalisation, normalisationSource: source };
}

function normalisationHints(file: string, dir: string, format: ModelFormat): { normalisation: Partial<Normalisation>; source: string } {
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
  if (format !== 'onnx') return { normalisation: {}, source: 'defaults' };
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

/** What the engine thread loads for a resolved model. */
export function engineSpec(model: ResolvedModel, opts: EngineOptions): EngineSpec {
  return { backend: model.backend, format: model.format, runtime: model.runtime, file: model.file, options: opts };
}

/** The preprocessing that applies, first to last: flags, classify.json or ONNX metadata, what
 * the model format implies (TF graphs), ImageNet's statistics. */
export function chooseNormalisation(
  model: ResolvedModel,
  implied: Engine['normalisation'],
  flags: Partial<Normalisation> = {},
): Normalisation & { source: string } {
  const fallback = implied ?? { ...IMAGENET, source: 'ImageNet default' };
  return {
    mean: flags.mean ?? model.normalisation.mean ?? fallback.mean,
    std: flags.std ?? model.normalisation.std ?? fallback.std,
    source: flags.mean || flags.std ? 'flags' : model.normalisationSource === 'defaults' ? fallback.source : model.normalisationSource,
  };
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
