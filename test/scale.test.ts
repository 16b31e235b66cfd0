// Scaling out: the --remote client over several servers, nginx in front, model versions.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { BackendPool } from '../src/remote/pool.js';
import { COLOUR, FIX, jsonLines, lines, ROOT, runInProcess } from './helpers.js';
import { type Server, startServer } from './serve-helpers.js';
import { freePort } from './remote-fakes.js';

const started: Server[] = [];
afterEach(() => Promise.all(started.splice(0).map((s) => s.close())));

/** A server for the test, closed after it; `real`: a process of its own, to be killed. */
async function serve(graph: string, extra: string[] = [], real = false): Promise<Server> {
  const server = await startServer(['--quiet', ...extra], graph, { real });
  started.push(server);
  return server;
}

const COLOURS: [string, string][] = [
  [join(FIX, 'images', 'red.jpg'), 'red'],
  [join(FIX, 'images', 'green.jpg'), 'green'],
  [join(FIX, 'images', 'blue.jpg'), 'blue'],
];
const manyPaths = (n: number) => Array.from({ length: n }, (_, i) => COLOURS[i % 3]);

/** Runs the client, calling `onLine(count)` as lines arrive. */
const client = (args: string[], input: string | Readable, onLine?: (count: number) => void) => runInProcess(args, input, { onStdout: (soFar) => onLine?.(lines(soFar).length) });

describe('classify --remote', () => {
  it('spreads paths over three servers; one killed midway costs no path its line', async () => {
    // The one killed is a process of its own, as a crashed backend would be.
    const servers = await Promise.all([serve(COLOUR), serve(COLOUR, [], true), serve(COLOUR)]);
    const input = manyPaths(200);
    let killed = false;
    const r = await client(['--remote', servers.map((s) => s.url).join(','), '--remote-in-flight', '4', '-k', '1'], input.map(([p]) => p).join('\n'), (n) => {
      if (!killed && n >= 60) {
        killed = true;
        void servers[1].close();
      }
    });
    expect(killed).toBe(true);
    expect(r.code).toBe(0);
    const out = jsonLines(r.stdout);
    expect(out).toHaveLength(200);
    expect(out.map((o) => o.path)).toEqual(input.map(([p]) => p));
    expect(out.map((o) => o.predictions[0].label)).toEqual(input.map(([, label]) => label));
    // Several requests in flight failed with it: still one line.
    expect(lines(r.stderr)).toEqual([expect.stringMatching(`^classify: backend 127.0.0.1:${servers[1].port} left out: `)]);
  });

  it("passes on the server's answer for a bad image without retrying it elsewhere", async () => {
    const s = await serve(COLOUR);
    const r = await runInProcess(['--remote', s.url, '-q'], `${join(FIX, 'broken', 'not-an-image.jpg')}\n${COLOURS[2][0]}\n${join(FIX, 'nope.jpg')}\n`);
    expect(r.code).toBe(1);
    const [bad, good, missing] = jsonLines(r.stdout);
    expect(bad.error).toMatch(/not an image/);
    expect(good.predictions[0].label).toBe('blue');
    expect(missing.error).toBe('no such file'); // read locally: never sent
  });

  it('--remote and --graph together are a usage error', async () => {
    const r = await runInProcess(['--remote', 'http://127.0.0.1:1', '--graph', COLOUR], '');
    expect(r.code).toBe(2);
  });
});

describe('BackendPool', () => {
  it('counts every address a hostname resolves to as a backend', async () => {
    const { lookup } = await import('node:dns/promises');
    const addresses = await lookup('localhost', { all: true });
    const pool = new BackendPool([new URL('http://localhost:9876')], { maxInFlight: 1, ejectMs: 1000, refreshMs: 60_000 });
    await pool.start();
    expect(pool.size).toBe(new Set(addresses.map((a) => a.address)).size);
    pool.stop();
  });

  it('picks the least loaded backend, skips tried and ejected ones', async () => {
    const pool = new BackendPool([new URL('http://127.0.0.1:1'), new URL('http://127.0.0.2:2')], { maxInFlight: 2, ejectMs: 60_000, refreshMs: 60_000 });
    await pool.start();
    const a = (await pool.acquire(new Set()))!;
    const b = (await pool.acquire(new Set()))!;
    expect(a.url).not.toBe(b.url); // the second goes to the idle one
    pool.release(a, false); // a failed: left out
    const c = (await pool.acquire(new Set()))!;
    expect(c.url).toBe(b.url);
    expect(await pool.acquire(new Set([b.url]))).toBeUndefined(); // a is out, b already tried
    pool.stop();
  });
});

const hasNginx = spawnSync('sh', ['-c', 'command -v nginx || test -x /usr/sbin/nginx']).status === 0;
if (!hasNginx) console.warn('skipping the nginx test: nginx is not installed (.ci/run installs it with apt-get)');

describe.runIf(hasNginx)('behind nginx, with the README configuration', () => {
  it('classifies through nginx in front of two servers', async () => {
    const [a, b] = await Promise.all([serve(COLOUR), serve(COLOUR)]);
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'classify-nginx-'));
    const site = readFileSync(join(ROOT, 'deploy', 'nginx', 'classify.conf'), 'utf8')
      .replace('127.0.0.1:9876', `127.0.0.1:${a.port}`)
      .replace('127.0.0.1:9877', `127.0.0.1:${b.port}`)
      .replace('listen 127.0.0.1:8080', `listen 127.0.0.1:${port}`);
    for (const d of ['client', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d));
    writeFileSync(
      join(dir, 'nginx.conf'),
      `daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log; worker_processes 1;
events { worker_connections 256; }
http { access_log off; client_body_temp_path ${dir}/client; proxy_temp_path ${dir}/proxy;
fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
${site} }`,
    );
    const nginx = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
    onTestFinished(() => void nginx.kill('SIGKILL'));
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 50; i++) {
      if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const input = manyPaths(60);
    const r = await client(['--remote', url, '-k', '1'], input.map(([p]) => p).join('\n'));
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(input.map(([, l]) => l));
    // And as curl -F sends it.
    const form = new FormData();
    form.append('data', new Blob([readFileSync(COLOURS[1][0])]), 'green.jpg');
    const res = await fetch(url, { method: 'POST', body: form });
    expect((await res.json()).predictions[0].label).toBe('green');
  });
});

describe('model versions', () => {
  it('the CLI serves the highest version and prints it with --verbose and --with-version', async () => {
    const root = mkdtempSync(join(tmpdir(), 'classify-versions-'));
    cpSync(COLOUR, join(root, '1'), { recursive: true });
    cpSync(join(FIX, 'models', 'colour-nhwc'), join(root, '3'), { recursive: true });
    const r = await runInProcess(['-g', root, '--with-version', '-v', '-k', '1', COLOURS[0][0]]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/model .*\/3\/model\.onnx \(version 3\)/);
    expect(jsonLines(r.stdout)[0]).toMatchObject({ version: '3', predictions: [{ label: 'red' }] });
  });

  it('serve switches to a new version under load without failing a request', async () => {
    const root = mkdtempSync(join(tmpdir(), 'classify-versions-'));
    cpSync(COLOUR, join(root, '1'), { recursive: true });
    const s = await serve(root, ['--watch-interval', '200']);
    const input = manyPaths(200);
    let added = false;
    let publish = () => {};
    const serving2 = new Promise<void>((resolve) => (publish = resolve)).then(async () => {
      while ((await (await fetch(`${s.url}/readyz`)).json()).version !== '2') await new Promise((resolve) => setTimeout(resolve, 50));
    });
    // The last fifty paths wait until version 2 answers /readyz: however fast the first 150 go,
    // some answers come from it.
    const paths = input.map(([p]) => `${p}\n`);
    const stdin = Readable.from(
      (async function* () {
        yield paths.slice(0, 150).join('');
        await serving2;
        yield paths.slice(150).join('');
      })(),
    );
    const r = await client(['--remote', s.url, '--with-version', '-k', '1', '--remote-in-flight', '4'], stdin, (n) => {
      if (!added && n >= 50) {
        added = true;
        // Written elsewhere, then renamed in: how a deploy should publish a version.
        cpSync(join(FIX, 'models', 'colour-nhwc'), join(root, 'incoming'), { recursive: true });
        renameSync(join(root, 'incoming'), join(root, '2'));
        publish();
      }
    });
    expect(r.code).toBe(0);
    const out = jsonLines(r.stdout);
    expect(out).toHaveLength(200);
    expect(out.map((o) => o.predictions[0].label)).toEqual(input.map(([, l]) => l));
    const versions = out.map((o) => o.version).join('');
    expect(versions).toMatch(/^1+2+$/); // every answer from 1, then every answer from 2
    // ...and each line names the model that answered: two fingerprints, in the same two runs.
    const models = out.map((o) => o.model).join(' ');
    expect(models).toMatch(/^([0-9a-f]{16})( \1)* (?!\1)([0-9a-f]{16})( \3)*$/);
    const ready = await (await fetch(`${s.url}/readyz`)).json();
    expect(ready.version).toBe('2');
    expect(await (await fetch(`${s.url}/metrics`)).text()).toMatch(/classify_model_info\{[^}]*version="2"\} 1/);
  });

  it('a version that fails to load is logged and the old one keeps serving', async () => {
    const root = mkdtempSync(join(tmpdir(), 'classify-versions-'));
    cpSync(COLOUR, join(root, '1'), { recursive: true });
    const server = await startServer(['--watch-interval', '100'], root);
    started.push(server);
    const url = server.url;
    cpSync(join(FIX, 'models', 'broken'), join(root, '2'), { recursive: true });
    // In the words a failed start says it: the file, then the reason.
    await expect.poll(() => server.stderr(), { timeout: 5000 }).toMatch(/version 2 failed to load, still serving 1: \S*\/2\/\S+: /);
    const form = new FormData();
    form.append('data', new Blob([readFileSync(COLOURS[0][0])]), 'red.jpg');
    const res = await (await fetch(`${url}/?top_k=1`, { method: 'POST', body: form })).json();
    expect(res).toMatchObject({ version: '1', predictions: [{ label: 'red' }] });
  });
});
