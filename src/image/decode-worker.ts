// Entry of a decode thread: reads files (blocking only this thread), decodes and packs each image
// into its shared slot, and answers completions a few to a message: to the engine thread for an
// image on its way to a batch, to the main thread for one it only wanted prepared.
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { ImageReader, InputError } from './read.js';
import type { Done, Job, WorkerInit } from './decode-pool.js';
import { Preparer } from './prepare.js';
import { slotView } from './slots.js';

const { spec, slots, onward, finished } = workerData as WorkerInit;
const preparer = new Preparer(spec);
// Synchronous reads: a slow one holds up this thread only, never the main thread.
const files = new ImageReader(spec.maxFileSize);
/** sharp's own default pixel limit: the warm-up's blank is ours, whatever --max-pixels says. */
const OWN_IMAGE_LIMIT = 0x3fff * 0x3fff;

/** Answers for one thread, sent at the end of a turn or a few at a time. */
class Outbox {
  private answers: Done[] = [];

  constructor(private readonly port: MessagePort) {}

  add(done: Done): void {
    if (this.answers.length === 0) setImmediate(() => this.flush());
    this.answers.push(done);
    if (this.answers.length >= ANSWERS_A_MESSAGE) this.flush();
  }

  flush(): void {
    if (this.answers.length === 0) return;
    this.port.postMessage(this.answers);
    this.answers = [];
  }
}

const toMain = new Outbox(parentPort!);
const toEngine = onward && new Outbox(onward);

function answer(job: Job, done: Done): void {
  // Counted before it is sent: the main thread gives the next image to the thread with least to do.
  Atomics.add(finished, 0, 1);
  if (job.onward) toEngine!.add(done.error || done.bug ? done : { id: done.id, slot: job.slot });
  else toMain.add(done);
}

/** Read buffers kept between files: a photo read into memory never touched before costs more in
 * page faults than in the read (a 3.5 MB camera JPEG: 1.5 ms of CPU, against 0.3 into a buffer
 * used before). A file holds one until its decode is done with its bytes: a JPEG decoded in this
 * thread gives it back before the next file is read, so one or two go round. */
const spare: Buffer[] = [];
const KEPT_BUFFERS = 2;
const KEPT_BYTES = 16 * 1024 * 1024;

function takeBuffer(size: number): Buffer {
  const i = spare.findIndex((b) => b.length >= size);
  // Rounded up to a power of two (up to the kept size), so that files of similar sizes share one.
  return i >= 0 ? spare.splice(i, 1)[0] : Buffer.allocUnsafe(size > KEPT_BYTES ? size : Math.max(2 ** Math.ceil(Math.log2(size)), 65536));
}

function giveBuffer(buffer: Buffer): void {
  if (buffer.length > KEPT_BYTES) return;
  if (spare.length < KEPT_BUFFERS) spare.push(buffer);
  else {
    const smallest = spare.reduce((a, b, i) => (b.length < spare[a].length ? i : a), 0);
    if (spare[smallest].length < buffer.length) spare[smallest] = buffer;
  }
}

async function run(job: Job): Promise<Done> {
  let lease: Buffer | undefined;
  const release = () => {
    if (lease) giveBuffer(lease);
    lease = undefined;
  };
  try {
    // A name's raw bytes arrive as a Uint8Array (a Buffer does not survive the crossing as one).
    const into = (size: number) => (lease = takeBuffer(size));
    const bytes = 'path' in job ? files.readNow(typeof job.path === 'string' ? job.path : Buffer.from(job.path), into) : job.bytes;
    await preparer.prepare(bytes, slotView(slots, spec.inputType, preparer.imageSize, job.slot), job.ownImage ? OWN_IMAGE_LIMIT : spec.maxPixels, release);
    return { id: job.id };
  } catch (err) {
    if (err instanceof InputError) return { id: job.id, error: { kind: err.kind, message: err.message } };
    // Anything else is a bug here: said as one, with its stack, not as a bad image.
    const e = err instanceof Error ? err : new Error(String(err));
    return { id: job.id, bug: { message: `${e.name}: ${e.message}`, stack: e.stack } };
  } finally {
    release();
  }
}

/** Jobs received and not yet started. A JPEG decoded in this thread is prepared without a pause,
 * so jobs are started one a turn: what is done is answered while the rest are still to do (a
 * message's sixteen at once held its first answer back for all sixteen decodes, and the engine
 * and the other thread waited on it), in messages of a few answers. */
const waiting: Job[] = [];
let starting = false;
const ANSWERS_A_MESSAGE = 4;

function next(): void {
  const job = waiting.shift();
  starting = job !== undefined;
  if (!job) {
    toMain.flush();
    return toEngine?.flush();
  }
  void run(job).then((done) => answer(job, done));
  setImmediate(next);
}

parentPort!.on('message', (jobs: Job[]) => {
  waiting.push(...jobs);
  if (!starting) {
    starting = true;
    setImmediate(next);
  }
});
