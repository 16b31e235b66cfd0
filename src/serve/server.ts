// classify serve: the same classifier behind HTTP. Requests share the micro-batcher, so images
// from concurrent requests go through the model together.
import { createServer, type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { CachedScores } from '../cache/cache.js';
import type { Classifier } from '../classifier/classifier.js';
import { answer } from '../classifier/ranking.js';
import { positiveInt, unitInterval } from '../parse.js';
import type { InputErrorKind } from '../image/read.js';
import { BodyError, checkHeaders, readUploads, type Upload, type UploadAccount, UploadBudget } from './body.js';
import type { ServerMetrics } from './metrics.js';
import type { Log } from '../log.js';
import type { Answer } from '../classifier/ranking.js';
import { describeFailure, jsonRecord, type Outcome } from '../output/format.js';

export interface ServeSettings {
  readonly host: string;
  readonly port: number;
  readonly maxBody: number;
  readonly maxBuffered: number;
  readonly bodyTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly maxQueue: number;
  readonly maxFiles: number;
  readonly watchIntervalMs: number;
}

/** What the server takes: its group, the default answer, and whether to log requests. */
export type ServeOptions = { serve: ServeSettings; answer: Answer; quiet: boolean };

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

/** Names the model that answered (its fingerprint, as -o lines record it) on every answer and on
 * /readyz: a --remote client notices a backend that now serves another model. */
export const MODEL_HEADER = 'X-Model-Fingerprint';

/** What Node's HTTP parser reports before a request exists, as Node's own handler answers it. */
const CLIENT_ERRORS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'request headers too large'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, 'chunk extensions too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request not received in time'],
};

/** top_k and threshold from the query, parsed as the flags are (src/parse.ts); a bad one is a 400. */
function querySettings(url: string | undefined, defaults: { topK: number; threshold: number }): { topK: number; threshold: number } {
  const query = new URL(url ?? '/', 'http://x').searchParams;
  const k = query.get('top_k');
  const t = query.get('threshold');
  try {
    return { topK: k === null ? defaults.topK : parseTopK(k), threshold: t === null ? defaults.threshold : parseThreshold(t) };
  } catch (err) {
    throw new BodyError(400, (err as Error).message);
  }
}
const parseTopK = positiveInt('top_k');
const parseThreshold = unitInterval('threshold');

export class ClassifyServer {
  private readonly server: Server;
  private imagesInFlight = 0;
  private requestsInFlight = 0;
  private draining = false;
  private drained: (() => void) | undefined;
  /** requests using each loaded model, so a replaced one is closed only once they finish */
  private readonly users = new Map<Classifier, number>();
  private readonly budget: UploadBudget;

  constructor(
    private classifier: Classifier,
    private readonly metrics: ServerMetrics,
    private readonly opts: ServeOptions,
    private readonly log: Log,
    /** --cache: answers for bytes seen before, per model */
    private readonly cache?: CachedScores,
    /** a loaded model's fingerprint (src/fingerprint.ts) */
    private readonly fingerprint?: (c: Classifier) => string,
  ) {
    this.budget = new UploadBudget(opts.serve.maxBuffered, (bytes) => metrics.bufferedBytes.set(bytes));
    // Node's own limit on receiving a request stays behind ours (--body-timeout), as a backstop.
    this.server = createServer({ requestTimeout: opts.serve.bodyTimeoutMs + 60_000 }, (req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
    // Expect: 100-continue: a request refused from its headers is refused before its body is sent.
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => void this.handle(req, res, true));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.clientError(err, socket));
    // Node's own answers to these would have no body (417) or none at all (CONNECT).
    this.server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
      const body = JSON.stringify({ error: 'unsupported Expect header (only 100-continue is)' }) + '\n';
      res.writeHead(417, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
      res.end(body);
      this.metrics.requests.inc({ route: 'other', status: '417' });
    });
    this.server.on('connect', (_req: IncomingMessage, socket: Duplex) => this.answerRaw(socket, 405, 'CONNECT is not supported'));
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.serve.port, this.opts.serve.host, () => resolve(this.server.address() as AddressInfo));
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

  /** Drains: new classify requests get 503 (the listener stays open so /readyz can say 503),
   * requests in flight get up to timeoutMs to finish; then every connection is closed, stalled
   * ones included, and the model released. Returns how many requests were cut. */
  async shutdown(timeoutMs: number): Promise<number> {
    this.draining = true;
    this.server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    const finished =
      this.requestsInFlight === 0 ||
      (await new Promise<boolean>((resolve) => {
        this.drained = () => resolve(true);
        timer = setTimeout(() => resolve(false), timeoutMs);
      }));
    clearTimeout(timer);
    const cut = finished ? 0 : this.requestsInFlight;
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeAllConnections();
    await closed;
    const released = this.classifier.close();
    // A batch cut short may still hold the engine thread: the bound holds here too.
    await (cut > 0 ? Promise.race([released, delay(1000, undefined, { ref: false })]) : released);
    return cut;
  }

  /** Node's parser failed (bad request line, headers too large): a JSON answer like any other. */
  private clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const [status, what] = CLIENT_ERRORS[err.code ?? ''] ?? [400, `bad HTTP request: ${err.message}`];
    // As Node's own handler: answer only when no response has started on this connection.
    const current = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || current?.headersSent) return void socket.destroy();
    this.answerRaw(socket, status, what);
  }

  /** A JSON error written straight to the socket, for requests Node never hands to the handler. */
  private answerRaw(socket: Duplex, status: number, what: string): void {
    const json = JSON.stringify({ error: what }) + '\n';
    const head = `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n`;
    socket.end(head + json, () => socket.destroy());
    this.metrics.requests.inc({ route: 'other', status: String(status) });
    if (!this.opts.quiet) this.log(`${(socket as Duplex & { remoteAddress?: string }).remoteAddress ?? '-'} - ${status} ${what}`);
  }

  private async handle(req: IncomingMessage, res: ServerResponse, expectsContinue = false): Promise<void> {
    const start = performance.now();
    this.requestsInFlight++;
    let route = 'other';
    let images = 0;
    try {
      if (this.draining) res.setHeader('Connection', 'close');
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/' && req.method === 'POST') {
        route = 'classify';
        images = await this.classifyRequest(req, res, expectsContinue);
      } else if (path === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
        route = 'healthz';
        send(res, 200, { status: 'ok' });
      } else if (path === '/readyz' && (req.method === 'GET' || req.method === 'HEAD')) {
        route = 'readyz';
        const info = this.classifier.info;
        const fingerprint = this.fingerprint?.(this.classifier);
        if (fingerprint) res.setHeader(MODEL_HEADER, fingerprint);
        send(res, this.draining ? 503 : 200, { ready: !this.draining, model: info.model, version: info.version ?? null, engine: info.engine, fingerprint: fingerprint ?? null });
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
  private async classifyRequest(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<number> {
    const account = this.budget.account();
    try {
      return await this.classifyBuffered(req, res, expectsContinue, account);
    } finally {
      account.release();
    }
  }

  private async classifyBuffered(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean, account: UploadAccount): Promise<number> {
    let uploads: Upload[];
    let settings: { topK: number; threshold: number };
    try {
      if (this.draining) throw new BodyError(503, 'server shutting down: send it to another');
      settings = querySettings(req.url, this.opts.answer);
      checkHeaders(req, this.opts.serve.maxBody, account);
      if (expectsContinue) res.writeContinue();
      uploads = await readUploads(req, { maxBody: this.opts.serve.maxBody, maxFiles: this.opts.serve.maxFiles, timeoutMs: this.opts.serve.bodyTimeoutMs }, account);
    } catch (err) {
      if (err instanceof BodyError) {
        if (err.status === 503) res.setHeader('Retry-After', '1');
        answerEarly(req, res, err.status, { error: err.message }, this.opts.serve.maxBody);
        return 0;
      }
      throw err;
    }
    const { topK, threshold } = settings;
    if (uploads.length === 0) {
      send(res, 400, { error: 'no image: send a multipart form field named "data" (curl -F "data=@image.jpg") or an image/* body' });
      return 0;
    }
    if (this.imagesInFlight + uploads.length > this.opts.serve.maxQueue) {
      res.setHeader('Retry-After', '1');
      send(res, 503, { error: `server busy: ${this.imagesInFlight} images in flight (--max-queue ${this.opts.serve.maxQueue})` });
      this.metrics.images.inc({ outcome: 'rejected' }, uploads.length);
      return uploads.length;
    }
    this.imagesInFlight += uploads.length;
    this.metrics.setInFlight(this.imagesInFlight);
    const model = this.use();
    const fingerprint = this.fingerprint?.(model);
    if (fingerprint) res.setHeader(MODEL_HEADER, fingerprint);
    let results: ImageResult[];
    try {
      // The request is its own group for decode slots: a big request cannot starve a small one.
      results = await Promise.all(uploads.map((u) => this.classifyOne(model, u, topK, threshold, req)));
    } finally {
      this.done(model);
      this.imagesInFlight -= uploads.length;
      this.metrics.setInFlight(this.imagesInFlight);
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

  private async classifyOne(model: Classifier, u: Upload, topK: number, threshold: number, group: object): Promise<ImageResult> {
    const path = u.name;
    try {
      const scorer = this.cache ? this.cache.for(model) : model;
      const predictions = answer(await scorer.score({ bytes: u.bytes }, group), model.labels, { topK, threshold });
      this.metrics.images.inc({ outcome: 'ok' });
      return { outcome: { path, predictions, version: model.info.version }, status: 200 };
    } catch (err) {
      this.metrics.images.inc({ outcome: 'failed' });
      const { error, kind } = describeFailure(err);
      return { outcome: { path, error }, status: kind ? STATUS_OF[kind] : 500 };
    }
  }
}

function send(res: ServerResponse, status: number, body: unknown, end = true): void {
  const json = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(json) });
  if (end) res.end(json);
  else res.write(json);
}

/** How long, and how much, of a refused body is read and thrown away after the answer. */
const LINGER_MS = 2000;
const LINGER_BYTES_PER_MAX_BODY = 4;

/** Answers a request whose body was refused or not read to the end, and closes its connection.
 * Closing straight away would make most clients, still sending, see a broken pipe instead of
 * the answer: so the complete answer goes out now, the rest of the body is read and dropped
 * (never buffered) until it ends or the bounds pass, and then the connection closes. */
function answerEarly(req: IncomingMessage, res: ServerResponse, status: number, body: unknown, maxBody: number): void {
  res.setHeader('Connection', 'close');
  // A client that stalled (408) or left has nothing more to send.
  if (req.complete || req.destroyed || status === 408) return send(res, status, body);
  send(res, status, body, false);
  let dropped = 0;
  const close = () => {
    clearTimeout(timer);
    if (!res.writableEnded) res.end();
  };
  const timer = setTimeout(close, LINGER_MS);
  req.on('data', (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > LINGER_BYTES_PER_MAX_BODY * maxBody) close();
  });
  req.once('end', close);
  req.once('close', close);
  req.resume();
}
