// retrain.py's distortions of a training photo: a random crop within a margin, a random scale up,
// a left-right flip half of the time, brightness multiplied up or down. The distorted photo goes
// through the base model's own preprocessing like any other, so it is written out losslessly.
export interface Distortions {
  flipLeftRight: boolean;
  /** margin cropped off, in percent of the size (retrain.py's --random_crop) */
  randomCrop: number;
  /** most the photo is scaled up by, in percent (--random_scale) */
  randomScale: number;
  /** most the pixels are multiplied up or down by, in percent (--random_brightness) */
  randomBrightness: number;
}

export const anyDistortion = (d: Distortions) => d.flipLeftRight || d.randomCrop > 0 || d.randomScale > 0 || d.randomBrightness > 0;

/** As retrain.py: the photo scaled by (1 + crop%) x (1 + random x scale%), a window of its
 * original size taken at random from that, flipped half of the time, its pixels multiplied by
 * 1 + (random in -1..1) x brightness%. `random` gives numbers in [0, 1). */
export async function distort(bytes: Uint8Array, d: Distortions, random: () => number): Promise<Buffer> {
  // Loaded here, not with the module: a run without distortions never loads libvips.
  const { default: sharp } = await import('sharp');
  const { width, height } = await sharp(bytes).metadata();
  if (!width || !height) throw new Error('no image size');
  const scale = (1 + d.randomCrop / 100) * (1 + (random() * d.randomScale) / 100);
  const [w, h] = [Math.max(width, Math.round(width * scale)), Math.max(height, Math.round(height * scale))];
  const [left, top] = [Math.floor(random() * (w - width + 1)), Math.floor(random() * (h - height + 1))];
  const flip = d.flipLeftRight && random() < 0.5;
  const brightness = 1 + ((2 * random() - 1) * d.randomBrightness) / 100;
  return sharp(bytes)
    .resize(w, h, { fit: 'fill' })
    .extract({ left, top, width, height })
    .flop(flip)
    .linear(brightness, 0)
    .png({ compressionLevel: 0 })
    .toBuffer();
}
