// --cache DIR: the score vector for an image's bytes under one model, kept in a plain file, so a
// copy of a photo or a repeated upload costs a hash instead of a decode and an inference.
//
// DIR/ab/cdef... holds the entry for key abcdef... (SHA-256 of the model fingerprint and the
// image bytes). An entry is written to a temporary file and renamed into place, so a reader in
// another process sees a whole entry or none. It carries a checksum over its key and scores: a
// truncated, corrupt or misplaced entry reads as a miss, never as another image's answer.
// Entries hold the whole score vector, so any --top-k and --threshold is answered from them.
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, type Dirent, existsSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { lstat, open, readdir, unlink } from 'node:fs/promises';
import { endianness } from 'node:os';
import { dirname, join } from 'node:path';
import type { Classifier, ImageSource, Scorer } from '../classifier/classifier.js';
import { modelFingerprint } from './fingerprint.js';
import { type FilePath, ImageReader } from '../image/read.js';
import { UsageError } from '../errors.js';

export const DEFAULT_CACHE_ENTRIES = 100_000;

const MAGIC = Buffer.from('CLC1');
const HEADER = 8; // magic, u32 count
const CHECKSUM = 32;
/** A temporary file this old was left by a process that died before its rename. */
const STALE_TMP_MS = 60 * 60 * 1000;
/** What DIR may hold: eviction removes files, so it only ever looks at names of these shapes. */
const SHARD = /^[0-9a-f]{2}$/;
const ENTRY = /^[0-9a-f]{62}$/;
const TMP = /^\.tmp-\d+-[0-9a-f]{12}$/;
/** The Cache Directory Tagging Specification's tag: backup tools skip a folder holding it. */
const TAG_NAME = 'CACHEDIR.TAG';
const TAG = 'Signature: 8a477f597d28d172789f06886806bc55\n# This folder is a cache made by classify --cache; it holds nothing else.\n';
/** Folders the cache makes: written by their owner only (a umask of 002 would let a group forge answers). */
const DIR_MODE = 0o755;

const checksum = (key: string, body: Buffer) => createHash('sha256').update(key).update(body).digest();

/** Float32 values as little-endian bytes, the entries' order, either way: copied whole, swapped
 * only on a big-endian machine (a value at a time took retrain's rerun 5 ms over 1,797 entries). */
const littleEndian = (bytes: Uint8Array): Uint8Array => (endianness() === 'LE' ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).swap32());

export function encodeEntry(key: string, scores: Float32Array): Buffer {
  const buf = Buffer.alloc(HEADER + 4 * scores.length + CHECKSUM);
  MAGIC.copy(buf, 0);
  buf.writeUInt32LE(scores.length, 4);
  buf.set(littleEndian(new Uint8Array(scores.buffer.slice(scores.byteOffset, scores.byteOffset + scores.byteLength))), HEADER);
  checksum(key, buf.subarray(0, HEADER + 4 * scores.length)).copy(buf, HEADER + 4 * scores.length);
  return buf;
}

/** The scores, or undefined for anything but a whole entry for this key with `length` scores. */
export function decodeEntry(buf: Buffer, key: string, length: number): Float32Array | undefined {
  const end = HEADER + 4 * length;
  if (buf.length !== end + CHECKSUM || !buf.subarray(0, 4).equals(MAGIC) || buf.readUInt32LE(4) !== length) return undefined;
  if (!checksum(key, buf.subarray(0, end)).equals(buf.subarray(end))) return undefined;
  // Bytes of their own, at offset 0 (the buffer read may be a slice of a shared pool).
  return new Float32Array(littleEndian(Uint8Array.prototype.slice.call(buf, HEADER, end)).buffer);
}

export class ContentCache {
  hits = 0;
  misses = 0;
  private addedSinceSweep = 0;
  private swept = false;
  private sweeping: Promise<void> | undefined;
  private readonly shards = new Set<string>();

  private constructor(
    readonly dir: string,
    readonly maxEntries: number,
  ) {}

  /** Creates DIR when needed. A usage error (exit 2): a folder that cannot be written, one that
   * others than its owner may write (they would decide the answers read from it), or one that
   * holds anything but entries (eviction deletes entries: it must never meet a file of yours). */
  static open(dir: string, maxEntries = DEFAULT_CACHE_ENTRIES): ContentCache {
    const refuse = (why: string): never => {
      throw new UsageError(`--cache ${dir}: ${why}`);
    };
    try {
      makeDirs(dir);
      accessSync(dir, constants.R_OK | constants.W_OK | constants.X_OK);
    } catch (err) {
      refuse(`cannot use as a cache folder (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const why = checkFolder(dir);
    if (why) refuse(why);
    if (!existsSync(join(dir, TAG_NAME))) {
      try {
        writeFileSync(join(dir, TAG_NAME), TAG, { flag: 'wx' });
      } catch {
        // another process wrote it first
      }
    }
    return new ContentCache(dir, maxEntries);
  }

  key(fingerprint: string, bytes: Uint8Array): string {
    return createHash('sha256').update(fingerprint).update('\0').update(bytes).digest('hex');
  }

  private path(key: string): string {
    return join(this.dir, key.slice(0, 2), key.slice(2));
  }

  get(key: string, length: number): Float32Array | undefined {
    const file = this.path(key);
    let scores: Float32Array | undefined;
    try {
      // A regular file of an entry's size only: a FIFO or /dev/zero planted there is a miss; so
      // is one that another user could have written.
      scores = decodeEntry(readOwnFile(file, HEADER + 4 * length + CHECKSUM), key, length);
    } catch {
      // absent, evicted by another process meanwhile, or not an entry
    }
    if (!scores) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    // Eviction takes the least recently used: a hit counts as a use.
    const now = new Date();
    try {
      utimesSync(file, now, now);
    } catch {
      // evicted meanwhile, or a read-only cache: the answer stands
    }
    return scores;
  }

  /** Stores an entry; a cache that cannot be written costs the speed-up, never the answer. */
  put(key: string, scores: Float32Array): void {
    const shard = join(this.dir, key.slice(0, 2));
    const tmp = join(this.dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      if (!this.shards.has(shard)) makeDirs(shard, DIR_MODE);
      this.shards.add(shard);
      writeFileSync(tmp, encodeEntry(key, scores), { mode: 0o644 });
      renameSync(tmp, this.path(key));
    } catch {
      rmSync(tmp, { force: true });
      return;
    }
    this.addedSinceSweep++;
    // Checked on a process's first write and after every tenth of the bound: with P processes
    // writing at once the folder stays within about (1 + P/10) times the bound.
    if (!this.swept || this.addedSinceSweep >= Math.max(1, Math.floor(this.maxEntries / 10))) this.sweep();
  }

  private sweep(): void {
    if (this.sweeping) return;
    this.swept = true;
    this.addedSinceSweep = 0;
    this.sweeping = this.evict().finally(() => (this.sweeping = undefined));
  }

  /** Counts the entries (names only); over the bound, removes the least recently used down to
   * nine tenths of it. Only regular files named as entries in real shard folders are counted,
   * and a file is removed only after its header says it is an entry: a link or a file of
   * someone else's is never touched. Runs in the background; another process may remove the
   * same files. */
  async evict(): Promise<void> {
    const found: string[] = [];
    for (const d of await readdir(this.dir, { withFileTypes: true }).catch(() => [] as Dirent[])) {
      const full = join(this.dir, d.name);
      if (TMP.test(d.name) && d.isFile()) {
        const s = await lstat(full).catch(() => undefined);
        if (s?.isFile() && Date.now() - s.mtimeMs > STALE_TMP_MS) await unlink(full).catch(() => undefined);
      } else if (SHARD.test(d.name) && d.isDirectory()) {
        for (const e of await readdir(full, { withFileTypes: true }).catch(() => [] as Dirent[])) {
          if (ENTRY.test(e.name) && e.isFile()) found.push(join(full, e.name));
        }
      }
    }
    if (found.length <= this.maxEntries) return;
    const aged: [string, number][] = [];
    for (const file of found) {
      const s = await lstat(file).catch(() => undefined);
      if (s?.isFile()) aged.push([file, s.mtimeMs]);
    }
    aged.sort((a, b) => a[1] - b[1]);
    const remove = aged.length - Math.floor(this.maxEntries * 0.9);
    for (let i = 0; i < remove; i++) if (await isEntryFile(aged[i][0])) await unlink(aged[i][0]).catch(() => undefined);
  }

  /** Waits for a sweep in progress and counts what was added since it began, so that the
   * folder is within the bound when a process ends. */
  async close(): Promise<void> {
    await this.sweeping;
    if (this.addedSinceSweep > 0) await this.evict();
  }
}

export interface CacheSettings {
  readonly dir: string;
  readonly entries: number;
}

/** The cache in front of loaded models: `for(model)` is that model's Scorer through the cache
 * (a hit is the stored vector; a miss is scored, stored and returned). One instance serves every
 * model a server swaps in, each keyed by its own fingerprint. */
export class CachedScores {
  private readonly scorers = new WeakMap<Classifier, Scorer & { fingerprint: string }>();
  private readonly files: ImageReader;

  constructor(
    readonly cache: ContentCache,
    limits: { maxFileSize: number },
  ) {
    this.files = new ImageReader(limits.maxFileSize);
  }

  for(model: Classifier): Scorer & { fingerprint: string } {
    let scorer = this.scorers.get(model);
    if (!scorer) this.scorers.set(model, (scorer = new CachedScorer(this.cache, model, modelFingerprint(model.info), this.files)));
    return scorer;
  }
}

class CachedScorer implements Scorer {
  constructor(
    private readonly cache: ContentCache,
    private readonly model: Classifier,
    readonly fingerprint: string,
    /** reads a file whose bytes are the key, as the decode threads would: --max-file-size holds */
    private readonly files: ImageReader,
  ) {}

  get info() {
    return this.model.info;
  }

  get labels() {
    return this.model.labels;
  }

  async score(image: ImageSource, group?: unknown): Promise<Float32Array> {
    // The key is the image's bytes: a file is read here, once, and its bytes go on to the model.
    const bytes = 'bytes' in image ? image.bytes : await this.files.read(image.path);
    const key = this.cache.key(this.fingerprint, bytes);
    const hit = this.cache.get(key, this.model.info.classes);
    if (hit) return hit;
    const scores = await this.model.score({ bytes }, group);
    this.cache.put(key, scores);
    return scores;
  }
}

/** mkdir -p that cannot spin: Node's recursive mkdirSync loops for ever where a parent exists
 * but mkdir says ENOENT under it (/proc, some FUSE mounts). */
function makeDirs(dir: string, mode = DIR_MODE): void {
  try {
    mkdirSync(dir, mode);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    const parent = dirname(dir);
    if (code !== 'ENOENT' || parent === dir || existsSync(parent)) throw err;
  }
  makeDirs(dirname(dir), mode);
  mkdirSync(dir, mode);
}

/** Why DIR cannot be a cache, or undefined: writable by others than its owner, or holding
 * anything but shard folders of entries, temporary entries and the tag. Names and types only
 * (readdir's d_type): no file is opened. */
function checkFolder(dir: string): string | undefined {
  const st = statSync(dir);
  if (!st.isDirectory()) return 'not a folder';
  if (st.uid !== process.getuid?.()) {
    return `owned by another user (uid ${st.uid}): whoever can write a cache folder decides the answers read from it, so classify uses only a folder of your own`;
  }
  if ((st.mode & 0o022) !== 0) {
    return `writable by others than its owner (mode ${(st.mode & 0o777).toString(8)}): whoever can write a cache folder decides the answers read from it (chmod go-w, or a folder of your own)`;
  }
  const foreign = (name: string) =>
    `holds ${JSON.stringify(name)}, which is not a cache entry: classify deletes old entries in its cache folder, so it must hold nothing else (name a new or empty folder)`;
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    if ((d.name === TAG_NAME || TMP.test(d.name)) && d.isFile()) continue;
    if (!SHARD.test(d.name) || !d.isDirectory()) return foreign(d.name);
    const shard = lstatSync(join(dir, d.name));
    if ((shard.mode & 0o022) !== 0 || shard.uid !== st.uid) return `${d.name}/ is writable by others than its owner: whoever can write a cache folder decides the answers read from it`;
    for (const e of readdirSync(join(dir, d.name), { withFileTypes: true })) if (!ENTRY.test(e.name) || !e.isFile()) return foreign(join(d.name, e.name));
  }
  return undefined;
}

/** An entry file's bytes, read only when it is a regular file of at most `maxBytes` that this
 * user owns and no one else may write; throws otherwise. */
function readOwnFile(file: string, maxBytes: number): Buffer {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > maxBytes || st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0) throw new Error('not an entry of ours');
    const bytes = Buffer.alloc(st.size);
    readSync(fd, bytes, 0, st.size, 0);
    return bytes;
  } finally {
    closeSync(fd);
  }
}

/** A regular file (not a link) whose size and header are an entry's. */
async function isEntryFile(file: string): Promise<boolean> {
  let handle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const st = await handle.stat();
    const header = Buffer.alloc(HEADER);
    const { bytesRead } = await handle.read(header, 0, HEADER, 0);
    return st.isFile() && bytesRead === HEADER && header.subarray(0, 4).equals(MAGIC) && st.size === HEADER + 4 * header.readUInt32LE(4) + CHECKSUM;
  } catch {
    return false;
  } finally {
    await handle?.close();
  }
}
