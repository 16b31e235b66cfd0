// Preprocessing a model's own files state: classify.json and ONNX metadata (the same keys).
import { join } from 'node:path';
import { invalidValue, ModelError } from '../errors.js';
import { ICC_MODES, type ImageSteps, type Preprocessing, parseCrop, RESIZE_MODES, type ResizeMode } from '../image/preprocessing.js';
import type { Normalisation } from '../image/tensor.js';
import * as parse from '../parse.js';

/** Preprocessing values one place states, and which place. */
export interface PreprocessingHints {
  source: string;
  values: Partial<Preprocessing>;
  /** the size this preprocessing produces, for models whose input size is symbolic (Hugging Face
   * exports leave every dimension but none fixed) */
  inputSize?: { height: number; width: number };
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

/** Accepts 127.5, "127.5", [1,2,3] or "1,2,3" and returns one value per channel. */
/** A per-channel setting read from `where` (a model file), as the flags read theirs. */
export function channelTriple(value: unknown, what: string, where: string, positive = false): Normalisation['mean'] {
  try {
    return parse.channelTriple(value, what, positive);
  } catch (err) {
    throw new ModelError(where, (err as Error).message);
  }
}
