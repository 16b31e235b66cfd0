// Scores -> the top-k predictions: softmax when the model gives raw scores, then a partial sort.

export interface Prediction {
  label: string;
  score: number;
}

export type SoftmaxWhen = 'auto' | 'on' | 'off';

export function rank(scores: Float32Array, labels: string[], softmaxWhen: SoftmaxWhen, topK: number, threshold: number): Prediction[] {
  return rankProbabilities(probabilities(scores, softmaxWhen), labels, topK, threshold);
}

/** The scores as probabilities: softmaxed when asked, or when they are not already. */
export function probabilities(scores: Float32Array, softmaxWhen: SoftmaxWhen): Float32Array {
  return softmaxWhen === 'on' || (softmaxWhen === 'auto' && !looksLikeProbabilities(scores)) ? softmax(scores) : scores;
}

export function rankProbabilities(probs: Float32Array, labels: string[], topK: number, threshold: number): Prediction[] {
  return topIndices(probs, topK)
    .filter((i) => probs[i] >= threshold)
    .map((i) => ({ label: labels[i], score: probs[i] }));
}

function looksLikeProbabilities(v: Float32Array): boolean {
  let sum = 0;
  for (const x of v) {
    if (x < 0 || x > 1) return false;
    sum += x;
  }
  return Math.abs(sum - 1) < 1e-3;
}

function softmax(v: Float32Array): Float32Array {
  let max = -Infinity;
  for (const x of v) if (x > max) max = x;
  const out = new Float32Array(v.length);
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += out[i] = Math.exp(v[i] - max);
  for (let i = 0; i < v.length; i++) out[i] /= sum;
  return out;
}

/** Indices of the k largest values, largest first (insertion into a short sorted list). */
export function topIndices(v: Float32Array, k: number): number[] {
  const top: number[] = [];
  if (k <= 0) return top;
  for (let i = 0; i < v.length; i++) {
    if (top.length === k && v[i] <= v[top[k - 1]]) continue;
    let j = top.length < k ? top.length : k - 1;
    while (j > 0 && v[top[j - 1]] < v[i]) {
      top[j] = top[j - 1];
      j--;
    }
    top[j] = i;
  }
  return top;
}
