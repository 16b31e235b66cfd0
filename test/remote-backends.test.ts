// Item 14 of issue 12: a backend's 200 is not trusted. A malformed, cut or oversized answer is
// that backend failing (retried elsewhere, left out), never the run's end.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { BackendPool } from '../src/remote/pool.js';
import { RemoteImageError } from '../src/errors.js';
import { MAX_ANSWER_BYTES, parseAnswer, RemoteClassifier } from '../src/remote/client.js';
import { jsonLines, lines } from './helpers.js';
import { classify, fakeBackend, goodAnswer, IMAGES, inputs } from './remote-fakes.js';

type Post = (req: IncomingMessage, res: ServerResponse) => void;
const json = (status: number, body: string): Post => (_req, res) => res.writeHead(status, { 'Content-Type': 'application/json' }).end(body);

/** Streams zeros until the client hangs up (or 4 GiB); `sent` says how far it got. */
function endless(sent: { bytes: number }, declare: boolean): Post {
  return (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json', ...(declare ? { 'Content-Length': String(4 * 1024 ** 3) } : {}) });
    const chunk = Buffer.alloc(1024 * 1024, '0');
    const more = () => {
      while (!res.destroyed && sent.bytes < 4 * 1024 ** 3) {
        sent.bytes += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', more);
      }
    };
    res.on('error', () => undefined);
    more();
  };
}

const sent = { bytes: 0 };
const BAD: [string, Post, RegExp][] = [
  ['predictions that are not a list', json(200, '{"predictions":"pwned"}'), /malformed answer: "predictions" is not a list/],
  ['a prediction of the wrong shape', json(200, '{"predictions":[{"label":1,"score":"high"}]}'), /malformed answer: a prediction is not/],
  ['a body that is not JSON', json(200, '<html>hello</html>'), /answer is not JSON: "<html>hello<\/html>"/],
  [
    'a body cut short of its Content-Length',
    (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '1000' });
      res.write('{"predictions":[{"label":"red",', () => res.socket?.destroy());
    },
    /answer cut short/,
  ],
  ['an endless streamed body', endless(sent, false), new RegExp(`answer is over the ${MAX_ANSWER_BYTES}-byte limit`)],
  ['a 4 GiB Content-Length', endless(sent, true), new RegExp(`answer of ${4 * 1024 ** 3} bytes is over the ${MAX_ANSWER_BYTES}-byte limit`)],
];

describe.each(BAD)('a backend answering 200 with %s', (_name, post, reason) => {
  it('beside a good backend: every line gets its good answer, the bad one is left out once', async () => {
    sent.bytes = 0;
    const [bad, good] = await Promise.all([fakeBackend(post), fakeBackend(goodAnswer)]);
    const input = inputs(40);
    const r = await classify(['--remote', `${bad.url},${good.url}`, '--remote-in-flight', '2'], input.map((i) => i.path).join('\n') + '\n');
    expect(bad.posts).toBeGreaterThan(0); // it was asked, and failed
    expect(r.code).toBe(0);
    const out = jsonLines(r.stdout);
    expect(out.map((o) => o.path)).toEqual(input.map((i) => i.path));
    expect(out.map((o) => o.predictions)).toEqual(input.map((i) => [{ label: i.label, score: 0.9 }]));
    const notes = lines(r.stderr);
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatch(new RegExp(`^classify: backend 127\\.0\\.0\\.1:${bad.port} left out: ${reason.source}`));
    // A huge body is dropped at the limit, not read to the end (socket buffers allow some slack).
    expect(sent.bytes).toBeLessThan(64 * 1024 * 1024);
  });

  it('alone: each line is an error line and the run goes on to the end', async () => {
    const bad = await fakeBackend(post);
    const input = inputs(3);
    // Each image waits --remote-timeout for the backend to be back, retrying it, then fails.
    const r = await classify(['--remote', bad.url, '-q', '--remote-timeout', '400'], input.map((i) => i.path).join('\n') + '\n');
    expect(r.code).toBe(1);
    // Its /readyz says ready (it answers 200 to anything): retried once a probe round, not as fast
    // as it replies (500-600 posts in these 400 ms before; a handful now).
    expect(bad.posts).toBeLessThan(20);
    const out = jsonLines(r.stdout);
    expect(out.map((o) => o.path)).toEqual(input.map((i) => i.path));
    for (const o of out) {
      expect(o.predictions).toBeUndefined();
      // A slow machine may not have read an endless body's 4 MB in 400 ms: then it timed out.
      const why = _name === 'an endless streamed body' ? `(${reason.source}|timed out)` : reason.source;
      expect(o.error).toMatch(new RegExp(`^all backends failed \\(127\\.0\\.0\\.1:${bad.port}: (left out after )?${why}`));
    }
    expect(r.stderr).toBe(''); // -q: no per-image lines, no backend lines
  });
});

describe('a backend that answers the image itself', () => {
  it('a 4xx with an error is that line\'s error, not retried; a 408 or 429 is retried elsewhere', async () => {
    const refusing = await fakeBackend(json(415, '{"error":"not an image"}'));
    let r = await classify(['--remote', refusing.url, '-q', IMAGES[0]]);
    expect(r.code).toBe(1);
    expect(jsonLines(r.stdout)[0].error).toBe('not an image');
    for (const status of [408, 429]) {
      const [busy, good] = await Promise.all([fakeBackend(json(status, '{"error":"busy"}')), fakeBackend(goodAnswer)]);
      const input = inputs(6);
      r = await classify(['--remote', `${busy.url},${good.url}`, '-q'], input.map((i) => i.path).join('\n'));
      expect(busy.posts).toBeGreaterThan(0);
      expect(r.code).toBe(0);
      expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(input.map((i) => i.label));
    }
  });
});

describe('parseAnswer', () => {
  it('keeps only label and score, and the version when it is a string', () => {
    expect(parseAnswer('{"predictions":[{"label":"a","score":0.5,"path":"/etc/passwd"}],"version":"3","extra":1}', 5)).toEqual({
      predictions: [{ label: 'a', score: 0.5 }],
      version: '3',
    });
    expect(parseAnswer('{"predictions":[],"version":null}', 5)).toEqual({ predictions: [] });
  });

  it.each([
    ['[]', /not a JSON object/],
    ['null', /not a JSON object/],
    ['{}', /"predictions" is not a list/],
    ['{"predictions":[{"label":"a","score":1},{"label":"b","score":1}]}', /2 predictions for top_k 1/],
    ['{"predictions":[{"label":"a"}]}', /a prediction is not/],
    ['{"predictions":[{"label":"a","score":1e999}]}', /a prediction is not/],
    ['{"predictions":[null]}', /a prediction is not/],
    ['{"predictions":[],"version":3}', /"version" is not a string/],
    ['', /answer is not JSON: ""/],
  ])('refuses %s', (text, message) => {
    expect(() => parseAnswer(text, 1)).toThrow(message);
  });
});

describe('backends left out and back', () => {
  it('the pool says so once per outage, not once per failed request', async () => {
    // Its clock is Date's: faked, so that "its time out is over" is exact, not a sleep that a
    // busy machine may overrun.
    vi.useFakeTimers({ toFake: ['Date'] });
    onTestFinished(() => void vi.useRealTimers());
    const log: string[] = [];
    const pool = new BackendPool([new URL('http://127.0.0.1:1')], { maxInFlight: 4, ejectMs: 20, refreshMs: 60_000, log: (l) => log.push(l) });
    await pool.start();
    const [a, b] = [(await pool.acquire(new Set()))!, (await pool.acquire(new Set()))!];
    pool.release(a, false, 'boom');
    pool.release(b, false, 'boom'); // in flight with the first: the same outage
    expect(log).toEqual(['backend 127.0.0.1:1 left out: boom']);
    vi.advanceTimersByTime(19);
    expect(await pool.acquire(new Set())).toBeUndefined(); // left out for 20 ms
    vi.advanceTimersByTime(1);
    const c = (await pool.acquire(new Set()))!; // its time out is over: tried again, fails again
    pool.release(c, false, 'boom again');
    expect(log).toHaveLength(1);
    vi.advanceTimersByTime(39);
    expect(await pool.acquire(new Set())).toBeUndefined(); // the second failure doubles it: 40 ms
    vi.advanceTimersByTime(1);
    const d = (await pool.acquire(new Set()))!;
    pool.release(d, true);
    expect(log).toEqual(['backend 127.0.0.1:1 left out: boom', 'backend 127.0.0.1:1 is back']);
    pool.stop();
  });

  it('a backend that fails one request is left out, then back when it answers again: the image waits for it', async () => {
    let calls = 0;
    const flaky = await fakeBackend((req, res, body) => (++calls === 1 ? json(500, '{"error":"oops"}')(req, res) : goodAnswer(req, res, body)));
    const log: string[] = [];
    const remote = await RemoteClassifier.connect({ urls: [flaky.url], maxInFlight: 1, timeoutMs: 5000, ejectMs: 50, log: (l) => log.push(l) });
    expect((await remote.classifyPath(IMAGES[0], { topK: 1, threshold: 0 })).predictions).toEqual([{ label: inputs(1)[0].label, score: 0.9 }]);
    expect(calls).toBe(2);
    expect(log).toEqual([`backend 127.0.0.1:${flaky.port} left out: HTTP 500 oops`, `backend 127.0.0.1:${flaky.port} is back`]);
    await remote.close();
  });

  it('a backend that keeps failing: the image fails after --remote-timeout, saying why', async () => {
    const broken = await fakeBackend(json(500, '{"error":"oops"}'));
    const remote = await RemoteClassifier.connect({ urls: [broken.url], maxInFlight: 1, timeoutMs: 300, ejectMs: 50, probeMs: 50 });
    await expect(remote.classifyPath(IMAGES[0], { topK: 1, threshold: 0 })).rejects.toThrow(new RemoteImageError(`all backends failed (127.0.0.1:${broken.port}: HTTP 500 oops)`));
    expect(broken.posts).toBeGreaterThan(1); // tried again while it waited
    await remote.close();
  });
});
