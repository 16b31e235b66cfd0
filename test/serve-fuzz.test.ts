// One request's failure stays in that request: multipart bodies cut short and with broken
// boundaries, answered one by one while the server goes on serving.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { image, multipart, postHead, raw, rawAnswer, type Server, startServer } from './serve-helpers.js';

const BOUNDARY = 'fuzz0boundary';
const FILES: [string, Buffer][] = [
  ['r.jpg', image('red.jpg')],
  ['g.jpg', image('green.jpg')],
  ['b.jpg', image('blue.jpg')],
];
const BODY = multipart(BOUNDARY, FILES);
const TYPE = `multipart/form-data; boundary=${BOUNDARY}`;

function postMultipart(url: string, body: Buffer, type = TYPE) {
  return fetch(url, { method: 'POST', body, headers: { 'Content-Type': type } }).then(async (r) => ({ status: r.status, body: await r.json() }));
}

/** Where each delimiter line (--BOUNDARY) starts. */
function delimiters(): number[] {
  const at: number[] = [];
  for (let i = BODY.indexOf(`--${BOUNDARY}`); i >= 0; i = BODY.indexOf(`--${BOUNDARY}`, i + 1)) at.push(i);
  return at;
}

describe('classify serve: malformed multipart', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServer(['--quiet']);
  });
  afterAll(() => {
    return server.close();
  });

  const stillServing = async () => {
    expect(server.running()).toBe(true);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const good = await postMultipart(server.url, BODY);
    expect(good.status).toBe(200);
    expect(good.body.map((r: { predictions: { label: string }[] }) => r.predictions[0].label)).toEqual(['red', 'green', 'blue']);
  };

  it('the request from the issue (a part cut off, no closing boundary) is a 400, not a dead server', async () => {
    const body = Buffer.from('--XYZ\r\nContent-Disposition: form-data; name="data"; filename="a.jpg"\r\n\r\nxxxx');
    const r = await postMultipart(server.url, body, 'multipart/form-data; boundary=XYZ');
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/^bad multipart request: /);
    await stillServing();
  });

  it('a valid three-file request cut at any offset is a 4xx every time', async () => {
    const end = BODY.lastIndexOf(`--${BOUNDARY}--`) + BOUNDARY.length + 4; // past the closing "--"
    const offsets = new Set<number>();
    for (let at = 0; at < end; at += 61) offsets.add(at);
    for (const d of delimiters()) for (let k = -3; k <= BOUNDARY.length + 5; k++) offsets.add(d + k);
    const cuts = [...offsets].filter((at) => at >= 0 && at < end).sort((a, b) => a - b);
    expect(cuts.length).toBeGreaterThan(300);
    const failures: string[] = [];
    // Eight at a time: concurrent failures must not meet each other either.
    for (let i = 0; i < cuts.length; i += 8) {
      const batch = cuts.slice(i, i + 8);
      const answers = await Promise.all(batch.map((at) => postMultipart(server.url, BODY.subarray(0, at))));
      answers.forEach((a, j) => {
        if (!(a.status >= 400 && a.status < 500 && typeof a.body.error === 'string')) failures.push(`cut at ${batch[j]}: ${a.status} ${JSON.stringify(a.body)}`);
      });
    }
    expect(failures).toEqual([]);
    await stillServing();
  });

  it('a client that disconnects partway through is its own loss', async () => {
    const head = postHead({ 'Content-Type': TYPE, 'Content-Length': BODY.length });
    // Content-Length promises the whole body; the connection closes after part of it.
    await Promise.all([0, 100, 2000, 5100, 9000, BODY.length - 10].map((at) => raw(server.port, Buffer.concat([Buffer.from(head), BODY.subarray(0, at)]), 150)));
    await stillServing();
  });

  it('a corrupted boundary is a 4xx, or an answer for the parts still well formed, never more', async () => {
    const at = delimiters();
    const last = at[at.length - 1];
    const failures: string[] = [];
    for (const d of at) {
      // The dashes, the boundary's first, middle and last characters, the line end after it.
      for (const k of [0, 1, 2, 3, 2 + (BOUNDARY.length >> 1), 1 + BOUNDARY.length, 2 + BOUNDARY.length, 3 + BOUNDARY.length]) {
        const body = Buffer.from(BODY);
        body[d + k] = body[d + k] === 0x51 ? 0x52 : 0x51; // 'Q' (or 'R' over a 'Q')
        const r = await postMultipart(server.url, body);
        const fewer = r.status === 200 && Array.isArray(r.body) && r.body.length < FILES.length;
        const refused = r.status >= 400 && r.status < 500 && typeof r.body.error === 'string';
        // Without a closing delimiter the form never ends: that one is always refused.
        if (!(refused || (fewer && d !== last))) failures.push(`byte ${d + k}: ${r.status} ${JSON.stringify(r.body)}`);
      }
    }
    // A Content-Type naming another boundary than the body uses.
    for (const type of [`multipart/form-data; boundary=${BOUNDARY}x`, `multipart/form-data; boundary=${BOUNDARY.slice(1)}`, 'multipart/form-data', 'multipart/form-data; boundary=']) {
      const r = await postMultipart(server.url, BODY, type);
      if (!(r.status === 400 && typeof r.body.error === 'string')) failures.push(`${type}: ${r.status} ${JSON.stringify(r.body)}`);
    }
    expect(failures).toEqual([]);
    await stillServing();
  });

  it('garbage after a valid head and inside part headers is refused alone', async () => {
    const headers = Buffer.from(BODY);
    const first = BODY.indexOf('Content-Disposition');
    headers.fill(0, first, first + 10); // NULs in the first part's header name
    const noise = Buffer.concat([Buffer.from(`--${BOUNDARY}\r\n`), Buffer.alloc(5000, 0xff)]);
    for (const body of [headers, noise]) {
      const r = await postMultipart(server.url, body);
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
    }
    const answer = await rawAnswer(server.port, postHead({ 'Content-Type': TYPE, 'Transfer-Encoding': 'chunked' }) + 'zz\r\nnot hex\r\n');
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body).error).toMatch(/bad HTTP request/);
    await stillServing();
  });
});
