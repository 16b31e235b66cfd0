import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, statSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContentCache, decodeEntry, encodeEntry } from '../src/cache/cache.js';
import { BIN, COLOUR, FIX, jsonLines, ROOT, runInProcess } from './helpers.js';
import { startServer } from './serve-helpers.js';

let dir: string;
let images: string[];
/** path -> predictions from a run without --cache */
let expected: Map<string, unknown>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'classify-cache-'));
  // Forty images of different colours, so that their answers differ.
  images = await Promise.all(
    Array.from({ length: 40 }, async (_, i) => {
      const file = join(dir, `c${i}.png`);
      const background = { r: (i * 37) % 256, g: (i * 91) % 256, b: (i * 53) % 256 };
      await sharp({ create: { width: 16, height: 16, channels: 3, background } }).png().toFile(file);
      return file;
    }),
  );
  const r = await runInProcess(['-g', COLOUR], input(images));
  expect(r.code).toBe(0);
  expected = new Map(jsonLines(r.stdout).map((o) => [o.path, o.predictions]));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const input = (ps: string[]) => ps.join('\n') + '\n';
/** Every entry file in a cache folder. */
const entries = (cache: string) =>
  readdirSync(cache)
    .filter((d) => /^[0-9a-f]{2}$/.test(d))
    .flatMap((d) => readdirSync(join(cache, d)).map((f) => join(cache, d, f)));
const keyOf = (entry: string) => entry.split('/').slice(-2).join('');
const hitsAndMisses = (stderr: string) => /(\d+) hits, (\d+) misses/.exec(stderr)?.slice(1).map(Number);

function expectRight(stdout: string, paths = images) {
  const out = jsonLines(stdout);
  expect(out.map((o) => o.path)).toEqual(paths);
  for (const o of out) expect(o.predictions).toEqual(expected.get(o.path));
}

describe('cache entries', () => {
  it('round-trip a score vector; a truncated, altered, misplaced or wrong-sized entry is a miss', () => {
    const scores = Float32Array.from([0.7, 0.2, 0.1]);
    const entry = encodeEntry('k1', scores);
    expect(decodeEntry(entry, 'k1', 3)).toEqual(scores);
    expect(decodeEntry(entry.subarray(0, entry.length - 1), 'k1', 3)).toBeUndefined();
    expect(decodeEntry(entry.subarray(0, 20), 'k1', 3)).toBeUndefined();
    const flipped = Buffer.from(entry);
    flipped[9] ^= 1;
    expect(decodeEntry(flipped, 'k1', 3)).toBeUndefined();
    expect(decodeEntry(entry, 'k2', 3)).toBeUndefined();
    expect(decodeEntry(entry, 'k1', 4)).toBeUndefined();
    expect(decodeEntry(Buffer.alloc(0), 'k1', 3)).toBeUndefined();
  });

  it('eviction removes the least recently used beyond the bound, down to nine tenths; a hit counts as a use', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'classify-evict-'));
    try {
      const filler = ContentCache.open(folder, 1000);
      const keys = Array.from({ length: 30 }, (_, i) => filler.key('fp', Buffer.from(`image ${i}`)));
      keys.forEach((k, i) => {
        filler.put(k, Float32Array.from([i]));
        const t = 1_700_000_000 + i;
        utimesSync(join(folder, k.slice(0, 2), k.slice(2)), t, t);
      });
      await filler.close();
      // A stale temporary file, as a process killed between write and rename leaves.
      const stale = join(folder, '.tmp-1-0123456789ab');
      writeFileSync(stale, 'x');
      utimesSync(stale, 1_600_000_000, 1_600_000_000);
      const small = ContentCache.open(folder, 10);
      expect(small.get(keys[0], 1)).toEqual(Float32Array.from([0])); // the oldest, now used
      await small.evict();
      const left = new Set(entries(folder).map(keyOf));
      expect(left.size).toBe(9);
      expect([...left].sort()).toEqual([keys[0], ...keys.slice(22)].sort());
      expect(readdirSync(folder).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });
});

describe('a cache folder holds only its own files', () => {
  const folder = () => mkdtempSync(join(tmpdir(), 'classify-own-'));
  const openError = (dir: string) => {
    try {
      ContentCache.open(dir, 10);
    } catch (err) {
      return (err as Error).message;
    }
    return undefined;
  };

  it('a folder laid out like .git/objects (two-hex folders of other files) is refused, and nothing in it is touched', () => {
    const dir = folder();
    try {
      mkdirSync(join(dir, 'ab'));
      writeFileSync(join(dir, 'ab', 'cdef0123456789abcdef0123456789abcdef01'), 'a git object');
      mkdirSync(join(dir, 'pack'));
      expect(openError(dir)).toMatch(/holds "ab\/cdef0123456789abcdef0123456789abcdef01", which is not a cache entry/);
      rmSync(join(dir, 'ab'), { recursive: true });
      expect(openError(dir)).toMatch(/holds "pack", which is not a cache entry/);
      expect(existsSync(join(dir, 'pack'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a shard that is a link to another folder is refused; eviction never follows one or removes a file that is not an entry', async () => {
    const dir = folder();
    const victim = folder();
    try {
      const name = 'a'.repeat(62);
      writeFileSync(join(victim, name), 'precious');
      symlinkSync(victim, join(dir, 'ab'));
      expect(openError(dir)).toMatch(/holds "ab", which is not a cache entry/);
      rmSync(join(dir, 'ab'));
      const cache = ContentCache.open(dir, 1);
      const keys = Array.from({ length: 5 }, (_, i) => cache.key('fp', Buffer.from(`image ${i}`)));
      for (const k of keys) cache.put(k, Float32Array.from([1]));
      await cache.close();
      // Planted after the folder was checked: a link as a shard and entry-named files that are not entries.
      symlinkSync(victim, join(dir, 'ab'));
      mkdirSync(join(dir, 'cd'));
      writeFileSync(join(dir, 'cd', name), 'not an entry');
      symlinkSync(join(victim, name), join(dir, 'cd', 'b'.repeat(62)));
      await cache.evict();
      expect(readFileSync(join(victim, name), 'utf8')).toBe('precious');
      expect(readFileSync(join(dir, 'cd', name), 'utf8')).toBe('not an entry');
      expect(entries(dir).filter((e) => !e.includes('/ab/') && !e.includes('/cd/')).length).toBeLessThanOrEqual(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(victim, { recursive: true, force: true });
    }
  });

  it('a folder others may write is refused (they could forge answers); a new folder is made for its owner only and tagged', () => {
    const dir = folder();
    try {
      chmodSync(dir, 0o775);
      expect(openError(dir)).toMatch(/writable by others than its owner \(mode 775\)/);
      chmodSync(dir, 0o700);
      mkdirSync(join(dir, 'ab'));
      chmodSync(join(dir, 'ab'), 0o777);
      expect(openError(dir)).toMatch(/ab\/ is writable by others than its owner/);
      const made = join(dir, 'new', 'cache');
      const old = process.umask(0o002);
      try {
        expect(openError(made)).toBeUndefined();
      } finally {
        process.umask(old);
      }
      expect(readFileSync(join(made, 'CACHEDIR.TAG'), 'utf8')).toMatch(/^Signature: 8a477f597d28d172789f06886806bc55/);
      expect(openError(made)).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("only the cache's owner decides its answers", () => {
  const asRoot = process.getuid?.() === 0;

  it.skipIf(!asRoot)('a folder owned by another user is refused, even one that only its owner may write', () => {
    const dir = mkdtempSync(join(tmpdir(), 'classify-foreign-'));
    try {
      chownSync(dir, 65534, 65534);
      expect(() => ContentCache.open(dir, 10)).toThrow(/owned by another user \(uid 65534\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('entries are written for their owner only, whatever the umask; one others may write is a miss', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'classify-umask-'));
    const old = process.umask(0o002);
    try {
      const cache = ContentCache.open(dir, 10);
      const key = cache.key('fp', Buffer.from('image'));
      cache.put(key, Float32Array.from([1]));
      const [entry] = entries(dir);
      expect(statSync(entry).mode & 0o777).toBe(0o644);
      expect(cache.get(key, 1)).toEqual(Float32Array.from([1]));
      chmodSync(entry, 0o664); // as a group member could then have rewritten it
      expect(cache.get(key, 1)).toBeUndefined();
      await cache.close();
    } finally {
      process.umask(old);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a regular file named as the folder is refused with the reason, not an internal error', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'classify-notdir-')), 'afile');
    writeFileSync(file, '');
    chmodSync(file, 0o755);
    expect(() => ContentCache.open(file, 10)).toThrow(/afile: not a folder|cannot use as a cache folder/);
  });
});

describe('classify --cache', () => {
  it('a second run answers every image from the cache, exactly as without it; a copy under another name is a hit', async () => {
    const cache = join(dir, 'plain');
    const first = await runInProcess(['-g', COLOUR, '--cache', cache, '-v'], input(images));
    expect(first.code).toBe(0);
    expect(hitsAndMisses(first.stderr)).toEqual([0, 40]);
    expectRight(first.stdout);
    expect(entries(cache)).toHaveLength(40);
    const copy = join(dir, 'copy of c5.png');
    copyFileSync(images[5], copy);
    expected.set(copy, expected.get(images[5]));
    const second = await runInProcess(['-g', COLOUR, '--cache', cache, '-v'], input([...images, copy]));
    expect(second.code).toBe(0);
    expect(hitsAndMisses(second.stderr)).toEqual([41, 0]);
    expectRight(second.stdout, [...images, copy]);
    // Another model does not see this one's answers.
    const other = await runInProcess(['-g', join(FIX, 'models', 'colour-nhwc'), '--cache', cache, '-v'], input(images.slice(0, 3)));
    expect(hitsAndMisses(other.stderr)).toEqual([0, 3]);
  });

  it('answers from the stored score vector without running the model: any --top-k, and a planted entry shows', async () => {
    const cache = join(dir, 'planted');
    const red = join(FIX, 'images', 'red.jpg');
    expect((await runInProcess(['-g', COLOUR, '--cache', cache], input([red]))).code).toBe(0);
    const [entry] = entries(cache);
    const scores = decodeEntry(readFileSync(entry), keyOf(entry), 3)!;
    expect(scores[0]).toBeGreaterThan(0.99); // red, green, blue
    writeFileSync(entry, encodeEntry(keyOf(entry), Float32Array.from([0.1, 0.3, 0.6])));
    const r = await runInProcess(['-g', COLOUR, '--cache', cache, '-k', '2'], input([red]));
    expect(jsonLines(r.stdout)[0].predictions).toEqual([
      { label: 'blue', score: 0.6 },
      { label: 'green', score: 0.3 },
    ]);
  });

  it('a truncated or corrupt entry is a miss: the right answer, and the entry written whole again', async () => {
    const cache = join(dir, 'damaged');
    expect((await runInProcess(['-g', COLOUR, '--cache', cache], input(images))).code).toBe(0);
    const all = entries(cache);
    const size = readFileSync(all[0]).length;
    truncateSync(all[0], 10);
    const flipped = readFileSync(all[1]);
    flipped[12] ^= 0x40; // a score's bits
    writeFileSync(all[1], flipped);
    const r = await runInProcess(['-g', COLOUR, '--cache', cache, '-v'], input(images));
    expect(r.code).toBe(0);
    expect(hitsAndMisses(r.stderr)).toEqual([38, 2]);
    expectRight(r.stdout);
    expect(readFileSync(all[0]).length).toBe(size);
    expect(decodeEntry(readFileSync(all[1]), keyOf(all[1]), 3)).toBeDefined();
  });

  it('an entry replaced by a link to /dev/zero or by a FIFO: refused at start (exit 2), a miss once running, never a hang', async () => {
    const cache = join(dir, 'planted');
    expect((await runInProcess(['-g', COLOUR, '--cache', cache], input(images))).code).toBe(0);
    const all = entries(cache);
    rmSync(all[0]);
    symlinkSync('/dev/zero', all[0]);
    const r = await runInProcess(['-g', COLOUR, '--cache', cache, '-v'], input(images));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`which is not a cache entry`);
    expect(r.stdout).toBe('');
    // Planted while a process runs: a miss.
    rmSync(all[0]);
    const running = ContentCache.open(cache, 100);
    symlinkSync('/dev/zero', all[0]);
    rmSync(all[1]);
    execFileSync('mkfifo', [all[1]]);
    expect(running.get(keyOf(all[0]), 3)).toBeUndefined();
    expect(running.get(keyOf(all[1]), 3)).toBeUndefined();
    expect(running.get(keyOf(all[2]), 3)).toBeDefined();
    rmSync(all[0]);
    rmSync(all[1]);
  });

  it('two processes filling one folder at once both answer right and leave whole entries only', async () => {
    const cache = join(dir, 'shared');
    const run = (paths: string[]) =>
      new Promise<{ code: number | null; stdout: string }>((resolve) => {
        const child: ChildProcess = spawn(process.execPath, [BIN, '-g', COLOUR, '--cache', cache, '-q'], { cwd: ROOT });
        let stdout = '';
        child.stdout!.setEncoding('utf8').on('data', (d) => (stdout += d));
        child.on('close', (code) => resolve({ code, stdout }));
        child.stdin!.end(input(paths));
      });
    const reversed = [...images].reverse();
    const [a, b] = await Promise.all([run(images), run(reversed)]);
    expect([a.code, b.code]).toEqual([0, 0]);
    expectRight(a.stdout);
    expectRight(b.stdout, reversed);
    expect(entries(cache)).toHaveLength(40);
    expect(readdirSync(cache).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
    for (const e of entries(cache)) expect(decodeEntry(readFileSync(e), keyOf(e), 3)).toBeDefined();
    const third = await runInProcess(['-g', COLOUR, '--cache', cache, '-v'], input(images));
    expect(hitsAndMisses(third.stderr)).toEqual([40, 0]);
  });

  it('--max-file-size holds with --cache too: the cache reads the file for its key', async () => {
    const r = await runInProcess(['-g', COLOUR, '--cache', join(dir, 'limited'), '--max-file-size', '10'], input(images.slice(0, 1)));
    expect(r.code).toBe(1);
    expect(jsonLines(r.stdout)[0].error).toMatch(/^file of \d+ bytes is over the limit of 10 \(--max-file-size\)$/);
  });

  it('--cache-entries bounds the folder: a run ends with at most that many entries', async () => {
    const cache = join(dir, 'bounded');
    const r = await runInProcess(['-g', COLOUR, '--cache', cache, '--cache-entries', '10'], input(images));
    expect(r.code).toBe(0);
    expectRight(r.stdout);
    expect(entries(cache).length).toBeGreaterThan(0);
    expect(entries(cache).length).toBeLessThanOrEqual(10);
  });

  it('a folder that cannot be a cache, or --cache with --remote, is a usage error', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, '');
    const r = await runInProcess(['-g', COLOUR, '--cache', join(file, 'sub')], input(images.slice(0, 1)));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--cache .*a-file\/sub: cannot use as a cache folder \(ENOTDIR\)/);
    // /proc says ENOENT under a parent that exists: Node's recursive mkdir used to spin for ever.
    const proc = await runInProcess(['-g', COLOUR, '--cache', '/proc/no-such/cache'], input(images.slice(0, 1)));
    expect(proc.code).toBe(2);
    expect(proc.stderr).toMatch(/--cache \/proc\/no-such\/cache: cannot use as a cache folder \(ENOENT\)/);
    const remote = await runInProcess(['-r', 'http://127.0.0.1:9', '--cache', join(dir, 'c')], '');
    expect(remote.code).toBe(2);
    expect(remote.stderr).toMatch(/--cache needs the model here/);
  });
});

describe('classify serve --cache', () => {
  it('answers a repeated upload from the cache', async () => {
    const cache = join(dir, 'serve');
    const server = await startServer(['--cache', cache]);
    try {
      const post = async (query = '') => {
        const res = await fetch(`${server.url}/${query}`, { method: 'POST', body: readFileSync(join(FIX, 'images', 'red.jpg')), headers: { 'Content-Type': 'image/jpeg' } });
        return (await res.json()) as { predictions: { label: string; score: number }[] };
      };
      const first = await post();
      expect(first.predictions[0].label).toBe('red');
      const [entry] = entries(cache);
      expect(entries(cache)).toHaveLength(1);
      writeFileSync(entry, encodeEntry(keyOf(entry), Float32Array.from([0.2, 0.7, 0.1])));
      expect((await post('?top_k=1')).predictions).toEqual([{ label: 'green', score: 0.7 }]);
    } finally {
      await server.close();
    }
  });
});
