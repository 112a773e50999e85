/**
 * The agent's configuration file, written by `controller enroll` and read at start-up. Relative
 * file paths are resolved against the configuration file's directory.
 */
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { SERVICES } from '@kubetrust/shared/dist/catalogue';

export type RestartHook = { readonly command: readonly string[] } | { readonly systemd: string };

export type HealthCheck =
  | { readonly https: { readonly url: string; readonly caFile: string; readonly certFile?: string; readonly keyFile?: string } }
  | { readonly tcp: { readonly address: string } }
  | { readonly command: readonly string[] }
  /** `health: none`: no check, not even the controller's default one for etcd or kube-apiserver. */
  | { readonly none: true };

export interface ServiceHooks {
  readonly restart: RestartHook;
  readonly health?: HealthCheck;
  /** How long the health check may take to pass after a restart. */
  readonly timeoutSeconds: number;
}

export interface AgentConfig {
  readonly nodeName: string;
  readonly cluster: string;
  readonly listen: { readonly host: string; readonly port: number };
  /** Every path the controller names is installed below this directory. */
  readonly installRoot: string;
  /** Staged keys and backups. */
  readonly stateDir: string;
  readonly tls: { readonly certFile: string; readonly keyFile: string; readonly caFile: string };
  /** URI SAN of the only client identity the agent accepts. */
  readonly controllerIdentity: string;
  /** How many earlier changes the agent keeps backups of, for rollback. */
  readonly backupsKept: number;
  /**
   * Hooks per service. A service without an entry is restarted with `systemctl restart <name>`. A
   * service without a health check gets the controller's default check for it (etcd's /health,
   * the apiserver's /readyz), if any.
   */
  readonly services: Readonly<Record<string, ServiceHooks>>;
}

export const DEFAULT_HEALTH_TIMEOUT_SECONDS = 60;

export class AgentConfigError extends Error {
  constructor(
    file: string,
    readonly field: string,
    readonly problem: string,
    readonly fix: string,
  ) {
    super(`invalid agent configuration ${file}: ${field}: ${problem}; ${fix}`);
    this.name = 'AgentConfigError';
  }
}

const TOP_LEVEL_FIELDS = ['apiVersion', 'kind', 'nodeName', 'cluster', 'listen', 'installRoot', 'stateDir', 'tls', 'controllerIdentity', 'backupsKept', 'services'];
const DEFAULT_BACKUPS_KEPT = 5;

class Reader {
  constructor(
    private readonly file: string,
    private readonly baseDir: string,
  ) {}

  fail(field: string, message: string, fix: string): never {
    throw new AgentConfigError(this.file, field, message, fix);
  }

  mapping(value: unknown, field: string, allowed: readonly string[]): Record<string, unknown> {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      this.fail(field, `expected a mapping, found ${JSON.stringify(value)}`, `write ${field} as a YAML mapping`);
    }
    const map = value as Record<string, unknown>;
    for (const key of Object.keys(map)) {
      if (!allowed.includes(key)) this.fail(`${field === '' ? '' : field + '.'}${key}`, 'unknown field', `remove it or use one of: ${allowed.join(', ')}`);
    }
    return map;
  }

  string(value: unknown, field: string): string {
    if (typeof value !== 'string' || value === '') this.fail(field, `expected a non-empty string, found ${JSON.stringify(value)}`, `set ${field}`);
    return value;
  }

  file_(value: unknown, field: string): string {
    return path.resolve(this.baseDir, this.string(value, field));
  }

  argv(value: unknown, field: string): string[] {
    if (!Array.isArray(value) || value.length === 0 || !value.every((item) => typeof item === 'string' && item !== '')) {
      this.fail(field, `expected a non-empty list of strings, found ${JSON.stringify(value)}`, 'write the command as a list, for example [systemctl, restart, etcd]');
    }
    return value as string[];
  }
}

function parseListen(reader: Reader, value: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(value);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (host === undefined || !(port >= 1 && port <= 65535)) {
    reader.fail('listen', `"${value}" is not host:port`, 'write an address such as 127.0.0.1:7443 or [::1]:7443');
  }
  if (match?.[1] !== undefined && isIP(host) !== 6) reader.fail('listen', `"${host}" is not an IPv6 address`, 'use brackets only around IPv6 addresses');
  return { host, port };
}

function parseHealth(reader: Reader, value: unknown, field: string): HealthCheck {
  if (value === 'none') return { none: true };
  if (typeof value === 'string') reader.fail(field, `"${value}" is not a health check`, 'write none, or a mapping with one of https, tcp or command');
  const map = reader.mapping(value, field, ['https', 'tcp', 'command']);
  const kinds = Object.keys(map);
  if (kinds.length !== 1) reader.fail(field, `expected exactly one of https, tcp or command, found ${kinds.length}`, 'keep one check per service');
  if (map.https !== undefined) {
    const https = reader.mapping(map.https, `${field}.https`, ['url', 'caFile', 'certFile', 'keyFile']);
    const url = reader.string(https.url, `${field}.https.url`);
    if (!url.startsWith('https://')) reader.fail(`${field}.https.url`, `"${url}" is not an https URL`, 'write an https:// URL');
    return {
      https: {
        url,
        caFile: reader.file_(https.caFile, `${field}.https.caFile`),
        ...(https.certFile !== undefined ? { certFile: reader.file_(https.certFile, `${field}.https.certFile`) } : {}),
        ...(https.keyFile !== undefined ? { keyFile: reader.file_(https.keyFile, `${field}.https.keyFile`) } : {}),
      },
    };
  }
  if (map.tcp !== undefined) {
    const tcp = reader.mapping(map.tcp, `${field}.tcp`, ['address']);
    return { tcp: { address: reader.string(tcp.address, `${field}.tcp.address`) } };
  }
  return { command: reader.argv(map.command, `${field}.command`) };
}

function parseService(reader: Reader, value: unknown, field: string): ServiceHooks {
  const map = reader.mapping(value, field, ['restart', 'health', 'timeoutSeconds']);
  const restartMap = reader.mapping(map.restart, `${field}.restart`, ['command', 'systemd']);
  const restart: RestartHook =
    restartMap.command !== undefined
      ? { command: reader.argv(restartMap.command, `${field}.restart.command`) }
      : { systemd: reader.string(restartMap.systemd, `${field}.restart.systemd`) };
  const timeout = map.timeoutSeconds ?? DEFAULT_HEALTH_TIMEOUT_SECONDS;
  if (typeof timeout !== 'number' || !(timeout > 0)) {
    reader.fail(`${field}.timeoutSeconds`, `expected a positive number, found ${JSON.stringify(timeout)}`, 'write a number of seconds such as 60');
  }
  return {
    restart,
    ...(map.health !== undefined ? { health: parseHealth(reader, map.health, `${field}.health`) } : {}),
    timeoutSeconds: timeout,
  };
}

/** Validates a parsed configuration document. */
export function parseAgentConfig(document: unknown, file: string): AgentConfig {
  const reader = new Reader(file, path.dirname(path.resolve(file)));
  const root = reader.mapping(document, '', TOP_LEVEL_FIELDS);
  if (root.apiVersion !== 'kubetrust/v1') reader.fail('apiVersion', `expected "kubetrust/v1", found ${JSON.stringify(root.apiVersion)}`, 'write apiVersion: kubetrust/v1');
  if (root.kind !== 'AgentConfig') reader.fail('kind', `expected "AgentConfig", found ${JSON.stringify(root.kind)}`, 'write kind: AgentConfig');
  const tls = reader.mapping(root.tls, 'tls', ['certFile', 'keyFile', 'caFile']);
  const services: Record<string, ServiceHooks> = {};
  const serviceMap = root.services === undefined || root.services === null ? {} : reader.mapping(root.services, 'services', SERVICES);
  for (const [name, hooks] of Object.entries(serviceMap)) services[name] = parseService(reader, hooks, `services.${name}`);
  const installRoot = root.installRoot === undefined ? '/' : reader.file_(root.installRoot, 'installRoot');
  const backupsKept = root.backupsKept ?? DEFAULT_BACKUPS_KEPT;
  if (typeof backupsKept !== 'number' || !Number.isInteger(backupsKept) || backupsKept < 1) {
    reader.fail('backupsKept', `expected a whole number of at least 1, found ${JSON.stringify(backupsKept)}`, 'write the number of earlier changes to keep, such as 5');
  }
  return {
    nodeName: reader.string(root.nodeName, 'nodeName'),
    cluster: reader.string(root.cluster, 'cluster'),
    listen: parseListen(reader, reader.string(root.listen, 'listen')),
    installRoot,
    stateDir: reader.file_(root.stateDir ?? '/var/lib/kubetrust/agent', 'stateDir'),
    tls: {
      certFile: reader.file_(tls.certFile, 'tls.certFile'),
      keyFile: reader.file_(tls.keyFile, 'tls.keyFile'),
      caFile: reader.file_(tls.caFile, 'tls.caFile'),
    },
    controllerIdentity: reader.string(root.controllerIdentity, 'controllerIdentity'),
    backupsKept: backupsKept as number,
    services,
  };
}

/** Reads and validates the configuration file. */
export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new AgentConfigError(file, '(file)', `cannot read: ${(error as Error).message}`, 'pass the agent.yaml written by `controller enroll`');
  }
  let document: unknown;
  try {
    document = YAML.parse(text);
  } catch (error) {
    throw new AgentConfigError(file, '(yaml)', (error as Error).message, 'fix the YAML syntax');
  }
  return parseAgentConfig(document, file);
}
