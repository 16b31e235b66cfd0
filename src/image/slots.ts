// Image slots in one SharedArrayBuffer: decode workers write a prepared image into a slot, the
// engine thread gathers a batch's slots into its input. Nothing is copied through the main thread.

export type SlotType = 'float32' | 'uint8';

export class ImageSlots {
  readonly buffer: SharedArrayBuffer;
  private readonly free: number[];
  private readonly waiters: ((slot: number) => void)[] = [];

  constructor(
    readonly capacity: number,
    /** elements per image (height x width x 3) */
    readonly imageSize: number,
    readonly type: SlotType,
  ) {
    const bytesPerElement = type === 'float32' ? 4 : 1;
    this.buffer = new SharedArrayBuffer(capacity * imageSize * bytesPerElement);
    this.free = Array.from({ length: capacity }, (_, i) => capacity - 1 - i);
  }

  /** A free slot; waits for one when all are taken (backpressure on decoding). */
  acquire(): Promise<number> {
    const slot = this.free.pop();
    if (slot !== undefined) return Promise.resolve(slot);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(slot: number): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(slot);
    else this.free.push(slot);
  }

  /** slots in use or waited for */
  get inUse(): number {
    return this.capacity - this.free.length + this.waiters.length;
  }
}

/** A typed view of one slot of `buffer`. */
export function slotView(buffer: SharedArrayBuffer, type: SlotType, imageSize: number, slot: number): Float32Array | Uint8Array {
  return type === 'float32' ? new Float32Array(buffer, slot * imageSize * 4, imageSize) : new Uint8Array(buffer, slot * imageSize, imageSize);
}
