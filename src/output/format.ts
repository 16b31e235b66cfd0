// One result -> one output line. The three formats a user can ask for.
import type { Prediction } from '../classifier/classifier.js';
import { describeError, EngineError, InternalError, RemoteImageError } from '../errors.js';
import { InputError, type InputErrorKind } from '../image/read.js';

/** One input's result. `path` is what the input was called (absent for an unnamed upload);
 * `pathBytes` its exact bytes where they are not UTF-8 (`path` then shows U+FFFD); `model`, the
 * fingerprint of the model that answered, where the line records it. */
type Named = { path?: string; pathBytes?: Buffer; version?: string; model?: string };
/** `kind`: what sort of failure (src/image/read.ts's InputErrorKind), where known. */
export type Outcome = (Named & { predictions: Prediction[] }) | (Named & { error: string; kind?: string });

export type Format = 'json' | 'text' | 'tsv';
export const FORMATS: Format[] = ['json', 'text', 'tsv'];

/** What one image's failure says in its line, the same in the filter's output and the server's
 * answers: an unreadable or undecodable image its reason (and kind), a --remote backend's answer
 * as the backend gave it, anything else as the inference that failed. */
export function describeFailure(err: unknown): { error: string; kind?: InputErrorKind } {
  if (err instanceof InputError) return { error: err.message, kind: err.kind };
  // A bug is not this image's failure: it ends the run (exit 70) or the request (500).
  if (err instanceof InternalError) throw err;
  // What is neither the image's nor a backend's happened running the model.
  const known = err instanceof RemoteImageError || err instanceof EngineError;
  return { error: known ? describeError(err) : `inference failed: ${describeError(err)}` };
}

/** Scores are float32 underneath: six decimals say all they can. */
const round = (score: number) => Math.round(score * 1e6) / 1e6;

/** Tabs and line breaks in a path would break a line-oriented format: show them escaped. */
const escapeControl = (s: string) => s.replace(/[\t\n\r\\]/g, (c) => ({ '\t': '\\t', '\n': '\\n', '\r': '\\r', '\\': '\\\\' })[c]!);

/** The JSON shape of one result, shared by the CLI's lines and the server's answers. Built key by
 * key rather than spread together: this runs for every output line. */
export function jsonRecord(o: Outcome): object {
  const record: Record<string, unknown> = {};
  if (o.path !== undefined) record.path = o.path;
  if (o.pathBytes !== undefined) record.path_bytes = o.pathBytes.toString('base64');
  if (o.version !== undefined) record.version = o.version;
  if (o.model !== undefined) record.model = o.model;
  if ('error' in o) record.error = o.error;
  else record.predictions = o.predictions.map((p) => ({ label: p.label, score: round(p.score) }));
  return record;
}

export function formatLine(o: Outcome, format: Format): string {
  if (format === 'json') return JSON.stringify(jsonRecord(o));
  const path = escapeControl(o.path ?? '-');
  switch (format) {
    case 'text':
      return 'error' in o
        ? `${path}: error: ${escapeControl(o.error)}`
        : `${path}: ${o.predictions.map((p) => `${escapeControl(p.label)} (${p.score.toFixed(4)})`).join(', ')}`;
    case 'tsv':
      return 'error' in o
        ? [path, 'error', escapeControl(o.error)].join('\t')
        : [path, 'ok', ...o.predictions.flatMap((p) => [escapeControl(p.label), String(round(p.score))])].join('\t');
  }
}
