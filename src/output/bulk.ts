// What -o, --resume and --cache add around the filter's classifier, set up after the model is
// loaded and before any input is read.
import { CachedScores, ContentCache } from '../cache/cache.js';
import type { Classifier, Scorer } from '../classifier/classifier.js';
import { type Answer, answer, type Prediction } from '../classifier/ranking.js';
import { type FingerprintOptions, modelFingerprint } from '../cache/fingerprint.js';
import type { FilePath } from '../image/read.js';
import type { Log } from '../log.js';
import { OutputFile, type OutputOptions } from './resume.js';
import { UsageError } from '../errors.js';

export interface BulkOptions extends OutputOptions, FingerprintOptions {
  /** reuse answers for identical bytes from this folder */
  cache?: string;
  /** image files larger than this are refused unread, by the cache as by the decode threads */
  maxFileSize: number;
  cacheEntries: number;
  verbose: boolean;
}

/** What the filter classifies with: a loaded model or remote servers, and either through the
 * cache, answering what --top-k and --threshold ask. */
export interface PathClassifier {
  classify(path: FilePath): Promise<{ predictions: Prediction[]; version?: string; model?: string }>;
  close(): Promise<void>;
}

/** A scorer's probabilities for each path, answered as asked. */
export function answering(scorer: Scorer, asked: Answer, close: () => Promise<void>): PathClassifier {
  return {
    classify: (path) => scorer.score({ path }).then((probs) => ({ predictions: answer(probs, scorer.labels, asked), version: scorer.info.version })),
    close,
  };
}

/** The classifier to use (through the cache with --cache) and FILE with -o. `local` is the
 * loaded model, undefined with --remote (the CLI refuses --cache there), where `remoteModel` is
 * the fingerprint the backends give. A setup that fails (exit 2) closes the classifier first. */
export async function setUpBulk(
  opts: BulkOptions & Answer,
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

function wrap(opts: BulkOptions & Answer, classifier: PathClassifier, local: Classifier | undefined, log: Log, remoteModel?: string): { classifier: PathClassifier; output?: OutputFile } {
  let caching: CachedScores | undefined;
  let wrapped: PathClassifier = classifier;
  if (opts.cache && local) {
    caching = new CachedScores(ContentCache.open(opts.cache, opts.cacheEntries), opts);
    const cache = caching.cache;
    wrapped = answering(caching.for(local), opts, async () => {
      await cache.close();
      if (opts.verbose) log(`cache ${cache.dir}: ${cache.hits} hits, ${cache.misses} misses`);
      await classifier.close();
    });
  }
  const model = local ? (caching || opts.output ? modelFingerprint(local.info, opts) : undefined) : remoteModel;
  if (opts.verbose && model) log(`model fingerprint ${model}`);
  const output = opts.output ? OutputFile.open({ ...opts, output: opts.output }, model, log) : undefined;
  return { classifier: wrapped, output };
}
