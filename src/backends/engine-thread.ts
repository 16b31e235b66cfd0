// The main thread's handle on an engine that lives in its own thread (entry: thread-entry.ts).
import { Worker } from 'node:worker_threads';
import { EngineError, InternalError, ModelError } from '../errors.js';
import type { ImpliedNormalisation } from '../image/preprocessing.js';
import type { Engine } from './engine.js';
import type { EngineSpec } from './load.js';
import type { Reply, SharedSlots } from './thread-entry.js';

type Ready =
  | { ready: true; name: string; signature: Engine['signature']; notes: string[]; normalisation?: ImpliedNormalisation; accelerated: boolean }
  | { ready: false; file: string; message: string };

/** An engine in its own thread: batches are made of shared image slots, gathered there. */
export interface WorkerEngine extends Omit<Engine, 'run'> {
  /** gives the engine thread the shared image slots that runSlots() reads */
  attachSlots(slots: SharedSlots): Promise<void>;
  /** runs one batch made of these slots, in this order */
  runSlots(slots: number[]): Promise<Float32Array>;
}

export async function startEngine(spec: EngineSpec): Promise<WorkerEngine> {
  const worker = new Worker(new URL('./thread-entry.js', import.meta.url), { workerData: spec });
  const onExit = (code: number) => new ModelError(spec.file, `engine thread exited (${code}) while loading`);
  let settle: { error: (e: Error) => void; exit: (code: number) => void } | undefined;
  const ready = await new Promise<Ready>((resolve, reject) => {
    settle = { error: reject, exit: (code) => reject(onExit(code)) };
    worker.once('message', resolve);
    worker.once('error', settle.error);
    worker.once('exit', settle.exit);
  }).finally(() => {
    // Not removeAllListeners(): Worker keeps internal listeners of its own.
    worker.off('error', settle!.error);
    worker.off('exit', settle!.exit);
  });
  if (!ready.ready) {
    await worker.terminate();
    throw new ModelError(ready.file, ready.message);
  }

  let nextId = 0;
  const waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  let dead: Error | undefined;
  const failAll = (err: Error) => {
    dead = err;
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  };
  worker.on('message', (reply: Reply) => {
    const w = waiting.get(reply.id);
    waiting.delete(reply.id);
    if (waiting.size === 0) worker.unref();
    w?.resolve(reply);
  });
  // An exception nothing in the thread caught is a bug there; an exit mid-run is the engine's end.
  worker.on('error', (err) => failAll(new InternalError(`in the engine thread: ${err.message}`, err.stack)));
  worker.on('exit', (code) => failAll(new EngineError(`engine thread exited (${code})`)));
  // An idle engine thread must not keep the process alive; a busy one must (see call()).
  worker.unref();

  const call = (msg: object) =>
    new Promise<Reply>((resolve, reject) => {
      if (dead) return reject(dead);
      const id = nextId++;
      waiting.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ id, ...msg });
    });

  const engine: WorkerEngine = {
    name: ready.name,
    signature: ready.signature,
    notes: ready.notes,
    normalisation: ready.normalisation,
    accelerated: ready.accelerated,
    async attachSlots(slots) {
      await call({ attach: slots });
    },
    async runSlots(slots) {
      const reply = await call({ slots });
      if ('error' in reply) throw reply.bug ? new InternalError(`in the engine thread: ${reply.error}`, reply.stack) : new EngineError(reply.error, reply.stack);
      if ('output' in reply) return reply.output;
      throw new InternalError('unexpected reply from the engine thread');
    },
    async dispose() {
      if (!dead) await call({ dispose: true }).catch(() => undefined);
      await worker.terminate();
    },
  };
  return engine;
}
