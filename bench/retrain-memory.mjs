// The training step on N synthetic bottlenecks (10 clustered labels, 256 features, MobileNet
// 0.25's size), in a process of its own: its peak RSS is what retrain adds to the pipeline's for
// N photos. Prints JSON. node bench/retrain-memory.mjs [N]
import { train } from '../dist/retrain/train.js';

const n = Number(process.argv[2] ?? 50000);
const [d, classes] = [256, 10];
const x = new Float32Array(n * d);
const y = new Int32Array(n);
let s = 1;
const rnd = () => (s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
for (let i = 0; i < n; i++) {
  y[i] = i % classes;
  for (let j = 0; j < d; j++) x[i * d + j] = Math.max(0, rnd() * 2 + (j % classes === y[i] ? 0.8 : 0));
}
const rows = Array.from({ length: n }, (_, i) => i);
const start = performance.now();
const t = train({ x, y, d, classes }, rows.filter((i) => i % 10 !== 0), rows.filter((i) => i % 10 === 0), { steps: 200, learningRate: 0.01, l2: 1e-3, balanced: true, seed: 0 });
console.log(JSON.stringify({ n, steps: t.steps, seconds: (performance.now() - start) / 1000, peakRssMb: process.resourceUsage().maxRSS / 1024 }));
