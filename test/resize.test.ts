// Each resize mode on small synthetic images, against values worked out by hand from the
// frameworks' definitions (TensorFlow's resize_bilinear kernels, Pillow's Resample.c).
import { describe, expect, it } from 'vitest';
import { placement, resizeRgb, type Sampling } from '../src/image/resize.js';

/** An RGB image whose R is f(x, y), G is R / 2 and B is 255 - R, so a mixed-up channel shows. */
function image(w: number, h: number, f: (x: number, y: number) => number): Uint8Array {
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = f(x, y);
      px.set([v, v / 2, 255 - v], (y * w + x) * 3);
    }
  }
  return px;
}

/** The R channel of a resized image as rows, and a check that G and B went through the same
 * resize (exact for the float samplers: the resize is linear). */
function red(out: Float32Array | Uint8Array, w: number, h: number, linear = true): number[][] {
  const rows: number[][] = [];
  for (let y = 0; y < h; y++) {
    const row: number[] = [];
    for (let x = 0; x < w; x++) {
      const [r, g, b] = out.subarray((y * w + x) * 3, (y * w + x) * 3 + 3);
      if (linear) {
        expect(g).toBeCloseTo(r / 2, 3);
        expect(b).toBeCloseTo(255 - r, 3);
      }
      row.push(r);
    }
    rows.push(row);
  }
  return rows;
}

const near = (got: number[][], want: number[][], digits = 4) =>
  got.forEach((row, y) => row.forEach((v, x) => expect(v, `(${x},${y})`).toBeCloseTo(want[y][x], digits)));

describe('tf1: TF1 resize_bilinear (source = output x in/out)', () => {
  it('downscales an odd-sized image: 5x3 to 2x2 samples source (0|2.5, 0|1.5)', () => {
    // R = 10x + 100y is linear, so bilinear sampling at (sx, sy) gives exactly 10 sx + 100 sy.
    const out = resizeRgb(image(5, 3, (x, y) => 10 * x + 100 * y), 5, 3, 2, 2, 'tf1');
    expect(out).toBeInstanceOf(Float32Array);
    near(red(out, 2, 2), [
      [0, 25],
      [150, 175],
    ]);
  });

  it('upscales 2x2 to 3x3: source 0, 2/3, 4/3, the last clamped to the edge', () => {
    const out = resizeRgb(image(2, 2, (x, y) => 90 * x + 150 * y), 2, 2, 3, 3, 'tf1');
    near(red(out, 3, 3), [
      [0, 60, 90],
      [100, 160, 190],
      [150, 210, 240],
    ]);
  });
});

describe('bilinear: half-pixel centres (TF2, ONNX Resize, OpenCV)', () => {
  it('downscales 5x3 to 2x2 sampling source ((x + 0.5) x 2.5 - 0.5, (y + 0.5) x 1.5 - 0.5)', () => {
    // source x 0.75 and 3.25, y 0.25 and 1.75
    const out = resizeRgb(image(5, 3, (x, y) => 10 * x + 100 * y), 5, 3, 2, 2, 'bilinear');
    near(red(out, 2, 2), [
      [32.5, 57.5],
      [182.5, 207.5],
    ]);
  });

  it('upscales 2x2 to 3x3: source -1/6 (clamped to 0), 1/2, 7/6 (clamped to 1)', () => {
    const out = resizeRgb(image(2, 2, (x, y) => 90 * x + 150 * y), 2, 2, 3, 3, 'bilinear');
    near(red(out, 3, 3), [
      [0, 45, 90],
      [75, 120, 165],
      [150, 195, 240],
    ]);
  });

  it('keeps fractions: no rounding to 8 bits before normalisation', () => {
    const out = resizeRgb(image(2, 1, (x) => x), 2, 1, 4, 1, 'bilinear');
    // source -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    near(red(out, 4, 1, false), [[0, 0.25, 0.75, 1]]);
  });
});

describe("pil-bilinear and pil-bicubic: Pillow's antialiased resize", () => {
  const ramp = image(4, 1, (x) => 70 * x); // 0, 70, 140, 210

  it('bilinear downscaling 4 to 2 widens the triangle to 2 pixels: weights 3/7, 3/7, 1/7', () => {
    // centre 1: taps 0, 1, 2 with triangle(0.25, 0.25, 0.75) = 0.75, 0.75, 0.25 -> (0*3 + 70*3 + 140) / 7 = 50
    // centre 3: taps 1, 2, 3 -> (70 + 140*3 + 210*3) / 7 = 160
    const out = resizeRgb(ramp, 4, 1, 2, 1, 'pil-bilinear');
    expect(out).toBeInstanceOf(Uint8Array);
    expect(red(out, 2, 1, false)).toEqual([[50, 160]]);
    // Without antialiasing the same resize samples 0.5 and 2.5: 35 and 175.
    near(red(resizeRgb(ramp, 4, 1, 2, 1, 'bilinear'), 2, 1), [[35, 175]]);
  });

  it('bicubic (a = -0.5) downscaling 4 to 2: weights 0.8672, 0.8672, 0.2266, -0.0703 over their sum', () => {
    // 70 x 0.458678 + 140 x 0.119835 - 210 x 0.037190 = 41.07; mirrored: 168.93
    expect(red(resizeRgb(ramp, 4, 1, 2, 1, 'pil-bicubic'), 2, 1, false)).toEqual([[41, 169]]);
  });

  it('bicubic upscaling 2 to 4 overshoots at the edges and is clamped to 0..255', () => {
    // centres 0.25, 0.75, 1.25, 1.75: -22.5 -> 0, 52.8 -> 53, 202.2 -> 202, 277.5 -> 255
    const out = resizeRgb(image(2, 1, (x) => 255 * x), 2, 1, 4, 1, 'pil-bicubic');
    expect(red(out, 4, 1, false)).toEqual([[0, 53, 202, 255]]);
  });

  it('resizes both axes, horizontal first, rounding to 8 bits in between', () => {
    // 4x4 -> 2x2 bilinear: each axis as the 4 -> 2 case above, so (50, 160) per row, then per column.
    const out = resizeRgb(image(4, 4, (x, y) => 35 * x + 35 * y), 4, 4, 2, 2, 'pil-bilinear');
    // rows: 35y + (25, 80); columns: 25 + (25, 80) and 80 + (25, 80)
    expect(red(out, 2, 2, false)).toEqual([
      [50, 105],
      [105, 160],
    ]);
  });
});

describe('placement and crop: shorter side resized, centre cut out', () => {
  it('computes the resized size and the window as Hugging Face and torchvision do', () => {
    // no crop: the whole image stretched
    expect(placement(500, 375, 128, 128, null)).toEqual({ width: 128, height: 128, left: 0, top: 0 });
    // portrait 333x500, shorter side 256: 256 x floor(384.38) = 384, window (16, 80)
    expect(placement(333, 500, 224, 224, { shorter: 256 })).toEqual({ width: 256, height: 384, left: 16, top: 80 });
    // landscape, odd margins round down: 7x5 shorter 5 -> 7x5, 4x4 window at (1, 0)
    expect(placement(7, 5, 4, 4, { shorter: 5 })).toEqual({ width: 7, height: 5, left: 1, top: 0 });
    // a fixed size, then the crop (DeiT: 256x256, then 224)
    expect(placement(640, 480, 224, 224, { height: 256, width: 256 })).toEqual({ width: 256, height: 256, left: 16, top: 16 });
  });

  it('samples only the window: 6x4 to shorter side 3 (4x3), centre 2x2, half-pixel bilinear', () => {
    // resized 4x3 (4.5 truncated), window columns 1-2: source x (1.5 x 1.5 - 0.5, 2.5 x 1.5 - 0.5)
    // = 1.75, 3.25; rows 0-1: source y 0.5 x 4/3 - 0.5 = 1/6, 1.5
    const src = image(6, 4, (x, y) => 10 * x + 50 * y);
    const place = placement(6, 4, 2, 2, { shorter: 3 });
    expect(place).toEqual({ width: 4, height: 3, left: 1, top: 0 });
    near(
      red(resizeRgb(src, 6, 4, 2, 2, 'bilinear', place), 2, 2),
      [
        [17.5 + 50 / 6, 32.5 + 50 / 6],
        [92.5, 107.5],
      ],
      3,
    );
  });

  it('gives the same pixels as resizing the whole image and then cropping, in every sampler', () => {
    const src = image(9, 7, (x, y) => (x * 37 + y * 61) % 256);
    for (const sampling of ['tf1', 'bilinear', 'pil-bilinear', 'pil-bicubic'] as Sampling[]) {
      const place = placement(9, 7, 4, 4, { shorter: 6 }); // 7x6 (7.7 truncated), window (1, 1)
      const whole = resizeRgb(src, 9, 7, place.width, place.height, sampling);
      const window = resizeRgb(src, 9, 7, 4, 4, sampling, place);
      for (let y = 0; y < 4; y++) {
        const from = ((y + place.top) * place.width + place.left) * 3;
        expect([...window.subarray(y * 12, y * 12 + 12)], sampling).toEqual([...whole.subarray(from, from + 12)]);
      }
    }
  });

  it('refuses a buffer too small for the size it is said to be', () => {
    expect(() => resizeRgb(new Uint8Array(10), 2, 2, 1, 1, 'tf1')).toThrow(RangeError);
  });
});
