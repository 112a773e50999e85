/**
 * SSH sessions to the nodes, for `controller bootstrap`. Every connection verifies the server's
 * host key against a pinned fingerprint or the known_hosts file, and no option turns that off.
 * Failures become one-line `SshError`s that name the node, the step and the fix.
 */
import { randomBytes, createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';

import { Client, utils, type ClientChannel, type ConnectConfig, type SFTPWrapper } from 'ssh2';

import type { SshSettings } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';

import { classifyConnectError, describeTarget, SshError, type SshStep } from './errors';
import {
  appendKnownHost,
  checkHostKey,
  fingerprintOf,
  keyTypeOf,
  knownKeyTypes,
  readKnownHosts,
  type KnownHostEntry,
} from './known-hosts';

export { SshError, type SshStep };

/** Time from the TCP connect to the end of authentication. */
const READY_TIMEOUT_MS = 20_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 10 * 60_000;
/** Maximum size of the stdout or stderr that `run` keeps. A command that prints more fails. */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

/** Host key algorithms in the order ssh2 offers them, without the SHA-1 `ssh-rsa` and `ssh-dss`. */
const HOST_KEY_ALGORITHMS = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
];

export interface SshSession {
  readonly node: string;
  readonly hostKeyFingerprint: string;
  /**
   * Runs a shell command and returns its exit code and output. A non-zero exit code is returned,
   * not thrown. With sudo, which defaults to the node's `ssh.sudo` setting, the command runs
   * through `sudo -n`, so a password prompt fails at once with SshError('sudo').
   */
  run(command: string, options?: RunOptions): Promise<CommandResult>;
  /**
   * Uploads to a temporary path over SFTP, moves it into place with the given mode (through sudo
   * when needed) and verifies its sha256 on the node. Creates missing parent directories. Throws
   * SshError('upload') on a mismatch or a full disk, and leaves no temporary file behind.
   */
  upload(data: Buffer, remotePath: string, mode: number): Promise<void>;
  close(): void;
}

export interface RunOptions {
  readonly sudo?: boolean;
  readonly stdin?: string | Buffer;
  readonly timeoutMs?: number;
}

export interface CommandResult {
  /** Exit code, or 128 plus the signal number when a signal ended the command. */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface OpenOptions {
  /** Record the host key of a host that the known hosts file does not list yet, and trust it. */
  readonly acceptNew: boolean;
  readonly logger: Logger;
  /** Asks for the passphrase of an encrypted key when `ssh.passphraseEnv` is not set. */
  readonly passphrase?: (node: string) => Promise<string>;
}

/** A private key with its passphrase, or the ssh-agent, as ssh2 takes them. */
interface Credentials {
  readonly privateKey: Buffer | undefined;
  readonly passphrase: string | undefined;
  readonly agent: string | undefined;
  /** For messages, such as `key /root/.ssh/id_ed25519 and the ssh-agent`. Never the key itself. */
  readonly description: string;
}

interface Endpoint {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly pinnedFingerprint: string | undefined;
  /** `user@host:port` of the jump host, for messages about the node behind it. */
  readonly via: string | undefined;
  /** Names the jump host in host key messages, so a failure there is not blamed on the node. */
  readonly role: 'node' | 'jump host';
}

/** Connects to a node, verifies its host key, authenticates and returns a session. */
export async function openSession(node: string, settings: SshSettings, options: OpenOptions): Promise<SshSession> {
  const entries = await loadKnownHosts(node, settings.knownHostsFile);
  const credentials = await loadCredentials(node, settings, settings.privateKeyFile, options);

  let jump: Client | undefined;
  let sock: Duplex | undefined;
  let via: string | undefined;
  if (settings.jumpHost !== undefined) {
    const jumpHost = settings.jumpHost;
    const jumpCredentials =
      jumpHost.privateKeyFile === settings.privateKeyFile
        ? credentials
        : await loadCredentials(node, settings, jumpHost.privateKeyFile, options);
    const jumpEndpoint: Endpoint = {
      host: jumpHost.host,
      port: jumpHost.port,
      user: jumpHost.user,
      pinnedFingerprint: undefined,
      via: undefined,
      role: 'jump host',
    };
    const connected = await connect(node, jumpEndpoint, jumpCredentials, entries, settings.knownHostsFile, undefined, options);
    jump = connected.client;
    via = describeTarget(jumpHost.user, jumpHost.host, jumpHost.port, undefined);
    try {
      sock = await forwardTo(node, jump, settings.host, settings.port, via);
    } catch (error) {
      jump.end();
      throw error;
    }
  }

  const endpoint: Endpoint = {
    host: settings.host,
    port: settings.port,
    user: settings.user,
    pinnedFingerprint: settings.hostKeyFingerprint,
    via,
    role: 'node',
  };
  let connected: { client: Client; fingerprint: string };
  try {
    connected = await connect(node, endpoint, credentials, entries, settings.knownHostsFile, sock, options);
  } catch (error) {
    jump?.end();
    throw error;
  }
  options.logger.info('SSH session opened', {
    node,
    target: describeTarget(settings.user, settings.host, settings.port, via),
    hostKey: connected.fingerprint,
  });
  return new Session(node, settings, connected.client, jump, connected.fingerprint, options.logger);
}

async function loadKnownHosts(node: string, file: string): Promise<KnownHostEntry[]> {
  try {
    return await readKnownHosts(file);
  } catch (error) {
    throw new SshError(
      node,
      'host-key',
      `cannot read known hosts file ${file}: ${(error as Error).message}`,
      'make the file readable by the user that runs the controller, or set ssh.knownHostsFile to another file',
    );
  }
}

/**
 * Reads the private key file and its passphrase, from the environment variable that
 * `ssh.passphraseEnv` names or else from `options.passphrase`. Checks the passphrase here, so
 * a wrong one is reported as such and not as a rejected key.
 */
async function loadCredentials(
  node: string,
  settings: SshSettings,
  keyFile: string | undefined,
  options: OpenOptions,
): Promise<Credentials> {
  const agent = settings.agent ? settings.agentSocket : undefined;
  if (settings.agent && agent === undefined) {
    options.logger.warn('ssh.agent is true but SSH_AUTH_SOCK was not set when the inventory was read', { node });
  }
  if (keyFile === undefined) {
    if (agent === undefined) {
      throw new SshError(
        node,
        'auth',
        'no private key file and no ssh-agent to log in with',
        'set ssh.privateKeyFile in the inventory, or start ssh-agent and export SSH_AUTH_SOCK',
      );
    }
    return { privateKey: undefined, passphrase: undefined, agent, description: `the keys of the ssh-agent at ${agent}` };
  }

  let privateKey: Buffer;
  try {
    privateKey = await fs.readFile(keyFile);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new SshError(node, 'auth', `cannot read private key file ${keyFile} (${code})`, 'check ssh.privateKeyFile and that the controller\'s user can read the file');
  }

  let passphrase: string | undefined;
  const parsed = utils.parseKey(privateKey);
  if (parsed instanceof Error) {
    if (!/passphrase/i.test(parsed.message)) {
      throw new SshError(node, 'auth', `${keyFile} is not a private key that can be read: ${parsed.message}`, 'set ssh.privateKeyFile to an OpenSSH or PEM private key');
    }
    passphrase = await readPassphrase(node, settings, keyFile, options);
    if (utils.parseKey(privateKey, passphrase) instanceof Error) {
      const source = settings.passphraseEnv === undefined ? 'the passphrase given' : `the passphrase in $${settings.passphraseEnv}`;
      throw new SshError(node, 'auth', `${source} does not decrypt private key file ${keyFile}`, 'give the key\'s passphrase, which `ssh-keygen -y -f FILE` checks');
    }
  }

  const description = agent === undefined ? `key ${keyFile}` : `key ${keyFile} and the keys of the ssh-agent at ${agent}`;
  return { privateKey, passphrase, agent, description };
}

async function readPassphrase(node: string, settings: SshSettings, keyFile: string, options: OpenOptions): Promise<string> {
  if (settings.passphraseEnv !== undefined) {
    const value = process.env[settings.passphraseEnv];
    if (value === undefined) {
      throw new SshError(
        node,
        'auth',
        `private key file ${keyFile} is encrypted, but the environment variable ${settings.passphraseEnv} that ssh.passphraseEnv names is not set`,
        `export ${settings.passphraseEnv} with the key's passphrase before running the controller`,
      );
    }
    return value;
  }
  if (options.passphrase !== undefined) {
    return options.passphrase(node);
  }
  throw new SshError(
    node,
    'auth',
    `private key file ${keyFile} is encrypted and no passphrase was given`,
    'set ssh.passphraseEnv to the name of an environment variable that holds the passphrase, or load the key into ssh-agent',
  );
}

/** Opens an SSH connection and waits until it is authenticated. */
function connect(
  node: string,
  endpoint: Endpoint,
  credentials: Credentials,
  entries: readonly KnownHostEntry[],
  knownHostsFile: string,
  sock: Duplex | undefined,
  options: OpenOptions,
): Promise<{ client: Client; fingerprint: string }> {
  const target = describeTarget(endpoint.user, endpoint.host, endpoint.port, endpoint.via);

  return new Promise((resolve, reject) => {
    const client = new Client();
    let hostKeyError: SshError | undefined;
    let fingerprint = '';
    let settled = false;
    const fail = (error: SshError): void => {
      if (settled) {
        return;
      }
      settled = true;
      client.end();
      reject(error);
    };

    const hostVerifier = (key: Buffer, verify: (valid: boolean) => void): void => {
      fingerprint = fingerprintOf(key);
      verifyHostKey(node, endpoint, key, entries, knownHostsFile, options).then(
        () => verify(true),
        (error: unknown) => {
          hostKeyError =
            error instanceof SshError
              ? error
              : new SshError(node, 'host-key', `cannot record the host key of ${target} in ${knownHostsFile}: ${(error as Error).message}`, 'make the known hosts file and its directory writable');
          verify(false);
        },
      );
    };

    client.on('ready', () => {
      settled = true;
      resolve({ client, fingerprint });
    });
    client.on('error', (error: Error & { code?: unknown; level?: unknown }) => {
      fail(hostKeyError ?? classifyConnectError(node, error, target, credentials.description, endpoint.user, READY_TIMEOUT_MS));
    });
    client.on('close', () => {
      fail(
        hostKeyError ??
          new SshError(node, 'connect', `${target} closed the connection before the session was ready`, 'check the sshd log on the node'),
      );
    });

    const config: ConnectConfig = {
      host: endpoint.host,
      port: endpoint.port,
      username: endpoint.user,
      readyTimeout: READY_TIMEOUT_MS,
      keepaliveInterval: 15_000,
      hostVerifier,
      algorithms: { serverHostKey: hostKeyAlgorithmOrder(knownKeyTypes(entries, endpoint.host, endpoint.port)) as never },
    };
    if (sock !== undefined) {
      config.sock = sock;
    }
    if (credentials.privateKey !== undefined) {
      config.privateKey = credentials.privateKey;
    }
    if (credentials.passphrase !== undefined) {
      config.passphrase = credentials.passphrase;
    }
    if (credentials.agent !== undefined) {
      config.agent = credentials.agent;
    }
    client.connect(config);
  });
}

/**
 * Orders the host key algorithms so that the types the known hosts file stores for the host
 * come first. A server with several host keys then presents the one the file knows.
 */
function hostKeyAlgorithmOrder(knownTypes: readonly string[]): string[] {
  const preferred = knownTypes.flatMap((type) => (type === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256'] : [type]));
  const first = preferred.filter((algorithm) => HOST_KEY_ALGORITHMS.includes(algorithm));
  return [...new Set([...first, ...HOST_KEY_ALGORITHMS])];
}

/**
 * Applies the host key rules: a revoked key always fails, a pinned fingerprint decides alone,
 * a changed key always fails, and an unknown host fails unless `acceptNew`, which records it.
 */
async function verifyHostKey(
  node: string,
  endpoint: Endpoint,
  key: Buffer,
  entries: readonly KnownHostEntry[],
  knownHostsFile: string,
  options: OpenOptions,
): Promise<void> {
  const fingerprint = fingerprintOf(key);
  const keyType = keyTypeOf(key) ?? 'unknown';
  const address = `${endpoint.host}:${endpoint.port}`;
  const name = `${endpoint.role === 'jump host' ? 'jump host' : 'host'} ${address}`;
  const check = checkHostKey(entries, endpoint.host, endpoint.port, key, endpoint.pinnedFingerprint);

  switch (check.status) {
    case 'trusted':
      return;
    case 'revoked':
      throw new SshError(
        node,
        'host-key',
        `${name} presented the ${keyType} key ${fingerprint}, which ${knownHostsFile} line ${check.line} marks as @revoked`,
        'do not connect until the node has a new host key, then update the known hosts file',
      );
    case 'changed': {
      const source = check.source === 'pinned' ? 'ssh.hostKeyFingerprint pins' : `${knownHostsFile} line ${check.line} lists`;
      throw new SshError(
        node,
        'host-key',
        `host key of ${endpoint.role === 'jump host' ? `jump host ${address}` : address} changed: the server presented the ${keyType} key ${fingerprint}, but ${source} ${check.expected.join(', ')}`,
        check.source === 'pinned'
          ? `compare with \`ssh-keygen -lf /etc/ssh/ssh_host_${keyType.replace(/^ssh-|-sha2-nistp\d+$/g, '')}_key.pub\` on the node's console and, only if the new key is right, update ssh.hostKeyFingerprint`
          : `verify the new key on the node's console and, only if it is right, remove the old entry with \`ssh-keygen -R ${endpoint.port === 22 ? endpoint.host : `'[${endpoint.host}]:${endpoint.port}'`} -f ${knownHostsFile}\``,
      );
    }
    case 'unknown':
      if (!options.acceptNew) {
        throw new SshError(
          node,
          'host-key',
          `${name} is not in ${knownHostsFile} (it presented the ${keyType} key ${fingerprint})`,
          endpoint.role === 'jump host'
            ? 'compare the fingerprint with `ssh-keygen -lf` on the jump host\'s console, then rerun with --accept-new or add its key to the known hosts file'
            : 'compare the fingerprint with `ssh-keygen -lf` on the node\'s console, then rerun with --accept-new or pin it in ssh.hostKeyFingerprint',
        );
      }
      await appendKnownHost(knownHostsFile, endpoint.host, endpoint.port, key);
      options.logger.info('recorded a new host key', { node, host: endpoint.host, port: endpoint.port, hostKey: fingerprint, file: knownHostsFile });
      return;
  }
}

/** Opens a direct-tcpip channel from the jump host to the node, to carry the node's SSH connection. */
function forwardTo(node: string, jump: Client, host: string, port: number, via: string): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    jump.forwardOut('127.0.0.1', 0, host, port, (error, channel) => {
      if (error !== undefined && error !== null) {
        reject(
          new SshError(
            node,
            'connect',
            `jump host ${via} cannot open a connection to ${host}:${port}: ${error.message}`,
            'check that sshd runs on the node, that the jump host can reach it and that its sshd allows TCP forwarding (AllowTcpForwarding)',
          ),
        );
        return;
      }
      resolve(channel);
    });
  });
}

/** Quotes a string as one word for a POSIX shell. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

class Session implements SshSession {
  private sudoCheck: Promise<void> | undefined;
  private sftpChannel: Promise<SFTPWrapper> | undefined;

  constructor(
    readonly node: string,
    private readonly settings: SshSettings,
    private readonly client: Client,
    private readonly jump: Client | undefined,
    readonly hostKeyFingerprint: string,
    private readonly logger: Logger,
  ) {}

  async run(command: string, options: RunOptions = {}): Promise<CommandResult> {
    const sudo = options.sudo ?? this.settings.sudo;
    if (sudo) {
      await this.checkSudo();
    }
    const line = sudo ? `sudo -n -- sh -c ${shellQuote(command)}` : command;
    const result = await this.exec(line, options.stdin, options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
    if (sudo && result.code === 1 && /^sudo: /m.test(result.stderr) && /password is required|not allowed to execute|may not run sudo/.test(result.stderr)) {
      throw this.sudoError(result.stderr);
    }
    return result;
  }

  async upload(data: Buffer, remotePath: string, mode: number): Promise<void> {
    if (!remotePath.startsWith('/') || remotePath.endsWith('/') || remotePath.split('/').includes('..')) {
      throw new SshError(this.node, 'upload', `remote path "${remotePath}" is not an absolute file path`, 'pass an absolute path without ".."');
    }
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
      throw new SshError(this.node, 'upload', `file mode ${String(mode)} for ${remotePath} is out of range`, 'pass a mode from 0 to 0o7777, such as 0o755');
    }

    const directory = path.posix.dirname(remotePath);
    const suffix = randomBytes(6).toString('hex');
    const temporary = path.posix.join(directory, `.${path.posix.basename(remotePath)}.kubetrust-${suffix}.tmp`);
    const digest = createHash('sha256').update(data).digest('hex');
    const sudo = this.settings.sudo;

    await this.runStep('upload', `mkdir -p -- ${shellQuote(directory)}`, sudo, `cannot create directory ${directory}`);

    // Without sudo the login user writes straight beside the target. With sudo, SFTP runs as the
    // login user, so the data is staged in its home directory and copied into place as root.
    const sftp = await this.sftp();
    const staged = sudo ? `${await this.homeDirectory(sftp)}/.kubetrust-upload-${suffix}` : temporary;
    try {
      await this.writeStaged(sftp, staged, data, remotePath);

      const steps = [
        'set -e',
        `tmp=${shellQuote(temporary)}`,
        'trap \'rm -f -- "$tmp"\' EXIT',
        ...(sudo ? [`cp -- ${shellQuote(staged)} "$tmp"`] : []),
        `chmod ${mode.toString(8)} -- "$tmp"`,
        'sum=$(sha256sum -- "$tmp" | cut -d " " -f 1)',
        `if [ "$sum" != ${digest} ]; then echo "sha256 on the node is $sum" >&2; exit 65; fi`,
        `mv -f -- "$tmp" ${shellQuote(remotePath)}`,
      ];
      const result = await this.run(steps.join('\n'), { sudo });
      if (result.code === 65) {
        throw new SshError(
          this.node,
          'upload',
          `${remotePath} has sha256 ${/sha256 on the node is (\w+)/.exec(result.stderr)?.[1] ?? 'unknown'} after the upload, not ${digest}`,
          'check the node\'s disk and memory, then run the command again',
        );
      }
      if (result.code !== 0) {
        throw this.uploadFailure(remotePath, result.stderr);
      }
    } finally {
      if (sudo) {
        await unlink(sftp, staged);
      } else {
        await unlink(sftp, temporary);
      }
    }
    this.logger.debug('uploaded a file', { node: this.node, path: remotePath, mode: mode.toString(8), sha256: digest });
  }

  close(): void {
    this.client.end();
    this.jump?.end();
  }

  private checkSudo(): Promise<void> {
    this.sudoCheck ??= this.exec('sudo -n true', undefined, 30_000).then((result) => {
      if (result.code !== 0) {
        throw this.sudoError(result.stderr, result.code);
      }
    });
    return this.sudoCheck;
  }

  private sudoError(stderr: string, code?: number): SshError {
    const user = this.settings.user;
    const firstLine = stderr.trim().split('\n')[0] ?? '';
    if (code === 127 || /command not found|not found/.test(stderr)) {
      return new SshError(this.node, 'sudo', 'sudo is not installed on the node', 'install sudo, or log in as root with ssh.user: root');
    }
    if (/password is required/.test(stderr)) {
      return new SshError(
        this.node,
        'sudo',
        `sudo asks user "${user}" for a password`,
        `allow "${user}" to run commands without a password (NOPASSWD in /etc/sudoers.d), or set ssh.user: root`,
      );
    }
    if (/not in the sudoers|may not run sudo|not allowed to execute/.test(stderr)) {
      return new SshError(
        this.node,
        'sudo',
        `user "${user}" may not use sudo (${firstLine})`,
        `add "${user}" to sudoers with NOPASSWD on the node, or set ssh.user: root`,
      );
    }
    return new SshError(this.node, 'sudo', `sudo -n failed for user "${user}": ${firstLine || `exit code ${String(code)}`}`, 'run `sudo -n true` as that user on the node to see why');
  }

  /** Runs a preparation command and throws an SshError for `step` when it fails. */
  private async runStep(step: SshStep, command: string, sudo: boolean, problem: string): Promise<void> {
    const result = await this.run(command, { sudo });
    if (result.code !== 0) {
      throw new SshError(this.node, step, `${problem}: ${result.stderr.trim().split('\n')[0] ?? `exit code ${result.code}`}`, 'check the path and the permissions on the node');
    }
  }

  private uploadFailure(remotePath: string, stderr: string): SshError {
    if (/No space left on device/i.test(stderr)) {
      return noSpaceError(this.node, remotePath);
    }
    const firstLine = stderr.trim().split('\n')[0] ?? '';
    return new SshError(this.node, 'upload', `cannot install ${remotePath}: ${firstLine}`, 'check the permissions of the directory on the node');
  }

  private async writeStaged(sftp: SFTPWrapper, staged: string, data: Buffer, remotePath: string): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) => {
        sftp.writeFile(staged, data, { mode: 0o600 }, (error) => (error ? reject(error) : resolve()));
      });
    } catch (error) {
      const free = await freeBytes(sftp, path.posix.dirname(staged));
      if (free !== undefined && free < data.length) {
        throw noSpaceError(this.node, remotePath);
      }
      throw new SshError(this.node, 'upload', `SFTP write of ${staged} failed: ${(error as Error).message}`, 'check the permissions and free space on the node');
    }
  }

  private sftp(): Promise<SFTPWrapper> {
    this.sftpChannel ??= new Promise((resolve, reject) => {
      this.client.sftp((error, sftp) => {
        if (error) {
          reject(new SshError(this.node, 'upload', `cannot start SFTP: ${error.message}`, 'enable the sftp subsystem in the node\'s sshd_config (Subsystem sftp)'));
          return;
        }
        resolve(sftp);
      });
    });
    return this.sftpChannel;
  }

  private homeDirectory(sftp: SFTPWrapper): Promise<string> {
    return new Promise((resolve, reject) => {
      sftp.realpath('.', (error, absolute) => {
        if (error) {
          reject(new SshError(this.node, 'upload', `cannot find the home directory of "${this.settings.user}": ${error.message}`, 'give the user a writable home directory'));
          return;
        }
        resolve(absolute);
      });
    });
  }

  private exec(command: string, stdin: string | Buffer | undefined, timeoutMs: number): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      this.client.exec(command, (error, stream: ClientChannel) => {
        if (error) {
          reject(new SshError(this.node, 'command', `cannot start a command: ${error.message}`, 'check that the SSH connection is still open and that sshd allows sessions'));
          return;
        }

        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let outputBytes = 0;
        let exitCode: number | undefined;
        let settled = false;

        // A timed-out or too talkative command fails at once. The KILL signal request and the
        // closed channel end it on servers that honour them.
        // NOTE: OpenSSH delivers the signal to the login shell only, so a command the shell
        // started may keep running on the node after the timeout.
        const stop = (problem: SshError): void => {
          if (settled) {
            return;
          }
          settled = true;
          clearTimeout(timer);
          stream.signal('KILL');
          stream.close();
          reject(problem);
        };
        const collect = (chunks: Buffer[]) => (chunk: Buffer) => {
          outputBytes += chunk.length;
          if (outputBytes > MAX_OUTPUT_BYTES) {
            stop(new SshError(this.node, 'command', `command printed more than ${MAX_OUTPUT_BYTES} bytes`, 'redirect the output to a file on the node'));
            return;
          }
          chunks.push(chunk);
        };
        const timer = setTimeout(() => {
          stop(new SshError(this.node, 'command', `command did not finish within ${timeoutMs / 1000} s`, 'check the node\'s load, or raise the timeout'));
        }, timeoutMs);

        stream.on('data', collect(stdout));
        stream.stderr.on('data', collect(stderr));
        stream.on('exit', (code: number | null, signal?: string) => {
          if (typeof code === 'number') {
            exitCode = code;
          } else if (signal !== undefined) {
            const number = (osConstants.signals as Record<string, number>)[`SIG${signal}`];
            exitCode = 128 + (number ?? 0);
          }
        });
        stream.on('close', () => {
          if (settled) {
            return;
          }
          settled = true;
          clearTimeout(timer);
          if (exitCode === undefined) {
            reject(new SshError(this.node, 'command', 'the connection closed before the command reported an exit code', 'check the node and the network, then run the command again'));
            return;
          }
          resolve({ code: exitCode, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') });
        });
        stream.end(stdin);
      });
    });
  }
}

function noSpaceError(node: string, remotePath: string): SshError {
  return new SshError(node, 'upload', `no space left on the node's disk for ${remotePath}`, 'free space on the node, for example in /var or /tmp, then run the command again');
}

/** Returns the free bytes of the file system that holds `directory`, or undefined when the server cannot tell. */
function freeBytes(sftp: SFTPWrapper, directory: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    try {
      sftp.ext_openssh_statvfs(directory, (error, info: { f_bavail?: number | bigint; f_frsize?: number | bigint } | undefined) => {
        if (error || info?.f_bavail === undefined || info.f_frsize === undefined) {
          resolve(undefined);
          return;
        }
        resolve(Number(info.f_bavail) * Number(info.f_frsize));
      });
    } catch {
      // ssh2 throws at once when the server does not offer the statvfs extension.
      resolve(undefined);
    }
  });
}

/** Removes a file over SFTP and ignores a missing file. */
function unlink(sftp: SFTPWrapper, file: string): Promise<void> {
  return new Promise((resolve) => {
    sftp.unlink(file, () => resolve());
  });
}
