// --bottleneck-dir: one image's bottleneck under one feature graph, kept in a plain file, so that a
// rerun computes only the photos it has not seen. The entries are --cache's (src/cache.ts): the
// same format, checksum and DIR/ab/cdef... layout, written whole by rename. Nothing here lists or
// removes files: the store reads only the entry it asks for, and only a regular file of an
// entry's exact size; anything else there reads as a miss.
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { decodeEntry, encodeEntry } from '../cache/cache.js';
import { UsageError } from '../errors.js';
import { readRegularFileSync } from '../image/decode.js';

/** $XDG_CACHE_HOME/classify/bottlenecks, else ~/.cache/classify/bottlenecks. */
export function defaultBottleneckDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.startsWith('/') ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'classify', 'bottlenecks');
}

/** An entry's size in bytes for `length` floats (magic and count, the floats, the checksum). */
const entryBytes = (length: number) => 8 + 4 * length + 32;
/** Far above any bottleneck (Inception's is 2,048 floats): the most an entry read unsized may hold. */
const MAX_FEATURES = 1 << 20;

export class BottleneckStore {
  hits = 0;
  misses = 0;
  private readonly shards = new Set<string>();

  private constructor(
    readonly dir: string,
    private readonly fingerprint: string,
  ) {}

  /** `fingerprint`: what the features depend on besides the image (graph, preprocessing). */
  static open(dir: string, fingerprint: string): BottleneckStore {
    try {
      mkdirSync(dir, { recursive: true });
      accessSync(dir, constants.R_OK | constants.W_OK | constants.X_OK);
    } catch (err) {
      throw new UsageError(`--bottleneck-dir ${dir}: cannot use as a folder for bottlenecks (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    return new BottleneckStore(dir, fingerprint);
  }

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
    const tmp = join(this.dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      if (!this.shards.has(shard)) mkdirSync(shard, { recursive: true });
      this.shards.add(shard);
      writeFileSync(tmp, encodeEntry(key, v));
      renameSync(tmp, this.path(key));
    } catch {
      rmSync(tmp, { force: true });
    }
  }
}
