/**
 * Durations written as in Go's time.ParseDuration, limited to the units d, h, m and s.
 * The `d` unit (24h) is an addition that Go does not have.
 */

const UNIT_MS: Readonly<Record<string, number>> = {
  d: 24 * 60 * 60 * 1000,
  h: 60 * 60 * 1000,
  m: 60 * 1000,
  s: 1000,
};

const DURATION = /^[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[dhms])+$/;
const DURATION_PART = /([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([dhms])/g;

/**
 * Parses a duration such as `8760h`, `90m`, `1h30m`, `1.5h` or `365d` into milliseconds,
 * rounded to the nearest millisecond. A bare `0` is accepted as in Go. Returns undefined
 * when the syntax is invalid. Zero and negative durations parse, so that the caller can
 * report them as not positive.
 */
export function parseDuration(text: string): number | undefined {
  if (/^[-+]?0$/.test(text)) {
    return 0;
  }
  if (!DURATION.test(text)) {
    return undefined;
  }

  let total = 0;
  for (const [, amount, unit] of text.matchAll(DURATION_PART)) {
    total += Number.parseFloat(amount!) * UNIT_MS[unit!]!;
  }
  const sign = text.startsWith('-') ? -1 : 1;
  return sign * Math.round(total);
}

/** Formats milliseconds with the units h, m and s, such as `4380h` or `1h30m`, for messages. */
export function formatDuration(ms: number): string {
  let rest = Math.max(0, Math.round(ms));
  const hours = Math.floor(rest / UNIT_MS.h!);
  rest -= hours * UNIT_MS.h!;
  const minutes = Math.floor(rest / UNIT_MS.m!);
  rest -= minutes * UNIT_MS.m!;
  const seconds = rest / UNIT_MS.s!;

  let text = '';
  if (hours > 0) {
    text += `${hours}h`;
  }
  if (minutes > 0) {
    text += `${minutes}m`;
  }
  if (seconds > 0 || text === '') {
    text += `${seconds}s`;
  }
  return text;
}
