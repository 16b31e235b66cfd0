// classify serve: the same classifier behind HTTP. Requests share the micro-batcher, so images
// from concurrent requests go through the model together.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CachingClassifier } from '../cache.js';
import type { Classifier } from '../classifier.js';
import { InputError, type InputErrorKind } from '../image/decode.js';
import { QueueFullError } from '../batcher.js';
import { BodyError, readUploads, type Upload } from './body.js';
import type { ServerMetrics } from './metrics.js';
import type { Log } from '../report.js';
import { jsonRecord, type Outcome } from '../output/format.js';

export interface ServeOptions {
  host: string;
  port: number;
  maxBody: number;
  /** images accepted but not yet answered, beyond which requests get 503 */
  maxQueue: number;
  maxFiles: number;
  topK: number;
  threshold: number;
  quiet: boolean;
}

const STATUS_OF: Record<InputErrorKind, number> = {
  empty: 400,
  'not-an-image': 415,
  corrupt: 422,
  'too-large': 422,
  'not-found': 500,
  'not-a-file': 500,
  permission: 500,
  read: 500,
};

type ImageResult = { outcome: Outcome; status: number };

export class ClassifyServer {
  private readonly server: Server;
  private imagesInFlight = 0;
  private requestsInFlight = 0;
  private draining = false;
  private drained: (() => void) | undefined;
  /** requests using each loaded model, so a replaced one is closed only once they finish */
  private readonly users = new Map<Classifier, number>();

  constructor(
    private classifier: Classifier,
    private readonly metrics: ServerMetrics,
    private readonly opts: ServeOptions,
    private readonly log: Log,
    /** --cache: answers for bytes seen before, per model */
    private readonly cache?: CachingClassifier,
  ) {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host, () => resolve(this.server.address() as AddressInfo));
    });
  }

  get model(): Classifier {
    return this.classifier;
  }

  /** Serves `next` from now on; requests already running finish on the model they started with. */
  swap(next: Classifier): void {
    const old = this.classifier;
    this.classifier = next;
    this.metrics.setModel(next.info);
    if (!this.users.get(old)) void old.close();
  }

  private use(): Classifier {
    const c = this.classifier;
    this.users.set(c, (this.users.get(c) ?? 0) + 1);
    return c;
  }

  private done(c: Classifier): void {
    const left = (this.users.get(c) ?? 1) - 1;
    if (left > 0) this.users.set(c, left);
    else {
      this.users.delete(c);
      if (c !== this.classifier) void c.close();
    }
  }

  /** Stops accepting, lets in-flight requests finish, then releases the model. */
  async shutdown(): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections();
    if (this.requestsInFlight > 0) await new Promise<void>((r) => (this.drained = r));
    this.server.closeAllConnections();
    await closed;
    await this.classifier.close();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const start = performance.now();
    this.requestsInFlight++;
    let route = 'other';
    let images = 0;
    try {
      if (this.draining) res.setHeader('Connection', 'close');
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/' && req.method === 'POST') {
        route = 'classify';
        images = await this.classifyRequest(req, res);
      } else if (path === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
        route = 'healthz';
        send(res, 200, { status: 'ok' });
      } else if (path === '/readyz' && (req.method === 'GET' || req.method === 'HEAD')) {
        route = 'readyz';
        const info = this.classifier.info;
        send(res, this.draining ? 503 : 200, { ready: !this.draining, model: info.model, version: info.version ?? null, engine: info.engine });
      } else if (path === '/metrics' && req.method === 'GET') {
        route = 'metrics';
        res.writeHead(200, { 'Content-Type': this.metrics.registry.contentType });
        res.end(await this.metrics.registry.metrics());
      } else if (['/', '/healthz', '/readyz', '/metrics'].includes(path)) {
        send(res, 405, { error: `method ${req.method} not allowed on ${path}` });
      } else {
        send(res, 404, { error: `no route ${path}; POST / with an image, GET /healthz, /readyz, /metrics` });
      }
    } catch (err) {
      if (!res.headersSent) send(res, 500, { error: `internal error: ${(err as Error).message}` });
      else res.destroy();
    } finally {
      this.metrics.requests.inc({ route, status: String(res.statusCode) });
      if (!this.opts.quiet) {
        const ms = (performance.now() - start).toFixed(1);
        this.log(`${req.socket.remoteAddress ?? '-'} ${req.method} ${req.url} ${res.statusCode} ${images} image${images === 1 ? '' : 's'} ${ms}ms`);
      }
      if (--this.requestsInFlight === 0) this.drained?.();
    }
  }

  /** Answers one classify request; returns how many images it held. */
  private async classifyRequest(req: IncomingMessage, res: ServerResponse): Promise<number> {
    let uploads: Upload[];
    try {
      uploads = await readUploads(req, this.opts.maxBody, this.opts.maxFiles);
    } catch (err) {
      if (err instanceof BodyError) {
        if (err.status === 413) res.setHeader('Connection', 'close');
        send(res, err.status, { error: err.message });
        return 0;
      }
      throw err;
    }
    if (uploads.length === 0) {
      send(res, 400, { error: 'no image: send a multipart form field named "data" (curl -F "data=@image.jpg") or an image/* body' });
      return 0;
    }
    if (this.imagesInFlight + uploads.length > this.opts.maxQueue) {
      res.setHeader('Retry-After', '1');
      send(res, 503, { error: `server busy: ${this.imagesInFlight} images in flight (--max-queue ${this.opts.maxQueue})` });
      this.metrics.images.inc({ outcome: 'rejected' }, uploads.length);
      return uploads.length;
    }
    const query = new URL(req.url ?? '/', 'http://x').searchParams;
    const topK = query.has('top_k') ? Number(query.get('top_k')) : this.opts.topK;
    const threshold = query.has('threshold') ? Number(query.get('threshold')) : this.opts.threshold;
    if (!Number.isInteger(topK) || topK < 1 || !(threshold >= 0 && threshold <= 1)) {
      send(res, 400, { error: 'Expected top_k a positive integer and threshold between 0 and 1' });
      return uploads.length;
    }
    this.imagesInFlight += uploads.length;
    this.metrics.inFlight.set(this.imagesInFlight);
    const model = this.use();
    let results: ImageResult[];
    try {
      results = await Promise.all(uploads.map((u) => this.classifyOne(model, u, topK, threshold)));
    } finally {
      this.done(model);
      this.imagesInFlight -= uploads.length;
      this.metrics.inFlight.set(this.imagesInFlight);
    }
    const multipart = (req.headers['content-type'] ?? '').toLowerCase().startsWith('multipart/');
    if (results.length === 1 && !(multipart && uploads.length > 1)) {
      const [only] = results;
      if (only.status === 503) res.setHeader('Retry-After', '1');
      send(res, only.status, jsonRecord(only.outcome));
    } else {
      // Several images: one answer each, in order; a failed one does not fail the others.
      send(res, 200, results.map((r) => jsonRecord(r.outcome)));
    }
    return uploads.length;
  }

  private async classifyOne(model: Classifier, u: Upload, topK: number, threshold: number): Promise<ImageResult> {
    const path = u.name;
    try {
      const predictions = await (this.cache ? this.cache.classifyBytes(model, u.bytes, topK, threshold) : model.classifyBytes(u.bytes, topK, threshold));
      this.metrics.images.inc({ outcome: 'ok' });
      return { outcome: { path, predictions, version: model.info.version }, status: 200 };
    } catch (err) {
      this.metrics.images.inc({ outcome: 'failed' });
      if (err instanceof InputError) return { outcome: { path, error: err.message }, status: STATUS_OF[err.kind] };
      if (err instanceof QueueFullError) return { outcome: { path, error: err.message }, status: 503 };
      return { outcome: { path, error: `inference failed: ${(err as Error).message}` }, status: 500 };
    }
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const json = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(json) });
  res.end(json);
}
