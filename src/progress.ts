// The progress line on an interactive stderr: done, failed, images/s. Never on a pipe or a file.
import { chalkStderr as chalk } from 'chalk';

export class Progress {
  private done = 0;
  private failed = 0;
  private readonly started = performance.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly stream: NodeJS.WriteStream) {
    this.timer = setInterval(() => this.draw(), 250);
    this.timer.unref();
  }

  static enabled(stream: NodeJS.WriteStream, quiet: boolean): boolean {
    return Boolean(stream.isTTY) && !quiet && !process.env.NO_COLOR;
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
