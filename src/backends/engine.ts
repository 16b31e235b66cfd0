// The one interface every inference runtime sits behind. Nothing outside src/backends/ imports
// a runtime (onnxruntime-node, TensorFlow.js) directly.
import type { Layout } from '../image/layout.js';
import type { ImpliedNormalisation } from '../image/preprocessing.js';

/** What the rest of the program needs to know about a loaded model's input and output. */
export interface ModelSignature {
  inputName: string;
  outputName: string;
  height: number;
  width: number;
  layout: Layout;
  inputType: 'float32' | 'uint8';
  /** largest batch the model accepts: 1 for a fixed batch dimension, else Infinity */
  maxBatch: number;
  outputSize: number;
  /** the input and output the flags chose where they are not the model's own defaults */
  chosen?: { input?: string; output?: string };
}

export interface EngineOptions {
  /** intra-op threads for the runtime; 0 lets the engine pick */
  threads: number;
  /** 'cpu' or an accelerator the backend knows ('cuda', ...); 'auto' tries accelerators first */
  device: string;
  inputNode?: string;
  outputNode?: string;
  /** the image size the model's preprocessing produces, for an input whose size is symbolic */
  imageSize?: { height: number; width: number };
}

export interface BackendLoad {
  /** the human name of what runs, e.g. "onnxruntime-node 1.30.0 (cpu)" */
  name: string;
  signature: ModelSignature;
  /** runs on a GPU or other accelerator (bigger batches pay off) */
  accelerated: boolean;
  /** informational lines for --verbose (fallbacks taken, providers tried) */
  notes: string[];
  /** preprocessing the model's format implies (TF graphs); flags and classify.json override */
  normalisation?: ImpliedNormalisation;
}

/** A loaded model. run() takes `batch` images packed in the signature's layout. */
export interface Engine extends BackendLoad {
  run(input: Float32Array | Uint8Array, batch: number): Promise<Float32Array>;
  dispose(): Promise<void>;
}
