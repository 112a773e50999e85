/**
 * Reads the SSH settings that `controller bootstrap` uses to reach a node: the cluster-wide
 * `spec.ssh` mapping and each node's `ssh` mapping, which overrides it field by field. The result
 * is one fully defaulted `SshSettings` per node.
 */
import { homedir } from 'node:os';
import path from 'node:path';

import { describeValue, IssueList, MappingReader } from './fields';
import { parseHost } from './net';
import type { SshJumpHost, SshSettings } from './types';

export const DEFAULT_SSH_PORT = 22;
export const DEFAULT_SSH_USER = 'root';
/** Known hosts file below the home directory of the user that runs the controller. */
export const DEFAULT_KNOWN_HOSTS_FILE = '~/.ssh/known_hosts';

/** Inputs besides the inventory text that the SSH defaults depend on. */
export interface SshContext {
  /** Environment of the controller: `SSH_AUTH_SOCK` decides whether the ssh-agent is used by default. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Replaces a leading `~` in file paths. */
  readonly homeDir: string;
  /** Directory against which relative file paths are resolved, usually the inventory's directory. */
  readonly baseDir: string;
}

export function defaultSshContext(baseDir?: string): SshContext {
  return { env: process.env, homeDir: homedir(), baseDir: baseDir ?? process.cwd() };
}

const CLUSTER_SSH_FIELDS = [
  'host',
  'port',
  'user',
  'privateKeyFile',
  'passphraseEnv',
  'agent',
  'jumpHost',
  'sudo',
  'knownHostsFile',
  'hostKeyFingerprint',
] as const;
const JUMP_HOST_FIELDS = ['host', 'port', 'user', 'privateKeyFile'] as const;
const SSH_EXAMPLE = '{user: admin, privateKeyFile: ~/.ssh/id_ed25519}';
const JUMP_HOST_EXAMPLE = '{host: bastion.example, user: admin}';

/** A user name as useradd accepts it by default, plus upper case for directory-service accounts. */
const USER_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** `ssh-keygen -lf` prints a SHA-256 fingerprint as `SHA256:` and 43 base64 characters without padding. */
const SHA256_FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

/** The SSH fields written in one mapping. Unset fields are undefined. */
export interface SshDraft {
  readonly host?: string | undefined;
  readonly port?: number | undefined;
  readonly user?: string | undefined;
  readonly privateKeyFile?: string | undefined;
  readonly passphraseEnv?: string | undefined;
  readonly agent?: boolean | undefined;
  readonly jumpHost?: JumpHostDraft | undefined;
  readonly sudo?: boolean | undefined;
  readonly knownHostsFile?: string | undefined;
  readonly hostKeyFingerprint?: string | undefined;
}

interface JumpHostDraft {
  readonly host: string;
  readonly port: number | undefined;
  readonly user: string | undefined;
  readonly privateKeyFile: string | undefined;
}

/**
 * Reads `spec.ssh`. A host or a pinned host key belongs to one node, so both are rejected here.
 * Returns undefined after an issue.
 */
export function readClusterSsh(spec: MappingReader, context: SshContext, issues: IssueList): SshDraft | undefined {
  if (!spec.has('ssh')) {
    return {};
  }
  const reader = spec.optionalMapping('ssh', CLUSTER_SSH_FIELDS, SSH_EXAMPLE);
  if (reader === undefined) {
    return undefined;
  }

  let valid = true;
  if (reader.has('host')) {
    issues.add(reader.pathOf('host'), 'spec.ssh cannot set host, because each node has its own', 'move host to the ssh mapping of each node, or remove it to use the node\'s first address');
    valid = false;
  }
  if (reader.has('hostKeyFingerprint')) {
    issues.add(
      reader.pathOf('hostKeyFingerprint'),
      'spec.ssh cannot set hostKeyFingerprint, because each node has its own host key',
      'move hostKeyFingerprint to the ssh mapping of the node whose key it is',
    );
    valid = false;
  }
  const draft = readSshDraft(reader, context, issues);
  return valid ? draft : undefined;
}

/**
 * Reads a node's `ssh` mapping and merges it over the cluster-wide draft, then fills in the
 * defaults. Returns undefined after an issue, or when there is no host because the node has no
 * valid address, which has been reported already.
 */
export function readNodeSsh(
  node: MappingReader,
  cluster: SshDraft,
  firstAddress: string | undefined,
  context: SshContext,
  issues: IssueList,
): SshSettings | undefined {
  const issueCount = issues.items.length;
  const reader = node.optionalMapping('ssh', CLUSTER_SSH_FIELDS, SSH_EXAMPLE);
  if (reader === undefined) {
    return undefined;
  }
  const own = readSshDraft(reader, context, issues);
  if (issues.items.length !== issueCount) {
    return undefined;
  }

  const merged: SshDraft = { ...withoutUnset(cluster), ...withoutUnset(own) };
  const host = merged.host ?? firstAddress;
  if (host === undefined) {
    return undefined;
  }

  const privateKeyFile = merged.privateKeyFile;
  if (merged.passphraseEnv !== undefined && privateKeyFile === undefined) {
    issues.add(
      reader.pathOf('passphraseEnv'),
      `passphraseEnv "${merged.passphraseEnv}" is set but no privateKeyFile is, so there is no key to decrypt`,
      'add privateKeyFile to spec.ssh or to this node\'s ssh mapping, or remove passphraseEnv',
    );
    return undefined;
  }

  const user = merged.user ?? DEFAULT_SSH_USER;
  const socket = context.env['SSH_AUTH_SOCK'];
  const agentSocket = socket === undefined || socket === '' ? undefined : socket;
  const jump = merged.jumpHost;
  const jumpHost: SshJumpHost | undefined =
    jump === undefined
      ? undefined
      : {
          host: jump.host,
          port: jump.port ?? DEFAULT_SSH_PORT,
          user: jump.user ?? user,
          privateKeyFile: jump.privateKeyFile ?? privateKeyFile,
        };

  return {
    host,
    port: merged.port ?? DEFAULT_SSH_PORT,
    user,
    privateKeyFile,
    passphraseEnv: merged.passphraseEnv,
    agent: merged.agent ?? agentSocket !== undefined,
    agentSocket,
    jumpHost,
    sudo: merged.sudo ?? user !== DEFAULT_SSH_USER,
    knownHostsFile: merged.knownHostsFile ?? expandPath(DEFAULT_KNOWN_HOSTS_FILE, context),
    hostKeyFingerprint: merged.hostKeyFingerprint,
  };
}

function withoutUnset(draft: SshDraft): SshDraft {
  return Object.fromEntries(Object.entries(draft).filter(([, value]) => value !== undefined));
}

function readSshDraft(reader: MappingReader, context: SshContext, issues: IssueList): SshDraft {
  return {
    host: readSshHost(reader, 'host', issues),
    port: readPortNumber(reader, 'port', issues),
    user: readUser(reader, 'user', issues),
    privateKeyFile: readFilePath(reader, 'privateKeyFile', '~/.ssh/id_ed25519', context, issues),
    passphraseEnv: readEnvName(reader, issues),
    agent: readBoolean(reader, 'agent', issues),
    jumpHost: readJumpHost(reader, context, issues),
    sudo: readBoolean(reader, 'sudo', issues),
    knownHostsFile: readFilePath(reader, 'knownHostsFile', DEFAULT_KNOWN_HOSTS_FILE, context, issues),
    hostKeyFingerprint: readFingerprint(reader, issues),
  };
}

function readJumpHost(ssh: MappingReader, context: SshContext, issues: IssueList): JumpHostDraft | undefined {
  if (!ssh.has('jumpHost')) {
    return undefined;
  }
  const reader = ssh.optionalMapping('jumpHost', JUMP_HOST_FIELDS, JUMP_HOST_EXAMPLE);
  if (reader === undefined) {
    return undefined;
  }
  const issueCount = issues.items.length;
  if (!reader.has('host')) {
    reader.requiredString('host', 'bastion.example');
  }
  const host = readSshHost(reader, 'host', issues);
  const port = readPortNumber(reader, 'port', issues);
  const user = readUser(reader, 'user', issues);
  const privateKeyFile = readFilePath(reader, 'privateKeyFile', '~/.ssh/id_ed25519', context, issues);
  if (host === undefined || issues.items.length !== issueCount) {
    return undefined;
  }
  return { host, port, user, privateKeyFile };
}

function readSshHost(reader: MappingReader, key: string, issues: IssueList): string | undefined {
  if (!reader.has(key)) {
    return undefined;
  }
  const text = reader.requiredString(key, '192.0.2.11');
  if (text === undefined) {
    return undefined;
  }
  const bracketed = text.startsWith('[') && text.endsWith(']');
  const host = parseHost(bracketed ? text.slice(1, -1) : text, bracketed) ?? parseHost(text, true);
  if (host === undefined) {
    issues.add(
      reader.pathOf(key),
      `invalid SSH host "${text}"`,
      'write an IP address or a lowercase DNS name without a port, such as 192.0.2.11 or node-1.example, and set the port in port',
    );
    return undefined;
  }
  return host.host;
}

function readPortNumber(reader: MappingReader, key: string, issues: IssueList): number | undefined {
  if (!reader.has(key)) {
    return undefined;
  }
  const value = reader.raw(key);
  if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535) {
    return value;
  }
  issues.add(reader.pathOf(key), `invalid SSH port: found ${describeValue(value)}`, `write a port number from 1 to 65535, such as ${key}: 2222`);
  return undefined;
}

function readUser(reader: MappingReader, key: string, issues: IssueList): string | undefined {
  if (!reader.has(key)) {
    return undefined;
  }
  const user = reader.requiredString(key, 'admin');
  if (user === undefined || USER_NAME.test(user)) {
    return user;
  }
  issues.add(
    reader.pathOf(key),
    `invalid user name "${user}"`,
    'write a login name of letters, digits, "_", "." and "-" that starts with a letter or "_", such as admin',
  );
  return undefined;
}

function readBoolean(reader: MappingReader, key: string, issues: IssueList): boolean | undefined {
  if (!reader.has(key)) {
    return undefined;
  }
  const value = reader.raw(key);
  if (typeof value === 'boolean') {
    return value;
  }
  issues.add(reader.pathOf(key), `expected true or false, found ${describeValue(value)}`, `write ${key}: true or ${key}: false`);
  return undefined;
}

function readEnvName(reader: MappingReader, issues: IssueList): string | undefined {
  if (!reader.has('passphraseEnv')) {
    return undefined;
  }
  const name = reader.requiredString('passphraseEnv', 'KUBETRUST_SSH_PASSPHRASE');
  if (name === undefined || ENV_NAME.test(name)) {
    return name;
  }
  issues.add(
    reader.pathOf('passphraseEnv'),
    `"${name}" is not an environment variable name`,
    'write the name of the variable that holds the passphrase, not the passphrase itself, such as passphraseEnv: KUBETRUST_SSH_PASSPHRASE',
  );
  return undefined;
}

function readFingerprint(reader: MappingReader, issues: IssueList): string | undefined {
  if (!reader.has('hostKeyFingerprint')) {
    return undefined;
  }
  const text = reader.requiredString('hostKeyFingerprint', 'SHA256:...');
  if (text === undefined || SHA256_FINGERPRINT.test(text)) {
    return text;
  }
  issues.add(
    reader.pathOf('hostKeyFingerprint'),
    `invalid host key fingerprint "${text}"`,
    'write the SHA256: fingerprint that `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints on the node, such as SHA256: followed by 43 base64 characters',
  );
  return undefined;
}

/** Reads a file path, with `~` expanded and a relative path resolved against the context's directory. */
function readFilePath(
  reader: MappingReader,
  key: string,
  example: string,
  context: SshContext,
  issues: IssueList,
): string | undefined {
  if (!reader.has(key)) {
    return undefined;
  }
  const text = reader.requiredString(key, example);
  if (text === undefined) {
    return undefined;
  }
  if (text.trim() === '' || (text.startsWith('~') && text !== '~' && !text.startsWith('~/'))) {
    issues.add(
      reader.pathOf(key),
      `invalid file path "${text}"`,
      `write an absolute path, a path relative to the inventory file, or one below ~/, such as ${example}`,
    );
    return undefined;
  }
  return expandPath(text, context);
}

function expandPath(text: string, context: SshContext): string {
  if (text === '~' || text.startsWith('~/')) {
    return path.join(context.homeDir, text.slice(1));
  }
  return path.resolve(context.baseDir, text);
}

/** The directory below which a node's agent files are installed when `agent.prefix` is not set. */
export const DEFAULT_AGENT_PREFIX = '/';

/** Reads `agent.prefix`: an absolute directory without `..`, returned without a trailing slash. */
export function readAgentPrefix(agent: MappingReader, issues: IssueList): string | undefined {
  const text = agent.optionalString('prefix', '/srv/node-1', DEFAULT_AGENT_PREFIX);
  if (text === undefined) {
    return undefined;
  }
  if (!text.startsWith('/') || text.split('/').includes('..')) {
    issues.add(
      agent.pathOf('prefix'),
      `agent prefix "${text}" is not an absolute directory without ".."`,
      `write an absolute directory such as /srv/node-1, or remove prefix to install below ${DEFAULT_AGENT_PREFIX}`,
    );
    return undefined;
  }
  return path.posix.normalize(text).replace(/(.)\/$/, '$1');
}
