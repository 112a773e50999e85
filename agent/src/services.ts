/**
 * Restarts services through their configured hooks and waits for their health checks. systemd is
 * the default restart hook. A service without a health check in agent.yaml gets the default check
 * that the controller sent for it. A service with neither, or with `health: none`, counts as
 * healthy once its restart command succeeds.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as https from 'node:https';
import * as net from 'node:net';
import type { DefaultHealthCheck__Output, ServiceResult } from '@kubetrust/proto';
import { SERVICES } from '@kubetrust/shared/dist/catalogue';
import type { Logger } from '@kubetrust/shared/dist/logger';
import type { HealthCheck, RestartHook, ServiceHooks } from './config';
import { DEFAULT_HEALTH_TIMEOUT_SECONDS } from './config';
import { InvalidRequestError } from './errors';
import { hostPath } from './paths';

const RESTART_TIMEOUT_MS = 120_000;
const CHECK_ATTEMPT_TIMEOUT_MS = 5_000;
const CHECK_INTERVAL_MS = 1_000;
const MAX_OUTPUT = 2_000;

interface Outcome {
  readonly ok: boolean;
  readonly output: string;
}

/** Trims command output to one line, with ` | ` between its lines, so that reports and logs stay one record per line. */
function trim(text: string): string {
  const clean = text.trim().replace(/\s*\n\s*/g, ' | ');
  return clean.length > MAX_OUTPUT ? `${clean.slice(0, MAX_OUTPUT)}…` : clean;
}

function run(argv: readonly string[], timeoutMs: number): Promise<Outcome> {
  const [command, ...args] = argv;
  return new Promise((resolve) => {
    execFile(command ?? '', args, { timeout: timeoutMs }, (error, stdout, stderr) => {
      const output = trim(`${stdout}${stderr}`);
      if (error === null) {
        resolve({ ok: true, output });
        return;
      }
      // error.message repeats the command's stderr, so only the exit status is taken from it.
      const status = error.killed ? `timed out after ${timeoutMs} ms` : `exit status ${String(error.code ?? error.signal)}`;
      resolve({ ok: false, output: trim(`${command ?? ''} failed: ${status}\n${output}`) });
    });
  });
}

function restartArgv(hook: RestartHook): readonly string[] {
  return 'command' in hook ? hook.command : ['systemctl', 'restart', hook.systemd];
}

export function describeCheck(check: HealthCheck): string {
  if ('none' in check) return 'none';
  if ('https' in check) return `https ${check.https.url}`;
  if ('tcp' in check) return `tcp ${check.tcp.address}`;
  return `command ${check.command.join(' ')}`;
}

async function checkHttps(check: Extract<HealthCheck, { https: unknown }>['https']): Promise<Outcome> {
  const [ca, cert, key] = await Promise.all([
    fs.readFile(check.caFile),
    check.certFile === undefined ? undefined : fs.readFile(check.certFile),
    check.keyFile === undefined ? undefined : fs.readFile(check.keyFile),
  ]);
  return new Promise((resolve) => {
    const request = https.get(check.url, { ca, cert, key, timeout: CHECK_ATTEMPT_TIMEOUT_MS }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        const status = response.statusCode ?? 0;
        resolve({ ok: status >= 200 && status < 300, output: trim(`HTTP ${status} ${body}`) });
      });
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', (error) => resolve({ ok: false, output: error.message }));
  });
}

function checkTcp(address: string): Promise<Outcome> {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(address);
  const host = match?.[1] ?? match?.[2] ?? address;
  const port = Number(match?.[3]);
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: CHECK_ATTEMPT_TIMEOUT_MS });
    socket.on('connect', () => {
      socket.destroy();
      resolve({ ok: true, output: `connected to ${address}` });
    });
    socket.on('timeout', () => socket.destroy(new Error('timed out')));
    socket.on('error', (error) => resolve({ ok: false, output: error.message }));
  });
}

async function checkOnce(check: HealthCheck): Promise<Outcome> {
  try {
    if ('none' in check) return { ok: true, output: '' };
    if ('https' in check) return await checkHttps(check.https);
    if ('tcp' in check) return await checkTcp(check.tcp.address);
    return await run(check.command, CHECK_ATTEMPT_TIMEOUT_MS * 2);
  } catch (error) {
    return { ok: false, output: (error as Error).message };
  }
}

/** Polls a health check until it passes or the timeout runs out; returns the last outcome. */
export async function waitHealthy(check: HealthCheck, timeoutSeconds: number): Promise<Outcome> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  for (;;) {
    const outcome = await checkOnce(check);
    if (outcome.ok || Date.now() + CHECK_INTERVAL_MS > deadline) return outcome;
    await new Promise((resolve) => setTimeout(resolve, CHECK_INTERVAL_MS));
  }
}

/**
 * Turns the default checks of a request into health checks by service, with their files below the
 * install root. Throws InvalidRequestError for an unknown service, a URL that is not https, or a
 * file path that is not absolute or contains "..".
 */
export function defaultHealthChecks(installRoot: string, checks: readonly DefaultHealthCheck__Output[]): Map<string, HealthCheck> {
  const result = new Map<string, HealthCheck>();
  for (const check of checks) {
    const field = `default health check of ${check.service}`;
    if (!(SERVICES as readonly string[]).includes(check.service)) throw new InvalidRequestError(`default health check for unknown service "${check.service}"`);
    if (result.has(check.service)) throw new InvalidRequestError(`${field}: given twice`);
    let url: URL;
    try {
      url = new URL(check.url);
    } catch {
      throw new InvalidRequestError(`${field}: "${check.url}" is not a URL`);
    }
    if (url.protocol !== 'https:') throw new InvalidRequestError(`${field}: "${check.url}" is not an https URL`);
    const file = (nodePath: string): string => {
      try {
        return hostPath(installRoot, nodePath);
      } catch (error) {
        throw new InvalidRequestError(`${field}: ${(error as Error).message}`);
      }
    };
    if ((check.cert_file === '') !== (check.key_file === '')) throw new InvalidRequestError(`${field}: a client certificate needs both cert_file and key_file`);
    result.set(check.service, {
      https: {
        url: check.url,
        caFile: file(check.ca_file),
        ...(check.cert_file !== '' ? { certFile: file(check.cert_file), keyFile: file(check.key_file) } : {}),
      },
    });
  }
  return result;
}

/**
 * Restarts one service and waits for its health check: the one in agent.yaml, else `fallback`, the
 * controller's default check for the service.
 */
export async function restartService(name: string, hooks: ServiceHooks | undefined, logger: Logger, fallback?: HealthCheck): Promise<ServiceResult> {
  const restart = hooks?.restart ?? { systemd: name };
  logger.info('restarting service', { service: name });
  const restarted = await run(restartArgv(restart), RESTART_TIMEOUT_MS);
  if (!restarted.ok) {
    logger.error('service restart failed', { service: name, output: restarted.output });
    return { name, restarted: false, healthy: false, check: 'restart', output: restarted.output };
  }
  const health = hooks?.health ?? fallback;
  if (health === undefined || 'none' in health) return { name, restarted: true, healthy: true, check: 'none configured', output: '' };
  const check = hooks?.health === undefined ? `default ${describeCheck(health)}` : describeCheck(health);
  const outcome = await waitHealthy(health, hooks?.timeoutSeconds ?? DEFAULT_HEALTH_TIMEOUT_SECONDS);
  if (!outcome.ok) logger.error('service health check failed', { service: name, check, output: outcome.output });
  else logger.info('service healthy', { service: name, check });
  return { name, restarted: true, healthy: outcome.ok, check, output: outcome.ok ? '' : outcome.output };
}
