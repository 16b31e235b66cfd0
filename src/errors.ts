// Exit codes and the errors that map to them, in one place. Per-image errors (InputError,
// RemoteImageError) are that image's output line, never an exit by themselves.
// No imports: the engine and decode threads load this too.

/** Longest part of a rejected value a message quotes: a 2 MB value is not echoed whole. */
const SHOWN_CHARS = 80;

/** The one form a rejected value is reported in, sharp's: "Expected positive integer for
 * --top-k but received -1". Flags, model files' settings and HTTP queries all use it. */
export function invalidValue(expected: string, what: string, received: unknown): string {
  let shown: string;
  try {
    // JSON would show Infinity (a 1e309 in a settings file) as null.
    shown = typeof received === 'number' ? String(received) : (JSON.stringify(received) ?? String(received));
  } catch {
    shown = Array.isArray(received) ? 'an array nested too deeply to show' : String(received);
  }
  if (shown.length > SHOWN_CHARS) shown = `${shown.slice(0, SHOWN_CHARS)}... (${shown.length} characters)`;
  return `Expected ${expected} for ${what} but received ${shown}`;
}

/** Exit codes, documented in the README's table. */
export const EXIT = {
  ok: 0,
  /** at least one image could not be classified (each has its error line) */
  someFailed: 1,
  /** bad flags, a model that does not load, unusable input: nothing or nothing more was read */
  usage: 2,
  /** a bug: an unexpected exception (the stack with --verbose) */
  internal: 70,
  /** the output (stdout or -o FILE) could not be written (disk full, a closed file): sysexits' EX_IOERR */
  output: 74,
  /** stopped by Ctrl-C (SIGINT) or SIGTERM after writing what was in flight: 128 + signal */
  sigint: 130,
  sigterm: 143,
} as const;

/** A bug (a TypeError in our own code, say) met while preparing one image, in a thread that
 * could only send its message and stack: exit 70 with the stack under --verbose, never blamed on
 * the image. */
export class InternalError extends Error {
  constructor(message: string, stack?: string) {
    super(message);
    this.name = 'InternalError';
    if (stack) this.stack = stack;
  }
}

/** The engine could not run a batch (the runtime refused its input, the engine thread ended):
 * each image of the batch fails with it, "inference failed: ..."; the stack is the thread's. */
export class EngineError extends Error {
  constructor(message: string, stack?: string) {
    super(message);
    this.name = 'EngineError';
    if (stack) this.stack = stack;
  }
}

/** A --remote backend's answer for one image was an error: that image's line, as the backend said it. */
export class RemoteImageError extends Error {}

/** The command cannot go on as asked (exit 2): said once, with the reason. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A model failed to load or is unusable: exit status 2, reported with the file it came from. */
export class ModelError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(message);
    this.name = 'ModelError';
  }
}

/** The output stream failed (other than its reader leaving): exit 74. */
export class OutputError extends Error {
  constructor(
    override readonly cause: NodeJS.ErrnoException,
    /** what could not be written: stdout, or the -o FILE */
    what = 'output',
  ) {
    super(`cannot write ${what}: ${describeErrno(cause)}`);
    this.name = 'OutputError';
  }
}

/** Any error as one line says it, in every place that says one (the exit, a version that failed
 * to load, an image's line): a model's names its file, an engine's is an inference that failed,
 * a bug says it is one. */
export function describeError(err: unknown): string {
  if (err instanceof ModelError) return `${err.file}: ${err.message}`;
  if (err instanceof EngineError) return `inference failed: ${err.message}`;
  if (err instanceof InternalError) return `internal error: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

const ERRNO_TEXT: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EIO: 'input/output error',
  EBADF: 'the output is closed',
  EFBIG: 'file too large',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
};

export function describeErrno(err: NodeJS.ErrnoException): string {
  const text = err.code ? ERRNO_TEXT[err.code] : undefined;
  return text ? `${text} (${err.code})` : err.message;
}
