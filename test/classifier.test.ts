import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
// The built module: its engine thread is dist/backends/thread-entry.js.
import { Classifier, DECODE_QUEUE, DEFAULT_BATCH, planPipeline, slotCount } from '../dist/classifier/classifier.js';
import type { BatchStats } from '../dist/backends/engine-thread.js';
import { answer } from '../dist/classifier/ranking.js';
import { classifierSettings, type LoadOverrides } from '../dist/settings.js';
import { COLOUR, FIX, waitFor } from './helpers.js';

/** The best label for a file, as an answer of one prediction gives it. */
const top1 = async (classifier: Classifier, path: string) => answer(await classifier.score({ path }), classifier.labels, { topK: 1, threshold: 0 })[0].label;

/** The CLI's defaults for the colour fixture model, with `overrides`. */
const options = (overrides: LoadOverrides = {}) => classifierSettings(COLOUR, { ...overrides, engine: { device: 'cpu' } });

describe('Classifier', () => {
  it('warms up at load without the warm-up image showing in batch statistics', async () => {
    const seen: BatchStats[] = [];
    const classifier = await Classifier.load(options(), { observe: (s) => seen.push(s) });
    try {
      expect(seen).toEqual([]);
      expect((await top1(classifier, join(FIX, 'images', 'red.jpg')))).toBe('red');
      expect(seen.map((s) => s.size)).toEqual([1]);
    } finally {
      await classifier.close();
    }
  });

  it('loads under a --max-pixels smaller than its warm-up image, and holds real images to it', async () => {
    const classifier = await Classifier.load(options({ limits: { maxPixels: 10 } }));
    try {
      await expect(classifier.score({ path: join(FIX, 'images', 'red.jpg') })).rejects.toThrow(/exceeds the pixel limit of 10/);
    } finally {
      await classifier.close();
    }
  });

  it('close() lets an image in preparation finish, then stops; nothing is left pending', async () => {
    const classifier = await Classifier.load(options({ pipeline: { decodeJobs: 1 } }));
    const big = await sharp({ create: { width: 3000, height: 3000, channels: 3, background: { r: 40, g: 90, b: 160 } } })
      .png({ compressionLevel: 0 })
      .toBuffer();
    const inFlight = classifier.score({ bytes: big }).then(
      () => 'answered',
      (e: Error) => `failed: ${e.message}`,
    );
    // Sent to a decode thread, on its way to the engine thread.
    const decoder = (classifier as unknown as { decoder: { onwardJobs: Map<number, unknown> } }).decoder;
    await waitFor(() => decoder.onwardJobs.size > 0);
    await classifier.close();
    const settled = await Promise.race([inFlight, new Promise((resolve) => setTimeout(() => resolve('still pending'), 3000))]);
    expect(settled).toBe('answered');
  });

  it('a decode thread that dies is replaced: later images are classified', async () => {
    const classifier = await Classifier.load(options({ pipeline: { decodeJobs: 2 } }));
    try {
      const red = join(FIX, 'images', 'red.jpg');
      const pool = (classifier as unknown as { decoder: { workers: { thread: { terminate(): Promise<number> } }[] } }).decoder;
      await pool.workers[0].thread.terminate(); // as a crash in native code would end it
      for (let i = 0; i < 4; i++) expect((await top1(classifier, red))).toBe('red');
    } finally {
      await classifier.close();
    }
  });

  it('a decode thread that dies with images sent to it: each is answered or fails, none hangs, and every slot comes back', async () => {
    const classifier = await Classifier.load(options({ pipeline: { decodeJobs: 1 } }));
    try {
      const big = await sharp({ create: { width: 2000, height: 2000, channels: 3, background: { r: 40, g: 90, b: 160 } } })
        .png({ compressionLevel: 0 })
        .toBuffer();
      const sent = [1, 2, 3].map(() =>
        classifier.score({ bytes: big }).then(
          () => 'answered',
          (e: Error) => e.message,
        ),
      );
      // Terminated once all three are sent to it: it cannot have prepared them all (each is 12 MB
      // of pixels to decode and resize).
      const pool = (classifier as unknown as { decoder: { onwardJobs: Map<number, unknown>; workers: { thread: { terminate(): Promise<number> } }[] } }).decoder;
      await waitFor(() => pool.onwardJobs.size === 3, 5000);
      await pool.workers[0].thread.terminate(); // as a crash in native code would end it
      const settled = await Promise.race([Promise.all(sent), new Promise((resolve) => setTimeout(() => resolve('still pending'), 5000))]);
      expect(settled).toEqual(expect.arrayContaining([expect.stringMatching(/^(answered|decode thread exited \(\d+\))$/)]));
      expect((settled as string[]).some((s) => s.startsWith('decode thread exited'))).toBe(true);
      // As many images at once as there are slots: a slot kept by a lost image would hold one up.
      const red = join(FIX, 'images', 'red.jpg');
      const all = await Promise.all(Array.from({ length: classifier.info.inFlight }, () => top1(classifier, red)));
      expect(new Set(all)).toEqual(new Set(['red']));
    } finally {
      await classifier.close();
    }
  });
});


describe('image slots', () => {
  const MB = 1024 * 1024;
  it('queue 16 images a decode thread in bulk runs and 2 in serve, beyond two batches', () => {
    expect(slotCount(4, 2, DECODE_QUEUE.bulk, 196_608)).toBe(8 + 32);
    expect(slotCount(4, 2, DECODE_QUEUE.serve, 196_608)).toBe(8 + 4);
  });

  it('cap the queues on many cores and for large inputs, but never below two a thread (the warm-up holds one on each)', () => {
    expect(slotCount(4, 64, DECODE_QUEUE.bulk, 196_608)).toBe(8 + 128);
    expect(slotCount(4, 200, DECODE_QUEUE.bulk, 196_608)).toBe(8 + 400);
    expect(slotCount(16, 200, DECODE_QUEUE.serve, 196_608)).toBe(32 + 400);
    expect(slotCount(4, 8, DECODE_QUEUE.bulk, 3 * MB)).toBe(8 + 21); // 64 MB of queued 512x512 float images
  });
});

describe('planPipeline (every "0: choose" decided in one place)', () => {
  const cpu = { accelerated: false, maxBatch: Infinity, slotBytes: 196_608 };
  it('chooses the batch for the device, one decode thread per core, and the slots for both', () => {
    expect(planPipeline({ batchSize: 0, decodeJobs: 0 }, cpu, 2)).toEqual({ batchSize: DEFAULT_BATCH.cpu, decodeJobs: 2, inFlight: slotCount(DEFAULT_BATCH.cpu, 2, DECODE_QUEUE.bulk, 196_608) });
    expect(planPipeline({ batchSize: 0, decodeJobs: 0 }, { ...cpu, accelerated: true }, 16).batchSize).toBe(DEFAULT_BATCH.accelerator);
    expect(planPipeline({ batchSize: 0, decodeJobs: 3, decodeQueue: DECODE_QUEUE.serve }, cpu, 16)).toEqual({ batchSize: 4, decodeJobs: 3, inFlight: 8 + 6 });
  });

  it('takes what was asked, but never a batch above what the model accepts', () => {
    expect(planPipeline({ batchSize: 32, decodeJobs: 1 }, cpu, 2)).toMatchObject({ batchSize: 32, decodeJobs: 1 });
    expect(planPipeline({ batchSize: 32, decodeJobs: 1 }, { ...cpu, maxBatch: 1 }, 2).batchSize).toBe(1);
  });
});
