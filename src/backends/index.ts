// Chooses and loads a backend for a model. Runs inside the engine worker.
import { type Engine, type EngineOptions, ModelError } from './engine.js';

import type { TfjsRuntime, TfModelFormat } from './tfjs.js';

export type ModelFormat = 'onnx' | TfModelFormat;

/** What to load: a backend name and the model file it reads. Plain data: it crosses threads. */
export interface EngineSpec {
  backend: 'onnx' | 'tfjs';
  format: ModelFormat;
  /** which TF.js runtime, for the tfjs backend */
  runtime: TfjsRuntime;
  file: string;
  options: EngineOptions;
}

export async function loadEngine(spec: EngineSpec): Promise<Engine> {
  switch (spec.backend) {
    case 'onnx': {
      if (spec.format !== 'onnx') throw new ModelError(spec.file, `the onnx backend runs .onnx models, not ${spec.format} models`);
      const { loadOnnx } = await import('./onnx.js');
      return loadOnnx(spec.file, spec.file, spec.options);
    }
    case 'tfjs': {
      if (spec.format === 'onnx') throw new ModelError(spec.file, 'TensorFlow.js does not run ONNX models; use --backend onnx');
      const { loadTfjs } = await import('./tfjs.js');
      return loadTfjs(spec.file, spec.format, spec.runtime, spec.options);
    }
    default:
      throw new ModelError(spec.file, `unknown backend "${String(spec.backend)}"`);
  }
}
