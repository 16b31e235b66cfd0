// -o FILE and --resume: the lines a run appends, and which inputs it can skip because FILE
// already answers them.
//
// Each JSON line in FILE records what it was computed from, in the line itself: "size" and
// "mtime" (stat's mtimeMs) of the input file as stat'ed before it was read, and "model" (the
// fingerprint of the model and its preprocessing, src/fingerprint.ts). In the line rather than in
// a sidecar file because one write(2) then records an answer and its provenance together: no
// kill can leave one without the other. An input is skipped when the latest line for its path
// is a success for this model and its size and mtime are unchanged (rsync's and make's test);
// a failure that cannot change while the file does not (corrupt, not an image: its
// "error_kind" says) is skipped too unless --retry-failed; anything else (another failure, a
// changed file, another model's answer) is classified again and a new line appended, so the
// latest line for a path is always the one to believe.
//
// Inputs are keyed by their names' bytes: a name that is not UTF-8 is shown with U+FFFD in
// "path" and recorded exactly, base64, in "path_bytes".
import { readSync, statSync } from 'node:fs';
import { FileLock } from './lock.js';
import { AppendFile } from './sink.js';
import { formatLine, jsonRecord, type Outcome } from './format.js';
import type { Log } from '../log.js';
import { UsageError } from '../errors.js';
import type { PathLine } from '../input.js';

import type { Format } from './format.js';
/** The filter's output: its format, and -o FILE. */
export interface OutputSettings {
  readonly format: Format;
  readonly withVersion: boolean;
  /** -o: lines are appended to this file instead of written to stdout */
  readonly file?: string;
  readonly resume: boolean;
  readonly reclassify: boolean;
  readonly retryFailed: boolean;
}

/** The output group, and whether to keep quiet about what FILE held. */
export type OutputOptions = OutputSettings & { quiet: boolean };

/** What this run did with an input path already, in the map of previous lines. */
const THIS_RUN = '\0run';

const done = (size: number | undefined, mtime: number | undefined) => `ok ${size} ${mtime}`;
const failed = (size: number | undefined, mtime: number | undefined, error: string) => `error ${size} ${mtime} ${error}`;
const lasting = (size: number | undefined, mtime: number | undefined) => `lasting ${size} ${mtime}`;

/** Failures that stay as long as the file's bytes do: retrying them each run only repeats them. */
// Not 'too-large': raising --max-file-size or --max-pixels mends it, and neither is in the
// fingerprint.
const LASTING_KINDS: ReadonlySet<string> = new Set(['corrupt', 'not-an-image', 'empty']);

/** What a path is known by: its bytes, which a name that is not UTF-8 keeps and "path" does not. */
const keyOf = (path: string, bytes?: Buffer) => (bytes ? `\0bytes ${bytes.toString('base64')}` : path);

interface Pending {
  path: string;
  key: string;
  size?: number;
  mtime?: number;
  previous?: string;
}

export class OutputFile {
  skipped = 0;
  /** inputs skipped because FILE records a failure that cannot have changed */
  skippedFailures = 0;
  classified = 0;
  failures = 0;
  /** failures FILE did not already record for the same file: what the exit status counts */
  newFailures = 0;
  /** path -> the state its latest line records for this model, or THIS_RUN */
  private readonly previous = new Map<string, string>();
  /** inputs handed on, in input order, waiting for their outcome */
  private readonly pending: Pending[] = [];
  /** FILE could not be written: no more input is taken, and close() throws this */
  private writeError: Error | undefined;
  /** ends the input at once (stdin may stay open for hours, as under tail -f) */
  stopInput: () => void = () => undefined;

  private constructor(
    private readonly sink: AppendFile,
    private readonly lock: FileLock | undefined,
    private readonly opts: OutputOptions,
    private readonly model: string | undefined,
  ) {}

  /** Opens FILE, cuts a partial last line and, with --resume, reads what it answers. Throws
   * (a usage error: exit 2) for a FILE that is not classify's JSON or is for another model. */
  static open(opts: OutputOptions & { file: string }, model: string | undefined, log: Log): OutputFile {
    const sink = AppendFile.open(opts.file, opts.format === 'json');
    let lock: FileLock | undefined;
    try {
      if (opts.resume && !sink.regular) {
        throw new UsageError(`${opts.file}: --resume reads back the answers FILE holds, so FILE must be a regular file, not ${sink.kind}`);
      }
      // /dev/null or a pipe: nothing to double, and nothing beside it to lock with.
      if (sink.regular) lock = FileLock.take(opts.file);
      if (sink.repaired > 0 && !opts.quiet) log(`${opts.file}: cut a partial last line (${sink.repaired} bytes) left by an interrupted run`);
      if (sink.repaired < 0 && !opts.quiet) log(`${opts.file}: its last line had no line end: one was added before the new lines`);
      const out = new OutputFile(sink, lock, opts, model);
      if (opts.resume) out.readPrevious();
      return out;
    } catch (err) {
      lock?.release();
      sink.close();
      throw err;
    }
  }

  private readPrevious(): void {
    const file = this.opts.file!;
    let lineNo = 0;
    let lastModel: unknown;
    for (const line of readLines(this.sink.fd)) {
      lineNo++;
      let rec: { path?: unknown; path_bytes?: unknown; error?: unknown; error_kind?: unknown; predictions?: unknown; size?: number; mtime?: number; model?: unknown };
      try {
        rec = JSON.parse(line);
      } catch {
        rec = {};
      }
      if (typeof rec !== 'object' || rec === null || typeof rec.path !== 'string') {
        throw new UsageError(`${file} line ${lineNo}: not a JSON line classify -o writes; --resume reads FILE back, so it must hold only those`);
      }
      lastModel = rec.model;
      const key = keyOf(rec.path, typeof rec.path_bytes === 'string' ? Buffer.from(rec.path_bytes, 'base64') : undefined);
      if (rec.model !== this.model) this.previous.set(key, '');
      else if (Array.isArray(rec.predictions)) this.previous.set(key, done(rec.size, rec.mtime));
      else if (LASTING_KINDS.has(String(rec.error_kind)) && !this.opts.retryFailed) this.previous.set(key, lasting(rec.size, rec.mtime));
      else this.previous.set(key, failed(rec.size, rec.mtime, String(rec.error)));
    }
    if (lineNo > 0 && lastModel !== this.model && !this.opts.reclassify) {
      const was = typeof lastModel === 'string' ? `model ${lastModel}` : 'lines with no model fingerprint';
      throw new UsageError(
        `${file} was last written for another model (${was}; this one is ${this.model}): its answers are not reused. ` +
          'Pass --reclassify to classify its inputs again with this model, or write to another file',
      );
    }
  }

  /** The inputs to classify, in order: with --resume, those FILE does not already answer (and
   * each path once); every one stat'ed before it is read, never read when skipped. */
  async *select(paths: AsyncIterable<PathLine>): AsyncGenerator<PathLine> {
    try {
      yield* this.skipDone(paths);
    } catch (err) {
      if (!this.writeError) throw err; // a destroyed stdin, after a write error, ends the input
    }
  }

  private async *skipDone(paths: AsyncIterable<PathLine>): AsyncGenerator<PathLine> {
    for await (const line of paths) {
      const { path } = line;
      // After a write error the input ends here, so what is in flight finishes before the run
      // stops (stopping with decodes and batches in flight crashes the native engines).
      if (this.writeError) return;
      let size: number | undefined;
      let mtime: number | undefined;
      try {
        const st = statSync(line.file ?? path);
        size = st.size;
        mtime = st.mtimeMs;
      } catch {
        // classifying it says why it cannot be read
      }
      let previous: string | undefined;
      const key = keyOf(path, line.file);
      if (this.opts.resume) {
        previous = this.previous.get(key);
        this.previous.set(key, THIS_RUN);
        if (previous === THIS_RUN || (size !== undefined && previous === done(size, mtime))) {
          this.skipped++;
          continue;
        }
        if (size !== undefined && previous === lasting(size, mtime)) {
          this.skippedFailures++;
          continue;
        }
      }
      this.pending.push({ path, key, size, mtime, previous });
      yield line;
    }
  }

  /** Appends an input's line whole. With --resume, a failure FILE already records for the same
   * unchanged file is not written again, so a file that stays broken adds no line a night.
   * Returns whether the line is news: false for such a repeated failure. */
  write(outcome: Outcome, errorKind?: string): boolean {
    const p = this.pending.shift();
    if (!p || p.path !== outcome.path) throw new Error(`internal error: output out of step with input at ${JSON.stringify(outcome.path)}`);
    if ('error' in outcome) {
      this.failures++;
      if (p.previous === failed(p.size, p.mtime, outcome.error)) return false;
      this.newFailures++;
    } else this.classified++;
    const provenance = { ...(errorKind ? { error_kind: errorKind } : {}), size: p.size, mtime: p.mtime, model: outcome.model ?? this.model };
    const line = this.opts.format === 'json' ? JSON.stringify({ ...jsonRecord(outcome), ...provenance }) : formatLine(outcome, this.opts.format);
    if (this.writeError) return true;
    try {
      this.sink.writeLine(line);
    } catch (err) {
      this.writeError = err as Error;
      this.stopInput();
    }
    return true;
  }

  /** Syncs and closes FILE, or throws the write error that stopped the run (exit 2); with
   * --resume and `report` (a terminal, or --verbose), says on stderr what the run skipped. A
   * nightly job that skipped everything says nothing: cron mails only news. */
  close(log: Log, report: boolean): void {
    try {
      this.sink.close();
    } finally {
      this.lock?.release();
    }
    if (this.writeError) throw this.writeError;
    if (this.opts.resume && report && !this.opts.quiet) {
      const known = this.skippedFailures > 0 ? `, ${this.skippedFailures} known failure${this.skippedFailures === 1 ? '' : 's'} not retried (--retry-failed retries them)` : '';
      const repeated = this.failures - this.newFailures;
      const failures = `${this.failures} failed${repeated > 0 ? ` (${repeated} as before)` : ''}`;
      log(`${this.opts.file}: ${this.skipped} input${this.skipped === 1 ? '' : 's'} skipped (answered before)${known}, ${this.classified} classified, ${failures}`);
    }
  }
}

/** FILE's whole lines from the start, decoded one at a time (FILE may be large). */
function* readLines(fd: number): Generator<string> {
  const chunk = Buffer.alloc(1 << 20);
  let carry = Buffer.alloc(0);
  let offset = 0;
  for (;;) {
    const n = readSync(fd, chunk, 0, chunk.length, offset);
    if (n === 0) break;
    offset += n;
    const data = Buffer.concat([carry, chunk.subarray(0, n)]);
    let start = 0;
    for (let nl = data.indexOf(0x0a); nl >= 0; nl = data.indexOf(0x0a, start)) {
      yield data.toString('utf8', start, nl);
      start = nl + 1;
    }
    carry = Buffer.from(data.subarray(start));
  }
}
