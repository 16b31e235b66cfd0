// The training objective's WebAssembly kernel (float32 sums) held to a plain float64 computation
// of the same loss and gradient, over shapes that leave a short last block of rows and a row
// padded to four lanes; training with it deterministic, and its predictions those of the weights.
import { describe, expect, it } from 'vitest';
import { Kernel } from '../dist/retrain/kernel.js';
import { train } from '../dist/retrain/train.js';

function generator(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff) - 0.5;
}

/** n rows of d features in c classes; feature j centred on 10 j (far from zero, as bottlenecks
 * are not centred), feature 1 constant (a scale of 0). */
function problem(n: number, d: number, c: number, seed: number) {
  const rnd = generator(seed);
  const x = new Float32Array(n * d);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = Math.floor((rnd() + 0.5) * c) % c;
    for (let j = 0; j < d; j++) x[i * d + j] = j === 1 ? 4 : 10 * j + 2 * rnd() + (j % c === y[i] ? 1 : 0);
  }
  const mean = new Float64Array(d);
  const scale = new Float64Array(d);
  for (let j = 0; j < d; j++) {
    let [s, q] = [0, 0];
    for (let i = 0; i < n; i++) [s, q] = [s + x[i * d + j], q + x[i * d + j] ** 2];
    mean[j] = s / n;
    const sd = Math.sqrt(Math.max(0, q / n - mean[j] ** 2));
    scale[j] = sd > 1e-6 ? 1 / sd : 0;
  }
  const p = Float64Array.from({ length: d * c + c }, () => rnd());
  const classWeight = Float64Array.from({ length: c }, () => 0.5 + rnd() + 0.5);
  return { data: { x, y, d, classes: c }, mean, scale, p, classWeight };
}

/** The objective written out plainly, in float64: weighted mean cross-entropy of softmax(z W + b)
 * with z = (x - mean) * scale (the kernel's), + l2/2 |W|^2, and its gradient. */
function reference(pr: ReturnType<typeof problem>, rows: number[], l2: number, { mean, scale }: { mean: Float64Array; scale: Float64Array }) {
  const { data, p, classWeight } = pr;
  const { x, y, d, classes: c } = data;
  const grad = new Float64Array(p.length);
  let [loss, total] = [0, 0];
  for (const i of rows) {
    const z = Array.from({ length: d }, (_, j) => (x[i * d + j] - mean[j]) * scale[j]);
    const logits = Array.from({ length: c }, (_, k) => z.reduce((s, v, j) => s + v * p[j * c + k], p[d * c + k]));
    const max = Math.max(...logits);
    const e = logits.map((v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b);
    const w = classWeight[y[i]];
    loss -= w * Math.log(e[y[i]] / sum);
    total += w;
    for (let k = 0; k < c; k++) {
      const delta = w * (e[k] / sum - (k === y[i] ? 1 : 0));
      for (let j = 0; j < d; j++) grad[j * c + k] += delta * z[j];
      grad[d * c + k] += delta;
    }
  }
  let penalty = 0;
  for (let j = 0; j < d * c; j++) {
    penalty += p[j] ** 2;
    grad[j] = grad[j] / total + l2 * p[j];
  }
  for (let k = 0; k < c; k++) grad[d * c + k] /= total;
  return { loss: loss / total + 0.5 * l2 * penalty, grad };
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

describe('the training kernel', () => {
  // [rows, features, classes]: rows not a multiple of 4 (a short last block), features not a
  // multiple of 4 (a padded row), one feature, two classes, more classes than features.
  const shapes = [
    [1, 1, 2],
    [7, 5, 3],
    [13, 1, 2],
    [33, 17, 4],
    [64, 64, 10],
    [101, 30, 12],
    [250, 256, 10],
  ];
  for (const [n, d, c] of shapes) {
    it(`matches the float64 loss and gradient: ${n} rows, ${d} features, ${c} classes`, () => {
      const pr = problem(n, d, c, n * 31 + d);
      const l2 = 0.01;
      const kernel = new Kernel(pr.data, range(0, n), range(0, n));
      // Standardised on all the rows: the mean and scale computed plainly.
      for (let j = 0; j < d; j++) {
        expect(kernel.mean[j]).toBeCloseTo(pr.mean[j], 9);
        expect(kernel.scale[j]).toBeCloseTo(pr.scale[j], 9);
      }
      // All the rows, then a shuffled subset (as Adam's batches are), each twice over (the
      // memory reused between evaluations).
      const subset = range(0, n).filter((i) => i % 3 !== 1).reverse();
      for (const rows of [range(0, n), subset, range(0, n), subset]) {
        if (!rows.length) continue;
        const want = reference(pr, rows, l2, kernel);
        const grad = new Float64Array(pr.p.length).fill(NaN);
        const loss = kernel.lossAndGradient(pr.p, rows, pr.classWeight, l2, grad);
        expect(Math.abs(loss - want.loss)).toBeLessThan(1e-7 * Math.max(1, want.loss));
        const largest = want.grad.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        for (let j = 0; j < grad.length; j++) expect(Math.abs(grad[j] - want.grad[j])).toBeLessThan(2e-6 * largest + 1e-12);
        // Without a gradient: the same loss, nothing else computed.
        expect(kernel.lossAndGradient(pr.p, rows, pr.classWeight, l2)).toBe(loss);
      }
    });
  }

  it("standardises as train.ts's scalar float64 loops did, to the bit, on the rows it is given", () => {
    const pr = problem(41, 7, 3, 3);
    const on = [5, 0, 40, 17, 17, 8, 33, 2, 12];
    const { x, d } = pr.data;
    // The loops the kernel's replace: sums over the rows in order, then mean, sd and 1 / sd.
    const [mean, sq, scale] = [new Float64Array(d), new Float64Array(d), new Float64Array(d)];
    for (const i of on) {
      for (let j = 0; j < d; j++) {
        const v = x[i * d + j];
        mean[j] += v;
        sq[j] += v * v;
      }
    }
    for (let j = 0; j < d; j++) {
      mean[j] /= on.length;
      const sd = Math.sqrt(Math.max(0, sq[j] / on.length - mean[j] * mean[j]));
      scale[j] = sd > 1e-6 ? 1 / sd : 0;
    }
    const kernel = new Kernel(pr.data, range(0, 41), on);
    expect(Array.from(kernel.mean)).toEqual(Array.from(mean));
    expect(Array.from(kernel.scale)).toEqual(Array.from(scale));
    expect(scale[1]).toBe(0); // the constant feature
  });

  it('reads only the rows it was given', () => {
    const pr = problem(20, 6, 3, 5);
    const kernel = new Kernel(pr.data, range(0, 10), range(0, 10));
    const want = reference(pr, [9, 3, 0], 0, kernel);
    expect(kernel.lossAndGradient(pr.p, [9, 3, 0], pr.classWeight, 0)).toBeCloseTo(want.loss, 5);
    expect(() => kernel.lossAndGradient(pr.p, [12], pr.classWeight, 0)).toThrow(/not copied/);
    expect(() => kernel.lossAndGradient(pr.p, range(0, 13), pr.classWeight, 0)).toThrow(/more than/);
  });
});

describe('training with the kernel', () => {
  const pr = problem(400, 37, 5, 11);
  const options = { steps: 300, learningRate: 0.02, l2: 1e-3, balanced: true, seed: 9 };
  const [trainRows, validationRows] = [range(0, 340), range(340, 400)];

  it('is deterministic: L-BFGS', () => {
    const [a, b] = [train(pr.data, trainRows, validationRows, options), train(pr.data, trainRows, validationRows, options)];
    expect(a.steps).toBeGreaterThan(1);
    expect([b.steps, b.bestStep]).toEqual([a.steps, a.bestStep]);
    expect(Array.from(b.weights)).toEqual(Array.from(a.weights));
    expect(Array.from(b.biases)).toEqual(Array.from(a.biases));
  });

  it('predicts the class that the raw weights give in float64, for each row trained on, validated or scored', () => {
    const scoredPr = problem(460, 37, 5, 12);
    const scored = range(400, 450);
    const { x, d, classes: c } = scoredPr.data;
    for (const opts of [options, { ...options, batchSize: 30 }]) {
      const t = train(scoredPr.data, trainRows, validationRows, opts, scored);
      const byWeights = (i: number) => {
        let [best, top] = [0, -Infinity];
        for (let k = 0; k < c; k++) {
          let v = t.biases[k];
          for (let j = 0; j < d; j++) v += x[i * d + j] * t.weights[j * c + k];
          if (v > top) [best, top] = [k, v];
        }
        return best;
      };
      for (const rows of [trainRows, validationRows, scored, [449, 0, 345]]) expect(t.predict(rows)).toEqual(rows.map(byWeights));
      expect(() => t.predict([455])).toThrow(/not copied/);
    }
  });

  it('is deterministic: Adam on mini-batches', () => {
    const adam = { ...options, batchSize: 30 };
    const [a, b] = [train(pr.data, trainRows, validationRows, adam), train(pr.data, trainRows, validationRows, adam)];
    expect([b.steps, b.bestStep]).toEqual([a.steps, a.bestStep]);
    expect(Array.from(b.weights)).toEqual(Array.from(a.weights));
    expect(Array.from(b.biases)).toEqual(Array.from(a.biases));
  });
});
