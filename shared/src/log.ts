/**
 * The loggers that the controller's and the agent's entry points build. Messages are constant
 * phrases, and data goes in fields. Logs go to stderr so that command output on stdout (plans,
 * JSON reports) stays machine-readable. Both programs write through `./line-logger`, which loads no
 * package: with winston and its 16 packages, each controller command spent about 8 ms more CPU
 * before it started (docs/benchmarks.md).
 */
import { createLineLogger } from './line-logger';
import type { Logger, LoggerOptions } from './logger';

export { LOG_LEVELS, type LogFields, type LogLevel, type Logger, type LoggerOptions } from './logger';

/** Builds a logger writing to stderr; only entry points call this, everything else receives a logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return createLineLogger(options);
}

/** A logger that drops everything, for tests and library callers that pass none. */
export function silentLogger(): Logger {
  return createLineLogger({ stream: { write: () => true } });
}
