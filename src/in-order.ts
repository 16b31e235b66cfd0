// Runs async work over a stream with up to `window` items in flight and yields the results in
// input order, each as soon as it and everything before it is done. The window bounds memory
// however long the input is: no more input is read while it is full.

export async function* inOrder<I, O>(
  inputs: AsyncIterable<I>,
  work: (input: I) => Promise<O>,
  window: number,
): AsyncGenerator<O> {
  const inFlight: Promise<O>[] = [];
  let inputDone = false;
  let inputError: unknown;
  let wakeConsumer: (() => void) | undefined;
  let wakeProducer: (() => void) | undefined;
  let stopped = false;

  const producer = (async () => {
    try {
      for await (const input of inputs) {
        if (stopped) break;
        const p = work(input);
        p.catch(() => undefined); // surfaced when the consumer reaches it, not as unhandled
        inFlight.push(p);
        wakeConsumer?.();
        while (inFlight.length >= window && !stopped) await new Promise<void>((r) => (wakeProducer = r));
      }
    } catch (err) {
      inputError = err;
    } finally {
      inputDone = true;
      wakeConsumer?.();
    }
  })();

  try {
    for (;;) {
      if (inFlight.length === 0) {
        if (inputDone) break;
        await new Promise<void>((r) => (wakeConsumer = r));
        wakeConsumer = undefined;
        continue;
      }
      const result = await inFlight[0];
      inFlight.shift();
      wakeProducer?.();
      wakeProducer = undefined;
      yield result;
    }
    if (inputError !== undefined) throw inputError;
  } finally {
    // Stopped early (output closed, interrupted): the producer sees `stopped` at its next input.
    stopped = true;
    wakeProducer?.();
    void producer;
  }
}
