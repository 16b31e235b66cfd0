// Read, decode, resize and pack in worker threads, straight into shared image slots: the main
// thread only moves paths, slot numbers and completions, so it is never what limits throughput.
// Requests made in one turn of the event loop go to a worker in one message, and each worker
// answers a turn's completions in one message: a thread crossing is paid per batch of images. An
// image on its way to a batch is answered to the engine thread, through a channel each worker has
// to it (`Onward`), and never comes back here: the main thread is woken once a batch, not once an
// image.
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import { InternalError } from '../errors.js';
import { type FilePath, InputError, type InputErrorKind } from './read.js';
import type { PrepareSpec } from './prepare.js';
import { ImageSlots } from './slots.js';

// Loaded here first: libvips must stay loaded while workers come and go. Required, not imported:
// Node reads an imported CommonJS package's source for its exports first (sharp: 55 ms against
// 32, at every start).
createRequire(import.meta.url)('sharp');

/** `ownImage`: the warm-up's blank, not held to --max-pixels (which may be set below its size).
 * `onward`: answered to the engine thread (with its slot) rather than here. */
export type Job = { id: number; slot: number; ownImage?: boolean; onward?: boolean } & ({ path: string | Uint8Array } | { bytes: Uint8Array });
/** A finished job: `error` for a bad image, `bug` for anything else thrown; `slot`, an onward image
 * that is ready in it. */
export type Done = { id: number; slot?: number; error?: { kind: InputErrorKind; message: string }; bug?: { message: string; stack?: string } };
export interface WorkerInit {
  spec: PrepareSpec;
  slots: SharedArrayBuffer;
  /** the worker's end of its channel to the engine thread */
  onward?: MessagePort;
  /** jobs the worker has finished, counted by the worker */
  finished: Int32Array;
}

/** Where images on their way to a batch go: each worker's channel to the engine thread. */
export interface Onward {
  /** the engine thread's end of a new worker's channel; `thread` names the worker */
  connect(port: MessagePort, thread: number): void;
  /** worker `thread` died with these onward jobs sent to it and not answered: some may never
   * arrive (the engine thread knows which did) */
  lost(thread: number, ids: number[], err: Error): void;
}

/** A failed job's error as the main thread raises it; undefined for one that succeeded. */
export function doneError(d: Done): Error | undefined {
  if (d.error) return new InputError(d.error.kind, d.error.message);
  if (d.bug) return new InternalError(`in a decode thread: ${d.bug.message}`, d.bug.stack);
  return undefined;
}

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
  worker: DecodeWorker;
}

interface DecodeWorker {
  thread: Worker;
  serial: number;
  /** jobs sent; the worker counts those it has finished */
  sent: number;
  finished: Int32Array;
  /** jobs sent whose answers come here */
  answering: number;
  queued: Job[];
}

/** How long close() lets images in preparation finish. */
export const CLOSE_WAIT_MS = 5000;

export class DecodePool {
  private readonly workers: DecodeWorker[];
  /** jobs answered here (prepare only), by id */
  private readonly pending = new Map<number, Pending>();
  /** onward jobs not yet answered by the engine thread, by id: the worker each went to */
  private readonly onwardJobs = new Map<number, DecodeWorker>();
  private nextId = 0;
  private nextSerial = 0;
  private flushQueued = false;
  /** set by close(): nothing new is taken */
  private closed: Error | undefined;
  private drained: (() => void) | undefined;

  constructor(
    readonly spec: PrepareSpec,
    readonly slots: ImageSlots,
    readonly threads = Math.max(1, availableParallelism()),
    private readonly onward?: Onward,
  ) {
    this.workers = Array.from({ length: threads }, () => this.start());
  }

  private start(): DecodeWorker {
    const finished = new Int32Array(new SharedArrayBuffer(4));
    const channel = this.onward && new MessageChannel();
    const init: WorkerInit = { spec: this.spec, slots: this.slots.buffer, onward: channel?.port1, finished };
    const thread = new Worker(new URL('./decode-worker.js', import.meta.url), { workerData: init, transferList: channel ? [channel.port1] : [] });
    const worker: DecodeWorker = { thread, serial: this.nextSerial++, sent: 0, answering: 0, finished, queued: [] };
    if (channel) this.onward!.connect(channel.port2, worker.serial);
    thread.on('message', (done: Done[]) => this.complete(worker, done));
    thread.on('error', (err) => this.fail(worker, err));
    thread.on('exit', (code) => this.fail(worker, new Error(`decode thread exited (${code})`)));
    thread.unref(); // idle workers must not keep the process alive; one that owes answers here is ref'd
    return worker;
  }

  /** Reads the file and prepares it into `slot`; rejects with InputError for a bad image. */
  file(path: FilePath, slot: number): Promise<void> {
    return this.enqueue(this.leastLoaded(), { id: this.nextId++, slot, path });
  }

  /** Prepares image bytes (an upload) into `slot`; `ownImage` lifts --max-pixels (the warm-up's). */
  bytes(bytes: Uint8Array, slot: number, ownImage = false): Promise<void> {
    return this.enqueue(this.leastLoaded(), { id: this.nextId++, slot, bytes, ownImage });
  }

  /** Prepares an image into `slot` and hands it on to the engine thread, which answers it (a bad
   * image too); returns the job's id. Throws once the pool is closed. */
  sendOn(image: { path: FilePath } | { bytes: Uint8Array }, slot: number, ownImage = false): number {
    if (this.closed) throw this.closed;
    const id = this.nextId++;
    const worker = this.leastLoaded();
    this.onwardJobs.set(id, worker);
    this.queue(worker, 'path' in image ? { id, slot, path: image.path, onward: true } : { id, slot, bytes: image.bytes, ownImage, onward: true });
    return id;
  }

  /** The engine thread has answered onward job `id`. */
  answered(id: number): void {
    this.onwardJobs.delete(id);
  }

  /** Every worker decodes each image twice (a thread's first decodes are slower: the WebAssembly
   * decoder is compiled, then optimised, and its memory grows). */
  async warmUp(images: Uint8Array[]): Promise<void> {
    const slots = await Promise.all(this.workers.map(() => this.slots.acquire()));
    try {
      for (const bytes of images.flatMap((image) => [image, image])) {
        await Promise.all(
          this.workers.map((worker, i) => {
            const job: Job = { id: this.nextId++, slot: slots[i], bytes, ownImage: true };
            return this.enqueue(worker, job);
          }),
        );
      }
    } finally {
      for (const slot of slots) this.slots.release(slot);
    }
  }

  /** Takes nothing new, lets the images in preparation finish (terminating a thread in the middle
   * of a libvips call can bring the process down), then stops the threads. */
  async close(): Promise<void> {
    this.closed ??= new Error('decode pool closed');
    if (this.pending.size > 0) {
      const drained = new Promise<void>((resolve) => (this.drained = resolve));
      await Promise.race([drained, new Promise((resolve) => setTimeout(resolve, CLOSE_WAIT_MS).unref())]);
    }
    for (const p of this.pending.values()) p.reject(this.closed);
    this.pending.clear();
    await Promise.all(this.workers.map((w) => w.thread.terminate()));
  }

  /** Least loaded first: a slow image (a large PNG) holds up only its own worker. */
  private leastLoaded(): DecodeWorker {
    let worker = this.workers[0];
    let least = Infinity;
    for (const w of this.workers) {
      const load = w.sent - Atomics.load(w.finished, 0) + w.queued.length;
      if (load < least) [worker, least] = [w, load];
    }
    return worker;
  }

  private enqueue(worker: DecodeWorker, job: Job): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(job.id, { resolve, reject, worker });
      this.queue(worker, job);
    });
  }

  private queue(worker: DecodeWorker, job: Job): void {
    worker.queued.push(job);
    this.flushSoon();
  }

  private flushSoon(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushQueued = false;
    for (const worker of this.workers) {
      if (worker.queued.length === 0) continue;
      const jobs = worker.queued;
      worker.queued = [];
      worker.sent += jobs.length;
      // Answers due here keep the process alive; onward ones are the engine thread's to give.
      for (const job of jobs) if (!job.onward && worker.answering++ === 0) worker.thread.ref();
      worker.thread.postMessage(jobs);
    }
  }

  private complete(worker: DecodeWorker, done: Done[]): void {
    worker.answering -= done.length;
    if (worker.answering === 0) worker.thread.unref();
    for (const d of done) {
      const p = this.pending.get(d.id);
      if (!p) continue;
      this.pending.delete(d.id);
      const err = doneError(d);
      if (err) p.reject(err);
      else p.resolve();
    }
    if (this.pending.size === 0) this.drained?.();
  }

  /** A decode thread died (a crash in native code): its images fail, a new thread takes its place. */
  private fail(worker: DecodeWorker, err: Error): void {
    const at = this.workers.indexOf(worker);
    if (at === -1) return; // already replaced: 'error' comes before 'exit'
    const unsent = new Set(worker.queued.map((job) => job.id));
    for (const [id, p] of this.pending) {
      if (p.worker !== worker || unsent.has(id)) continue;
      this.pending.delete(id);
      p.reject(err);
    }
    if (this.closed) {
      for (const id of unsent) this.pending.get(id)?.reject(err);
      return;
    }
    const lost: number[] = [];
    for (const [id, w] of this.onwardJobs) if (w === worker && !unsent.has(id)) lost.push(id);
    if (lost.length > 0) this.onward!.lost(worker.serial, lost, err);
    const next = this.start();
    this.workers[at] = next;
    // Jobs queued for the dead thread but not yet sent go to its replacement.
    next.queued = worker.queued;
    for (const job of next.queued) {
      if (job.onward) this.onwardJobs.set(job.id, next);
      else this.pending.get(job.id)!.worker = next;
    }
    worker.queued = [];
    if (next.queued.length > 0) this.flushSoon();
  }
}
