// npm run bench -- --only retrain: `classify retrain` against the same job done with OpenCV and
// scikit-learn (bench/retrain_sklearn.py), on scikit-learn's handwritten digits written out as
// JPEG folders, with the ImageNet MobileNet 0.25 as the base. Accuracy, wall time, the training
// step, a rerun with every bottleneck cached, peak memory; beside retrain.py's published figures.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const PYTHON = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import cv2, sklearn'], { stdio: 'ignore' }).status === 0);
const NODE = 'MobilenetV1/Logits/AvgPool_1a/AvgPool';

/** Wall seconds and peak RSS (MB) of a command, from GNU time; stderr's other lines kept. */
function timed(cmd, args) {
  const r = spawnSync('/usr/bin/time', ['-f', '@@ %e %M', cmd, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const m = /@@ ([\d.]+) (\d+)/.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return { seconds: Number(m[1]), rssMb: Number(m[2]) / 1024, stdout: r.stdout, stderr: r.stderr };
}

export async function benchRetrain({ shared, work, bin }) {
  if (!PYTHON || !existsSync('/usr/bin/time')) {
    console.log('\nretrain: skipped (needs python3 with cv2 and sklearn, Debian python3-opencv python3-sklearn, and /usr/bin/time)');
    return undefined;
  }
  const base = join(shared, 'models', 'mobilenet_v1_0.25_128');
  const digits = join(work, 'digits');
  spawnSync(PYTHON, [join(import.meta.dirname, 'retrain_sklearn.py'), 'digits', digits], { stdio: 'inherit' });
  const images = readdirSync(digits).reduce((n, d) => n + readdirSync(join(digits, d)).length, 0);
  console.log(`\nretrain: ${images} digit images (scikit-learn's, as 64x64 JPEG folders), base mobilenet_v1_0.25_128, bottleneck ${NODE}...`);

  const py = timed(PYTHON, [join(import.meta.dirname, 'retrain_sklearn.py'), 'baseline', digits, join(base, 'frozen_graph.pb'), NODE, '10', '10']);
  const sk = JSON.parse(py.stdout);
  const store = join(work, 'bottlenecks');
  const run = (out, extra = []) => {
    const t = timed(process.execPath, [bin, 'retrain', digits, '--base', base, '-o', join(work, out), '--bottleneck-dir', store, '-q', ...extra]);
    return { ...t, report: JSON.parse(readFileSync(join(work, out, 'report.json'), 'utf8')) };
  };
  const first = run('digits-1');
  const cached = run('digits-2');
  // retrain.py's optimiser, as near as this has one: mini-batches of 100 for 4,000 steps at 0.01
  // (Adam here, plain gradient descent there), on the cached bottlenecks.
  const batches = run('digits-3', ['--train-batch-size', '100', '--learning-rate', '0.01', '--how-many-training-steps', '4000']);

  // The training step alone on 50,000 synthetic bottlenecks, in a process of its own.
  const mem = JSON.parse(spawnSync(process.execPath, [join(import.meta.dirname, 'retrain-memory.mjs'), '50000'], { encoding: 'utf8' }).stdout);

  const pct = (a) => `${(100 * a).toFixed(1)}%`;
  const r = {
    images,
    classify: { testAccuracy: first.report.test.accuracy, testN: first.report.test.n, seconds: first.seconds, rssMb: first.rssMb, trainingMs: first.report.training.ms, steps: first.report.training.steps },
    cached: { seconds: cached.seconds, rssMb: cached.rssMb, computed: cached.report.bottlenecks.computed },
    batches: { testAccuracy: batches.report.test.accuracy, trainingMs: batches.report.training.ms, steps: batches.report.training.steps },
    sklearn: sk,
  };
  console.log('\n| retrain on the digits | test accuracy (N) | wall (s) | vs OpenCV + scikit-learn | training step | peak RSS |');
  console.log('|---|---|---|---|---|---|');
  console.log(`| OpenCV features + scikit-learn LogisticRegression | ${pct(sk.test_accuracy)} (${sk.test_n}) | ${py.seconds.toFixed(2)} | 1x | ${(1000 * sk.fit_s).toFixed(0)} ms | ${py.rssMb.toFixed(0)} MB |`);
  console.log(
    `| classify retrain, L-BFGS (default) | ${pct(r.classify.testAccuracy)} (${r.classify.testN}) | ${first.seconds.toFixed(2)} | ${(first.seconds / py.seconds).toFixed(2)}x (target 0.5x) | ` +
      `${r.classify.trainingMs} ms, ${r.classify.steps} steps (target under 2 s) | ${first.rssMb.toFixed(0)} MB |`,
  );
  console.log(
    `| classify retrain, every bottleneck cached | same | ${cached.seconds.toFixed(2)} | ${(cached.seconds / first.seconds).toFixed(2)}x of its first run (target 0.15x) | ` +
      `${cached.report.training.ms} ms | ${cached.rssMb.toFixed(0)} MB |`,
  );
  console.log(`| classify retrain, Adam, batches of 100, 4000 steps at 0.01 | ${pct(r.batches.testAccuracy)} | - | - | ${r.batches.trainingMs} ms, ${r.batches.steps} steps | - |`);
  console.log(
    `accuracy: classify ${pct(r.classify.testAccuracy)} vs scikit-learn ${pct(sk.test_accuracy)}, difference ${Math.abs(r.classify.testAccuracy - sk.test_accuracy).toFixed(3)} (target: within 0.01)`,
  );
  console.log(
    "retrain.py's published figures (its tutorial, flower_photos, 3,670 photos of 5 labels): 90-95% with Inception v3, about 81% with MobileNet 0.25/128. " +
      'The shared flower photos here are 5 (one per label): too few to split into training and test sets, so the flower comparison needs flower_photos itself.',
  );
  const extra = (50000 * 4 * first.report.bottleneck.size) / 1048576;
  console.log(
    `memory: ${first.rssMb.toFixed(0)} MB peak for ${images} images (decoded images only while in flight; bottlenecks held as one array, ` +
      `${first.report.bottleneck.size} floats an image: ${extra.toFixed(0)} MB for 50,000). The training step on 50,000 synthetic bottlenecks, alone: ` +
      `${mem.peakRssMb.toFixed(0)} MB peak, ${mem.seconds.toFixed(1)} s (${mem.steps} steps). Estimate for 50,000 photos: ${(first.rssMb + mem.peakRssMb).toFixed(0)} MB ` +
      '(target: under 400 MB; not measured end to end on 50,000 photos here)',
  );
  return { ...r, memory50k: mem };
}
