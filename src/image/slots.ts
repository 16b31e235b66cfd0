// Image slots in one SharedArrayBuffer: decode workers write a prepared image into a slot, the
// engine thread gathers a batch's slots into its input. Nothing is copied through the main thread.
import { Semaphore } from './semaphore.js';

export type SlotType = 'float32' | 'uint8';

export class ImageSlots {
  readonly buffer: SharedArrayBuffer;
  private readonly free: number[];
  /** waiting for a slot goes round the groups (serve's requests) in turn */
  private readonly permits: Semaphore;

  constructor(
    readonly capacity: number,
    /** elements per image (height x width x 3) */
    readonly imageSize: number,
    readonly type: SlotType,
  ) {
    const bytesPerElement = type === 'float32' ? 4 : 1;
    this.buffer = new SharedArrayBuffer(capacity * imageSize * bytesPerElement);
    this.free = Array.from({ length: capacity }, (_, i) => capacity - 1 - i);
    this.permits = new Semaphore(capacity);
  }

  /** A free slot; waits for one when all are taken (backpressure on decoding). */
  async acquire(group?: unknown): Promise<number> {
    await this.permits.acquire(group);
    return this.free.pop()!;
  }

  release(slot: number): void {
    this.free.push(slot);
    this.permits.release();
  }
}

/** A typed view of one slot of `buffer`. */
export function slotView(buffer: SharedArrayBuffer, type: SlotType, imageSize: number, slot: number): Float32Array | Uint8Array {
  return type === 'float32' ? new Float32Array(buffer, slot * imageSize * 4, imageSize) : new Uint8Array(buffer, slot * imageSize, imageSize);
}
