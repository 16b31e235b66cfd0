// What is done to an image before the model sees it: decoding choices, resizing, normalisation.
// Plain data, so it can be written to ONNX metadata, read from classify.json, sent to a thread.
import { invalidValue } from '../errors.js';
import type { Crop } from './resize.js';
import type { Normalisation } from './tensor.js';

export const RESIZE_MODES = ['tf1', 'bilinear', 'area', 'pil-bilinear', 'pil-bicubic'] as const;
export type ResizeMode = (typeof RESIZE_MODES)[number];

export const ICC_MODES = ['apply', 'ignore'] as const;
export type IccMode = (typeof ICC_MODES)[number];

/** Decoding and resizing: everything before normalisation. */
export interface ImageSteps {
  resize: ResizeMode;
  crop: Crop;
  /** the embedded colour profile converted to sRGB, or the stored values taken as they are */
  icc: IccMode;
  /** the EXIF orientation applied (the image as a viewer shows it) */
  exifRotate: boolean;
}

export interface Preprocessing extends ImageSteps, Normalisation {}

/** A normalisation the model's format implies, and where it was found (a TF graph's own
 * constants, a default for its kind). Flags and classify.json override it. */
export interface ImpliedNormalisation extends Normalisation {
  source: string;
}

export type PreprocessingKey = keyof Preprocessing;
export const PREPROCESSING_KEYS: PreprocessingKey[] = ['resize', 'crop', 'icc', 'exifRotate', 'mean', 'std'];

/** What each resize mode reproduces, for --help, info and --verbose. */
export const RESIZE_MATCHES: Record<ResizeMode, string> = {
  tf1: 'bilinear, source = output x in/out, no antialiasing, in float: TF1 resize_bilinear as retrain.py and label_image.py use it',
  bilinear: 'bilinear with half-pixel centres, no antialiasing, in float: TF2 tf.image.resize, ONNX Resize (linear), OpenCV INTER_LINEAR',
  area: "libvips' antialiased reduction, JPEGs shrunk while decoding: fast, matches no training pipeline exactly",
  'pil-bilinear': "PIL's Image.resize BILINEAR, antialiased when shrinking, 8-bit: torchvision Resize on PIL images, Hugging Face image processors",
  'pil-bicubic': "PIL's Image.resize BICUBIC, antialiased when shrinking, 8-bit: torchvision/timm/Hugging Face with bicubic",
};

/** The modes that reproduce a framework's pixels: they decode at full size (DCT-scaled decoding
 * changes the pixels) and never apply a colour profile unless asked. */
export const isExact = (mode: ResizeMode) => mode !== 'area';

/** What `classify` did before it read preprocessing from models, and still does for models that
 * say nothing: an antialiased resize of the image as a viewer shows it. */
export const VIEWER_STEPS: ImageSteps = { resize: 'area', crop: null, icc: 'apply', exifRotate: true };

/** Reads "none", "0", "256" (shorter side) or "256x320" (HEIGHTxWIDTH). Throws with the reason. */
export function parseCrop(raw: unknown): Crop {
  if (raw === null || raw === 'none') return null;
  if (typeof raw === 'object') {
    const o = raw as Record<string, unknown>;
    if (positiveInteger(o.shorter)) return { shorter: Number(o.shorter) };
    if (positiveInteger(o.height) && positiveInteger(o.width)) return { height: Number(o.height), width: Number(o.width) };
  } else {
    const m = /^\s*(\d+)(?:\s*x\s*(\d+))?\s*$/.exec(String(raw));
    if (m && positiveInteger(m[1]) && (m[2] === undefined || positiveInteger(m[2]))) {
      return m[2] === undefined ? { shorter: Number(m[1]) } : { height: Number(m[1]), width: Number(m[2]) };
    }
  }
  throw new Error(invalidValue(`none, a positive integer up to ${MAX_CROP_SIDE} (the shorter side) or HEIGHTxWIDTH`, 'crop', raw));
}

/** Larger than any image a model is fed, small enough that the resize it asks for can be made. */
export const MAX_CROP_SIDE = 16384;

function positiveInteger(v: unknown): boolean {
  return (typeof v === 'number' || typeof v === 'string') && /^\d+$/.test(String(v)) && Number(v) > 0 && Number(v) <= MAX_CROP_SIDE;
}

export function formatCrop(crop: Crop): string {
  if (!crop) return 'none';
  return 'shorter' in crop ? String(crop.shorter) : `${crop.height}x${crop.width}`;
}

/** The crop must leave a window at least the model's size, or part of the input would be made up. */
export function cropProblem(crop: Crop, height: number, width: number): string | undefined {
  if (!crop) return undefined;
  const ok = 'shorter' in crop ? crop.shorter >= Math.max(height, width) : crop.height >= height && crop.width >= width;
  return ok ? undefined : `crop ${formatCrop(crop)} is smaller than the model's input ${height}x${width}`;
}

/** One line saying what happens to the pixels, e.g. for `info`. */
export function describeSteps(p: ImageSteps): string {
  const geometry = !p.crop
    ? 'the whole image to the input size'
    : 'shorter' in p.crop
      ? `the shorter side to ${p.crop.shorter}, then the centre cut out`
      : `the whole image to ${p.crop.height}x${p.crop.width}, then the centre cut out`;
  return [
    `resize ${p.resize} (${geometry})`,
    p.icc === 'apply' ? 'embedded ICC profile applied' : 'embedded ICC profile ignored',
    p.exifRotate ? 'EXIF orientation applied' : 'EXIF orientation not applied',
    isExact(p.resize) ? 'alpha dropped' : 'alpha flattened on white',
  ].join(', ');
}

/** The values as `classify.json` and ONNX metadata spell them (strings, for metadata). */
export function toMetadata(p: Preprocessing): Record<string, string> {
  return {
    resize: p.resize,
    crop: formatCrop(p.crop),
    icc: p.icc,
    exif_rotate: String(p.exifRotate),
    mean: p.mean.join(','),
    std: p.std.join(','),
  };
}
