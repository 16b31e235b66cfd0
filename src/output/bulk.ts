// What -o, --resume and --cache add around the filter's classifier, set up after the model is
// loaded and before any input is read.
import { CachedScores, ContentCache } from '../cache/cache.js';
import type { Classifier, Scorer } from '../classifier/classifier.js';
import { type Answer, answer, type Prediction } from '../classifier/ranking.js';
import { modelFingerprint } from '../cache/fingerprint.js';
import type { FilePath } from '../image/read.js';
import type { Log } from '../log.js';
import { OutputFile } from './resume.js';
import { UsageError } from '../errors.js';
import type { CacheSettings } from '../cache/cache.js';
import type { LimitSettings } from '../classifier/classifier.js';
import type { OutputSettings } from './resume.js';

/** The groups -o and --cache take. */
export interface BulkSettings {
  readonly output: OutputSettings;
  readonly cache?: CacheSettings;
  readonly answer: Answer;
  readonly limits: LimitSettings;
  readonly chatter: { readonly quiet: boolean; readonly verbose: boolean };
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
  s: BulkSettings,
  classifier: PathClassifier,
  local: Classifier | undefined,
  log: Log,
  stopInput: () => void,
  remoteModel?: string,
): Promise<{ classifier: PathClassifier; output?: OutputFile }> {
  try {
    if (!local && s.output.resume && remoteModel === undefined) {
      throw new UsageError('--resume: the --remote backends do not say which model they serve (a classify serve that sends X-Model-Fingerprint does)');
    }
    const set = wrap(s, classifier, local, log, remoteModel);
    if (set.output) set.output.stopInput = stopInput;
    return set;
  } catch (err) {
    await classifier.close();
    throw err;
  }
}

function wrap({ output, cache: cacheAt, answer: asked, limits, chatter }: BulkSettings, classifier: PathClassifier, local: Classifier | undefined, log: Log, remoteModel?: string): { classifier: PathClassifier; output?: OutputFile } {
  let caching: CachedScores | undefined;
  let wrapped: PathClassifier = classifier;
  if (cacheAt && local) {
    caching = new CachedScores(ContentCache.open(cacheAt.dir, cacheAt.entries), limits);
    const cache = caching.cache;
    wrapped = answering(caching.for(local), asked, async () => {
      await cache.close();
      if (chatter.verbose) log(`cache ${cache.dir}: ${cache.hits} hits, ${cache.misses} misses`);
      await classifier.close();
    });
  }
  const model = local ? (caching || output.file ? modelFingerprint(local.info) : undefined) : remoteModel;
  if (chatter.verbose && model) log(`model fingerprint ${model}`);
  const file = output.file ? OutputFile.open({ ...output, file: output.file, quiet: chatter.quiet }, model, log) : undefined;
  return { classifier: wrapped, output: file };
}
