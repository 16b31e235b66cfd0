// Starting classify serve on a free loopback port, and talking to it: through fetch, or
// byte for byte over a socket where a test needs a request no HTTP client would send.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import type { StopSignal } from '../dist/host.js';
import { BIN, COLOUR, FIX, ROOT } from './helpers.js';

export interface Server {
  url: string;
  port: number;
  stderr: () => string;
  /** the exit status */
  exited: Promise<number | null>;
  running(): boolean;
  /** SIGTERM or SIGINT, as the process would get it */
  signal(signal: StopSignal): void;
  /** ends it, however it is: a test's cleanup */
  close(): Promise<void>;
}

/** Starts `classify serve -g GRAPH --port 0 ARGS`: in this process (the CLI's own run(), its
 * signals played by the test), or with `real`, as a process of its own, for what only a real
 * process shows (a crash, the exit after a second signal). */
export async function startServer(args: string[], graph = COLOUR, { real = false } = {}): Promise<Server> {
  const argv = ['serve', '-g', graph, '--port', '0', ...args];
  let stderr = '';
  let status: number | null | undefined;
  let started: Omit<Server, 'url' | 'port' | 'stderr' | 'exited' | 'running'>;
  let exited: Promise<number | null>;
  if (real) {
    const child = spawn(process.execPath, [BIN, ...argv], { cwd: ROOT });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    exited = new Promise((resolve) => child.once('exit', resolve));
    started = { signal: (sig) => child.kill(sig), close: async () => void child.kill('SIGKILL') };
  } else {
    const { run } = await import('../dist/cli.js');
    // One decode thread unless the test asks, as runInProcess's runs have (test/helpers.ts).
    if (!args.some((a) => a.startsWith('--decode-jobs'))) argv.push('--decode-jobs', '1');
    const signals = new EventEmitter();
    let exit: (code: number) => void = () => undefined;
    const host = { on: signals.on.bind(signals), off: signals.off.bind(signals), exit: (code: number) => exit(code) };
    const err = new Writable({
      write(chunk: Buffer, _enc, cb) {
        stderr += chunk.toString();
        cb();
      },
    });
    // The first of its end and an exit it asks for (after a second signal) is its status.
    exited = new Promise((resolve) => {
      exit = resolve;
      void run(argv, { stdin: Readable.from([]), stdout: new PassThrough().resume(), stderr: err, host }).then(resolve);
    });
    started = {
      signal: (sig) => void signals.emit(sig, sig),
      close: async () => {
        if (status === undefined) signals.emit('SIGTERM', 'SIGTERM');
        await exited;
      },
    };
  }
  void exited.then((code) => (status = code));
  const url = await new Promise<string>((resolve, reject) => {
    const poll = setInterval(() => {
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve(m[1]);
      else if (status !== undefined) reject(new Error(`server exited ${status}: ${stderr}`));
      else return;
      clearInterval(poll);
    }, 5);
  });
  return { ...started, url, port: Number(new URL(url).port), stderr: () => stderr, exited, running: () => status === undefined };
}

export const image = (name: string, dir = 'images') => readFileSync(join(FIX, dir, name));

export function form(...files: [string, Buffer][]): FormData {
  const f = new FormData();
  for (const [name, bytes] of files) f.append('data', new Blob([bytes]), name);
  return f;
}

export async function post(url: string, body: FormData | Buffer, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'POST', body, headers });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

export interface RawAnswer {
  status: number;
  head: string;
  body: string;
}

/** Parses the first final response in what came back on a raw socket (after any 100 Continue);
 * undefined until it has all arrived. */
export function parseAnswer(text: string): RawAnswer | undefined {
  const m = /^(?:HTTP\/1\.1 100 [^\r]*\r\n\r\n)?HTTP\/1\.1 (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(text);
  if (!m) return undefined;
  const length = /^content-length: (\d+)$/im.exec(m[2]);
  if (!length || m[3].length < Number(length[1])) return undefined;
  return { status: Number(m[1]), head: m[2], body: m[3].slice(0, Number(length[1])) };
}

export interface RawConnection {
  write(data: Buffer | string): void;
  /** closes it from this side */
  close(): void;
  /** all that came back, once a whole answer is in, the server closed it, or close() */
  text: Promise<string>;
}

/** A connection to write a request on byte by byte: for requests fetch cannot make (cut,
 * malformed, stalled). It stays as the server leaves it: a stalled upload stays stalled. */
export function connection(port: number, ms = 10_000): RawConnection {
  const socket = connect(port, '127.0.0.1');
  let text = '';
  let done = () => undefined as void;
  const finished = new Promise<string>((resolve, reject) => {
    done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    socket.on('error', (err: NodeJS.ErrnoException) => (['ECONNRESET', 'EPIPE'].includes(err.code ?? '') ? undefined : reject(err)));
  });
  const timer = setTimeout(() => done(), ms);
  socket.setEncoding('latin1').on('data', (d: string) => {
    text += d;
    if (parseAnswer(text)) done();
  });
  socket.on('close', () => done());
  return { write: (data) => void socket.write(data), close: () => done(), text: finished };
}

/** Writes `data` on a fresh connection and waits as connection() does. */
export function raw(port: number, data: Buffer | string, ms?: number): Promise<string> {
  const c = connection(port, ms);
  c.write(data);
  return c.text;
}

/** raw(), expecting a whole answer. */
export async function rawAnswer(port: number, data: Buffer | string, ms?: number): Promise<RawAnswer> {
  const text = await raw(port, data, ms);
  const answer = parseAnswer(text);
  if (!answer) throw new Error(`no whole answer in ${JSON.stringify(text.slice(0, 200))}`);
  return answer;
}

/** A multipart body as curl -F sends it, with the boundary `boundary`. */
export function multipart(boundary: string, files: [string, Buffer][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, bytes] of files) {
    parts.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="data"; filename="${name}"\r\nContent-Type: image/jpeg\r\n\r\n`),
      bytes,
      Buffer.from('\r\n'),
    );
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(parts);
}

/** The head of a POST / with these headers and Content-Length. */
export function postHead(headers: Record<string, string | number>): string {
  return `POST / HTTP/1.1\r\nHost: x\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`;
}
