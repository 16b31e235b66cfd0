// How well the new layer does: accuracy, per-label precision and recall, the confusion matrix,
// and the same as text for stderr.

export interface Evaluation {
  n: number;
  correct: number;
  accuracy: number;
  /** confusion[actual][predicted] */
  confusion: number[][];
  perLabel: { label: string; precision: number | null; recall: number | null; support: number }[];
  /** rows whose prediction was wrong, with what was predicted */
  wrong: { row: number; predicted: number }[];
}

export function evaluate(labels: string[], actual: number[], predicted: number[], rows: number[]): Evaluation {
  const c = labels.length;
  const confusion = labels.map(() => new Array<number>(c).fill(0));
  const wrong: Evaluation['wrong'] = [];
  actual.forEach((a, i) => {
    confusion[a][predicted[i]]++;
    if (a !== predicted[i]) wrong.push({ row: rows[i], predicted: predicted[i] });
  });
  const correct = actual.length - wrong.length;
  const perLabel = labels.map((label, k) => {
    const support = confusion[k].reduce((s, v) => s + v, 0);
    const predictedK = confusion.reduce((s, row) => s + row[k], 0);
    return {
      label,
      precision: predictedK ? confusion[k][k] / predictedK : null,
      recall: support ? confusion[k][k] / support : null,
      support,
    };
  });
  return { n: actual.length, correct, accuracy: actual.length ? correct / actual.length : NaN, confusion, perLabel, wrong };
}

const pct = (v: number | null) => (v === null || Number.isNaN(v) ? '-' : `${(100 * v).toFixed(1)}%`);

/** The per-label table and the confusion matrix (rows: actual label; columns: predicted). */
export function formatEvaluation(e: Evaluation): string[] {
  const width = Math.max(5, ...e.perLabel.map((p) => p.label.length));
  const out = [`${'label'.padEnd(width)}  precision  recall  images`];
  for (const p of e.perLabel) out.push(`${p.label.padEnd(width)}  ${pct(p.precision).padStart(9)}  ${pct(p.recall).padStart(6)}  ${String(p.support).padStart(6)}`);
  out.push(`confusion matrix (rows: actual, columns: predicted, in label order)`);
  const cell = Math.max(4, ...e.confusion.flat().map((v) => String(v).length + 1));
  e.confusion.forEach((row, k) => out.push(`${e.perLabel[k].label.padEnd(width)}  ${row.map((v) => String(v).padStart(cell)).join('')}`));
  return out;
}
