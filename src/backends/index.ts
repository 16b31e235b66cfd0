// Chooses and loads a backend for a model. Runs inside the engine worker.
import { type Engine, type EngineOptions, ModelError } from './engine.js';

/** What to load: a backend name and the model file it reads. Plain data: it crosses threads. */
export interface EngineSpec {
  backend: 'onnx';
  file: string;
  options: EngineOptions;
}

export async function loadEngine(spec: EngineSpec): Promise<Engine> {
  switch (spec.backend) {
    case 'onnx': {
      const { loadOnnx } = await import('./onnx.js');
      return loadOnnx(spec.file, spec.file, spec.options);
    }
    default:
      throw new ModelError(spec.file, `unknown backend "${String(spec.backend)}"`);
  }
}
