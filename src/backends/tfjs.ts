// TensorFlow.js backend for TensorFlow models: frozen GraphDefs (retrain.py's output_graph.pb),
// TF.js graph models (model.json + shards) and, with the native binding, SavedModels.
// Runtimes, best first: @tensorflow/tfjs-node-gpu, @tensorflow/tfjs-node (both optional, loaded
// only if installed), TF.js WebAssembly, TF.js plain-JS CPU.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { ConstValue, GraphJson, NodeJson } from '../tensorflow/graphdef.js';
import { ModelError } from '../errors.js';
import type { Engine, EngineOptions, ModelSignature } from './engine.js';
import { type GraphPlan, planGraph, readFrozenGraph, unsupportedOps } from '../tensorflow/plan.js';

export type TfjsRuntime = 'auto' | 'node-gpu' | 'node' | 'wasm' | 'cpu';
export type TfModelFormat = 'frozen' | 'tfjs-graph' | 'saved-model';

const require = createRequire(import.meta.url);

// The subset of the TF.js API this backend uses; the same whichever package provides it.
interface Tf {
  tensor(values: Float32Array, shape: number[], dtype: 'float32'): TfTensor;
  setBackend(name: string): Promise<boolean>;
  ready(): Promise<void>;
  getBackend(): string;
  version: Record<string, string>;
  loadGraphModel(handler: unknown): Promise<GraphModel>;
  io: { fromMemory(artifacts: object): unknown };
  node?: { loadSavedModel(dir: string, tags?: string[], signature?: string): Promise<SavedModel> };
}
interface TfTensor {
  shape: number[];
  data(): Promise<Float32Array>;
  dispose(): void;
}
interface GraphModel {
  execute(inputs: Record<string, TfTensor>, outputs: string): TfTensor;
  dispose(): void;
}
interface SavedModel {
  inputs: { name: string; shape?: number[] }[];
  outputs: { name: string; shape?: number[] }[];
  predict(input: TfTensor): TfTensor;
  dispose(): void;
}

const NATIVE_HINT = 'install the native TensorFlow binding: npm install @tensorflow/tfjs-node (CPU) or @tensorflow/tfjs-node-gpu (CUDA)';

function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

// TF.js's packages are CommonJS: required, not imported (an imported one's source is read for its
// exports first: tfjs-core, -converter and -backend-cpu 215 ms against 85, in every engine thread
// that loads a TF.js model).
/** Imports the best available TF.js runtime (or the one asked for) and says which it is. */
async function openRuntime(wanted: TfjsRuntime, file: string, notes: string[]): Promise<{ tf: Tf; name: string; native: boolean }> {
  const order: TfjsRuntime[] = wanted === 'auto' ? ['node-gpu', 'node', 'wasm', 'cpu'] : [wanted];
  for (const runtime of order) {
    if (runtime === 'node-gpu' || runtime === 'node') {
      const pkg = runtime === 'node-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
      if (!installed(pkg)) {
        if (wanted !== 'auto') throw new ModelError(file, `--backend tfjs-${runtime} needs ${pkg}, which is not installed`);
        continue;
      }
      try {
        const tf = require(pkg) as Tf;
        return { tf, name: `${pkg} ${tf.version?.['tfjs-core'] ?? ''} (native TensorFlow)`.trim(), native: true };
      } catch (err) {
        if (wanted !== 'auto') throw new ModelError(file, `${pkg} failed to load: ${(err as Error).message}`);
        notes.push(`${pkg} is installed but failed to load (${(err as Error).message.split('\n')[0]})`);
      }
      continue;
    }
    const core = require('@tensorflow/tfjs-core') as Tf;
    const converter = require('@tensorflow/tfjs-converter') as Pick<Tf, 'loadGraphModel'>;
    require('@tensorflow/tfjs-backend-cpu');
    if (runtime === 'wasm') require('@tensorflow/tfjs-backend-wasm');
    try {
      if (!(await core.setBackend(runtime))) throw new Error(`backend ${runtime} did not initialise`);
      await core.ready();
    } catch (err) {
      if (wanted !== 'auto') throw new ModelError(file, `TF.js ${runtime} backend failed: ${(err as Error).message}`);
      notes.push(`TF.js ${runtime} backend failed (${(err as Error).message}); trying the next`);
      continue;
    }
    const tf: Tf = { ...core, loadGraphModel: converter.loadGraphModel, io: core.io };
    return { tf, name: `TensorFlow.js ${(core as unknown as { version_core: string }).version_core} (${runtime})`, native: false };
  }
  throw new ModelError(file, 'no TensorFlow.js runtime could start');
}

interface Artifacts {
  nodes: NodeJson[];
  weightSpecs: { name: string; shape: number[]; dtype: string }[];
  weightData: ArrayBuffer;
  versions?: GraphJson['versions'];
}

/** Frozen graph -> what tf.io.fromMemory takes: the topology, with Const values moved to weights. */
function frozenArtifacts(file: string, plan: GraphPlan, constOf: (name: string) => ConstValue | undefined, versions: GraphJson['versions']): Artifacts {
  const weightSpecs: Artifacts['weightSpecs'] = [];
  const parts: Uint8Array[] = [];
  const nodes = plan.nodes.map((n) => {
    if (n.op !== 'Const') return n;
    const v = constOf(n.name);
    if (!v) throw new ModelError(file, `constant "${n.name}" has no value`);
    weightSpecs.push({ name: n.name, shape: v.shape, dtype: v.dtype });
    parts.push(new Uint8Array(v.values.buffer, v.values.byteOffset, v.values.byteLength));
    // The executor reads weights by node name; the Const's own copy would only double memory.
    const { value: _dropped, ...attr } = n.attr ?? {};
    return { ...n, attr };
  });
  const total = parts.reduce((s, p) => s + p.byteLength, 0);
  const weightData = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    weightData.set(p, at);
    at += p.byteLength;
  }
  return { nodes, weightSpecs, weightData: weightData.buffer, versions };
}

function readTfjsGraphModel(dir: string, file: string) {
  let manifest: { modelTopology: GraphJson; weightsManifest: { paths: string[]; weights: Artifacts['weightSpecs'] }[] };
  try {
    manifest = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
  } catch (err) {
    throw new ModelError(file, `cannot read model.json: ${(err as Error).message}`);
  }
  if (!manifest.modelTopology?.node) throw new ModelError(file, 'model.json is not a TF.js graph model (no modelTopology.node)');
  const groups = manifest.weightsManifest ?? [];
  const shards = groups.flatMap((g) => g.paths.map((p) => readFileSync(join(dir, p))));
  const weightData = Buffer.concat(shards);
  return {
    topology: manifest.modelTopology,
    weightSpecs: groups.flatMap((g) => g.weights),
    weightData: weightData.buffer.slice(weightData.byteOffset, weightData.byteOffset + weightData.byteLength),
  };
}

export async function loadTfjs(file: string, format: TfModelFormat, runtime: TfjsRuntime, opts: EngineOptions): Promise<Engine> {
  const notes: string[] = [];
  if (format === 'saved-model') {
    if (runtime === 'wasm' || runtime === 'cpu' || !(installed('@tensorflow/tfjs-node') || installed('@tensorflow/tfjs-node-gpu'))) {
      throw new ModelError(file, `a SavedModel needs native TensorFlow; ${NATIVE_HINT}, or convert it to a frozen graph or ONNX`);
    }
    const { tf, name } = await openRuntime(runtime === 'auto' ? 'auto' : runtime, file, notes);
    return loadSavedModel(tf, name, file, opts, notes);
  }

  let plan: GraphPlan;
  let artifacts: Artifacts;
  if (format === 'frozen') {
    const frozen = readFrozenGraph(file, readFileSync(file), opts);
    plan = frozen.plan;
    artifacts = frozenArtifacts(file, plan, frozen.constOf, frozen.versions);
  } else {
    const dir = dirname(file);
    const model = readTfjsGraphModel(dir, file);
    plan = planGraph(file, model.topology.node, { inputNode: opts.inputNode, outputNode: opts.outputNode, constOf: () => undefined });
    artifacts = { nodes: plan.nodes, weightSpecs: model.weightSpecs, weightData: model.weightData, versions: model.topology.versions };
  }
  notes.push(...plan.notes);

  const { tf, name } = await openRuntime(runtime, file, notes);
  let model: GraphModel;
  try {
    model = await tf.loadGraphModel(
      tf.io.fromMemory({
        modelTopology: { node: artifacts.nodes, versions: artifacts.versions ?? {} },
        weightSpecs: artifacts.weightSpecs,
        weightData: artifacts.weightData,
        format: 'graph-model',
      }),
    );
  } catch (err) {
    throw new ModelError(file, `TensorFlow.js cannot load it: ${(err as Error).message}`);
  }

  const run = async (input: Float32Array | Uint8Array, batch: number): Promise<Float32Array> => {
    const size = plan.height * plan.width * 3;
    const x = tf.tensor((input as Float32Array).subarray(0, batch * size), [batch, plan.height, plan.width, 3], 'float32');
    let y: TfTensor | undefined;
    try {
      y = model.execute({ [plan.inputName]: x }, plan.outputName);
      if (y.shape[0] !== batch) throw new Error(`output has batch ${y.shape[0]}, expected ${batch}`);
      return await y.data();
    } finally {
      x.dispose();
      y?.dispose();
    }
  };
  const size = plan.height * plan.width * 3;
  let outputSize: number;
  try {
    outputSize = (await run(new Float32Array(size), 1)).length;
  } catch (err) {
    throw new ModelError(file, cannotRun(err as Error, plan) ?? `test inference failed: ${(err as Error).message}`);
  }
  // Graphs that reshape to a fixed batch of one say so only when run with two.
  let maxBatch = Infinity;
  try {
    if ((await run(new Float32Array(2 * size), 2)).length !== 2 * outputSize) maxBatch = 1;
  } catch {
    maxBatch = 1;
    notes.push('graph only runs one image at a time');
  }
  const signature: ModelSignature = {
    inputName: plan.inputName,
    outputName: plan.outputName,
    height: plan.height,
    width: plan.width,
    layout: 'NHWC',
    inputType: 'float32',
    maxBatch,
    outputSize,
    chosen: plan.chosen,
  };
  return {
    name,
    signature,
    accelerated: name.includes('tfjs-node-gpu'),
    notes,
    normalisation: plan.normalisation,
    run,
    dispose: async () => model.dispose(),
  };
}

/** TF.js's own word on an op it has no kernel for, which its executor gives at the first run
 * ("Unknown op 'X'. File an issue ..."), said as the op and a node of this graph that uses it. */
function cannotRun(err: Error, plan: GraphPlan): string | undefined {
  const op = /Unknown op '([^']+)'/.exec(err.message)?.[1];
  if (op === undefined) return undefined;
  return `TensorFlow.js cannot run these ops: ${unsupportedOps(plan.nodes.filter((n) => n.op === op), new Set()).join(', ') || op}`;
}

async function loadSavedModel(tf: Tf, name: string, file: string, opts: EngineOptions, notes: string[]): Promise<Engine> {
  const dir = dirname(file);
  let model: SavedModel;
  try {
    model = await tf.node!.loadSavedModel(dir, ['serve'], 'serving_default');
  } catch (err) {
    throw new ModelError(file, `TensorFlow cannot load the SavedModel: ${(err as Error).message}`);
  }
  const input = model.inputs[0];
  const shape = input?.shape ?? [];
  if (model.inputs.length !== 1 || shape.length !== 4 || shape[3] !== 3 || !(shape[1] > 0) || !(shape[2] > 0)) {
    throw new ModelError(file, `SavedModel input must be one [batch, height, width, 3] image tensor of fixed size`);
  }
  const [height, width] = [shape[1], shape[2]];
  const run = async (inputData: Float32Array | Uint8Array, batch: number) => {
    const x = tf.tensor((inputData as Float32Array).subarray(0, batch * height * width * 3), [batch, height, width, 3], 'float32');
    const y = model.predict(x);
    try {
      return await y.data();
    } finally {
      x.dispose();
      y.dispose();
    }
  };
  const outputSize = (await run(new Float32Array(height * width * 3), 1)).length;
  return {
    name,
    accelerated: name.includes('tfjs-node-gpu'),
    signature: {
      inputName: input.name,
      outputName: opts.outputNode ?? model.outputs[0].name,
      height,
      width,
      layout: 'NHWC',
      inputType: 'float32',
      maxBatch: Infinity,
      outputSize,
      chosen: opts.outputNode !== undefined && opts.outputNode !== model.outputs[0].name ? { output: opts.outputNode } : {},
    },
    notes,
    run,
    dispose: async () => model.dispose(),
  };
}
