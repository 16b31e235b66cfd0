// classify --remote: the same filter, with the model on one or more `classify serve` backends.
// Each image's bytes go to one backend; a backend that refuses, fails (connection error, 5xx,
// an answer that is not a well-formed classification) or times out is left out for a while and
// the image goes to another; with none in service, images wait (up to --remote-timeout) for one
// to be back. Every input still gets exactly one line.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { type FilePath, ImageReader } from '../image/read.js';
import type { Prediction } from '../classifier/classifier.js';
import { type Backend, backendName, BackendPool, type Resolver } from './pool.js';
import { RemoteImageError, UsageError } from '../errors.js';

/** The most bytes read of one answer: far above any real one (60,000 predictions), and what
 * stops a broken or hostile backend from filling the client's memory. */
export const MAX_ANSWER_BYTES = 4 * 1024 * 1024;
/** The longest the start-up check waits for one backend (less when --remote-timeout is). */
const START_CHECK_MS = 10_000;
/** The header in which `classify serve` names the model that answered (its fingerprint). */
const MODEL_HEADER = 'x-model-fingerprint';

export interface RemoteSettings {
  readonly urls: readonly string[];
  readonly maxInFlight: number;
  readonly timeoutMs: number;
  readonly refreshMs: number;
}

/** The --remote group, and what tests may set besides. */
export interface RemoteOptions extends Partial<Pick<RemoteSettings, 'refreshMs'>>, Omit<RemoteSettings, 'refreshMs'> {
  ejectMs?: number;
  /** how a hostname becomes addresses (tests give their own) */
  resolver?: Resolver;
  /** how often backends left out are asked whether they are back, while none is in service */
  probeMs?: number;
  /** where "backend left out" / "backend is back" lines go; none without it */
  log?: (line: string) => void;
  /** image files larger than this are refused unread (--max-file-size); unset: the decoder's default */
  maxFileSize?: number;
}


/** A bad --remote URL or no backend ready at start: a usage error (exit 2) before input is read. */
export class RemoteSetupError extends UsageError {}

/** A backend that failed (down, 5xx, malformed answer...): retry the image elsewhere. */
class BackendFailure extends Error {}

/** `model`: the fingerprint of the model that answered, when the backend says it. */
type Answer = { predictions: Prediction[]; version?: string; model?: string };
/** --top-k and --threshold, sent with each image. */
type AskedFor = { topK: number; threshold: number };

export function parseRemoteUrl(u: string): URL {
  let url: URL;
  try {
    url = new URL(u.includes('://') ? u : `http://${u}`);
  } catch {
    throw new RemoteSetupError(`Expected http URL for --remote but received ${JSON.stringify(u)}: not a valid URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new RemoteSetupError(`Expected http URL for --remote but received ${JSON.stringify(u)}: the scheme is ${url.protocol.slice(0, -1)}, not http or https`);
  }
  return url;
}

export class RemoteClassifier {
  private constructor(
    private readonly pool: BackendPool,
    private readonly timeoutMs: number,
    private readonly files: ImageReader,
    private readonly log?: (line: string) => void,
  ) {}

  /** Checks every backend's /readyz before any input is read: those that do not answer are left
   * out; none answering is a RemoteSetupError. */
  static async connect(opts: RemoteOptions): Promise<RemoteClassifier> {
    if (opts.urls.length === 0) throw new RemoteSetupError('Expected http URL for --remote but received none');
    const urls = opts.urls.map(parseRemoteUrl);
    const timeout = Math.min(opts.timeoutMs, START_CHECK_MS);
    const pool = new BackendPool(urls, {
      maxInFlight: opts.maxInFlight,
      ejectMs: opts.ejectMs ?? 5000,
      refreshMs: opts.refreshMs ?? 30000,
      log: opts.log,
      resolver: opts.resolver,
      probe: async (b) => (await checkReady(b, timeout, opts.log)) === undefined,
      probeMs: opts.probeMs,
    });
    try {
      await pool.start();
    } catch (err) {
      throw new RemoteSetupError(`--remote: ${(err as Error).message}`);
    }
    const checks = await Promise.all(pool.all.map(async (b) => ({ b, problem: await checkReady(b, timeout) })));
    const down = checks.filter((c) => c.problem !== undefined);
    if (down.length === checks.length) {
      pool.stop();
      throw new RemoteSetupError(`no --remote backend is ready: ${down.map((c) => `${backendName(c.b)}: ${c.problem}`).join('; ')}`);
    }
    for (const { b, problem } of down) pool.eject(b, problem!);
    return new RemoteClassifier(pool, opts.timeoutMs, new ImageReader(opts.maxFileSize), opts.log);
  }

  get backends(): number {
    return this.pool.size;
  }

  /** The fingerprint of the model the backends in service serve (most of them, during a
   * rollout); undefined when none says. What --resume keys FILE's lines on. */
  get model(): string | undefined {
    const counts = new Map<string, number>();
    for (const b of this.pool.all) if (b.model && !b.out) counts.set(b.model, (counts.get(b.model) ?? 0) + 1);
    return [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0];
  }

  async classifyPath(path: FilePath, { topK, threshold }: AskedFor): Promise<Answer> {
    const bytes = await this.files.read(path);
    const tried = new Set<string>();
    // the latest failure on each backend, for the line of an image none could take
    const failures = new Map<string, string>();
    let deadline: number | undefined;
    for (;;) {
      const backend = await this.pool.acquire(tried);
      if (!backend) {
        // Every backend failed this image or is left out: a restart or rollout, usually. Wait
        // (at most --remote-timeout) for one to be back, then try them all again.
        deadline ??= Date.now() + this.timeoutMs;
        if (await this.pool.waitForBackend(deadline)) {
          tried.clear();
          continue;
        }
        const why = [...failures.values(), ...this.pool.leftOut(new Set(failures.keys()))];
        throw new RemoteImageError(`all backends failed (${why.join('; ') || 'none reachable'})`);
      }
      tried.add(backend.url);
      let failure: string | undefined;
      try {
        const answer = await this.ask(backend, bytes, topK, threshold);
        if ('error' in answer) throw new RemoteImageError(answer.error);
        return answer;
      } catch (err) {
        if (err instanceof RemoteImageError) throw err;
        failure = reasonOf(err);
        failures.set(backend.url, `${backendName(backend)}: ${failure}`);
      } finally {
        this.pool.release(backend, failure === undefined, failure);
      }
    }
  }

  /** One image to one backend: its predictions, or its verdict on the image (a 4xx);
   * throws for anything that means the backend, not the image, is at fault. */
  private async ask(backend: Backend, bytes: Buffer, topK: number, threshold: number): Promise<Answer | { error: string }> {
    const url = new URL(backend.url);
    url.searchParams.set('top_k', String(topK));
    if (threshold > 0) url.searchParams.set('threshold', String(threshold));
    const signal = AbortSignal.timeout(this.timeoutMs);
    const res = await send(url, { method: 'POST', body: bytes, headers: { 'Content-Type': 'application/octet-stream', Host: backend.host } }, signal);
    const text = await readCapped(res, signal);
    const status = res.statusCode ?? 0;
    if (status === 200) {
      const model = noteModel(backend, res, this.log);
      return { ...parseAnswer(text, topK), ...(model ? { model } : {}) };
    }
    const error = errorOf(text);
    // 408 and 429 say the backend could not take the request now, not that the image is bad.
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) return { error: error ?? `HTTP ${status}` };
    throw new BackendFailure(`HTTP ${status}${error ? ` ${error}` : ''}`);
  }

  async close(): Promise<void> {
    this.pool.stop();
  }
}

/** The model a backend's answer names; a backend now serving another model than it did
 * (replaced, or a new version) is said once on stderr. */
function noteModel(backend: Backend, res: IncomingMessage, log?: (line: string) => void): string | undefined {
  const value = res.headers[MODEL_HEADER];
  const model = typeof value === 'string' && /^[0-9a-f]{1,64}$/.test(value) ? value : undefined;
  if (model === undefined) return undefined;
  if (backend.model !== undefined && backend.model !== model) log?.(`backend ${backendName(backend)} now serves model ${model} (was ${backend.model})`);
  backend.model = model;
  return model;
}

/** Undefined when the backend's /readyz says 200; otherwise why not. */
async function checkReady(b: Backend, timeoutMs: number, log?: (line: string) => void): Promise<string | undefined> {
  const url = new URL(b.url);
  url.pathname = url.pathname.replace(/\/?$/, '/readyz');
  url.search = '';
  try {
    const res = await send(url, { method: 'GET', headers: { Host: b.host } }, AbortSignal.timeout(timeoutMs));
    res.destroy();
    if (res.statusCode !== 200) return `GET /readyz answered HTTP ${res.statusCode}`;
    noteModel(b, res, log);
    return undefined;
  } catch (err) {
    return reasonOf(err);
  }
}

/** One HTTP request with node:http (not fetch, which refuses ports such as 6000 that a backend may
 * well listen on); resolves with the response once its head arrives. The time limit covers the
 * body too: the request is destroyed when it runs out. */
function send(url: URL, opts: { method: string; body?: Buffer; headers: Record<string, string> }, signal: AbortSignal): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const headers = opts.body ? { ...opts.headers, 'Content-Length': String(opts.body.length) } : opts.headers;
    const req = request(url, { method: opts.method, headers, signal }, resolve);
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** The body as text, reading no more than MAX_ANSWER_BYTES: past that the connection is dropped.
 * A body still arriving when `signal` (the request's time limit) fires has timed out: a backend
 * that trickles its answer is slow, not cut off. */
async function readCapped(res: IncomingMessage, signal: AbortSignal): Promise<string> {
  const declared = Number(res.headers['content-length'] ?? 0);
  if (declared > MAX_ANSWER_BYTES) {
    res.destroy();
    throw new BackendFailure(`answer of ${declared} bytes is over the ${MAX_ANSWER_BYTES}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    // Leaving the loop early destroys the stream, which closes the connection.
    for await (const chunk of res as AsyncIterable<Buffer>) {
      size += chunk.byteLength;
      if (size > MAX_ANSWER_BYTES) throw new BackendFailure(`answer is over the ${MAX_ANSWER_BYTES}-byte limit`);
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof BackendFailure || isTimeout(err)) throw err;
    if (signal.aborted) throw new BackendFailure('timed out');
    throw new BackendFailure(`answer cut short (${causeOf(err)})`);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A 200's body, checked: a backend that answers nonsense is failing, like one that is down. */
export function parseAnswer(text: string, topK: number): Answer {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new BackendFailure(`answer is not JSON: ${JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}...` : text)}`);
  }
  const malformed = (what: string) => new BackendFailure(`malformed answer: ${what}`);
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw malformed('not a JSON object');
  const { predictions, version } = body as Record<string, unknown>;
  if (!Array.isArray(predictions)) throw malformed('"predictions" is not a list');
  if (predictions.length > topK) throw malformed(`${predictions.length} predictions for top_k ${topK}`);
  const checked = predictions.map((p: unknown) => {
    const { label, score } = (typeof p === 'object' && p !== null ? p : {}) as Record<string, unknown>;
    if (typeof label !== 'string' || typeof score !== 'number' || !Number.isFinite(score)) throw malformed('a prediction is not {"label": string, "score": number}');
    // Only these two fields: nothing else a backend adds reaches the output.
    return { label, score };
  });
  if (version !== undefined && version !== null && typeof version !== 'string') throw malformed('"version" is not a string');
  return { predictions: checked, ...(typeof version === 'string' ? { version } : {}) };
}

/** The `error` string of an error answer, if it has one. */
function errorOf(text: string): string | undefined {
  try {
    const body = JSON.parse(text) as { error?: unknown };
    return typeof body?.error === 'string' ? body.error : undefined;
  } catch {
    return undefined;
  }
}

/** fetch's timeouts are TimeoutErrors; node:http's are AbortErrors caused by one. */
const isTimeout = (err: unknown) => (err as Error)?.name === 'TimeoutError' || (err as { cause?: Error })?.cause?.name === 'TimeoutError';
const causeOf = (err: unknown) => (err as { cause?: Error }).cause?.message ?? (err as Error).message;
const reasonOf = (err: unknown) => (err instanceof BackendFailure ? err.message : isTimeout(err) ? 'timed out' : causeOf(err));
