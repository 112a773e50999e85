/**
 * The line logger against winston with the formats it copies: the same calls must print the same
 * lines in both formats, apart from the time, and filter levels the same way. Also checks that
 * loading the agent's or the controller's command line does not load winston.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createLineLogger, type LineStream } from '@kubetrust/shared/dist/line-logger';
import { createLogger } from '@kubetrust/shared/dist/log';
import * as winston from 'winston';
import { LOG_LEVELS, type LogFields, type LogLevel, type Logger, type LoggerOptions } from '@kubetrust/shared/dist/logger';

const run = promisify(execFile);
const AGENT_CLI_MODULE = require.resolve('@kubetrust/agent/dist/cli');
const CONTROLLER_CLI_MODULE = require.resolve('@kubetrust/controller/dist/cli');
const LINE_LOGGER_MODULE = require.resolve('@kubetrust/shared/dist/line-logger');

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const ISO_TIME_AT_LINE_START = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z /gm;
const DEFAULT_FIELDS = { component: 'agent', node: 'etcd-1' };

/** Calls `write` with `process.stderr.write` replaced and returns the chunks written to stderr. */
function captureStderr(write: () => void): string[] {
  const chunks: string[] = [];
  const original = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    chunks.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    write();
  } finally {
    process.stderr.write = original;
  }
  return chunks;
}

/** `<timestamp> <level> <message> key=value ...`, strings bare and other values as JSON. */
const WINSTON_TEXT_FORMAT = winston.format.printf((info) => {
  const { level, message, timestamp, ...fields } = info;
  const rendered = Object.entries(fields)
    .filter(([key]) => typeof key === 'string')
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  return `${String(timestamp)} ${level} ${String(message)}${rendered ? ' ' + rendered : ''}`;
});

/** Builds a winston logger with the formats that the line logger copies, writing to stderr. */
function winstonLogger(options: LoggerOptions): Logger {
  const format =
    options.format === 'json'
      ? winston.format.combine(winston.format.timestamp(), winston.format.json())
      : winston.format.combine(winston.format.timestamp(), WINSTON_TEXT_FORMAT);
  return winston.createLogger({
    level: options.level ?? 'info',
    format,
    defaultMeta: options.fields ?? {},
    transports: [new winston.transports.Console({ stderrLevels: [...LOG_LEVELS] })],
  });
}

/** Builds a winston and a line logger with the same options, both writing to stderr. */
function loggerPair(options: LoggerOptions): { winston: Logger; line: Logger } {
  return { winston: winstonLogger(options), line: createLineLogger(options) };
}

/** Makes `logger` write entries, or throws what it throws. */
type LogCall = (logger: Logger) => void;

function circular(): Record<string, unknown> {
  const value: Record<string, unknown> = { name: 'loop' };
  value.self = value;
  return value;
}

// Created once, so that both loggers print the same stack.
const PLAIN_ERROR = new Error('boom');
const ERROR_WITH_CODE = Object.assign(new Error('file not found', { cause: 'no such file' }), { code: 'ENOENT', path: '/etc/kubernetes/pki/ca.crt' });

/** Calls as the agent makes them, then the edge cases where winston merges fields in its own way. */
const CALLS: ReadonlyArray<readonly [string, LogCall]> = [
  ['message only', (logger) => logger.info('agent listening')],
  ['empty fields', (logger) => logger.info('agent listening', {})],
  ['undefined fields', (logger) => logger.info('agent listening', undefined)],
  ['string as fields', (logger) => logger.info('agent listening', 'extra' as unknown as LogFields)],
  ['string and number fields', (logger) => logger.info('change installed', { change: 'c-1', files: 3 })],
  ['each level', (logger) => {
    logger.error('call failed', { method: 'Apply', reason: 'INTERNAL' });
    logger.warn('call failed', { method: 'Apply', reason: 'BUSY' });
    logger.info('generated keys', { count: 2 });
    logger.debug('grpc', { detail: 'connection closed' });
  }],
  ['per-call field named like a default', (logger) => logger.info('watching the kubelet registration', { node: 'worker-7', path: '/var/lib/kubelet' })],
  ['field named message', (logger) => logger.warn('inventory warning', { field: 'spec.nodes', message: 'duplicate address', fix: 'remove one' })],
  ['empty field named message', (logger) => logger.warn('inventory warning', { message: '' })],
  ['field named level', (logger) => logger.info('change installed', { level: 'error' })],
  ['field named timestamp', (logger) => logger.info('change installed', { timestamp: 'yesterday' })],
  ['empty field named timestamp', (logger) => logger.info('change installed', { timestamp: '' })],
  ['fields named stack and cause', (logger) => logger.error('call failed', { stack: 'at install', cause: 'disk full' })],
  ['Error as a field', (logger) => logger.error('call failed', { error: PLAIN_ERROR })],
  ['Error with code as a field', (logger) => logger.error('call failed', { error: ERROR_WITH_CODE })],
  ['Error as fields', (logger) => logger.error('call failed', ERROR_WITH_CODE as unknown as LogFields)],
  ['undefined, null and function values', (logger) => logger.info('state', { missing: undefined, empty: null, callback: () => 1 })],
  ['boolean values', (logger) => logger.info('state', { ok: true, restarted: false })],
  ['nested objects and arrays', (logger) => logger.info('state', { z: { b: 1, a: [1, undefined, { d: 1, c: 2 }] }, a: [] })],
  ['Date, Buffer and typed array', (logger) => logger.info('state', { at: new Date(0), raw: Buffer.from('hi'), bytes: new Uint8Array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]) })],
  ['keys needing sorting and escaping', (logger) => logger.info('state', { b: 1, '10': 2, '9': 3, 'a"b': 4, A: 5 })],
  ['strings needing escaping', (logger) => logger.info('quote " and \\ and \u00e9', { text: 'tab\tnewline\nend', unicode: '\u2713 \ud800' })],
  ['non-finite numbers', (logger) => logger.info('state', { nan: Number.NaN, inf: Number.POSITIVE_INFINITY, zero: -0 })],
];

/** Calls that the JSON format writes and the text format throws on, in both loggers. */
const JSON_ONLY_CALLS: ReadonlyArray<readonly [string, LogCall]> = [
  ['BigInt value', (logger) => logger.info('state', { serial: 10n ** 20n })],
  ['circular value', (logger) => logger.info('state', { loop: circular() })],
];

/** Output of `call`, or `throws: <message>` when it throws. */
function outputOf(logger: Logger, call: LogCall): string[] {
  let thrown: unknown;
  const chunks = captureStderr(() => {
    try {
      call(logger);
    } catch (error) {
      thrown = error;
    }
  });
  if (thrown === undefined) return chunks;
  const reason = thrown instanceof Error ? thrown.message : String(thrown);
  return [...chunks, `throws: ${reason}`];
}

function maskTextTimes(chunks: readonly string[]): string[] {
  return chunks.map((chunk) => chunk.replace(ISO_TIME_AT_LINE_START, '<time> '));
}

/** Parses each JSON line and replaces a generated ISO time with a placeholder. */
function parseJsonLines(chunks: readonly string[]): unknown[] {
  return chunks.map((chunk) => {
    const entry = JSON.parse(chunk) as Record<string, unknown>;
    if (typeof entry.timestamp === 'string' && ISO_TIME.test(entry.timestamp)) entry.timestamp = '<time>';
    return entry;
  });
}

function maskJsonTimes(chunks: readonly string[]): string[] {
  return chunks.map((chunk) => chunk.replace(/"timestamp":"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"/, '"timestamp":"<time>"'));
}

describe('line logger text format', () => {
  for (const [name, call] of CALLS) {
    it(`matches winston: ${name}`, () => {
      const loggers = loggerPair({ level: 'debug', format: 'text', fields: DEFAULT_FIELDS });
      const expected = outputOf(loggers.winston, call);
      const actual = outputOf(loggers.line, call);
      assert.ok(expected.length > 0, 'winston wrote nothing, so this case compares nothing');
      assert.deepEqual(maskTextTimes(actual), maskTextTimes(expected));
    });
  }

  for (const [name, call] of JSON_ONLY_CALLS) {
    it(`throws like winston: ${name}`, () => {
      const loggers = loggerPair({ level: 'debug', format: 'text', fields: DEFAULT_FIELDS });
      const expected = outputOf(loggers.winston, call);
      assert.match(expected.at(-1) ?? '', /^throws: /);
      assert.deepEqual(outputOf(loggers.line, call), expected);
    });
  }

  it('writes time, level, message, then fields', () => {
    const logger = createLineLogger({ format: 'text', fields: DEFAULT_FIELDS });
    const [line] = outputOf(logger, (l) => l.info('restarting service', { service: 'kubelet', attempt: 2, node: 'worker-7' }));
    assert.match(line ?? '', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z info restarting service component=agent node=worker-7 service=kubelet attempt=2\n$/);
  });
});

describe('line logger json format', () => {
  for (const [name, call] of [...CALLS, ...JSON_ONLY_CALLS]) {
    it(`matches winston: ${name}`, () => {
      const loggers = loggerPair({ level: 'debug', format: 'json', fields: DEFAULT_FIELDS });
      const expected = outputOf(loggers.winston, call);
      const actual = outputOf(loggers.line, call);
      assert.ok(expected.length > 0, 'winston wrote nothing, so this case compares nothing');
      assert.deepEqual(parseJsonLines(actual), parseJsonLines(expected));
      assert.deepEqual(maskJsonTimes(actual), maskJsonTimes(expected), 'same entries, but not the same bytes');
    });
  }

  it('writes one object per line with a current time', () => {
    const logger = createLineLogger({ format: 'json', fields: DEFAULT_FIELDS });
    const before = Date.now();
    const chunks = outputOf(logger, (l) => l.warn('call failed', { method: 'Apply', text: 'two\nlines' }));
    assert.equal(chunks.length, 1);
    assert.equal(chunks[0]?.indexOf('\n'), (chunks[0]?.length ?? 0) - 1, 'the entry spans more than one line');
    const entry = JSON.parse(chunks[0] ?? '') as Record<string, unknown>;
    assert.deepEqual(Object.keys(entry), ['component', 'level', 'message', 'method', 'node', 'text', 'timestamp']);
    const time = Date.parse(String(entry.timestamp));
    assert.ok(time >= before, `timestamp ${String(entry.timestamp)} is before the call`);
    assert.ok(time <= Date.now(), `timestamp ${String(entry.timestamp)} is in the future`);
  });
});

describe('line logger levels', () => {
  /** Writes one entry at each level and returns the levels that were written. */
  function writtenLevels(logger: Logger): string[] {
    const chunks = outputOf(logger, (l) => {
      l.error('entry');
      l.warn('entry');
      l.info('entry');
      l.debug('entry');
    });
    return chunks.map((chunk) => (JSON.parse(chunk) as { level: string }).level);
  }

  const EXPECTED: Readonly<Record<LogLevel, readonly string[]>> = {
    error: ['error'],
    warn: ['error', 'warn'],
    info: ['error', 'warn', 'info'],
    debug: ['error', 'warn', 'info', 'debug'],
  };

  for (const level of LOG_LEVELS) {
    it(`filter at ${level} like winston`, () => {
      const loggers = loggerPair({ level, format: 'json' });
      assert.deepEqual(writtenLevels(loggers.line), EXPECTED[level]);
      assert.deepEqual(writtenLevels(loggers.winston), EXPECTED[level]);
    });
  }

  it('default to info', () => {
    const logger = createLineLogger({ format: 'json' });
    assert.equal(logger.level, 'info');
    assert.deepEqual(writtenLevels(logger), EXPECTED.info);
  });

  it('follow an assigned level', () => {
    const logger = createLineLogger({ level: 'info', format: 'json' });
    logger.level = 'debug';
    assert.equal(logger.level, 'debug');
    assert.deepEqual(writtenLevels(logger), EXPECTED.debug);
    logger.level = 'error';
    assert.equal(logger.level, 'error');
    assert.deepEqual(writtenLevels(logger), EXPECTED.error);
  });

  it('reject an unknown level', () => {
    const logger = createLineLogger({ level: 'warn' });
    assert.throws(() => {
      logger.level = 'verbose' as LogLevel;
    }, /invalid log level "verbose": use one of error, warn, info, debug/);
    assert.equal(logger.level, 'warn');
    assert.throws(() => createLineLogger({ level: 'trace' as LogLevel }), RangeError);
  });

  it('report debug like winston', () => {
    const loggers = loggerPair({ level: 'info' });
    for (const level of LOG_LEVELS) {
      loggers.line.level = level;
      loggers.winston.level = level;
      assert.equal(loggers.line.isDebugEnabled(), level === 'debug', `isDebugEnabled() at ${level}`);
      assert.equal(loggers.line.isDebugEnabled(), loggers.winston.isDebugEnabled(), `winston differs at ${level}`);
    }
  });
});

describe('line logger options', () => {
  it('writes to a given stream', () => {
    const written: string[] = [];
    const stream: LineStream = { write: (chunk) => written.push(chunk) };
    const stderr = captureStderr(() => createLineLogger({ stream, fields: DEFAULT_FIELDS }).info('agent stopping', { signal: 'SIGTERM' }));
    assert.deepEqual(stderr, []);
    assert.equal(written.length, 1);
    assert.match(written[0] ?? '', / info agent stopping component=agent node=etcd-1 signal=SIGTERM\n$/);
  });

  it('keeps what winston drops', () => {
    const logger = createLineLogger({ format: 'json' });
    const [printf] = outputOf(logger, (l) => l.info('progress 50%d', { done: 1 }));
    assert.equal((JSON.parse(printf ?? '{}') as Record<string, unknown>).done, 1, 'fields after a printf token are missing');
    const [exception] = outputOf(logger, (l) => l.info('state', { exception: true }));
    assert.ok(exception !== undefined, 'an entry with the field exception: true is missing');
  });

  it('rejects reserved default fields', () => {
    for (const name of ['level', 'message', 'timestamp']) {
      assert.throws(() => createLineLogger({ fields: { [name]: 'x' } }), new RegExp(`invalid default log field "${name}"`));
    }
  });
});

/** Loads `module` in a child process and returns the files of the winston packages it loaded. */
async function winstonModulesLoadedBy(module: string): Promise<string[]> {
  const script = `require(${JSON.stringify(module)}); process.stdout.write(JSON.stringify(Object.keys(require.cache)));`;
  const { stdout } = await run(process.execPath, ['-e', script]);
  const loaded = JSON.parse(stdout) as string[];
  assert.ok(loaded.includes(module), `the child did not load ${module}, so the list shows nothing`);
  assert.ok(loaded.includes(LINE_LOGGER_MODULE), `${module} did not load ${LINE_LOGGER_MODULE}`);
  return loaded.filter((file) => /[\\/]node_modules[\\/](winston|winston-transport|logform|triple-beam|@dabh[\\/]diagnostics)[\\/]/.test(file));
}

describe('module graph', () => {
  it('the agent does not load winston', async () => {
    assert.deepEqual(await winstonModulesLoadedBy(AGENT_CLI_MODULE), [], 'the agent loads winston or one of its dependencies');
  });

  it('the controller does not load winston', async () => {
    assert.deepEqual(await winstonModulesLoadedBy(CONTROLLER_CLI_MODULE), [], 'the controller loads winston or one of its dependencies');
  });

  it('createLogger builds the line logger', () => {
    const chunks = captureStderr(() => createLogger({ fields: DEFAULT_FIELDS }).info('agent listening', { port: 9443 }));
    assert.equal(chunks.length, 1);
    assert.match(chunks[0]!, /^\d{4}-\d{2}-\d{2}T[\d:.]+Z info agent listening component=agent node=etcd-1 port=9443\n$/);
  });
});
