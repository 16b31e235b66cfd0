// A model loaded once, with its labels: images in, predictions out. Shared by the command-line
// filter and the HTTP server. The parts, in the order an image meets them:
//   ImageSlots   shared memory an image is prepared into (backpressure when all are taken)
//   DecodePool   worker threads that read, decode, resize and pack into a slot
//   MicroBatcher gathers prepared slots into batches
//   BatchRunner  one batch through the engine thread, scores back per image
//   rank         scores to the top-k labels
import { availableParallelism } from 'node:os';
import { startEngine, type WorkerEngine } from '../backends/engine-thread.js';
import { type BatchStats, MicroBatcher } from './batcher.js';
import { BatchRunner } from './batch-runner.js';
import { ModelError } from '../errors.js';
import { warmUpJpeg } from '../image/decode.js';
import type { FilePath } from '../image/read.js';
import { DecodePool } from '../image/decode-pool.js';
import type { PrepareSpec } from '../image/prepare.js';
import { ImageSlots } from '../image/slots.js';
import { cropProblem, type Preprocessing, type PreprocessingKey } from '../image/preprocessing.js';
import { slotView } from '../image/slots.js';
import type { EngineSpec } from '../backends/load.js';
import { readLabels } from '../model/labels.js';
import { type BackendChoice, engineSpec, type ResolvedModel, resolveModel } from '../model/locate.js';
import { type ChosenPreprocessing, choosePreprocessing } from '../model/preprocessing.js';
import { probabilities, type SoftmaxWhen } from './ranking.js';

export type { Prediction } from './ranking.js';

export interface ClassifierOptions {
  graph: string;
  /** the version folder's number, when the caller picked one from a folder of versions */
  version?: string;
  labels?: string;
  backend: BackendChoice;
  /** preprocessing flags; each one left out comes from the model (see choosePreprocessing) */
  mean?: [number, number, number];
  std?: [number, number, number];
  resize?: Preprocessing['resize'];
  crop?: Preprocessing['crop'];
  icc?: Preprocessing['icc'];
  exifRotate?: boolean;
  /** 0: chosen for the device (see DEFAULT_BATCH) */
  batchSize: number;
  maxDelayMs: number;
  maxPixels: number;
  /** image files larger than this are refused unread */
  maxFileSize: number;
  /** engine intra-op threads; 0: the engine's choice */
  threads: number;
  device: string;
  softmax: SoftmaxWhen;
  /** decode threads; 0: one per core */
  decodeJobs: number;
  /** images queued ahead for each decode thread; unset: DECODE_QUEUE.bulk */
  decodeQueue?: number;
  inputNode?: string;
  outputNode?: string;
  /** runs this graph made from the model (cut at its bottleneck) instead: its outputs are
   * features, not scores, and no labels are needed */
  features?: EngineSpec['graph'];
  observe?: (stats: BatchStats) => void;
}

/** Measured end to end on the 2-core CPU once decoding moved to worker threads and ONNX Runtime
 * stopped spinning (paired runs): batch 4 against 2 gave MobileNet 0.25 +4%, the frozen MobileNetV2
 * +8% (batch 8: +5% and +11%, but the native ONNX MobileNetV2 -2% and ~14 MB more memory per image
 * of batch). A trickle is not delayed by it: a batch goes at once when nothing else is on its way.
 * On an H200 through WebGPU, MobileNetV2 ran at 92% of its best (batch 32) at 16, with half the
 * latency; 64 was slower. */
export const DEFAULT_BATCH = { cpu: 4, accelerator: 16 };
/** Image slots queued for each decode thread beyond two batches' worth (see load). `bulk`: a
 * thread that has prepared all it was sent waits a round trip through the engine and the main
 * thread for more; measured on 2 cores (MobileNet 0.25, flower photos), 2 a thread left the cores
 * 14% idle, 8 ran 9% faster, 16 12% faster (5% idle). `serve`: a request's images queued at a
 * thread are decoded before a later request's, so serve keeps the queue short for fairness. */
export const DECODE_QUEUE = { bulk: 16, serve: 2, maxTotal: 128, maxBytes: 64 * 1024 * 1024 };
/** The warm-up image's least size (see warmUp): a small photo's. */
const WARM_UP = { width: 512, height: 384 };

/** What the pipeline is made of: images per batch, decode threads, image slots. */
export interface PipelinePlan {
  batchSize: number;
  decodeJobs: number;
  inFlight: number;
}

/** The pipeline for a loaded engine, every "0: choose" decided here: the batch size for the
 * device (never above what the model takes), one decode thread per core, and the image slots. */
export function planPipeline(
  asked: Pick<ClassifierOptions, 'batchSize' | 'decodeJobs' | 'decodeQueue'>,
  engine: { accelerated: boolean; maxBatch: number; slotBytes: number },
  cores = availableParallelism(),
): PipelinePlan {
  const wanted = asked.batchSize > 0 ? asked.batchSize : engine.accelerated ? DEFAULT_BATCH.accelerator : DEFAULT_BATCH.cpu;
  const batchSize = Math.min(wanted, engine.maxBatch);
  const decodeJobs = decodeThreads(asked, cores);
  return { batchSize, decodeJobs, inFlight: slotCount(batchSize, decodeJobs, asked.decodeQueue ?? DECODE_QUEUE.bulk, engine.slotBytes) };
}

/** Decode threads: as asked, else one per core. */
const decodeThreads = (asked: Pick<ClassifierOptions, 'decodeJobs'>, cores = availableParallelism()) => (asked.decodeJobs > 0 ? asked.decodeJobs : cores);

/** The preprocessing that applies (flags, then what the model states), refused with the reason
 * where it cannot work: a crop smaller than the input, a normalisation that overflows float32. */
function checkedPreprocessing(model: ResolvedModel, engine: WorkerEngine, opts: ClassifierOptions): ChosenPreprocessing {
  const sig = engine.signature;
  // Commander turns a parser's null (--crop none) into '': an explicit default must not
  // change the fingerprint that --resume and --cache compare.
  const crop = opts.crop === undefined ? undefined : opts.crop || null;
  const flags = { mean: opts.mean, std: opts.std, resize: opts.resize, crop, icc: opts.icc, exifRotate: opts.exifRotate };
  const chosen = choosePreprocessing(model, engine.normalisation, flags);
  const { preprocessing, sources } = chosen;
  const problem = cropProblem(preprocessing.crop, sig.height, sig.width);
  if (problem) throw new ModelError(model.file, `${problem} (crop from ${sources.crop})`);
  const overflow = sig.inputType === 'float32' ? normalisationProblem(preprocessing) : undefined;
  if (overflow) throw new ModelError(model.file, `${overflow} (mean from ${sources.mean}; std from ${sources.std})`);
  return chosen;
}

/** What a loaded classifier is, for --verbose, info, the fingerprint and the batcher. */
function describe(model: ResolvedModel, engine: WorkerEngine, chosen: ChosenPreprocessing, plan: PipelinePlan, opts: ClassifierOptions): ClassifierInfo {
  const sig = engine.signature;
  return Object.freeze({
    model: model.file,
    version: opts.version ?? model.version,
    labelsFile: model.labelsFile ?? '',
    engine: engine.name,
    engineNotes: Object.freeze([...engine.notes]),
    input: `${sig.inputName} ${sig.inputType} ${sig.layout} ${sig.height}x${sig.width}${sig.maxBatch === 1 ? ' (fixed batch of 1)' : ''}`,
    preprocessing: Object.freeze(chosen.preprocessing),
    preprocessingSources: Object.freeze(chosen.sources),
    batchSize: plan.batchSize,
    maxDelayMs: opts.maxDelayMs,
    decodeJobs: plan.decodeJobs,
    inFlight: plan.inFlight,
    classes: sig.outputSize,
    nodes: Object.freeze({ input: sig.chosen?.input ?? null, output: sig.chosen?.output ?? null }),
  });
}

/** Image slots: two batches, plus the decode threads' queues, which are capped (a many-core
 * machine, a large input) by count and by bytes but never below two a thread (the warm-up holds
 * one on each at once). */
export function slotCount(batchSize: number, decodeJobs: number, queue: number, slotBytes: number): number {
  const cap = Math.max(2 * decodeJobs, Math.min(DECODE_QUEUE.maxTotal, Math.floor(DECODE_QUEUE.maxBytes / slotBytes)));
  return Math.max(8, 2 * batchSize + Math.min(queue * decodeJobs, cap));
}

export interface ClassifierInfo {
  readonly model: string;
  /** the version folder, when the model came from a folder of versions */
  readonly version?: string;
  readonly labelsFile: string;
  readonly engine: string;
  readonly engineNotes: readonly string[];
  readonly input: string;
  readonly preprocessing: Preprocessing;
  /** where each preprocessing setting came from */
  readonly preprocessingSources: Readonly<Record<PreprocessingKey, string>>;
  readonly batchSize: number;
  readonly maxDelayMs: number;
  /** decode threads */
  readonly decodeJobs: number;
  /** images that can be in preparation or waiting for a batch at once (the image slots) */
  readonly inFlight: number;
  readonly classes: number;
  /** the input and output --input-node and --output-node chose, where not the model's defaults */
  readonly nodes: { readonly input: string | null; readonly output: string | null };
}

/** An image to classify: a file on disk, or bytes (an upload). */
export type ImageSource = { path: FilePath } | { bytes: Uint8Array };

/** What scores images for an answer: a loaded model, or the cache in front of one. */
export interface Scorer {
  readonly info: ClassifierInfo;
  readonly labels: readonly string[];
  score(image: ImageSource, group?: unknown): Promise<Float32Array>;
}

export class Classifier implements Scorer {
  /** images being prepared: the batcher waits for them rather than send a batch short */
  private inbound = 0;
  private warm = false;

  private readonly batcher: MicroBatcher<number, Float32Array>;
  private readonly softmax: SoftmaxWhen;

  private constructor(
    readonly info: ClassifierInfo,
    private readonly engine: WorkerEngine,
    readonly labels: readonly string[],
    private readonly slots: ImageSlots,
    private readonly decoder: DecodePool,
    opts: Pick<ClassifierOptions, 'softmax' | 'observe'>,
  ) {
    this.softmax = opts.softmax;
    const runner = new BatchRunner(engine, slots, info.classes);
    const observe = opts.observe;
    this.batcher = new MicroBatcher((batch: number[]) => runner.run(batch), {
      maxSize: info.batchSize,
      maxDelayMs: info.maxDelayMs,
      inbound: () => this.inbound,
      observe: observe && ((stats) => this.warm && observe(stats)),
    });
  }

  /** Resolve the model, start its engine, plan the pipeline, build it, warm it up. */
  static async load(opts: ClassifierOptions): Promise<Classifier> {
    const model = opts.features ? resolveModel(opts.graph, opts.labels, opts.backend, false) : resolveModel(opts.graph, opts.labels, opts.backend);
    const labels = model.labelsFile && !opts.features ? readLabels(model.labelsFile) : [];
    // The decode threads start while the engine loads: each loads sharp and the JPEG addon first
    // (on 2 cores, 0.1-0.2 s that was spent after the engine had loaded); the warm-up's image is
    // made meanwhile too, where the model's size leaves it at its least (40 ms in libvips).
    const decoder = new DecodePool(undefined, undefined, decodeThreads(opts));
    const smallest = warmUpJpeg(WARM_UP.width, WARM_UP.height);
    smallest.catch(() => undefined); // a load that fails first never waits for it
    let engine: WorkerEngine | undefined;
    try {
      engine = await startEngine({ ...engineSpec(model, { threads: opts.threads, device: opts.device, inputNode: opts.inputNode, outputNode: opts.outputNode }), graph: opts.features });
      const sig = engine.signature;
      if (model.labelsFile && !opts.features && labels.length !== sig.outputSize) {
        throw new ModelError(model.labelsFile, `has ${labels.length} labels but the model outputs ${sig.outputSize} scores`);
      }
      const chosen = checkedPreprocessing(model, engine, opts);
      const imageSize = sig.height * sig.width * 3;
      const plan = planPipeline(opts, { accelerated: engine.accelerated, maxBatch: sig.maxBatch, slotBytes: imageSize * (sig.inputType === 'float32' ? 4 : 1) });
      const slots = new ImageSlots(plan.inFlight, imageSize, sig.inputType);
      await engine.attachSlots({ buffer: slots.buffer, type: slots.type, imageSize: slots.imageSize });
      const spec: PrepareSpec = { height: sig.height, width: sig.width, layout: sig.layout, inputType: sig.inputType, preprocessing: chosen.preprocessing, maxPixels: opts.maxPixels, maxFileSize: opts.maxFileSize };
      decoder.configure(spec, slots);
      const classifier = new Classifier(describe(model, engine, chosen, plan, opts), engine, labels, slots, decoder, opts);
      await classifier.warmUp(smallest);
      return classifier;
    } catch (err) {
      await decoder.close();
      await engine?.dispose();
      throw err;
    }
  }

  /** An image through the whole path at load, so that the first real one does not pay for first
   * times: each decode thread's first decodes, lazily compiled code, the engine's first run. At
   * least twice the model's size, so that JPEG shrink-on-load and the downscaling kernels run too,
   * and at least a small photo's, so that each decode thread's JPEG buffer holds one. */
  private async warmUp(smallest: Promise<Buffer>): Promise<void> {
    const [width, height] = [Math.max(this.decoder.spec.width * 2, WARM_UP.width), Math.max(this.decoder.spec.height * 2, WARM_UP.height)];
    const small = await smallest;
    const blank = width === WARM_UP.width && height === WARM_UP.height ? small : await warmUpJpeg(width, height);
    await this.decoder.warmUp([blank]);
    const slot = await this.slots.acquire();
    await this.decoder.bytes(blank, slot, true);
    const scores = await this.batcher.submit(slot);
    const bad = nonFinite(scores);
    if (bad !== undefined) throw new ModelError(this.info.model, `test inference gives ${bad} scores: the model cannot answer`);
    this.warm = true;
  }

  /** The model's probabilities for an image, in label order (softmax applied where the model
   * gives raw scores): what --cache keeps and an Answer ranks. Throws InputError for an
   * unreadable or undecodable image. Slots go round the groups in turn (the server passes the
   * request), so one request's many images do not hold back another's one. */
  async score(image: ImageSource, group?: unknown): Promise<Float32Array> {
    const scores = await this.scorePrepared(this.preparing(image), group);
    // NaN would rank as nothing above the threshold: an empty answer that looks like success.
    return probabilities(scores, this.softmax) ?? notAnswer(scores);
  }

  /** The model's raw output for an image, its own copy: with `features`, the bottleneck. */
  async features(image: ImageSource): Promise<Float32Array> {
    const out = await this.scorePrepared(this.preparing(image));
    return nonFinite(out) === undefined ? out.slice() : notAnswer(out);
  }

  private preparing(image: ImageSource): (slot: number) => Promise<void> {
    return 'path' in image ? (slot) => this.decoder.file(image.path, slot) : (slot) => this.decoder.bytes(image.bytes, slot);
  }

  /** The model's input for one file, exactly as a batch would carry it (one image, packed and
   * normalised): what the preprocessing does, observable, e.g. for parity with a framework. */
  async preprocessFile(path: string): Promise<Float32Array | Uint8Array> {
    const slot = await this.slots.acquire();
    try {
      await this.decoder.file(path, slot);
      return slotView(this.slots.buffer, this.slots.type, this.slots.imageSize, slot).slice();
    } finally {
      this.slots.release(slot);
    }
  }

  /** Lets what is in flight finish (images in preparation, then the batches they join), then
   * stops the decode threads and the engine. */
  async close(): Promise<void> {
    await this.decoder.close();
    await this.batcher.idle();
    await this.engine.dispose();
  }

  /** Prepares an image into a slot (counted as inbound for the batcher meanwhile), then batches it. */
  private async scorePrepared(prepare: (slot: number) => Promise<void>, group?: unknown): Promise<Float32Array> {
    this.inbound++;
    let slot: number | undefined;
    try {
      slot = await this.slots.acquire(group);
      await prepare(slot);
    } catch (err) {
      if (slot !== undefined) this.slots.release(slot);
      this.inbound--;
      this.batcher.poke(); // a batch may have been waiting for this image
      throw err;
    }
    this.inbound--;
    // The runner frees the slot once its batch has run, whatever happens.
    return this.batcher.submit(slot);
  }
}

function notAnswer(scores: Float32Array): never {
  throw new Error(`the model gave ${nonFinite(scores) ?? 'NaN'} scores for this image`);
}

/** 'NaN' or 'infinite' when a score is not a finite number. */
function nonFinite(scores: Float32Array): string | undefined {
  for (const s of scores) if (!Number.isFinite(s)) return Number.isNaN(s) ? 'NaN' : 'infinite';
  return undefined;
}

/** Why a normalisation cannot give the model finite float32 input, or undefined. */
export function normalisationProblem({ mean, std }: { mean: readonly number[]; std: readonly number[] }): string | undefined {
  for (let c = 0; c < 3; c++) {
    for (const x of [0, 255]) {
      if (!Number.isFinite(Math.fround((x - mean[c]) / std[c]))) {
        return `mean ${mean.join(',')} and std ${std.join(',')} make pixel value ${x} infinite as float32 input`;
      }
    }
  }
  return undefined;
}
