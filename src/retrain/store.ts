// --bottleneck-dir: each image's bottleneck under one feature graph, kept so that a rerun computes
// only the photos it has not seen. A run's new bottlenecks go into packs, one file for what it
// computed in WRITE_WITHIN_MS (the digits' 1,797: one file), written whole by rename in
// DIR/packs/<feature graph's fingerprint>/, and read back whole by the next run: made one a file,
// their 1,797 files cost the first run 0.1-0.3 s on 2 cores and a rerun 20-30 ms to read. Entries
// one a file, in --cache's format and DIR/ab/cdef... layout (src/cache.ts), as earlier versions
// wrote them, are still read. Beside them, DIR/graphs/ keeps each base model as cut at its
// bottleneck, so that a rerun does not translate and cut it again. Nothing here removes files,
// and only regular files of the names it writes are read, whole by their checksum; anything else
// there reads as a miss.
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { endianness, homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { decodeEntry } from '../cache/cache.js';
import { modelFiles } from '../cache/fingerprint.js';
import { UsageError } from '../errors.js';
import { readRegularFileSync } from '../image/read.js';
import type { ResolvedModel } from '../model/locate.js';
import { type FeatureGraph, featureGraph } from './graph.js';

/** $XDG_CACHE_HOME/classify/bottlenecks, else ~/.cache/classify/bottlenecks. */
export function defaultBottleneckDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.startsWith('/') ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'classify', 'bottlenecks');
}

/** `dir`, made if absent: a UsageError when it cannot be used, before any work. */
export function bottleneckFolder(dir: string): string {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new UsageError(`--bottleneck-dir ${dir}: cannot use as a folder for bottlenecks (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return dir;
}

/** An entry's size in bytes for `length` floats (magic and count, the floats, the checksum). */
const entryBytes = (length: number) => 8 + 4 * length + 32;
/** Far above any bottleneck (Inception's is 2,048 floats): the most an entry read unsized may hold. */
const MAX_FEATURES = 1 << 20;
/** What cuts a base besides its bytes and the bottleneck asked for. Bump it when the cut or the
 * translation (src/convert/) changes what a base becomes; the package's version is in the key
 * too, so graphs kept by another version are cut anew. */
const CUT = 'cut v1';
/** A kept graph: magic, u32 length of a JSON header (node, output, normalisation, notes), the
 * header, the ONNX bytes, then a SHA-256 over its key and all before it. */
const GRAPH_MAGIC = Buffer.from('CLG1');
const CHECKSUM = 32;
/** The largest kept graph or pack read back: above any base retrain takes (Inception v3 is 92 MB). */
const MAX_FILE_BYTES = 2 ** 31 - 1;
/** The longest a computed bottleneck waits to be written in a pack: what a killed run loses at most. */
const WRITE_WITHIN_MS = 5000;
/** A pack: magic, u32 count, u32 features each, the entries' keys (32 bytes each), their features
 * (float32, little-endian), then a SHA-256 over all before it. Named by when, who and a random part. */
const PACK_MAGIC = Buffer.from('CLB1');
const PACK_NAME = /^\d+-\d+-[0-9a-f]{12}$/;

export class BottleneckStore {
  hits = 0;
  misses = 0;
  /** computed, not yet written: found by get() too */
  private pending = new Map<string, Float32Array>();
  private pendingSince = 0;
  /** the packs' entries, read at the first get() */
  private packed: Map<string, Float32Array> | undefined;

  /** `dir` checked by bottleneckFolder; `fingerprint`: what the features depend on besides the
   * image (graph, preprocessing). */
  constructor(
    readonly dir: string,
    private readonly fingerprint: string,
  ) {}

  key(bytes: Uint8Array): string {
    return createHash('sha256').update(this.fingerprint).update('\0').update(bytes).digest('hex');
  }

  private get packs(): string {
    return join(this.dir, 'packs', this.fingerprint);
  }

  /** The entry for `key`: of `length` floats, or (length unknown yet) of the length it has. */
  get(key: string, length?: number): Float32Array | undefined {
    this.packed ??= readPacks(this.packs);
    let v = this.pending.get(key) ?? this.packed.get(key);
    if (v && length !== undefined && v.length !== length) v = undefined;
    v ??= this.read(key, length);
    if (v) this.hits++;
    else this.misses++;
    return v;
  }

  /** An entry one a file, as earlier versions wrote them. */
  private read(key: string, length?: number): Float32Array | undefined {
    try {
      const buf = readRegularFileSync(join(this.dir, key.slice(0, 2), key.slice(2)), entryBytes(length ?? MAX_FEATURES));
      return decodeEntry(buf, key, length ?? (buf.length >= 8 ? buf.readUInt32LE(4) : 0));
    } catch {
      return undefined; // absent, or not an entry
    }
  }

  /** Stores an entry, written within WRITE_WITHIN_MS (see flush); a store that cannot be written
   * costs the next run time, never this one. */
  put(key: string, v: Float32Array): void {
    if (this.pending.size === 0) this.pendingSince = performance.now();
    this.pending.set(key, v);
    if (performance.now() - this.pendingSince >= WRITE_WITHIN_MS) this.flush();
  }

  /** Writes the entries put since the last pack as one pack. */
  flush(): void {
    if (this.pending.size === 0) return;
    const name = `${Date.now()}-${process.pid}-${randomBytes(6).toString('hex')}`;
    writeWhole(this.dir, join(this.packs, name), encodePack(this.pending), true);
    for (const [key, v] of this.pending) this.packed?.set(key, v);
    this.pending = new Map();
  }
}

/** Float32 values as little-endian bytes, in place: swapped only on a big-endian machine. */
const littleEndian = (bytes: Buffer): Buffer => (endianness() === 'LE' ? bytes : bytes.swap32());

function encodePack(entries: Map<string, Float32Array>): Buffer {
  const length = entries.values().next().value!.length;
  const header = Buffer.alloc(12);
  PACK_MAGIC.copy(header);
  header.writeUInt32LE(entries.size, 4);
  header.writeUInt32LE(length, 8);
  const keys = Buffer.concat([...entries.keys()].map((k) => Buffer.from(k, 'hex')));
  const features = Buffer.concat([...entries.values()].map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength)));
  const body = Buffer.concat([header, keys, littleEndian(features)]);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

/** Every entry of every whole pack in `folder`, by key; a pack that is not whole is left out. */
function readPacks(folder: string): Map<string, Float32Array> {
  const entries = new Map<string, Float32Array>();
  let names: string[] = [];
  try {
    names = readdirSync(folder).filter((n) => PACK_NAME.test(n));
  } catch {
    // no packs yet
  }
  for (const name of names) {
    try {
      const buf = readRegularFileSync(join(folder, name), MAX_FILE_BYTES);
      const end = buf.length - CHECKSUM;
      if (end < 12 || !buf.subarray(0, 4).equals(PACK_MAGIC)) continue;
      const [count, length] = [buf.readUInt32LE(4), buf.readUInt32LE(8)];
      if (end !== 12 + count * (32 + 4 * length) || !createHash('sha256').update(buf.subarray(0, end)).digest().equals(buf.subarray(end))) continue;
      // Features of their own, at offset 0 (the buffer read may be a slice of a shared pool).
      const bytes = Uint8Array.prototype.slice.call(buf, 12 + 32 * count, end);
      littleEndian(Buffer.from(bytes.buffer));
      const features = new Float32Array(bytes.buffer);
      for (let i = 0; i < count; i++) entries.set(buf.toString('hex', 12 + 32 * i, 12 + 32 * (i + 1)), features.subarray(i * length, (i + 1) * length));
    } catch {
      // not readable: left out
    }
  }
  return entries;
}

/** Writes `bytes` to `file` whole: a temporary file in `dir` renamed into place, `file`'s folder
 * made first when asked. False when it could not be written (a full disk, a read-only folder). */
function writeWhole(dir: string, file: string, bytes: Uint8Array, makeFolder: boolean): boolean {
  const tmp = join(dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    if (makeFolder) mkdirSync(dirname(file), { recursive: true });
    writeFileSync(tmp, bytes);
    renameSync(tmp, file);
    return true;
  } catch {
    rmSync(tmp, { force: true });
    return false;
  }
}

/** featureGraph, kept in DIR/graphs/: a rerun on the same base reads the cut back instead of
 * translating and cutting it again (for the frozen MobileNet 0.25, 0.19 s of a 0.8 s rerun). Keyed
 * by the bytes of the base's files, the bottleneck asked for and what cuts (CUT, this package's
 * version): another base or another classify cuts anew. `kept`: read back, not cut. */
export function keptFeatureGraph(dir: string, model: ResolvedModel, node?: string): FeatureGraph & { kept: boolean } {
  const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');
  const files = modelFiles(model.file).map((f) => [relative(dirname(model.file), f), sha256(readFileSync(f))]);
  const key = sha256(JSON.stringify({ cut: CUT, version: packageVersion(), format: model.format, node: node ?? null, files }));
  const file = join(dir, 'graphs', key);
  try {
    const kept = decodeGraph(readRegularFileSync(file, MAX_FILE_BYTES), key);
    if (kept) return { ...kept, kept: true };
  } catch {
    // absent, or not a whole graph: cut anew
  }
  const graph = featureGraph(model, node);
  writeWhole(dir, file, encodeGraph(key, graph), true);
  return { ...graph, kept: false };
}

const packageVersion = () => createRequire(import.meta.url)('../../package.json').version as string;

function encodeGraph(key: string, g: FeatureGraph): Buffer {
  const header = Buffer.from(JSON.stringify({ node: g.node, output: g.output, normalisation: g.normalisation, notes: g.notes }));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(header.length);
  const body = Buffer.concat([GRAPH_MAGIC, length, header, g.onnx]);
  return Buffer.concat([body, createHash('sha256').update(key).update(body).digest()]);
}

/** The graph, or undefined for anything but a whole kept graph for this key. */
function decodeGraph(buf: Buffer, key: string): FeatureGraph | undefined {
  const end = buf.length - CHECKSUM;
  if (end < 8 || !buf.subarray(0, 4).equals(GRAPH_MAGIC) || 8 + buf.readUInt32LE(4) > end) return undefined;
  if (!createHash('sha256').update(key).update(buf.subarray(0, end)).digest().equals(buf.subarray(end))) return undefined;
  const headerEnd = 8 + buf.readUInt32LE(4);
  return { ...(JSON.parse(buf.toString('utf8', 8, headerEnd)) as Omit<FeatureGraph, 'onnx'>), onnx: buf.subarray(headerEnd, end) };
}
