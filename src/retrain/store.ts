// --bottleneck-dir: one image's bottleneck under one feature graph, kept in a plain file, so that a
// rerun computes only the photos it has not seen. The entries are --cache's (src/cache.ts): the
// same format, checksum and DIR/ab/cdef... layout, written whole by rename. Beside them,
// DIR/graphs/ keeps each base model as cut at its bottleneck, so that a rerun does not translate
// and cut it again. Nothing here lists or removes files: the store reads only the file it asks
// for, and only a regular file, whole by its checksum; anything else there reads as a miss.
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
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

export class BottleneckStore {
  hits = 0;
  misses = 0;
  private readonly shards = new Set<string>();

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
    let v: Float32Array | undefined;
    try {
      const buf = readRegularFileSync(this.path(key), entryBytes(length ?? MAX_FEATURES));
      v = decodeEntry(buf, key, length ?? (buf.length >= 8 ? buf.readUInt32LE(4) : 0));
    } catch {
      // absent, or not an entry
    }
    if (v) this.hits++;
    else this.misses++;
    return v;
  }

  /** Stores an entry; a store that cannot be written costs the next run time, never this one. */
  put(key: string, v: Float32Array): void {
    const shard = join(this.dir, key.slice(0, 2));
    if (writeWhole(this.dir, this.path(key), encodeEntry(key, v), !this.shards.has(shard))) this.shards.add(shard);
  }
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
