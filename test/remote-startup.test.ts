// Item 15 and part of 19 of issue 12: --remote checks its backends before reading any input.
// A bad URL or no backend ready exits 2 with nothing read (stdin is left open here: a run that
// read it would never end); a backend down at start is left out, with one line saying so.
import { describe, expect, it } from 'vitest';
import { jsonLines, lines } from './helpers.js';
import { classify, fakeBackend, freePort, goodAnswer, inputs } from './remote-fakes.js';

describe('classify --remote at start', () => {
  it('exits 2 before reading input when no backend answers, naming each and why', async () => {
    const [a, b] = [await freePort(), await freePort()];
    const r = await classify(['--remote', `http://127.0.0.1:${a},127.0.0.1:${b}`]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toEqual([expect.stringMatching(new RegExp(`^classify: no --remote backend is ready: 127\\.0\\.0\\.1:${a}: .*ECONNREFUSED.*; 127\\.0\\.0\\.1:${b}: .*ECONNREFUSED`))]);
  });

  it('exits 2 when the only backend is not ready (draining: /readyz 503)', async () => {
    const draining = await fakeBackend(goodAnswer, 503);
    const r = await classify(['--remote', draining.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(`no --remote backend is ready: 127.0.0.1:${draining.port}: GET /readyz answered HTTP 503`);
    expect(draining.posts).toBe(0);
  });

  it('leaves out a backend that is down, with one line, and classifies every path on the others', async () => {
    const [good, down] = [await fakeBackend(goodAnswer), await freePort()];
    const input = inputs(20);
    const text = input.map((i) => i.path).join('\n');
    const r = await classify(['--remote', `${good.url},http://127.0.0.1:${down}`], text);
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(input.map((i) => i.label));
    expect(lines(r.stderr)).toEqual([expect.stringMatching(new RegExp(`^classify: backend 127\\.0\\.0\\.1:${down} left out: .*ECONNREFUSED`))]);
    // -q: not a word.
    const quiet = await classify(['--remote', `${good.url},http://127.0.0.1:${down}`, '-q'], text);
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).toBe('');
  });

  it('talks to a backend on a port fetch refuses (6669: fetch says "bad port")', async () => {
    const backend = await fakeBackend(goodAnswer, 200, 6669);
    const input = inputs(3);
    const r = await classify(['--remote', backend.url], input.map((i) => i.path).join('\n'));
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(input.map((i) => i.label));
  });

  it.each([
    ['ftp://example.com', 'the scheme is ftp, not http or https'],
    ['http://[::1', 'not a valid URL'],
    ['http://host:99999', 'not a valid URL'],
  ])('a bad URL (%s) is a usage error: exit 2 before reading, naming it and why', async (url, why) => {
    const r = await classify(['--remote', `http://127.0.0.1:1,${url}`]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`classify: Expected http URL for --remote but received ${JSON.stringify(url)}: ${why}\n`);
  });
});
