// The micro-batcher on a fake clock: when a batch goes is asserted to the millisecond, and no
// test waits on the wall clock.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MicroBatcher } from '../src/backends/batcher.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const advance = (ms: number) => vi.advanceTimersByTimeAsync(ms);

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
});
afterEach(() => {
  vi.useRealTimers();
});

function recording(opts: { maxSize: number; maxDelayMs: number; runMs?: number; inbound?: () => number }) {
  const batches: number[][] = [];
  const waits: number[][] = [];
  const batcher = new MicroBatcher<number, number>(async (items, waited) => {
    batches.push(items);
    waits.push(waited);
    if (opts.runMs) await sleep(opts.runMs);
    if (items.includes(-1)) throw new Error('bad batch');
    return items.map((x) => x * 10);
  }, opts);
  return { batcher, batches, waits };
}

describe('MicroBatcher', () => {
  it('sends a full batch at once, without waiting for the delay', async () => {
    const { batcher, batches } = recording({ maxSize: 4, maxDelayMs: 10_000 });
    const results = await Promise.all([1, 2, 3, 4].map((x) => batcher.submit(x)));
    expect(batches).toEqual([[1, 2, 3, 4]]);
    expect(results).toEqual([10, 20, 30, 40]);
  });

  it('sends a partial batch once the oldest item has waited max-delay, not before', async () => {
    const { batcher, batches } = recording({ maxSize: 100, maxDelayMs: 50 });
    const results = Promise.all([batcher.submit(1), batcher.submit(2)]);
    await advance(49);
    expect(batches).toEqual([]);
    await advance(1);
    expect(batches).toEqual([[1, 2]]);
    expect(await results).toEqual([10, 20]);
  });

  it('splits a burst into batches of max-size, in arrival order', async () => {
    const { batcher, batches } = recording({ maxSize: 3, maxDelayMs: 5, runMs: 5 });
    const items = Array.from({ length: 10 }, (_, i) => i + 1);
    const results = Promise.all(items.map((x) => batcher.submit(x)));
    await advance(100);
    expect(await results).toEqual(items.map((x) => x * 10));
    expect(batches.flat()).toEqual(items);
    expect(Math.max(...batches.map((b) => b.length))).toBe(3);
  });

  it('gathers items that arrive while a batch runs into the next batch', async () => {
    const { batcher, batches } = recording({ maxSize: 8, maxDelayMs: 0, runMs: 40 });
    const first = batcher.submit(1); // runs alone: nothing else is waiting
    await advance(5);
    const rest = [2, 3, 4].map((x) => batcher.submit(x));
    await advance(100);
    await Promise.all([first, ...rest]);
    expect(batches).toEqual([[1], [2, 3, 4]]);
  });

  it('sends at once when nothing else is on its way, instead of waiting max-delay', async () => {
    const { batcher, batches } = recording({ maxSize: 8, maxDelayMs: 10_000, inbound: () => 0 });
    expect(await batcher.submit(1)).toBe(10);
    expect(batches).toEqual([[1]]);
  });

  it('waits for items on their way, and goes when the last of them is given up', async () => {
    let inbound = 2;
    const { batcher, batches } = recording({ maxSize: 8, maxDelayMs: 10_000, inbound: () => inbound });
    const first = batcher.submit(1);
    await advance(30);
    expect(batches).toEqual([]); // 2 more are coming: keep waiting
    inbound = 1;
    const second = batcher.submit(2);
    await advance(30);
    expect(batches).toEqual([]);
    inbound = 0; // the third failed to decode
    batcher.poke();
    expect(await Promise.all([first, second])).toEqual([10, 20]);
    expect(batches).toEqual([[1, 2]]);
  });

  it('fails only the batch whose run failed', async () => {
    const { batcher } = recording({ maxSize: 2, maxDelayMs: 1, runMs: 5 });
    const bad = [batcher.submit(-1), batcher.submit(5)];
    const good = [batcher.submit(6), batcher.submit(7)];
    const failed = Promise.allSettled(bad);
    await advance(100);
    expect((await failed).map((r) => r.status === 'rejected' && (r.reason as Error).message)).toEqual(['bad batch', 'bad batch']);
    expect(await Promise.all(good)).toEqual([60, 70]);
  });

  it('tells each batch how long its items waited in the queue', async () => {
    const { batcher, batches, waits } = recording({ maxSize: 2, maxDelayMs: 20 });
    const all = Promise.all([batcher.submit(1), batcher.submit(2), batcher.submit(3)]);
    await advance(100);
    await all;
    expect(batches).toEqual([[1, 2], [3]]);
    expect(waits).toEqual([[0, 0], [20]]);
  });
});
