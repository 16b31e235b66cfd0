// Reading uploads from a request: multipart form fields named "data", or a raw image body.
// Every path is bounded by maxBody; nothing here touches the disk.
import busboy from 'busboy';
import type { IncomingMessage } from 'node:http';

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

const tooLarge = (max: number) => new BodyError(413, `request body over the limit of ${max} bytes (--max-body)`);

/** Answering before the client has finished sending makes most clients see a broken pipe
 * instead of the answer: read the rest and throw it away first, unless it is absurdly large. */
function discardThen(req: IncomingMessage, err: BodyError, reject: (e: BodyError) => void, maxBody: number): void {
  let discarded = 0;
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > 16 * maxBody) req.destroy();
  });
  req.once('end', () => reject(err));
  req.once('close', () => reject(err));
  req.resume();
}

export function readUploads(req: IncomingMessage, maxBody: number, maxFiles: number): Promise<Upload[]> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBody) {
    return new Promise((_, reject) => discardThen(req, tooLarge(maxBody), reject, maxBody));
  }
  const type = (req.headers['content-type'] ?? '').toLowerCase();
  if (type.startsWith('multipart/form-data')) return readMultipart(req, maxBody, maxFiles);
  if (type.startsWith('image/') || type.startsWith('application/octet-stream')) {
    return readRaw(req, maxBody).then((bytes) => [{ bytes }]);
  }
  return Promise.reject(
    new BodyError(415, `expected multipart/form-data with a "data" field, or an image/* body; got ${type ? `"${type}"` : 'no Content-Type'}`),
  );
}

function readRaw(req: IncomingMessage, maxBody: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBody) {
        req.removeAllListeners('data');
        chunks.length = 0;
        discardThen(req, tooLarge(maxBody), reject, maxBody);
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function readMultipart(req: IncomingMessage, maxBody: number, maxFiles: number): Promise<Upload[]> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({ headers: req.headers, limits: { fileSize: maxBody, files: maxFiles, fields: 100, parts: maxFiles + 100 } });
    } catch (err) {
      return reject(new BodyError(400, `bad multipart request: ${(err as Error).message}`));
    }
    const uploads: Upload[] = [];
    let failed: BodyError | undefined;
    let total = 0;
    const fail = (err: BodyError) => {
      if (failed) return;
      failed = err;
      req.unpipe(parser);
      uploads.length = 0;
      discardThen(req, err, reject, maxBody);
    };
    req.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > maxBody) fail(tooLarge(maxBody));
    });
    parser.on('file', (field, stream, info) => {
      if (field !== 'data') return void stream.resume();
      const chunks: Buffer[] = [];
      const upload: Upload = { name: info.filename, bytes: Buffer.alloc(0) };
      uploads.push(upload);
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('limit', () => fail(tooLarge(maxBody)));
      stream.on('close', () => (upload.bytes = Buffer.concat(chunks)));
    });
    parser.on('filesLimit', () => fail(new BodyError(413, `more than ${maxFiles} files in one request`)));
    parser.on('error', (err) => fail(new BodyError(400, `bad multipart request: ${(err as Error).message}`)));
    parser.on('close', () => failed || resolve(uploads));
    req.pipe(parser);
  });
}
