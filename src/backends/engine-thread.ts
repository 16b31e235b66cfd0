// The main thread's handle on an engine that lives in its own thread (entry: thread-entry.ts).
import { type MessagePort, Worker } from 'node:worker_threads';
import { EngineError, InternalError, ModelError } from '../errors.js';
import type { ImpliedNormalisation } from '../image/preprocessing.js';
import type { Engine } from './engine.js';
import type { EngineSpec } from './load.js';
import type { Answer, EngineSetup, Reply } from './thread-entry.js';

export type { Answer, BatchStats, EngineSetup } from './thread-entry.js';

type Ready =
  | { ready: true; name: string; signature: Engine['signature']; notes: string[]; normalisation?: ImpliedNormalisation; accelerated: boolean }
  | { ready: false; file: string; message: string };

/** An engine in its own thread: the decode threads hand it prepared images, it batches and runs
 * them and sends the scores here. */
export interface WorkerEngine extends Omit<Engine, 'run'> {
  /** gives the engine thread the shared image slots and how to batch; `answers` gets what it
   * sends back, and a `died` answer if the thread ends */
  attach(setup: EngineSetup, answers: (answer: Answer | { died: Error }) => void): Promise<void>;
  /** a decode thread's channel: what it prepares goes straight to the engine thread */
  connect(decoder: MessagePort, thread: number): void;
  /** decode thread `thread` died with these images sent to it: the engine thread answers `gone`
   * with those it holds, once all the dead thread sent has arrived */
  lost(thread: number, images: number[]): void;
  /** images on their way fell out without arriving: a waiting batch may go now */
  poke(): void;
  /** keeps the process alive while images are in flight (the answers come from this thread) */
  busy(inFlight: boolean): void;
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
  let answers: ((answer: Answer | { died: Error }) => void) | undefined;
  let dead: Error | undefined;
  let inFlight = false;
  // An idle engine thread must not keep the process alive; a busy one must.
  const keepAlive = () => (inFlight || waiting.size > 0 ? worker.ref() : worker.unref());
  const failAll = (err: Error) => {
    dead ??= err;
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
    answers?.({ died: err });
  };
  worker.on('message', (message: Reply | Answer) => {
    if (!('id' in message)) return answers?.(message);
    const w = waiting.get(message.id);
    waiting.delete(message.id);
    keepAlive();
    w?.resolve(message);
  });
  // An exception nothing in the thread caught is a bug there; an exit mid-run is the engine's end.
  worker.on('error', (err) => failAll(new InternalError(`in the engine thread: ${err.message}`, err.stack)));
  worker.on('exit', (code) => failAll(new EngineError(`engine thread exited (${code})`)));
  worker.unref();

  const call = (msg: object) =>
    new Promise<Reply>((resolve, reject) => {
      if (dead) return reject(dead);
      const id = nextId++;
      waiting.set(id, { resolve, reject });
      keepAlive();
      worker.postMessage({ id, ...msg });
    });

  const engine: WorkerEngine = {
    name: ready.name,
    signature: ready.signature,
    notes: ready.notes,
    normalisation: ready.normalisation,
    accelerated: ready.accelerated,
    async attach(setup, handler) {
      answers = handler;
      await call({ attach: setup });
    },
    connect(decoder, thread) {
      worker.postMessage({ decoder, thread }, [decoder]);
    },
    lost(thread, images) {
      worker.postMessage({ lost: images, thread });
    },
    poke() {
      worker.postMessage({ poke: true });
    },
    busy(yes) {
      inFlight = yes;
      keepAlive();
    },
    async dispose() {
      if (!dead) await call({ dispose: true }).catch(() => undefined);
      await worker.terminate();
    },
  };
  return engine;
}
