// Reading uploads from a request: multipart form fields named "data", or a raw image body.
// Every path is bounded by maxBody, a time limit and the server-wide budget of buffered bytes;
// nothing here touches the disk. A failure settles the read at once: the caller answers and
// closes the connection, so nothing waits for (or buffers) the rest of a bad body.
import type { Busboy } from 'busboy';
import { createRequire } from 'node:module';
import type { IncomingMessage } from 'node:http';

/** Required, not imported, as every CommonJS package here is (see src/cli.ts). */
const busboy = createRequire(import.meta.url)('busboy') as typeof import('busboy');

export interface Upload {
  /** the client's file name, when multipart gave one */
  name?: string;
  bytes: Buffer;
}

export class BodyError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface BodyLimits {
  maxBody: number;
  maxFiles: number;
  /** the whole body must arrive within this many ms of the request's headers */
  timeoutMs: number;
}

const tooLarge = (max: number) => new BodyError(413, `request body over the limit of ${max} bytes (--max-body)`);

/** Bytes of request bodies held in memory, across all requests, bounded by --max-buffered. */
export class UploadBudget {
  private used = 0;

  constructor(
    readonly limit: number,
    private readonly report: (used: number) => void = () => undefined,
  ) {}

  /** One request's share: it takes bytes as they arrive (or all it declared, up front) and
   * gives them all back once its uploads are no longer held. */
  account(): UploadAccount {
    let held = 0;
    const change = (n: number) => {
      held += n;
      this.used += n;
      this.report(this.used);
    };
    return {
      reserve: (total) => {
        if (total <= held) return;
        if (this.used + total - held > this.limit) {
          throw new BodyError(503, `server busy: ${this.used} bytes of uploads already buffered (--max-buffered ${this.limit})`);
        }
        change(total - held);
      },
      release: () => change(-held),
    };
  }
}

export interface UploadAccount {
  /** makes sure `total` bytes are held for this request; throws BodyError 503 past the budget */
  reserve(total: number): void;
  release(): void;
}

function declaredLength(req: IncomingMessage): number | undefined {
  const raw = req.headers['content-length'];
  return raw === undefined ? undefined : Number(raw);
}

const kind = (req: IncomingMessage): 'multipart' | 'raw' | undefined => {
  const type = (req.headers['content-type'] ?? '').toLowerCase();
  if (type.startsWith('multipart/form-data')) return 'multipart';
  if (type.startsWith('image/') || type.startsWith('application/octet-stream')) return 'raw';
  return undefined;
};

/** What can be refused from the headers alone, before a byte of the body is read: a declared
 * length over maxBody, a type we do not read, a declared length the budget cannot hold. */
export function checkHeaders(req: IncomingMessage, maxBody: number, account: UploadAccount): void {
  const declared = declaredLength(req);
  if (declared !== undefined && declared > maxBody) throw tooLarge(maxBody);
  if (!kind(req)) {
    const type = req.headers['content-type'];
    throw new BodyError(415, `expected multipart/form-data with a "data" field, or an image/* body; got ${type ? `"${type}"` : 'no Content-Type'}`);
  }
  if (declared !== undefined) account.reserve(declared);
}

/** Reads the uploads of a request that passed checkHeaders. */
export function readUploads(req: IncomingMessage, limits: BodyLimits, account: UploadAccount): Promise<Upload[]> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let stop: () => void = () => undefined;
    const settle = (err: BodyError | undefined, uploads: Upload[] = []) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.off('data', onData);
      if (err) {
        stop();
        reject(err);
      } else resolve(uploads);
    };
    const timer = setTimeout(
      () => settle(new BodyError(408, `request body not received within ${limits.timeoutMs} ms (--body-timeout)`)),
      limits.timeoutMs,
    );
    let total = 0;
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > limits.maxBody) return settle(tooLarge(limits.maxBody));
      try {
        account.reserve(total); // a body without Content-Length takes from the budget as it comes
      } catch (err) {
        settle(err as BodyError);
      }
    };
    req.on('data', onData);
    req.on('error', () => settle(new BodyError(400, 'the connection failed before the body ended')));
    req.on('close', () => req.complete || settle(new BodyError(400, 'the client closed the connection before the body ended')));

    if (kind(req) === 'raw') {
      // With a Content-Length (Node holds the body to it), one buffer of that size: the socket's
      // chunks are let go as they come instead of being held and then copied.
      const declared = declaredLength(req);
      let whole = declared === undefined ? undefined : Buffer.allocUnsafe(declared);
      const chunks: Buffer[] = [];
      let filled = 0;
      req.on('data', (chunk: Buffer) => {
        if (settled) return;
        if (whole) filled += chunk.copy(whole, filled);
        else chunks.push(chunk);
      });
      req.on('end', () => settle(undefined, [{ bytes: whole ? whole.subarray(0, filled) : Buffer.concat(chunks) }]));
      stop = () => {
        chunks.length = 0;
        whole = undefined;
      };
    } else {
      stop = readMultipart(req, limits, settle);
    }
  });
}

/** Feeds the request to busboy; returns what stops it. */
function readMultipart(req: IncomingMessage, limits: BodyLimits, settle: (err: BodyError | undefined, uploads?: Upload[]) => void): () => void {
  const bad = (err: Error) => settle(new BodyError(400, `bad multipart request: ${err.message}`));
  let parser: Busboy;
  try {
    parser = busboy({
      headers: req.headers,
      // Browsers and curl send file names as UTF-8 bytes; busboy's default reads them as Latin-1.
      defParamCharset: 'utf8',
      limits: { fileSize: limits.maxBody, files: limits.maxFiles, fields: 100, parts: limits.maxFiles + 100 },
    });
  } catch (err) {
    bad(err as Error);
    return () => undefined;
  }
  const uploads: Upload[] = [];
  parser.on('file', (field, stream, info) => {
    // A truncated part errors its stream: heard here, it fails this request and nothing else.
    stream.on('error', bad);
    if (field !== 'data') return void stream.resume();
    const chunks: Buffer[] = [];
    const upload: Upload = { name: info.filename, bytes: Buffer.alloc(0) };
    uploads.push(upload);
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('limit', () => settle(tooLarge(limits.maxBody)));
    stream.on('close', () => (upload.bytes = Buffer.concat(chunks)));
  });
  parser.on('filesLimit', () => settle(new BodyError(413, `more than ${limits.maxFiles} files in one request (--max-files)`)));
  parser.on('partsLimit', () => settle(new BodyError(413, `more than ${limits.maxFiles + 100} parts in one request`)));
  parser.on('error', bad);
  parser.on('close', () => settle(undefined, uploads));
  req.pipe(parser);
  return () => {
    req.unpipe(parser);
    uploads.length = 0;
    parser.removeAllListeners('file');
    parser.on('error', () => undefined);
    parser.destroy();
  };
}
