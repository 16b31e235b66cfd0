/** Lets at most `limit` holders hold a permit at once. Waiters are served a group at a time in turn
 * (round-robin), each group's in arrival order; without groups that is plain arrival order. */
export class Semaphore {
  private active = 0;
  /** waiters by group; Map order is the turn order */
  private readonly waiters = new Map<unknown, (() => void)[]>();

  constructor(private readonly limit: number) {}

  /** Takes a permit, waiting for one when all are taken; give it back with release(). */
  acquire(group: unknown = this): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => this.wait(group, resolve));
  }

  /** A released permit goes straight to the next waiter, so none can jump the queue. */
  release(): void {
    this.next();
  }

  private wait(group: unknown, resolve: () => void): void {
    const queue = this.waiters.get(group);
    if (queue) queue.push(resolve);
    else this.waiters.set(group, [resolve]);
  }

  private next(): void {
    const turn = this.waiters.entries().next();
    if (turn.done) return void this.active--;
    const [group, queue] = turn.value;
    this.waiters.delete(group);
    const resolve = queue.shift()!;
    if (queue.length > 0) this.waiters.set(group, queue); // to the back of the turn order
    resolve();
  }
}
