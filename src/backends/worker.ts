// Entry of the engine thread: inference blocks whatever thread runs it, so it runs here and the
// main thread stays free for reading input, decoding callbacks and writing output.
import { parentPort, workerData } from 'node:worker_threads';
import { ModelError } from './engine.js';
import { type EngineSpec, loadEngine } from './index.js';

export type Request = { id: number; input: Float32Array | Uint8Array; batch: number } | { id: number; dispose: true };
export type Reply =
  | { id: number; output: Float32Array; input: Float32Array | Uint8Array }
  | { id: number; error: string; input?: Float32Array | Uint8Array }
  | { id: number; disposed: true };

const port = parentPort!;
try {
  const engine = await loadEngine(workerData as EngineSpec);
  const { name, signature, notes, normalisation, accelerated } = engine;
  port.postMessage({ ready: true, name, signature, notes, normalisation, accelerated });
  port.on('message', async (req: Request) => {
    if ('dispose' in req) {
      await engine.dispose();
      port.postMessage({ id: req.id, disposed: true } satisfies Reply);
      return;
    }
    try {
      const output = await engine.run(req.input, req.batch);
      // The input buffer goes back too, so the main thread can reuse it for the next batch.
      const copy = output.byteOffset === 0 && output.byteLength === output.buffer.byteLength ? output : output.slice();
      port.postMessage({ id: req.id, output: copy, input: req.input } satisfies Reply, [copy.buffer as ArrayBuffer, req.input.buffer as ArrayBuffer]);
    } catch (err) {
      port.postMessage({ id: req.id, error: err instanceof Error ? err.message : String(err), input: req.input } satisfies Reply, [
        req.input.buffer as ArrayBuffer,
      ]);
    }
  });
} catch (err) {
  const file = err instanceof ModelError ? err.file : (workerData as EngineSpec).file;
  port.postMessage({ ready: false, file, message: err instanceof Error ? err.message : String(err) });
}
