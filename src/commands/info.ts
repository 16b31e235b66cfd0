// `classify info`: what a model takes and gives, and how it would be run, without classifying.
import { startEngine } from '../backends/engine-thread.js';
import { describeSteps, formatCrop, type PreprocessingKey, RESIZE_MATCHES } from '../image/preprocessing.js';
import { readLabels } from '../model/labels.js';
import { type BackendChoice, engineSpec, resolveModel } from '../model/locate.js';
import { choosePreprocessing, describeSources } from '../model/preprocessing.js';

export interface ModelInfo {
  file: string;
  format: string;
  engine: string;
  engineNotes: string[];
  input: { name: string; type: string; layout: string; height: number; width: number; maxBatch: number | 'any' };
  output: { name: string; size: number };
  labels: { file: string; count: number; first: string[] } | { file: string | null; problem: string };
  preprocessing: {
    resize: string;
    /** none, the shorter side (256) or HEIGHTxWIDTH */
    crop: string;
    icc: string;
    exifRotate: boolean;
    mean: number[];
    std: number[];
    /** what the resize mode reproduces */
    matches: string;
    description: string;
    sources: Record<PreprocessingKey, string>;
  };
}

export async function info(graph: string, opts: { labels?: string; backend: BackendChoice; inputNode?: string; outputNode?: string; threads: number; device: string }): Promise<ModelInfo> {
  const model = resolveModel(graph, opts.labels, opts.backend, false);
  const engine = await startEngine(
    engineSpec(model, { threads: opts.threads, device: opts.device, inputNode: opts.inputNode, outputNode: opts.outputNode }),
  );
  try {
    const sig = engine.signature;
    let labels: ModelInfo['labels'];
    if (!model.labelsFile) labels = { file: null, problem: 'no labels file found beside the model' };
    else {
      const list = readLabels(model.labelsFile);
      labels = { file: model.labelsFile, count: list.length, first: list.slice(0, 5) };
      if (list.length !== sig.outputSize) labels = { file: model.labelsFile, problem: `${list.length} labels for ${sig.outputSize} outputs` };
    }
    const { preprocessing: p, sources } = choosePreprocessing(model, engine.normalisation);
    return {
      file: model.file,
      format: model.format,
      engine: engine.name,
      engineNotes: engine.notes,
      input: { name: sig.inputName, type: sig.inputType, layout: sig.layout, height: sig.height, width: sig.width, maxBatch: sig.maxBatch === Infinity ? 'any' : sig.maxBatch },
      output: { name: sig.outputName, size: sig.outputSize },
      labels,
      preprocessing: {
        resize: p.resize,
        crop: formatCrop(p.crop),
        icc: p.icc,
        exifRotate: p.exifRotate,
        mean: p.mean,
        std: p.std,
        matches: RESIZE_MATCHES[p.resize],
        description: describeSteps(p),
        sources,
      },
    };
  } finally {
    await engine.dispose();
  }
}

export function formatInfo(i: ModelInfo): string {
  const lines = [
    `model         ${i.file} (${i.format})`,
    `engine        ${i.engine}`,
    ...i.engineNotes.map((n) => `              ${n}`),
    `input         "${i.input.name}" ${i.input.type} ${i.input.layout} ${i.input.height}x${i.input.width}, batch ${i.input.maxBatch}`,
    `output        "${i.output.name}" ${i.output.size} scores`,
    'problem' in i.labels
      ? `labels        ${i.labels.file ?? '-'}: ${i.labels.problem}`
      : `labels        ${i.labels.file} (${i.labels.count}: ${i.labels.first.join(', ')}${i.labels.count > i.labels.first.length ? ', ...' : ''})`,
    `preprocessing ${i.preprocessing.description}`,
    `              ${i.preprocessing.resize}: ${i.preprocessing.matches}`,
    `              (x - [${i.preprocessing.mean.join(', ')}]) / [${i.preprocessing.std.join(', ')}]`,
    `              ${describeSources(i.preprocessing.sources)}`,
  ];
  return lines.join('\n') + '\n';
}
