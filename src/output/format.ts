// One result -> one output line. The three formats a user can ask for.
import type { Prediction } from '../classifier.js';

export type Outcome = { path: string; predictions: Prediction[]; version?: string } | { path: string; error: string; version?: string };

export type Format = 'json' | 'text' | 'tsv';
export const FORMATS: Format[] = ['json', 'text', 'tsv'];

/** Scores are float32 underneath: six decimals say all they can. */
const round = (score: number) => Math.round(score * 1e6) / 1e6;

/** Tabs and line breaks in a path would break a line-oriented format: show them escaped. */
const escapeControl = (s: string) => s.replace(/[\t\n\r\\]/g, (c) => ({ '\t': '\\t', '\n': '\\n', '\r': '\\r', '\\': '\\\\' })[c]!);

export function formatLine(o: Outcome, format: Format): string {
  switch (format) {
    case 'json':
      return 'error' in o
        ? JSON.stringify({ path: o.path, ...(o.version ? { version: o.version } : {}), error: o.error })
        : JSON.stringify({
            path: o.path,
            ...(o.version ? { version: o.version } : {}),
            predictions: o.predictions.map((p) => ({ label: p.label, score: round(p.score) })),
          });
    case 'text':
      return 'error' in o
        ? `${escapeControl(o.path)}: error: ${o.error}`
        : `${escapeControl(o.path)}: ${o.predictions.map((p) => `${p.label} (${p.score.toFixed(4)})`).join(', ')}`;
    case 'tsv':
      return 'error' in o
        ? [escapeControl(o.path), 'error', escapeControl(o.error)].join('\t')
        : [escapeControl(o.path), 'ok', ...o.predictions.flatMap((p) => [escapeControl(p.label), String(round(p.score))])].join('\t');
  }
}
