// Stand-ins for `classify serve` backends, for the --remote client's tests: plain node:http
// servers that answer /readyz like a server and POST / however the test says.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach } from 'vitest';
import { FIX, type Run, runInProcess } from './helpers.js';

export interface Fake {
  url: string;
  port: number;
  /** POSTs received */
  posts: number;
}

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map((s) => {
      s.closeAllConnections();
      return new Promise((r) => s.close(r));
    }),
  );
});

/** A backend whose /readyz answers `ready` (200 by default) and whose POSTs go to `post`. */
export async function fakeBackend(post: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void, ready = 200, port = 0): Promise<Fake> {
  const fake = { url: '', port: 0, posts: 0 };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST') return void res.writeHead(ready, { 'Content-Type': 'application/json' }).end(`{"ready":${ready === 200}}`);
      fake.posts++;
      post(req, res, Buffer.concat(chunks));
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  fake.port = (server.address() as AddressInfo).port;
  fake.url = `http://127.0.0.1:${fake.port}`;
  return fake;
}

/** What the good fake calls an image: a digest of its bytes, so a test knows each line's answer. */
export const labelOf = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex').slice(0, 12);

export const goodAnswer = (_req: IncomingMessage, res: ServerResponse, body: Buffer) => {
  res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ path: 'upload', predictions: [{ label: labelOf(body), score: 0.9 }] }));
};

export const IMAGES = ['red.jpg', 'green.jpg', 'blue.jpg'].map((f) => join(FIX, 'images', f));
/** `n` paths cycling through the fixtures, with the label the good fake gives each. */
export const inputs = (n: number) => Array.from({ length: n }, (_, i) => IMAGES[i % IMAGES.length]).map((p) => ({ path: p, label: labelOf(readFileSync(p)) }));

/** Runs the CLI in process with `input` on stdin, or with stdin left open when `input` is
 * undefined (a run that waits on it fails the test on its timeout). */
export function classify(args: string[], input?: string): Promise<Run> {
  return runInProcess(args, input ?? new PassThrough());
}

/** A port nothing listens on (a backend that is down). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createNetServer().listen(0, '127.0.0.1', () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}
