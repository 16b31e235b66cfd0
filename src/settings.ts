// The parsed flags become one frozen settings object here, grouped by the part that consumes
// each group, with every default filled in. Each part takes only its groups:
//   model, engine, preprocessing, pipeline, limits   Classifier.load
//   answer                                           ranking (the filter's edge, serve, --remote)
//   output                                           the filter's lines, -o FILE (output/resume.ts)
//   cache                                            --cache (cache/cache.ts)
//   remote                                           --remote (remote/client.ts)
//   serve                                            the HTTP server (serve/server.ts)
//   chatter                                          what goes to stderr
// Every default a flag has is stated once, in DEFAULTS: the flags' definitions (cli.ts) take
// theirs from it, and what loads a model with no flags given (retrain, the tests) takes the same
// through classifierSettings().
import { type CacheSettings, DEFAULT_CACHE_ENTRIES } from './cache/cache.js';
import type { LoadSettings, ModelSettings } from './classifier/classifier.js';
import type { Answer, SoftmaxWhen } from './classifier/ranking.js';
import { invalidValue, UsageError } from './errors.js';
import { DEFAULT_MAX_FILE_SIZE } from './image/read.js';
import type { Preprocessing } from './image/preprocessing.js';
import type { BackendChoice } from './model/locate.js';
import type { Format } from './output/format.js';
import type { OutputSettings } from './output/resume.js';
import type { RemoteSettings } from './remote/client.js';
import type { ServeSettings } from './serve/server.js';

/** What goes to stderr besides errors. */
export interface Chatter {
  readonly quiet: boolean;
  readonly verbose: boolean;
}

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

/** The filter: a model here (model set) or on the --remote servers (remote set), never both. */
export interface FilterSettings extends Omit<LoadSettings, 'model'> {
  readonly model?: ModelSettings;
  readonly remote?: RemoteSettings;
  /** paths on stdin are NUL-separated */
  readonly nul: boolean;
  readonly answer: Answer;
  readonly output: OutputSettings;
  readonly cache?: CacheSettings;
  readonly chatter: Chatter;
}

export interface ServeCommandSettings extends LoadSettings {
  readonly answer: Answer;
  readonly cache?: CacheSettings;
  readonly serve: ServeSettings;
  readonly chatter: Chatter;
}

// ---- the flags, as commander gives them (cli.ts holds each command's to exactly these) ----

export interface RunFlags {
  labels?: string;
  batchSize: number;
  maxDelay: number;
  mean?: [number, number, number];
  std?: [number, number, number];
  resize?: Preprocessing['resize'];
  crop?: Preprocessing['crop'] | '';
  icc?: Preprocessing['icc'];
  exifRotate?: boolean;
  maxPixels: number;
  maxFileSize: number;
  softmax: SoftmaxWhen;
  backend: BackendChoice;
  device: string;
  threads: number;
  decodeJobs: number;
  inputNode?: string;
  outputNode?: string;
  topK: number;
  threshold: number;
  cache?: string;
  cacheEntries: number;
  quiet: boolean;
  verbose: boolean;
}

export interface FilterFlags extends RunFlags {
  graph?: string;
  format: Format;
  null: boolean;
  withVersion: boolean;
  output?: string;
  resume: boolean;
  reclassify: boolean;
  retryFailed: boolean;
  remote?: string[];
  remoteInFlight: number;
  remoteTimeout: number;
  remoteRefresh: number;
}

export interface ServeFlags extends RunFlags {
  graph: string;
  host: string;
  port: number;
  maxBody: number;
  maxBuffered: number;
  bodyTimeout: number;
  drainTimeout: number;
  maxQueue: number;
  maxFiles: number;
  watchInterval: number;
}

// ---- flags to settings ----

const deepFreeze = <T>(o: T): T => {
  for (const v of Object.values(o as object)) if (v && typeof v === 'object' && !Object.isFrozen(v)) deepFreeze(v);
  return Object.freeze(o);
};

/** The groups Classifier.load takes, from the flags every command that loads a model has. */
function loadGroups(graph: string, f: RunFlags): Omit<LoadSettings, 'model'> & { model: ModelSettings } {
  // Commander turns a parser's null (--crop none) into '': an explicit default must not change
  // the fingerprint that --resume and --cache compare.
  const crop = f.crop === undefined ? undefined : f.crop || null;
  const given = { mean: f.mean, std: f.std, resize: f.resize, crop, icc: f.icc, exifRotate: f.exifRotate };
  return {
    model: { graph, labels: f.labels, inputNode: f.inputNode, outputNode: f.outputNode },
    engine: { backend: f.backend, device: f.device, threads: f.threads, softmax: f.softmax },
    preprocessing: Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)),
    pipeline: { batchSize: f.batchSize, maxDelayMs: f.maxDelay, decodeJobs: f.decodeJobs },
    limits: { maxPixels: f.maxPixels, maxFileSize: f.maxFileSize },
  };
}

const cacheGroup = (f: RunFlags): CacheSettings | undefined => (f.cache === undefined ? undefined : { dir: f.cache, entries: f.cacheEntries });

/** The filter's settings; a combination of flags that cannot work is a usage error (exit 2). */
export function filterSettings(f: FilterFlags): FilterSettings {
  const usage = (message: string) => {
    throw new UsageError(message);
  };
  if (f.remote && f.graph) usage('--remote and --graph exclude each other (the servers hold the model)');
  if (!f.remote && f.graph === undefined) usage('required option -g, --graph <model> not specified');
  if (f.resume && !f.output) usage('--resume needs -o FILE: it reads back the file it appends to');
  if (f.resume && f.format !== 'json') usage('--resume reads FILE back, which takes --format json');
  if (f.reclassify && !f.resume) usage('--reclassify goes with --resume');
  if (f.retryFailed && !f.resume) usage('--retry-failed goes with --resume');
  if (f.remote && f.cache) usage('--cache needs the model here; give it to the servers instead (classify serve --cache DIR)');
  const { model, ...rest } = loadGroups(f.graph ?? '', f);
  return deepFreeze({
    ...rest,
    ...(f.remote ? { remote: { urls: f.remote, maxInFlight: f.remoteInFlight, timeoutMs: f.remoteTimeout, refreshMs: f.remoteRefresh } } : { model }),
    nul: f.null,
    answer: { topK: f.topK, threshold: f.threshold },
    output: { format: f.format, withVersion: f.withVersion, file: f.output, resume: f.resume, reclassify: f.reclassify, retryFailed: f.retryFailed },
    cache: cacheGroup(f),
    chatter: { quiet: f.quiet, verbose: f.verbose },
  });
}

export function serveSettings(f: ServeFlags): ServeCommandSettings {
  if (f.maxBuffered < f.maxBody) throw new UsageError(invalidValue(`at least --max-body (${f.maxBody})`, '--max-buffered', f.maxBuffered));
  return deepFreeze({
    ...loadGroups(f.graph, f),
    answer: { topK: f.topK, threshold: f.threshold },
    cache: cacheGroup(f),
    serve: {
      host: f.host,
      port: f.port,
      maxBody: f.maxBody,
      maxBuffered: f.maxBuffered,
      bodyTimeoutMs: f.bodyTimeout,
      drainTimeoutMs: f.drainTimeout,
      maxQueue: f.maxQueue,
      maxFiles: f.maxFiles,
      watchIntervalMs: f.watchInterval,
    },
    chatter: { quiet: f.quiet, verbose: f.verbose },
  });
}

/** Changes to some of a model's groups, each merged over what it had. */
export type LoadOverrides = { [G in keyof LoadSettings]?: Partial<LoadSettings[G]> };

/** A model loaded as the CLI loads it when no flag is given, with `overrides` merged group by group. */
export function classifierSettings(graph: string, overrides: LoadOverrides = {}): LoadSettings {
  const { backend, batchSize, maxDelayMs, maxPixels, maxFileSize, threads, device, softmax, decodeJobs } = DEFAULTS;
  const base: LoadSettings = {
    model: { graph },
    engine: { backend, device, threads, softmax },
    preprocessing: {},
    pipeline: { batchSize, maxDelayMs, decodeJobs },
    limits: { maxPixels, maxFileSize },
  };
  return withOverrides(base, overrides);
}

/** `settings` with `overrides` merged group by group, frozen. */
function withOverrides<S extends LoadSettings>(settings: S, overrides: LoadOverrides): S {
  const groups = settings as unknown as Record<string, object>;
  const merged: Record<string, object> = { ...groups };
  for (const [group, changes] of Object.entries(overrides)) merged[group] = { ...groups[group], ...changes };
  return deepFreeze(merged as unknown as S);
}
