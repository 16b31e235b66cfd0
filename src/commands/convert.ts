// `classify convert`: a frozen TensorFlow graph translated to an ONNX model file.
import { readFileSync, writeFileSync } from 'node:fs';
import { translateFrozenGraph } from '../convert/tf2onnx.js';
import { ModelError } from '../errors.js';
import { toMetadata } from '../image/preprocessing.js';
import type { GraphPlan } from '../tensorflow/plan.js';
import { choosePreprocessing, resolveModel } from '../model.js';
import type { Log } from '../log.js';

/** Writes the ONNX translation of a frozen graph, with its preprocessing in the metadata so that
 * `classify --graph OUT.onnx` preprocesses exactly as the graph did. */
export function convert(graph: string, out: string, opts: { inputNode?: string; outputNode?: string; verbose: boolean }, log: Log): void {
  const model = resolveModel(graph, undefined, 'auto', false);
  if (model.format !== 'frozen') throw new ModelError(model.file, `convert takes a frozen TensorFlow graph (.pb); this is a ${model.format} model`);
  // One translation; its metadata carries the whole preprocessing (resize, colour, orientation,
  // and the normalisation that only the graph's plan knows).
  const metadata = (plan: GraphPlan) => ({ ...toMetadata(choosePreprocessing(model, plan.normalisation).preprocessing), source: model.file });
  const t = translateFrozenGraph(model.file, readFileSync(model.file), { inputNode: opts.inputNode, outputNode: opts.outputNode, metadata });
  try {
    writeFileSync(out, t.onnx);
  } catch (err) {
    throw new ModelError(out, `cannot write: ${(err as Error).message}`);
  }
  if (opts.verbose) {
    log(`wrote ${out}: input "${t.plan.inputName}" NHWC ${t.plan.height}x${t.plan.width}, output "${t.plan.outputName}", ${t.folded} nodes folded, ${t.ms.toFixed(0)} ms`);
    if (model.labelsFile) log(`labels: ${model.labelsFile} (copy it beside ${out} as labels.txt, or pass --labels)`);
  }
}
