import { describe, expect, it } from 'vitest';
import { inOrder } from '../src/in-order.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function* numbers(n: number) {
  for (let i = 0; i < n; i++) yield i;
}

describe('inOrder', () => {
  it('yields results in input order even when later work finishes first', async () => {
    const out: number[] = [];
    for await (const r of inOrder(numbers(30), async (i) => (await sleep((30 - i) % 7), i), 8)) out.push(r);
    expect(out).toEqual([...Array(30).keys()]);
  });

  it('never has more than `window` items in flight, however long the input', async () => {
    let inFlight = 0;
    let most = 0;
    let count = 0;
    const work = async (i: number) => {
      most = Math.max(most, ++inFlight);
      await sleep(1);
      inFlight--;
      return i;
    };
    for await (const _ of inOrder(numbers(500), work, 5)) count++;
    expect(count).toBe(500);
    expect(most).toBeLessThanOrEqual(5);
  });

  it('yields a result before the input has ended', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let inputEnded = false;
    async function* trickle() {
      yield 1;
      await gate; // the second input only comes after the first result is out
      yield 2;
      inputEnded = true;
    }
    const seen: [number, boolean][] = [];
    for await (const r of inOrder(trickle(), async (i) => i, 4)) {
      seen.push([r, inputEnded]);
      release();
    }
    expect(seen).toEqual([
      [1, false],
      [2, true],
    ]);
  });

  it('passes an input error on after the results before it', async () => {
    async function* failing() {
      yield 1;
      throw new Error('stdin broke');
    }
    const out: number[] = [];
    await expect(
      (async () => {
        for await (const r of inOrder(failing(), async (i) => i, 4)) out.push(r);
      })(),
    ).rejects.toThrow('stdin broke');
    expect(out).toEqual([1]);
  });
});
