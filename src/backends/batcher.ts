// Micro-batching: items wait in a queue that goes to the model when it holds maxSize items or
// when the oldest has waited maxDelayMs, whichever comes first. One batch runs at a time; items
// arriving meanwhile gather into the next one. When the caller says nothing else is on its way
// (inbound() is 0), waiting could not grow the batch, so the queue goes at once: a trickle pays
// no delay, a bulk stream still fills its batches.

export interface BatcherOptions {
  maxSize: number;
  maxDelayMs: number;
  /** how many items are on their way to submit() (being read or decoded); unset: unknown */
  inbound?: () => number;
}

interface Waiting<T, R> {
  item: T;
  enqueuedAt: number;
  resolve: (r: R) => void;
  reject: (e: unknown) => void;
}

export class MicroBatcher<T, R> {
  private queue: Waiting<T, R>[] = [];
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(
    /** runs a batch; `waits`: how long each item waited in the queue, in ms */
    private readonly runBatch: (items: T[], waits: number[]) => Promise<R[]>,
    private readonly opts: BatcherOptions,
  ) {}

  /** items waiting for a batch (not counting the one running) */
  get waiting(): number {
    return this.queue.length;
  }

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, enqueuedAt: performance.now(), resolve, reject });
      this.schedule();
    });
  }

  /** Resolves once no batch is running and none is waiting (for a clean shutdown). */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Re-checks the queue; call when an item that was on its way will not arrive after all. */
  poke(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.running || this.queue.length === 0) return;
    const wait = this.queue[0].enqueuedAt + this.opts.maxDelayMs - performance.now();
    if (this.queue.length >= this.opts.maxSize || wait <= 0 || this.opts.inbound?.() === 0) {
      void this.flush();
    } else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.schedule();
      }, wait);
    }
  }

  private async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const taken = this.queue.splice(0, this.opts.maxSize);
    this.running = true;
    const start = performance.now();
    try {
      const results = await this.runBatch(taken.map((w) => w.item), taken.map((w) => start - w.enqueuedAt));
      taken.forEach((w, i) => w.resolve(results[i]));
    } catch (err) {
      for (const w of taken) w.reject(err);
    } finally {
      this.running = false;
      this.schedule();
      if (!this.running && this.queue.length === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }
}
