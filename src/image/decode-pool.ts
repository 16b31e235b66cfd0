// Read, decode, resize and pack in worker threads, straight into shared image slots: the main
// thread only moves paths, slot numbers and completions, so it is never what limits throughput.
// Requests made in one turn of the event loop go to a worker in one message, and each worker
// answers a turn's completions in one message: a thread crossing is paid per batch of images.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import 'sharp'; // loaded here first: libvips must stay loaded while workers come and go
import { type FilePath, InputError, type InputErrorKind } from './decode.js';
import type { PrepareSpec } from './prepare.js';
import { ImageSlots } from './slots.js';

/** `ownImage`: the warm-up's blank, not held to --max-pixels (which may be set below its size). */
export type Job = { id: number; slot: number; ownImage?: boolean } & ({ path: string | Uint8Array } | { bytes: Uint8Array });
export type Done = { id: number; error?: { kind: InputErrorKind; message: string } };
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

export class DecodePool {
  private readonly workers: DecodeWorker[];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private flushQueued = false;
  private dead: Error | undefined;

  constructor(
    readonly spec: PrepareSpec,
    readonly slots: ImageSlots,
    readonly threads = Math.max(1, availableParallelism()),
  ) {
    const init: WorkerInit = { spec, slots: slots.buffer };
    this.workers = Array.from({ length: threads }, () => {
      const thread = new Worker(new URL('./decode-worker.js', import.meta.url), { workerData: init });
      const worker: DecodeWorker = { thread, outstanding: 0, queued: [] };
      thread.on('message', (done: Done[]) => this.complete(worker, done));
      thread.on('error', (err) => this.fail(err));
      thread.on('exit', (code) => this.fail(new Error(`decode thread exited (${code})`)));
      thread.unref(); // idle workers must not keep the process alive; busy ones are ref'd
      return worker;
    });
  }

  /** Reads the file and prepares it into `slot`; rejects with InputError for a bad image. */
  file(path: FilePath, slot: number): Promise<void> {
    return this.submit({ id: this.nextId++, slot, path });
  }

  /** Prepares image bytes (an upload) into `slot`; `ownImage` lifts --max-pixels (the warm-up's). */
  bytes(bytes: Uint8Array, slot: number, ownImage = false): Promise<void> {
    return this.submit({ id: this.nextId++, slot, bytes, ownImage });
  }

  /** Every worker decodes one image at once (each thread's first decode is slower). */
  async warmUp(bytes: Uint8Array): Promise<void> {
    const slots = await Promise.all(this.workers.map(() => this.slots.acquire()));
    try {
      await Promise.all(
        this.workers.map((worker, i) => {
          const job: Job = { id: this.nextId++, slot: slots[i], bytes, ownImage: true };
          return this.enqueue(worker, job);
        }),
      );
    } finally {
      for (const slot of slots) this.slots.release(slot);
    }
  }

  async close(): Promise<void> {
    this.dead ??= new Error('decode pool closed');
    await Promise.all(this.workers.map((w) => w.thread.terminate()));
  }

  private submit(job: Job): Promise<void> {
    // Least loaded first: a slow image (a large PNG) holds up only its own worker.
    let worker = this.workers[0];
    for (const w of this.workers) if (w.outstanding + w.queued.length < worker.outstanding + worker.queued.length) worker = w;
    return this.enqueue(worker, job);
  }

  private enqueue(worker: DecodeWorker, job: Job): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
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
      else p.resolve();
    }
  }

  private fail(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
