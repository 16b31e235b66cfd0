// A model loaded once, with its labels: images in, predictions out. Shared by the command-line
// filter and the HTTP server. The parts, in the order an image meets them:
//   ImageSlots   shared memory an image is prepared into (backpressure when all are taken)
//   DecodePool   worker threads that read, decode, resize and pack into a slot
//   MicroBatcher gathers prepared slots into batches
//   BatchRunner  one batch through the engine thread, scores back per image
//   rank         scores to the top-k labels
import { availableParallelism } from 'node:os';
import { startEngine, type WorkerEngine } from './backends/engine-thread.js';
import { type BatchStats, MicroBatcher } from './batcher.js';
import { BatchRunner } from './batch-runner.js';
import { ModelError } from './errors.js';
import { DEFAULT_MAX_FILE_SIZE, type FilePath, warmUpJpeg } from './image/decode.js';
import { DecodePool } from './image/decode-pool.js';
import type { PrepareSpec } from './image/prepare.js';
import { ImageSlots } from './image/slots.js';
import { cropProblem, type Preprocessing, type PreprocessingKey } from './image/preprocessing.js';
import { slotView } from './image/slots.js';
import { type BackendChoice, choosePreprocessing, engineSpec, readLabels, resolveModel } from './model.js';
import { type Prediction, probabilities, rank, rankProbabilities, type SoftmaxWhen } from './ranking.js';

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
  /** image files larger than this are refused unread; unset: DEFAULT_MAX_FILE_SIZE */
  maxFileSize?: number;
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
}

export class Classifier {
  /** images being prepared: the batcher waits for them rather than send a batch short */
  private inbound = 0;
  private warm = false;

  private constructor(
    readonly info: ClassifierInfo,
    private readonly engine: WorkerEngine,
    private readonly labels: string[],
    private readonly slots: ImageSlots,
    private readonly decoder: DecodePool,
    private readonly batcher: MicroBatcher<number, Float32Array>,
    private readonly softmax: SoftmaxWhen,
  ) {}

  static async load(opts: ClassifierOptions): Promise<Classifier> {
    const model = resolveModel(opts.graph, opts.labels, opts.backend);
    const labels = readLabels(model.labelsFile);
    const engine = await startEngine(
      engineSpec(model, { threads: opts.threads, device: opts.device, inputNode: opts.inputNode, outputNode: opts.outputNode }),
    );
    let decoder: DecodePool | undefined;
    try {
      const sig = engine.signature;
      if (labels.length !== sig.outputSize) {
        throw new ModelError(model.labelsFile, `has ${labels.length} labels but the model outputs ${sig.outputSize} scores`);
      }
      const flags = { mean: opts.mean, std: opts.std, resize: opts.resize, crop: opts.crop, icc: opts.icc, exifRotate: opts.exifRotate };
      const { preprocessing, sources } = choosePreprocessing(model, engine.normalisation, flags);
      const problem = cropProblem(preprocessing.crop, sig.height, sig.width);
      if (problem) throw new ModelError(model.file, `${problem} (crop from ${sources.crop})`);
      const wanted = opts.batchSize > 0 ? opts.batchSize : engine.accelerated ? DEFAULT_BATCH.accelerator : DEFAULT_BATCH.cpu;
      const batchSize = Math.min(wanted, sig.maxBatch);
      const decodeJobs = opts.decodeJobs > 0 ? opts.decodeJobs : availableParallelism();
      const spec: PrepareSpec = {
        height: sig.height,
        width: sig.width,
        layout: sig.layout,
        inputType: sig.inputType,
        preprocessing,
        maxPixels: opts.maxPixels,
        maxFileSize: opts.maxFileSize ?? DEFAULT_MAX_FILE_SIZE,
      };
      const imageSize = sig.height * sig.width * 3;
      const slotBytes = imageSize * (sig.inputType === 'float32' ? 4 : 1);
      const inFlight = slotCount(batchSize, decodeJobs, opts.decodeQueue ?? DECODE_QUEUE.bulk, slotBytes);
      const slots = new ImageSlots(inFlight, imageSize, sig.inputType);
      await engine.attachSlots({ buffer: slots.buffer, type: slots.type, imageSize: slots.imageSize });
      decoder = new DecodePool(spec, slots, decodeJobs);
      const runner = new BatchRunner(engine, slots, sig.outputSize);
      let classifier: Classifier | undefined;
      const batcher = new MicroBatcher((batch: number[]) => runner.run(batch), {
        maxSize: batchSize,
        maxDelayMs: opts.maxDelayMs,
        inbound: () => classifier!.inbound,
        observe: opts.observe && ((stats) => classifier!.warm && opts.observe!(stats)),
      });
      const info: ClassifierInfo = Object.freeze({
        model: model.file,
        version: opts.version ?? model.version,
        labelsFile: model.labelsFile,
        engine: engine.name,
        engineNotes: Object.freeze([...engine.notes]),
        input: `${sig.inputName} ${sig.inputType} ${sig.layout} ${sig.height}x${sig.width}${sig.maxBatch === 1 ? ' (fixed batch of 1)' : ''}`,
        preprocessing: Object.freeze(preprocessing),
        preprocessingSources: Object.freeze(sources),
        batchSize,
        maxDelayMs: opts.maxDelayMs,
        decodeJobs,
        inFlight,
        classes: sig.outputSize,
      });
      classifier = new Classifier(info, engine, labels, slots, decoder, batcher, opts.softmax);
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
    const slot = await this.slots.acquire();
    await this.decoder.bytes(blank, slot, true);
    await this.batcher.submit(slot);
    this.warm = true;
  }

  /** Classifies a file on disk, saying which model version answered. Throws InputError for an
   * unreadable or undecodable image. */
  async classifyPath(path: FilePath, topK: number, threshold = 0): Promise<{ predictions: Prediction[]; version?: string }> {
    const predictions = await this.classifyPrepared((slot) => this.decoder.file(path, slot), topK, threshold);
    return { predictions, version: this.info.version };
  }

  /** Classifies image bytes (an upload). Slots go round the groups in turn (the server passes the
   * request), so one request's many images do not hold back another's one. */
  async classifyBytes(bytes: Uint8Array, topK: number, threshold = 0, group?: unknown): Promise<Prediction[]> {
    return this.classifyPrepared((slot) => this.decoder.bytes(bytes, slot), topK, threshold, group);
  }

  /** The whole score vector for image bytes, in label order, after softmax where it applies:
   * what --cache keeps, so that any --top-k and --threshold can be answered from it. */
  async scoreBytes(bytes: Uint8Array, group?: unknown): Promise<Float32Array> {
    const scores = await this.scorePrepared((slot) => this.decoder.bytes(bytes, slot), group);
    return Float32Array.from(probabilities(scores, this.softmax));
  }

  /** Ranks a vector from scoreBytes, exactly as a fresh answer is ranked. */
  rankScores(probs: Float32Array, topK: number, threshold = 0): Prediction[] {
    return rankProbabilities(probs, this.labels, topK, threshold);
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

  /** images waiting for a batch */
  get queued(): number {
    return this.batcher.waiting;
  }

  /** Lets what is in flight finish (images in preparation, then the batches they join), then
   * stops the decode threads and the engine. */
  async close(): Promise<void> {
    await this.decoder.close();
    await this.batcher.idle();
    await this.engine.dispose();
  }

  private async classifyPrepared(prepare: (slot: number) => Promise<void>, topK: number, threshold: number, group?: unknown): Promise<Prediction[]> {
    return rank(await this.scorePrepared(prepare, group), this.labels, this.softmax, topK, threshold);
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
