/**
 * Preload for `node --require` that moves the process's clock by KUBETRUST_TEST_CLOCK_OFFSET_MS
 * milliseconds, as on a host whose time is off. Only `Date.now()` and `new Date()` without
 * arguments move: timers and OpenSSL's certificate checks keep the real time.
 */
const offsetMs = Number(process.env.KUBETRUST_TEST_CLOCK_OFFSET_MS ?? '0');
if (!Number.isFinite(offsetMs)) throw new Error(`KUBETRUST_TEST_CLOCK_OFFSET_MS: "${process.env.KUBETRUST_TEST_CLOCK_OFFSET_MS}" is not a number of milliseconds`);

const RealDate = Date;

class OffsetDate extends RealDate {
  constructor(...args: unknown[]) {
    if (args.length === 0) super(RealDate.now() + offsetMs);
    else super(...(args as ConstructorParameters<DateConstructor>));
  }

  static override now(): number {
    return RealDate.now() + offsetMs;
  }
}

globalThis.Date = OffsetDate as DateConstructor;
