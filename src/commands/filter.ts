// The filter: paths in, one line of predictions out per path, in input order. This is the one
// place where a line of stdin becomes a line of stdout.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Readable, Writable } from 'node:stream';
import { answering, type PathClassifier, setUpBulk } from '../output/bulk.js';
import { Classifier, type LoadSettings } from '../classifier/classifier.js';
import { RemoteClassifier } from '../remote/client.js';
import { IS_A_DIRECTORY } from '../image/read.js';
import { EXIT } from '../errors.js';
import { inOrder } from '../in-order.js';
import { type PathLine, pathsFromArgs, pathsFromStream } from '../input.js';
import { describeFailure, type Format, formatLine, type Outcome } from '../output/format.js';
import { loadNewestWorking } from '../model/versions.js';
import { Progress, type Terminal } from '../progress.js';
import type { Log } from '../log.js';
import { type Host, PROCESS_HOST, type StopSignal } from '../host.js';
import { describeClassifier } from '../report.js';
import type { FilterSettings } from '../settings.js';

export interface FilterIO {
  stdin: Readable;
  stdout: Writable;
  stderr: Terminal;
  log: Log;
  /** how a model is loaded: Classifier.load; tests share one loaded model between runs */
  loadClassifier?: (settings: LoadSettings) => Promise<Classifier>;
  /** where signals come from and exit goes (default: this process) */
  host?: Host;
}

/** Gathered output is written at the end of a turn, or sooner once it is this long. */
const FLUSH_AT = 64 * 1024;

/** Loads the model or reaches the servers (failing before any input is read), then streams. */
export async function runFilter(settings: FilterSettings, args: string[], io: FilterIO): Promise<number> {
  const { answer, output: out, chatter } = settings;
  let classifier: PathClassifier;
  let local: Classifier | undefined;
  let window: number;
  let remoteModel: string | undefined;
  if (settings.remote) {
    const asked = settings.remote;
    // Backends left out or back: one line each, clear of the progress line.
    const note = (line: string) => {
      if (io.stderr.isTTY) io.stderr.write('\r\x1b[K');
      io.log(line);
    };
    // A bad URL or no backend ready throws RemoteSetupError, a usage error: exit 2, nothing read.
    const remote = await RemoteClassifier.connect({ ...asked, maxFileSize: settings.limits.maxFileSize, log: chatter.quiet ? undefined : note });
    remoteModel = remote.model;
    if (chatter.verbose) io.log(`remote: ${remote.backends} backend${remote.backends === 1 ? '' : 's'}, up to ${asked.maxInFlight} requests in flight each`);
    classifier = { classify: (path) => remote.classifyPath(path, answer), close: () => remote.close() };
    window = Math.max(16, 2 * remote.backends * asked.maxInFlight);
  } else {
    const load = io.loadClassifier ?? ((s: LoadSettings) => Classifier.load(s));
    const { model: at, engine, preprocessing, pipeline, limits } = settings;
    local = await loadNewestWorking(at!.graph, (graph, version) => load({ model: { ...at, graph, version }, engine, preprocessing, pipeline, limits }), io.log);
    if (chatter.verbose) describeClassifier(local.info, io.log);
    const model = local;
    classifier = answering(model, answer, () => model.close());
    // Enough paths in flight to keep every slot busy and a batch's worth ready behind them.
    window = Math.max(16, local.info.inFlight + local.info.batchSize);
  }
  // -o, --resume, --cache: FILE is read (and refused with exit 2) before any input is.
  const bulk = out.file || settings.cache ? await setUpBulk(settings, classifier, local, io.log, () => io.stdin.destroy(), remoteModel) : undefined;
  if (bulk) classifier = bulk.classifier;
  const output = bulk?.output;

  const readsStdin = args.length === 0 || args.includes('-');
  if (readsStdin && (io.stdin as { isTTY?: boolean }).isTTY && !chatter.quiet) {
    io.log('reading image paths from stdin, one per line (end with Ctrl-D; classify --help for more)');
  }

  // Ctrl-C or SIGTERM: stop reading at once, drop paths read but not started, write what is in
  // flight, exit 128 + the signal. A second signal exits at once.
  const stopping = new AbortController();
  let stoppedBy: StopSignal | undefined;
  const onSignal = (signal: StopSignal) => {
    if (stoppedBy) host.exit(signal === 'SIGTERM' ? EXIT.sigterm : EXIT.sigint);
    stoppedBy = signal;
    stopping.abort();
    io.stdin.destroy();
  };
  const host = io.host ?? PROCESS_HOST;
  host.on('SIGINT', onSignal);
  host.on('SIGTERM', onSignal);

  const stdinPaths = () => pathsFromStream(io.stdin, { nulSeparated: settings.nul, signal: stopping.signal });
  const lines = args.length > 0 ? pathsFromArgs(args, stopping.signal, stdinPaths) : stdinPaths();
  // With --resume, inputs FILE already answers are skipped here, unread.
  const paths = output ? output.select(lines) : lines;
  // The hot path: one plain object per line, spreads only where a line has more to say.
  const { withVersion, format } = out;
  const showModel = withVersion || Boolean(out.file);
  const classifyOne = ({ path, file, problem }: PathLine): Promise<Outcome> => {
    if (problem !== undefined) return Promise.resolve(file ? { path, pathBytes: file, error: problem } : { path, error: problem });
    return classifier.classify(file ?? path).then(
      ({ predictions, version, model }) => {
        const outcome: Outcome = { path, predictions };
        if (file) outcome.pathBytes = file;
        if (withVersion) outcome.version = version ?? '';
        // With --remote, the model that answered is recorded (-o) or shown (--with-version).
        if (model && showModel) outcome.model = model;
        return outcome;
      },
      (err: unknown) => ({ path, ...(file ? { pathBytes: file } : {}), ...describeFailure(err) }),
    );
  };

  const typing = readsStdin && Boolean((io.stdin as { isTTY?: boolean }).isTTY);
  const progress = Progress.enabled(io.stderr, chatter.quiet, typing) ? await Progress.start(io.stderr) : undefined;
  let failed = 0;
  let done = 0;
  let hinted = false;
  let pending = '';
  const flush = () => {
    if (pending === '') return;
    const text = pending;
    pending = '';
    io.stdout.write(text);
  };
  const started = { at: performance.now(), cpuMs: mainThreadCpuMs() };
  try {
    for await (const outcome of inOrder(paths, classifyOne, window)) {
      const ok = !('error' in outcome);
      // With --resume, a failure FILE already records for the same file is not said again.
      const news = output ? output.write(outcome, 'kind' in outcome ? outcome.kind : undefined) : true;
      if ('error' in outcome) {
        failed++;
        if (!chatter.quiet && news) {
          progress?.clear();
          io.log(`${JSON.stringify(outcome.path)}: ${outcome.error}`);
          if (outcome.error === IS_A_DIRECTORY && !hinted) {
            hinted = true;
            io.log(`to classify the images a folder holds, give their paths: find ${shellQuote(outcome.path ?? 'DIR')} -type f -print0 | classify -0 ...`);
          }
        }
      }
      progress?.count(ok);
      done++;
      if (!output) {
        // Lines finished in one turn leave in one write: a syscall per batch, not per line.
        if (pending === '') process.nextTick(flush);
        pending += formatLine(outcome, format) + '\n';
        if (pending.length >= FLUSH_AT) flush();
        // stdout's backpressure: no more results are taken while its buffer is full.
        if (io.stdout.writableNeedDrain) await once(io.stdout, 'drain');
      }
    }
    flush();
    if (io.stdout.writableNeedDrain) await once(io.stdout, 'drain');
  } finally {
    progress?.stop();
    host.off('SIGINT', onSignal);
    host.off('SIGTERM', onSignal);
    await classifier.close();
    output?.close(io.log, Boolean(io.stderr.isTTY) || chatter.verbose);
  }
  const seconds = (performance.now() - started.at) / 1000;
  if (io.stderr.isTTY && !chatter.quiet && !chatter.verbose && done > 0) io.log(Progress.summary(done, failed, seconds));
  if (chatter.verbose && done > 0) {
    // The main thread only moves paths, slots and lines; its busy time per image says so.
    const cpuMs = mainThreadCpuMs();
    const main = cpuMs === undefined || started.cpuMs === undefined ? '' : `; main thread CPU ${((cpuMs - started.cpuMs) / done).toFixed(3)} ms per image`;
    io.log(`${Progress.summary(done, failed, seconds)}${main}`);
  }
  if (stoppedBy) return stoppedBy === 'SIGTERM' ? EXIT.sigterm : EXIT.sigint;
  // With --resume, a failure FILE already records for the same file is not news: cron mails none.
  const failedNow = output && out.resume ? output.newFailures : failed;
  return failedNow > 0 ? EXIT.someFailed : EXIT.ok;
}

/** A name as a POSIX shell reads it back, quoted only when it must be. */
function shellQuote(name: string): string {
  return /^[\w./@%+=:,-]+$/.test(name) ? name : `'${name.replace(/'/g, `'\\''`)}'`;
}

/** CPU time of the main thread alone (Linux: /proc), in ms; undefined elsewhere. Event-loop
 * utilisation would count time the thread was runnable but not running, which on a busy machine
 * is most of it. */
function mainThreadCpuMs(): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime (fields 14 and 15 of the line) in clock ticks of 10 ms
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}
