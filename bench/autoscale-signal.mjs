#!/usr/bin/env node
// The autoscaling signal, measured: one `classify serve` driven with open-loop load (Poisson
// arrivals at a fixed rate, whatever the answers do, as independent users send them) at several
// fractions of its capacity. For each rate it prints what serve's own /metrics say over the step:
// the average images in flight (rate of classify_images_in_flight_seconds_total, the HPA's
// metric), the engine's busy fraction (rate of classify_inference_seconds_sum), the mean queue
// wait (classify_queue_wait_seconds), next to the client's latency. Loopback only.
//   npm run build && node bench/autoscale-signal.mjs
//   node bench/autoscale-signal.mjs --graph DIR --images DIR --seconds 10 --fractions 0.25,0.5,0.75,0.9,1.1
import { readdirSync, readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { start } from './serve-load.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const graph = flag('--graph', join(ROOT, 'fixtures', 'models', 'colour'));
const imageDir = flag('--images', join(ROOT, 'fixtures', 'images'));
const seconds = Number(flag('--seconds', '8'));
const fractions = flag('--fractions', '0.25,0.5,0.7,0.85,1,1.2').split(',').map(Number);
const serveArgs = (flag('--serve-args', '') || '').split(' ').filter(Boolean);

const bodies = readdirSync(imageDir)
  .filter((f) => /\.jpe?g$/i.test(f))
  .map((f) => readFileSync(join(imageDir, f)));
const agent = new Agent({ keepAlive: true, maxSockets: 4096 });

/** One image POSTed; resolves with its status and latency in ms. */
function post(url, body) {
  const start = performance.now();
  return new Promise((resolve) => {
    const req = request(url, { method: 'POST', agent, headers: { 'Content-Type': 'image/jpeg', 'Content-Length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - start }));
    });
    req.on('error', () => resolve({ status: 0, ms: performance.now() - start }));
    req.end(body);
  });
}

async function scrape(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = (name) => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? 0);
  return {
    at: performance.now(),
    inFlightSeconds: value('classify_images_in_flight_seconds_total'),
    inferenceSum: value('classify_inference_seconds_sum'),
    waitSum: value('classify_queue_wait_seconds_sum'),
    waitCount: value('classify_queue_wait_seconds_count'),
    batchSum: value('classify_batch_size_sum'),
    batchCount: value('classify_batch_size_count'),
  };
}

/** Closed loop with many clients: the most images a second this serve answers. */
async function capacity(url, ms) {
  let done = 0;
  const end = performance.now() + ms;
  const worker = async (i) => {
    for (let n = i; performance.now() < end; n++) if ((await post(url, bodies[n % bodies.length])).status === 200) done++;
  };
  await Promise.all(Array.from({ length: 32 }, (_, i) => worker(i)));
  return done / (ms / 1000);
}

/** Open loop: exponential gaps between sends at `rate` a second, for `ms`. Resolves when the
 * last is sent, with the answers still to come. */
async function openLoop(url, rate, ms) {
  const results = [];
  const sent = [];
  const end = performance.now() + ms;
  let next = performance.now();
  let n = 0;
  while (next < end) {
    const wait = next - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    // Every send due by now goes now: a late timer does not lower the rate.
    while (next <= performance.now() && next < end) {
      sent.push(post(url, bodies[n++ % bodies.length]).then((r) => results.push(r)));
      next += -Math.log(1 - Math.random()) * (1000 / rate);
    }
  }
  return { results, done: Promise.all(sent) };
}

/** Waits until serve holds no image, so that one step's backlog is not counted in the next. */
async function drained(url) {
  for (;;) {
    const text = await (await fetch(`${url}/metrics`)).text();
    if (Number(/^classify_images_in_flight (\S+)/m.exec(text)?.[1] ?? 0) === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;

const { child, url } = await start(join(ROOT, 'bin', 'classify.js'), graph, ['--max-queue', '4096', ...serveArgs], { ...process.env, MALLOC_ARENA_MAX: '2' });
try {
  for (let i = 0; i < 50; i++) await post(url, bodies[i % bodies.length]); // warm up
  const cap = await capacity(url, 4000);
  console.log(`machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}), no GPU assumed; model ${graph}; ${bodies.length} JPEGs from ${imageDir}`);
  console.log(`capacity (closed loop, 32 clients): ${cap.toFixed(0)} images/s`);
  console.log('| load | offered /s | answered /s | avg images in flight | engine busy | mean queue wait ms | mean batch | p50 ms | p95 ms | p99 ms | not 200 |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const f of fractions) {
    const rate = f * cap;
    const before = await scrape(url);
    const { results, done } = await openLoop(url, rate, seconds * 1000);
    // The server's figures over the time the load was offered; the answers still due count in
    // the client's latencies.
    const after = await scrape(url);
    await done;
    const dt = (after.at - before.at) / 1000;
    const ok = results.filter((r) => r.status === 200);
    const ms = ok.map((r) => r.ms).sort((a, b) => a - b);
    const row = [
      `${Math.round(f * 100)}%`,
      (results.length / seconds).toFixed(0),
      (ok.length / ((performance.now() - before.at) / 1000)).toFixed(0),
      ((after.inFlightSeconds - before.inFlightSeconds) / dt).toFixed(2),
      ((after.inferenceSum - before.inferenceSum) / dt).toFixed(2),
      (((after.waitSum - before.waitSum) / Math.max(1, after.waitCount - before.waitCount)) * 1000).toFixed(2),
      ((after.batchSum - before.batchSum) / Math.max(1, after.batchCount - before.batchCount)).toFixed(1),
      pct(ms, 0.5).toFixed(1),
      pct(ms, 0.95).toFixed(1),
      pct(ms, 0.99).toFixed(1),
      results.length - ok.length,
    ];
    console.log(`| ${row.join(' | ')} |`);
    await drained(url);
  }
} finally {
  child.kill('SIGTERM');
  agent.destroy();
}
