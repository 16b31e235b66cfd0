// `classify convert`: a frozen TensorFlow graph translated to an ONNX model file.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { translateFrozenGraph } from '../convert/tf2onnx.js';
import { ModelError } from '../errors.js';
import { toMetadata } from '../image/preprocessing.js';
import type { GraphPlan } from '../tensorflow/plan.js';
import { readLabels } from '../model/labels.js';
import { resolveModel } from '../model/locate.js';
import { choosePreprocessing } from '../model/preprocessing.js';
import type { Log } from '../log.js';

/** Writes the ONNX translation of a frozen graph, with its preprocessing in the metadata so that
 * `classify --graph OUT.onnx` preprocesses exactly as the graph did. */
export function convert(graph: string, out: string, opts: { inputNode?: string; outputNode?: string; verbose: boolean }, log: Log): void {
  const model = resolveModel(graph, undefined, 'auto', false);
  if (model.format !== 'frozen') throw new ModelError(model.file, `convert takes a frozen TensorFlow graph (.pb); this is a ${model.format} model`);
  // The labels go beside the model (where --graph looks for them) and into its metadata, so the
  // converted model is usable on its own.
  const labels = model.labelsFile ? readLabels(model.labelsFile) : undefined;
  const labelsOut = join(dirname(out), 'labels.txt');
  const labelsText = labels ? labels.join('\n') + '\n' : '';
  if (labels && existsSync(labelsOut) && readFileSync(labelsOut, 'utf8') !== labelsText) {
    throw new ModelError(labelsOut, `already holds other labels; convert writes the model's labels there (convert into another folder)`);
  }
  // One translation; its metadata carries the whole preprocessing (resize, colour, orientation,
  // and the normalisation that only the graph's plan knows).
  const metadata = (plan: GraphPlan) => ({
    ...toMetadata(choosePreprocessing(model, plan.normalisation).preprocessing),
    source: model.file,
    ...(labels ? { labels: JSON.stringify(labels) } : {}),
  });
  const t = translateFrozenGraph(model.file, readFileSync(model.file), { inputNode: opts.inputNode, outputNode: opts.outputNode, metadata });
  try {
    writeFileSync(out, t.onnx);
    if (labels) writeFileSync(labelsOut, labelsText);
  } catch (err) {
    throw new ModelError(out, `cannot write: ${(err as Error).message}`);
  }
  if (opts.verbose) {
    log(`wrote ${out}: input "${t.plan.inputName}" NHWC ${t.plan.height}x${t.plan.width}, output "${t.plan.outputName}", ${t.folded} nodes folded, ${t.ms.toFixed(0)} ms`);
    log(labels ? `labels: ${labels.length} from ${model.labelsFile}, written to ${labelsOut} and the model's metadata` : `no labels beside ${model.file}: pass --labels when classifying with ${out}`);
  }
}
