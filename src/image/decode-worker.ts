// Entry of a decode thread: reads files (blocking only this thread), decodes and packs each image
// into its shared slot, and answers each turn's completions in one message.
import { parentPort, workerData } from 'node:worker_threads';
import { ImageReader, InputError } from './decode.js';
import type { Done, Job, WorkerInit } from './decode-pool.js';
import { Preparer } from './prepare.js';
import { slotView } from './slots.js';

const port = parentPort!;
const { spec, slots } = workerData as WorkerInit;
const preparer = new Preparer(spec);
// Synchronous reads: a slow one holds up this thread only, never the main thread.
const files = new ImageReader(spec.maxFileSize, Infinity);
let finished: Done[] = [];
/** sharp's own default pixel limit: the warm-up's blank is ours, whatever --max-pixels says. */
const OWN_IMAGE_LIMIT = 0x3fff * 0x3fff;

function answer(done: Done): void {
  if (finished.length === 0) setImmediate(() => {
    const batch = finished;
    finished = [];
    port.postMessage(batch);
  });
  finished.push(done);
}

async function run(job: Job): Promise<Done> {
  try {
    // A name's raw bytes arrive as a Uint8Array (a Buffer does not survive the crossing as one).
    const bytes = 'path' in job ? await files.read(typeof job.path === 'string' ? job.path : Buffer.from(job.path)) : job.bytes;
    await preparer.prepare(bytes, slotView(slots, spec.inputType, preparer.imageSize, job.slot), job.ownImage ? OWN_IMAGE_LIMIT : spec.maxPixels);
    return { id: job.id };
  } catch (err) {
    if (err instanceof InputError) return { id: job.id, error: { kind: err.kind, message: err.message } };
    return { id: job.id, error: { kind: 'corrupt', message: `decode failed: ${(err as Error).message}` } };
  }
}

port.on('message', (jobs: Job[]) => {
  for (const job of jobs) void run(job).then(answer);
});
