// `classify serve`: load once, listen, drain on SIGTERM/SIGINT. The server itself is src/serve/.
import { join } from 'node:path';
import { CachedScores, ContentCache } from '../cache/cache.js';
import { Classifier, DECODE_QUEUE } from '../classifier/classifier.js';
import { UsageError } from '../errors.js';
import { modelFingerprint } from '../cache/fingerprint.js';
import { loadNewestWorking } from '../model/versions.js';
import type { Log } from '../log.js';
import { type Host, PROCESS_HOST, type StopSignal } from '../host.js';
import { describeClassifier } from '../report.js';
import { ServerMetrics } from '../serve/metrics.js';
import { ClassifyServer } from '../serve/server.js';
import { watchVersions } from '../serve/versions.js';
import type { ServeCommandSettings } from '../settings.js';

export async function runServe(settings: ServeCommandSettings, log: Log, host: Host = PROCESS_HOST): Promise<number> {
  const { model, engine, preprocessing, pipeline, limits, serve, chatter } = settings;
  const metrics = new ServerMetrics();
  // --max-queue is the server's one bound on images in flight (a request over it gets 503 before
  // any work); the batcher, which only ever holds some of those images, gets none of its own.
  const load = (graph: string, version?: string) =>
    Classifier.load(
      { model: { ...model, graph, version }, engine, preprocessing, pipeline: { ...pipeline, decodeQueue: DECODE_QUEUE.serve }, limits },
      { observe: metrics.observeBatch },
    );
  const classifier = await loadNewestWorking(model.graph, load, log);
  if (chatter.verbose) describeClassifier(classifier.info, log);
  metrics.setModel(classifier.info);

  let cache: CachedScores | undefined;
  try {
    cache = settings.cache ? new CachedScores(ContentCache.open(settings.cache.dir, settings.cache.entries), limits) : undefined;
    if (cache && chatter.verbose) log(`cache ${settings.cache!.dir}, model fingerprint ${modelFingerprint(classifier.info)}`);
  } catch (err) {
    await classifier.close();
    throw err;
  }
  // Each model's fingerprint is worked out when it first serves (hashing its files), then kept.
  const fingerprint = (c: Classifier) => modelFingerprint(c.info);
  fingerprint(classifier);
  const server = new ClassifyServer(classifier, metrics, { serve, answer: settings.answer, quiet: chatter.quiet }, log, cache, fingerprint);
  // A folder of numbered versions is watched for newer ones.
  const watch =
    classifier.info.version !== undefined
      ? watchVersions(
          model.graph,
          () => server.model.info.version,
          (version) => load(join(model.graph, version), version),
          (next) => {
            fingerprint(next);
            server.swap(next);
          },
          log,
          serve.watchIntervalMs,
        )
      : undefined;
  let address;
  try {
    address = await server.listen();
  } catch (err) {
    await classifier.close();
    throw new UsageError(`cannot listen on ${serve.host}:${serve.port}: ${(err as Error).message}`);
  }
  const listening = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  log(`listening on http://${listening}:${address.port}`);

  return new Promise((resolve) => {
    const stop = (signal: StopSignal) => {
      host.off('SIGTERM', stop);
      host.off('SIGINT', stop);
      // A second signal while draining, either of the two, stops at once.
      const now = () => host.exit(1);
      host.on('SIGTERM', now);
      host.on('SIGINT', now);
      if (!chatter.quiet) log(`${signal}: finishing in-flight requests`);
      watch?.stop();
      void server.shutdown(serve.drainTimeoutMs).then((cut) => {
        if (cut > 0) log(`drain took over --drain-timeout ${serve.drainTimeoutMs} ms: closed ${cut} request${cut === 1 ? '' : 's'} still in flight`);
        host.off('SIGTERM', now);
        host.off('SIGINT', now);
        // Nothing left may hold the process open past the bound.
        setTimeout(() => host.exit(cut > 0 ? 1 : 0), 1000).unref();
        resolve(cut > 0 ? 1 : 0);
      });
    };
    host.on('SIGTERM', stop);
    host.on('SIGINT', stop);
  });
}
