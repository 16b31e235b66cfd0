// What an answer depends on besides the image: the model's bytes, its labels and the
// preprocessing. --resume compares it with the "model" field of FILE's lines and --cache keys
// on it, so an answer is reused only where the same model would give it again.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import type { ClassifierInfo } from '../classifier/classifier.js';

/** Bump when decoding or resizing changes (src/image/decode.ts): answers from before differ. */
const PREPROCESSING = 'rgb, exif-rotate, flatten-white, resize-fill, v1';

const sha256 = (bytes: Buffer | string) => createHash('sha256').update(bytes).digest('hex');

/** The model file and the files it loads beside it: a TF.js model's weight shards, a
 * SavedModel's variables. */
export function modelFiles(file: string): string[] {
  const dir = dirname(file);
  if (basename(file) === 'model.json') {
    const manifest = (JSON.parse(readFileSync(file, 'utf8')) as { weightsManifest?: { paths: string[] }[] }).weightsManifest ?? [];
    return [file, ...manifest.flatMap((group) => group.paths.map((p) => join(dir, p)))];
  }
  if (basename(file) === 'saved_model.pb') {
    const walk = (d: string): string[] =>
      readdirSync(d, { withFileTypes: true })
        .sort((a, b) => (a.name < b.name ? -1 : 1))
        .flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]));
    let variables: string[] = [];
    try {
      variables = walk(join(dir, 'variables'));
    } catch {
      // no variables folder: everything is in the graph
    }
    return [file, ...variables];
  }
  return [file];
}

/** 16 hex digits of a SHA-256 over everything that decides a loaded model's scores. Where the
 * model sits does not count: a copied or moved model keeps its fingerprint. */
export function modelFingerprint(info: ClassifierInfo): string {
  // Hashing the model's files is done once per loaded model (its info is frozen, one per load):
  // the cache, -o and serve's answers all ask for it.
  let print = computed.get(info);
  if (print === undefined) computed.set(info, (print = compute(info)));
  return print;
}

const computed = new WeakMap<ClassifierInfo, string>();

function compute(info: ClassifierInfo): string {
  const files = modelFiles(info.model);
  const parts = {
    preprocessing: PREPROCESSING,
    files: files.map((f) => [relative(dirname(info.model), f), sha256(readFileSync(f))]),
    labels: sha256(readFileSync(info.labelsFile)),
    // every step of the model's preprocessing: resize mode, crop, colour, rotation, mean, std
    steps: info.preprocessing,
    softmax: info.softmax,
    // The nodes as resolved, and only where not the model's own: --output_layer=final_result:0
    // names the default output, and answers the same as no flag.
    inputNode: info.nodes.input,
    outputNode: info.nodes.output,
  };
  return sha256(JSON.stringify(parts)).slice(0, 16);
}
