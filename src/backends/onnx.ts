// ONNX Runtime backend. Runs inside the engine thread (see thread-entry.ts): session.run() blocks
// the thread it is called on for the whole inference.
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import type { InferenceSession as OrtSession, Tensor as OrtTensor } from 'onnxruntime-node';
import { invalidValue, ModelError } from '../errors.js';
import type { Layout } from '../image/layout.js';
import { resolveName } from '../tensorflow/graphdef.js';
import type { Engine, EngineOptions, ModelSignature } from './engine.js';

type Ort = typeof import('onnxruntime-node');

function ortVersion(): string {
  try {
    return createRequire(import.meta.url)('onnxruntime-node/package.json').version as string;
  } catch {
    return '?';
  }
}

/** The CUDA provider ships as a separate library that onnxruntime-node's install step downloads
 * (skipped by this project's .npmrc); without it, asking for CUDA only logs an error. */
function cudaInstalled(): boolean {
  try {
    const req = createRequire(import.meta.url);
    const dir = dirname(req.resolve('onnxruntime-node/package.json'));
    return existsSync(join(dir, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so'));
  } catch {
    return false;
  }
}

const LIBRARY_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib'];
const VULKAN_DRIVER_DIRS = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d'];

/** The WebGPU provider is built into onnxruntime-node on Linux and drives the GPU through
 * Vulkan. Without a Vulkan loader and a driver manifest it cannot find a GPU, and Dawn prints
 * warnings of its own on the way, so `auto` only tries it where both are present. */
export function vulkanPresent(
  env: NodeJS.ProcessEnv = process.env,
  libraryDirs = LIBRARY_DIRS,
  driverDirs = VULKAN_DRIVER_DIRS,
): boolean {
  if (process.platform !== 'linux') return false;
  const libDirs = [...(env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), ...libraryDirs];
  if (!libDirs.some((d) => existsSync(join(d, 'libvulkan.so.1')))) return false;
  const named = [env.VK_DRIVER_FILES, env.VK_ICD_FILENAMES].filter(Boolean).join(':').split(':').filter(Boolean);
  if (named.some((f) => existsSync(f))) return true;
  return driverDirs.some((d) => {
    try {
      // lavapipe (lvp) is Mesa's CPU renderer: slower than ONNX Runtime's own CPU kernels.
      return readdirSync(d).some((f) => f.endsWith('.json') && !f.startsWith('lvp_'));
    } catch {
      return false;
    }
  });
}

/** Accelerators `--device auto` tries, in order, before the CPU. */
export function autoProviders(): string[] {
  const found: string[] = [];
  if (cudaInstalled()) found.push('cuda');
  if (vulkanPresent()) found.push('webgpu');
  return found;
}

async function createSession(ort: Ort, model: string | Uint8Array, opts: EngineOptions, notes: string[]) {
  // 3: errors only; ONNX Runtime's warnings are about graph details a user cannot act on.
  const base: OrtSession.SessionOptions = { graphOptimizationLevel: 'all', logSeverityLevel: 3 };
  if (opts.threads > 0) base.intraOpNumThreads = opts.threads;
  // ONNX Runtime's threads spin between runs by default, burning the cores the decode threads
  // need: on the 2-core machine, spinning cost 40% of end-to-end throughput (MobileNet 0.25,
  // flower photos: 460 vs 750-800 images/s) and 45% more process CPU.
  base.extra = { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } };
  let providers = opts.device === 'auto' ? autoProviders() : opts.device === 'cpu' ? [] : [opts.device];
  if (opts.device === 'auto' && providers.length === 0) {
    notes.push('no GPU provider usable (CUDA provider not installed, no Vulkan driver for WebGPU; see README, GPU); using cpu');
  }
  const open = (s: OrtSession.SessionOptions) =>
    typeof model === 'string' ? ort.InferenceSession.create(model, s) : ort.InferenceSession.create(model, s);
  if (opts.device === 'webgpu' && !vulkanPresent()) {
    throw new Error('the WebGPU provider drives the GPU through Vulkan, and no Vulkan loader (libvulkan.so.1) with a GPU driver is installed');
  }
  if (opts.device === 'cuda' && !cudaInstalled()) {
    throw new Error("the CUDA execution provider is not installed (onnxruntime-node's CUDA download was skipped at install; README, GPU, says how to turn it on)");
  }
  for (const provider of providers) {
    try {
      return { session: await open({ ...base, executionProviders: [provider, 'cpu'] }), device: provider };
    } catch (err) {
      // Asking for a provider whose libraries are absent throws rather than falling back.
      if (opts.device !== 'auto') throw err;
      notes.push(`${provider} execution provider unavailable (${firstLine(err)})`);
    }
  }
  if (providers.length > 0) notes.push('using cpu');
  // Memory patterns pre-plan one block per input shape, which costs every new batch size two
  // slow runs instead of one (MobileNetV2, batch 2: 41 and 23 ms before settling at 11); the
  // arena alone reuses its memory across sizes at the same steady speed.
  return { session: await open({ ...base, enableMemPattern: false, executionProviders: ['cpu'] }), device: 'cpu' };
}

/** About what a decode thread spends on a small photo (decode, resize, pack: 0.8-0.9 ms on the
 * 2-core machine). With the engine's default threads, a model whose inference costs less than
 * this on all but one core is run on one intra-op thread: the decode threads, one a core, are
 * then what bounds throughput, one engine thread keeps up with them, and a second intra-op thread
 * only adds hand-offs (MobileNet 0.25 on 2 cores: its second thread took 0.12-0.14 ms of CPU an
 * image, 0.07-0.1 ms more than one thread in all, measured per thread). */
const PHOTO_DECODE_MS = 1;

/** The fastest of three runs, in ms. */
async function fastestRun(run: () => Promise<unknown>): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const start = performance.now();
    await run();
    best = Math.min(best, performance.now() - start);
  }
  return best;
}

function firstLine(err: unknown): string {
  return String(err instanceof Error ? err.message : err).split('\n')[0];
}

function signatureOf(session: OrtSession, file: string, opts: EngineOptions): Omit<ModelSignature, 'outputSize'> {
  const inputs = session.inputMetadata;
  const inputName = opts.inputNode && resolveName(opts.inputNode, (n) => session.inputNames.includes(n));
  const input = opts.inputNode ? inputs.find((m) => m.name === inputName) : inputs[0];
  if (!input) throw new ModelError(file, `no input named "${opts.inputNode}"; inputs: ${session.inputNames.join(', ')}`);
  if (inputs.length > 1 && !opts.inputNode) {
    throw new ModelError(file, `model has ${inputs.length} inputs (${session.inputNames.join(', ')}); choose one with --input-node`);
  }
  const outputName = opts.outputNode ? resolveName(opts.outputNode, (n) => session.outputNames.includes(n)) : session.outputNames[0];
  if (outputName === undefined) {
    throw new ModelError(file, `no output named "${opts.outputNode}"; outputs: ${session.outputNames.join(', ')}`);
  }
  if (!input.isTensor) throw new ModelError(file, `input "${input.name}" is not a tensor`);
  const shape = input.shape;
  if (shape.length !== 4) {
    throw new ModelError(file, `input "${input.name}" has shape [${shape.join(',')}]; expected an image batch of rank 4`);
  }
  let layout: Layout;
  // Hugging Face exports (PyTorch, so NCHW) name every dimension; their preprocessor config
  // gives the image size.
  const symbolic = opts.imageSize && shape.slice(1).every((d) => typeof d !== 'number');
  if (!opts.imageSize && shape.slice(1).every((d) => typeof d !== 'number')) {
    throw new ModelError(file, `input "${input.name}" has no fixed size (shape [${shape.join(',')}]) and the model states none (a Hugging Face export gives it as size or crop_size in preprocessor_config.json)`);
  }
  if (shape[1] === 3 || symbolic) layout = 'NCHW';
  else if (shape[3] === 3) layout = 'NHWC';
  else throw new ModelError(file, `input "${input.name}" has shape [${shape.join(',')}]: neither NCHW nor NHWC with 3 channels`);
  const [h, w] = symbolic ? [opts.imageSize!.height, opts.imageSize!.width] : layout === 'NCHW' ? [shape[2], shape[3]] : [shape[1], shape[2]];
  if (typeof h !== 'number' || typeof w !== 'number' || h <= 0 || w <= 0) {
    throw new ModelError(file, `input "${input.name}" has no fixed image size (shape [${shape.join(',')}])`);
  }
  if (input.type !== 'float32' && input.type !== 'uint8') {
    throw new ModelError(file, `input "${input.name}" is ${input.type}; supported: float32, uint8`);
  }
  return {
    chosen: {
      ...(input.name !== inputs[0].name ? { input: input.name } : {}),
      ...(outputName !== session.outputNames[0] ? { output: outputName } : {}),
    },
    inputName: input.name,
    outputName,
    height: h,
    width: w,
    layout,
    inputType: input.type,
    maxBatch: shape[0] === 1 ? 1 : Infinity,
  };
}

export async function loadOnnx(model: string | Uint8Array, file: string, opts: EngineOptions): Promise<Engine> {
  // Required, not imported: an imported CommonJS package is first read for its exports (13 ms
  // against 20, in every engine thread).
  const ort = createRequire(import.meta.url)('onnxruntime-node') as Ort;
  // Its own log lines (coloured, with source paths) would say again what the error we raise says.
  ort.env.logLevel = 'fatal';
  // Unknown names would otherwise be dropped with a console warning and the CPU used silently.
  const devices = ['auto', ...ort.listSupportedBackends().map((b) => b.name)];
  if (!devices.includes(opts.device)) {
    throw new ModelError(file, invalidValue(`one of ${devices.join(', ')}`, '--device', opts.device));
  }
  const notes: string[] = [];
  let opened;
  try {
    opened = await createSession(ort, model, opts, notes);
  } catch (err) {
    throw new ModelError(file, `ONNX Runtime cannot load it: ${firstLine(err)}`);
  }
  const { session, device } = opened;
  const sig = signatureOf(session, file, opts);
  const dims = (n: number) => (sig.layout === 'NCHW' ? [n, 3, sig.height, sig.width] : [n, sig.height, sig.width, 3]);

  const run = async (input: Float32Array | Uint8Array, batch: number): Promise<Float32Array> => {
    const tensor: OrtTensor =
      input instanceof Float32Array
        ? new ort.Tensor('float32', input.subarray(0, batch * 3 * sig.height * sig.width), dims(batch))
        : new ort.Tensor('uint8', input.subarray(0, batch * 3 * sig.height * sig.width), dims(batch));
    const result = await session.run({ [sig.inputName]: tensor }, [sig.outputName]);
    const out = result[sig.outputName];
    if (out.type !== 'float32') throw new Error(`output "${sig.outputName}" is ${out.type}, expected float32`);
    return out.data as Float32Array;
  };

  // One warm-up run: proves the model executes and tells the output size (often symbolic).
  let outputSize: number;
  const size = 3 * sig.height * sig.width;
  const blank = sig.inputType === 'uint8' ? new Uint8Array(size) : new Float32Array(size);
  try {
    outputSize = (await run(blank, 1)).length;
  } catch (err) {
    throw new ModelError(file, `test inference failed: ${firstLine(err)}`);
  }
  if (device === 'cpu' && opts.threads === 0) {
    const ms = await fastestRun(() => run(blank, 1));
    if ((availableParallelism() - 1) * ms <= PHOTO_DECODE_MS) {
      await session.release();
      const engine = await loadOnnx(model, file, { ...opts, device: 'cpu', threads: 1 });
      engine.notes.unshift(...notes, `one intra-op thread: an inference takes ${ms.toFixed(2)} ms, less than decoding a photo, so the decode threads keep the other cores`);
      return engine;
    }
  }
  return {
    name: `onnxruntime-node ${ortVersion()} (${device})`,
    signature: { ...sig, outputSize },
    accelerated: device !== 'cpu',
    notes,
    run,
    dispose: () => session.release(),
  };
}
