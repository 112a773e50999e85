/**
 * Runs synchronous CPU work, such as parsing a CSR and signing a certificate, one job per turn of
 * the event loop.
 *
 * When many agents respond at about the same time, their responses arrive in one turn of the event
 * loop, and signing for all of them at once would keep timers and sockets waiting for hundreds of
 * milliseconds. Jobs given to a CpuQueue run one after another, first in, first out, each in its
 * own setImmediate callback. The callback is scheduled only when the previous job has finished,
 * so timers, I/O and the code that awaited the previous job run in between.
 */
export class CpuQueue {
  private readonly jobs: (() => void)[] = [];
  private scheduled = false;

  /** Runs `job` after the jobs queued before it, in a later turn of the event loop; resolves with its result. */
  run<T>(job: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.jobs.push(() => {
        try {
          resolve(job());
        } catch (error) {
          reject(error);
        }
      });
      this.schedule();
    });
  }

  /** Resolves in a turn of its own after the jobs queued before it: for a caller about to do a little synchronous work. */
  turn(): Promise<void> {
    return this.run(() => undefined);
  }

  private schedule(): void {
    if (this.scheduled || this.jobs.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.jobs.shift()!();
      this.schedule();
    });
  }
}
