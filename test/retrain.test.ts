// classify retrain: the split, the folder rules, the trainer, the output model (loaded by the
// filter, swapped in by a running serve), the bottleneck store, --min-accuracy, and other
// runtimes (ONNX's checker, OpenCV) reading what retrain and convert write.
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { answer } from '../dist/classifier/ranking.js';
import { Classifier } from '../dist/classifier/classifier.js';
import { classifierSettings } from '../dist/settings.js';
import { convert } from '../dist/commands/convert.js';
import { type RetrainOptions, runRetrain } from '../dist/commands/retrain.js';
import { encodeModel, readMetadata } from '../dist/proto/onnx.js';
import { listImages, whichSet } from '../dist/retrain/split.js';
import { defaultBottleneckDir } from '../dist/retrain/store.js';
import { train } from '../dist/retrain/train.js';
import { COLOUR, FIX, ROOT, runCli, runInProcess, SHARED } from './helpers.js';
import { form, image, post, startServer } from './serve-helpers.js';

const PHOTOS = join(FIX, 'retrain', 'photos');
const tmp = mkdtempSync(join(tmpdir(), 'classify-retrain-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const BOTTLENECKS = join(tmp, 'bottlenecks');
const VERSIONS = join(tmp, 'models', 'colours');

const options = (overrides: Partial<RetrainOptions>): RetrainOptions => ({
  base: COLOUR,
  output: join(tmp, 'out'),
  bottleneckDir: BOTTLENECKS,
  testingPercentage: 10,
  validationPercentage: 10,
  howManyTrainingSteps: 200,
  learningRate: 0.01,
  seed: 0,
  printMisclassifiedTestImages: false,
  flipLeftRight: false,
  randomCrop: 0,
  randomScale: 0,
  randomBrightness: 0,
  distortedCopies: 4,
  format: 'onnx',
  decodeJobs: 1,
  threads: 1,
  quiet: true,
  verbose: true,
  ...overrides,
});

/** runRetrain in process, its stderr lines gathered. */
async function retrain(dir: string, overrides: Partial<RetrainOptions>): Promise<{ code: number; log: string }> {
  const lines: string[] = [];
  const code = await runRetrain(dir, options(overrides), { isTTY: false } as NodeJS.WriteStream, (l: string) => lines.push(l));
  return { code, log: lines.join('\n') };
}

const report = (dir: string) => JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8'));
const labelOf = (path: string) => path.slice(PHOTOS.length + 1).split('/')[0];

/** Every fixture photo classified with the model folder `graph`: how many get their own label. */
async function ownLabels(graph: string): Promise<{ version?: string; right: number; wrong: number }> {
  const c = await Classifier.load(classifierSettings(graph, { engine: { threads: 1, device: 'cpu' }, pipeline: { decodeJobs: 1 } }));
  let [right, wrong] = [0, 0];
  try {
    for (const img of listImages(PHOTOS, 10, 10).images.filter((i) => !i.path.endsWith('corrupt.jpg'))) {
      if (answer(await c.score({ path: img.path }), c.labels, { topK: 1, threshold: 0 })[0].label === labelOf(img.path)) right++;
      else wrong++;
    }
  } finally {
    await c.close();
  }
  return { version: c.info.version, right, wrong };
}

/** A copy of the fixture photos that a test may add to. */
function copyPhotos(name: string): string {
  const dir = join(tmp, name);
  cpSync(PHOTOS, dir, { recursive: true });
  return dir;
}

describe('the split and the folder', () => {
  it("is retrain.py's formula: SHA-1 of the name without _nohash_..., modulo 2^27, as a percentage", () => {
    const MAX = 2 ** 27 - 1;
    for (let i = 0; i < 300; i++) {
      const name = i % 3 === 0 ? `speaker${i}_nohash_${i % 7}.jpg` : `photo-${i}.JPG`;
      const hashed = BigInt('0x' + createHash('sha1').update(name.replace(/_nohash_.*$/, '')).digest('hex'));
      const pct = Number(hashed % BigInt(MAX + 1)) * (100.0 / MAX);
      const expected = pct < 30 ? 'validation' : pct < 50 ? 'testing' : 'training';
      expect(whichSet(join('some', 'folder', name), 30, 20)).toBe(expected);
    }
  });

  it('reads labels from folder names, images at any depth, _nohash_ names together; other files are left alone', () => {
    const { labels, images } = listImages(PHOTOS, 10, 10);
    expect(labels).toEqual(['blue', 'green', 'red', 'yellow']);
    const paths = images.map((i) => i.path);
    expect(paths.filter((p) => p.includes('/red/more/deeper/'))).toHaveLength(4);
    expect(images.filter((i) => labels[i.label] === 'red')).toHaveLength(12);
    expect(paths.some((p) => p.endsWith('notes.txt'))).toBe(false);
    for (const img of images) expect(labels[img.label]).toBe(labelOf(img.path));
    const leaves = images.filter((i) => basename(i.path).startsWith('leaf_nohash_'));
    expect(leaves).toHaveLength(4);
    expect(new Set(leaves.map((l) => l.set)).size).toBe(1);
  });

  it('a photo stays in its set when photos are added', () => {
    const dir = copyPhotos('growing');
    const before = new Map(listImages(dir, 10, 10).images.map((i) => [i.path, i.set]));
    for (let i = 0; i < 30; i++) copyFileSync(join(FIX, 'images', 'red.jpg'), join(dir, 'red', `added-${i}.jpg`));
    const after = listImages(dir, 10, 10).images;
    expect(after).toHaveLength(before.size + 30);
    for (const img of after) if (before.has(img.path)) expect(img.set).toBe(before.get(img.path));
  });

  it('bottlenecks go to $XDG_CACHE_HOME/classify/bottlenecks, else ~/.cache/classify/bottlenecks', () => {
    expect(defaultBottleneckDir({ XDG_CACHE_HOME: '/var/cache/me' })).toBe('/var/cache/me/classify/bottlenecks');
    // The XDG rule: a relative value is ignored.
    expect(defaultBottleneckDir({ XDG_CACHE_HOME: 'relative' })).toBe(join(homedir(), '.cache', 'classify', 'bottlenecks'));
    expect(defaultBottleneckDir({})).toBe(join(homedir(), '.cache', 'classify', 'bottlenecks'));
  });

  it('an empty label folder is an error naming it; so is a folder with one label', () => {
    expect(() => listImages(join(FIX, 'retrain', 'empty-label'), 10, 10)).toThrow(/empty-label\/green: label folder holds no images/);
    expect(() => listImages(join(FIX, 'retrain', 'one-label'), 10, 10)).toThrow(/one-label: only one label folder \(red\)/);
  });
});

describe('the trainer', () => {
  /** Three classes in 5 dimensions, each a cloud around its own centre. */
  function clouds(n: number) {
    const d = 5;
    const x = new Float32Array(n * d);
    const y = new Int32Array(n);
    let s = 7;
    const rnd = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff) - 0.5;
    for (let i = 0; i < n; i++) {
      y[i] = i % 3;
      for (let j = 0; j < d; j++) x[i * d + j] = (j === y[i] ? 3 : 0) + rnd() + 10 * j;
    }
    return { x, y, d, classes: 3 };
  }
  const rows = (n: number) => Array.from({ length: n }, (_, i) => i);
  const base = { steps: 60, learningRate: 0.05, l2: 1e-3, balanced: true, seed: 1 };

  it('L-BFGS separates separable classes; weights apply to raw features', () => {
    const data = clouds(90);
    const t = train(data, rows(90), [], base);
    let right = 0;
    for (let i = 0; i < 90; i++) {
      const logit = (k: number) => t.biases[k] + Array.from({ length: data.d }, (_, j) => data.x[i * data.d + j] * t.weights[j * 3 + k]).reduce((a, b) => a + b);
      if ([0, 1, 2].reduce((best, k) => (logit(k) > logit(best) ? k : best), 0) === data.y[i]) right++;
    }
    expect(right).toBe(90);
  });

  it('mini-batch Adam is deterministic for a seed, and another seed gives other weights', () => {
    const data = clouds(60);
    const run = (seed: number) => train(data, rows(50), [50, 51, 52, 53, 54, 55, 56, 57, 58, 59], { ...base, batchSize: 8, seed });
    expect(Array.from(run(3).weights)).toEqual(Array.from(run(3).weights));
    expect(Array.from(run(3).weights)).not.toEqual(Array.from(run(4).weights));
  });
});

// In order: the rerun and the serve tests start from the model folder and bottlenecks the first writes.
describe('classify retrain', () => {
  it('writes a model folder the filter loads as it is, leaving out the corrupt photo with one line', async () => {
    const out = join(VERSIONS, '1');
    const r = await retrain(PHOTOS, { output: out });
    expect(r.code).toBe(0);
    expect(r.log).toMatch(/bottleneck "mean_rgb" of \S+colour\/model\.onnx\n/);
    expect(r.log).toMatch(/bottlenecks: 3 features each, 48 computed, 0 from /);
    expect(r.log.match(/\(left out\)/g)).toHaveLength(1);
    expect(r.log).toMatch(/retrain\/photos\/blue\/corrupt\.jpg: not an image .*\(left out\)/);
    expect(r.log).toMatch(/final test accuracy [\d.]+% \(N=\d+\)/);
    expect(r.log).toMatch(/confusion matrix/);
    expect(readdirSync(out).sort()).toEqual(['labels.txt', 'model.onnx', 'report.json']);
    expect(readFileSync(join(out, 'labels.txt'), 'utf8')).toBe('blue\ngreen\nred\nyellow\n');
    const rep = report(out);
    const listed = listImages(PHOTOS, 10, 10).images;
    expect(rep.images).toMatchObject({ used: listed.length - 1, failed: 1, testing: listed.filter((i) => i.set === 'testing').length });
    expect(rep.bottlenecks).toEqual({ computed: listed.length - 1, cached: 0 });
    expect(rep.test.confusion.flat().reduce((a: number, b: number) => a + b, 0)).toBe(rep.test.n);
    expect(JSON.parse(readMetadata(join(out, 'model.onnx')).labels)).toEqual(['blue', 'green', 'red', 'yellow']);

    // Through the folder of versions, as the filter and serve see it.
    expect(await ownLabels(VERSIONS)).toEqual({ version: '1', right: listed.length - 1, wrong: 0 });
  });

  it('a TF.js graph model as the base: its weights read back from the shards', async () => {
    const out = join(tmp, 'from-tfjs');
    const r = await retrain(PHOTOS, { output: out, base: join(FIX, 'models', 'colour-tfjs') });
    expect(r.code).toBe(0);
    expect(r.log).toMatch(/bottleneck "mean" of \S+colour-tfjs\/model\.json\n/);
    expect(await ownLabels(out)).toMatchObject({ right: listImages(PHOTOS, 10, 10).images.length - 1, wrong: 0 });
  });

  it('a rerun computes only the bottlenecks of photos it has not seen', async () => {
    const dir = copyPhotos('rerun');
    for (const colour of ['red', 'green', 'blue']) copyFileSync(join(FIX, 'images', `${colour}.jpg`), join(dir, colour, `new-${colour}.jpg`));
    const out = join(tmp, 'rerun-model');
    const r = await retrain(dir, { output: out });
    expect(r.code).toBe(0);
    expect(report(out).bottlenecks).toEqual({ computed: 3, cached: report(join(VERSIONS, '1')).images.used });
    expect(r.log).toMatch(/bottleneck "mean_rgb" of \S+, cut as before \(/);
  });

  it('a base cut before is read back from the bottleneck folder, and cut anew when its copy there is damaged', async () => {
    const graphs = join(BOTTLENECKS, 'graphs');
    const kept = new Map(readdirSync(graphs).map((f) => [f, readFileSync(join(graphs, f))]));
    const again = await retrain(PHOTOS, { output: join(tmp, 'kept-graph') });
    expect(again.log).toMatch(/cut as before/);
    // One byte of a weight changed: the checksum refuses it, the base is cut anew and kept again.
    for (const [f, bytes] of kept) {
      const damaged = Buffer.from(bytes);
      damaged[damaged.length - 100] ^= 1;
      writeFileSync(join(graphs, f), damaged);
    }
    const anew = await retrain(PHOTOS, { output: join(tmp, 'recut-graph') });
    expect(anew.log).not.toMatch(/cut as before/);
    expect(report(join(tmp, 'recut-graph')).bottlenecks.computed).toBe(0);
    expect([...kept].filter(([f, bytes]) => readFileSync(join(graphs, f)).equals(bytes))).toHaveLength(1);
    expect(readFileSync(join(tmp, 'recut-graph', 'model.onnx'))).toEqual(readFileSync(join(tmp, 'kept-graph', 'model.onnx')));
  });

  it('a base is hashed again when its stat changes: other bytes at the same path are cut anew', async () => {
    const base = join(tmp, 'changing-base');
    cpSync(COLOUR, base, { recursive: true });
    const hourAgo = Date.now() / 1000 - 3600;
    utimesSync(join(base, 'model.onnx'), hourAgo, hourAgo); // settled: its stat vouches for it
    const store = join(tmp, 'changing-base-store');
    const run = async (name: string) => (await retrain(PHOTOS, { output: join(tmp, name), base, bottleneckDir: store })).log;
    expect(await run('changing-base-1')).not.toMatch(/cut as before/);
    expect(await run('changing-base-2')).toMatch(/cut as before/);
    copyFileSync(join(FIX, 'models', 'colour-batch1', 'model.onnx'), join(base, 'model.onnx'));
    utimesSync(join(base, 'model.onnx'), hourAgo, hourAgo);
    expect(await run('changing-base-3')).not.toMatch(/cut as before/);
    expect(await run('changing-base-4')).toMatch(/cut as before/);
  });

  it('a rerun that finds every bottleneck loads no native code (no engine, no decode threads, no libvips), nor the TensorFlow translator or chalk, and writes the same model', async () => {
    const dir = copyPhotos('all-seen');
    rmSync(join(dir, 'blue', 'corrupt.jpg')); // a photo that fails is looked at again each run
    // Every native library a process loads, on its stderr: ONNX Runtime, sharp's libvips, the JPEG addon.
    const hook = join(tmp, 'dlopen-hook.cjs');
    writeFileSync(hook, "const d = process.dlopen; process.dlopen = function (m, f, ...r) { process.stderr.write('dlopen ' + f + '\\n'); return d.call(this, m, f, ...r); };\n");
    // And every module imported, by its URL.
    const resolveHook = `export async function resolve(s, c, next) { const r = await next(s, c); process._rawDebug('import ' + r.url); return r; }`;
    const imports = join(tmp, 'import-hook.mjs');
    writeFileSync(imports, `import { register } from 'node:module';\nregister(${JSON.stringify('data:text/javascript,' + encodeURIComponent(resolveHook))});\n`);
    const run = (out: string) =>
      runCli(['retrain', dir, '--base', join(FIX, 'models', 'colour-frozen'), '-o', join(tmp, out), '--bottleneck-dir', join(tmp, 'all-seen-store'), '-v'], '', {
        env: { ...process.env, NO_COLOR: '1', NODE_OPTIONS: `--require ${hook} --import ${imports}` },
      });
    const translator = /^import \S+\/dist\/(convert|tensorflow)\//m;
    const first = await run('all-seen-1');
    expect(first.code).toBe(0);
    expect(first.stderr).toMatch(/^dlopen .*onnxruntime/m);
    expect(first.stderr).toMatch(translator);
    const again = await run('all-seen-2');
    expect(again.code).toBe(0);
    expect(again.stderr).not.toMatch(/^dlopen/m);
    expect(again.stderr).toMatch(/^import \S+\/dist\/retrain\/graph\.js$/m);
    expect(again.stderr).not.toMatch(translator);
    expect(again.stderr).not.toMatch(/^import \S+\/chalk\//m); // no progress line on a pipe
    expect(again.stderr).not.toMatch(/preprocessing /); // said when the engine loads
    expect(report(join(tmp, 'all-seen-2')).bottlenecks).toEqual({ computed: 0, cached: report(join(tmp, 'all-seen-1')).images.used });
    expect(readFileSync(join(tmp, 'all-seen-2', 'model.onnx'))).toEqual(readFileSync(join(tmp, 'all-seen-1', 'model.onnx')));
  });

  it('a run keeps what it computed in one pack, which a rerun reads whole; a damaged pack is computed again', async () => {
    const dir = copyPhotos('packed');
    rmSync(join(dir, 'blue', 'corrupt.jpg'));
    const store = join(tmp, 'packed-store');
    const run = async (name: string) => {
      expect((await retrain(dir, { output: join(tmp, name), bottleneckDir: store })).code).toBe(0);
      return report(join(tmp, name)).bottlenecks;
    };
    const used = (await run('packed-1')).computed;
    const [folder] = readdirSync(join(store, 'packs')).map((fp) => join(store, 'packs', fp));
    const packs = () => readdirSync(folder);
    expect(packs()).toHaveLength(1);
    expect(readdirSync(store).sort()).toEqual(['graphs', 'packs', 'seen']); // no entry a file
    expect(await run('packed-2')).toEqual({ computed: 0, cached: used });
    expect(packs()).toHaveLength(1); // nothing new to keep
    // One byte of a feature changed: the checksum refuses the pack, its photos are computed again.
    const file = join(folder, packs()[0]);
    const damaged = readFileSync(file);
    damaged[damaged.length - 40] ^= 1;
    writeFileSync(file, damaged);
    expect(await run('packed-3')).toEqual({ computed: used, cached: 0 });
    expect(packs()).toHaveLength(2);
    expect(readFileSync(join(tmp, 'packed-3', 'model.onnx'))).toEqual(readFileSync(join(tmp, 'packed-1', 'model.onnx')));
  });

  it('a rerun reads only the photos whose stat changed: one touched, one rewritten at the same size and mtime; a damaged index is ignored', async () => {
    const dir = copyPhotos('stat-index');
    rmSync(join(dir, 'blue', 'corrupt.jpg'));
    const photos = listImages(dir, 10, 10).images.map((i) => i.path);
    // Photos last written an hour ago: one written within the last 2 s is read again by the next run.
    const hourAgo = Date.now() / 1000 - 3600;
    for (const p of photos) utimesSync(p, hourAgo, hourAgo);
    const store = join(tmp, 'stat-index-store');
    const run = async (name: string) => {
      const r = await retrain(dir, { output: join(tmp, name), bottleneckDir: store });
      expect(r.code).toBe(0);
      const [read, unchanged] = /photos: (\d+) read, (\d+) unchanged/.exec(r.log)!.slice(1).map(Number);
      return { read, unchanged, computed: report(join(tmp, name)).bottlenecks.computed };
    };
    const n = photos.length;
    // The first photo the store lacks is read twice: to look it up, then to compute it.
    expect(await run('stat-1')).toEqual({ read: n + 1, unchanged: 0, computed: n });
    expect(await run('stat-2')).toEqual({ read: 0, unchanged: n, computed: 0 });
    expect(readFileSync(join(tmp, 'stat-2', 'model.onnx'))).toEqual(readFileSync(join(tmp, 'stat-1', 'model.onnx')));

    // The same bytes and size, another mtime: read again, found in the store.
    utimesSync(photos[0], hourAgo, hourAgo + 1);
    expect(await run('stat-3')).toEqual({ read: 1, unchanged: n - 1, computed: 0 });
    expect(await run('stat-4')).toEqual({ read: 0, unchanged: n, computed: 0 });
    // Other bytes (a quantisation step of a JPEG table), the same size and mtime: the ctime tells.
    const bytes = readFileSync(photos[1]);
    const before = statSync(photos[1]);
    bytes[7] ^= 1; // after the DQT marker, its length and the table's id
    writeFileSync(photos[1], bytes);
    utimesSync(photos[1], before.atime, before.mtime);
    expect(statSync(photos[1])).toMatchObject({ size: before.size, mtimeMs: before.mtimeMs });
    expect(await run('stat-5')).toEqual({ read: 2, unchanged: n - 1, computed: 1 });

    // One byte of the index changed: its checksum refuses it, every photo is read, nothing else differs.
    const [fingerprint] = readdirSync(join(store, 'seen'));
    const [index] = readdirSync(join(store, 'seen', fingerprint)).map((f) => join(store, 'seen', fingerprint, f));
    const damaged = readFileSync(index);
    damaged[10] ^= 1;
    writeFileSync(index, damaged);
    expect(await run('stat-6')).toEqual({ read: n, unchanged: 0, computed: 0 });
    expect(readFileSync(join(tmp, 'stat-6', 'model.onnx'))).toEqual(readFileSync(join(tmp, 'stat-5', 'model.onnx')));
    expect(await run('stat-7')).toEqual({ read: 0, unchanged: n, computed: 0 });
  });

  it('distortions: copies of the training photos, new each run, the same for the same --seed', async () => {
    const distortions = { flipLeftRight: true, randomCrop: 10, randomScale: 20, randomBrightness: 30, distortedCopies: 2 };
    const run = async (name: string, seed: number) => {
      const out = join(tmp, name);
      expect((await retrain(PHOTOS, { output: out, seed, ...distortions })).code).toBe(0);
      return { onnx: readFileSync(join(out, 'model.onnx')), report: report(out) };
    };
    const [a, again, other] = [await run('distorted-a', 5), await run('distorted-b', 5), await run('distorted-c', 6)];
    expect(a.report.images.distortedCopies).toBe(2 * a.report.images.training);
    expect(a.report.bottlenecks.computed).toBe(0); // the photos themselves come from the store
    expect(a.onnx.equals(again.onnx)).toBe(true);
    expect(a.onnx.equals(other.onnx)).toBe(false);
    expect(await ownLabels(join(tmp, 'distorted-a'))).toMatchObject({ wrong: 0 });
  });

  it('--min-accuracy: below it, exit 1 and OUT_DIR is not written', async () => {
    // Two labels holding the same photos: no layer can tell them apart.
    const dir = join(tmp, 'alike');
    for (const label of ['a', 'b']) {
      mkdirSync(join(dir, label), { recursive: true });
      for (const f of readdirSync(join(PHOTOS, 'red'))) if (f.endsWith('.jpg')) copyFileSync(join(PHOTOS, 'red', f), join(dir, label, `${label}-${f}`));
      for (const f of readdirSync(join(PHOTOS, 'yellow'))) copyFileSync(join(PHOTOS, 'yellow', f), join(dir, label, `${label}-${f}`));
    }
    const out = join(tmp, 'not-good-enough');
    const r = await retrain(dir, { output: out, minAccuracy: 0.9, testingPercentage: 40, printMisclassifiedTestImages: true });
    expect(r.code).toBe(1);
    // Every wrong test answer listed, and only those: N minus the right ones.
    const [, accuracy, n] = /final test accuracy ([\d.]+)% \(N=(\d+)\)/.exec(r.log)!.map(Number);
    const listed = r.log.match(/^misclassified: \S+\/(a\/a|b\/b)-\S+\.jpg is (a, predicted b|b, predicted a)$/gm) ?? [];
    expect(listed.length).toBe(Math.round(n * (1 - accuracy / 100)));
    expect(listed.length).toBeGreaterThan(0);
    expect(r.log).toMatch(/test accuracy 0\.\d+ is below --min-accuracy 0\.9: \S+not-good-enough not written/);
    expect(existsSync(out)).toBe(false);
  });

  it('usage errors exit 2 before any work: an empty label folder, an OUT_DIR that exists, no --base', async () => {
    const out = join(tmp, 'usage');
    const empty = await runInProcess(['retrain', join(FIX, 'retrain', 'empty-label'), '--base', COLOUR, '-o', out]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/^classify: \S*empty-label\/green: label folder holds no images/);
    const taken = join(tmp, 'taken');
    mkdirSync(taken);
    writeFileSync(join(taken, 'model.onnx'), 'a model already here');
    const exists = await runInProcess(['retrain', PHOTOS, '--base', COLOUR, '-o', taken]);
    expect(exists.code).toBe(2);
    expect(exists.stderr).toMatch(/taken: already exists/);
    expect(readFileSync(join(taken, 'model.onnx'), 'utf8')).toBe('a model already here');
    const noBase = await runInProcess(['retrain', PHOTOS, '-o', out]);
    expect(noBase.code).toBe(2);
    expect(noBase.stderr).toMatch(/--base/);
    await expect(retrain(PHOTOS, { output: out, format: 'pb' })).rejects.toThrow(/--format pb .* takes a frozen graph/);
    await expect(retrain(PHOTOS, { output: out, testingPercentage: 50, validationPercentage: 50 })).rejects.toThrow(/leave no images to train on/);
    await expect(retrain(PHOTOS, { output: out, bottleneckNode: 'nope' })).rejects.toThrow(/no node output named "nope" \(--bottleneck-node\)/);
    const frozen = join(FIX, 'models', 'colour-frozen');
    await expect(retrain(PHOTOS, { output: out, base: frozen, bottleneckNode: 'nope:0' })).rejects.toThrow(/no node named "nope:0" \(--bottleneck-node\)/);
    expect(existsSync(out)).toBe(false);
  });

  it('a running serve on the folder of versions swaps in the version retrain adds', async () => {
    const server = await startServer(['--watch-interval', '100'], VERSIONS);
    try {
      expect((await (await fetch(`${server.url}/readyz`)).json()).version).toBe('1');
      expect((await retrain(PHOTOS, { output: join(VERSIONS, '2') })).code).toBe(0);
      await expect.poll(() => server.stderr(), { timeout: 10_000 }).toMatch(/now serving version 2/);
      const r = await post(`${server.url}/?top_k=1`, form(['green.jpg', image('green.jpg')]));
      expect(r.body).toMatchObject({ version: '2', predictions: [{ label: 'green' }] });
    } finally {
      await server.close();
    }
  });
});

/** A Python with Debian's python3-onnx and python3-opencv, or undefined (the tests say why they skip). */
const python = ['python3', '/usr/bin/python3'].find(
  (p) => spawnSync(p, ['-c', 'import importlib.util as u, sys; sys.exit(not (u.find_spec("onnx") and u.find_spec("cv2")))'], { stdio: 'ignore' }).status === 0,
);
if (!python) console.warn('skipping the ONNX checker and OpenCV cross-runs: no python3 with onnx and cv2 (Debian: python3-onnx python3-opencv)');
const shared = existsSync(SHARED);
if (!shared) console.warn(`skipping the cross-runs on shared models: ${SHARED} is absent`);

/** ONNX's checker and OpenCV on `dir`'s model; OpenCV's top-1 on the inputs classify prepares,
 * against classify's own. */
async function crossRun(dir: string, images: string[], check = true) {
  const c = await Classifier.load(classifierSettings(dir, { engine: { threads: 1, device: 'cpu' }, pipeline: { decodeJobs: 1 } }));
  const labels = readFileSync(c.info.labelsFile, 'utf8').trim().split('\n');
  const inputs: string[] = [];
  const ours: number[] = [];
  try {
    for (const [i, img] of images.entries()) {
      const input = join(tmp, `${basename(dir)}-${i}.f32`);
      writeFileSync(input, await c.preprocessFile(img));
      inputs.push(input);
      ours.push(labels.indexOf(answer(await c.score({ path: img }), c.labels, { topK: 1, threshold: 0 })[0].label));
    }
  } finally {
    await c.close();
  }
  if (!check) return { ours };
  return { ...(await onnxCheck([c.info.model, ...inputs])), ours };
}

/** scripts/onnx-check.py, one process for the file's checks (importing OpenCV and ONNX is most
 * of a check's time), answering a line for each line asked, in order. */
let checker: { child: ChildProcessWithoutNullStreams; answers: ((line: string) => void)[] } | undefined;
afterAll(() => checker?.child.stdin.end());

function onnxCheck(args: string[]): Promise<{ checker: string; opencv: string; top1: number[] }> {
  if (!checker) {
    const child = spawn(python!, [join(ROOT, 'scripts', 'onnx-check.py'), '--lines']);
    const answers: ((line: string) => void)[] = [];
    child.stderr.pipe(process.stderr);
    createInterface({ input: child.stdout }).on('line', (line) => answers.shift()?.(line));
    checker = { child, answers };
  }
  const { child, answers } = checker;
  return new Promise((resolve) => {
    answers.push((line) => resolve(JSON.parse(line)));
    child.stdin.write(JSON.stringify(args) + '\n');
  });
}

describe.skipIf(!python)('other runtimes read the ONNX files classify writes', () => {
  const photos = ['red/red-0.jpg', 'green/leaf_nohash_1.jpg', 'blue/blue-3.jpg', 'yellow/yellow-5.jpg'].map((p) => join(PHOTOS, p));

  it('a retrained model: passes the checker and gives OpenCV the same top-1', async () => {
    const out = join(tmp, 'cross-colour');
    expect((await retrain(PHOTOS, { output: out })).code).toBe(0);
    const r = await crossRun(out, photos);
    expect(r).toMatchObject({ checker: 'ok', opencv: 'ok' });
    expect(r.top1).toEqual(r.ours);
  });

  it('an ONNX base with Clip (as ReLU6 is exported): rewritten where OpenCV 4.6 cannot read it, same answers', async () => {
    const base = join(tmp, 'clip-base');
    mkdirSync(base);
    const model = encodeModel({
      name: 'clipped_colour',
      nodes: [
        { op: 'GlobalAveragePool', inputs: ['image'], outputs: ['pooled'] },
        { op: 'Flatten', inputs: ['pooled'], outputs: ['flat'], attrs: { axis: 1 } },
        { op: 'Clip', inputs: ['flat', 'lo', 'hi'], outputs: ['clipped'] },
        { op: 'MatMul', inputs: ['clipped', 'W'], outputs: ['logits'] },
        { op: 'Softmax', inputs: ['logits'], outputs: ['scores'], attrs: { axis: -1 } },
      ],
      initializers: [
        { name: 'lo', dims: [], data: Float32Array.of(0.2) },
        { name: 'hi', dims: [], data: Float32Array.of(0.6) },
        { name: 'W', dims: [3, 2], data: new Float32Array(6).fill(1) },
      ],
      inputs: [{ name: 'image', shape: ['N', 3, 16, 16] }],
      outputs: [{ name: 'scores', shape: ['N', 2] }],
      metadata: { mean: '0', std: '255' },
    });
    writeFileSync(join(base, 'model.onnx'), model);
    const out = join(tmp, 'cross-clip');
    const r = await retrain(PHOTOS, { output: out, base });
    expect(r.code).toBe(0);
    expect(r.log).toMatch(/bottleneck "clipped"/);
    const x = await crossRun(out, photos);
    expect(x).toMatchObject({ checker: 'ok', opencv: 'ok' });
    expect(x.top1).toEqual(x.ours);
    expect(x.ours).toEqual([2, 1, 0, 3]);
  });

  it.skipIf(!shared)('retrained on the frozen ImageNet MobileNet (ReLU6, its own preprocessing), with --format pb', async () => {
    // Two labels are enough here, and half the time of four.
    const two = join(tmp, 'two-labels');
    for (const label of ['red', 'blue']) cpSync(join(PHOTOS, label), join(two, label), { recursive: true });
    const out = join(tmp, 'cross-mobilenet');
    const r = await retrain(two, { output: out, base: join(SHARED, 'models', 'mobilenet_v1_0.25_128'), format: 'pb' });
    expect(r.code).toBe(0);
    expect(r.log).toMatch(/bottleneck "MobilenetV1\/Logits\/AvgPool_1a\/AvgPool" of \S+\n[^]*bottlenecks: 256 features each/);
    expect(readdirSync(out).sort()).toEqual(['labels.txt', 'model.onnx', 'output_graph.pb', 'output_labels.txt', 'report.json']);
    const x = await crossRun(out, photos);
    expect(x).toMatchObject({ checker: 'ok', opencv: 'ok' });
    expect(x.top1).toEqual(x.ours);
    // retrain.py's own output, run as a frozen graph, agrees with the ONNX model.
    const pb = join(tmp, 'cross-mobilenet-pb');
    mkdirSync(pb);
    for (const f of ['output_graph.pb', 'output_labels.txt']) copyFileSync(join(out, f), join(pb, f));
    expect((await crossRun(pb, photos, false)).ours).toEqual(x.ours);
  });

  it.skipIf(!shared)('a converted retrain.py graph: labels beside it and in its metadata, checker and OpenCV agree', async () => {
    const dir = join(tmp, 'converted');
    mkdirSync(dir);
    convert(join(SHARED, 'models', 'retrained_3class'), join(dir, 'model.onnx'), { verbose: false }, () => undefined);
    const labels = readFileSync(join(SHARED, 'models', 'retrained_3class', 'output_labels.txt'), 'utf8').trim().split('\n');
    expect(readFileSync(join(dir, 'labels.txt'), 'utf8').trim().split('\n')).toEqual(labels);
    expect(JSON.parse(readMetadata(join(dir, 'model.onnx')).labels)).toEqual(labels);
    const flowers = readdirSync(join(SHARED, 'images', 'flowers')).filter((f) => f.endsWith('.jpg')).map((f) => join(SHARED, 'images', 'flowers', f));
    const r = await crossRun(dir, flowers);
    expect(r).toMatchObject({ checker: 'ok', opencv: 'ok' });
    expect(r.top1).toEqual(r.ours);
    // Into a folder whose labels.txt says otherwise: refused, nothing overwritten.
    writeFileSync(join(dir, 'labels.txt'), 'other\n');
    expect(() => convert(join(SHARED, 'models', 'retrained_3class'), join(dir, 'again.onnx'), { verbose: false }, () => undefined)).toThrow(/already holds other labels/);
    expect(existsSync(join(dir, 'again.onnx'))).toBe(false);
  });
});
