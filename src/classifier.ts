// A model loaded once, with its labels, decoder and micro-batcher: images in, predictions out.
// Shared by the command-line filter and the HTTP server.
import { availableParallelism } from 'node:os';
import { ModelError } from './backends/engine.js';
import { startEngine, type WorkerEngine } from './backends/remote.js';
import { type BatchStats, MicroBatcher } from './batcher.js';
import { blankJpeg, decodeToRgb, ImageReader } from './image/decode.js';
import { cropProblem, type ImageSteps, type Preprocessing, type PreprocessingKey } from './image/preprocessing.js';
import { type Pixels, TensorPacker } from './image/tensor.js';
import { type BackendChoice, choosePreprocessing, engineSpec, readLabels, resolveModel } from './model.js';
import { Semaphore } from './semaphore.js';

export interface ClassifierOptions {
  graph: string;
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
  /** 0: unbounded */
  maxQueue?: number;
  maxPixels: number;
  /** engine intra-op threads; 0: the engine's choice */
  threads: number;
  device: string;
  softmax: 'auto' | 'on' | 'off';
  /** images decoded at once; 0: from the core count */
  decodeJobs: number;
  inputNode?: string;
  outputNode?: string;
  observe?: (stats: BatchStats) => void;
}

/** Measured with npm run bench on a 2-core CPU: batches above 2 made ONNX Runtime slower per
 * image (MobileNetV2 224: batch 8 took 12% longer than batch 2 end to end). On an H200 through
 * WebGPU, MobileNetV2 ran at 92% of its best (batch 32) at 16, with half the latency; 64 was slower. */
export const DEFAULT_BATCH = { cpu: 2, accelerator: 16 };

export interface Prediction {
  label: string;
  score: number;
}

export interface ClassifierInfo {
  model: string;
  /** the version folder, when the model came from a folder of versions */
  version?: string;
  labelsFile: string;
  engine: string;
  engineNotes: string[];
  input: string;
  preprocessing: Preprocessing;
  /** where each preprocessing setting came from */
  preprocessingSources: Record<PreprocessingKey, string>;
  batchSize: number;
  maxDelayMs: number;
  decodeJobs: number;
  classes: number;
}

export class Classifier {
  private constructor(
    readonly info: ClassifierInfo,
    private readonly engine: WorkerEngine,
    private readonly labels: string[],
    private readonly packer: TensorPacker,
    private readonly batcher: MicroBatcher<Pixels, Float32Array>,
    private readonly inbound: { count: number },
    private readonly decodeSlots: Semaphore,
    private readonly maxPixels: number,
    private readonly softmax: ClassifierOptions['softmax'],
    private readonly steps: ImageSteps,
    private readonly files = new ImageReader(),
  ) {}

  static async load(opts: ClassifierOptions): Promise<Classifier> {
    const model = resolveModel(opts.graph, opts.labels, opts.backend);
    const labels = readLabels(model.labelsFile);
    const engine = await startEngine(
      engineSpec(model, { threads: opts.threads, device: opts.device, inputNode: opts.inputNode, outputNode: opts.outputNode }),
    );
    const sig = engine.signature;
    if (labels.length !== sig.outputSize) {
      await engine.dispose();
      throw new ModelError(model.labelsFile, `has ${labels.length} labels but the model outputs ${sig.outputSize} scores`);
    }
    const flags = { mean: opts.mean, std: opts.std, resize: opts.resize, crop: opts.crop, icc: opts.icc, exifRotate: opts.exifRotate };
    const { preprocessing, sources } = choosePreprocessing(model, engine.normalisation, flags);
    const problem = cropProblem(preprocessing.crop, sig.height, sig.width);
    if (problem) {
      await engine.dispose();
      throw new ModelError(model.file, `${problem} (crop from ${sources.crop})`);
    }
    const packer = new TensorPacker(sig.height, sig.width, sig.layout, preprocessing);
    const wanted = opts.batchSize > 0 ? opts.batchSize : engine.accelerated ? DEFAULT_BATCH.accelerator : DEFAULT_BATCH.cpu;
    const batchSize = Math.min(wanted, sig.maxBatch);
    const decodeJobs = opts.decodeJobs > 0 ? opts.decodeJobs : Math.max(2, availableParallelism() * 2);

    // Batch buffers go to the engine thread and come back; keep them for the next batch.
    const pool: (Float32Array | Uint8Array)[] = [];
    engine.onBufferReturned = (buf) => {
      if (pool.length < 2) pool.push(buf);
    };
    const perImage = packer.imageSize;
    const take = (): Float32Array | Uint8Array => {
      const buf = pool.pop();
      if (buf && buf.length >= batchSize * perImage) return buf;
      return sig.inputType === 'uint8' ? new Uint8Array(batchSize * perImage) : new Float32Array(batchSize * perImage);
    };
    const runBatch = async (images: Pixels[]): Promise<Float32Array[]> => {
      const input = take();
      images.forEach((rgb, slot) =>
        input instanceof Float32Array ? packer.writeFloat(rgb, input, slot) : packer.writeUint8(rgb, input, slot),
      );
      const scores = await engine.run(input, images.length);
      const n = sig.outputSize;
      return images.map((_, i) => scores.subarray(i * n, (i + 1) * n));
    };
    const inbound = { count: 0 };
    let warm = false;
    const batcher = new MicroBatcher(runBatch, {
      maxSize: batchSize,
      maxDelayMs: opts.maxDelayMs,
      maxQueue: opts.maxQueue,
      inbound: () => inbound.count,
      observe: opts.observe && ((stats) => warm && opts.observe!(stats)),
    });
    const info: ClassifierInfo = {
      model: model.file,
      version: model.version,
      labelsFile: model.labelsFile,
      engine: engine.name,
      engineNotes: engine.notes,
      input: `${sig.inputName} ${sig.inputType} ${sig.layout} ${sig.height}x${sig.width}${sig.maxBatch === 1 ? ' (fixed batch of 1)' : ''}`,
      preprocessing,
      preprocessingSources: sources,
      batchSize,
      maxDelayMs: opts.maxDelayMs,
      decodeJobs,
      classes: sig.outputSize,
    };
    const classifier = new Classifier(info, engine, labels, packer, batcher, inbound, new Semaphore(decodeJobs), opts.maxPixels, opts.softmax, preprocessing);
    await classifier.warmUp();
    warm = true;
    return classifier;
  }

  /** A blank image through the whole path at load, so the first real one does not pay for
   * first times: libvips' start-up, lazily compiled and unoptimised JavaScript, a fresh batch
   * buffer (MobileNetV2 on the 2-core machine: first answers of 28 to 35 ms, the next about 15). */
  private async warmUp(): Promise<void> {
    // Twice the model's size, so that JPEG shrink-on-load and the downscaling kernels run, and one
    // per libuv thread at once: each thread's first decode costs ~2 ms more (4 vs 6.5 ms at 128 px).
    const [width, height] = [this.packer.width * 2, this.packer.height * 2];
    const blank = await blankJpeg(width, height);
    const threads = Math.min(this.info.decodeJobs, Number(process.env.UV_THREADPOOL_SIZE) || 4);
    // Our own image: not held to --max-pixels, which may be set below its size.
    const [rgb] = await Promise.all(Array.from({ length: threads }, () => this.decode(blank, width * height)));
    this.rank(await this.batcher.submit(rgb), 1, 0);
    // V8 optimises the packing loop only from its third run; the transfer above came first, which
    // matters because V8 drops typed-array code compiled before a process's first transfer.
    this.packer.warmUp(rgb);
  }

  /** Classifies a file on disk. Throws InputError for an unreadable or undecodable image. */
  async classifyFile(path: string, topK: number, threshold = 0): Promise<Prediction[]> {
    const rgb = await this.prepare(async () => this.decode(await this.files.read(path)));
    return this.rank(await this.batcher.submit(rgb), topK, threshold);
  }

  /** Classifies a file on disk, saying which model version answered. */
  async classifyPath(path: string, topK: number, threshold = 0): Promise<{ predictions: Prediction[]; version?: string }> {
    return { predictions: await this.classifyFile(path, topK, threshold), version: this.info.version };
  }

  /** Classifies image bytes (an upload). */
  async classifyBytes(bytes: Buffer, topK: number, threshold = 0): Promise<Prediction[]> {
    const rgb = await this.prepare(() => this.decode(bytes));
    return this.rank(await this.batcher.submit(rgb), topK, threshold);
  }

  /** The model's input for one file, exactly as a batch would carry it (one image, packed and
   * normalised): what the preprocessing does, observable, e.g. for parity with a framework. */
  async preprocessFile(path: string): Promise<Float32Array | Uint8Array> {
    const rgb = await this.decode(await this.files.read(path));
    const out = this.engine.signature.inputType === 'uint8' ? new Uint8Array(this.packer.imageSize) : new Float32Array(this.packer.imageSize);
    if (out instanceof Float32Array) this.packer.writeFloat(rgb, out, 0);
    else this.packer.writeUint8(rgb, out, 0);
    return out;
  }

  /** Decodes in a decode slot, counted as inbound for the batcher until it is submitted. */
  private async prepare(decode: () => Promise<Pixels>): Promise<Pixels> {
    this.inbound.count++;
    try {
      const rgb = await this.decodeSlots.run(decode);
      this.inbound.count--;
      return rgb; // submitted next, which re-checks the queue
    } catch (err) {
      this.inbound.count--;
      this.batcher.poke(); // a batch may have been waiting for this image
      throw err;
    }
  }

  /** images waiting for a batch */
  get queued(): number {
    return this.batcher.waiting;
  }

  close(): Promise<void> {
    return this.engine.dispose();
  }

  private decode(bytes: Buffer, maxPixels = this.maxPixels): Promise<Pixels> {
    return decodeToRgb(bytes, { width: this.packer.width, height: this.packer.height, maxPixels, steps: this.steps });
  }

  private rank(scores: Float32Array, topK: number, threshold: number): Prediction[] {
    const probs = this.softmax === 'on' || (this.softmax === 'auto' && !looksLikeProbabilities(scores)) ? softmax(scores) : scores;
    return topIndices(probs, topK)
      .filter((i) => probs[i] >= threshold)
      .map((i) => ({ label: this.labels[i], score: probs[i] }));
  }
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
