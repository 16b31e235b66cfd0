// Load test of `classify serve` on loopback with autocannon: bounded in time, nothing off-machine.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

/** `classify serve` on a free loopback port; resolves once it listens. */
export function start(bin, graph, extra = ['--max-queue', '1024'], env = process.env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'serve', '-g', graph, '--port', '0', '--quiet', ...extra], { env });
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
      const m = /listening on (http:\/\/\S+)/.exec(err);
      if (m) resolve({ child, url: m[1] });
    });
    child.on('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
}

async function batchStats(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const sum = Number(/^classify_batch_size_sum (\S+)/m.exec(text)?.[1] ?? 0);
  const count = Number(/^classify_batch_size_count (\S+)/m.exec(text)?.[1] ?? 0);
  return { sum, count };
}

export async function serveLoad(bin, graph, photos, concurrencies, seconds) {
  const { child, url } = await start(bin, graph);
  const bodies = photos.map((p) => readFileSync(p));
  const out = [];
  try {
    // Warm the model and the decoder before measuring.
    await fetch(url, { method: 'POST', body: bodies[0], headers: { 'Content-Type': 'image/jpeg' } });
    for (const connections of concurrencies) {
      const before = await batchStats(url);
      const result = await autocannon({
        url,
        connections,
        duration: seconds,
        requests: bodies.map((body) => ({ method: 'POST', body, headers: { 'content-type': 'image/jpeg' } })),
      });
      const after = await batchStats(url);
      out.push({
        connections,
        imagesPerSecond: result.requests.mean,
        p50: result.latency.p50,
        p99: result.latency.p99,
        meanBatch: (after.sum - before.sum) / Math.max(1, after.count - before.count),
        errors: result.errors + result.non2xx + result.timeouts,
      });
    }
  } finally {
    child.kill('SIGTERM');
  }
  return out;
}
