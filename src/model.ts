// Finds what --graph names: the model file, which backend runs it, its labels and its
// preprocessing. Everything here fails with a ModelError naming the file and the reason.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { EngineOptions } from './backends/engine.js';
import type { EngineSpec, ModelFormat } from './backends/load.js';
import { invalidValue, ModelError } from './errors.js';
import * as parse from './parse.js';
import type { TfjsRuntime } from './backends/tfjs.js';
import {
  ICC_MODES,
  type ImpliedNormalisation,
  type ImageSteps,
  type Preprocessing,
  PREPROCESSING_KEYS,
  type PreprocessingKey,
  parseCrop,
  RESIZE_MODES,
  type ResizeMode,
  VIEWER_STEPS,
} from './image/preprocessing.js';
import type { Normalisation } from './image/tensor.js';
import { readMetadata } from './proto/onnx.js';
import type { Log } from './log.js';

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
  /** absent only where labels are not required (classify info, convert) */
  labelsFile?: string;
  /** preprocessing found with the model, first to last: classify.json, ONNX metadata, a Hugging
   * Face preprocessor_config.json. Flags come before them, the model's kind after. */
  hints: PreprocessingHints[];
}

/** Preprocessing values one place states, and which place. */
export interface PreprocessingHints {
  source: string;
  values: Partial<Preprocessing>;
  /** the size this preprocessing produces, for models whose input size is symbolic (Hugging Face
   * exports leave every dimension but none fixed) */
  inputSize?: { height: number; width: number };
}

const LABEL_FILES = ['labels.txt', 'output_labels.txt', 'retrained_labels.txt'];
/** Hugging Face exports (transformers.js, Optimum): labels in config.json's id2label. */
const HF_CONFIG = 'config.json';
const HF_PREPROCESSOR = 'preprocessor_config.json';

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
  [join('onnx', 'model.onnx'), 'onnx'],
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

function hfLabelsFile(dirs: string[]): string | undefined {
  return dirs.map((d) => join(d, HF_CONFIG)).find((f) => isFile(f) && readJson(f).id2label !== undefined);
}

function readJson(file: string): Record<string, unknown> {
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

function preprocessingHints(file: string, dirs: string[], format: ModelFormat): PreprocessingHints[] {
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

/** classify.json and ONNX metadata: the same keys, values as JSON or as strings. Other keys are
 * left alone (metadata may hold anything). */
export function parseHints(raw: Record<string, unknown>, where: string): Partial<Preprocessing> {
  const out: Partial<Preprocessing> = {};
  const invalid = (key: string, expected: string): never => {
    throw new ModelError(where, invalidValue(expected, key, raw[key]));
  };
  if (raw.mean !== undefined) out.mean = channelTriple(raw.mean, 'mean', where);
  if (raw.std !== undefined) out.std = channelTriple(raw.std, 'std', where, true);
  if (raw.resize !== undefined) {
    if (!RESIZE_MODES.includes(raw.resize as ResizeMode)) invalid('resize', `one of ${RESIZE_MODES.join(', ')}`);
    out.resize = raw.resize as ResizeMode;
  }
  if (raw.crop !== undefined) {
    try {
      out.crop = parseCrop(raw.crop);
    } catch (err) {
      throw new ModelError(where, (err as Error).message);
    }
  }
  if (raw.icc !== undefined) {
    if (!ICC_MODES.includes(raw.icc as ImageSteps['icc'])) invalid('icc', `one of ${ICC_MODES.join(', ')}`);
    out.icc = raw.icc as ImageSteps['icc'];
  }
  if (raw.exif_rotate !== undefined) {
    if (![true, false, 'true', 'false'].includes(raw.exif_rotate as string)) invalid('exif_rotate', 'true or false');
    out.exifRotate = raw.exif_rotate === true || raw.exif_rotate === 'true';
  }
  return out;
}

/** PIL resample codes (Image.Resampling) as Hugging Face's configs store them. */
const PIL_RESAMPLE: Record<number, string> = { 0: 'nearest', 1: 'lanczos', 2: 'bilinear', 3: 'bicubic', 4: 'box', 5: 'hamming' };
/** Processors whose bare-number `size` is the shorter side (transformers' default_to_square=False). */
const SHORTER_SIDE_PROCESSORS = /^(CLIP|ChineseCLIP|ConvNext|Bit|MobileNetV1|MobileNetV2|MobileViT|LeViT|PoolFormer|EfficientFormer)/;

/** A Hugging Face preprocessor_config.json, as its image processor applies it: PIL resize (the
 * shorter side, or to a fixed size), centre crop, x * rescale_factor, then (x - mean) / std.
 * Hugging Face's load_image applies the EXIF orientation and ignores ICC profiles, as PIL does. */
export function huggingFaceHints(cfg: Record<string, unknown>, where: string): PreprocessingHints {
  const notes: string[] = [];
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const size2 = (v: unknown): { height: number; width: number } | undefined => {
    if (num(v)) return { height: num(v)!, width: num(v)! };
    const o = v as { height?: unknown; width?: unknown } | undefined;
    return num(o?.height) && num(o?.width) ? { height: num(o!.height)!, width: num(o!.width)! } : undefined;
  };
  const resample = num(cfg.resample) ?? 2;
  let resize: ResizeMode = resample === 3 ? 'pil-bicubic' : 'pil-bilinear';
  if (resample !== 2 && resample !== 3) {
    resize = resample === 1 || resample === 5 ? 'pil-bicubic' : 'pil-bilinear';
    notes.push(`resample ${resample} (${PIL_RESAMPLE[resample] ?? 'unknown'}) is not implemented; ${resize} is the nearest`);
  }

  const type = String(cfg.image_processor_type ?? cfg.feature_extractor_type ?? '');
  const size = cfg.size as Record<string, unknown> | number | undefined;
  const shorter = num((size as { shortest_edge?: unknown })?.shortest_edge) ?? (num(size) && SHORTER_SIDE_PROCESSORS.test(type) ? num(size) : undefined);
  const cropping = cfg.do_center_crop === true;
  const values: Partial<Preprocessing> = { resize, icc: 'ignore', exifRotate: true };
  if (shorter !== undefined) {
    const pct = num(cfg.crop_pct);
    // ConvNext: the shorter side to size/crop_pct, then a size x size crop; from 384 px, a plain resize.
    if (pct !== undefined && /^ConvNext/.test(type)) values.crop = shorter < 384 ? { shorter: Math.floor(shorter / pct) } : null;
    else {
      values.crop = { shorter };
      if (!cropping) notes.push('no centre crop in the config: the shorter side is resized and the centre taken at the model size');
    }
  } else {
    const fixed = size2(size);
    const crop = size2(cfg.crop_size);
    values.crop = cropping && fixed && crop && (fixed.height !== crop.height || fixed.width !== crop.width) ? fixed : null;
  }

  const cropSize = size2(cfg.crop_size);
  const inputSize = cropping && cropSize ? cropSize : (size2(size) ?? (shorter !== undefined ? { height: shorter, width: shorter } : undefined));

  const rescale = cfg.do_rescale === false ? 1 : (num(cfg.rescale_factor) ?? 1 / 255);
  const round = (x: number) => Number(x.toPrecision(7));
  const triple = (v: unknown, what: string) => (v === undefined ? undefined : channelTriple(v, what, where, what === 'image_std'));
  if (cfg.do_normalize === false) {
    values.mean = [0, 0, 0];
    values.std = [1, 1, 1].map((x) => round(x / rescale)) as Normalisation['std'];
  } else {
    const mean = triple(cfg.image_mean, 'image_mean');
    const std = triple(cfg.image_std, 'image_std');
    if (mean) values.mean = mean.map((m) => round(m / rescale)) as Normalisation['mean'];
    if (std) values.std = std.map((s) => round(s / rescale)) as Normalisation['std'];
  }
  return { source: notes.length ? `${where} (${notes.join('; ')})` : where, values, inputSize };
}

/** Accepts 127.5, "127.5", [1,2,3] or "1,2,3" and returns one value per channel. */
/** A per-channel setting read from `where` (a model file), as the flags read theirs. */
function channelTriple(value: unknown, what: string, where: string, positive = false): Normalisation['mean'] {
  try {
    return parse.channelTriple(value, what, positive);
  } catch (err) {
    throw new ModelError(where, (err as Error).message);
  }
}

/** What the engine thread loads for a resolved model. */
export function engineSpec(model: ResolvedModel, opts: EngineOptions): EngineSpec {
  const imageSize = model.hints.find((h) => h.inputSize)?.inputSize;
  return { backend: model.backend, format: model.format, runtime: model.runtime, file: model.file, options: imageSize ? { ...opts, imageSize } : opts };
}

/** What a model's kind implies when nothing else says: TensorFlow decodes without colour
 * management or EXIF rotation; frozen graphs are retrain.py's, TF2 models resize as tf.image.resize. */
function kindDefaults(format: ModelFormat): PreprocessingHints {
  switch (format) {
    case 'frozen':
      return { source: "TensorFlow frozen graph: retrain.py's pipeline", values: { resize: 'tf1', crop: null, icc: 'ignore', exifRotate: false } };
    case 'saved-model':
    case 'tfjs-graph':
      return { source: "TensorFlow 2 model: tf.image.resize's default, decoded as TensorFlow does", values: { resize: 'bilinear', crop: null, icc: 'ignore', exifRotate: false } };
    default:
      return { source: "classify's default for models that say nothing", values: { ...VIEWER_STEPS } };
  }
}

export interface ChosenPreprocessing {
  preprocessing: Preprocessing;
  /** for each setting, where it came from */
  sources: Record<PreprocessingKey, string>;
}

/** The preprocessing that applies, each setting from the first that states it: flags,
 * classify.json, ONNX metadata, preprocessor_config.json, the graph's own constants (TF graphs),
 * the model's kind, ImageNet's statistics. */
export function choosePreprocessing(model: ResolvedModel, implied: ImpliedNormalisation | undefined, flags: Partial<Preprocessing> = {}): ChosenPreprocessing {
  const layers: PreprocessingHints[] = [
    { source: 'flags', values: flags },
    ...model.hints,
    ...(implied ? [{ source: implied.source, values: { mean: implied.mean, std: implied.std } }] : []),
    kindDefaults(model.format),
    { source: 'ImageNet default', values: IMAGENET },
  ];
  const preprocessing = {} as Record<PreprocessingKey, unknown>;
  const sources = {} as Record<PreprocessingKey, string>;
  for (const key of PREPROCESSING_KEYS) {
    const layer = layers.find((l) => l.values[key] !== undefined)!;
    preprocessing[key] = layer.values[key];
    sources[key] = layer.source;
  }
  return { preprocessing: preprocessing as unknown as Preprocessing, sources };
}

/** "resize, icc from A; mean, std from B": each source once, in the order of the settings. */
export function describeSources(sources: Record<PreprocessingKey, string>): string {
  const bySource = new Map<string, string[]>();
  for (const key of PREPROCESSING_KEYS) {
    const name = key === 'exifRotate' ? 'exif_rotate' : key;
    bySource.set(sources[key], [...(bySource.get(sources[key]) ?? []), name]);
  }
  return [...bySource].map(([source, keys]) => `${keys.join(', ')} from ${source}`).join('; ');
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

/** Whether a parsed JSON value nests deeper than `depth`, found without recursion. */
function nestingOver(value: unknown, depth: number): boolean {
  let level: unknown[] = [value];
  for (let d = 0; level.length > 0; d++) {
    if (d > depth) return true;
    level = level.flatMap((v) => (typeof v === 'object' && v !== null ? Object.values(v) : []));
  }
  return false;
}

function labelsFromId2label(id2label: unknown, file: string): string[] {
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
