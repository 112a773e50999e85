/**
 * The logging interface that controller and agent code writes to, without an implementation. Entry
 * points build the loggers with `./log`.
 */

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
/** The levels from most to least severe, as in winston's npm levels. */
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

/** Data of one log entry. Strings are printed bare in the text format, other values as JSON. */
export type LogFields = Readonly<Record<string, unknown>>;

export interface LoggerOptions {
  readonly level?: LogLevel;
  /** `json` for log collectors, `text` for people at a terminal. */
  readonly format?: 'json' | 'text';
  /** Set on every line, for example `{component: 'agent', node: 'etcd-1'}`. */
  readonly fields?: Record<string, string>;
}

/** The logging interface of kubetrust code, a subset of winston's logger. Messages are constant phrases, and data goes in fields. */
export interface Logger {
  /** The minimum severity written, one of LOG_LEVELS. Less severe entries are dropped. */
  get level(): string;
  set level(value: LogLevel);
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  /** Returns whether debug entries are written, so that callers can skip building them. */
  isDebugEnabled(): boolean;
}
