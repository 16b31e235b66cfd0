// Every default a flag has, stated once. The flags' definitions (cli.ts) take their defaults
// from this table, and what loads a model with no flags given (retrain, the tests) takes the
// same ones through classifierDefaults(), so a default cannot differ between two places.
import { DEFAULT_CACHE_ENTRIES } from './cache/cache.js';
import type { ClassifierOptions } from './classifier/classifier.js';
import { DEFAULT_MAX_FILE_SIZE } from './image/read.js';

export const DEFAULTS = {
  // the answer
  topK: 5,
  threshold: 0,
  // the pipeline: 0 means "chosen at load for the device and the cores" (planPipeline)
  batchSize: 0,
  maxDelayMs: 10,
  decodeJobs: 0,
  threads: 0,
  maxPixels: 100_000_000,
  maxFileSize: DEFAULT_MAX_FILE_SIZE,
  // the engine
  softmax: 'auto',
  backend: 'auto',
  device: 'auto',
  // --cache
  cacheEntries: DEFAULT_CACHE_ENTRIES,
  // --remote
  remoteInFlight: 8,
  remoteTimeoutMs: 30_000,
  remoteRefreshMs: 30_000,
  // serve
  host: '127.0.0.1',
  port: 9876,
  maxBody: 20 * 1024 * 1024,
  maxBuffered: 256 * 1024 * 1024,
  bodyTimeoutMs: 60_000,
  drainTimeoutMs: 20_000,
  maxQueue: 256,
  maxFiles: 64,
  watchIntervalMs: 2000,
} as const;

/** A model loaded as the CLI loads it when no flag is given. */
export function classifierDefaults(graph: string): ClassifierOptions {
  const { backend, batchSize, maxDelayMs, maxPixels, maxFileSize, threads, device, softmax, decodeJobs } = DEFAULTS;
  return { graph, backend, batchSize, maxDelayMs, maxPixels, maxFileSize, threads, device, softmax, decodeJobs };
}
