// What -o, --resume and --cache add around the filter's classifier, set up after the model is
// loaded and before any input is read.
import { CachingClassifier, ContentCache, DEFAULT_CACHE_ENTRIES } from '../cache/cache.js';
import type { Classifier, Prediction } from '../classifier/classifier.js';
import { type FingerprintOptions, modelFingerprint } from '../cache/fingerprint.js';
import type { FilePath } from '../image/decode.js';
import type { Log } from '../log.js';
import { OutputFile, type OutputOptions } from './resume.js';
import { UsageError } from '../errors.js';

export interface BulkOptions extends OutputOptions, FingerprintOptions {
  /** reuse answers for identical bytes from this folder */
  cache?: string;
  cacheEntries?: number;
  verbose: boolean;
}

/** What the filter classifies with: a loaded model or remote servers, and either through the cache. */
export interface PathClassifier {
  classifyPath(path: FilePath, topK: number, threshold: number): Promise<{ predictions: Prediction[]; version?: string; model?: string }>;
  close(): Promise<void>;
}

/** The classifier to use (through the cache with --cache) and FILE with -o. `local` is the
 * loaded model, undefined with --remote (the CLI refuses --cache there), where `remoteModel` is
 * the fingerprint the backends give. A setup that fails (exit 2) closes the classifier first. */
export async function setUpBulk(
  opts: BulkOptions,
  classifier: PathClassifier,
  local: Classifier | undefined,
  log: Log,
  stopInput: () => void,
  remoteModel?: string,
): Promise<{ classifier: PathClassifier; output?: OutputFile }> {
  try {
    if (!local && opts.resume && remoteModel === undefined) {
      throw new UsageError('--resume: the --remote backends do not say which model they serve (a classify serve that sends X-Model-Fingerprint does)');
    }
    const set = wrap(opts, classifier, local, log, remoteModel);
    if (set.output) set.output.stopInput = stopInput;
    return set;
  } catch (err) {
    await classifier.close();
    throw err;
  }
}

function wrap(opts: BulkOptions, classifier: PathClassifier, local: Classifier | undefined, log: Log, remoteModel?: string): { classifier: PathClassifier; output?: OutputFile } {
  let caching: CachingClassifier | undefined;
  let wrapped: PathClassifier = classifier;
  if (opts.cache && local) {
    caching = new CachingClassifier(ContentCache.open(opts.cache, opts.cacheEntries ?? DEFAULT_CACHE_ENTRIES), opts);
    const cache = caching.cache;
    wrapped = {
      classifyPath: (p, k, t) => caching!.classifyPath(local, p, k, t),
      close: async () => {
        await cache.close();
        if (opts.verbose) log(`cache ${cache.dir}: ${cache.hits} hits, ${cache.misses} misses`);
        await classifier.close();
      },
    };
  }
  const model = local ? (caching ? caching.fingerprint(local) : opts.output ? modelFingerprint(local.info, opts) : undefined) : remoteModel;
  if (opts.verbose && model) log(`model fingerprint ${model}`);
  const output = opts.output ? OutputFile.open({ ...opts, output: opts.output }, model, log) : undefined;
  return { classifier: wrapped, output };
}
