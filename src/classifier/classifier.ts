// A model loaded once, with its labels: images in, predictions out. Shared by the command-line
// filter and the HTTP server. The parts, in the order an image meets them:
//   ImageSlots   shared memory an image is prepared into (backpressure when all are taken)
//   DecodePool   worker threads that read, decode, resize and pack into a slot, then hand the
//                slot straight to the engine thread
//   the engine thread  gathers prepared slots into batches, runs them, sends the scores here
//   rank         scores to the top-k labels
import { availableParallelism } from 'node:os';
import { type Answer, type BatchStats, startEngine, type WorkerEngine } from '../backends/engine-thread.js';
import { EngineError, InternalError, ModelError } from '../errors.js';
import { warmUpJpeg } from '../image/decode.js';
import type { FilePath } from '../image/read.js';
import { CLOSE_WAIT_MS, DecodePool, doneError } from '../image/decode-pool.js';
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

// ---- what a model is loaded with (the settings' groups this room takes) ----

/** Which model, and which of its nodes. */
export interface ModelSettings {
  readonly graph: string;
  /** the version folder's number, when the caller picked one from a folder of versions */
  readonly version?: string;
  readonly labels?: string;
  readonly inputNode?: string;
  readonly outputNode?: string;
}
/** What runs the model, and how its output becomes probabilities. */
export interface EngineSettings {
  readonly backend: BackendChoice;
  readonly device: string;
  /** intra-op threads; 0: the engine's choice */
  readonly threads: number;
  readonly softmax: SoftmaxWhen;
}
/** The preprocessing flags given; each one left out comes from the model (choosePreprocessing). */
export type PreprocessingSettings = Readonly<Partial<Pick<Preprocessing, 'mean' | 'std' | 'resize' | 'crop' | 'icc' | 'exifRotate'>>>;
/** How images flow to the engine. 0 means chosen at load (planPipeline). */
export interface PipelineSettings {
  readonly batchSize: number;
  readonly maxDelayMs: number;
  /** decode threads */
  readonly decodeJobs: number;
  /** images queued ahead for each decode thread; unset: DECODE_QUEUE.bulk */
  readonly decodeQueue?: number;
}
/** What an image may be: refused beyond these, unread where the size says so. */
export interface LimitSettings {
  readonly maxPixels: number;
  readonly maxFileSize: number;
}
/** What Classifier.load takes. */
export interface LoadSettings {
  readonly model: ModelSettings;
  readonly engine: EngineSettings;
  readonly preprocessing: PreprocessingSettings;
  readonly pipeline: PipelineSettings;
  readonly limits: LimitSettings;
}

/** What a model is loaded for besides classifying. */
export interface LoadHooks {
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

/** What the pipeline is made of: images per batch, decode threads, image slots. */
export interface PipelinePlan {
  batchSize: number;
  decodeJobs: number;
  inFlight: number;
}

/** The pipeline for a loaded engine, every "0: choose" decided here: the batch size for the
 * device (never above what the model takes), one decode thread per core, and the image slots. */
export function planPipeline(
  asked: Pick<PipelineSettings, 'batchSize' | 'decodeJobs' | 'decodeQueue'>,
  engine: { accelerated: boolean; maxBatch: number; slotBytes: number },
  cores = availableParallelism(),
): PipelinePlan {
  const wanted = asked.batchSize > 0 ? asked.batchSize : engine.accelerated ? DEFAULT_BATCH.accelerator : DEFAULT_BATCH.cpu;
  const batchSize = Math.min(wanted, engine.maxBatch);
  const decodeJobs = asked.decodeJobs > 0 ? asked.decodeJobs : cores;
  return { batchSize, decodeJobs, inFlight: slotCount(batchSize, decodeJobs, asked.decodeQueue ?? DECODE_QUEUE.bulk, engine.slotBytes) };
}

/** The preprocessing that applies (flags, then what the model states), refused with the reason
 * where it cannot work: a crop smaller than the input, a normalisation that overflows float32. */
function checkedPreprocessing(model: ResolvedModel, engine: WorkerEngine, flags: PreprocessingSettings): ChosenPreprocessing {
  const sig = engine.signature;
  const chosen = choosePreprocessing(model, engine.normalisation, flags);
  const { preprocessing, sources } = chosen;
  const problem = cropProblem(preprocessing.crop, sig.height, sig.width);
  if (problem) throw new ModelError(model.file, `${problem} (crop from ${sources.crop})`);
  const overflow = sig.inputType === 'float32' ? normalisationProblem(preprocessing) : undefined;
  if (overflow) throw new ModelError(model.file, `${overflow} (mean from ${sources.mean}; std from ${sources.std})`);
  return chosen;
}

/** What a loaded classifier is, for --verbose, info, the fingerprint and the batcher. */
function describe(model: ResolvedModel, engine: WorkerEngine, chosen: ChosenPreprocessing, plan: PipelinePlan, s: LoadSettings): ClassifierInfo {
  const sig = engine.signature;
  return Object.freeze({
    model: model.file,
    version: s.model.version ?? model.version,
    labelsFile: model.labelsFile ?? '',
    engine: engine.name,
    engineNotes: Object.freeze([...engine.notes]),
    input: `${sig.inputName} ${sig.inputType} ${sig.layout} ${sig.height}x${sig.width}${sig.maxBatch === 1 ? ' (fixed batch of 1)' : ''}`,
    preprocessing: Object.freeze(chosen.preprocessing),
    preprocessingSources: Object.freeze(chosen.sources),
    batchSize: plan.batchSize,
    maxDelayMs: s.pipeline.maxDelayMs,
    decodeJobs: plan.decodeJobs,
    inFlight: plan.inFlight,
    classes: sig.outputSize,
    nodes: Object.freeze({ input: sig.chosen?.input ?? null, output: sig.chosen?.output ?? null }),
    softmax: s.engine.softmax,
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
  /** when raw scores become probabilities (--softmax) */
  readonly softmax: SoftmaxWhen;
}

/** An image to classify: a file on disk, or bytes (an upload). */
export type ImageSource = { path: FilePath } | { bytes: Uint8Array };

/** What scores images for an answer: a loaded model, or the cache in front of one. */
export interface Scorer {
  readonly info: ClassifierInfo;
  readonly labels: readonly string[];
  score(image: ImageSource, group?: unknown): Promise<Float32Array>;
}

/** An image on its way through the decode and engine threads, answered from the engine thread. */
interface InFlight {
  resolve: (scores: Float32Array) => void;
  reject: (err: Error) => void;
  slot: number;
}

export class Classifier implements Scorer {
  /** images sent on to a batch, by decode job id */
  private readonly inFlight = new Map<number, InFlight>();
  /** images a dead decode thread had, until the engine thread says which of them reached it */
  private readonly lostWith = new Map<number, { ids: number[]; err: Error }>();
  /** set by close(), or when the engine thread dies: nothing new is taken */
  private closed: Error | undefined;
  private drained: (() => void) | undefined;
  private warm = false;

  private constructor(
    readonly info: ClassifierInfo,
    private readonly engine: WorkerEngine,
    readonly labels: readonly string[],
    private readonly slots: ImageSlots,
    private readonly decoder: DecodePool,
    /** images sent to a decode thread and not yet at the engine thread, shared with it */
    private readonly inbound: Int32Array,
    private readonly observe: LoadHooks['observe'],
  ) {
  }

  /** Resolve the model, start its engine, plan the pipeline, build it, warm it up. */
  static async load(s: LoadSettings, hooks: LoadHooks = {}): Promise<Classifier> {
    const { model: m, engine: e, limits } = s;
    const features = hooks.features;
    const model = features ? resolveModel(m.graph, m.labels, e.backend, false) : resolveModel(m.graph, m.labels, e.backend);
    const labels = model.labelsFile && !features ? readLabels(model.labelsFile) : [];
    const engine = await startEngine({ ...engineSpec(model, { threads: e.threads, device: e.device, inputNode: m.inputNode, outputNode: m.outputNode }), graph: features });
    let decoder: DecodePool | undefined;
    try {
      const sig = engine.signature;
      if (model.labelsFile && !features && labels.length !== sig.outputSize) {
        throw new ModelError(model.labelsFile, `has ${labels.length} labels but the model outputs ${sig.outputSize} scores`);
      }
      const chosen = checkedPreprocessing(model, engine, s.preprocessing);
      const imageSize = sig.height * sig.width * 3;
      const plan = planPipeline(s.pipeline, { accelerated: engine.accelerated, maxBatch: sig.maxBatch, slotBytes: imageSize * (sig.inputType === 'float32' ? 4 : 1) });
      const slots = new ImageSlots(plan.inFlight, imageSize, sig.inputType);
      const inbound = new Int32Array(new SharedArrayBuffer(4));
      let classifier: Classifier | undefined;
      const setup = { buffer: slots.buffer, type: slots.type, imageSize: slots.imageSize, inbound, maxSize: plan.batchSize, maxDelayMs: s.pipeline.maxDelayMs };
      await engine.attach(setup, (answer) => classifier?.answer(answer));
      const spec: PrepareSpec = { height: sig.height, width: sig.width, layout: sig.layout, inputType: sig.inputType, preprocessing: chosen.preprocessing, ...limits };
      decoder = new DecodePool(spec, slots, plan.decodeJobs, {
        connect: (port, thread) => engine.connect(port, thread),
        lost: (thread, ids, err) => classifier?.lost(thread, ids, err),
      });
      classifier = new Classifier(describe(model, engine, chosen, plan, s), engine, labels, slots, decoder, inbound, hooks.observe);
      await classifier.warmUp();
      return classifier;
    } catch (err) {
      await decoder?.close();
      await engine.dispose();
      throw err;
    }
  }

  /** An image through the whole path at load, so that the first real one does not pay for first
   * times: each decode thread's first decodes, lazily compiled code, the engine's first run. At
   * least twice the model's size, so that JPEG shrink-on-load and the downscaling kernels run too,
   * and at least a small photo's, so that each decode thread's JPEG buffer holds one. */
  private async warmUp(): Promise<void> {
    const [width, height] = [Math.max(this.decoder.spec.width * 2, 512), Math.max(this.decoder.spec.height * 2, 384)];
    const blank = await warmUpJpeg(width, height);
    await this.decoder.warmUp([blank]);
    const scores = await this.sendOn({ bytes: blank }, undefined, true);
    const bad = nonFinite(scores);
    if (bad !== undefined) throw new ModelError(this.info.model, `test inference gives ${bad} scores: the model cannot answer`);
    this.warm = true;
  }

  /** The model's probabilities for an image, in label order (softmax applied where the model
   * gives raw scores): what --cache keeps and an Answer ranks. Throws InputError for an
   * unreadable or undecodable image. Slots go round the groups in turn (the server passes the
   * request), so one request's many images do not hold back another's one. */
  async score(image: ImageSource, group?: unknown): Promise<Float32Array> {
    const scores = await this.sendOn(image, group);
    // NaN would rank as nothing above the threshold: an empty answer that looks like success.
    return probabilities(scores, this.info.softmax) ?? notAnswer(scores);
  }

  /** The model's raw output for an image, its own copy: with `features`, the bottleneck. */
  async features(image: ImageSource): Promise<Float32Array> {
    const out = await this.sendOn(image);
    return nonFinite(out) === undefined ? out.slice() : notAnswer(out);
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
    this.closed ??= new Error('classifier closed');
    if (this.inFlight.size > 0) {
      const drained = new Promise<void>((resolve) => (this.drained = resolve));
      await Promise.race([drained, new Promise((resolve) => setTimeout(resolve, CLOSE_WAIT_MS).unref())]);
    }
    for (const id of [...this.inFlight.keys()]) this.settle(id, this.closed);
    await this.decoder.close();
    await this.engine.dispose();
  }

  /** Takes a slot and sends the image on: a decode thread prepares it into the slot and hands it
   * to the engine thread, whose batch's scores come back here. */
  private async sendOn(image: ImageSource, group?: unknown, ownImage = false): Promise<Float32Array> {
    const slot = await this.slots.acquire(group);
    return new Promise<Float32Array>((resolve, reject) => {
      if (this.closed) {
        this.slots.release(slot);
        return reject(this.closed);
      }
      // On its way: the engine thread waits for it rather than send a batch short.
      Atomics.add(this.inbound, 0, 1);
      this.inFlight.set(this.decoder.sendOn(image, slot, ownImage), { resolve, reject, slot });
      if (this.inFlight.size === 1) this.engine.busy(true);
    });
  }

  /** What the engine thread sends: a batch's scores (or why it failed), an image that could not
   * be prepared, which of a dead decode thread's images reached it; or that it died. */
  private answer(answer: Answer | { died: Error }): void {
    if ('images' in answer) {
      if (this.warm) this.observe?.({ size: answer.images.length, waits: answer.waits, runMs: answer.runMs, failed: 'error' in answer });
      if ('error' in answer) {
        const err = answer.bug ? new InternalError(`in the engine thread: ${answer.error}`, answer.stack) : new EngineError(answer.error, answer.stack);
        for (const id of answer.images) this.settle(id, err);
      } else {
        const n = this.info.classes;
        answer.images.forEach((id, i) => this.settle(id, answer.output.subarray(i * n, (i + 1) * n)));
      }
    } else if ('failed' in answer) this.settle(answer.failed.id, doneError(answer.failed)!);
    else if ('gone' in answer) {
      // Those of its images that never reached the engine thread will not: they fail here.
      const { ids, err } = this.lostWith.get(answer.gone)!;
      this.lostWith.delete(answer.gone);
      const held = new Set(answer.held);
      const lost = ids.filter((id) => !held.has(id) && this.inFlight.has(id));
      for (const id of lost) this.settle(id, err);
      Atomics.sub(this.inbound, 0, lost.length);
      this.engine.poke();
    } else {
      this.closed ??= answer.died;
      for (const id of [...this.inFlight.keys()]) this.settle(id, answer.died);
    }
  }

  /** Decode thread `thread` died with these images sent to it: the engine thread says which of
   * them it holds once all that thread sent has arrived. */
  private lost(thread: number, ids: number[], err: Error): void {
    this.lostWith.set(thread, { ids, err });
    this.engine.lost(thread, ids);
  }

  /** An image's answer: its scores, or why it has none. Its slot is free again. */
  private settle(id: number, outcome: Float32Array | Error): void {
    const image = this.inFlight.get(id);
    if (!image) return;
    this.inFlight.delete(id);
    this.decoder.answered(id);
    this.slots.release(image.slot);
    if (outcome instanceof Error) image.reject(outcome);
    else image.resolve(outcome);
    if (this.inFlight.size === 0) {
      this.engine.busy(false);
      this.drained?.();
    }
  }
}

function notAnswer(scores: Float32Array): never {
  throw new EngineError(`the model gave ${nonFinite(scores) ?? 'NaN'} scores for this image`);
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
