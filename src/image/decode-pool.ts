// Read, decode, resize and pack in worker threads, straight into shared image slots: the main
// thread only moves paths, slot numbers and completions, so it is never what limits throughput.
// Requests made in one turn of the event loop go to a worker in one message, and each worker
// answers a turn's completions in one message: a thread crossing is paid per batch of images.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import 'sharp'; // loaded here first: libvips must stay loaded while workers come and go
import { InternalError } from '../errors.js';
import { type FilePath, InputError, type InputErrorKind } from './read.js';
import type { PrepareSpec } from './prepare.js';
import { ImageSlots } from './slots.js';

/** `ownImage`: the warm-up's blank, not held to --max-pixels (which may be set below its size). */
export type Job = { id: number; slot: number; ownImage?: boolean } & ({ path: string | Uint8Array } | { bytes: Uint8Array });
export type Done = { id: number; error?: { kind: InputErrorKind; message: string }; bug?: { message: string; stack?: string } };
export interface WorkerInit {
  spec: PrepareSpec;
  slots: SharedArrayBuffer;
}

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
  worker: DecodeWorker;
}

interface DecodeWorker {
  thread: Worker;
  outstanding: number;
  queued: Job[];
}

/** How long close() lets images in preparation finish. */
const CLOSE_WAIT_MS = 5000;

export class DecodePool {
  private readonly workers: DecodeWorker[];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private flushQueued = false;
  /** set by close(): nothing new is taken */
  private closed: Error | undefined;
  private drained: (() => void) | undefined;
  private init: { spec: PrepareSpec; slots: ImageSlots } | undefined;

  /** Starts the threads. Without `spec` and `slots` (the model is still loading) they load their
   * modules and wait for configure(): a model's load and their start overlap. */
  constructor(spec: PrepareSpec | undefined, slots: ImageSlots | undefined, readonly threads = Math.max(1, availableParallelism())) {
    this.workers = Array.from({ length: threads }, () => this.start());
    if (spec && slots) this.configure(spec, slots);
  }

  /** What the threads prepare images for, and into: before any image is sent. */
  configure(spec: PrepareSpec, slots: ImageSlots): void {
    this.init = { spec, slots };
    for (const w of this.workers) w.thread.postMessage(this.workerInit());
  }

  get spec(): PrepareSpec {
    return this.configured().spec;
  }

  get slots(): ImageSlots {
    return this.configured().slots;
  }

  private configured(): { spec: PrepareSpec; slots: ImageSlots } {
    if (!this.init) throw new InternalError('decode pool used before configure()');
    return this.init;
  }

  private workerInit(): WorkerInit | undefined {
    return this.init && { spec: this.init.spec, slots: this.init.slots.buffer };
  }

  private start(): DecodeWorker {
    const thread = new Worker(new URL('./decode-worker.js', import.meta.url), { workerData: this.workerInit() });
    const worker: DecodeWorker = { thread, outstanding: 0, queued: [] };
    thread.on('message', (done: Done[]) => this.complete(worker, done));
    thread.on('error', (err) => this.fail(worker, err));
    thread.on('exit', (code) => this.fail(worker, new Error(`decode thread exited (${code})`)));
    thread.unref(); // idle workers must not keep the process alive; busy ones are ref'd
    return worker;
  }

  /** Reads the file and prepares it into `slot`; rejects with InputError for a bad image. */
  file(path: FilePath, slot: number): Promise<void> {
    return this.submit({ id: this.nextId++, slot, path });
  }

  /** Prepares image bytes (an upload) into `slot`; `ownImage` lifts --max-pixels (the warm-up's). */
  bytes(bytes: Uint8Array, slot: number, ownImage = false): Promise<void> {
    return this.submit({ id: this.nextId++, slot, bytes, ownImage });
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

  private submit(job: Job): Promise<void> {
    // Least loaded first: a slow image (a large PNG) holds up only its own worker.
    let worker = this.workers[0];
    for (const w of this.workers) if (w.outstanding + w.queued.length < worker.outstanding + worker.queued.length) worker = w;
    return this.enqueue(worker, job);
  }

  private enqueue(worker: DecodeWorker, job: Job): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(job.id, { resolve, reject, worker });
      worker.queued.push(job);
      if (!this.flushQueued) {
        this.flushQueued = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushQueued = false;
    for (const worker of this.workers) {
      if (worker.queued.length === 0) continue;
      const jobs = worker.queued;
      worker.queued = [];
      worker.outstanding += jobs.length;
      worker.thread.ref();
      worker.thread.postMessage(jobs);
    }
  }

  private complete(worker: DecodeWorker, done: Done[]): void {
    worker.outstanding -= done.length;
    if (worker.outstanding === 0 && worker.queued.length === 0) worker.thread.unref();
    for (const d of done) {
      const p = this.pending.get(d.id);
      if (!p) continue;
      this.pending.delete(d.id);
      if (d.error) p.reject(new InputError(d.error.kind, d.error.message));
      else if (d.bug) p.reject(new InternalError(`in a decode thread: ${d.bug.message}`, d.bug.stack));
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
    const next = this.start();
    this.workers[at] = next;
    // Jobs queued for the dead thread but not yet sent go to its replacement.
    next.queued = worker.queued;
    for (const job of next.queued) this.pending.get(job.id)!.worker = next;
    worker.queued = [];
    if (next.queued.length > 0 && !this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => this.flush());
    }
  }
}
