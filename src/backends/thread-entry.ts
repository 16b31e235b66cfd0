// Entry of the engine thread: inference blocks whatever thread runs it, so it runs here and the
// main thread stays free for reading input, decoding callbacks and writing output.
import { parentPort, workerData } from 'node:worker_threads';
import { slotView, type SlotType } from '../image/slots.js';
import { ModelError } from '../errors.js';
import { type EngineSpec, loadEngine } from './load.js';

export type Request =
  | { id: number; slots: number[] }
  | { id: number; attach: SharedSlots }
  | { id: number; dispose: true };
/** Image slots the decode threads fill; a batch is gathered from them here, off the main thread. */
export interface SharedSlots {
  buffer: SharedArrayBuffer;
  type: SlotType;
  imageSize: number;
}
export type Reply =
  | { id: number; output: Float32Array }
  | { id: number; error: string; stack?: string; bug: boolean }
  | { id: number; disposed: true }
  | { id: number; attached: true };

const port = parentPort!;
/** An array that owns its whole buffer, so that transferring it moves nothing else. */
const whole = (a: Float32Array) => (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength ? a : a.slice());
try {
  const engine = await loadEngine(workerData as EngineSpec);
  const { name, signature, notes, normalisation, accelerated } = engine;
  port.postMessage({ ready: true, name, signature, notes, normalisation, accelerated });
  let shared: SharedSlots | undefined;
  let gathered: Float32Array | Uint8Array | undefined;
  /** Copies the batch's slots, in order, into one input buffer kept for the next batch. */
  const gather = (slots: number[]): Float32Array | Uint8Array => {
    const { buffer, type, imageSize } = shared!;
    const need = slots.length * imageSize;
    if (!gathered || gathered.length < need) gathered = type === 'float32' ? new Float32Array(need) : new Uint8Array(need);
    slots.forEach((slot, i) => gathered!.set(slotView(buffer, type, imageSize, slot), i * imageSize));
    return gathered;
  };
  // One request at a time, in order: a dispose that overtook a run still waiting to start in the
  // runtime would release the session under it (a native abort in onnxruntime-node).
  let queue = Promise.resolve();
  let disposed = false;
  port.on('message', (req: Request) => {
    queue = queue.then(() => handle(req));
  });
  const handle = async (req: Request): Promise<void> => {
    if ('dispose' in req) {
      if (!disposed) await engine.dispose();
      disposed = true;
      port.postMessage({ id: req.id, disposed: true } satisfies Reply);
      return;
    }
    if (disposed) {
      port.postMessage({ id: req.id, error: 'engine disposed', bug: false } satisfies Reply);
      return;
    }
    if ('attach' in req) {
      shared = req.attach;
      port.postMessage({ id: req.id, attached: true } satisfies Reply);
      return;
    }
    // What fails gathering the batch is ours (a bug); what fails in the runtime is the engine's.
    let bug = true;
    try {
      const input = gather(req.slots);
      bug = false;
      const copy = whole(await engine.run(input, req.slots.length));
      port.postMessage({ id: req.id, output: copy } satisfies Reply, [copy.buffer as ArrayBuffer]);
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      port.postMessage({ id: req.id, error: e.message, stack: e.stack, bug } satisfies Reply);
    }
  };
} catch (err) {
  const file = err instanceof ModelError ? err.file : (workerData as EngineSpec).file;
  port.postMessage({ ready: false, file, message: err instanceof Error ? err.message : String(err) });
}
