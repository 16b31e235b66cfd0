// classify --remote: the same filter, with the model on one or more `classify serve` backends.
// Each image's bytes go to one backend; a backend that refuses, fails (connection error, 5xx)
// or times out is left out for a while and the image goes to another, so every input still
// gets exactly one line.
import { ImageReader } from '../image/decode.js';
import type { Prediction } from '../classifier.js';
import { BackendPool } from './pool.js';

export interface RemoteOptions {
  urls: string[];
  maxInFlight: number;
  timeoutMs: number;
  ejectMs?: number;
  refreshMs?: number;
}

/** The server's answer for one image: what the client prints, not a retry signal. */
export class RemoteImageError extends Error {}

export class RemoteClassifier {
  private readonly files = new ImageReader();

  private constructor(
    private readonly pool: BackendPool,
    private readonly timeoutMs: number,
  ) {}

  static async connect(opts: RemoteOptions): Promise<RemoteClassifier> {
    const urls = opts.urls.map((u) => {
      try {
        const url = new URL(u.includes('://') ? u : `http://${u}`);
        if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
        return url;
      } catch {
        throw new RemoteImageError(`Expected http URL for --remote but received ${JSON.stringify(u)}`);
      }
    });
    const pool = new BackendPool(urls, { maxInFlight: opts.maxInFlight, ejectMs: opts.ejectMs ?? 5000, refreshMs: opts.refreshMs ?? 30000 });
    await pool.start();
    return new RemoteClassifier(pool, opts.timeoutMs);
  }

  get backends(): number {
    return this.pool.size;
  }

  async classifyFile(path: string, topK: number, threshold: number): Promise<{ predictions: Prediction[]; version?: string }> {
    const bytes = await this.files.read(path);
    const tried = new Set<string>();
    const failures: string[] = [];
    for (;;) {
      const backend = await this.pool.acquire(tried);
      if (!backend) throw new RemoteImageError(`all backends failed (${failures.join('; ') || 'none reachable'})`);
      tried.add(backend.url);
      let ok = false;
      try {
        const url = new URL(backend.url);
        url.searchParams.set('top_k', String(topK));
        if (threshold > 0) url.searchParams.set('threshold', String(threshold));
        const res = await fetch(url, {
          method: 'POST',
          body: bytes as unknown as Uint8Array<ArrayBuffer>,
          headers: { 'Content-Type': 'application/octet-stream', Host: backend.host },
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        const body = (await res.json().catch(() => ({}))) as { predictions?: Prediction[]; error?: string; version?: string };
        if (res.status >= 500) {
          failures.push(`${backend.host}: HTTP ${res.status}${body.error ? ` ${body.error}` : ''}`);
          continue;
        }
        ok = true;
        if (res.status !== 200 || !body.predictions) throw new RemoteImageError(body.error ?? `HTTP ${res.status}`);
        return { predictions: body.predictions, version: body.version };
      } catch (err) {
        if (err instanceof RemoteImageError) throw err;
        const reason = (err as Error).name === 'TimeoutError' ? 'timed out' : ((err as { cause?: Error }).cause?.message ?? (err as Error).message);
        failures.push(`${new URL(backend.url).host}: ${reason}`);
      } finally {
        this.pool.release(backend, ok);
      }
    }
  }

  async close(): Promise<void> {
    this.pool.stop();
  }
}
