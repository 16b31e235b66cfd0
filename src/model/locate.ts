// What --graph names: the model file, its format, which backend runs it, its labels file and the
// preprocessing hints found with it. Everything here fails with a ModelError naming the file.
import { existsSync, readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { EngineOptions } from '../backends/engine.js';
import type { EngineSpec, ModelFormat } from '../backends/load.js';
import { ModelError } from '../errors.js';
import type { TfjsRuntime } from '../backends/tfjs.js';
import { readMetadata } from '../proto/onnx.js';
import { isFile, MODEL_FILES, readJson } from './files.js';
import { type PreprocessingHints, parseHints } from './hints.js';
import { HF_PREPROCESSOR, huggingFaceHints } from './huggingface.js';
import { HF_CONFIG, hfLabelsFile, LABEL_FILES } from './labels.js';
import { versionsOf } from './versions.js';

/** --backend: an engine, or a TF.js runtime by name. */
export const BACKENDS = ['auto', 'onnx', 'tfjs', 'tfjs-node-gpu', 'tfjs-node', 'tfjs-wasm', 'tfjs-cpu'] as const;
export type BackendChoice = (typeof BACKENDS)[number];

export interface ResolvedModel {
  /** the version folder's number, when --graph named a folder of versions */
  version?: string;
  backend: EngineSpec['backend'];
  runtime: TfjsRuntime;
  format: ModelFormat;
  file: string;
  /** absent only where labels are not required (classify info, convert) */
  labelsFile?: string;
  /** preprocessing found with the model, first to last: classify.json, ONNX metadata, a Hugging
   * Face preprocessor_config.json. Flags come before them, the model's kind after. */
  hints: PreprocessingHints[];
}

export function formatOf(file: string): ModelFormat | undefined {
  const name = basename(file);
  if (name.endsWith('.onnx')) return 'onnx';
  if (name === 'saved_model.pb') return 'saved-model';
  if (name.endsWith('.pb')) return 'frozen';
  if (name === 'model.json') return 'tfjs-graph';
  return undefined;
}

export function findModelFile(graph: string): string {
  if (!existsSync(graph)) throw new ModelError(graph, 'no such file or directory');
  if (isFile(graph)) return graph;
  for (const [name] of MODEL_FILES) if (isFile(join(graph, name))) return join(graph, name);
  const graphs = readdirSync(graph).filter((f) => f.endsWith('.pb'));
  if (graphs.length === 1) return join(graph, graphs[0]);
  throw new ModelError(graph, `folder holds no model (looked for ${MODEL_FILES.map(([n]) => n).join(', ')}, or a single .pb)`);
}

/** A model whose labels were found: what classifying needs. */
export type LabelledModel = ResolvedModel & { labelsFile: string };

/** Throws ModelError when no labels file is found, unless `requireLabels` is false. */
export function resolveModel(graph: string, labels?: string, backend?: BackendChoice): LabelledModel;
export function resolveModel(graph: string, labels: string | undefined, backend: BackendChoice, requireLabels: false): ResolvedModel;
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
  // A Hugging Face folder keeps its configuration beside onnx/, not in it.
  const dirs = basename(dir) === 'onnx' ? [dir, dirname(dir)] : [dir];
  const labelsFile = labels ?? dirs.flatMap((d) => LABEL_FILES.map((n) => join(d, n))).find(isFile) ?? hfLabelsFile(dirs);
  if (!labelsFile && requireLabels) {
    throw new ModelError(file, `no labels file beside it (looked for ${LABEL_FILES.join(', ')}, or ${HF_CONFIG} with id2label); pass --labels FILE`);
  }
  return { version, backend: engine, runtime, format, file, labelsFile, hints: preprocessingHints(file, dirs, format) };
}

export function preprocessingHints(file: string, dirs: string[], format: ModelFormat): PreprocessingHints[] {
  const hints: PreprocessingHints[] = [];
  const configFile = dirs.map((d) => join(d, 'classify.json')).find(isFile);
  if (configFile) hints.push({ source: configFile, values: parseHints(readJson(configFile), configFile) });
  if (format !== 'onnx') return hints;
  let meta: Record<string, string>;
  try {
    meta = readMetadata(file);
  } catch (err) {
    throw new ModelError(file, `not a valid ONNX model: ${(err as Error).message}`);
  }
  const fromMeta = parseHints(meta, file);
  if (Object.keys(fromMeta).length > 0) hints.push({ source: `${file} metadata`, values: fromMeta });
  const hf = dirs.map((d) => join(d, HF_PREPROCESSOR)).find(isFile);
  if (hf) hints.push(huggingFaceHints(readJson(hf), hf));
  return hints;
}

/** What the engine thread loads for a resolved model. */
export function engineSpec(model: ResolvedModel, opts: EngineOptions): EngineSpec {
  const imageSize = model.hints.find((h) => h.inputSize)?.inputSize;
  return { backend: model.backend, format: model.format, runtime: model.runtime, file: model.file, options: imageSize ? { ...opts, imageSize } : opts };
}
