// classify serve, started for real on a free loopback port.
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COLOUR, FIX, runInProcess } from './helpers.js';
import { form, image, post, rawAnswer, type Server, startServer } from './serve-helpers.js';

describe('classify serve', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServer(['--max-body', '300000', '--max-delay', '20', '--batch-size', '8']);
  });
  afterAll(() => {
    return server.close();
  });

  it('classifies a multipart "data" upload exactly as curl -F sends it', async () => {
    const r = await post(server.url, form(['red.jpg', image('red.jpg')]));
    expect(r.status).toBe(200);
    expect(r.body.path).toBe('red.jpg');
    expect(r.body.predictions[0].label).toBe('red');
    expect(r.body.predictions).toHaveLength(3);
  });

  it('reads file names as UTF-8, as browsers and curl send them', async () => {
    const name = 'fleur été 花.jpg';
    const boundary = 'xyz';
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="data"; filename="${name}"\r\nContent-Type: image/jpeg\r\n\r\n`, 'utf8'),
      image('red.jpg'),
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    const r = await post(server.url, body, { 'Content-Type': `multipart/form-data; boundary=${boundary}` });
    expect(r.body.path).toBe(name);
    expect((await post(server.url, form([name, image('red.jpg')]))).body.path).toBe(name);
  });

  it('takes top_k and threshold from the query string, and rejects bad ones', async () => {
    const r = await post(`${server.url}/?top_k=1`, form(['red.jpg', image('red.jpg')]));
    expect(r.body.predictions).toHaveLength(1);
    const t = await post(`${server.url}/?threshold=0.5`, form(['grey.jpg', image('grey.jpg')]));
    expect(t.body.predictions).toEqual([]);
    expect((await post(`${server.url}/?top_k=0`, form(['red.jpg', image('red.jpg')]))).status).toBe(400);
    const tiny = await post(`${server.url}/?threshold=1e-7&top_k=2`, form(['red.jpg', image('red.jpg')]));
    expect(tiny.body.predictions).toHaveLength(2); // what String(1e-7) gives, as --remote sends it
  });

  it('takes only decimal query values: 0x2, an empty value or padding is a 400 naming it', async () => {
    for (const [query, error] of [
      ['top_k=0x2', 'Expected positive integer for top_k but received "0x2"'],
      ['top_k=1.5', 'Expected positive integer for top_k but received "1.5"'],
      ['top_k=', 'Expected positive integer for top_k but received ""'],
      ['top_k=%202', 'Expected positive integer for top_k but received " 2"'],
      ['threshold=', 'Expected number between 0 and 1 for threshold but received ""'],
      ['threshold=0x1', 'Expected number between 0 and 1 for threshold but received "0x1"'],
      ['threshold=-0', 'Expected number between 0 and 1 for threshold but received "-0"'],
      ['threshold=Infinity', 'Expected number between 0 and 1 for threshold but received "Infinity"'],
    ]) {
      const r = await post(`${server.url}/?${query}`, form(['red.jpg', image('red.jpg')]));
      expect([query, r.status, r.body]).toEqual([query, 400, { error }]);
    }
    const ok = await post(`${server.url}/?threshold=.5&top_k=3`, form(['red.jpg', image('red.jpg')]));
    expect(ok.body.predictions.map((p: { label: string }) => p.label)).toEqual(['red']);
  });

  it("answers Node's own 400, 417 and 431, and CONNECT, with JSON like every other error, and keeps serving", async () => {
    const bad = await rawAnswer(server.port, 'GARBAGE\r\n\r\n');
    expect(bad.status).toBe(400);
    expect(bad.head).toMatch(/content-type: application\/json/i);
    expect(JSON.parse(bad.body).error).toMatch(/^bad HTTP request: /);
    const big = await rawAnswer(server.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big.status).toBe(431);
    expect(JSON.parse(big.body)).toEqual({ error: 'request headers too large' });
    const expect200 = await rawAnswer(server.port, 'POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n');
    expect(expect200.status).toBe(417);
    expect(JSON.parse(expect200.body).error).toMatch(/Expect/);
    const connect = await rawAnswer(server.port, 'CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n');
    expect(connect.status).toBe(405);
    expect(JSON.parse(connect.body)).toEqual({ error: 'CONNECT is not supported' });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });

  it('classifies a raw image/* body', async () => {
    const r = await post(server.url, image('green.jpg'), { 'Content-Type': 'image/jpeg' });
    expect(r.status).toBe(200);
    expect(r.body.predictions[0].label).toBe('green');
  });

  it('answers several files in one request as an array, in order; a bad one fails alone', async () => {
    const r = await post(
      server.url,
      form(['b.jpg', image('blue.jpg')], ['e.jpg', image('empty.jpg', 'broken')], ['r.jpg', image('red.jpg')]),
    );
    expect(r.status).toBe(200);
    expect(r.body.map((x: { path: string }) => x.path)).toEqual(['b.jpg', 'e.jpg', 'r.jpg']);
    expect(r.body[0].predictions[0].label).toBe('blue');
    expect(r.body[1].error).toBe('empty file');
    expect(r.body[2].predictions[0].label).toBe('red');
  });

  it('uses the uploaded bytes, never a path the request names', async () => {
    const named = await post(server.url, form(['../../../../etc/passwd', image('red.jpg')]));
    expect(named.body.predictions[0].label).toBe('red');
    const pathAsBody = await post(server.url, Buffer.from(join(FIX, 'images', 'red.jpg')), { 'Content-Type': 'image/jpeg' });
    expect(pathAsBody.status).toBe(415);
  });

  it('gives JSON errors with the right status codes', async () => {
    const noField = new FormData();
    noField.append('other', new Blob([image('red.jpg')]), 'red.jpg');
    expect((await post(server.url, noField)).status).toBe(400);
    const empty = await post(server.url, Buffer.alloc(0), { 'Content-Type': 'image/jpeg' });
    expect(empty.status).toBe(400);
    expect(empty.body.error).toBe('empty file');
    expect((await post(server.url, form(['t.jpg', image('not-an-image.jpg', 'broken')]))).status).toBe(415);
    expect((await post(server.url, Buffer.from('{}'), { 'Content-Type': 'application/json' })).status).toBe(415);
    expect((await post(server.url, form(['t.jpg', image('truncated.jpg', 'broken')]))).status).toBe(422);
    const bomb = await post(server.url, form(['bomb.png', image('bomb.png', 'broken')]));
    expect(bomb.status).toBe(422);
    expect(bomb.body.error).toMatch(/pixel limit/);
    const big = Buffer.alloc(400_000, 1);
    const tooBig = await post(server.url, big, { 'Content-Type': 'image/jpeg' });
    expect(tooBig.status).toBe(413);
    expect(tooBig.body.error).toMatch(/--max-body/);
    expect((await post(server.url, form(['big.jpg', big]))).status).toBe(413);
    const notFound = await fetch(`${server.url}/nope`);
    expect(notFound.status).toBe(404);
    expect((await notFound.json()).error).toMatch(/no route/);
    expect((await fetch(`${server.url}/`, { method: 'GET' })).status).toBe(405);
  });

  it('a bad image among 50 concurrent good ones fails alone, and requests share batches', async () => {
    const colours = ['red', 'green', 'blue'];
    const requests = Array.from({ length: 50 }, (_, i) => post(server.url, form([`${i}.jpg`, image(`${colours[i % 3]}.jpg`)])));
    requests.splice(25, 0, post(server.url, form(['bad.jpg', image('not-an-image.jpg', 'broken')])));
    const results = await Promise.all(requests);
    expect(results[25].status).toBe(415);
    const good = results.filter((_, i) => i !== 25);
    expect(good.every((r) => r.status === 200)).toBe(true);
    expect(good.map((r) => r.body.predictions[0].label)).toEqual(Array.from({ length: 50 }, (_, i) => colours[i % 3]));
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const sum = Number(/^classify_batch_size_sum (\S+)/m.exec(metrics)![1]);
    const count = Number(/^classify_batch_size_count (\S+)/m.exec(metrics)![1]);
    expect(sum / count).toBeGreaterThan(1.5); // images from different requests went through together
  });

  it('GET /healthz, /readyz and /metrics', async () => {
    const health = await fetch(`${server.url}/healthz`);
    expect(health.status).toBe(200);
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect((await ready.json()).engine).toMatch(/onnxruntime/);
    const metrics = await fetch(`${server.url}/metrics`);
    expect(metrics.headers.get('content-type')).toMatch(/text\/plain/);
    const text = await metrics.text();
    for (const name of [
      'classify_requests_total{route="classify",status="200"}',
      'classify_images_total{outcome="ok"}',
      'classify_batch_size_bucket',
      'classify_queue_wait_seconds_bucket',
      'classify_inference_seconds_bucket',
      'classify_model_info{model=',
    ]) {
      expect(text).toContain(name);
    }
  });

  it('writes one access-log line per request on stderr', () => {
    expect(server.stderr()).toMatch(/127\.0\.0\.1 POST \/ 200 1 image [\d.]+ms/);
  });
});

describe('classify serve: limits and shutdown', () => {
  it('answers 503 with Retry-After beyond --max-queue', async () => {
    const server = await startServer(['--max-queue', '2', '--quiet']);
    try {
      const r = await post(server.url, form(['1.jpg', image('red.jpg')], ['2.jpg', image('red.jpg')], ['3.jpg', image('red.jpg')]));
      expect(r.status).toBe(503);
      expect(r.headers.get('retry-after')).toBe('1');
      expect((await post(server.url, form(['1.jpg', image('red.jpg')]))).status).toBe(200);
      expect(server.stderr()).not.toMatch(/POST/); // --quiet: no access log
    } finally {
      await server.close();
    }
  });

  it('on SIGTERM drains: /readyz 503, new uploads 503, the request in flight finishes, then exit 0', async () => {
    const server = await startServer([], COLOUR, { real: true });
    const bytes = image('red.jpg');
    // A raw upload sent in two halves: the request is in flight while the signal arrives.
    const req = request(server.url, { method: 'POST', headers: { 'content-type': 'image/jpeg', 'content-length': bytes.length } });
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
    });
    req.write(bytes.subarray(0, bytes.length >> 1));
    await new Promise((r) => setTimeout(r, 150));
    server.signal('SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    // The listener stays open while draining, so a readiness probe hears that it is not ready.
    const ready = await fetch(server.url + '/readyz');
    expect(ready.status).toBe(503);
    expect((await ready.json()).ready).toBe(false);
    expect((await fetch(server.url + '/healthz')).status).toBe(200);
    const late = await post(server.url, form(['red.jpg', image('red.jpg')]));
    expect(late.status).toBe(503);
    expect(late.headers.get('retry-after')).toBe('1');
    expect(late.body.error).toMatch(/shutting down/);
    expect(server.running()).toBe(true); // still finishing the upload
    req.end(bytes.subarray(bytes.length >> 1));
    const r = await answer;
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).predictions[0].label).toBe('red');
    expect(await server.exited).toBe(0);
  });

  it('binds to loopback by default and refuses a busy port with exit 2', async () => {
    const server = await startServer([]);
    try {
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:/);
      const port = new URL(server.url).port;
      const second = await runInProcess(['serve', '-g', COLOUR, '--port', port]);
      expect(second.code).toBe(2);
      expect(second.stderr).toMatch(/cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
    } finally {
      await server.close();
    }
  });
});
