#!/usr/bin/env node
// npm run bench: throughput of classify against its ceilings and the baselines it replaces, on
// the real models and photos in ../shared/assets. Every ratio compares figures from this run.
//   npm run bench                 all models, all measurements
//   npm run bench -- --quick      fewer images, no serve load test
//   npm run bench -- --rss 100000 also the long-input memory check, with that many lines
//   npm run bench -- --model v1,onnx   only models whose name contains one of these
//   npm run bench -- --device cpu,auto each model on each device, with the ratio between them
//   npm run bench -- --images N   paths per model (default 400, 1200 for the small graphs; 150 and 400 with --quick)
//   npm run bench -- --shared DIR the shared assets folder when it is not ../shared/assets
//   npm run bench -- --only SECTION  one section: ceiling (issue 23: the hardware ceiling, classify's share of it, its stages), models (each model against its ceilings, trickle), imagesets (image sets vs OpenCV, stages, threads), preprocessing, resume, labelimage (the README's label_image loop), retrain (bench/retrain.mjs)
//   npm run bench -- --resume-paths N paths for that section (default 10000, 2000 with --quick)
//   npm run bench -- --preprocessing-only  only the cost of each resize mode (--images N passes)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadEngine } from '../dist/backends/load.js';
import { decodeToRgb } from '../dist/image/decode.js';
import { DecodePool } from '../dist/image/decode-pool.js';
import { ImageSlots } from '../dist/image/slots.js';
import { TensorPacker } from '../dist/image/tensor.js';
import { resolveModel } from '../dist/model/locate.js';
import { choosePreprocessing } from '../dist/model/preprocessing.js';
import { ceilingSets, reportCeiling } from './ceiling.mjs';
import { cameraPhotos, imageSets, openCvLoop, reportImageSets, runWithPaths, stageCosts } from './throughput.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = join(ROOT, 'bin', 'classify.js');
const args = process.argv.slice(2);
const flag = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const SHARED = flag('--shared') ?? join(ROOT, '..', 'shared', 'assets');
const quick = args.includes('--quick');
const rssLines = args.includes('--rss') ? Number(flag('--rss') ?? 100000) : 0;
const only = flag('--model')?.split(',');
const devices = (flag('--device') ?? 'cpu').split(',');
const images = flag('--images') ? Number(flag('--images')) : undefined;
const onlySection = flag('--only');
const resumePaths = Number(flag('--resume-paths') ?? (quick ? 2000 : 10000));
const preprocessingOnly = args.includes('--preprocessing-only');

if (!existsSync(SHARED)) {
  console.error(`bench: ${SHARED} is absent; the benchmark runs on the shared models and photos`);
  process.exit(2);
}

// ---- inputs: the real photos repeated, plus large synthetic JPEGs ---------------------------
const work = mkdtempSync(join(tmpdir(), 'classify-bench-'));
const photos = ['flower1.jpg', 'flower2.jpg', 'flower3.jpg', 'flower4.jpg', 'flower5.jpg'].map((f) => join(SHARED, 'images', 'flowers', f));
const large = [];
for (let i = 0; i < 4; i++) {
  const file = join(work, `large${i}.jpg`);
  // A photo scaled up to 1600x1200 with noise: JPEG-sized like a camera's, decoded by shrink-on-load.
  const noise = Buffer.alloc(400 * 300 * 3);
  for (let j = 0; j < noise.length; j++) noise[j] = (j * 2654435761 + i * 97) % 251;
  const base = await sharp(photos[i]).resize(1600, 1200, { fit: 'fill' }).toBuffer();
  const grain = await sharp(noise, { raw: { width: 400, height: 300, channels: 3 } }).resize(1600, 1200).png().toBuffer();
  await sharp(base).composite([{ input: grain, blend: 'soft-light' }]).jpeg({ quality: 90 }).toFile(file);
  large.push(file);
}
const imageSet = (n) => Array.from({ length: n }, (_, i) => (i % 10 === 9 ? large[i % large.length] : photos[i % photos.length]));

// The small graphs classify 300 images/s or more here: they get more paths, so that their time is
// not mostly the start-up subtracted from it.
const MODELS = [
  { name: 'mobilenetv2_224_random_onnx', graph: join(SHARED, 'models', 'mobilenetv2_224_random_onnx'), n: quick ? 150 : 400 },
  { name: 'mobilenet_v1_0.25_128 (frozen)', graph: join(SHARED, 'models', 'mobilenet_v1_0.25_128', 'frozen_graph.pb'), n: quick ? 400 : 1200 },
  { name: 'retrained_3class (frozen)', graph: join(SHARED, 'models', 'retrained_3class'), n: quick ? 400 : 1200 },
  { name: 'mobilenetv2_224_random_frozen', graph: join(SHARED, 'models', 'mobilenetv2_224_random_frozen'), n: quick ? 150 : 400 },
  // The same frozen graph on TensorFlow.js, for the engine ratio.
  { name: 'mobilenetv2_224_random_frozen', graph: join(SHARED, 'models', 'mobilenetv2_224_random_frozen'), n: quick ? 40 : 120, backend: 'tfjs' },
]
  .filter((m) => !preprocessingOnly && (!only || only.some((o) => m.name.includes(o))))
  .map((m) => ({ ...m, n: images ? (m.backend ? Math.ceil(images / 4) : images) : m.n }))
  // TensorFlow.js has no device choice here: it runs once, on its own runtime.
  .flatMap((m) => (m.backend ? [{ ...m, device: 'cpu' }] : devices.map((device) => ({ ...m, device }))));

// V8 grows its young generation to 16 MB semi-spaces as objects survive, a step of about 20 MB
// of RSS somewhere in the first 20,000 lines; capped at 4 MB it stays at its size at 1,000 lines.
const YOUNG_GEN_CAP = '--max-semi-space-size=4';

// ---- helpers ----------------------------------------------------------------------------------
const now = () => performance.now();

/** Runs the CLI over `paths`: wall seconds and lines written. */
async function runCli(graph, paths, extra) {
  const r = await runWithPaths(process.execPath, [BIN, '-g', graph, '-q', '-k', '1', ...extra], paths);
  if (r.code !== 0 && r.code !== 1) throw new Error(`classify exited ${r.code}: ${r.err}`);
  return { seconds: r.seconds, lines: r.lines };
}

/** Read + decode + resize + pack alone, in the CLI's own decode threads (one per core) with a
 * deep queue, nothing else running: what decoding could give if inference were free. */
async function decodeCeiling(paths, engineSig, preprocessing) {
  const spec = { height: engineSig.height, width: engineSig.width, layout: engineSig.layout, inputType: engineSig.inputType, preprocessing, maxPixels: 1e8, maxFileSize: 1e9 };
  const threads = availableParallelism();
  const slots = new ImageSlots(16 * threads, engineSig.height * engineSig.width * 3, engineSig.inputType);
  const pool = new DecodePool(spec, slots, threads);
  try {
    await pool.warmUp([readFileSync(paths[0])]);
    const start = now();
    await Promise.all(
      paths.map(async (p) => {
        const slot = await slots.acquire();
        try {
          await pool.file(p, slot);
        } finally {
          slots.release(slot);
        }
      }),
    );
    return paths.length / ((now() - start) / 1000);
  } finally {
    await pool.close();
  }
}

async function inferenceCeiling(engine, n) {
  const sig = engine.signature;
  const per = sig.height * sig.width * 3;
  const results = {};
  for (const batch of [1, 8, 32]) {
    if (batch > sig.maxBatch) continue;
    const input = new Float32Array(batch * per).fill(0.1);
    await engine.run(input, batch); // warm
    const rounds = Math.max(2, Math.ceil(n / batch));
    const start = now();
    for (let r = 0; r < rounds; r++) await engine.run(input, batch);
    results[batch] = (rounds * batch) / ((now() - start) / 1000);
  }
  const best = Object.entries(results).sort((a, b) => b[1] - a[1])[0];
  return { perBatch: results, best: best[1], bestBatch: Number(best[0]) };
}

/** One batch of 1 run as a trickled path's batch runs, after the engine has sat idle for 100 ms:
 * median of 9. Back to back it runs faster (TensorFlow.js here: 58 to 75 ms against 63 to 85). */
async function loneBatchMs(engine) {
  const sig = engine.signature;
  const input = new Float32Array(sig.height * sig.width * 3).fill(0.1);
  const times = [];
  for (let i = 0; i < 9; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const start = now();
    await engine.run(input, 1);
    times.push(now() - start);
  }
  return times.sort((a, b) => a - b)[4];
}

/** One photo decoded on its own, as a trickled path is: median of 20. */
async function decodeOneMs(photo, sig, steps) {
  const times = [];
  for (let i = 0; i < 20; i++) {
    const start = now();
    await decodeToRgb(readFileSync(photo), { width: sig.width, height: sig.height, maxPixels: 1e8, steps });
    times.push(now() - start);
  }
  return times.sort((a, b) => a - b)[10];
}

/** The model loaded once, then each image read, decoded, run alone: no batching, no overlap. */
async function oneAtATime(engine, paths, sig, steps) {
  const packer = new TensorPacker(sig.height, sig.width, sig.layout, { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] });
  const input = new Float32Array(packer.imageSize);
  const start = now();
  for (const p of paths) {
    packer.writeFloat(await decodeToRgb(readFileSync(p), { width: sig.width, height: sig.height, maxPixels: 1e8, steps }), input, 0);
    await engine.run(input, 1);
  }
  return paths.length / ((now() - start) / 1000);
}

function processPerImage(graph, paths, extra) {
  const start = now();
  for (const p of paths) spawnSync(process.execPath, [BIN, '-g', graph, '-q', ...extra, p], { stdio: 'ignore' });
  return paths.length / ((now() - start) / 1000);
}

function openCvLoopFor(model, paths, sig) {
  if (!model.graph.endsWith('.pb') && !existsSync(join(model.graph, 'output_graph.pb'))) return { skipped: 'not a TensorFlow graph' };
  const pb = model.graph.endsWith('.pb') ? model.graph : join(model.graph, 'output_graph.pb');
  return openCvLoop(pb, paths, sig.height, sig.width);
}

/** Time from writing one path (model already loaded) to its line arriving: the first path, and
 * the median of the six after it, each sent 100 ms after the previous answer. */
function trickleLatency(graph, photo, maxDelay, extra) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, '-g', graph, '-v', '-k', '1', '--max-delay', String(maxDelay), ...extra]);
    let err = '';
    let sent = 0;
    const times = [];
    const send = () => {
      sent = now();
      child.stdin.write(photo + '\n');
    };
    child.stderr.on('data', (d) => {
      err += d;
      if (!sent && /batch size/.test(err)) setTimeout(send, 200);
    });
    child.stdout.on('data', () => {
      times.push(now() - sent);
      if (times.length < 7) setTimeout(send, 100);
      else child.stdin.end();
    });
    child.on('close', () =>
      times.length === 7 ? resolve({ first: times[0], median: times.slice(1).sort((a, b) => a - b)[3] }) : reject(new Error(err)),
    );
  });
}

// ---- run --------------------------------------------------------------------------------------
const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
console.log(`classify bench on: ${machine}\n`);
const results = { machine, date: new Date().toISOString(), models: [] };
const fmt = (x) => (x === undefined ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(1));

for (const model of onlySection && onlySection !== 'models' ? [] : MODELS) {
  const paths = imageSet(model.n);
  const resolved = resolveModel(model.graph, undefined, model.backend ?? 'auto');
  const engine = await loadEngine({ backend: resolved.backend, format: resolved.format, runtime: resolved.runtime, file: resolved.file, options: { threads: 0, device: model.device } });
  const cliArgs = model.backend ? ['--backend', model.backend] : ['--device', model.device];
  const sig = engine.signature;
  // The preprocessing the CLI uses for this model by default, so that the ceilings compare.
  const { preprocessing: steps } = choosePreprocessing(resolved, engine.normalisation);
  const r = { model: model.name, engine: engine.name, images: paths.length, resize: steps.resize };
  r.decode = await decodeCeiling(paths, sig, steps);
  const inf = await inferenceCeiling(engine, Math.min(paths.length, 200));
  r.inference = inf.best;
  r.inferenceBatch = inf.bestBatch;
  r.inferencePerBatch = inf.perBatch;
  r.combined = 1 / (1 / r.decode + 1 / r.inference);
  r.oneAtATime = await oneAtATime(engine, paths.slice(0, Math.min(60, paths.length)), sig, steps);
  r.loneBatchMs = await loneBatchMs(engine);
  await engine.dispose();

  const empty = await runCli(model.graph, [], cliArgs);
  const full = await runCli(model.graph, paths, cliArgs);
  r.startup = empty.seconds;
  r.endToEnd = paths.length / (full.seconds - empty.seconds);
  r.endToEndWithStartup = paths.length / full.seconds;
  r.processPerImage = processPerImage(model.graph, photos.slice(0, quick ? 3 : 5), cliArgs);
  const cv = openCvLoopFor(model, paths.slice(0, 100), sig);
  r.opencv = cv.ips;
  r.opencvNote = cv.skipped;
  // A process's first result is one sample: take the median over three processes.
  const trickles = [];
  for (let i = 0; i < 3; i++) trickles.push(await trickleLatency(model.graph, photos[1], 10, cliArgs));
  const mid = (xs) => xs.sort((a, b) => a - b)[1];
  r.trickleMs = mid(trickles.map((t) => t.first));
  r.trickleMedianMs = mid(trickles.map((t) => t.median));
  r.inferenceMsBatch = 1000 / r.inferencePerBatch[1];
  r.decodeMsOne = await decodeOneMs(photos[1], sig, steps);
  results.models.push(r);
  console.log(
    `${r.model} on ${r.engine}: decode ${fmt(r.decode)}, inference ${fmt(r.inference)} (batch ${r.inferenceBatch}), combined ${fmt(r.combined)}, ` +
      `classify ${fmt(r.endToEnd)} img/s (${(r.endToEnd / r.combined).toFixed(2)}x combined), startup ${r.startup.toFixed(2)} s`,
  );
}

// ---- what exactness costs: decode + resize + pack per image, each resize mode ------------------
/** One image at a time on one JS thread (libvips may use more): wall and process CPU ms per image,
 * the files already in memory. Each mode alone (ICC ignored, no rotation), then the ONNX default. */
async function preprocessingCosts(sets, passes) {
  const size = 224;
  const packer = new TensorPacker(size, size, 'NHWC', { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] });
  const out = new Float32Array(packer.imageSize);
  const plain = { crop: null, icc: 'ignore', exifRotate: false };
  const modes = [
    ['area', { ...plain, resize: 'area' }],
    ['area, ICC applied, EXIF rotated (ONNX default)', { resize: 'area', crop: null, icc: 'apply', exifRotate: true }],
    ['tf1', { ...plain, resize: 'tf1' }],
    ['bilinear', { ...plain, resize: 'bilinear' }],
    ['pil-bilinear', { ...plain, resize: 'pil-bilinear' }],
    ['pil-bicubic', { ...plain, resize: 'pil-bicubic' }],
    ['pil-bilinear, --crop 256', { ...plain, resize: 'pil-bilinear', crop: { shorter: 256 } }],
  ];
  const rows = [];
  for (const [name, steps] of modes) {
    const row = { mode: name };
    for (const [set, files] of Object.entries(sets)) {
      const bytes = files.map((f) => readFileSync(f));
      const run = async (n) => {
        for (let i = 0; i < n; i++) packer.writeFloat(await decodeToRgb(bytes[i % bytes.length], { width: size, height: size, maxPixels: 1e8, steps }), out, 0);
      };
      await run(Math.min(bytes.length * 2, passes)); // warm: libvips, JIT
      const n = Math.max(passes, bytes.length);
      const cpu = process.cpuUsage();
      const start = now();
      await run(n);
      const used = process.cpuUsage(cpu);
      row[set] = { wallMs: (now() - start) / n, cpuMs: (used.user + used.system) / 1000 / n };
    }
    rows.push(row);
  }
  return rows;
}

if (!onlySection || onlySection === 'preprocessing') {
  const passes = images ?? (quick ? 100 : 400);
  console.log(`\npreprocessing cost per image (decode + resize + pack to 224x224, one at a time, ${passes} images per cell)...`);
  const sets = { 'flower photos': photos, '1600x1200 JPEGs': large };
  results.preprocessing = await preprocessingCosts(sets, passes);
}

if (!preprocessingOnly && (!onlySection || onlySection === 'ceiling')) {
  console.log('\nthe hardware ceiling and classify\'s share of it (mobilenet_v1_0.25_128 frozen graph)...');
  results.ceiling = await ceilingSets({ bin: BIN, shared: SHARED, work, photos, quick });
}

if (!preprocessingOnly && (!onlySection || onlySection === 'imagesets')) {
  console.log('\nimage sets (mobilenet_v1_0.25_128 frozen graph) against the OpenCV loop, and decode threads...');
  const camera = await cameraPhotos(work, photos);
  results.stages = await stageCosts(join(SHARED, 'models', 'mobilenet_v1_0.25_128', 'frozen_graph.pb'), photos, camera, quick ? 20 : 80);
  results.imageSets = await imageSets({ bin: BIN, shared: SHARED, photos, large, camera, quick });
}

if (!quick && !preprocessingOnly && !onlySection) {
  const onnx = results.models.find((m) => m.model.startsWith('mobilenetv2_224_random_onnx'));
  if (onnx) {
    console.log('\nserve load test (mobilenetv2_224_random_onnx, loopback)...');
    const { serveLoad } = await import('./serve-load.mjs'); // autocannon: only for this part
    results.serve = await serveLoad(BIN, join(SHARED, 'models', 'mobilenetv2_224_random_onnx'), photos, [1, 8, 64], 8);
    for (const s of results.serve) s.vsCli = s.imagesPerSecond / onnx.endToEnd;
  }
}

if (rssLines > 0 && !preprocessingOnly) {
  console.log(`\nmemory over ${rssLines} input lines (colour fixture model, the same photos repeated)...`);
  results.rss = await rssRun(join(ROOT, 'fixtures', 'models', 'colour'), rssLines);
  console.log(`\nagain with NODE_OPTIONS=${YOUNG_GEN_CAP}...`);
  results.rssYoungCap = await rssRun(join(ROOT, 'fixtures', 'models', 'colour'), rssLines, { NODE_OPTIONS: YOUNG_GEN_CAP });
}

if (!onlySection || onlySection === 'resume') {
  const graph = join(SHARED, 'models', 'mobilenet_v1_0.25_128', 'frozen_graph.pb');
  console.log(`\n-o --resume and --cache (mobilenet_v1_0.25_128, the fastest model: the hardest case for both ratios), ${resumePaths} paths...`);
  results.resume = await resumeAndCache(graph, resumePaths);
}

if (!onlySection || onlySection === 'labelimage') {
  // The README's "Coming from label_image": its command line once per photo, as a while-read
  // loop runs it, against one classify over the same list.
  const model = join(SHARED, 'models', 'retrained_3class');
  const flowers = readdirSync(join(SHARED, 'images', 'flowers')).filter((f) => f.endsWith('.jpg')).map((f) => join(SHARED, 'images', 'flowers', f));
  const list = Array.from({ length: 6 }, () => flowers).flat();
  const flags = [`--graph=${join(model, 'output_graph.pb')}`, `--labels=${join(model, 'output_labels.txt')}`, '--output_layer=final_result:0'];
  console.log(`\nlabel_image's command line per photo vs one classify: ${list.length} flower photos, retrain.py's 3-class MobileNet 0.25 graph...`);
  let t = now();
  for (const photo of list) spawnSync(process.execPath, [BIN, ...flags, `--image=${photo}`], { stdio: 'ignore' });
  const loopS = (now() - t) / 1000;
  t = now();
  spawnSync(process.execPath, [BIN, ...flags, '-q'], { input: list.join('\n') + '\n', stdio: ['pipe', 'ignore', 'ignore'] });
  const onceS = (now() - t) / 1000;
  results.labelImage = { photos: list.length, loopS, onceS };
}

if (!onlySection || onlySection === 'retrain') {
  const { benchRetrain } = await import('./retrain.mjs');
  results.retrain = await benchRetrain({ shared: SHARED, work, bin: BIN });
}

// ---- report ------------------------------------------------------------------------------------
if (results.labelImage) {
  const r = results.labelImage;
  console.log(`\nlabel_image's loop: ${r.photos} processes ${r.loopS.toFixed(2)} s; one classify ${r.onceS.toFixed(2)} s: the loop takes ${(r.loopS / r.onceS).toFixed(1)}x as long`);
}
if (results.ceiling) reportCeiling(results.ceiling);
if (results.imageSets) reportImageSets(results.imageSets, results.stages);
const pad = (s, n) => String(s).padEnd(n);
if (results.models.length > 0) {
  console.log('\n| model | engine | decode | inference (batch) | combined | classify | vs combined | one at a time | vs it | process per image | vs it | OpenCV loop | vs it | first result (ms) |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of results.models) {
    console.log(
      `| ${r.model} | ${r.engine} | ${fmt(r.decode)} | ${fmt(r.inference)} (${r.inferenceBatch}) | ${fmt(r.combined)} | ${fmt(r.endToEnd)} | ${(r.endToEnd / r.combined).toFixed(2)}x | ` +
        `${fmt(r.oneAtATime)} | ${(r.endToEnd / r.oneAtATime).toFixed(1)}x | ${fmt(r.processPerImage)} | ${(r.endToEnd / r.processPerImage).toFixed(0)}x | ` +
        `${r.opencv ? fmt(r.opencv) : 'skipped'} | ${r.opencv ? (r.endToEnd / r.opencv).toFixed(2) + 'x' : '-'} | ${r.trickleMs.toFixed(0)} |`,
    );
  }
  console.log('\nimages/s; classify = end to end through the CLI minus its start-up (model load), measured on an empty input in the same run.');
}
const skipped = results.models.find((r) => r.opencvNote)?.opencvNote;
if (skipped) console.log(`OpenCV loop skipped: ${skipped}.`);
const onnxR = results.models.find((m) => m.model.startsWith('mobilenetv2_224_random_onnx'));
const frozenOnnx = results.models.find((m) => m.model.startsWith('mobilenetv2_224_random_frozen') && /onnxruntime/.test(m.engine));
const frozenTf = results.models.find((m) => m.model.startsWith('mobilenetv2_224_random_frozen') && /TensorFlow/.test(m.engine));
if (frozenOnnx && frozenTf) {
  console.log(
    `\nthe same frozen MobileNetV2 graph, translated to ONNX Runtime vs TensorFlow.js: inference ${(frozenOnnx.inference / frozenTf.inference).toFixed(1)}x, ` +
      `end to end ${(frozenOnnx.endToEnd / frozenTf.endToEnd).toFixed(1)}x (${frozenOnnx.engine} vs ${frozenTf.engine})`,
  );
}
for (const r of results.models) {
  const cpu = results.models.find((c) => c.model === r.model && c !== r && /\(cpu\)/.test(c.engine));
  if (cpu && !/\(cpu\)/.test(r.engine) && /onnxruntime/.test(r.engine)) {
    console.log(
      `${r.model}, ${r.engine} vs ${cpu.engine}: inference ${(r.inference / cpu.inference).toFixed(2)}x, end to end ${(r.endToEnd / cpu.endToEnd).toFixed(2)}x`,
    );
  }
}
if (onnxR && frozenOnnx) console.log(`translated frozen graph vs the native ONNX twin, inference: ${(frozenOnnx.inference / onnxR.inference).toFixed(2)}x`);
for (const r of results.models) {
  console.log(
    `first result of a trickled path, ${r.model} on ${r.engine}: ${r.trickleMs.toFixed(0)} ms, then ${r.trickleMedianMs.toFixed(0)} ms ` +
      `(target: max-delay 10 ms + one batch of 1 after the same pause ${r.loneBatchMs.toFixed(0)} ms = ${(10 + r.loneBatchMs).toFixed(0)} ms, ` +
      `${r.inferenceMsBatch.toFixed(0)} ms back to back; ` +
      `decoding that photo alone takes ${r.decodeMsOne.toFixed(0)} ms)`,
  );
}
if (results.preprocessing) {
  const sets = Object.keys(results.preprocessing[0]).filter((k) => k !== 'mode');
  const area = results.preprocessing[0];
  console.log(`\n| resize mode | ${sets.map((s) => `${s}: ms per image (CPU ms) | CPU vs area`).join(' | ')} |`);
  console.log(`|---|${sets.map(() => '---|---|').join('')}`);
  for (const r of results.preprocessing) {
    const cells = sets.map((s) => `${r[s].wallMs.toFixed(2)} (${r[s].cpuMs.toFixed(2)}) | ${(r[s].cpuMs / area[s].cpuMs).toFixed(2)}x`);
    console.log(`| ${r.mode} | ${cells.join(' | ')} |`);
  }
}
if (results.serve) {
  console.log('\n| concurrency | requests/s | p50 ms | p99 ms | mean batch | errors | vs CLI bulk |');
  console.log('|---|---|---|---|---|---|---|');
  for (const s of results.serve) {
    console.log(`| ${s.connections} | ${fmt(s.imagesPerSecond)} | ${s.p50} | ${s.p99} | ${s.meanBatch.toFixed(1)} | ${s.errors} | ${s.vsCli.toFixed(2)}x |`);
  }
}
for (const [how, r] of [['default', results.rss], [`NODE_OPTIONS=${YOUNG_GEN_CAP}`, results.rssYoungCap]]) {
  if (!r) continue;
  console.log(
    `\nRSS over ${r.lines} lines (${how}): ${r.atThousandMb.toFixed(0)} MB after the first 1000 results, peak ${r.peakMb.toFixed(0)} MB, ` +
      `at the end ${r.endMb.toFixed(0)} MB (${r.seconds.toFixed(0)} s, ${(r.lines / r.seconds).toFixed(0)} lines/s)`,
  );
  console.log(`RSS (MB) by lines done: ${r.samples.map(([n, mb]) => `${n}: ${mb}`).join(', ')}`);
}
if (results.resume) {
  const r = results.resume;
  console.log(
    `\n-o FILE --resume over ${r.paths} paths: first run ${r.firstSeconds.toFixed(1)} s, second (every path unchanged) ${r.secondSeconds.toFixed(2)} s = ` +
      `${(100 * r.secondOfFirst).toFixed(1)}% of the first (target: under 5%; start-up alone ${r.startup.toFixed(2)} s)`,
  );
  console.log(
    `--cache: uncached ${fmt(r.uncachedRate)} images/s, every image a hit ${fmt(r.hitRate)} images/s = ${r.hitSpeedup.toFixed(1)}x (target: 10x or more; ` +
      'rates exclude start-up, measured on an empty input)',
  );
}
const outDir = join(ROOT, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const outFile = join(outDir, `${results.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(outFile, JSON.stringify(results, null, 2) + '\n');
console.log(`\nresults written to ${outFile}`);
rmSync(work, { recursive: true, force: true }); // the generated photos: 30 MB a run

/** A first -o --resume run over n distinct paths (links to the photos) and a second one with
 * nothing left to do; then a run where every image hits --cache, against the first run's rate. */
async function resumeAndCache(graph, n) {
  const dir = mkdtempSync(join(tmpdir(), 'classify-bench-resume-'));
  try {
    const sources = imageSet(n);
    const paths = sources.map((source, i) => {
      const link = join(dir, `p${String(i).padStart(6, '0')}.jpg`);
      symlinkSync(source, link);
      return link;
    });
    const file = join(dir, 'labels.ndjson');
    const cache = join(dir, 'cache');
    const startup = (await runCli(graph, [], [])).seconds;
    const first = await runCli(graph, paths, ['-o', file, '--resume']);
    const second = await runCli(graph, paths, ['-o', file, '--resume']);
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean).length;
    if (lines !== n) throw new Error(`--resume bench: ${file} holds ${lines} lines for ${n} paths`);
    // The links point at a few photos: these cover each of them, so the next run is all hits.
    await runCli(graph, [...new Set(sources)], ['--cache', cache]);
    const cacheStartup = (await runCli(graph, [], ['--cache', cache])).seconds;
    const hits = await runCli(graph, paths, ['--cache', cache]);
    const uncachedRate = n / (first.seconds - startup);
    const hitRate = n / (hits.seconds - cacheStartup);
    return {
      paths: n,
      startup,
      firstSeconds: first.seconds,
      secondSeconds: second.seconds,
      secondOfFirst: second.seconds / first.seconds,
      uncachedRate,
      hitRate,
      hitSpeedup: hitRate / uncachedRate,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Feeds `lines` paths through the CLI and samples its RSS from /proc every 250 ms. */
function rssRun(graph, lines, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, '-g', graph, '-q', '-k', '1'], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    const start = now();
    let done = 0;
    let atThousand = 0;
    let peak = 0;
    const rss = () => {
      try {
        return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]) / 1024;
      } catch {
        return 0;
      }
    };
    const timer = setInterval(() => (peak = Math.max(peak, rss())), 250);
    let last = 0;
    const samples = [];
    let nextSample = 1000;
    child.stdout.on('data', (d) => {
      for (const b of d) if (b === 10) done++;
      if (!atThousand && done >= 1000) atThousand = rss();
      if (done >= nextSample) {
        samples.push([done, Math.round(rss())]);
        nextSample += Math.max(1000, Math.floor(lines / 10));
      }
      last = rss() || last;
    });
    child.on('error', reject);
    child.on('close', () => {
      clearInterval(timer);
      resolve({ lines: done, atThousandMb: atThousand, peakMb: peak, endMb: last, samples, seconds: (now() - start) / 1000 });
    });
    let i = 0;
    const feed = () => {
      while (i < lines) {
        if (!child.stdin.write(photos[i++ % photos.length] + '\n')) return void child.stdin.once('drain', feed);
      }
      child.stdin.end();
    };
    feed();
  });
}
