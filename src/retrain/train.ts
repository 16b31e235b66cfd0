// The new layer: softmax regression on the bottlenecks; the standardisation, the loss and its
// gradient in kernel.ts.
// Features are standardised on the training set (the weights are mapped back at the end, so the
// model takes raw bottlenecks), classes weigh the same whatever their counts, the weights have an
// L2 penalty, and the weights kept are those that did best on the validation set.
//
// Two optimisers: full-batch L-BFGS (the default: no learning rate to choose, converges in tens to
// a few hundred steps at this size) and mini-batch Adam when --train-batch-size is given.

import { Kernel } from './kernel.js';

/** Validation checks in a row without a better loss before training stops. On the digits the
 * best validation loss came at L-BFGS step 7, and the 99 steps after it (1.7 s) never bettered it. */
const PATIENCE = 10;

export interface TrainOptions {
  /** optimiser steps: L-BFGS iterations, or Adam mini-batches */
  steps: number;
  /** Adam's step size */
  learningRate: number;
  /** undefined: full batch (L-BFGS); else Adam on mini-batches of this size */
  batchSize?: number;
  /** L2 penalty on the weights, on standardised features */
  l2: number;
  /** classes weighted by 1 / their count (on by default) */
  balanced: boolean;
  seed: number;
  /** called after each step with the step number and the training loss */
  progress?: (step: number, loss: number) => void;
}

export interface Trained {
  /** D x C, row-major, for raw (unstandardised) features */
  weights: Float32Array;
  biases: Float32Array;
  /** Each row's class under the kept weights (the highest logit, the first of equal ones), for
   * rows among those trained, validated or scored. */
  predict(rows: readonly number[]): number[];
  steps: number;
  /** the step whose weights were kept (best validation loss) */
  bestStep: number;
  ms: number;
}

/** Rows of `x` (n x d) with labels `y`; `train` and `validation` are row indices. */
export interface Data {
  x: Float32Array;
  y: Int32Array;
  d: number;
  classes: number;
}

/** `scored`: rows predict() is asked for besides the training and validation rows. */
export function train(data: Data, trainRows: number[], validationRows: number[], opts: TrainOptions, scored: readonly number[] = []): Trained {
  const start = performance.now();
  const { d, classes: c } = data;
  // The rows standardised on the training rows in the kernel's memory; the weights mapped back to
  // raw features at the end.
  const kernel = new Kernel(data, [...trainRows, ...validationRows, ...scored], trainRows);
  const { mean, scale } = kernel;
  const counts = new Float64Array(c);
  for (const i of trainRows) counts[data.y[i]]++;
  const present = counts.filter((n) => n > 0).length;
  const classWeight = counts.map((count) => (opts.balanced && count > 0 ? trainRows.length / (present * count) : 1));

  // Parameters: W (d x c) then b (c).
  const size = d * c + c;
  const objective = (p: Float64Array, rows: number[], grad?: Float64Array, weights = classWeight) => kernel.lossAndGradient(p, rows, weights, opts.l2, grad);
  const unweighted = new Float64Array(c).fill(1);
  const validationLoss = (p: Float64Array) => (validationRows.length ? objective(p, validationRows, undefined, unweighted) : NaN);

  let best = new Float64Array(size);
  let bestLoss = Infinity;
  let bestStep = 0;
  let checks = 0;
  let sinceBest = 0;
  /** Keeps the weights with the lowest validation loss; says to stop once PATIENCE checks in a
   * row have not bettered it (early stopping). No validation set: the last weights, no stop. */
  const keep = (p: Float64Array, step: number): boolean => {
    const v = validationLoss(p);
    checks++;
    if (Number.isNaN(v) || v < bestLoss) {
      bestLoss = Number.isNaN(v) ? bestLoss : v;
      best = p.slice();
      bestStep = step;
      sinceBest = 0;
      return false;
    }
    return ++sinceBest >= PATIENCE && checks > PATIENCE;
  };
  let steps: number;
  if (opts.batchSize === undefined) steps = lbfgs(size, (p, g) => objective(p, trainRows, g), opts, keep);
  else steps = adam(size, (p, g, rows) => objective(p, rows, g), trainRows, opts, keep);

  // Back to raw features.
  const weights = new Float32Array(d * c);
  const biases = new Float32Array(c);
  asRawWeights(best, d, c, mean, scale, weights, biases);
  const kept = best;
  return { weights, biases, predict: (rows) => kernel.predict(kept, rows), steps, bestStep, ms: performance.now() - start };
}

/** Weights learnt on standardised features (`p`: d x c, then c biases) as raw features meet them,
 * laid out as `p` is (d x c): w' = w * scale, b' = b - sum(mean * w'). */
function asRawWeights(p: ArrayLike<number>, d: number, c: number, mean: ArrayLike<number>, scale: ArrayLike<number>, weights: Float32Array, biases: Float32Array): void {
  for (let k = 0; k < c; k++) {
    let shift = p[d * c + k];
    for (let j = 0; j < d; j++) {
      const v = p[j * c + k] * scale[j];
      weights[j * c + k] = v;
      shift -= mean[j] * v;
    }
    biases[k] = shift;
  }
}

// The vector steps of L-BFGS, functions of their own so that they are optimised within the first
// steps (a run is one process, its code cold).
const dot = (a: Float64Array, b: Float64Array) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};
/** to += from * a */
const addScaled = (to: Float64Array, from: Float64Array, a: number) => {
  for (let i = 0; i < to.length; i++) to[i] += from[i] * a;
};
const scaleBy = (v: Float64Array, a: number) => {
  for (let i = 0; i < v.length; i++) v[i] *= a;
};
const difference = (a: Float64Array, b: Float64Array) => {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] - b[i];
  return out;
};

/** L-BFGS (10 pairs) with a backtracking Armijo line search; stops early once the loss no longer
 * moves. Returns the steps taken. */
function lbfgs(size: number, f: (p: Float64Array, g: Float64Array) => number, opts: TrainOptions, keep: (p: Float64Array, step: number) => boolean): number {
  const m = 10;
  let p = new Float64Array(size);
  let g = new Float64Array(size);
  let loss = f(p, g);
  const ss: Float64Array[] = [];
  const ys: Float64Array[] = [];
  let step = 0;
  while (step < opts.steps) {
    // Two-loop recursion: direction = -H g.
    const q = g.slice();
    const alphas: number[] = [];
    for (let i = ss.length - 1; i >= 0; i--) {
      const a = dot(ss[i], q) / dot(ys[i], ss[i]);
      alphas[i] = a;
      addScaled(q, ys[i], -a);
    }
    const gamma = ss.length ? dot(ss[ss.length - 1], ys[ys.length - 1]) / dot(ys[ys.length - 1], ys[ys.length - 1]) : 1 / Math.max(1, Math.sqrt(dot(g, g)));
    scaleBy(q, gamma);
    for (let i = 0; i < ss.length; i++) {
      const b = dot(ys[i], q) / dot(ys[i], ss[i]);
      addScaled(q, ss[i], alphas[i] - b);
    }
    const slope = -dot(g, q);
    if (!(slope < 0)) break;
    let t = 1;
    let next = new Float64Array(size);
    let nextG = new Float64Array(size);
    let nextLoss = Infinity;
    for (let tries = 0; tries < 30; tries++, t /= 2) {
      next.set(p);
      addScaled(next, q, -t);
      nextLoss = f(next, nextG);
      if (nextLoss <= loss + 1e-4 * t * slope) break;
    }
    if (!(nextLoss < loss)) break;
    const s = difference(next, p);
    const yv = difference(nextG, g);
    if (dot(s, yv) > 1e-12) {
      ss.push(s);
      ys.push(yv);
      if (ss.length > m) {
        ss.shift();
        ys.shift();
      }
    }
    const moved = loss - nextLoss;
    [p, g, loss] = [next, nextG, nextLoss];
    step++;
    const stop = keep(p, step);
    opts.progress?.(step, loss);
    if (stop || moved < 1e-9 * Math.max(1, Math.abs(loss))) break;
    [next, nextG] = [new Float64Array(size), new Float64Array(size)];
  }
  if (step === 0) keep(p, 0);
  return step;
}

/** Adam on mini-batches drawn without replacement, reshuffled each epoch with the seed. */
function adam(
  size: number,
  f: (p: Float64Array, g: Float64Array, rows: number[]) => number,
  rows: number[],
  opts: TrainOptions,
  keep: (p: Float64Array, step: number) => boolean,
): number {
  const [b1, b2, eps] = [0.9, 0.999, 1e-8];
  const p = new Float64Array(size);
  const g = new Float64Array(size);
  const m = new Float64Array(size);
  const v = new Float64Array(size);
  const random = mulberry32(opts.seed);
  const order = rows.slice();
  let at = order.length;
  const batch = Math.max(1, Math.min(opts.batchSize!, rows.length));
  // Validation checked about 50 times over the run: often enough to stop near the best.
  const every = Math.max(1, Math.floor(opts.steps / 50));
  for (let step = 1; step <= opts.steps; step++) {
    if (at + batch > order.length) {
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      at = 0;
    }
    const loss = f(p, g, order.slice(at, (at += batch)));
    for (let j = 0; j < size; j++) {
      m[j] = b1 * m[j] + (1 - b1) * g[j];
      v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
      p[j] -= (opts.learningRate * (m[j] / (1 - b1 ** step))) / (Math.sqrt(v[j] / (1 - b2 ** step)) + eps);
    }
    opts.progress?.(step, loss);
    if ((step % every === 0 || step === opts.steps) && keep(p, step)) return step;
  }
  return opts.steps;
}

/** A small seeded generator: the same seed, the same batches. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
