// The filter: paths in, one line of predictions out per path, in input order. This is the one
// place where a line of stdin becomes a line of stdout.
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { type BulkOptions, setUpBulk } from './bulk.js';
import { Classifier, type ClassifierOptions, type Prediction } from './classifier.js';
import { RemoteClassifier, RemoteImageError } from './remote/client.js';
import { InputError } from './image/decode.js';
import { pathsFromArgs, pathsFromStream } from './input.js';
import { type Format, formatLine, type Outcome } from './output/format.js';
import { inOrder } from './pipeline.js';
import { Progress } from './progress.js';
import { describeClassifier, type Log } from './report.js';

export interface FilterOptions extends ClassifierOptions, BulkOptions {
  /** classify on these servers instead of loading the model here */
  remote?: string[];
  remoteInFlight: number;
  remoteTimeout: number;
  withVersion: boolean;
  format: Format;
  topK: number;
  threshold: number;
  nul: boolean;
  quiet: boolean;
  verbose: boolean;
}

export interface FilterIO {
  stdin: Readable;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WriteStream;
  log: Log;
}

export const EXIT = { ok: 0, someFailed: 1, usage: 2, interrupted: 130 } as const;

/** What the filter needs: a local model or remote servers. */
interface PathClassifier {
  classifyPath(path: string, topK: number, threshold: number): Promise<{ predictions: Prediction[]; version?: string }>;
  close(): Promise<void>;
}

/** Loads the model or reaches the servers (failing before any input is read), then streams. */
export async function runFilter(opts: FilterOptions, args: string[], io: FilterIO): Promise<number> {
  let classifier: PathClassifier;
  let local: Classifier | undefined;
  let window: number;
  if (opts.remote) {
    const remote = await RemoteClassifier.connect({ urls: opts.remote, maxInFlight: opts.remoteInFlight, timeoutMs: opts.remoteTimeout });
    if (opts.verbose) io.log(`remote: ${remote.backends} backend${remote.backends === 1 ? '' : 's'}, up to ${opts.remoteInFlight} requests in flight each`);
    classifier = { classifyPath: (p, k, t) => remote.classifyFile(p, k, t), close: () => remote.close() };
    window = Math.max(16, 2 * remote.backends * opts.remoteInFlight);
  } else {
    local = await Classifier.load(opts);
    if (opts.verbose) describeClassifier(local.info, io.log);
    classifier = local;
    window = Math.max(16, 2 * local.info.batchSize + local.info.decodeJobs);
  }
  // -o, --resume, --cache: FILE is read (and refused with exit 2) before any input is.
  const bulk = opts.output || opts.cache ? await setUpBulk(opts, classifier, local, io.log, () => io.stdin.destroy()) : undefined;
  if (bulk) classifier = bulk.classifier;
  const output = bulk?.output;

  const stdinPaths = args.length > 0 ? pathsFromArgs(args) : pathsFromStream(io.stdin, opts.nul);
  const paths = output ? output.select(stdinPaths) : stdinPaths;
  const classifyOne = (path: string): Promise<Outcome> =>
    classifier.classifyPath(path, opts.topK, opts.threshold).then(
      ({ predictions, version }) => ({ path, predictions, ...(opts.withVersion ? { version: version ?? '' } : {}) }),
      (err: unknown) => ({
        path,
        error: err instanceof InputError || err instanceof RemoteImageError ? err.message : `inference failed: ${(err as Error).message}`,
      }),
    );

  let interrupted = false;
  const onSigint = () => {
    if (interrupted) process.exit(EXIT.interrupted);
    interrupted = true;
    // Stop reading; what is already in flight is still written.
    io.stdin.destroy();
  };
  process.on('SIGINT', onSigint);

  const progress = Progress.enabled(io.stderr, opts.quiet) ? new Progress(io.stderr) : undefined;
  let failed = 0;
  try {
    for await (const outcome of inOrderSafe(paths, classifyOne, window, () => interrupted)) {
      const ok = !('error' in outcome);
      if (!ok) {
        failed++;
        if (!opts.quiet) {
          progress?.stop();
          io.log(`${JSON.stringify(outcome.path)}: ${(outcome as { error: string }).error}`);
        }
      }
      progress?.count(ok);
      if (output) output.write(outcome);
      else if (!io.stdout.write(formatLine(outcome, opts.format) + '\n')) await once(io.stdout, 'drain');
    }
  } finally {
    progress?.stop();
    process.off('SIGINT', onSigint);
    await classifier.close();
    output?.close(io.log);
  }
  if (interrupted) return EXIT.interrupted;
  return failed > 0 ? EXIT.someFailed : EXIT.ok;
}

/** A stdin destroyed by Ctrl-C ends the input rather than failing the run. */
async function* inOrderSafe<I, O>(inputs: AsyncIterable<I>, work: (i: I) => Promise<O>, window: number, interrupted: () => boolean) {
  try {
    yield* inOrder(inputs, work, window);
  } catch (err) {
    if (!interrupted()) throw err;
  }
}
