// A JPEG's markers up to its first scan, read without decoding: what decides which decoder takes
// it (native.ts) and whether its header claims more than its data could hold (decode.ts).

export interface JpegHeader {
  /** sequential Huffman coding (SOF0/SOF1), the only kind given to the decoder in native.ts:
   * progressive files can stop after any scan, and then libjpeg versions smooth the missing
   * coefficients differently (and a file of a million tiny scans decodes for seconds) */
  sequential: boolean;
  /** an APP2 segment that libvips would take for an ICC profile */
  icc: boolean;
  /** an APP1 segment that libvips would take for EXIF (and its orientation) */
  exif: boolean;
  /** the frame's size, as its SOF says */
  width: number;
  height: number;
  /** 8x8 blocks the frame codes, and the fewest bits each takes (Huffman-coded frames only: 0 for
   * arithmetic coding, which can code a flat image in almost nothing) */
  blocks: number;
  bitsPerBlock: number;
  /** where the first scan's header begins */
  scanAt: number;
}

/** The header of a JPEG up to its first scan, or undefined when the markers are not laid out
 * plainly (bytes between markers, an image that ends first, a second frame): libjpeg's to judge,
 * and sharp's to decode. Prefixes are matched as libvips matches them. */
export function jpegHeader(bytes: Uint8Array): JpegHeader | undefined {
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) return undefined;
  const header: JpegHeader = { sequential: false, icc: false, exif: false, width: 0, height: 0, blocks: 0, bitsPerBlock: 0, scanAt: 0 };
  let frames = 0;
  let pos = 2;
  while (pos + 2 <= bytes.length) {
    if (bytes[pos] !== 0xff) return undefined;
    const marker = bytes[pos + 1];
    if (marker === 0xff) {
      pos++; // fill byte
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      pos += 2; // TEM, RSTn: markers without a length
      continue;
    }
    if (marker === 0xda) {
      header.scanAt = pos + 4;
      return frames === 1 ? header : undefined; // start of scan
    }
    if (marker === 0xd8 || marker === 0xd9 || pos + 4 > bytes.length) return undefined;
    const length = (bytes[pos + 2] << 8) | bytes[pos + 3];
    if (length < 2) return undefined;
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      frames++;
      if (!readFrame(bytes, pos + 4, marker, header)) return undefined;
    }
    if (marker === 0xe1 && startsWith(bytes, pos + 4, EXIF)) header.exif = true;
    if (marker === 0xe2 && startsWith(bytes, pos + 4, ICC_PROFILE)) header.icc = true;
    pos += 2 + length;
  }
  return undefined;
}

/** An SOF segment: size, coding, and the blocks its components' sampling factors make. */
function readFrame(bytes: Uint8Array, segment: number, marker: number, header: JpegHeader): boolean {
  if (segment + 6 > bytes.length) return false;
  header.sequential = marker === 0xc0 || marker === 0xc1;
  header.height = (bytes[segment + 1] << 8) | bytes[segment + 2];
  header.width = (bytes[segment + 3] << 8) | bytes[segment + 4];
  if (marker !== 0xc0 && marker !== 0xc1 && marker !== 0xc2) return true;
  const components = bytes[segment + 5];
  const factors: [number, number][] = [];
  for (let c = 0; c < components && segment + 6 + c * 3 + 1 < bytes.length; c++) {
    const f = bytes[segment + 6 + c * 3 + 1];
    factors.push([f >> 4, f & 15]);
  }
  const hMax = Math.max(1, ...factors.map(([h]) => h));
  const vMax = Math.max(1, ...factors.map(([, v]) => v));
  const { width, height } = header;
  for (const [h, v] of factors) header.blocks += Math.ceil(Math.ceil((width * h) / hMax) / 8) * Math.ceil(Math.ceil((height * v) / vMax) / 8);
  header.bitsPerBlock = marker === 0xc2 ? 1 : 2;
  return true;
}

/** A JPEG whose header claims more 8x8 blocks than its compressed data could code: libjpeg would
 * decode the missing part as flat grey with only a warning, and a blank image would be classified.
 * Each block takes at least one bit of Huffman-coded data (two in a sequential scan: a DC code and
 * an end-of-block code), so this never refuses a real photo. Reads the header only. */
export function jpegClaimsMoreThanItHolds(bytes: Uint8Array, header = jpegHeader(bytes)): boolean {
  if (!header || header.bitsPerBlock === 0) return false;
  // Everything from the first scan to the end of the image (EOI), later scans and tables included.
  const eoi = lastIndexOfEoi(bytes);
  const data = (eoi > header.scanAt ? eoi : bytes.length) - header.scanAt;
  return data * 8 < header.blocks * header.bitsPerBlock;
}

function lastIndexOfEoi(bytes: Uint8Array): number {
  for (let i = bytes.length - 2; i >= 0; i--) if (bytes[i] === 0xff && bytes[i + 1] === 0xd9) return i;
  return -1;
}

const EXIF = [0x45, 0x78, 0x69, 0x66]; // "Exif"
const ICC_PROFILE = [0x49, 0x43, 0x43, 0x5f, 0x50, 0x52, 0x4f, 0x46, 0x49, 0x4c, 0x45]; // "ICC_PROFILE"

function startsWith(bytes: Uint8Array, at: number, prefix: number[]): boolean {
  if (at + prefix.length > bytes.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false;
  return true;
}
