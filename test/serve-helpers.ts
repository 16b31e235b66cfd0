// Starting classify serve for real on a free loopback port, and talking to it: through fetch, or
// byte for byte over a socket where a test needs a request no HTTP client would send.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { BIN, COLOUR, FIX, ROOT } from './helpers.js';

export interface Server {
  url: string;
  port: number;
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

export function startServer(args: string[], graph = COLOUR): Promise<Server> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'serve', '-g', graph, '--port', '0', ...args], { cwd: ROOT });
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve({ url: m[1], port: Number(new URL(m[1]).port), child, stderr: () => stderr, exited });
    });
    child.once('exit', (code) => reject(new Error(`server exited ${code}: ${stderr}`)));
  });
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
