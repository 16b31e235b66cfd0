// Which preprocessing applies, setting by setting: flags, the model's files, the graph's own
// constants, the model's kind, ImageNet's statistics.
import { join } from 'node:path';
import type { ModelFormat } from '../backends/load.js';
import { type ImpliedNormalisation, type Preprocessing, PREPROCESSING_KEYS, type PreprocessingKey, VIEWER_STEPS } from '../image/preprocessing.js';
import type { Normalisation } from '../image/tensor.js';
import type { PreprocessingHints } from './hints.js';
import type { ResolvedModel } from './locate.js';

/** ImageNet statistics in 0-255 units: what most exported ONNX classifiers were trained with. */
export const IMAGENET: Normalisation = { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375] };

/** What a model's kind implies when nothing else says: TensorFlow decodes without colour
 * management or EXIF rotation; frozen graphs are retrain.py's, TF2 models resize as tf.image.resize. */
export function kindDefaults(format: ModelFormat): PreprocessingHints {
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
