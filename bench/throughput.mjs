// npm run bench's image-set section: where each image's CPU goes, end to end on three image sets
// against the OpenCV loop a user would write, and how decoding scales with threads. One model,
// the issue's: ImageNet MobileNet v1 0.25 128 (frozen graph), with its default preprocessing
// (retrain.py's exact tf1 resize) unless a row says otherwise.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { loadEngine } from '../dist/backends/load.js';
import { decodeToRgb } from '../dist/image/decode.js';
import { jpegHeader } from '../dist/image/jpeg-header.js';
import { NativeJpegDecoder } from '../dist/image/native.js';
import { resizeRgb } from '../dist/image/resize.js';
import { TensorPacker } from '../dist/image/tensor.js';
import { resolveModel } from '../dist/model/locate.js';

const now = () => performance.now();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** `photo` scaled to `width` x `height` with grain, so that it compresses like a camera's photo,
 * written to `file` at `quality`. */
export async function grainy(photo, file, width, height, quality, seed) {
  const [w, h] = [Math.ceil(width / 4), Math.ceil(height / 4)];
  const noise = Buffer.alloc(w * h * 3);
  for (let j = 0; j < noise.length; j++) noise[j] = (j * 2654435761 + seed * 131) % 253;
  const base = await sharp(photo).resize(width, height, { fit: 'fill' }).toBuffer();
  const grain = await sharp(noise, { raw: { width: w, height: h, channels: 3 } }).resize(width, height).png().toBuffer();
  await sharp(base).composite([{ input: grain, blend: 'soft-light' }]).jpeg({ quality }).toFile(file);
  return file;
}

/** Camera-size JPEGs (4032x3024): real photos scaled up, with grain. */
export async function cameraPhotos(work, photos, n = 4, quality = 90) {
  const files = [];
  for (let i = 0; i < n; i++) files.push(await grainy(photos[i % photos.length], join(work, `camera${i}-q${quality}.jpg`), 4032, 3024, quality, i));
  return files;
}

/** CPU ms per image of `step` over `inputs` (each run `passes` times), one at a time. */
export async function cpuPerImage(inputs, passes, step) {
  for (const x of inputs.slice(0, 10)) await step(x); // warm: libvips, the JIT
  const before = process.cpuUsage();
  let n = 0;
  for (let p = 0; p < passes; p++) for (const x of inputs) (await step(x), n++);
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000 / n;
}

/** Per-stage CPU per image on one thread, the stages the CLI runs for the default (tf1) path, and
 * what the same decodes cost OpenCV (its libjpeg-turbo, called directly) for comparison. */
export async function stageCosts(graph, photos, camera, passes) {
  const model = resolveModel(graph);
  const engine = await loadEngine({ backend: model.backend, format: model.format, runtime: model.runtime, file: model.file, options: { threads: 0, device: 'cpu' } });
  const sig = engine.signature;
  const norm = { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] };
  const packer = new TensorPacker(sig.height, sig.width, sig.layout, norm);
  const out = new Float32Array(packer.imageSize);
  const floatOut = new Float32Array(packer.imageSize);
  const bytes = photos.map((p) => readFileSync(p));
  const decoded = [];
  for (const b of bytes) decoded.push(await sharp(b, { ignoreIcc: true, failOn: 'error' }).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true }));
  const steps = { resize: 'tf1', crop: null, icc: 'ignore', exifRotate: false };
  const native = NativeJpegDecoder.create();
  const r = {};
  r.read = await cpuPerImage(photos, passes, async (p) => readFileSync(p));
  r.decode = await cpuPerImage(bytes, passes, (b) => sharp(b, { ignoreIcc: true, failOn: 'error' }).removeAlpha().toColourspace('srgb').raw().toBuffer());
  r.decodeNative = native ? await cpuPerImage(bytes, passes, async (b) => native.decode(b, 1e8, jpegHeader(b))) : undefined;
  r.resizePack = await cpuPerImage(decoded, passes * 4, async ({ data, info }) =>
    packer.writeFloat(resizeRgb(data, info.width, info.height, sig.width, sig.height, 'tf1', undefined, floatOut), out, 0),
  );
  r.decodeResizePack = await cpuPerImage(bytes, passes, async (b) =>
    packer.writeFloat(await decodeToRgb(b, { width: sig.width, height: sig.height, maxPixels: 1e8, steps, floatOut: () => floatOut }), out, 0),
  );
  const batch = new Float32Array(2 * packer.imageSize).fill(0.1);
  r.inference = (await cpuPerImage([batch], passes * 5, (x) => engine.run(x, 2))) / 2;
  await engine.dispose();
  // The fast mode's decode of a camera photo: libjpeg at 1/8 scale (shrink-on-load), then area.
  const cameraBytes = camera.map((p) => readFileSync(p));
  r.cameraFast = await cpuPerImage(cameraBytes, 2, (b) => decodeToRgb(b, { width: sig.width, height: sig.height, maxPixels: 1e8, steps: { ...steps, resize: 'area' } }));
  r.opencv = openCvDecodes(photos, camera);
  return r;
}

/** OpenCV's own decodes, CPU ms per image, one thread: the flower photos at full size, the camera
 * photos at full size and at 1/8 scale (IMREAD_REDUCED_COLOR_8, libjpeg's DCT scaling). */
function openCvDecodes(photos, camera) {
  const python = findOpenCvPython();
  if (!python) return { skipped: "Debian's python3-opencv is not installed" };
  const script = `
import cv2, json, sys, time
import numpy as np
cv2.setNumThreads(1)
def per_image(paths, flags, passes):
    data = [np.frombuffer(open(p, 'rb').read(), np.uint8) for p in paths]
    for d in data[:10]: cv2.imdecode(d, flags)
    start = time.process_time()
    for _ in range(passes):
        for d in data: cv2.imdecode(d, flags)
    return (time.process_time() - start) * 1000 / (passes * len(data))
split = sys.argv.index('--')
photos, camera = sys.argv[1:split], sys.argv[split + 1:]
print(json.dumps({
    'flowers': per_image(photos, cv2.IMREAD_COLOR, 80),
    'camera': per_image(camera, cv2.IMREAD_COLOR, 2),
    'cameraReduced8': per_image(camera, cv2.IMREAD_REDUCED_COLOR_8, 4),
}))
`;
  const r = spawnSync(python, ['-c', script, ...photos, '--', ...camera], { encoding: 'utf8' });
  if (r.status !== 0) return { skipped: `OpenCV failed: ${r.stderr.trim().split('\n').pop()}` };
  return JSON.parse(r.stdout);
}

/** Runs a command with `paths` on stdin, one per line: wall seconds, lines written, exit code
 * and stderr. */
export function runWithPaths(cmd, args, paths) {
  return new Promise((resolve, reject) => {
    const start = now();
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let lines = 0;
    let err = '';
    child.stdout.on('data', (d) => {
      for (const b of d) if (b === 10) lines++;
    });
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ seconds: (now() - start) / 1000, lines, code, err }));
    child.stdin.end(paths.map((p) => p + '\n').join(''));
  });
}

/** The CLI over `paths`: wall seconds, the process's CPU seconds, and its --verbose summary. */
async function runCli(bin, graph, paths, extra = []) {
  const r = await runWithPaths('/usr/bin/time', ['-f', '%U %S', process.execPath, bin, '-g', graph, '-v', '-k', '1', ...extra], paths);
  if (r.code !== 0) throw new Error(`classify exited ${r.code}: ${r.err}`);
  const [user, sys] = r.err.trim().split('\n').pop().split(' ').map(Number);
  const main = /main thread CPU ([\d.]+) ms per image/.exec(r.err);
  return { seconds: r.seconds, cpuSeconds: user + sys, lines: r.lines, mainMs: main ? Number(main[1]) : undefined };
}

/** Images/s through the CLI with its start-up (an empty input, same flags) taken off; median of
 * `runs`. Also process CPU and main-thread CPU per image. */
export async function cliEndToEnd(bin, graph, paths, extra, runs) {
  const empty = [];
  const full = [];
  for (let i = 0; i < runs; i++) {
    empty.push(await runCli(bin, graph, [], extra));
    full.push(await runCli(bin, graph, paths, extra));
  }
  const startup = median(empty.map((e) => e.seconds));
  const startupCpu = median(empty.map((e) => e.cpuSeconds));
  const best = full.sort((a, b) => a.seconds - b.seconds)[Math.floor(runs / 2)];
  if (best.lines !== paths.length) throw new Error(`classify wrote ${best.lines} lines for ${paths.length} paths`);
  return {
    ips: paths.length / (best.seconds - startup),
    cpuMs: ((best.cpuSeconds - startupCpu) * 1000) / paths.length,
    mainMs: best.mainMs,
  };
}

/** Debian's python3-opencv belongs to Debian's python3, which another python3 on PATH may hide. */
export function findOpenCvPython() {
  return ['/usr/bin/python3', 'python3'].find((py) => spawnSync(py, ['-c', 'import cv2'], { stdio: 'ignore' }).status === 0);
}

/** The 10-line OpenCV-dnn Python loop over `paths` (images/s), or why it cannot run. */
export function openCvLoop(pb, paths, height, width) {
  const python = findOpenCvPython();
  if (!python) return { skipped: "Debian's python3-opencv is not installed" };
  const script = `
import cv2, sys, time
net = cv2.dnn.readNetFromTensorflow(sys.argv[1])
paths = sys.argv[4:]
size = (int(sys.argv[3]), int(sys.argv[2]))
start = time.time()
for p in paths:
    img = cv2.imread(p)
    blob = cv2.dnn.blobFromImage(img, 1/127.5, size, (127.5, 127.5, 127.5), swapRB=True)
    net.setInput(blob)
    net.forward()
print(len(paths) / (time.time() - start))
`;
  const r = spawnSync(python, ['-c', script, pb, String(height), String(width), ...paths], { encoding: 'utf8' });
  if (r.status !== 0) return { skipped: `OpenCV failed: ${r.stderr.trim().split('\n').pop()}` };
  return { ips: Number(r.stdout.trim()) };
}

/** The image sets end to end against the OpenCV loop, and the decode-thread sweep. */
export async function imageSets({ bin, shared, photos, large, camera, quick }) {
  const graph = join(shared, 'models', 'mobilenet_v1_0.25_128', 'frozen_graph.pb');
  const repeat = (files, n) => Array.from({ length: n }, (_, i) => files[i % files.length]);
  const runs = quick ? 1 : 3;
  const sets = [
    // Long enough that the main thread's per-image figure is not the JIT's first thousand images.
    { name: 'flower photos (the seed\'s kind, 240-500 px)', paths: repeat(photos, quick ? 400 : 4000), extra: [] },
    { name: 'mixed (1 in 10 is 1600x1200)', paths: Array.from({ length: quick ? 400 : 1200 }, (_, i) => (i % 10 === 9 ? large[i % large.length] : photos[i % photos.length])), extra: [] },
    { name: 'camera-size (4032x3024), default tf1', paths: repeat(camera, quick ? 16 : 48), extra: [] },
    { name: 'camera-size (4032x3024), fast mode --resize area', paths: repeat(camera, quick ? 40 : 160), extra: ['--resize', 'area'] },
  ];
  const rows = [];
  for (const set of sets) {
    const cli = await cliEndToEnd(bin, graph, set.paths, set.extra, runs);
    const cv = openCvLoop(graph, set.paths.slice(0, Math.min(set.paths.length, quick ? 40 : 200)), 128, 128);
    rows.push({ set: set.name, images: set.paths.length, ...cli, opencv: cv.ips, opencvNote: cv.skipped });
    console.log(`${set.name}: classify ${cli.ips.toFixed(0)} img/s, OpenCV loop ${cv.ips ? cv.ips.toFixed(0) : cv.skipped}`);
  }
  const sweep = [];
  const flowers = sets[0].paths;
  for (let threads = 1; threads <= availableParallelism(); threads *= 2) {
    const r = await cliEndToEnd(bin, graph, flowers, ['--decode-jobs', String(threads)], runs);
    sweep.push({ threads, ...r });
    console.log(`decode threads ${threads}: ${r.ips.toFixed(0)} img/s`);
  }
  return { rows, sweep };
}

export function reportImageSets(r, stages) {
  if (stages) {
    const f = (x) => x.toFixed(3);
    const cv = stages.opencv ?? {};
    console.log('\nCPU per image, one thread, flower photos, MobileNet v1 0.25 128 with its default (tf1, exact) preprocessing:');
    console.log('| read | decode: sharp, full size | decode: libjpeg-turbo called directly (the default for sequential JPEGs) | OpenCV imdecode (for comparison) | resize + pack (tf1) | decode + resize + pack (as the CLI does) | inference (batch 2) | main thread (CLI, flowers row) |');
    console.log('|---|---|---|---|---|---|---|---|');
    console.log(
      `| ${f(stages.read)} ms | ${f(stages.decode)} ms | ${stages.decodeNative === undefined ? 'not loaded' : f(stages.decodeNative) + ' ms'} | ${cv.flowers ? f(cv.flowers) + ' ms' : cv.skipped} | ${f(stages.resizePack)} ms | ${f(stages.decodeResizePack)} ms | ${f(stages.inference)} ms | ${r.rows[0].mainMs?.toFixed(3) ?? '-'} ms |`,
    );
    console.log('\nCamera-size photo (4032x3024), CPU per image, one thread:');
    console.log('| classify fast mode (--resize area: 1/8-scale decode + resize) | OpenCV imdecode at 1/8 scale (IMREAD_REDUCED_COLOR_8) | OpenCV imdecode, full size |');
    console.log('|---|---|---|');
    console.log(`| ${f(stages.cameraFast)} ms | ${cv.cameraReduced8 ? f(cv.cameraReduced8) + ' ms' : cv.skipped} | ${cv.camera ? f(cv.camera) + ' ms' : cv.skipped} |`);
  }
  console.log('\n| image set (MobileNet v1 0.25 128) | images | classify img/s | process CPU ms/img | main thread CPU ms/img | OpenCV loop img/s | vs OpenCV |');
  console.log('|---|---|---|---|---|---|---|');
  for (const row of r.rows) {
    console.log(
      `| ${row.set} | ${row.images} | ${row.ips.toFixed(0)} | ${row.cpuMs.toFixed(2)} | ${row.mainMs?.toFixed(3) ?? '-'} | ${row.opencv ? row.opencv.toFixed(0) : row.opencvNote} | ${row.opencv ? (row.ips / row.opencv).toFixed(2) + 'x' : '-'} |`,
    );
  }
  console.log('\n| decode threads (flower photos) | classify img/s | vs 1 thread |');
  console.log('|---|---|---|');
  for (const s of r.sweep) console.log(`| ${s.threads} | ${s.ips.toFixed(0)} | ${(s.ips / r.sweep[0].ips).toFixed(2)}x |`);
}
