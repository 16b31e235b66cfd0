// `classify retrain IMAGE_DIR --base MODEL -o OUT_DIR`: a new last layer for the base model, learnt
// from a folder of labelled photos. Bottlenecks come from the filter's own pipeline (decode
// threads, engine, the base model's preprocessing) and are kept in --bottleneck-dir; the layer is
// trained in process (src/retrain/train.ts); OUT_DIR is a model folder the filter, serve and info
// load as it is, written whole or not at all.
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, renameSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { classifierSettings } from '../settings.js';
import type { Classifier } from '../classifier/classifier.js';
import { OutputError, UsageError } from '../errors.js';
import { ImageReader, InputError } from '../image/read.js';
import { describeSteps, toMetadata } from '../image/preprocessing.js';
import { inOrder } from '../in-order.js';
import type { Log } from '../log.js';
import { resolveModel } from '../model/locate.js';
import { choosePreprocessing } from '../model/preprocessing.js';
import { Progress, type Terminal } from '../progress.js';
import { type Evaluation, evaluate, formatEvaluation } from '../retrain/evaluate.js';
import { type FeatureGraph, retrainedGraphDef, retrainedModel } from '../retrain/graph.js';
import { type LabelledImage, listImages } from '../retrain/split.js';
import { BottleneckStore, bottleneckFolder, defaultBottleneckDir, keptFeatureGraph } from '../retrain/store.js';
import { type Distortions, anyDistortion, distort } from '../retrain/distort.js';
import { mulberry32, train, type Trained } from '../retrain/train.js';

export interface RetrainOptions extends Distortions {
  /** with a distortion: distorted copies made of each training photo */
  distortedCopies: number;
  base: string;
  output: string;
  bottleneckNode?: string;
  bottleneckDir?: string;
  testingPercentage: number;
  validationPercentage: number;
  howManyTrainingSteps: number;
  learningRate: number;
  trainBatchSize?: number;
  seed: number;
  minAccuracy?: number;
  printMisclassifiedTestImages: boolean;
  format: 'onnx' | 'pb';
  decodeJobs: number;
  threads: number;
  quiet: boolean;
  verbose: boolean;
}

/** L2 penalty on standardised features. On the digits (MobileNet 0.25 bottlenecks, 1,451 training
 * images) 1e-4, 1e-3 and 1/N gave the same test accuracy and 1e-2 0.6 points less: early stopping
 * does most of the regularising. */
const L2 = 1e-3;

/** Runs the whole command; returns the exit status (0, or 1 under --min-accuracy). Usage and
 * model errors are thrown before any image is read. */
export async function runRetrain(imageDir: string, opts: RetrainOptions, stderr: Terminal, log: Log): Promise<number> {
  if (opts.testingPercentage + opts.validationPercentage >= 100) {
    throw new UsageError('--testing-percentage and --validation-percentage leave no images to train on (together they must be under 100)');
  }
  const out = resolve(opts.output);
  checkOutput(out);
  const { labels, images } = listImages(imageDir, opts.validationPercentage, opts.testingPercentage);
  const model = resolveModel(opts.base, undefined, 'auto', false);
  if (opts.format === 'pb' && model.format !== 'frozen') {
    throw new UsageError(`--format pb writes retrain.py's frozen graph, which takes a frozen graph as --base; ${model.file} is a ${model.format} model`);
  }
  const dir = bottleneckFolder(opts.bottleneckDir ?? defaultBottleneckDir());
  const features = await keptFeatureGraph(dir, model, opts.bottleneckNode);
  const { preprocessing } = choosePreprocessing(model, features.normalisation);
  const fingerprint = createHash('sha256').update(features.onnx).update(JSON.stringify(preprocessing)).digest('hex');
  const store = new BottleneckStore(dir, fingerprint, imageDir);
  if (opts.verbose) log(`bottleneck "${features.node}" of ${model.file}${features.kept ? `, cut as before (${join(dir, 'graphs')})` : ''}`);
  const load = async () => {
    const settings = classifierSettings(model.file, { engine: { threads: opts.threads, softmax: 'off' }, pipeline: { decodeJobs: opts.decodeJobs } });
    // Imported here: a rerun that finds every bottleneck never loads the engine, decode threads or
    // sharp, nor the modules that start them.
    const { Classifier } = await import('../classifier/classifier.js');
    const classifier = await Classifier.load(settings, { features: { onnx: features.onnx, normalisation: features.normalisation } });
    if (opts.verbose) {
      for (const note of [...features.notes, ...classifier.info.engineNotes]) log(`engine note: ${note}`);
      log(`preprocessing ${describeSteps(classifier.info.preprocessing)}, mean ${preprocessing.mean.join(',')} std ${preprocessing.std.join(',')}`);
    }
    return classifier;
  };
  let classifier: Classifier | undefined;
  const loaded = async () => (classifier ??= await load());
  let bottlenecks: Bottlenecks;
  let distorted: Distorted | undefined;
  try {
    bottlenecks = await computeBottlenecks(loaded, store, images, opts, stderr, log);
    if (opts.verbose) {
      log(`bottlenecks: ${bottlenecks.size} features each, ${bottlenecks.computed} computed, ${bottlenecks.cached} from ${store.dir}`);
      log(`photos: ${store.photosRead} read, ${store.photosUnchanged} unchanged since a run before (by their stat: not read)`);
    }
    if (anyDistortion(opts)) distorted = await distortedBottlenecks(await loaded(), bottlenecks, opts, log);
  } finally {
    store.flush(); // what was computed before a failure is kept too
    await classifier?.close();
  }

  const { kept, size } = bottlenecks;
  const y = Int32Array.from([...kept.map((img) => img.label), ...(distorted?.labels ?? [])]);
  const x = distorted ? joined(bottlenecks.x, distorted.x) : bottlenecks.x;
  const rowsOf: Record<LabelledImage['set'], number[]> = { training: [], validation: [], testing: [] };
  kept.forEach((img, row) => rowsOf[img.set].push(row));
  const { training: trainRows, validation: validationRows, testing: testRows } = rowsOf;
  if (trainRows.length === 0) throw new UsageError(`${imageDir}: no image fell in the training set`);
  for (const [k, label] of labels.entries()) {
    if (!trainRows.some((r) => y[r] === k)) log(`${join(imageDir, label)}: no training image for this label (it will never be predicted)`);
  }
  const distortedRows = Array.from({ length: distorted?.labels.length ?? 0 }, (_, i) => kept.length + i);
  const trained = train({ x, y, d: size, classes: labels.length }, [...trainRows, ...distortedRows], validationRows, {
    steps: opts.howManyTrainingSteps,
    learningRate: opts.learningRate,
    batchSize: opts.trainBatchSize,
    l2: L2,
    balanced: true,
    seed: opts.seed,
  }, testRows);
  const score = (rows: number[]) => evaluate(labels, rows.map((r) => y[r]), trained.predict(rows), rows);
  const [onTrain, onValidation, onTest] = [score(trainRows), score(validationRows), score(testRows)];
  const report = reportJson(opts, model.file, features, labels, bottlenecks, distorted?.labels.length ?? 0, trained, onTrain, onValidation, onTest);
  printReport(report, onTest, kept, labels, opts, log);

  if (opts.minAccuracy !== undefined && !(onTest.accuracy >= opts.minAccuracy)) {
    const got = onTest.n ? `test accuracy ${onTest.accuracy.toFixed(4)}` : 'no test images';
    log(`${got} is below --min-accuracy ${opts.minAccuracy}: ${opts.output} not written`);
    return 1;
  }
  const head = { weights: trained.weights, biases: trained.biases, labels };
  const metadata = { ...toMetadata(preprocessing), labels: JSON.stringify(labels), base: basename(model.file), bottleneck: features.node };
  const files: [string, Uint8Array | string][] = [
    ['model.onnx', retrainedModel(features, head, metadata)],
    ['labels.txt', labels.join('\n') + '\n'],
    ['report.json', JSON.stringify(report, null, 2) + '\n'],
  ];
  if (opts.format === 'pb') {
    files.push(['output_graph.pb', await retrainedGraphDef(model.file, features, head)], ['output_labels.txt', labels.join('\n') + '\n']);
  }
  writeFolder(out, files);
  if (!opts.quiet) log(`wrote ${opts.output}: ${files.map(([name]) => name).join(', ')}`);
  return 0;
}

/** OUT_DIR must not hold anything yet (a version is written once) and its parent must be
 * writable: both checked before any work. */
function checkOutput(out: string): void {
  if (existsSync(out) && (!statSync(out).isDirectory() || readdirSync(out).length > 0)) {
    throw new UsageError(`${out}: already exists; retrain writes a new model folder (name another, e.g. the next version number)`);
  }
  try {
    mkdirSync(dirname(out), { recursive: true });
    accessSync(dirname(out), constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new UsageError(`${dirname(out)}: cannot write the model folder there (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** Written in a hidden folder beside OUT_DIR, then renamed into place: a reader (serve watching
 * a folder of versions) sees the whole model or nothing. */
function writeFolder(out: string, files: [string, Uint8Array | string][]): void {
  const tmp = join(dirname(out), `.${basename(out)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    mkdirSync(tmp);
    for (const [name, data] of files) writeFileSync(join(tmp, name), data);
    if (existsSync(out)) rmdirSync(out); // empty: checked at the start
    renameSync(tmp, out);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw new OutputError(err as NodeJS.ErrnoException, out);
  }
}

interface Bottlenecks {
  /** one row of `size` features per kept image */
  x: Float32Array;
  size: number;
  kept: LabelledImage[];
  failed: number;
  computed: number;
  cached: number;
}

/** Every image's bottleneck, from the store or computed, in image order. An image that cannot be
 * read or decoded is one line on stderr and is left out. The model is loaded at the first photo
 * the store lacks: a rerun on photos all seen before loads none. */
async function computeBottlenecks(
  load: () => Promise<Classifier>,
  store: BottleneckStore,
  images: LabelledImage[],
  opts: RetrainOptions,
  stderr: Terminal,
  log: Log,
): Promise<Bottlenecks> {
  const reader = new ImageReader();
  let size: number | undefined;
  let x = new Float32Array(0);
  const kept: LabelledImage[] = [];
  let [failed, computed] = [0, 0];
  const progress = Progress.enabled(stderr, opts.quiet) ? await Progress.start(stderr) : undefined;
  const record = (img: LabelledImage, v: Float32Array | InputError) => {
    if (v instanceof InputError) {
      failed++;
      progress?.clear();
      log(`${img.path}: ${v.message} (left out)`);
    } else {
      if (size === undefined) x = new Float32Array(images.length * (size = v.length));
      x.set(v, kept.length * size);
      kept.push(img);
    }
    progress?.count(!(v instanceof InputError));
  };
  const inputError = (err: unknown) => {
    if (err instanceof InputError) return err;
    throw err;
  };
  // The keys of the photos the stat index vouches for, up to the first it does not, before the
  // packs are read: their features are then held only while they are copied into x, and die
  // young (see BottleneckStore.release).
  const unchanged: string[] = [];
  for (const img of images) {
    const key = store.unchangedKey(img.path);
    if (key === undefined) break;
    unchanged.push(key);
  }
  // Until the first photo the store lacks, photos are read and looked up synchronously (a rerun
  // that finds them all is bounded by this loop: a promise per photo cost it twice the time),
  // yielding now and then so that the progress line is drawn.
  let i = 0;
  for (; i < images.length; i++) {
    if (i % 256 === 255) await new Promise(setImmediate);
    let v: Float32Array | InputError | undefined;
    try {
      v = store.get(unchanged[i] ?? store.photoKeyNow(images[i].path, reader), size);
    } catch (err) {
      v = inputError(err);
    }
    if (!v) break;
    record(images[i], v);
  }
  if (i < images.length) {
    const classifier = await load();
    {
      const one = async ([img, vouched]: readonly [LabelledImage, string | undefined]): Promise<Float32Array | InputError> => {
        try {
          const known = vouched ?? store.unchangedKey(img.path);
          let v = known === undefined ? undefined : store.get(known, classifier.info.classes);
          if (v) return v;
          const { bytes, key } = await store.readPhoto(img.path, reader);
          v = store.get(key, classifier.info.classes);
          if (!v) {
            v = await classifier.features({ bytes });
            store.put(key, v);
            computed++;
          }
          return v;
        } catch (err) {
          return inputError(err);
        }
      };
      const rest = images.slice(i).map((img, j) => [img, unchanged[i + j]] as const);
      async function* paths() {
        yield* rest;
      }
      let at = 0;
      for await (const v of inOrder(paths(), one, classifier.info.inFlight)) record(rest[at++][0], v);
    }
  }
  progress?.stop();
  store.flush();
  store.keepIndex();
  store.release();
  if (size === undefined) throw new UsageError('no image could be read: nothing to train on');
  return { x: x.subarray(0, kept.length * size), size, kept, failed, computed, cached: kept.length - computed };
}

interface Distorted {
  /** one row of features per distorted copy */
  x: Float32Array;
  labels: number[];
}

/** `distortedCopies` distorted copies of each training photo through the model: new every run,
 * as retrain.py makes new ones at every step, so never kept in the store. Each copy's random
 * numbers come from the seed, the photo and the copy, whatever order they finish in. */
async function distortedBottlenecks(classifier: Classifier, b: Bottlenecks, opts: RetrainOptions, log: Log): Promise<Distorted> {
  const reader = new ImageReader();
  const jobs = b.kept.flatMap((img, row) => (img.set === 'training' ? Array.from({ length: opts.distortedCopies }, (_, copy) => ({ img, row, copy })) : []));
  const one = async ({ img, row, copy }: (typeof jobs)[number]): Promise<Float32Array | undefined> => {
    const random = mulberry32((opts.seed ^ Math.imul(row + 1, 0x9e3779b1) ^ Math.imul(copy + 1, 0x85ebca6b)) >>> 0);
    try {
      return await classifier.features({ bytes: await distort(await reader.read(img.path), opts, random) });
    } catch (err) {
      log(`${img.path}: cannot distort (${(err as Error).message}); this copy left out`);
      return undefined;
    }
  };
  async function* all() {
    yield* jobs;
  }
  const x = new Float32Array(jobs.length * b.size);
  const labels: number[] = [];
  let at = 0;
  for await (const v of inOrder(all(), one, classifier.info.inFlight)) {
    const job = jobs[at++];
    if (!v) continue;
    x.set(v, labels.length * b.size);
    labels.push(job.img.label);
  }
  return { x: x.subarray(0, labels.length * b.size), labels };
}

function joined(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

type Report = ReturnType<typeof reportJson>;

function reportJson(
  opts: RetrainOptions,
  base: string,
  features: FeatureGraph,
  labels: string[],
  b: Bottlenecks,
  distorted: number,
  t: Trained,
  onTrain: Evaluation,
  onValidation: Evaluation,
  onTest: Evaluation,
) {
  const figures = (e: Evaluation) => ({ accuracy: e.n ? e.accuracy : null, n: e.n });
  return {
    base,
    bottleneck: { node: features.node, size: b.size },
    labels,
    images: { used: b.kept.length, failed: b.failed, training: onTrain.n, validation: onValidation.n, testing: onTest.n, distortedCopies: distorted },
    bottlenecks: { computed: b.computed, cached: b.cached },
    training: {
      method: opts.trainBatchSize === undefined ? 'L-BFGS, full batch' : `Adam, batches of ${opts.trainBatchSize}, learning rate ${opts.learningRate}`,
      steps: t.steps,
      keptStep: t.bestStep,
      ms: Math.round(t.ms),
      l2: L2,
      classBalanced: true,
      seed: opts.seed,
    },
    train: figures(onTrain),
    validation: figures(onValidation),
    test: {
      ...figures(onTest),
      perLabel: onTest.perLabel,
      confusion: onTest.confusion,
      misclassified: onTest.wrong.map((w) => ({ path: b.kept[w.row].path, label: labels[b.kept[w.row].label], predicted: labels[w.predicted] })),
    },
  };
}

function printReport(r: Report, onTest: Evaluation, kept: LabelledImage[], labels: string[], opts: RetrainOptions, log: Log): void {
  const acc = (f: { accuracy: number | null; n: number }) => (f.accuracy === null ? 'n/a (no images)' : `${(100 * f.accuracy).toFixed(1)}% (N=${f.n})`);
  log(`trained ${r.training.method}: ${r.training.steps} steps in ${r.training.ms} ms, weights of step ${r.training.keptStep} kept (best validation loss)`);
  log(`train accuracy ${acc(r.train)}, validation accuracy ${acc(r.validation)}`);
  log(`final test accuracy ${acc(r.test)}`);
  if (onTest.n > 0) for (const line of formatEvaluation(onTest)) log(line);
  if (opts.printMisclassifiedTestImages) {
    for (const w of onTest.wrong) log(`misclassified: ${kept[w.row].path} is ${labels[kept[w.row].label]}, predicted ${labels[w.predicted]}`);
  }
}
