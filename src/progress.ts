// The progress line on an interactive stderr: done, failed, images/s. Never on a pipe or a file,
// and never while the user types paths on the same terminal (it would be drawn over their line).
import { chalkStderr as chalk } from 'chalk';
import type { Writable } from 'node:stream';

/** stderr as the progress line needs it: a stream that may be a terminal. */
export type Terminal = Writable & { isTTY?: boolean };

export class Progress {
  private done = 0;
  private failed = 0;
  private readonly started = performance.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly stream: Terminal) {
    this.timer = setInterval(() => this.draw(), 250);
    this.timer.unref();
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
