/**
 * Simulated bare hosts for the SSH bootstrap tests: real OpenSSH servers, one per network
 * namespace that this harness creates. Needs root, `ip` from iproute2, `/usr/sbin/sshd` and
 * `ssh-keygen`.
 *
 * Each run picks a random id, so two runs on one machine do not collide:
 * - namespaces are `kt-ssh-<id>-<n>`; veth interfaces are `kt<id>h<n>` on the host side and
 *   `kt<id>n<n>` inside, at most 15 characters as Linux requires;
 * - node n gets a /30 from 10.250.0.0/16: the host side has the first usable address and the
 *   namespace the second. The run's block of /30s starts at a random offset that no local
 *   interface uses yet;
 * - a link between two nodes (for jump host tests) is a veth pair `kt<id>a<k>`/`kt<id>b<k>` with
 *   its own /30, reachable only from inside those two namespaces.
 * Traffic goes only to these namespaces. Teardown stops the sshd processes by PID, deletes the
 * namespaces and interfaces and removes the temporary directory, also when the process exits
 * without calling `stop`.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

const SSHD = '/usr/sbin/sshd';
/** First /30 block index in 10.250.0.0/16 is 0 and the last is 16383. */
const BLOCKS_PER_RANGE = 16384;

/** The non-root login without sudo rights that the sudo tests use; `.ci/run` creates it too. */
export const NO_SUDO_USER = 'kubetrust-nosudo';
/** A non-root login that may run any command as root through sudo without a password. */
export const SUDO_USER = 'kubetrust-sudo';

export interface SshNode {
  readonly index: number;
  readonly namespace: string;
  /** Address of the node inside its namespace, reachable from the host. */
  readonly address: string;
  readonly port: number;
  /** Per-node directory usable as `agent.prefix`. */
  readonly prefix: string;
  /** Directory with the node's sshd_config, host key, pid file and log. */
  readonly dir: string;
  /**
   * Directory first on the PATH of every SSH session on the node, empty at start. Tests put
   * stand-ins there, such as a `systemctl` or a `uname` that reports another machine.
   */
  readonly binDir: string;
  /** False for a namespace where nothing listens, for connection failure tests. */
  readonly runsSshd: boolean;
  /** Fingerprint of the node's current host key, as `ssh-keygen -lf` prints it. */
  hostKeyFingerprint: string;
  /** The node's current host public key line, `ssh-ed25519 AAAA... comment`. */
  hostPublicKey: string;
}

export interface SshNodeLink {
  readonly nodes: readonly [number, number];
  /** Address of each of the two nodes on the link, in the order of `nodes`. */
  readonly addresses: readonly [string, string];
}

export interface SshNodesOptions {
  /** Number of namespaces with an sshd. */
  readonly count: number;
  /** Extra namespaces in which nothing listens, appended after the sshd nodes. */
  readonly silentCount?: number;
  /** Pairs of node indexes to connect with a private link. */
  readonly links?: readonly (readonly [number, number])[];
  /**
   * Puts every node on one bridge in a /24 of its own, so that the nodes reach each other as well
   * as the host (an etcd cluster across the nodes needs that). Without it each node has a /30 to
   * the host only. Not combinable with `links`.
   */
  readonly bridged?: boolean;
}

/** /30 blocks in a /24: a bridged run takes one whole /24. */
const BLOCKS_PER_24 = 64;

export class SshNodes {
  private readonly processes = new Map<number, ChildProcess>();
  private readonly namespaces: string[] = [];
  private readonly hostInterfaces: string[] = [];
  private stopped = false;
  private readonly exitHook = (): void => this.stopSync();

  readonly nodes: SshNode[] = [];
  readonly links: SshNodeLink[] = [];

  private constructor(
    /** Random hex id that prefixes every namespace and interface name of this run. */
    readonly runId: string,
    readonly dir: string,
    /** Private key whose public key every node's authorized_keys lists. */
    readonly clientKeyFile: string,
    /** A private key that no node accepts. */
    readonly otherKeyFile: string,
    private readonly firstBlock: number,
    /** Name of the bridge that joins the nodes, when the run is bridged. */
    private readonly bridge: string | undefined,
  ) {
    process.on('exit', this.exitHook);
  }

  /** Creates the namespaces and starts the sshd processes. Cleans up everything when a step fails. */
  static async start(options: SshNodesOptions): Promise<SshNodes> {
    const runId = randomBytes(3).toString('hex').slice(0, 5);
    const dir = await fs.mkdtemp(path.join(tmpdir(), 'kubetrust-ssh-'));
    await fs.chmod(dir, 0o755);
    const clientKeyFile = path.join(dir, 'client_ed25519');
    const otherKeyFile = path.join(dir, 'other_ed25519');
    const links = options.links ?? [];
    if (options.bridged === true && links.length > 0) throw new Error('a bridged run has no private links; drop either option');
    const blocks = options.count + (options.silentCount ?? 0) + links.length;
    if (options.bridged === true && blocks > 250) throw new Error(`a bridged run holds at most 250 nodes, not ${blocks}`);
    const bridge = options.bridged === true ? `kt${runId}br` : undefined;
    const firstBlock = bridge === undefined ? await pickFreeBlocks(blocks) : await pickFreeBlocks(BLOCKS_PER_24, BLOCKS_PER_24);
    const harness = new SshNodes(runId, dir, clientKeyFile, otherKeyFile, firstBlock, bridge);

    try {
      await ensureNoSudoUser();
      await fs.mkdir('/run/sshd', { recursive: true, mode: 0o755 });
      await generateKey(clientKeyFile, 'kubetrust test client');
      await generateKey(otherKeyFile, 'kubetrust test key that no node accepts');
      const authorizedKeys = await fs.readFile(`${clientKeyFile}.pub`, 'utf8');
      if (bridge !== undefined) await harness.addBridge(bridge);

      for (let index = 0; index < blocks - links.length; index++) {
        await harness.addNamespace(index, index < options.count, authorizedKeys);
      }
      for (const [position, pair] of links.entries()) {
        await harness.addLink(position, pair, blocks - links.length + position);
      }
      await Promise.all(harness.nodes.filter((node) => node.runsSshd).map((node) => harness.startSshd(node)));
    } catch (error) {
      await harness.stop();
      throw error;
    }
    return harness;
  }

  /** Returns test node `index` and throws when the harness did not start it. */
  node(index: number): SshNode {
    const node = this.nodes[index];
    if (node === undefined) {
      throw new Error(`no test node ${index}; the harness started ${this.nodes.length}`);
    }
    return node;
  }

  /** Replaces a node's host key with a new one and restarts its sshd. */
  async replaceHostKey(index: number): Promise<void> {
    const node = this.node(index);
    await this.stopSshd(node);
    const keyFile = path.join(node.dir, 'ssh_host_ed25519_key');
    await fs.rm(keyFile, { force: true });
    await fs.rm(`${keyFile}.pub`, { force: true });
    await generateKey(keyFile, `kubetrust test host ${index}`);
    await this.readHostKey(node);
    await this.startSshd(node);
  }

  /**
   * Runs a command in the mount namespace of a node's sshd, which `ip netns exec` separated
   * from the host's, so that a mount made there is what the node's sessions see.
   */
  async inNodeMounts(index: number, command: string, args: readonly string[]): Promise<string> {
    const pid = this.processes.get(index)?.pid;
    if (pid === undefined) {
      throw new Error(`test node ${index} runs no sshd`);
    }
    return (await run('nsenter', ['--target', String(pid), '--mount', command, ...args])).stdout;
  }

  /** Stops every sshd by PID and deletes the namespaces, interfaces and the temporary directory. */
  async stop(): Promise<void> {
    if (this.stopped) {
      return;
    }
    this.stopped = true;
    process.removeListener('exit', this.exitHook);
    await Promise.all(this.nodes.map((node) => this.stopSshd(node)));
    for (const namespace of this.namespaces) {
      await run('ip', ['netns', 'del', namespace]).catch(() => undefined);
    }
    for (const name of this.hostInterfaces) {
      // Deleting a namespace deletes the veth ends in it and their peers, so this usually finds nothing.
      await run('ip', ['link', 'del', name]).catch(() => undefined);
    }
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  /** Last lines of a node's sshd log, for assertion messages. */
  async sshdLog(index: number): Promise<string> {
    const text = await fs.readFile(path.join(this.node(index).dir, 'sshd.log'), 'utf8').catch(() => '');
    return text.split('\n').slice(-20).join('\n');
  }

  private stopSync(): void {
    if (this.stopped) {
      return;
    }
    this.stopped = true;
    for (const child of this.processes.values()) {
      child.kill('SIGKILL');
    }
    for (const namespace of this.namespaces) {
      spawnSync('ip', ['netns', 'del', namespace]);
    }
    for (const name of this.hostInterfaces) {
      spawnSync('ip', ['link', 'del', name], { stdio: 'ignore' });
    }
    spawnSync('rm', ['-rf', this.dir]);
  }

  private async addNamespace(index: number, runsSshd: boolean, authorizedKeys: string): Promise<void> {
    const namespace = `kt-ssh-${this.runId}-${index}`;
    const hostSide = `kt${this.runId}h${index}`;
    const inside = `kt${this.runId}n${index}`;
    const [hostAddress, nodeAddress] = this.bridge === undefined ? blockAddresses(this.firstBlock + index) : ['', bridgedAddress(this.firstBlock, index + 2)];
    const prefixLength = this.bridge === undefined ? 30 : 24;

    await run('ip', ['netns', 'add', namespace]);
    this.namespaces.push(namespace);
    await run('ip', ['link', 'add', hostSide, 'type', 'veth', 'peer', 'name', inside]);
    this.hostInterfaces.push(hostSide);
    await run('ip', ['link', 'set', inside, 'netns', namespace]);
    if (this.bridge === undefined) await run('ip', ['addr', 'add', `${hostAddress}/30`, 'dev', hostSide]);
    else await run('ip', ['link', 'set', hostSide, 'master', this.bridge]);
    await run('ip', ['link', 'set', hostSide, 'up']);
    await runIn(namespace, 'ip', ['addr', 'add', `${nodeAddress}/${prefixLength}`, 'dev', inside]);
    await runIn(namespace, 'ip', ['link', 'set', inside, 'up']);
    await runIn(namespace, 'ip', ['link', 'set', 'lo', 'up']);

    const dir = path.join(this.dir, `node-${index}`);
    const prefix = path.join(dir, 'prefix');
    await fs.mkdir(prefix, { recursive: true, mode: 0o755 });
    await fs.chmod(dir, 0o755);
    const binDir = path.join(dir, 'bin');
    await fs.mkdir(binDir, { recursive: true, mode: 0o755 });
    const node: SshNode = { index, namespace, address: nodeAddress, port: 22, prefix, dir, binDir, runsSshd, hostKeyFingerprint: '', hostPublicKey: '' };
    this.nodes.push(node);
    if (!runsSshd) {
      return;
    }

    await fs.writeFile(path.join(dir, 'authorized_keys'), authorizedKeys, { mode: 0o644 });
    await generateKey(path.join(dir, 'ssh_host_ed25519_key'), `kubetrust test host ${index}`);
    await this.readHostKey(node);
    await fs.writeFile(path.join(dir, 'sshd_config'), sshdConfig(dir));
  }

  /** Creates the bridge of a bridged run, with the host's address `.1` of the run's /24. */
  private async addBridge(bridge: string): Promise<void> {
    await run('ip', ['link', 'add', bridge, 'type', 'bridge']);
    this.hostInterfaces.push(bridge);
    await run('ip', ['addr', 'add', `${bridgedAddress(this.firstBlock, 1)}/24`, 'dev', bridge]);
    await run('ip', ['link', 'set', bridge, 'up']);
  }

  /** Connects two namespaces with a veth pair on a /30 of their own. */
  private async addLink(position: number, pair: readonly [number, number], block: number): Promise<void> {
    const [first, second] = [this.node(pair[0]), this.node(pair[1])];
    const [firstAddress, secondAddress] = blockAddresses(this.firstBlock + block);
    const firstName = `kt${this.runId}a${position}`;
    const secondName = `kt${this.runId}b${position}`;

    await runIn(first.namespace, 'ip', ['link', 'add', firstName, 'type', 'veth', 'peer', 'name', secondName]);
    await runIn(first.namespace, 'ip', ['link', 'set', secondName, 'netns', second.namespace]);
    await runIn(first.namespace, 'ip', ['addr', 'add', `${firstAddress}/30`, 'dev', firstName]);
    await runIn(first.namespace, 'ip', ['link', 'set', firstName, 'up']);
    await runIn(second.namespace, 'ip', ['addr', 'add', `${secondAddress}/30`, 'dev', secondName]);
    await runIn(second.namespace, 'ip', ['link', 'set', secondName, 'up']);
    this.links.push({ nodes: [pair[0], pair[1]], addresses: [firstAddress, secondAddress] });
  }

  private async readHostKey(node: SshNode): Promise<void> {
    const publicFile = path.join(node.dir, 'ssh_host_ed25519_key.pub');
    node.hostPublicKey = (await fs.readFile(publicFile, 'utf8')).trim();
    const { stdout } = await run('ssh-keygen', ['-lf', publicFile]);
    node.hostKeyFingerprint = stdout.split(' ')[1] ?? '';
  }

  /** Starts sshd in the node's namespace and waits until it listens. */
  private async startSshd(node: SshNode): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', node.namespace, SSHD, '-D', '-e', '-f', path.join(node.dir, 'sshd_config')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    if (child.pid === undefined) {
      throw new Error(`cannot start sshd for test node ${node.index}`);
    }
    // `ip netns exec` execs sshd in place, so this PID is the sshd listener itself.
    this.processes.set(node.index, child);

    await new Promise<void>((resolve, reject) => {
      let output = '';
      const timer = setTimeout(() => reject(new Error(`sshd of test node ${node.index} did not start within 10 s:\n${output}`)), 10_000);
      child.stderr?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        void fs.appendFile(path.join(node.dir, 'sshd.log'), chunk);
        if (output.includes('Server listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`sshd of test node ${node.index} exited with code ${String(code)}:\n${output}`));
      });
    });
  }

  private async stopSshd(node: SshNode): Promise<void> {
    const child = this.processes.get(node.index);
    if (child === undefined) {
      return;
    }
    this.processes.delete(node.index);
    if (child.exitCode !== null || child.signalCode !== null) {
      return;
    }
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

function sshdConfig(dir: string): string {
  return [
    'Port 22',
    'ListenAddress 0.0.0.0',
    `HostKey ${path.join(dir, 'ssh_host_ed25519_key')}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
    // The authorized_keys file lies below /tmp, which is world-writable, so StrictModes would reject it.
    'StrictModes no',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    'UsePAM no',
    'AllowTcpForwarding yes',
    'Subsystem sftp internal-sftp',
    'LogLevel VERBOSE',
    // SetEnv overrides sshd's default PATH, so a stand-in in bin/ wins over the system's command.
    `SetEnv PATH=${path.join(dir, 'bin')}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    '',
  ].join('\n');
}

/** Returns the first free block of `count` consecutive /30s in 10.250.0.0/16, from a random start that is a multiple of `align`. */
async function pickFreeBlocks(count: number, align = 1): Promise<number> {
  const { stdout } = await run('ip', ['-o', '-4', 'addr', 'show']);
  const used = new Set<number>();
  for (const match of stdout.matchAll(/inet 10\.250\.(\d+)\.(\d+)/g)) {
    used.add((Number(match[1]) * 256 + Number(match[2])) >> 2);
  }
  for (let attempt = 0; attempt < 100; attempt++) {
    const start = Math.floor(Math.random() * ((BLOCKS_PER_RANGE - count) / align)) * align;
    let free = true;
    for (let block = start; block < start + count; block++) {
      free &&= !used.has(block);
    }
    if (free) {
      return start;
    }
  }
  throw new Error('no free range of /30 networks in 10.250.0.0/16; delete leftover kt-ssh-* namespaces with `ip netns del`');
}

/** Address `host` (1-254) of the /24 that starts at /30 number `firstBlock`. */
function bridgedAddress(firstBlock: number, host: number): string {
  const base = firstBlock * 4 + host;
  return `10.250.${base >> 8}.${base & 255}`;
}

/** The two usable addresses of /30 number `block` in 10.250.0.0/16. */
function blockAddresses(block: number): [string, string] {
  const base = block * 4;
  const address = (offset: number): string => `10.250.${(base + offset) >> 8}.${(base + offset) & 255}`;
  return [address(1), address(2)];
}

async function generateKey(file: string, comment: string): Promise<void> {
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
}

/** Creates the login with password-less sudo rights when it is missing, like the NOPASSWD logins that installers use. */
export async function ensureSudoUser(): Promise<void> {
  if (spawnSync('id', [SUDO_USER], { stdio: 'ignore' }).status !== 0) {
    await run('useradd', ['--create-home', '--shell', '/bin/sh', '--password', '*', SUDO_USER]);
  }
  await fs.writeFile(`/etc/sudoers.d/${SUDO_USER}`, `${SUDO_USER} ALL=(root) NOPASSWD: ALL\n`, { mode: 0o440 });
}

/** Creates the login without sudo rights when it is missing. Its password field is `*`, so sshd does not treat it as locked. */
async function ensureNoSudoUser(): Promise<void> {
  const exists = spawnSync('id', [NO_SUDO_USER], { stdio: 'ignore' }).status === 0;
  if (!exists) {
    await run('useradd', ['--create-home', '--shell', '/bin/sh', '--password', '*', NO_SUDO_USER]);
  }
}

function run(command: string, args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileAsync(command, args, { encoding: 'utf8' }).catch((error: Error & { stderr?: string }) => {
    throw new Error(`${command} ${args.join(' ')} failed: ${error.stderr?.trim() || error.message}`);
  });
}

function runIn(namespace: string, command: string, args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
  return run('ip', ['netns', 'exec', namespace, command, ...args]);
}
