// Chooses and loads a backend for a model. Runs inside the engine thread (thread-entry.ts).
import { readFileSync } from 'node:fs';
import { ModelError } from '../errors.js';
import type { ImpliedNormalisation } from '../image/preprocessing.js';
import type { Engine, EngineOptions } from './engine.js';

import type { TfjsRuntime, TfModelFormat } from './tfjs.js';

export type ModelFormat = 'onnx' | TfModelFormat;

/** What to load: a backend name and the model file it reads. Plain data: it crosses threads. */
export interface EngineSpec {
  /** auto: frozen graphs are translated to ONNX, falling back to TF.js if they cannot be */
  backend: 'auto' | 'onnx' | 'tfjs';
  format: ModelFormat;
  /** which TF.js runtime, for the tfjs backend */
  runtime: TfjsRuntime;
  file: string;
  options: EngineOptions;
  /** runs this ONNX graph, made from `file` (the model cut at its bottleneck, see
   * src/retrain/graph.ts), with the normalisation `file` implies */
  graph?: { onnx: Uint8Array; normalisation?: ImpliedNormalisation };
}

export async function loadEngine(spec: EngineSpec): Promise<Engine> {
  if (spec.graph) {
    const { loadOnnx } = await import('./onnx.js');
    const engine = await loadOnnx(spec.graph.onnx, spec.file, spec.options);
    engine.normalisation = spec.graph.normalisation;
    return engine;
  }
  if (spec.format === 'frozen' && spec.backend !== 'tfjs') return loadFrozenOnOnnx(spec);
  const backend = spec.backend === 'auto' ? (spec.format === 'onnx' ? 'onnx' : 'tfjs') : spec.backend;
  switch (backend) {
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

/** A frozen graph translated to ONNX and run on ONNX Runtime; with --backend auto, a graph that
 * cannot be translated runs on TF.js instead and --verbose says why. */
async function loadFrozenOnOnnx(spec: EngineSpec): Promise<Engine> {
  const { translateFrozenGraph } = await import('../convert/tf2onnx.js');
  const { loadOnnx } = await import('./onnx.js');
  let translated;
  try {
    translated = translateFrozenGraph(spec.file, readFileSync(spec.file), spec.options);
  } catch (err) {
    if (spec.backend === 'onnx') throw err instanceof ModelError ? err : new ModelError(spec.file, `cannot translate to ONNX: ${(err as Error).message}`);
    const { loadTfjs } = await import('./tfjs.js');
    const engine = await loadTfjs(spec.file, 'frozen', spec.runtime, spec.options);
    engine.notes.unshift(`not translated to ONNX (${(err as Error).message}); running on TensorFlow.js`);
    return engine;
  }
  const engine = await loadOnnx(translated.onnx, spec.file, spec.options);
  engine.notes.push(...translated.plan.notes, `translated to ONNX in ${translated.ms.toFixed(0)} ms (${translated.folded} nodes folded into constants or convolutions)`);
  engine.normalisation = translated.plan.normalisation;
  // The translation has only the chosen input and output: whether they are the graph's defaults
  // is the plan's to say.
  engine.signature.chosen = translated.plan.chosen;
  return engine;
}
