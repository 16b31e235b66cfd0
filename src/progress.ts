// The progress line on an interactive stderr: done, failed, images/s. Never on a pipe or a file,
// and never while the user types paths on the same terminal (it would be drawn over their line).
import type { ChalkInstance } from 'chalk';
import type { Writable } from 'node:stream';

/** stderr as the progress line needs it: a stream that may be a terminal. */
export type Terminal = Writable & { isTTY?: boolean };

export class Progress {
  private done = 0;
  private failed = 0;
  private readonly started = performance.now();
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly stream: Terminal,
    private readonly chalk: ChalkInstance,
  ) {
    this.timer = setInterval(() => this.draw(), 250);
    this.timer.unref();
  }

  /** The line, drawn from the first count() on. chalk is imported here, not with this module: a
   * run without the line (stderr a pipe or a file, -q) does without it (3 ms of a cached retrain
   * rerun, 2026-12-05). */
  static async start(stream: Terminal): Promise<Progress> {
    return new Progress(stream, (await import('chalk')).chalkStderr);
  }

  static enabled(stream: Terminal, quiet: boolean, typing = false): boolean {
    return Boolean(stream.isTTY) && !quiet && !typing && !process.env.NO_COLOR;
  }

  /** The line that stays on a terminal when a run ends. */
  static summary(done: number, failed: number, seconds: number): string {
    const rate = seconds > 0 ? ` in ${seconds.toFixed(1)} s (${(done / seconds).toFixed(1)} images/s)` : '';
    return `${done} image${done === 1 ? '' : 's'}, ${failed} failed${rate}`;
  }

  count(ok: boolean): void {
    if (ok) this.done++;
    else this.failed++;
    // The first result shows the line at once; the timer keeps it fresh after that.
    if (this.done + this.failed === 1) this.draw();
  }

  private draw(): void {
    const seconds = (performance.now() - this.started) / 1000;
    const rate = seconds > 0 ? (this.done + this.failed) / seconds : 0;
    const chalk = this.chalk;
    const failed = this.failed > 0 ? chalk.red(`${this.failed} failed`) : chalk.dim('0 failed');
    this.stream.write(`\r\x1b[K${chalk.green(`${this.done} done`)}, ${failed}, ${chalk.cyan(rate.toFixed(1))} images/s`);
  }

  /** Erases the line for a diagnostic; the timer draws it again below. */
  clear(): void {
    this.stream.write('\r\x1b[K');
  }

  /** Erases the line for good. */
  stop(): void {
    clearInterval(this.timer);
    this.clear();
  }
}
