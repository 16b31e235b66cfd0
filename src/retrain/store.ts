// --bottleneck-dir: one image's bottleneck under one feature graph, kept in a plain file, so that a
// rerun computes only the photos it has not seen. The entries are --cache's (src/cache.ts): the
// same format, checksum and DIR/ab/cdef... layout, written whole by rename, by a thread of their
// own (store-writer.ts) after the bottlenecks are computed or every few seconds. Beside them,
// DIR/graphs/ keeps each base model as cut at its bottleneck, so that a rerun does not translate
// and cut it again. Nothing here lists or removes files: the store reads only the file it asks
// for, and only a regular file, whole by its checksum; anything else there reads as a miss.
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { decodeEntry, encodeEntry } from '../cache/cache.js';
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
/** The largest kept graph read back: above any base retrain takes (Inception v3 is 92 MB). */
const MAX_GRAPH_BYTES = 2 ** 31 - 1;
/** How long a computed bottleneck may wait to be written: what a killed run loses at most. On the
 * digits (1,797 photos, about 1 s) none is written while the engine runs: creating their files on
 * the main thread meanwhile cost that stage 0.1-0.3 s on 2 cores, and a core is free while the
 * layer trains. */
const WRITE_WITHIN_MS = 5000;

export class BottleneckStore {
  hits = 0;
  misses = 0;
  /** computed, not yet handed to a writer: found by get() too */
  private pending = new Map<string, Float32Array>();
  private pendingSince = 0;
  private readonly writing: Promise<unknown>[] = [];

  /** `dir` checked by bottleneckFolder; `fingerprint`: what the features depend on besides the
   * image (graph, preprocessing). */
  constructor(
    readonly dir: string,
    private readonly fingerprint: string,
  ) {}

  key(bytes: Uint8Array): string {
    return createHash('sha256').update(this.fingerprint).update('\0').update(bytes).digest('hex');
  }

  private path(key: string): string {
    return join(this.dir, key.slice(0, 2), key.slice(2));
  }

  /** The entry for `key`: of `length` floats, or (length unknown yet) of the length it says. */
  get(key: string, length?: number): Float32Array | undefined {
    const v = this.pending.get(key) ?? this.read(key, length);
    if (v) this.hits++;
    else this.misses++;
    return v;
  }

  private read(key: string, length?: number): Float32Array | undefined {
    try {
      const buf = readRegularFileSync(this.path(key), entryBytes(length ?? MAX_FEATURES));
      return decodeEntry(buf, key, length ?? (buf.length >= 8 ? buf.readUInt32LE(4) : 0));
    } catch {
      return undefined; // absent, or not an entry
    }
  }

  /** Stores an entry, within WRITE_WITHIN_MS; a store that cannot be written costs the next run
   * time, never this one. */
  put(key: string, v: Float32Array): void {
    if (this.pending.size === 0) this.pendingSince = performance.now();
    this.pending.set(key, v);
    if (performance.now() - this.pendingSince >= WRITE_WITHIN_MS) this.flush();
  }

  /** Starts writing the entries put so far, in a thread of its own: the main thread carries on. */
  flush(): void {
    if (this.pending.size === 0) return;
    const entries = [...this.pending];
    const length = entries[0][1].length;
    const batch: Batch = { dir: this.dir, keys: entries.map(([key]) => key), features: new Float32Array(entries.length * length) };
    entries.forEach(([, v], i) => batch.features.set(v, i * length));
    this.pending = new Map();
    const thread = new Worker(new URL('./store-writer.js', import.meta.url), { workerData: batch });
    this.writing.push(new Promise((resolve) => thread.once('exit', resolve).once('error', resolve)));
  }

  /** Once every entry put is written (or could not be). */
  async written(): Promise<void> {
    this.flush();
    await Promise.all(this.writing);
  }
}

/** Entries for the writer thread (store-writer.ts). */
export interface Batch {
  dir: string;
  keys: string[];
  /** the entries' features, one after another, each as long */
  features: Float32Array;
}

/** Writes entries whole into `dir` (the store's writer thread). */
export function writeEntries({ dir, keys, features }: Batch): void {
  const length = features.length / keys.length;
  const shards = new Set<string>();
  keys.forEach((key, i) => {
    const shard = key.slice(0, 2);
    const v = features.subarray(i * length, (i + 1) * length);
    if (writeWhole(dir, join(dir, shard, key.slice(2)), encodeEntry(key, v), !shards.has(shard))) shards.add(shard);
  });
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
    const kept = decodeGraph(readRegularFileSync(file, MAX_GRAPH_BYTES), key);
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
