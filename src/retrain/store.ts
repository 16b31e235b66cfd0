// --bottleneck-dir: each image's bottleneck under one feature graph, kept so that a rerun computes
// only the photos it has not seen. A run's new bottlenecks go into packs, one file for what it
// computed in WRITE_WITHIN_MS (the digits' 1,797: one file), written whole by rename in
// DIR/packs/<feature graph's fingerprint>/, and read back whole by the next run: made one a file,
// their 1,797 files cost the first run 0.1-0.3 s on 2 cores and a rerun 20-30 ms to read. Entries
// one a file, in --cache's format and DIR/ab/cdef... layout (src/cache.ts), as earlier versions
// wrote them, are still read. Beside them, DIR/graphs/ keeps each base model as cut at its
// bottleneck, so that a rerun does not translate and cut it again; and DIR/seen/, for each
// folder of photos and each base, what each file's stat was when its content was hashed (see
// StatIndex), so that a rerun reads and hashes only the files that changed. Nothing here removes files, and only
// regular files of the names it writes are read, whole by their checksum; anything else there
// reads as a miss.
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, type Stats, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { endianness, homedir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { decodeEntry } from '../cache/cache.js';
import { modelFiles } from '../cache/fingerprint.js';
import { UsageError } from '../errors.js';
import { type ImageReader, readRegularFileSync } from '../image/read.js';
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
  /** photos read and hashed for their key */
  photosRead = 0;
  /** photos whose key the index gave, unread */
  photosUnchanged = 0;
  /** computed, not yet written: found by get() too */
  private pending = new Map<string, Float32Array>();
  private pendingSince = 0;
  /** the packs' entries, read at the first get() */
  private packed: Map<string, Float32Array> | undefined;
  /** with `photos`: the stat index of that folder */
  private readonly index: StatIndex | undefined;

  /** `dir` checked by bottleneckFolder; `fingerprint`: what the features depend on besides the
   * image (graph, preprocessing); `photos`: the folder the photos are under, whose stat index
   * this keeps (none without). */
  constructor(
    readonly dir: string,
    private readonly fingerprint: string,
    photos?: string,
  ) {
    if (photos !== undefined) {
      const folder = createHash('sha256').update(resolve(photos)).digest('hex').slice(0, 32);
      this.index = new StatIndex(dir, join(dir, 'seen', fingerprint, folder));
    }
  }

  key(bytes: Uint8Array): string {
    return createHash('sha256').update(this.fingerprint).update('\0').update(bytes).digest('hex');
  }

  /** The key the index holds for the photo at `path`, when the photo's stat is as it was then. */
  unchangedKey(path: string): string | undefined {
    const known = this.index?.unchanged(path);
    if (known !== undefined) this.photosUnchanged++;
    return known;
  }

  /** The key of the photo at `path`: unchangedKey's, else read synchronously by `reader` and
   * hashed (an InputError when it cannot be read). */
  photoKeyNow(path: string, reader: ImageReader): string {
    const known = this.unchangedKey(path);
    if (known !== undefined) return known;
    const readAt = Date.now();
    let stats: Stats | undefined;
    return this.photoKey(path, readAt, reader.readNow(path, undefined, (s) => (stats = s)), stats);
  }

  /** The photo's bytes, read by `reader` (an InputError when they cannot be), and its key. */
  async readPhoto(path: string, reader: ImageReader): Promise<{ bytes: Buffer; key: string }> {
    const readAt = Date.now();
    let stats: Stats | undefined;
    const bytes = await reader.read(path, (s) => (stats = s));
    return { bytes, key: this.photoKey(path, readAt, bytes, stats) };
  }

  private photoKey(path: string, readAt: number, bytes: Buffer, stats: Stats | undefined): string {
    this.photosRead++;
    const key = this.key(bytes);
    if (stats) this.index?.note(path, stats, key, readAt);
    return key;
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

  /** Lets go of the entries read from the packs (read again if asked for), once the caller has
   * copied what it needs: unreferenced while still young, their features (1.8 MB on the digits)
   * are freed by the next scavenge instead of counting towards V8's limits until a full GC. On
   * the digits a cached rerun held them into training, where they tipped V8 into a full
   * mark-compact (4.5-7 ms) in 5 reruns of 6 (2026-12-05). */
  release(): void {
    this.packed = undefined;
  }

  /** Writes the stat index of the photos this run saw whose bottleneck the store holds, when it
   * differs from the one read. After the last photo: a photo left out of it is read again. */
  keepIndex(): void {
    this.index?.keep((key) => this.pending.has(key) || this.packed?.has(key) === true);
  }
}

/** How long before it was read a file must have last been written for its stat to vouch for its
 * bytes: a file written again within its file system's timestamp granularity (a clock tick on
 * ext4, 1 s on ext3 and HFS+, 2 s on FAT) keeps its mtime with other bytes: git's "racily clean"
 * entries. Such a file is read again next run, and noted then. */
const SETTLED_MS = 2000;
/** A stat index: magic, u32 count, five float64 per file (size, mtimeMs, ctimeMs, ino, dev:
 * little-endian), their keys (32 bytes each), their paths (UTF-8, NUL between), then a SHA-256
 * over all before it. */
const INDEX_MAGIC = Buffer.from('CLI1');
const STAT_FIELDS = 5;

/** Files' stats and keys as an index file holds them: file i's stat at stats[5i..5i+5], its key
 * at keys[64i..64i+64]; `at`: i by path. */
interface Entries {
  at: Map<string, number>;
  stats: Float64Array;
  keys: string;
}

const NO_ENTRIES: Entries = { at: new Map(), stats: new Float64Array(0), keys: '' };

/** For a set of files (the photos of one folder under one fingerprint, a base's files), each
 * file's stat when its key (a SHA-256 of its content) was taken, by path, so that a rerun stats a
 * file instead of opening, reading and hashing it: on the digits' 1,797 photos, 6-13 ms less of
 * a 0.2-0.3 s rerun (2-core VM beside other work, 2026-12-05), and 3 ms for the MobileNet base's
 * 2 MB. A file is taken as unchanged when its size, mtime, ctime, inode and device all are: the
 * test of make, rsync and -o --resume (size and mtime; src/output/resume.ts), stricter, since
 * any write or rename changes the ctime, which no utimes call sets back. One entry per file of
 * the last run, written whole by rename; an index that is not whole is ignored (every file read,
 * as without one). */
class StatIndex {
  /** read at the first lookup */
  private before: Entries | undefined;
  /** this run's files, in order: unchanged ones by their entry in `before`, others by what was read */
  private now = new Map<string, number | { stat: number[]; key: string }>();
  private changed = false;

  constructor(
    private readonly dir: string,
    private readonly file: string,
  ) {}

  /** The file's key, when its stat is as when that key was taken. */
  unchanged(path: string): string | undefined {
    const before = (this.before ??= readIndex(this.file));
    const i = before.at.get(path);
    if (i === undefined) return undefined;
    let stats: Stats | undefined;
    try {
      stats = statSync(path);
    } catch {
      return undefined; // read, which says why it cannot be
    }
    const [at, seen] = [STAT_FIELDS * i, before.stats];
    if (stats.size !== seen[at] || stats.mtimeMs !== seen[at + 1] || stats.ctimeMs !== seen[at + 2] || stats.ino !== seen[at + 3] || stats.dev !== seen[at + 4]) return undefined;
    this.now.set(path, i);
    return before.keys.slice(64 * i, 64 * (i + 1));
  }

  /** `key` taken from the file's bytes, read after `stats` at `readAt` (Date.now()). */
  note(path: string, stats: Stats, key: string, readAt: number): void {
    if (readAt - stats.mtimeMs < SETTLED_MS) return;
    this.now.set(path, { stat: [stats.size, stats.mtimeMs, stats.ctimeMs, stats.ino, stats.dev], key });
    this.changed = true;
  }

  /** Written unless every file this run saw was unchanged and the index holds no others: this
   * run's files whose key `stored` holds. */
  keep(stored: (key: string) => boolean): void {
    const before = this.before ?? NO_ENTRIES;
    if (!this.changed && this.now.size === before.at.size) return;
    const entries: [string, ArrayLike<number>, string][] = [];
    for (const [path, seen] of this.now) {
      const [stat, key] =
        typeof seen === 'number' ? [before.stats.subarray(STAT_FIELDS * seen, STAT_FIELDS * (seen + 1)), before.keys.slice(64 * seen, 64 * (seen + 1))] : [seen.stat, seen.key];
      if (stored(key)) entries.push([path, stat, key]);
    }
    writeWhole(this.dir, this.file, encodeIndex(entries), true);
  }
}

function encodeIndex(entries: [path: string, stat: ArrayLike<number>, key: string][]): Buffer {
  const header = Buffer.alloc(8);
  INDEX_MAGIC.copy(header);
  header.writeUInt32LE(entries.length, 4);
  const values = new Float64Array(STAT_FIELDS * entries.length);
  entries.forEach(([, stat], i) => values.set(stat, STAT_FIELDS * i));
  const stats = Buffer.from(values.buffer);
  if (endianness() !== 'LE') stats.swap64();
  const keys = Buffer.from(entries.map(([, , key]) => key).join(''), 'hex');
  const paths = Buffer.from(entries.map(([path]) => path).join('\0'));
  const body = Buffer.concat([header, stats, keys, paths]);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

/** The index's entries: none when it is absent or not whole. */
function readIndex(file: string): Entries {
  try {
    const buf = readRegularFileSync(file, MAX_FILE_BYTES);
    const end = buf.length - CHECKSUM;
    if (end < 8 || !buf.subarray(0, 4).equals(INDEX_MAGIC)) return NO_ENTRIES;
    const count = buf.readUInt32LE(4);
    const keysAt = 8 + 8 * STAT_FIELDS * count;
    const pathsAt = keysAt + 32 * count;
    if (pathsAt > end || !createHash('sha256').update(buf.subarray(0, end)).digest().equals(buf.subarray(end))) return NO_ENTRIES;
    const statBytes = Uint8Array.prototype.slice.call(buf, 8, keysAt);
    if (endianness() !== 'LE') Buffer.from(statBytes.buffer).swap64();
    const paths = count ? buf.toString('utf8', pathsAt, end).split('\0') : [];
    if (paths.length !== count) return NO_ENTRIES;
    const at = new Map<string, number>();
    for (let i = 0; i < count; i++) at.set(paths[i], i);
    return { at, stats: new Float64Array(statBytes.buffer), keys: buf.toString('hex', keysAt, pathsAt) };
  } catch {
    return NO_ENTRIES; // absent, or not readable: every file read
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
      // The keys as one string, cut: a third faster than a toString per key.
      const keys = buf.toString('hex', 12, 12 + 32 * count);
      for (let i = 0; i < count; i++) entries.set(keys.slice(64 * i, 64 * (i + 1)), features.subarray(i * length, (i + 1) * length));
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
export async function keptFeatureGraph(dir: string, model: ResolvedModel, node?: string): Promise<FeatureGraph & { kept: boolean }> {
  const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');
  const index = new StatIndex(dir, join(dir, 'seen', 'bases', sha256(resolve(model.file)).slice(0, 32)));
  const hashed = (f: string) => {
    const [readAt, stats] = [Date.now(), statSync(f)];
    const hash = sha256(readFileSync(f));
    index.note(f, stats, hash, readAt);
    return hash;
  };
  const files = modelFiles(model.file).map((f) => [relative(dirname(model.file), f), index.unchanged(f) ?? hashed(f)]);
  index.keep(() => true);
  const key = sha256(JSON.stringify({ cut: CUT, version: packageVersion(), format: model.format, node: node ?? null, files }));
  const file = join(dir, 'graphs', key);
  try {
    const kept = decodeGraph(readRegularFileSync(file, MAX_FILE_BYTES), key);
    if (kept) return { ...kept, kept: true };
  } catch {
    // absent, or not a whole graph: cut anew
  }
  const graph = await featureGraph(model, node);
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
