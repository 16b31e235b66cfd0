// The servers a client spreads work over: each URL's host resolved to all its addresses (a
// Kubernetes headless service gives one per pod), least outstanding requests first, failed
// backends taken out for a while, bounded in-flight requests per backend.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** A hostname's addresses. The default is getaddrinfo (dns.lookup), as every other program on
 * the machine resolves: /etc/hosts and nsswitch count, not only DNS. */
export type Resolver = (host: string) => Promise<{ address: string; family: number }[]>;
const systemResolver: Resolver = (host) => lookup(host, { all: true });

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
  /** its address no longer resolves: it finishes what it has in flight and gets nothing new */
  gone: boolean;
  /** the fingerprint of the model it last said it serves */
  model?: string;
}

export interface PoolOptions {
  maxInFlight: number;
  /** how long a failed backend is left out, doubled per consecutive failure (capped at 8x) */
  ejectMs: number;
  /** how often hostnames are resolved again */
  refreshMs: number;
  /** one line when a backend is left out and one when it is back; none without it */
  log?: (line: string) => void;
  resolver?: Resolver;
  /** asks a backend left out whether it is ready again (GET /readyz), while no backend is in service */
  probe?: (b: Backend) => Promise<boolean>;
  /** how often those backends are asked, in ms */
  probeMs?: number;
}

/** How a backend is named in messages: its address, and the name given when they differ. */
export function backendName(b: Backend): string {
  const address = new URL(b.url).host;
  return address === b.host ? address : `${b.host} (${new URL(b.url).hostname})`;
}

export class BackendPool {
  private backends: Backend[] = [];
  private waiters: (() => void)[] = [];
  private probing: Promise<void> | undefined;
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

  /** Re-resolves every hostname; keeps the state of backends that are still there. A backend
   * whose address went away keeps the requests it has in flight (they finish, or fail over as
   * any failure does) and is dropped once they are done. */
  private async resolve(): Promise<void> {
    const resolver = this.opts.resolver ?? systemResolver;
    const found: Backend[] = [];
    for (const u of this.urls) {
      const host = u.hostname.replace(/^\[|\]$/g, '');
      const addresses = isIP(host) ? [{ address: host, family: isIP(host) }] : await resolver(host).catch(() => []);
      for (const a of addresses) {
        const target = new URL(u.href);
        target.hostname = a.family === 6 ? `[${a.address}]` : a.address;
        const key = target.href;
        if (found.some((b) => b.url === key)) continue;
        const known = this.backends.find((b) => b.url === key);
        if (known) known.gone = false;
        else if (this.backends.length > 0) this.opts.log?.(`backend ${new URL(key).host} added (${u.hostname} resolves to it)`);
        found.push(known ?? { url: key, host: u.host, outstanding: 0, ejectedUntil: 0, failures: 0, out: false, gone: false });
      }
    }
    // A name that resolves to nothing (DNS down for a moment) keeps the backends it had.
    if (found.length === 0) return;
    for (const b of this.backends) {
      if (found.includes(b)) continue;
      if (!b.gone) this.opts.log?.(`backend ${backendName(b)} removed (no longer resolved)${b.outstanding > 0 ? `: finishing ${b.outstanding} in flight` : ''}`);
      b.gone = true;
      if (b.outstanding > 0) found.push(b);
    }
    this.backends = found;
    this.wake();
  }

  /** Waits for a backend with room, least outstanding first; skips those in `tried`.
   * Undefined when every backend not yet tried is out of service. */
  async acquire(tried: Set<string>): Promise<Backend | undefined> {
    for (;;) {
      const now = Date.now();
      const candidates = this.backends.filter((b) => !tried.has(b.url) && !b.gone && b.ejectedUntil <= now);
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
    if (b.gone && b.outstanding === 0) this.backends = this.backends.filter((x) => x !== b);
    this.wake();
  }

  /** Everyone waiting looks again: a freed slot or a backend back may suit only some of them. */
  private wake(): void {
    const waiting = this.waiters;
    this.waiters = [];
    for (const wake of waiting) wake();
  }

  /** True when some backend may take work now. */
  private inService(): boolean {
    const now = Date.now();
    return this.backends.some((b) => !b.gone && b.ejectedUntil <= now);
  }

  /** With every backend left out (a lone backend restarting, a rolling update): waits until one
   * may take work again (its time out is over, /readyz says it is back, or the name resolves to
   * a new one), or until `deadline`. True when one may. */
  async waitForBackend(deadline: number): Promise<boolean> {
    for (;;) {
      if (this.inService()) return true;
      const now = Date.now();
      if (now >= deadline) return false;
      this.probing ??= this.probeLeftOut().finally(() => (this.probing = undefined));
      // A backend gone from the name is not one to wait for.
      const until = Math.min(deadline, ...this.backends.filter((b) => !b.gone && b.ejectedUntil > now).map((b) => b.ejectedUntil));
      const timer = new AbortController();
      const woken = new Promise<void>((r) => this.waiters.push(r));
      await Promise.race([woken, this.probing, sleep(Math.max(0, until - now), undefined, { signal: timer.signal }).catch(() => undefined)]);
      timer.abort();
    }
  }

  /** One round of asking every backend left out whether it is ready, then a pause: at most one
   * round every probeMs, however many images wait. */
  private async probeLeftOut(): Promise<void> {
    const probe = this.opts.probe;
    if (probe) {
      const now = Date.now();
      const out = this.backends.filter((b) => !b.gone && b.ejectedUntil > now);
      const ready = await Promise.all(out.map((b) => probe(b).catch(() => false)));
      out.forEach((b, i) => ready[i] && this.answered(b));
      // Those waiting go at once; the pause still comes: a backend whose /readyz says ready but
      // whose answers fail would otherwise be probed and retried as fast as it replies (the
      // client at full CPU, the backend flooded) until the images' --remote-timeout.
      if (ready.some(Boolean)) this.wake();
    }
    await sleep(this.opts.probeMs ?? 500);
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
    return this.backends.filter((b) => !tried.has(b.url) && !b.gone && b.ejectedUntil > now).map((b) => `${backendName(b)}: left out after ${b.lastError ?? 'failing'}`);
  }
}
