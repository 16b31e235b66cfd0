// `classify serve`: load once, listen, drain on SIGTERM/SIGINT. The server itself is src/serve/.
import { join } from 'node:path';
import { CachedScores, ContentCache } from '../cache/cache.js';
import { Classifier, type ClassifierOptions, DECODE_QUEUE } from '../classifier/classifier.js';
import { invalidValue, UsageError } from '../errors.js';
import { modelFingerprint } from '../cache/fingerprint.js';
import { loadNewestWorking } from '../model/versions.js';
import type { Log } from '../log.js';
import { describeClassifier } from '../report.js';
import { ServerMetrics } from '../serve/metrics.js';
import { ClassifyServer, type ServeOptions } from '../serve/server.js';
import { watchVersions } from '../serve/versions.js';

export type ServeCommandOptions = ClassifierOptions &
  ServeOptions & {
    verbose: boolean;
    watchInterval: number;
    /** ms in-flight requests get to finish after SIGTERM before their connections are closed */
    drainTimeout: number;
    cache?: string;
    cacheEntries: number;
  };

export async function runServe(opts: ServeCommandOptions, log: Log): Promise<number> {
  const metrics = new ServerMetrics();
  if (opts.maxBuffered < opts.maxBody) {
    throw new UsageError(invalidValue(`at least --max-body (${opts.maxBody})`, '--max-buffered', opts.maxBuffered));
  }
  // --max-queue is the server's one bound on images in flight (a request over it gets 503 before
  // any work); the batcher, which only ever holds some of those images, gets none of its own.
  const load = (graph: string, version?: string) => Classifier.load({ ...opts, graph, version, decodeQueue: DECODE_QUEUE.serve, observe: metrics.observeBatch });
  const classifier = await loadNewestWorking(opts.graph, load, log);
  if (opts.verbose) describeClassifier(classifier.info, log);
  metrics.setModel(classifier.info);

  let cache: CachedScores | undefined;
  try {
    cache = opts.cache ? new CachedScores(ContentCache.open(opts.cache, opts.cacheEntries), opts) : undefined;
    if (cache && opts.verbose) log(`cache ${opts.cache}, model fingerprint ${modelFingerprint(classifier.info, opts)}`);
  } catch (err) {
    await classifier.close();
    throw err;
  }
  // Each model's fingerprint is worked out when it first serves (hashing its files), then kept.
  const fingerprint = (c: Classifier) => modelFingerprint(c.info, opts);
  fingerprint(classifier);
  const server = new ClassifyServer(classifier, metrics, opts, log, cache, fingerprint);
  // A folder of numbered versions is watched for newer ones.
  const watch =
    classifier.info.version !== undefined
      ? watchVersions(
          opts.graph,
          () => server.model.info.version,
          (version) => load(join(opts.graph, version), version),
          (next) => {
            fingerprint(next);
            server.swap(next);
          },
          log,
          opts.watchInterval,
        )
      : undefined;
  let address;
  try {
    address = await server.listen();
  } catch (err) {
    await classifier.close();
    throw new UsageError(`cannot listen on ${opts.host}:${opts.port}: ${(err as Error).message}`);
  }
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  log(`listening on http://${host}:${address.port}`);

  return new Promise((resolve) => {
    const stop = (signal: 'SIGTERM' | 'SIGINT') => {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      // A second signal while draining, either of the two, stops at once.
      const now = () => process.exit(1);
      process.once('SIGTERM', now);
      process.once('SIGINT', now);
      if (!opts.quiet) log(`${signal}: finishing in-flight requests`);
      watch?.stop();
      void server.shutdown(opts.drainTimeout).then((cut) => {
        if (cut > 0) log(`drain took over --drain-timeout ${opts.drainTimeout} ms: closed ${cut} request${cut === 1 ? '' : 's'} still in flight`);
        // Nothing left may hold the process open past the bound.
        setTimeout(() => process.exit(cut > 0 ? 1 : 0), 1000).unref();
        resolve(cut > 0 ? 1 : 0);
      });
    };
    const onTerm = () => stop('SIGTERM');
    const onInt = () => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
}
