// npm run bench's ceiling section (issue 23): what the cores could do with nothing but the
// fastest JPEG decoder here (OpenCV's libjpeg-turbo, decoding from memory, one thread) plus ONNX
// Runtime's inference (one intra-op thread, batch 8), divided over the cores; classify's share of
// it end to end; and where classify's CPU per image goes, stage by stage, adding up to the whole
// process's. Two sets, MobileNet v1 0.25 128 (frozen graph): eight small photos with the default
// exact preprocessing (tf1), and camera-size JPEGs in the fast mode (--resize area).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { loadEngine } from '../dist/backends/load.js';
import { decodeToRgb } from '../dist/image/decode.js';
import { readRegularFileSync } from '../dist/image/read.js';
import { jpegHeader } from '../dist/image/jpeg-header.js';
import { NativeJpegDecoder } from '../dist/image/native.js';
import { placement } from '../dist/image/resize.js';
import { TensorPacker } from '../dist/image/tensor.js';
import { resolveModel } from '../dist/model/locate.js';
import { cameraPhotos, cliEndToEnd, cpuPerImage, findOpenCvPython, grainy, openCvLoop } from './throughput.mjs';

const NORM = { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] };

/** The five flower photos and three more small photos (made from them, with grain), 240-600 px. */
async function smallPhotos(work, photos) {
  const sizes = [[600, 450], [480, 360], [360, 480]];
  const extra = [];
  for (const [i, [width, height]] of sizes.entries()) extra.push(await grainy(photos[i], join(work, `small${i}.jpg`), width, height, 90, i));
  return [...photos, ...extra];
}

/** OpenCV's imdecode from memory, CPU ms per image on one thread, with the given flag. */
function openCvDecodeMs(python, files, flag, passes) {
  const script = `
import cv2, sys, time
import numpy as np
cv2.setNumThreads(1)
flag, passes = getattr(cv2, sys.argv[1]), int(sys.argv[2])
data = [np.frombuffer(open(p, 'rb').read(), np.uint8) for p in sys.argv[3:]]
for d in data: cv2.imdecode(d, flag)
start = time.process_time()
for _ in range(passes):
    for d in data: cv2.imdecode(d, flag)
print((time.process_time() - start) * 1000 / (passes * len(data)))
`;
  const r = spawnSync(python, ['-c', script, flag, String(passes), ...files], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`OpenCV decode failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

/** ONNX Runtime alone on ready inputs: CPU ms per image at `batch` with `threads` intra-op threads. */
async function inferenceMs(graph, threads, batch, rounds) {
  const model = resolveModel(graph);
  const engine = await loadEngine({ backend: model.backend, format: model.format, runtime: model.runtime, file: model.file, options: { threads, device: 'cpu' } });
  try {
    const sig = engine.signature;
    const input = new Float32Array(batch * sig.height * sig.width * 3).fill(0.1);
    return (await cpuPerImage([input], rounds, (x) => engine.run(x, batch))) / batch;
  } finally {
    await engine.dispose();
  }
}

/** classify's own stages on one thread, CPU ms per image: read, decode and resize + pack as the
 * decode threads run them for this set's preprocessing. */
async function classifyStages(files, fast, passes) {
  const native = NativeJpegDecoder.create();
  const packer = new TensorPacker(128, 128, 'NHWC', NORM);
  const slot = new Float32Array(packer.imageSize);
  const bytes = files.map((f) => readFileSync(f));
  // As the decode threads read: into a buffer used before.
  const kept = Buffer.allocUnsafe(16 * 1024 * 1024);
  const read = await cpuPerImage(files, passes, async (f) => readRegularFileSync(f, kept.length, () => kept));
  if (fast) {
    // The fast mode: the 1/8-scale decode here, libvips' resize from its pixels, the packing.
    const steps = { resize: 'area', crop: null, icc: 'ignore', exifRotate: false };
    const decode = await cpuPerImage(bytes, passes, async (b) => native?.decode(b, 1e9, jpegHeader(b), 8));
    const all = await cpuPerImage(bytes, passes, async (b) => packer.writeFloat(await decodeToRgb(b, { width: 128, height: 128, maxPixels: 1e9, steps }), slot, 0));
    return { read, decode, resizePack: all - decode };
  }
  const decode = await cpuPerImage(bytes, passes, async (b) => native?.decode(b, 1e9, jpegHeader(b)));
  const decoded = bytes.map((b) => {
    const image = native.decode(b, 1e9, jpegHeader(b));
    return { ...image, data: Uint8Array.from(image.data) };
  });
  const resizePack = await cpuPerImage(decoded, passes * 4, async (image) =>
    packer.resizeFloat(image, placement(image.width, image.height, 128, 128, null), 'tf1', slot, 0),
  );
  return { read, decode, resizePack };
}

export async function ceilingSets({ bin, shared, work, photos, quick }) {
  const python = findOpenCvPython();
  if (!python) return { skipped: "Debian's python3-opencv is not installed (the ceiling is OpenCV's decode)" };
  if (!NativeJpegDecoder.create()) return { skipped: 'the native JPEG decoder did not load' };
  const graph = join(shared, 'models', 'mobilenet_v1_0.25_128', 'frozen_graph.pb');
  const cores = availableParallelism();
  const small = await smallPhotos(work, photos);
  const camera = await cameraPhotos(work, photos, 4, 92);
  const repeat = (files, n) => Array.from({ length: n }, (_, i) => files[i % files.length]);
  const sets = [
    { name: '8 small photos (240-600 px), default exact preprocessing (tf1)', files: small, paths: repeat(small, quick ? 400 : 2000), extra: [], flag: 'IMREAD_COLOR', passes: 120 },
    { name: 'camera-size 4032x3024 q92, --resize area', files: camera, paths: repeat(camera, quick ? 40 : 204), extra: ['--resize', 'area'], flag: 'IMREAD_REDUCED_COLOR_8', passes: 10, fast: true },
  ];
  // The engine as the ceiling counts it.
  const inference = await inferenceMs(graph, 1, 8, quick ? 40 : 150);
  // classify's own engine (batch 4; its threads: one for this model on 2 cores, see onnx.ts)
  const inferenceCli = await inferenceMs(graph, 0, 4, quick ? 80 : 300);
  const rows = [];
  for (const set of sets) {
    const decode = openCvDecodeMs(python, set.files, set.flag, set.passes);
    const ceiling = (cores * 1000) / (decode + inference);
    const cv = openCvLoop(graph, set.paths.slice(0, quick ? 40 : 200), 128, 128);
    const cli = await cliEndToEnd(bin, graph, set.paths, set.extra, quick ? 1 : 3);
    const stages = await classifyStages(set.files, set.fast, quick ? 2 : set.fast ? 4 : 40);
    const counted = stages.read + stages.decode + stages.resizePack + inferenceCli + (cli.mainMs ?? 0);
    const row = { set: set.name, images: set.paths.length, opencvDecodeMs: decode, inferenceMs: inference, ceiling, opencvLoop: cv.ips, ...cli, stages: { ...stages, inference: inferenceCli, main: cli.mainMs, rest: cli.cpuMs - counted } };
    row.share = cli.ips / ceiling;
    rows.push(row);
    console.log(`${set.name}: ceiling ${ceiling.toFixed(0)} img/s, classify ${cli.ips.toFixed(0)} img/s = ${row.share.toFixed(2)} of it`);
  }
  return { cores, rows };
}

export function reportCeiling(r) {
  if (r.skipped) return console.log(`\nceiling: skipped (${r.skipped})`);
  const f = (x, d = 2) => (x === undefined ? '-' : x.toFixed(d));
  console.log(`\nThe ceiling (issue 23): ${r.cores} cores x 1 / (OpenCV imdecode from memory, one thread + ONNX Runtime inference, one thread, batch 8), MobileNet v1 0.25 128:`);
  console.log('| set | OpenCV decode CPU ms/img | inference CPU ms/img | ceiling img/s | ceiling vs OpenCV loop | classify img/s | classify vs OpenCV loop | share of the ceiling (target 0.85) |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const row of r.rows) {
    const vs = (x) => (row.opencvLoop ? `${(x / row.opencvLoop).toFixed(2)}x` : '-');
    console.log(`| ${row.set} | ${f(row.opencvDecodeMs)} | ${f(row.inferenceMs, 3)} | ${row.ceiling.toFixed(0)} | ${vs(row.ceiling)} | ${row.ips.toFixed(0)} | ${vs(row.ips)} | **${row.share.toFixed(2)}** |`);
  }
  console.log("\nWhere classify's CPU per image goes (stages on one thread; the rest is the whole process's CPU per image, start-up taken off, less the stages: thread crossings, queues, GC, libvips' and ONNX Runtime's threads waking):");
  console.log('| set | read | decode | resize + pack | inference (batch 4, as run) | main thread | rest | whole process | ceiling\'s decode + inference |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const row of r.rows) {
    const s = row.stages;
    console.log(`| ${row.set} | ${f(s.read, 3)} | ${f(s.decode, 3)} | ${f(s.resizePack, 3)} | ${f(s.inference, 3)} | ${f(s.main, 3)} | ${f(s.rest, 3)} | ${f(row.cpuMs, 3)} | ${f(row.opencvDecodeMs + row.inferenceMs, 3)} |`);
  }
}
