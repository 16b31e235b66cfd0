// Prometheus metrics for the server, on a registry of its own (tests start several servers).
import { createRequire } from 'node:module';
import type { BatchStats } from '../backends/engine-thread.js';

/** Required, not imported, as every CommonJS package here is (see src/cli.ts): 30 ms against 45. */
const { Counter, Gauge, Histogram, Registry } = createRequire(import.meta.url)('prom-client') as typeof import('prom-client');

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'classify_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'status'], registers: [this.registry] });
  readonly images = new Counter({ name: 'classify_images_total', help: 'Images classified, by outcome', labelNames: ['outcome'], registers: [this.registry] });
  readonly batchSize = new Histogram({
    name: 'classify_batch_size',
    help: 'Images per inference batch',
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  });
  readonly queueWait = new Histogram({
    name: 'classify_queue_wait_seconds',
    help: 'Time an image waited for its batch',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly inference = new Histogram({
    name: 'classify_inference_seconds',
    help: 'Time one batch spent in the engine',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly bufferedBytes = new Gauge({
    name: 'classify_upload_bytes_buffered',
    help: 'Bytes of request bodies held in memory (bounded by --max-buffered)',
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({ name: 'classify_images_in_flight', help: 'Images accepted and not yet answered', registers: [this.registry] });
  /** The autoscaling signal: its rate() over a window is the average of images in flight over
   * that window, exactly (a gauge scraped every 15 s would only sample it). */
  readonly inFlightSeconds = new Counter({
    name: 'classify_images_in_flight_seconds_total',
    help: 'Images in flight integrated over time: rate() of it is the average number of images in flight',
    registers: [this.registry],
    collect: () => this.advance(),
  });
  private inFlightNow = 0;
  private inFlightSince = performance.now();
  readonly modelInfo = new Gauge({ name: 'classify_model_info', help: 'The model being served (value is always 1)', labelNames: ['model', 'engine', 'version'], registers: [this.registry] });

  setModel(info: { model: string; engine: string; version?: string }): void {
    this.modelInfo.reset();
    this.modelInfo.set({ model: info.model, engine: info.engine, version: info.version ?? '' }, 1);
  }

  setInFlight(images: number): void {
    this.advance();
    this.inFlightNow = images;
    this.inFlight.set(images);
  }

  /** Adds the time since the last change, at the count held through it, to the integral. */
  private advance(): void {
    const now = performance.now();
    if (this.inFlightNow > 0) this.inFlightSeconds.inc((this.inFlightNow * (now - this.inFlightSince)) / 1000);
    this.inFlightSince = now;
  }

  /** Feeds the batcher's per-batch report into the histograms. */
  observeBatch = (s: BatchStats): void => {
    this.batchSize.observe(s.size);
    this.inference.observe(s.runMs / 1000);
    for (const w of s.waits) this.queueWait.observe(w / 1000);
  };
}
