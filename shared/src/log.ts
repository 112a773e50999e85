/**
 * Structured logging for both programs. Messages are constant phrases; data goes in fields.
 * Logs go to stderr so that command output on stdout (plans, JSON reports) stays machine-readable.
 */
import * as winston from 'winston';

export type Logger = winston.Logger;
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

export interface LoggerOptions {
  readonly level?: LogLevel;
  /** `json` for log collectors, `text` for people at a terminal. */
  readonly format?: 'json' | 'text';
  /** Set on every line, for example `{component: 'agent', node: 'etcd-1'}`. */
  readonly fields?: Record<string, string>;
}

const textFormat = winston.format.printf((info) => {
  const { level, message, timestamp, ...fields } = info;
  const rendered = Object.entries(fields)
    .filter(([key]) => typeof key === 'string')
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  return `${String(timestamp)} ${level} ${String(message)}${rendered ? ' ' + rendered : ''}`;
});

/** Builds a logger writing to stderr; only entry points call this, everything else receives a logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
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
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
