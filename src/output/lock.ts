// One run at a time per -o FILE: two runs appending to one FILE would both classify every input
// and double its lines. The lock is FILE.lock beside the file FILE really is (a link to it takes
// the same lock), created exclusively, holding the holder's pid and host; Node has no flock(2).
// The holder touches it every few seconds; a lock not touched for a minute is stale, whatever it
// names (a host gone, a rescheduled pod with a new name, a pid since reused), and so is one whose
// process is gone (same host, pid not running).
import { closeSync, lstatSync, openSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { UsageError } from '../errors.js';

/** A lock that names no holder (a run killed between creating and writing it) is stale after this. */
const UNNAMED_STALE_MS = 10_000;
/** How often a holder touches its lock, and how long untouched makes one stale. */
const HEARTBEAT_MS = 5_000;
const UNTOUCHED_STALE_MS = 60_000;

export class FileLock {
  private readonly heartbeat: NodeJS.Timeout;

  private constructor(private readonly lockFile: string) {
    this.heartbeat = setInterval(() => {
      const now = new Date();
      try {
        utimesSync(lockFile, now, now);
      } catch {
        // removed by hand: the run goes on; the next run takes a new lock
      }
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** Takes FILE's lock or throws a usage error naming the run that holds it. */
  static take(file: string): FileLock {
    const lockFile = `${realpathOf(file)}.lock`;
    const mine = `${process.pid} ${hostname()}\n`;
    for (let attempt = 0; attempt < 3; attempt++) {
      let fd: number;
      try {
        fd = openSync(lockFile, 'wx', 0o644);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EEXIST') throw new UsageError(`${lockFile}: cannot create the lock that keeps a second run off ${file} (${code})`);
        const held = readHolder(lockFile);
        if (held === undefined) continue; // removed meanwhile
        const why = whyNotStale(lockFile, held);
        if (why.startsWith('pid ')) throw new UsageError(`${file} is being written by another classify run (${why}; lock ${lockFile}): two runs would each classify every input and double its lines. Wait for it, or write to another file`);
        if (why) throw new UsageError(`${file}: cannot take its lock ${lockFile}: ${why}`);
        takeOver(lockFile, held);
        continue;
      }
      try {
        writeSync(fd, mine);
      } catch (err) {
        unlinkSync(lockFile);
        throw new UsageError(`${lockFile}: cannot write the lock that keeps a second run off ${file} (${(err as NodeJS.ErrnoException).code})`);
      } finally {
        closeSync(fd);
      }
      return new FileLock(lockFile);
    }
    throw new UsageError(`${lockFile}: could not take the lock (other runs keep taking it)`);
  }

  release(): void {
    clearInterval(this.heartbeat);
    try {
      unlinkSync(this.lockFile);
    } catch {
      // already gone: nothing to release
    }
  }
}

/** FILE through any links (the lock is the file's, not the name's); FILE itself when it does not exist yet. */
function realpathOf(file: string): string {
  try {
    return realpathSync(file);
  } catch {
    return file;
  }
}

/** What the lock file holds, '' for what cannot be read as a holder, undefined when it is gone. */
function readHolder(lockFile: string): string | undefined {
  try {
    return readFileSync(lockFile, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return '';
    try {
      lstatSync(lockFile);
      return ''; // a link to nothing
    } catch {
      return undefined;
    }
  }
}

/** Why the lock still holds (its holder, or what it is), or '' when it is stale. */
function whyNotStale(lockFile: string, held: string): string {
  const m = /^(\d+) (\S+)$/.exec(held);
  if (!m) {
    let st;
    try {
      st = statSync(lockFile);
    } catch {
      return 'it is a link to nothing (remove it)';
    }
    if (!st.isFile()) return 'it is not a file (remove it)';
    return Date.now() - st.mtimeMs > UNNAMED_STALE_MS ? '' : 'it names no holder yet (another run may be taking it)';
  }
  const [, pid, host] = m;
  const age = lockAge(lockFile);
  if (age === undefined || age > UNTOUCHED_STALE_MS) return '';
  if (host !== hostname()) return `pid ${pid} on ${host}`;
  try {
    process.kill(Number(pid), 0);
    return `pid ${pid} on ${host}`;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH' ? '' : `pid ${pid} on ${host}`;
  }
}

/** Milliseconds since the lock was last touched; undefined when it is gone. */
function lockAge(lockFile: string): number | undefined {
  try {
    return Date.now() - statSync(lockFile).mtimeMs;
  } catch {
    return undefined;
  }
}

/** Moves a stale lock aside, atomically, so that of two runs taking it over only one removes it;
 * if what was moved is not the stale lock (another run took over first), it is put back. */
function takeOver(lockFile: string, stale: string): void {
  const aside = `${lockFile}.${process.pid}.stale`;
  try {
    renameSync(lockFile, aside);
  } catch {
    return; // another run moved it first
  }
  if (readHolder(aside) === stale) unlinkSync(aside);
  else renameSync(aside, lockFile);
}
