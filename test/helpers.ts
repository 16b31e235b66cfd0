import { spawn, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import type { Classifier } from '../dist/classifier/classifier.js';
import type { LoadSettings } from '../dist/settings.js';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const BIN = join(ROOT, 'bin', 'classify.js');
export const FIX = join(ROOT, 'fixtures');
export const SHARED = join(ROOT, '..', 'shared', 'assets');
export const COLOUR = join(FIX, 'models', 'colour');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI as a child process, feeding `input` on stdin (then closing it). */
export function runCli(args: string[], input: string | Buffer = '', opts: SpawnOptions = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' }, ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(input);
  });
}

export const lines = (s: string) => s.split('\n').filter((l) => l.length > 0);
export const jsonLines = (s: string) => lines(s).map((l) => JSON.parse(l));

/** Tests that need ../shared say why they skip. */
export function sharedAvailable(what: string): boolean {
  if (existsSync(SHARED)) return true;
  console.warn(`skipping ${what}: ${SHARED} is absent (the shared test assets live beside the checkout)`);
  return false;
}

/** Models loaded by runInProcess, by their settings, most recently used last: shared by the runs
 * of every test file the worker runs (vitest.config.ts: files share a worker's modules), as a
 * server shares one between requests. The least recently used is closed beyond KEPT_MODELS, so a
 * worker holds a few models' threads and memory, not every model of every file. */
const loaded = new Map<string, Promise<Classifier>>();
const KEPT_MODELS = 6;

async function sharedLoad(given: LoadSettings): Promise<Classifier> {
  // One decode thread unless a test asks for more: each thread costs about 70 ms of CPU to start,
  // and these runs classify a handful of images. Threads' own behaviour is tested where it is the
  // subject (test/classifier.test.ts) and by every real-process run.
  const settings = given.pipeline.decodeJobs ? given : { ...given, pipeline: { ...given.pipeline, decodeJobs: 1 } };
  const key = JSON.stringify(settings);
  let model = loaded.get(key);
  loaded.delete(key);
  if (!model) {
    const { Classifier } = await import('../dist/classifier/classifier.js');
    model = Classifier.load(settings);
    model.catch(() => loaded.delete(key)); // a load that fails is tried again by the next run
  }
  loaded.set(key, model);
  for (const [oldest, old] of loaded) {
    if (loaded.size <= KEPT_MODELS) break;
    loaded.delete(oldest);
    await old.then((c) => c.close(), () => undefined);
  }
  const classifier = await model;
  // A run's close() must leave the shared model running for the next run.
  return new Proxy(classifier, {
    get: (target, prop) => {
      if (prop === 'close') return async () => undefined;
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Runs the CLI in this process (the built code, whose threads load from dist/): the same
 * parsing, streams and exit status as the binary, without starting node and loading a model per
 * test. For signals, EPIPE and the process's own exit, use runCli. */
export async function runInProcess(
  args: string[],
  input: string | Buffer | Readable = '',
  opts: { stdinTTY?: boolean; stderrTTY?: boolean; onStdout?: (soFar: string) => void } = {},
): Promise<Run> {
  const { run } = await import('../dist/cli.js');
  const stdin = Object.assign(input instanceof Readable ? input : Readable.from([Buffer.from(input)]), { isTTY: opts.stdinTTY });
  let stdout = '';
  let stderr = '';
  const collect = (add: (s: string) => void) =>
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        add(chunk.toString());
        cb();
      },
    });
  const out = collect((s) => {
    stdout += s;
    opts.onStdout?.(stdout);
  });
  const err = Object.assign(
    collect((s) => (stderr += s)),
    { isTTY: opts.stderrTTY },
  );
  const code = await run(args, { stdin, stdout: out, stderr: err, loadClassifier: sharedLoad });
  return { code, signal: null, stdout, stderr };
}

/** Resolves once `check` holds, polling; fails after `ms`. */
export async function waitFor(check: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('waited too long');
    await new Promise((r) => setTimeout(r, 5));
  }
}
