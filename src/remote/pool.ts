// The servers a client spreads work over: each URL's host resolved to all its addresses (a
// Kubernetes headless service gives one per pod), least outstanding requests first, failed
// backends taken out for a while, bounded in-flight requests per backend.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

export interface Backend {
  /** the URL requests go to, host replaced by one resolved address */
  url: string;
  /** the Host header: the name the user gave */
  host: string;
  outstanding: number;
  ejectedUntil: number;
  failures: number;
}

export interface PoolOptions {
  maxInFlight: number;
  /** how long a failed backend is left out, doubled per consecutive failure (capped at 8x) */
  ejectMs: number;
  /** how often hostnames are resolved again */
  refreshMs: number;
}

export class BackendPool {
  private backends: Backend[] = [];
  private waiters: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private next = 0;

  constructor(
    private readonly urls: URL[],
    private readonly opts: PoolOptions,
  ) {}

  async start(): Promise<void> {
    await this.resolve();
    if (this.backends.length === 0) throw new Error(`no address found for ${this.urls.map((u) => u.host).join(', ')}`);
    this.timer = setInterval(() => void this.resolve().catch(() => undefined), this.opts.refreshMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  get size(): number {
    return this.backends.length;
  }

  /** Re-resolves every hostname; keeps the state of backends that are still there. */
  private async resolve(): Promise<void> {
    const found: Backend[] = [];
    for (const u of this.urls) {
      const host = u.hostname.replace(/^\[|\]$/g, '');
      const addresses = isIP(host) ? [{ address: host, family: isIP(host) }] : await lookup(host, { all: true }).catch(() => []);
      for (const a of addresses) {
        const target = new URL(u.href);
        target.hostname = a.family === 6 ? `[${a.address}]` : a.address;
        const key = target.href;
        if (found.some((b) => b.url === key)) continue;
        found.push(this.backends.find((b) => b.url === key) ?? { url: key, host: u.host, outstanding: 0, ejectedUntil: 0, failures: 0 });
      }
    }
    if (found.length > 0) this.backends = found;
  }

  /** Waits for a backend with room, least outstanding first; skips those in `tried`.
   * Undefined when every backend not yet tried is out of service. */
  async acquire(tried: Set<string>): Promise<Backend | undefined> {
    for (;;) {
      const now = Date.now();
      const candidates = this.backends.filter((b) => !tried.has(b.url) && b.ejectedUntil <= now);
      if (candidates.length === 0) return undefined;
      const free = candidates.filter((b) => b.outstanding < this.opts.maxInFlight);
      if (free.length > 0) {
        const least = Math.min(...free.map((b) => b.outstanding));
        const ties = free.filter((b) => b.outstanding === least);
        const pick = ties[this.next++ % ties.length];
        pick.outstanding++;
        return pick;
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  release(b: Backend, ok: boolean): void {
    b.outstanding--;
    if (ok) b.failures = 0;
    else {
      b.failures++;
      b.ejectedUntil = Date.now() + this.opts.ejectMs * Math.min(8, 2 ** (b.failures - 1));
    }
    // Everyone waiting looks again: the freed slot may suit only some of them.
    const waiting = this.waiters;
    this.waiters = [];
    for (const wake of waiting) wake();
  }
}
