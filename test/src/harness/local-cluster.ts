/**
 * A whole cluster on one machine: one agent process per inventory node, each listening on the
 * node's own loopback address with its own install root, driven by the real `controller` CLI.
 * etcd nodes run real etcd members (when the `etcd` binary is installed) that their agents start
 * and restart through a command hook; every other service's restart hook appends a line to the
 * node's restarts.log, because no kube-apiserver or kubelet can run here.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { flagsForNode } from '@kubetrust/shared/dist/catalogue';
import { loadInventory, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';
import { ETCD_PEER_PORT, type EtcdMemberSpec } from './etcd-service';

export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
export const CONTROLLER_CLI = path.join(REPO_ROOT, 'controller', 'bin', 'controller.js');
export const AGENT_CLI = path.join(REPO_ROOT, 'agent', 'bin', 'agent.js');
const ETCD_SERVICE = path.join(__dirname, 'etcd-service.js');

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Returns the exit code execFile reports for `error`: 0 without an error, 1 when it carries none. */
export function exitCodeOf(error: { code?: unknown } | null): number {
  if (error === null) return 0;
  return typeof error.code === 'number' ? error.code : 1;
}

/** Runs a Node script and collects its output; never rejects on a non-zero exit. */
export function runNode(script: string, args: readonly string[], timeoutMs = 600_000): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [script, ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: exitCodeOf(error), stdout, stderr });
    });
  });
}

export function runController(args: readonly string[]): Promise<CommandResult> {
  return runNode(CONTROLLER_CLI, args);
}

/**
 * Runs the controller CLI with its clock `offsetMs` ahead of this host's (behind when negative).
 * Agents started here keep the host's clock, so each node appears `offsetMs` behind the controller.
 */
export function runControllerWithClockOffset(offsetMs: number, args: readonly string[]): Promise<CommandResult> {
  const preload = path.join(__dirname, 'clock-offset.js');
  const env = { ...process.env, KUBETRUST_TEST_CLOCK_OFFSET_MS: String(offsetMs) };
  return new Promise((resolve) => {
    execFile(process.execPath, ['--require', preload, CONTROLLER_CLI, ...args], { env, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: exitCodeOf(error), stdout, stderr });
    });
  });
}

/** Returns a TCP port that is free on `host` now, for a server that must know its port before it starts. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** Finds an executable on PATH, or undefined. */
export function which(binary: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = path.join(dir, binary);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** Resolves once a TCP connection to host:port succeeds; retries every 100 ms and rejects after timeoutMs. */
export function waitForPort(host: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const socket = net.connect({ host, port });
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

export interface LocalNode {
  readonly spec: NodeSpec;
  readonly dir: string;
  readonly installRoot: string;
  readonly configFile: string;
  readonly restartsLog: string;
  readonly etcd?: EtcdMemberSpec & { readonly specFile: string };
  process?: ChildProcess;
}

export interface LocalClusterOptions {
  readonly inventoryFile: string;
  readonly workdir: string;
  /** Run real etcd members on etcd nodes; default: when the `etcd` binary is on PATH. */
  readonly etcd?: boolean;
  /** Seconds an etcd member may take to become healthy after a restart. */
  readonly etcdHealthTimeoutSeconds?: number;
}

export class LocalCluster {
  readonly stateDir: string;
  readonly nodes: LocalNode[] = [];
  readonly etcdBinary: string | undefined;

  private constructor(
    readonly inventory: Inventory,
    readonly inventoryFile: string,
    readonly workdir: string,
    runEtcd: boolean,
  ) {
    this.stateDir = path.join(workdir, 'state');
    this.etcdBinary = runEtcd ? which('etcd') : undefined;
  }

  /**
   * Writes `inventoryYaml` to a fresh temporary work directory, runs `controller init`, enrols every
   * node and starts every agent. The caller stops the cluster and removes `cluster.workdir`.
   */
  static async start(inventoryYaml: string, options: { etcd: boolean; prefix: string }): Promise<LocalCluster> {
    const workdir = fs.mkdtempSync(path.join(os.tmpdir(), options.prefix));
    const inventoryFile = path.join(workdir, 'cluster.yaml');
    fs.writeFileSync(inventoryFile, inventoryYaml);
    const cluster = await LocalCluster.create({ inventoryFile, workdir, etcd: options.etcd });
    const init = await cluster.init();
    if (init.code !== 0) throw new Error(`controller init failed (exit ${init.code}): ${init.stderr}`);
    await cluster.enrollAll();
    await cluster.startAgents();
    return cluster;
  }

  /** Stops everything and removes the work directory. */
  async destroy(): Promise<void> {
    await this.stop();
    fs.rmSync(this.workdir, { recursive: true, force: true });
  }

  static async create(options: LocalClusterOptions): Promise<LocalCluster> {
    const inventory = loadInventory(options.inventoryFile).inventory;
    const cluster = new LocalCluster(inventory, path.resolve(options.inventoryFile), path.resolve(options.workdir), options.etcd ?? which('etcd') !== undefined);
    if (options.etcd === true && cluster.etcdBinary === undefined) throw new Error('etcd is not installed: install the Debian package etcd-server');
    fs.mkdirSync(cluster.workdir, { recursive: true });
    return cluster;
  }

  private controllerArgs(command: string, extra: readonly string[] = []): string[] {
    return [command, '--inventory', this.inventoryFile, '--state-dir', this.stateDir, ...extra];
  }

  async init(extra: readonly string[] = []): Promise<CommandResult> {
    return runController(this.controllerArgs('init', extra));
  }

  async distribute(extra: readonly string[] = []): Promise<CommandResult> {
    return runController(this.controllerArgs('distribute', extra));
  }

  /** Distributes with `--output json` and returns the parsed report; throws when stdout is not JSON. */
  async distributeJson(extra: readonly string[] = []): Promise<{ result: CommandResult; report: DistributeJson }> {
    const result = await this.distribute(['--output', 'json', ...extra]);
    try {
      return { result, report: JSON.parse(result.stdout) as DistributeJson };
    } catch {
      throw new Error(`distribute printed no JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
    }
  }

  /** Enrols every node and writes its agent configuration with test service hooks. */
  async enrollAll(options: { etcdHealthTimeoutSeconds?: number } = {}): Promise<void> {
    const etcdNodes = this.inventory.nodes.filter((node) => node.roles.includes('etcd'));
    const initialCluster = etcdNodes.map((node) => `${node.name}=https://${node.addresses[0]}:${ETCD_PEER_PORT}`).join(',');
    for (const spec of this.inventory.nodes) {
      const dir = path.join(this.workdir, 'nodes', spec.name);
      const installRoot = path.join(dir, 'root');
      fs.mkdirSync(installRoot, { recursive: true });
      const result = await runController(
        this.controllerArgs('enroll', ['--node', spec.name, '--out', path.join(dir, 'agent'), '--install-root', installRoot, '--agent-state-dir', path.join(dir, 'agent-state')]),
      );
      if (result.code !== 0) throw new Error(`controller enroll ${spec.name} failed (exit ${result.code}): ${result.stderr}`);
      const node: LocalNode = {
        spec,
        dir,
        installRoot,
        configFile: path.join(dir, 'agent', 'agent.yaml'),
        restartsLog: path.join(dir, 'restarts.log'),
        ...(spec.roles.includes('etcd') && this.etcdBinary !== undefined
          ? {
              etcd: {
                name: spec.name,
                address: spec.addresses[0]!,
                installRoot,
                dataDir: path.join(dir, 'etcd-data'),
                pidFile: path.join(dir, 'etcd.pid'),
                logFile: path.join(dir, 'etcd.log'),
                initialCluster,
                etcdBinary: this.etcdBinary,
                tlsFlags: flagsForNode(this.inventory, spec)
                  .filter((flag) => flag.service === 'etcd' && flag.kind === 'flag')
                  .map((flag) => `${flag.flag}=${flag.value}`),
                specFile: path.join(dir, 'etcd.json'),
              },
            }
          : {}),
      };
      if (node.etcd !== undefined) fs.writeFileSync(node.etcd.specFile, JSON.stringify(node.etcd, null, 2));
      this.writeServiceHooks(node, options.etcdHealthTimeoutSeconds ?? 90);
      this.nodes.push(node);
    }
  }

  private writeServiceHooks(node: LocalNode, etcdTimeout: number): void {
    const config = YAML.parse(fs.readFileSync(node.configFile, 'utf8')) as Record<string, unknown>;
    config.services = testServiceHooks(node, etcdTimeout);
    fs.writeFileSync(node.configFile, YAML.stringify(config));
  }

  /** Starts the agent of one node (or all) and waits until it listens. */
  async startAgents(names?: readonly string[]): Promise<void> {
    const selected = this.nodes.filter((node) => names === undefined || names.includes(node.spec.name));
    await Promise.all(
      selected.map(async (node) => {
        const log = fs.openSync(path.join(node.dir, 'agent.log'), 'a');
        node.process = spawn(process.execPath, [AGENT_CLI, '--config', node.configFile], { stdio: ['ignore', log, log] });
        fs.closeSync(log);
        await waitForPort(node.spec.agent.host, node.spec.agent.port, 20_000);
      }),
    );
  }

  /** Stops agents by the PIDs this harness started. */
  async stopAgents(names?: readonly string[]): Promise<void> {
    const selected = this.nodes.filter((node) => node.process !== undefined && (names === undefined || names.includes(node.spec.name)));
    await Promise.all(
      selected.map(
        (node) =>
          new Promise<void>((resolve) => {
            const child = node.process!;
            node.process = undefined;
            if (child.exitCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      ),
    );
  }

  async stopEtcd(): Promise<void> {
    await Promise.all(this.nodes.filter((node) => node.etcd !== undefined).map((node) => runNode(ETCD_SERVICE, ['stop', node.etcd!.specFile])));
  }

  async stop(): Promise<void> {
    await this.stopAgents();
    await this.stopEtcd();
  }

  node(name: string): LocalNode {
    const node = this.nodes.find((candidate) => candidate.spec.name === name);
    if (node === undefined) throw new Error(`no node ${name}`);
    return node;
  }

  /** Host path of a node path below the node's install root. */
  file(nodeName: string, nodePath: string): string {
    return path.join(this.node(nodeName).installRoot, nodePath);
  }

  restarts(nodeName: string): string[] {
    try {
      return fs.readFileSync(this.node(nodeName).restartsLog, 'utf8').split('\n').filter(Boolean);
    } catch {
      return [];
    }
  }
}

export interface DistributeJson {
  readonly cluster: string;
  readonly dryRun: boolean;
  readonly nodes: readonly {
    readonly name: string;
    readonly status: 'changed' | 'unchanged' | 'failed' | 'planned' | 'rolled-back' | 'skipped';
    readonly rolledBackFiles?: readonly string[];
    readonly changedFiles: readonly string[];
    readonly restartedServices: readonly string[];
    /** Each restarted service with the check that gated it, such as "default https https://127.0.20.11:2379/health". */
    readonly services: readonly { readonly name: string; readonly healthy: boolean; readonly check: string; readonly output: string }[];
    readonly error?: string;
    readonly plan: readonly { name: string; action: string; paths: string[]; reasons: string[]; restarts: string[] }[];
  }[];
}

/**
 * Returns the `services` section of a test node's agent configuration. etcd runs through
 * etcd-service.js and sets no health check, so the controller's default check gates it: /health on
 * the member's client port with the health-check client certificate. Every other service appends
 * its name to the node's restarts log. Those stand-ins serve nothing, so they set `health: none`
 * instead of getting a default check.
 */
export function testServiceHooks(node: Pick<LocalNode, 'restartsLog' | 'etcd'>, etcdTimeout: number): Record<string, unknown> {
  const record = (service: string): unknown => ({
    restart: { command: ['/bin/sh', '-c', 'echo "$0" >> "$1"', service, node.restartsLog] },
    health: 'none',
  });
  const services: Record<string, unknown> = {};
  for (const service of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy']) services[service] = record(service);
  services.etcd =
    node.etcd === undefined
      ? record('etcd')
      : { restart: { command: [process.execPath, ETCD_SERVICE, 'restart', node.etcd.specFile] }, timeoutSeconds: etcdTimeout };
  return services;
}

/**
 * Writes an inventory into a new temporary directory, then initialises, enrolls, starts and
 * distributes a local cluster without etcd; throws when a step fails.
 */
export async function distributedCluster(inventoryText: string, prefix: string): Promise<{ workdir: string; cluster: LocalCluster }> {
  const workdir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const inventoryFile = path.join(workdir, 'cluster.yaml');
  fs.writeFileSync(inventoryFile, inventoryText);
  const cluster = await LocalCluster.create({ inventoryFile, workdir, etcd: false });
  const init = await cluster.init();
  if (init.code !== 0) throw new Error(`controller init failed (exit ${init.code}): ${init.stderr}`);
  await cluster.enrollAll();
  await cluster.startAgents();
  const distributed = await cluster.distribute();
  if (distributed.code !== 0) throw new Error(`controller distribute failed (exit ${distributed.code}):\n${distributed.stdout}\n${distributed.stderr}`);
  return { workdir, cluster };
}

/**
 * Returns a small ECDSA-P256 inventory on one loopback /24: one etcd node (.11), `masters` masters (.21,
 * .22, ...) and one worker (.31), with `pki` extra fields such as `certValidity: 2160h`.
 */
export function smallInventory(name: string, subnet: string, options: { masters?: number; pki?: string } = {}): string {
  const masters = Array.from({ length: options.masters ?? 1 }, (_, index) => `    - {name: master-${index + 1}, addresses: [${subnet}.${21 + index}], roles: [master]}`);
  return [
    'apiVersion: kubetrust/v1',
    'kind: Cluster',
    `metadata: {name: ${name}}`,
    'spec:',
    `  apiServer: {endpoint: "https://${subnet}.100:6443"}`,
    `  pki: {keyAlgorithm: ECDSA-P256${options.pki === undefined ? '' : `, ${options.pki}`}}`,
    '  nodes:',
    `    - {name: etcd-1, addresses: [${subnet}.11], roles: [etcd]}`,
    ...masters,
    `    - {name: worker-1, addresses: [${subnet}.31], roles: [worker]}`,
    '',
  ].join('\n');
}
