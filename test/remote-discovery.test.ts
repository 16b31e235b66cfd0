// Issue 24 (discovery) and items 6 and 9 of issue 20: --remote follows what a name resolves to,
// waits for a backend that restarts instead of failing the rest of the input, notices one that
// now serves another model, and says "timed out" for an answer that trickles in too slowly.
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BackendPool, type Resolver } from '../src/remote/pool.js';
import { RemoteImageError } from '../src/errors.js';
import { RemoteClassifier } from '../src/remote/client.js';
import { jsonLines } from './helpers.js';
import { classify, fakeBackend, IMAGES, inputs, labelOf } from './remote-fakes.js';

const open: Server[] = [];
afterEach(() => {
  for (const s of open.splice(0)) {
    s.closeAllConnections();
    s.close();
  }
});

/** A backend answering as classify serve does, naming `model` in X-Model-Fingerprint, each
 * answer after `delayMs`; `hits` counts the images it answered. */
function backend(model: string, opts: { port?: number; host?: string; delayMs?: number } = {}) {
  const state = { hits: 0, port: 0, server: undefined as Server | undefined };
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST') return void res.writeHead(200, { 'X-Model-Fingerprint': model }).end('{"ready":true}');
      setTimeout(() => {
        state.hits++;
        res.writeHead(200, { 'X-Model-Fingerprint': model }).end(JSON.stringify({ predictions: [{ label: labelOf(Buffer.concat(chunks)), score: 0.9 }] }));
      }, opts.delayMs ?? 0);
    });
  };
  return new Promise<typeof state>((resolve) => {
    const server = createServer(handle);
    open.push(server);
    state.server = server;
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      state.port = (server.address() as AddressInfo).port;
      resolve(state);
    });
  });
}

/** Stops listening and drops its connections: what a restarting server looks like from outside. */
const kill = (server: Server) => {
  server.closeAllConnections();
  server.close();
};

const until = async (cond: () => boolean) => {
  while (!cond()) await new Promise((r) => setTimeout(r, 10));
};

describe('a lone backend restarting (issue 20, item 6)', () => {
  it('loses no line: images wait for it to be back, and the lines say which model answered', async () => {
    const first = await backend('aaaa1111');
    const log: string[] = [];
    const remote = await RemoteClassifier.connect({ urls: [`http://127.0.0.1:${first.port}`], maxInFlight: 4, timeoutMs: 10_000, probeMs: 20, log: (l) => log.push(l) });
    const input = inputs(60);
    let restarted: Promise<unknown> | undefined;
    // 4 images at a time, as the filter's window would send them.
    const answers: { label: string; model?: string }[] = [];
    for (let i = 0; i < input.length; i += 4) {
      if (i === 20) {
        // Down: connections refused for 300 ms, then back, serving another model.
        kill(first.server!);
        restarted = new Promise((r) => setTimeout(r, 300)).then(() => backend('bbbb2222', { port: first.port }));
      }
      const batch = await Promise.all(input.slice(i, i + 4).map((p) => remote.classifyPath(p.path, { topK: 1, threshold: 0 })));
      answers.push(...batch.map((a) => ({ label: a.predictions[0].label, model: a.model })));
    }
    await restarted;
    await remote.close();
    expect(answers.map((a) => a.label)).toEqual(input.map((i) => i.label));
    expect(answers.slice(0, 20).every((a) => a.model === 'aaaa1111')).toBe(true);
    expect(answers.slice(20).every((a) => a.model === 'bbbb2222')).toBe(true);
    // Its open connections dropped (socket hang up) or new ones refused: out at once, either way.
    expect(log[0]).toMatch(new RegExp(`^backend 127\\.0\\.0\\.1:${first.port} left out: (socket hang up|.*ECONNREFUSED)`));
    expect(log).toContain(`backend 127.0.0.1:${first.port} is back`);
    expect(log).toContain(`backend 127.0.0.1:${first.port} now serves model bbbb2222 (was aaaa1111)`);
  });

  it('one that stays down: each image fails once --remote-timeout has passed, not at once', async () => {
    const only = await backend('aaaa1111');
    const remote = await RemoteClassifier.connect({ urls: [`http://127.0.0.1:${only.port}`], maxInFlight: 4, timeoutMs: 200, probeMs: 20 });
    kill(only.server!);
    const started = Date.now();
    await expect(remote.classifyPath(IMAGES[0], { topK: 1, threshold: 0 })).rejects.toThrow(/^all backends failed \(127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    await remote.close();
  });
});

describe('a backend that trickles its answer (issue 20, item 9)', () => {
  it('is reported as timed out, not cut short', async () => {
    const slow = await fakeBackend((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write('{"predictions":[');
      const drip = setInterval(() => (res.destroyed ? clearInterval(drip) : res.write(' ')), 20);
    });
    const remote = await RemoteClassifier.connect({ urls: [slow.url], maxInFlight: 1, timeoutMs: 150, probeMs: 1000 });
    await expect(remote.classifyPath(IMAGES[0], { topK: 1, threshold: 0 })).rejects.toThrow(new RemoteImageError(`all backends failed (127.0.0.1:${slow.port}: timed out)`));
    await remote.close();
  });
});

describe('discovery: what a name resolves to (issue 24)', () => {
  /** A resolver for the name "pods" answering whatever `addresses` holds now. */
  const resolverOf = (addresses: string[]): Resolver => async (host) => {
    expect(host).toBe('pods');
    return addresses.map((address) => ({ address, family: 4 }));
  };

  it('names are resolved as the system resolves them (getaddrinfo): /etc/hosts names localhost', async () => {
    const pool = new BackendPool([new URL('http://localhost:9')], { maxInFlight: 1, ejectMs: 1000, refreshMs: 60_000 });
    await pool.start();
    pool.stop();
    expect(pool.all.map((b) => new URL(b.url).hostname).every((h) => ['127.0.0.1', '[::1]'].includes(h))).toBe(true);
    expect(pool.all.map((b) => b.host)).toContain('localhost:9');
  });

  it('a backend added to the name is used within --remote-refresh', async () => {
    // Two loopback addresses, one port: two "pods" behind one name.
    const a = await backend('aaaa1111', { host: '127.0.0.1' });
    const b = await backend('aaaa1111', { host: '127.0.0.2', port: a.port });
    const addresses = ['127.0.0.1'];
    const log: string[] = [];
    const remote = await RemoteClassifier.connect({ urls: [`http://pods:${a.port}`], maxInFlight: 2, timeoutMs: 5000, refreshMs: 30, resolver: resolverOf(addresses), log: (l) => log.push(l) });
    expect(remote.backends).toBe(1);
    addresses.push('127.0.0.2');
    await until(() => remote.backends === 2);
    await Promise.all(inputs(8).map((p) => remote.classifyPath(p.path, { topK: 1, threshold: 0 })));
    expect(b.hits).toBeGreaterThan(0);
    expect(log).toEqual([`backend 127.0.0.2:${a.port} added (pods resolves to it)`]);
    await remote.close();
  });

  it('an address that goes away finishes what it has in flight, gets nothing new, and no line is lost', async () => {
    const a = await backend('aaaa1111', { host: '127.0.0.1', delayMs: 150 });
    const b = await backend('aaaa1111', { host: '127.0.0.2', port: a.port });
    const addresses = ['127.0.0.1', '127.0.0.2'];
    const log: string[] = [];
    const remote = await RemoteClassifier.connect({ urls: [`http://pods:${a.port}`], maxInFlight: 2, timeoutMs: 5000, refreshMs: 30, resolver: resolverOf(addresses), log: (l) => log.push(l) });
    const input = inputs(4);
    const first = input.map((p) => remote.classifyPath(p.path, { topK: 1, threshold: 0 })); // two each
    addresses.shift(); // 127.0.0.1 is scaled away while its two answers are on their way
    await until(() => log.length > 0);
    const later = inputs(10).map((p) => remote.classifyPath(p.path, { topK: 1, threshold: 0 }));
    const answers = await Promise.all([...first, ...later]);
    expect(answers.map((x) => x.predictions[0].label)).toEqual([...input, ...inputs(10)].map((i) => i.label));
    expect(a.hits).toBe(2); // what it had in flight, and nothing after
    expect(b.hits).toBe(12);
    expect(log).toEqual([`backend pods:${a.port} (127.0.0.1) removed (no longer resolved): finishing 2 in flight`]);
    expect(remote.backends).toBe(1);
    await remote.close();
  });
});

describe('--remote with -o FILE --resume', () => {
  it('keys FILE on the model the backends name: a second run skips what the first answered', async () => {
    const b = await backend('aaaa1111');
    const file = join(mkdtempSync(join(tmpdir(), 'classify-remote-resume-')), 'labels.ndjson');
    const input = inputs(3).map((i) => i.path).join('\n');
    const args = ['--remote', `http://127.0.0.1:${b.port}`, '-o', file, '--resume', '-v'];
    const first = await classify(args, input);
    expect(first.code).toBe(0);
    expect(first.stderr).toContain(`classify: ${file}: 0 inputs skipped (answered before), 3 classified, 0 failed\n`);
    expect(jsonLines(readFileSync(file, 'utf8')).map((l) => l.model)).toEqual(['aaaa1111', 'aaaa1111', 'aaaa1111']);
    const second = await classify(args, input);
    expect(second.code).toBe(0);
    expect(second.stderr).toContain(`classify: ${file}: 3 inputs skipped (answered before), 0 classified, 0 failed\n`);
    expect(b.hits).toBe(3);
  });

  it('is refused (exit 2, nothing read) when the backends do not name their model', async () => {
    const anonymous = await fakeBackend((_req, res) => res.end('{"predictions":[]}'));
    const r = await classify(['--remote', anonymous.url, '-o', '/dev/null', '--resume']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^classify: --resume: the --remote backends do not say which model they serve/);
  });
});
