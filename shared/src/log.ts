/**
 * Structured logging for the controller, with winston. Messages are constant phrases, and data goes in fields.
 * Logs go to stderr so that command output on stdout (plans, JSON reports) stays machine-readable.
 * The agent does not load this module: it logs with `./line-logger`, which prints the same lines.
 */
import * as winston from 'winston';
import { LOG_LEVELS, type LoggerOptions } from './logger';

export { LOG_LEVELS, type LogFields, type LogLevel, type Logger, type LoggerOptions } from './logger';

const textFormat = winston.format.printf((info) => {
  const { level, message, timestamp, ...fields } = info;
  const rendered = Object.entries(fields)
    .filter(([key]) => typeof key === 'string')
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  return `${String(timestamp)} ${level} ${String(message)}${rendered ? ' ' + rendered : ''}`;
});

/** Builds a logger writing to stderr; only entry points call this, everything else receives a logger. */
export function createLogger(options: LoggerOptions = {}): winston.Logger {
  const format =
    options.format === 'json'
      ? winston.format.combine(winston.format.timestamp(), winston.format.json())
      : winston.format.combine(winston.format.timestamp(), textFormat);
  return winston.createLogger({
    level: options.level ?? 'info',
    format,
    defaultMeta: options.fields ?? {},
    transports: [new winston.transports.Console({ stderrLevels: [...LOG_LEVELS] })],
  });
}

/** A logger that drops everything, for tests and library callers that pass none. */
export function silentLogger(): winston.Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
