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
  /** left out and not yet seen answering again (what the stderr lines report) */
  out: boolean;
  /** why it was last left out */
  lastError?: string;
}

export interface PoolOptions {
  maxInFlight: number;
  /** how long a failed backend is left out, doubled per consecutive failure (capped at 8x) */
  ejectMs: number;
  /** how often hostnames are resolved again */
  refreshMs: number;
  /** one line when a backend is left out and one when it is back; none without it */
  log?: (line: string) => void;
}

/** How a backend is named in messages: its address, and the name given when they differ. */
export function backendName(b: Backend): string {
  const address = new URL(b.url).host;
  return address === b.host ? address : `${b.host} (${new URL(b.url).hostname})`;
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

  get all(): readonly Backend[] {
    return this.backends;
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
        found.push(this.backends.find((b) => b.url === key) ?? { url: key, host: u.host, outstanding: 0, ejectedUntil: 0, failures: 0, out: false });
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

  /** `ok`: the backend answered (even if about a bad image); otherwise `reason` says how it failed. */
  release(b: Backend, ok: boolean, reason = 'failed'): void {
    b.outstanding--;
    if (ok) this.answered(b);
    else this.eject(b, reason);
    // Everyone waiting looks again: the freed slot may suit only some of them.
    const waiting = this.waiters;
    this.waiters = [];
    for (const wake of waiting) wake();
  }

  /** Leaves a backend out for a while. */
  eject(b: Backend, reason: string): void {
    const now = Date.now();
    // Already out: the other requests it had in flight failing too is the same failure.
    if (b.ejectedUntil > now) return;
    b.failures++;
    b.ejectedUntil = now + this.opts.ejectMs * Math.min(8, 2 ** (b.failures - 1));
    b.lastError = reason;
    if (!b.out) {
      b.out = true;
      this.opts.log?.(`backend ${backendName(b)} left out: ${reason}`);
    }
  }

  private answered(b: Backend): void {
    b.failures = 0;
    if (b.out) {
      // It answers again: back in service at once, even if its time out has not run.
      b.out = false;
      b.ejectedUntil = 0;
      this.opts.log?.(`backend ${backendName(b)} is back`);
    }
  }

  /** Why each backend not in `tried` is out of service now, for an image none could take. */
  leftOut(tried: Set<string>): string[] {
    const now = Date.now();
    return this.backends.filter((b) => !tried.has(b.url) && b.ejectedUntil > now).map((b) => `${backendName(b)}: left out after ${b.lastError ?? 'failing'}`);
  }
}
