// The photos to learn from, as retrain.py reads them: one folder per label under IMAGE_DIR, the
// folder's name the label, images at any depth below it; each image in the training, validation
// or testing set by a hash of its file name, so that it stays in its set when photos are added.
import * as crypto from 'node:crypto';
import { type Dirent, readdirSync } from 'node:fs';
import { basename, extname, join, sep } from 'node:path';
import { UsageError } from '../errors.js';

export type SetName = 'training' | 'validation' | 'testing';

export interface LabelledImage {
  path: string;
  /** index into the labels */
  label: number;
  set: SetName;
}

/** Extensions read as images (any case); other files are left alone, as retrain.py does. */
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif'];

/** retrain.py's MAX_NUM_IMAGES_PER_CLASS: 2^27 - 1. */
const MAX_NUM_IMAGES_PER_CLASS = 2 ** 27 - 1;

/** retrain.py's rule: SHA-1 of the name with anything after `_nohash_` removed, taken modulo
 * 2^27 (its last 27 bits) and scaled to a percentage; below `validation` is validation, below
 * `validation + testing` testing, the rest training. retrain.py hashes the path as its glob gave
 * it (IMAGE_DIR as typed, included); this hashes the file name alone, so that moving or renaming
 * IMAGE_DIR, or a photo's sub-folder, keeps every photo in its set. */
export function whichSet(file: string, validation: number, testing: number): SetName {
  const hashName = basename(file).replace(/_nohash_.*$/s, '');
  const low27 = parseInt(sha1Hex(hashName).slice(-8), 16) & MAX_NUM_IMAGES_PER_CLASS;
  const percentage = low27 * (100.0 / MAX_NUM_IMAGES_PER_CLASS);
  if (percentage < validation) return 'validation';
  if (percentage < testing + validation) return 'testing';
  return 'training';
}

/** SHA-1 in hex. crypto.hash (Node 20.12 and later) in one call: for the digits' 1,797 names 2 ms
 * against 6-8 for createHash and a Buffer digest (2026-12-05); the package runs on Node 20.9 too. */
const sha1Hex: (text: string) => string =
  typeof crypto.hash === 'function' ? (text) => crypto.hash('sha1', text) : (text) => crypto.createHash('sha1').update(text).digest('hex');

/** The labels (sorted folder names) and every image under them. Throws UsageError for a folder
 * that cannot be read, a label folder without images, or fewer than two labels. */
export function listImages(dir: string, validation: number, testing: number): { labels: string[]; images: LabelledImage[] } {
  const folders = entries(dir)
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
  const images: LabelledImage[] = [];
  for (const [label, name] of folders.entries()) {
    const found = walk(join(dir, name));
    if (found.length === 0) throw new UsageError(`${join(dir, name)}: label folder holds no images (${IMAGE_EXTENSIONS.join(', ')})`);
    for (const path of found) images.push({ path, label, set: whichSet(path, validation, testing) });
  }
  if (folders.length < 2) {
    const which = folders.length === 0 ? 'no label folders' : `only one label folder (${folders[0]})`;
    throw new UsageError(`${dir}: ${which}; a classifier needs a sub-folder of images for each of two or more labels`);
  }
  return { labels: folders, images };
}

function entries(dir: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    throw new UsageError(`${dir}: cannot read the folder (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** Image files at any depth, in a stable order. Symbolic links to folders are not followed (a
 * link back up would never end); a link to a file is read as the file. */
function walk(dir: string): string[] {
  const out: string[] = [];
  // `dir` comes from join(), normalised, and a name from readdir is one segment: joined by hand,
  // the same string, without join's normalising each time (for the digits' 1,797 photos, 2.5 ms
  // against 6.5-9 cold, 2026-12-05).
  const prefix = dir.endsWith(sep) ? dir : dir + sep;
  for (const e of entries(dir).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (e.name.startsWith('.')) continue;
    const full = prefix + e.name;
    if (e.isDirectory()) out.push(...walk(full));
    else if ((e.isFile() || e.isSymbolicLink()) && IMAGE_EXTENSIONS.includes(extname(e.name).toLowerCase())) out.push(full);
  }
  return out;
}
