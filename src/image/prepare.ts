// One image from bytes to the model's packed input: what a decode worker runs for each job.
import type { Layout } from './layout.js';
import { decodeToRgb } from './decode.js';
import type { RgbImage } from './native.js';
import type { Placement, Sampling } from './resize.js';
import type { Preprocessing } from './preprocessing.js';
import { TensorPacker } from './tensor.js';

/** Everything a decode worker needs to know about the model's input. */
export interface PrepareSpec {
  height: number;
  width: number;
  layout: Layout;
  inputType: 'float32' | 'uint8';
  /** decoding and resizing steps, and the normalisation */
  preprocessing: Preprocessing;
  maxPixels: number;
  maxFileSize: number;
}

/** Resize buffers kept between images (several can be taken at once when decodes finish
 * together). */
const SPARE_BUFFERS = 4;

export class Preparer {
  private readonly packer: TensorPacker;
  private readonly spare: Float32Array[] = [];

  constructor(readonly spec: PrepareSpec) {
    this.packer = new TensorPacker(spec.height, spec.width, spec.layout, spec.preprocessing);
  }

  get imageSize(): number {
    return this.packer.imageSize;
  }

  /** Decodes `bytes` and writes the packed image into `dst` (one slot's view); `consumed` as in
   * DecodeOptions. */
  async prepare(bytes: Uint8Array, dst: Float32Array | Uint8Array, maxPixels = this.spec.maxPixels, consumed?: () => void): Promise<void> {
    // The TensorFlow samplers' output buffer is taken after the decode, just before the resize,
    // and given back once packed: only images between those two points hold one.
    let taken: Float32Array | undefined;
    const floatOut = () => (taken = this.spare.pop() ?? new Float32Array(this.packer.imageSize));
    try {
      // A float model's exact resize runs natively, straight into the slot, where it can.
      const resizeInto = dst instanceof Float32Array ? (image: RgbImage, place: Placement, sampling: Sampling) => this.packer.resizeFloat(image, place, sampling, dst, 0) : undefined;
      const rgb = await decodeToRgb(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
        width: this.spec.width,
        height: this.spec.height,
        maxPixels,
        steps: this.spec.preprocessing,
        floatOut,
        resizeInto,
        consumed,
      });
      if (!rgb) return;
      if (dst instanceof Float32Array) this.packer.writeFloat(rgb, dst, 0);
      else this.packer.writeUint8(rgb, dst, 0);
    } finally {
      if (taken && this.spare.length < SPARE_BUFFERS) this.spare.push(taken);
    }
  }
}
