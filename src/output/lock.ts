// One run at a time per -o FILE: two runs appending to one FILE would both classify every input
// and double its lines. The lock is FILE.lock, created exclusively, holding the holder's pid and
// host; Node has no flock(2). A lock whose process is gone (same host, pid not running) is stale
// and taken over; one from another host is never presumed dead.
import { closeSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { UsageError } from '../errors.js';

export class FileLock {
  private constructor(private readonly lockFile: string) {}

  /** Takes FILE's lock or throws a usage error naming the run that holds it. */
  static take(file: string): FileLock {
    const lockFile = `${file}.lock`;
    const mine = `${process.pid} ${hostname()}\n`;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = openSync(lockFile, 'wx', 0o644);
        try {
          writeSync(fd, mine);
        } finally {
          closeSync(fd);
        }
        return new FileLock(lockFile);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new UsageError(`${lockFile}: cannot create the lock that keeps a second run off ${file} (${(err as NodeJS.ErrnoException).code})`);
        }
      }
      const held = readHolder(lockFile);
      if (held === undefined) continue; // removed meanwhile
      if (!isStale(held)) {
        throw new UsageError(
          `${file} is being written by another classify run (pid ${held.split(' ')[0]} on ${held.split(' ')[1] ?? 'an unknown host'}; lock ${lockFile}): ` +
            'two runs would each classify every input and double its lines. Wait for it, or write to another file',
        );
      }
      takeOver(lockFile, held);
    }
    throw new UsageError(`${lockFile}: could not take the lock (other runs keep taking it)`);
  }

  release(): void {
    try {
      unlinkSync(this.lockFile);
    } catch {
      // already gone: nothing to release
    }
  }
}

function readHolder(lockFile: string): string | undefined {
  try {
    return readFileSync(lockFile, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Held by a process on this host that no longer runs. An unreadable holder is not stale. */
function isStale(held: string): boolean {
  const [pid, host] = held.split(' ');
  if (host !== hostname() || !/^\d+$/.test(pid)) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
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
