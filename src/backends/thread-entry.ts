// Entry of the engine thread: inference blocks whatever thread runs it, so it runs here. The decode
// threads hand each prepared image straight to this thread, which gathers them into batches: the
// main thread sends paths out and takes scores back, woken once a batch rather than once an image.
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import type { Done } from '../image/decode-pool.js';
import { slotView, type SlotType } from '../image/slots.js';
import { ModelError } from '../errors.js';
import { MicroBatcher } from './batcher.js';
import { type EngineSpec, loadEngine } from './load.js';

/** Requests the main thread waits on, answered by `id`. */
type Control = { id: number; attach: EngineSetup } | { id: number; dispose: true };
export type Request = Control | { decoder: MessagePort; thread: number } | { lost: number[]; thread: number } | { poke: true };
/** Image slots the decode threads fill; a batch is gathered from them here, off the main thread. */
export interface SharedSlots {
  buffer: SharedArrayBuffer;
  type: SlotType;
  imageSize: number;
}
/** The slots, and how to batch: `inbound` counts the images sent to decode threads and not yet
 * arrived here (the main thread adds them), so that a batch waits for them rather than go short. */
export interface EngineSetup extends SharedSlots {
  inbound: Int32Array;
  maxSize: number;
  maxDelayMs: number;
}
export type Reply = { id: number; disposed: true } | { id: number; attached: true };
/** What one batch reports, for metrics. */
export interface BatchStats {
  size: number;
  /** how long each image waited for its batch, in ms */
  waits: number[];
  runMs: number;
  failed: boolean;
}
/** What this thread sends unasked: a batch's scores (or why its run failed) with its images' ids
 * in order, an image its decode thread could not prepare, and which of a dead decode thread's
 * images are here (`gone`, once its channel has closed: the others never will be). */
export type Answer =
  | { images: number[]; output: Float32Array; waits: number[]; runMs: number }
  | { images: number[]; error: string; stack?: string; bug: boolean; waits: number[]; runMs: number }
  | { failed: Done }
  | { gone: number; held: number[] };

/** A prepared image: its decode job's id and its slot. */
interface Arrival {
  id: number;
  slot: number;
}

const port = parentPort!;
/** An array that owns its whole buffer, so that transferring it moves nothing else. */
const whole = (a: Float32Array) => (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength ? a : a.slice());
const message = (err: unknown) => (err instanceof Error ? err.message : String(err));
try {
  const engine = await loadEngine(workerData as EngineSpec);
  const { name, signature, notes, normalisation, accelerated } = engine;
  port.postMessage({ ready: true, name, signature, notes, normalisation, accelerated });
  let setup: EngineSetup | undefined;
  let batcher: MicroBatcher<Arrival, void> | undefined;
  let disposed = false;
  let gathered: Float32Array | Uint8Array | undefined;
  /** Copies the batch's slots, in order, into one input buffer kept for the next batch. */
  const gather = (slots: number[]): Float32Array | Uint8Array => {
    const { buffer, type, imageSize } = setup!;
    const need = slots.length * imageSize;
    if (!gathered || gathered.length < need) gathered = type === 'float32' ? new Float32Array(need) : new Uint8Array(need);
    slots.forEach((slot, i) => gathered!.set(slotView(buffer, type, imageSize, slot), i * imageSize));
    return gathered;
  };
  /** Images here: waiting for a batch or in the one running. */
  const held = new Set<number>();
  const run = async (batch: Arrival[], waits: number[]): Promise<void[]> => {
    const start = performance.now();
    const images = batch.map((a) => a.id);
    // What fails gathering the batch is ours (a bug); what fails in the runtime is the engine's.
    let bug = true;
    try {
      const input = gather(batch.map((a) => a.slot));
      bug = false;
      if (disposed) throw new Error('engine disposed');
      const output = whole(await engine.run(input, batch.length));
      port.postMessage({ images, output, waits, runMs: performance.now() - start } satisfies Answer, [output.buffer as ArrayBuffer]);
    } catch (err) {
      const stack = err instanceof Error ? err.stack : undefined;
      port.postMessage({ images, error: message(err), stack, bug, waits, runMs: performance.now() - start } satisfies Answer);
    }
    for (const id of images) held.delete(id);
    return [];
  };

  // A dead decode thread's images: said once both its channel has closed (all it sent is here)
  // and the main thread has said which it sent there.
  const closed = new Set<number>();
  const lost = new Map<number, number[]>();
  const sayGone = (thread: number) => {
    const images = lost.get(thread);
    if (!images || !closed.has(thread)) return;
    lost.delete(thread);
    closed.delete(thread);
    port.postMessage({ gone: thread, held: images.filter((id) => held.has(id)) } satisfies Answer);
  };
  const fromDecoder = (thread: number, decoder: MessagePort) => {
    decoder.on('message', (done: Done[]) => {
      for (const d of done) {
        Atomics.sub(setup!.inbound, 0, 1);
        if (d.slot === undefined) port.postMessage({ failed: d } satisfies Answer);
        else {
          held.add(d.id);
          void batcher!.submit({ id: d.id, slot: d.slot });
        }
      }
      batcher!.poke(); // a batch may have been waiting for an image that failed
    });
    decoder.on('close', () => {
      closed.add(thread);
      sayGone(thread);
    });
  };

  // Setting up and disposing, one at a time, in order. A dispose waits for the batches: releasing
  // the session under a run still waiting to start in the runtime is a native abort in
  // onnxruntime-node.
  let queue = Promise.resolve();
  port.on('message', (req: Request) => {
    if ('decoder' in req) fromDecoder(req.thread, req.decoder);
    else if ('lost' in req) {
      lost.set(req.thread, req.lost);
      sayGone(req.thread);
    } else if ('poke' in req) batcher?.poke();
    else queue = queue.then(() => handle(req));
  });
  const handle = async (req: Control): Promise<void> => {
    if ('dispose' in req) {
      await batcher?.idle();
      if (!disposed) await engine.dispose();
      disposed = true;
      port.postMessage({ id: req.id, disposed: true } satisfies Reply);
      return;
    }
    setup = req.attach;
    const inbound = setup.inbound;
    batcher = new MicroBatcher(run, { maxSize: setup.maxSize, maxDelayMs: setup.maxDelayMs, inbound: () => Atomics.load(inbound, 0) });
    port.postMessage({ id: req.id, attached: true } satisfies Reply);
  };
} catch (err) {
  const file = err instanceof ModelError ? err.file : (workerData as EngineSpec).file;
  port.postMessage({ ready: false, file, message: message(err) });
}
