// What one client can make the server hold: bytes across requests, time for a body, time to
// drain after SIGTERM. Each limit answers at once, and the server goes on serving.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COLOUR, runInProcess } from './helpers.js';
import { connection, form, image, parseAnswer, post, postHead, raw, rawAnswer, type Server, startServer } from './serve-helpers.js';

const metric = async (server: Server, name: string) => {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)![1]);
};

/** A raw JPEG body of `size` bytes: red.jpg, then zeros (ignored after the end-of-image marker). */
const paddedRed = (size: number) => Buffer.concat([image('red.jpg'), Buffer.alloc(size - image('red.jpg').length)]);

describe('classify serve: bytes buffered across requests', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServer(['--quiet', '--max-body', '600000', '--max-buffered', '1000000']);
  });
  afterAll(() => server.close());

  it('a Content-Length over --max-body is a 413 from the headers alone, before the body is sent', async () => {
    // No body at all follows the head: without an answer from the headers this would wait.
    const r = await rawAnswer(server.port, postHead({ 'Content-Type': 'image/jpeg', 'Content-Length': 1_000_000_000 }), 5000);
    expect(r.status).toBe(413);
    expect(r.head).toMatch(/^connection: close$/im);
    expect(JSON.parse(r.body).error).toBe('request body over the limit of 600000 bytes (--max-body)');
    // With Expect: 100-continue the client is told before it sends a byte of it.
    const text = await raw(server.port, postHead({ 'Content-Type': 'image/jpeg', 'Content-Length': 700_000, Expect: '100-continue' }), 5000);
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    expect(text).not.toMatch(/100 Continue/);
  });

  it('past --max-buffered a request gets 503 + Retry-After before its body is read; the bytes come back', async () => {
    const body = paddedRed(600_000);
    const head = postHead({ 'Content-Type': 'image/jpeg', 'Content-Length': body.length });
    // One upload stalls partway, holding the 600000 bytes it declared of the budget of 1000000.
    const stalled = connection(server.port, 20_000);
    stalled.write(Buffer.concat([Buffer.from(head), body.subarray(0, 1000)]));
    await expect.poll(() => metric(server, 'classify_upload_bytes_buffered')).toBe(600_000);
    const another = postHead({ 'Content-Type': 'image/jpeg', 'Content-Length': 500_000 });
    const refused = await rawAnswer(server.port, another, 5000); // the head alone: answered without its body
    expect(refused.status).toBe(503);
    expect(refused.head).toMatch(/^retry-after: 1$/im);
    expect(JSON.parse(refused.body).error).toBe('server busy: 600000 bytes of uploads already buffered (--max-buffered 1000000)');
    // Without a Content-Length the budget is taken as the bytes arrive.
    const chunked = await rawAnswer(
      server.port,
      postHead({ 'Content-Type': 'image/jpeg', 'Transfer-Encoding': 'chunked' }) + `${(550_000).toString(16)}\r\n${'x'.repeat(550_000)}\r\n`,
      5000,
    );
    expect(chunked.status).toBe(503);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    // A small upload still fits beside the stalled one.
    const small = await post(server.url, image('green.jpg'), { 'Content-Type': 'image/jpeg' });
    expect(small.body.predictions[0].label).toBe('green');
    // The stalled upload ends; its bytes come back, and one as large as the refused one is taken.
    stalled.write(body.subarray(1000));
    const first = parseAnswer(await stalled.text)!;
    expect(first.status).toBe(200);
    expect(JSON.parse(first.body).predictions[0].label).toBe('red');
    expect(await metric(server, 'classify_upload_bytes_buffered')).toBe(0);
    expect((await post(server.url, paddedRed(500_000), { 'Content-Type': 'image/jpeg' })).status).toBe(200);
  });

  it('a burst of uploads past the budget: each is answered 200 or 503, then the bytes are all back', async () => {
    const body = paddedRed(300_000);
    const answers = await Promise.all(Array.from({ length: 24 }, () => post(server.url, body, { 'Content-Type': 'image/jpeg' })));
    const statuses = answers.map((a) => a.status);
    expect(statuses.every((s) => s === 200 || s === 503)).toBe(true);
    expect(statuses).toContain(200);
    expect(statuses).toContain(503);
    for (const a of answers) if (a.status === 503) expect(a.headers.get('retry-after')).toBe('1');
    expect(await metric(server, 'classify_upload_bytes_buffered')).toBe(0);
    expect((await post(server.url, body, { 'Content-Type': 'image/jpeg' })).status).toBe(200);
  });

  it('refuses --max-buffered below --max-body before loading the model', async () => {
    const r = await runInProcess(['serve', '-g', COLOUR, '--port', '0', '--max-body', '2000', '--max-buffered', '1000']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Expected at least --max-body \(2000\) for --max-buffered but received 1000/);
  });
});

describe('classify serve: time limits', () => {
  it('a body that stops arriving gets 408 after --body-timeout, and the server goes on', async () => {
    const server = await startServer(['--quiet', '--body-timeout', '400']);
    try {
      const stalled = connection(server.port, 10_000);
      stalled.write(postHead({ 'Content-Type': 'image/jpeg', 'Content-Length': 5000 }) + 'x'.repeat(100));
      const answer = parseAnswer(await stalled.text)!;
      expect(answer.status).toBe(408);
      expect(JSON.parse(answer.body)).toEqual({ error: 'request body not received within 400 ms (--body-timeout)' });
      expect(await metric(server, 'classify_upload_bytes_buffered')).toBe(0);
      expect((await post(server.url, form(['red.jpg', image('red.jpg')]))).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('SIGTERM with an upload stalled: /readyz says 503, then after --drain-timeout the connection is closed and the process exits', async () => {
    const server = await startServer(['--drain-timeout', '1500'], COLOUR, { real: true });
    try {
      const stalled = await stallUpload(server);
      const signalled = performance.now();
      await terminateToDrain(server);
      const code = await server.exited;
      const took = performance.now() - signalled;
      expect(await stalled.text).toBe(''); // closed without an answer: it never sent its body
      // Bounded: the drain timeout plus start-up-free slack, far from the body timeout's 60 s.
      expect(took).toBeGreaterThanOrEqual(1400);
      expect(took).toBeLessThan(1500 + 8000);
      expect(code).toBe(1);
      expect(server.stderr()).toMatch(/SIGTERM: finishing in-flight requests/);
      expect(server.stderr()).toMatch(/drain took over --drain-timeout 1500 ms: closed 1 request still in flight/);
    } finally {
      await server.close();
    }
  });

  it('SIGTERM then SIGINT while draining exits 1 at once (the second signal need not be the same one)', async () => {
    const server = await startServer(['--drain-timeout', '30000'], COLOUR, { real: true });
    try {
      await stallUpload(server);
      await terminateToDrain(server);
      const signalled = performance.now();
      server.signal('SIGINT');
      expect(await server.exited).toBe(1);
      expect(performance.now() - signalled).toBeLessThan(5000); // not the 30 s drain
    } finally {
      await server.close();
    }
  });
});

/** An upload that sends its head and 100 of its 5000 bytes, then nothing: held by the server. */
async function stallUpload(server: Awaited<ReturnType<typeof startServer>>) {
  const stalled = connection(server.port, 30_000);
  stalled.write(postHead({ 'Content-Type': 'image/jpeg', 'Content-Length': 5000 }) + 'x'.repeat(100));
  await expect.poll(() => metric(server, 'classify_upload_bytes_buffered')).toBe(5000);
  return stalled;
}

/** SIGTERM, then wait until /readyz says the server is draining. */
async function terminateToDrain(server: Awaited<ReturnType<typeof startServer>>) {
  server.signal('SIGTERM');
  await expect.poll(async () => (await fetch(`${server.url}/readyz`)).status).toBe(503);
}
