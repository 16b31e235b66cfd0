// Scores -> the top-k predictions: softmax when the model gives raw scores, then a partial sort.

export interface Prediction {
  label: string;
  score: number;
}

export type SoftmaxWhen = 'auto' | 'on' | 'off';

/** What a caller asks of an answer: the flags' --top-k and --threshold, or a request's query. */
export interface Answer {
  topK: number;
  threshold: number;
}

/** Probabilities in label order to the predictions asked for: the one place an answer is made. */
export function answer(probs: Float32Array, labels: readonly string[], asked: Answer): Prediction[] {
  return rankProbabilities(probs, labels, asked.topK, asked.threshold);
}

/** The scores as probabilities: softmaxed when asked, or when they are not already. */
/** The scores as probabilities (softmaxed when asked, or when they are not already), or
 * undefined when any is NaN or infinite. One pass over them: this runs for every image. */
export function probabilities(scores: Float32Array, softmaxWhen: SoftmaxWhen): Float32Array | undefined {
  let sum = 0;
  let inRange = true;
  for (let i = 0; i < scores.length; i++) {
    const x = scores[i];
    sum += x;
    if (x < 0 || x > 1) inRange = false;
  }
  // NaN or an infinity anywhere makes the sum one (float32 values cannot overflow a double's).
  if (!Number.isFinite(sum)) return undefined;
  const already = inRange && Math.abs(sum - 1) < 1e-3;
  return softmaxWhen === 'on' || (softmaxWhen === 'auto' && !already) ? softmax(scores) : scores;
}

function rankProbabilities(probs: Float32Array, labels: readonly string[], topK: number, threshold: number): Prediction[] {
  return topIndices(probs, topK)
    .filter((i) => probs[i] >= threshold)
    .map((i) => ({ label: labels[i], score: probs[i] }));
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
