// One batch through the engine: the engine thread gathers the batch's prepared slots into its
// input (nothing is copied on the main thread), runs it, and the scores come back per image.
import type { WorkerEngine } from '../backends/engine-thread.js';
import type { ImageSlots } from '../image/slots.js';

export class BatchRunner {
  constructor(
    private readonly engine: WorkerEngine,
    private readonly slots: ImageSlots,
    private readonly outputSize: number,
  ) {}

  /** Runs the images in `batch` (slot numbers) and frees their slots, whatever happens. */
  async run(batch: number[]): Promise<Float32Array[]> {
    try {
      const scores = await this.engine.runSlots(batch);
      const n = this.outputSize;
      return batch.map((_, i) => scores.subarray(i * n, (i + 1) * n));
    } finally {
      for (const slot of batch) this.slots.release(slot);
    }
  }
}
