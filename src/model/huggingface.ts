// A Hugging Face export's preprocessor_config.json as its image processor applies it.
import { join } from 'node:path';
import type { Preprocessing, ResizeMode } from '../image/preprocessing.js';
import type { Normalisation } from '../image/tensor.js';
import { type PreprocessingHints, channelTriple } from './hints.js';

export const HF_PREPROCESSOR = 'preprocessor_config.json';

/** PIL resample codes (Image.Resampling) as Hugging Face's configs store them. */
export const PIL_RESAMPLE: Record<number, string> = { 0: 'nearest', 1: 'lanczos', 2: 'bilinear', 3: 'bicubic', 4: 'box', 5: 'hamming' };
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
