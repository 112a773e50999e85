#!/usr/bin/env node
/**
 * `npm run bench`: times `controller init` plus `controller distribute` for a cluster of 3 etcd
 * nodes, 3 masters and N workers, then a second distribute that must change nothing.
 *
 *   npm run bench -- [--workers N] [--algorithm RSA-2048|ECDSA-P256] [--concurrency N]
 *                    [--workdir DIR] [--keep] [--resource-usage auto|time|proc|off]
 *
 * Both commands run as the real CLI (`controller/bin/controller.js`). The agents run in one
 * agent-fleet process on loopback addresses 127.0.30.x (etcd, masters) and 127.0.31.x (workers),
 * with restart hooks that run /bin/true. Enrolment and agent start-up happen between init and
 * distribute and are not timed. The last line of output is
 * `RESULT kubetrust-distribute key=value...`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as readline from 'node:readline';
import { parseArgs } from 'node:util';
import * as YAML from 'yaml';
import { itemPaths, itemsForNode, servicesForNode, SERVICES } from '@kubetrust/shared/dist/catalogue';
import { loadInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { KEY_ALGORITHMS, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';
import { CONTROLLER_CLI, runController, type DistributeJson } from '../harness/local-cluster';
import type { FleetUsage } from './agent-fleet';

const FLEET_SCRIPT = path.join(__dirname, 'agent-fleet.js');
const TIME_BINARY = '/usr/bin/time';
const MAX_WORKERS = 250;
/** Enrolments run this many `controller enroll` processes at a time. */
const ENROLL_JOBS = os.availableParallelism();
/** Upper bounds that keep a hung step from blocking the run forever; none of them is a performance target. */
const COMMAND_TIMEOUT_MS = 30 * 60_000;
const FLEET_START_TIMEOUT_MS = 5 * 60_000;
const FLEET_REPLY_TIMEOUT_MS = 30_000;
const FLEET_STOP_TIMEOUT_MS = 20_000;
/** Interval of /proc sampling when /usr/bin/time is not used. */
const PROC_POLL_MS = 20;
/** Linux reports /proc/<pid>/stat CPU times in USER_HZ (clock ticks), which is 100 on x86-64 and arm64. */
const USER_HZ = 100;

type ResourceUsageMode = 'auto' | 'time' | 'proc' | 'off';

interface BenchOptions {
  readonly workers: number;
  readonly algorithm: KeyAlgorithm;
  readonly concurrency: number | undefined;
  readonly workdir: string | undefined;
  readonly keep: boolean;
  readonly resourceUsage: Exclude<ResourceUsageMode, 'auto'>;
}

class BenchError extends Error {}

// ---------------------------------------------------------------------------------------------
// Child processes. Timed controller runs and the agent fleet are tracked here, so that a signal
// stops them. `controller enroll` runs are not tracked because each ends within about a second.

const children = new Set<ChildProcess>();
let receivedSignal: NodeJS.Signals | undefined;

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Sends a signal to a tracked child; a controller run under /usr/bin/time leads its own process group. */
function signalChild(child: ChildProcess, signal: NodeJS.Signals, group: boolean): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(group ? -child.pid : child.pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Timed controller runs with the controller's CPU time and peak RSS.

interface MeasuredRun {
  readonly code: number;
  readonly stdout: string;
  readonly wallS: number;
  /** User plus system CPU seconds of the controller process, when measured. */
  readonly cpuS?: number;
  readonly peakRssKb?: number;
}

function readProcSample(pid: number): { cpuS: number; peakRssKb: number } | undefined {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
    // Fields after the command name, which is in parentheses and may contain spaces: state is
    // field 3 of stat(5), utime field 14 and stime field 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (hwm === null || !Number.isFinite(ticks)) return undefined;
    return { cpuS: ticks / USER_HZ, peakRssKb: Number(hwm[1]) };
  } catch {
    return undefined;
  }
}

function parseTimeOutput(file: string): { cpuS: number; peakRssKb: number } | undefined {
  // GNU time writes "Command exited with non-zero status N" before the format line on failures.
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  const [user, system, rss] = (lines[lines.length - 1] ?? '').split(' ').map(Number);
  if (user === undefined || system === undefined || rss === undefined || [user, system, rss].some((value) => !Number.isFinite(value))) return undefined;
  return { cpuS: user + system, peakRssKb: rss };
}

/**
 * Runs the controller CLI, timing it from spawn to exit. Its stderr (the logs) goes to `logFile`.
 * With `time`, GNU time measures the CPU time and peak RSS; with `proc`, /proc is sampled every
 * PROC_POLL_MS, which can miss up to one interval of CPU time at the end.
 */
async function runControllerMeasured(args: readonly string[], logFile: string, mode: BenchOptions['resourceUsage']): Promise<MeasuredRun> {
  const log = fs.openSync(logFile, 'w');
  const usageFile = `${logFile}.usage`;
  const useTime = mode === 'time';
  const command = useTime ? TIME_BINARY : process.execPath;
  const commandArgs = useTime ? ['-f', '%U %S %M', '-o', usageFile, process.execPath, CONTROLLER_CLI, ...args] : [CONTROLLER_CLI, ...args];

  const start = performance.now();
  const child = track(spawn(command, commandArgs, { stdio: ['ignore', 'pipe', log], detached: useTime }));
  fs.closeSync(log);
  let stdout = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));

  let sample: { cpuS: number; peakRssKb: number } | undefined;
  const poller =
    mode === 'proc'
      ? setInterval(() => {
          sample = readProcSample(child.pid!) ?? sample;
        }, PROC_POLL_MS)
      : undefined;
  const timeout = setTimeout(() => signalChild(child, 'SIGTERM', useTime), COMMAND_TIMEOUT_MS);

  const code = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (exitCode, signal) => resolve(exitCode ?? (signal !== null ? 128 + (os.constants.signals[signal] ?? 0) : 1)));
  });
  const wallS = (performance.now() - start) / 1000;
  clearTimeout(timeout);
  if (poller !== undefined) clearInterval(poller);

  const usage = useTime ? parseTimeOutput(usageFile) : sample;
  return { code, stdout, wallS, ...(usage !== undefined ? { cpuS: usage.cpuS, peakRssKb: usage.peakRssKb } : {}) };
}

// ---------------------------------------------------------------------------------------------
// The cluster: inventory, enrolment and the agent fleet.

function inventoryYaml(workers: number, algorithm: KeyAlgorithm): string {
  const node = (name: string, address: string, role: string): string => `    - {name: ${name}, addresses: [${address}], roles: [${role}]}`;
  const lines = [
    '# Written by the kubetrust distribute benchmark: 3 etcd nodes, 3 masters and the workers, all on loopback.',
    'apiVersion: kubetrust/v1',
    'kind: Cluster',
    'metadata: {name: bench}',
    'spec:',
    '  apiServer: {endpoint: "https://127.0.30.100:6443"}',
    `  pki: {keyAlgorithm: ${algorithm}}`,
    '  nodes:',
  ];
  for (let i = 1; i <= 3; i++) lines.push(node(`etcd-${i}`, `127.0.30.${10 + i}`, 'etcd'));
  for (let i = 1; i <= 3; i++) lines.push(node(`master-${i}`, `127.0.30.${20 + i}`, 'master'));
  for (let i = 1; i <= workers; i++) lines.push(node(`worker-${i}`, `127.0.31.${i}`, 'worker'));
  return lines.join('\n') + '\n';
}

interface BenchNode {
  readonly name: string;
  readonly installRoot: string;
  readonly configFile: string;
}

/** Enrols one node with the real CLI and replaces its service hooks with /bin/true, which costs about a millisecond. */
async function enrollNode(inventoryFile: string, stateDir: string, nodesDir: string, name: string): Promise<BenchNode> {
  const dir = path.join(nodesDir, name);
  const installRoot = path.join(dir, 'root');
  fs.mkdirSync(installRoot, { recursive: true });
  const args = ['enroll', '--inventory', inventoryFile, '--state-dir', stateDir, '--node', name];
  args.push('--out', path.join(dir, 'agent'), '--install-root', installRoot, '--agent-state-dir', path.join(dir, 'agent-state'));
  const result = await runController(args);
  if (result.code !== 0) throw new BenchError(`controller enroll --node ${name} failed (exit ${result.code}): ${result.stderr.trim()}`);

  const configFile = path.join(dir, 'agent', 'agent.yaml');
  const config = YAML.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  config.services = Object.fromEntries(SERVICES.map((service) => [service, { restart: { command: ['/bin/true'] } }]));
  fs.writeFileSync(configFile, YAML.stringify(config), { mode: 0o600 });
  return { name, installRoot, configFile };
}

async function enrollAll(inventory: Inventory, inventoryFile: string, stateDir: string, nodesDir: string): Promise<BenchNode[]> {
  const nodes = new Array<BenchNode>(inventory.nodes.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < inventory.nodes.length) {
      const index = next++;
      nodes[index] = await enrollNode(inventoryFile, stateDir, nodesDir, inventory.nodes[index]!.name);
    }
  };
  await Promise.all(Array.from({ length: ENROLL_JOBS }, worker));
  return nodes;
}

/** The agent-fleet child process and its line protocol on stdio. */
class Fleet {
  private readonly lines: string[] = [];
  private waiter: (() => void) | undefined;
  private exited = false;

  private constructor(private readonly child: ChildProcess) {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      this.lines.push(line);
      this.waiter?.();
    });
    child.once('exit', () => {
      this.exited = true;
      this.waiter?.();
    });
  }

  static async start(configFiles: readonly string[], logFile: string): Promise<Fleet> {
    const log = fs.openSync(logFile, 'w');
    const child = track(spawn(process.execPath, [FLEET_SCRIPT, ...configFiles], { stdio: ['pipe', 'pipe', log] }));
    fs.closeSync(log);
    const fleet = new Fleet(child);
    const ready = await fleet.nextDocument('ready', FLEET_START_TIMEOUT_MS);
    if (ready.agents !== configFiles.length) throw new BenchError(`agent fleet started ${String(ready.agents)} agents, expected ${configFiles.length}; see ${logFile}`);
    return fleet;
  }

  /** Waits for the next stdout document that has `key`. */
  private async nextDocument(key: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.lines.length > 0) {
        const document = JSON.parse(this.lines.shift()!) as Record<string, unknown>;
        if (key in document) return document;
      }
      if (this.exited) throw new BenchError(`agent fleet (PID ${this.child.pid}) exited before sending "${key}"; see its log`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new BenchError(`agent fleet (PID ${this.child.pid}) sent no "${key}" within ${timeoutMs / 1000} s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  async usage(): Promise<FleetUsage> {
    this.child.stdin!.write('usage\n');
    return (await this.nextDocument('usage', FLEET_REPLY_TIMEOUT_MS)).usage as FleetUsage;
  }

  /** Closes the fleet's stdin, which stops it; sends SIGKILL to its PID when it has not exited in time. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin!.end();
    const timer = setTimeout(() => signalChild(this.child, 'SIGKILL', false), FLEET_STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Checks on the results. None of them is timed.

function parseDistribute(run: MeasuredRun, label: string, logFile: string): DistributeJson {
  try {
    return JSON.parse(run.stdout) as DistributeJson;
  } catch {
    throw new BenchError(`${label} printed no JSON report (exit ${run.code}); see ${logFile}`);
  }
}

function checkDistribute(report: DistributeJson, run: MeasuredRun, inventory: Inventory, expected: 'changed' | 'unchanged', label: string, logFile: string): void {
  if (run.code !== 0) throw new BenchError(`${label} exited with ${run.code}, expected 0; see ${logFile}`);
  if (report.nodes.length !== inventory.nodes.length) throw new BenchError(`${label} reported ${report.nodes.length} nodes, expected ${inventory.nodes.length}`);
  const wrong = report.nodes.filter((node) => node.status !== expected);
  if (wrong.length > 0) {
    const firstFive = wrong.slice(0, 5).map((node) => `${node.name}: ${node.status}${node.error !== undefined ? ` (${node.error})` : ''}`);
    throw new BenchError(`${label}: ${wrong.length} node(s) not ${expected}: ${firstFive.join('; ')}`);
  }
  for (const node of report.nodes) {
    const spec = inventory.nodes.find((candidate) => candidate.name === node.name)!;
    const services = expected === 'changed' ? servicesForNode(spec) : [];
    if (node.restartedServices.length !== services.length || !services.every((service) => node.restartedServices.includes(service))) {
      throw new BenchError(`${label}: ${node.name} restarted [${node.restartedServices.join(', ')}], expected [${services.join(', ')}]`);
    }
  }
}

/** Certificates the catalogue issues for all nodes: every item except static files (CA certificates and keys). */
function expectedIssued(inventory: Inventory): number {
  return inventory.nodes.reduce((total, node) => total + itemsForNode(inventory, node).filter((item) => item.type !== 'static').length, 0);
}

function readLedger(stateDir: string): number {
  const ledger = JSON.parse(fs.readFileSync(path.join(stateDir, 'ledger.json'), 'utf8')) as { issued: unknown[] };
  return ledger.issued.length;
}

function checkInstalledFiles(inventory: Inventory, nodes: readonly BenchNode[]): void {
  for (const node of nodes) {
    const spec = inventory.nodes.find((candidate) => candidate.name === node.name)!;
    for (const file of itemsForNode(inventory, spec).flatMap(itemPaths)) {
      if (!fs.existsSync(path.join(node.installRoot, file))) throw new BenchError(`${node.name}: ${file} is missing below ${node.installRoot} after distribute`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

interface BenchResult {
  readonly nodes: number;
  readonly certificates: number;
  readonly issued: number;
  readonly casCreated: number;
  readonly init: MeasuredRun;
  readonly first: MeasuredRun;
  readonly second: MeasuredRun;
  readonly agentsCpuS: number;
  readonly agentsPeakRssKb: number;
}

async function runBench(options: BenchOptions, workdir: string): Promise<BenchResult> {
  const inventoryFile = path.join(workdir, 'inventory.yaml');
  const stateDir = path.join(workdir, 'state');
  const logsDir = path.join(workdir, 'logs');
  fs.mkdirSync(logsDir, { recursive: true });
  fs.writeFileSync(inventoryFile, inventoryYaml(options.workers, options.algorithm));
  const inventory = loadInventory(inventoryFile).inventory;
  const common = ['--inventory', inventoryFile, '--state-dir', stateDir];
  const concurrency = options.concurrency !== undefined ? ['--concurrency', String(options.concurrency)] : [];

  progress(`controller init (timed), ${options.algorithm}`);
  const initLog = path.join(logsDir, 'init.log');
  const init = await runControllerMeasured(['init', ...common, '--output', 'json'], initLog, options.resourceUsage);
  if (init.code !== 0) throw new BenchError(`controller init exited with ${init.code}; see ${initLog}`);
  const initItems = (JSON.parse(init.stdout) as { items: { name: string; status: string }[] }).items;
  const reused = initItems.filter((item) => item.status !== 'created');
  if (reused.length > 0) throw new BenchError(`controller init reused ${reused.map((item) => item.name).join(', ')}; the state directory ${stateDir} must start empty`);
  const casCreated = initItems.filter((item) => item.name.endsWith(' CA')).length;

  progress(`enrolling ${inventory.nodes.length} nodes and starting the agent fleet (not timed)`);
  const nodes = await enrollAll(inventory, inventoryFile, stateDir, path.join(workdir, 'nodes'));
  const fleet = await Fleet.start(
    nodes.map((node) => node.configFile),
    path.join(logsDir, 'agent-fleet.log'),
  );
  try {
    progress('controller distribute, run 1 (timed)');
    const firstLog = path.join(logsDir, 'distribute-1.log');
    const before = await fleet.usage();
    const first = await runControllerMeasured(['distribute', ...common, ...concurrency, '--output', 'json'], firstLog, options.resourceUsage);
    const after = await fleet.usage();
    checkDistribute(parseDistribute(first, 'distribute run 1', firstLog), first, inventory, 'changed', 'distribute run 1', firstLog);
    const issued = readLedger(stateDir);
    if (issued !== expectedIssued(inventory)) throw new BenchError(`ledger.json lists ${issued} certificates after run 1, expected ${expectedIssued(inventory)}`);
    checkInstalledFiles(inventory, nodes);

    progress('controller distribute, run 2 (timed; nothing may change)');
    const secondLog = path.join(logsDir, 'distribute-2.log');
    const second = await runControllerMeasured(['distribute', ...common, ...concurrency, '--output', 'json'], secondLog, options.resourceUsage);
    checkDistribute(parseDistribute(second, 'distribute run 2', secondLog), second, inventory, 'unchanged', 'distribute run 2', secondLog);
    if (readLedger(stateDir) !== issued) throw new BenchError(`distribute run 2 issued ${readLedger(stateDir) - issued} certificates, expected none`);

    return {
      nodes: inventory.nodes.length,
      certificates: issued + casCreated,
      issued,
      casCreated,
      init,
      first,
      second,
      agentsCpuS: (after.userCpuUs + after.systemCpuUs - before.userCpuUs - before.systemCpuUs) / 1e6,
      agentsPeakRssKb: after.maxRssKb,
    };
  } finally {
    await fleet.stop();
  }
}

function progress(text: string): void {
  process.stderr.write(`[bench] ${text}\n`);
}

function seconds(value: number | undefined): string {
  return value === undefined ? 'n/a' : value.toFixed(2);
}

function megabytes(kb: number | undefined): string {
  return kb === undefined ? 'n/a' : (kb / 1024).toFixed(0);
}

function report(options: BenchOptions, result: BenchResult): string {
  const wallS = result.init.wallS + result.first.wallS;
  const controllerCpuS = result.init.cpuS !== undefined && result.first.cpuS !== undefined ? result.init.cpuS + result.first.cpuS : undefined;
  const peakRssKb = [result.init, result.first, result.second].reduce<number | undefined>(
    (max, run) => (run.peakRssKb === undefined ? max : Math.max(max ?? 0, run.peakRssKb)),
    undefined,
  );
  const fields = [
    `N=${options.workers}`,
    `algorithm=${options.algorithm}`,
    `nodes=${result.nodes}`,
    `certs=${result.certificates}`,
    `init_s=${seconds(result.init.wallS)}`,
    `distribute_s=${seconds(result.first.wallS)}`,
    `wall_s=${seconds(wallS)}`,
    `certs_per_s=${(result.certificates / wallS).toFixed(2)}`,
    `rerun_s=${seconds(result.second.wallS)}`,
    `controller_cpu_s=${seconds(controllerCpuS)}`,
    `controller_peak_rss_mb=${megabytes(peakRssKb)}`,
    `agents_cpu_s=${seconds(result.agentsCpuS)}`,
    `agents_peak_rss_mb=${megabytes(result.agentsPeakRssKb)}`,
  ];
  return [
    `kubetrust distribute benchmark: 3 etcd + 3 masters + ${options.workers} workers = ${result.nodes} nodes, ${options.algorithm}`,
    `  controller init            ${seconds(result.init.wallS).padStart(8)} s   ${result.casCreated} CAs, service-account key pair, controller identity`,
    `  controller distribute, 1   ${seconds(result.first.wallS).padStart(8)} s   ${result.nodes} nodes changed, ${result.issued} certificates issued`,
    `  init + distribute          ${seconds(wallS).padStart(8)} s   ${result.certificates} certificates, ${(result.certificates / wallS).toFixed(2)} per second`,
    `  controller distribute, 2   ${seconds(result.second.wallS).padStart(8)} s   ${result.nodes} nodes unchanged`,
    `  controller CPU (init + run 1) ${seconds(controllerCpuS)} s, peak RSS ${megabytes(peakRssKb)} MB; agents CPU (run 1) ${seconds(result.agentsCpuS)} s`,
    `RESULT kubetrust-distribute ${fields.join(' ')}`,
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Command line.

const USAGE = `usage: npm run bench -- [options]
  --workers N                 worker nodes besides 3 etcd nodes and 3 masters, 1-${MAX_WORKERS} (default 10)
  --algorithm NAME            key algorithm of the cluster PKI: ${KEY_ALGORITHMS.join(', ')} (default RSA-2048)
  --concurrency N             passed to controller distribute (default: the controller's own default)
  --workdir DIR               empty or new scratch directory (default: a new directory below ${path.join(os.tmpdir(), 'kubetrust-bench')})
  --keep                      keep the scratch directory after a successful run (it is always kept after a failure)
  --resource-usage MODE       how to measure the controller's CPU time and peak RSS: time (GNU ${TIME_BINARY}),
                              proc (sample /proc), off, or auto (time when installed, otherwise proc; the default)
`;

function positiveInteger(value: string, option: string, max: number): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > max) throw new BenchError(`${option}: "${value}" is invalid; pass an integer from 1 to ${max}`);
  return parsed;
}

function parseOptions(argv: readonly string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      workers: { type: 'string', default: '10' },
      algorithm: { type: 'string', default: 'RSA-2048' },
      concurrency: { type: 'string' },
      workdir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'resource-usage': { type: 'string', default: 'auto' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return undefined;
  if (!(KEY_ALGORITHMS as readonly string[]).includes(values.algorithm)) {
    throw new BenchError(`--algorithm: "${values.algorithm}" is invalid; use one of ${KEY_ALGORITHMS.join(', ')}`);
  }
  const mode = values['resource-usage'];
  if (!['auto', 'time', 'proc', 'off'].includes(mode)) throw new BenchError(`--resource-usage: "${mode}" is invalid; use auto, time, proc or off`);
  const timeInstalled = fs.existsSync(TIME_BINARY);
  if (mode === 'time' && !timeInstalled) throw new BenchError(`--resource-usage time: ${TIME_BINARY} is not installed (Debian package time); use proc`);
  return {
    workers: positiveInteger(values.workers, '--workers', MAX_WORKERS),
    algorithm: values.algorithm as KeyAlgorithm,
    concurrency: values.concurrency !== undefined ? positiveInteger(values.concurrency, '--concurrency', 1024) : undefined,
    workdir: values.workdir,
    keep: values.keep,
    resourceUsage: mode === 'auto' ? (timeInstalled ? 'time' : 'proc') : (mode as BenchOptions['resourceUsage']),
  };
}

function prepareWorkdir(requested: string | undefined): string {
  if (requested === undefined) {
    const parent = path.join(os.tmpdir(), 'kubetrust-bench');
    fs.mkdirSync(parent, { recursive: true });
    return fs.mkdtempSync(path.join(parent, 'work-'));
  }
  const workdir = path.resolve(requested);
  fs.mkdirSync(workdir, { recursive: true });
  if (fs.readdirSync(workdir).length > 0) throw new BenchError(`--workdir ${workdir} is not empty; pass a new or empty directory`);
  return workdir;
}

async function main(): Promise<number> {
  let options: BenchOptions | undefined;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (options === undefined) {
    process.stdout.write(USAGE);
    return 0;
  }

  let workdir: string;
  try {
    workdir = prepareWorkdir(options.workdir);
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`);
    return 2;
  }
  progress(`work directory ${workdir}, controller resource usage from ${options.resourceUsage}`);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      receivedSignal = signal;
      progress(`${signal} received: stopping ${children.size} child process(es)`);
      for (const child of children) {
        signalChild(child, 'SIGTERM', child.spawnfile === TIME_BINARY);
      }
      process.exitCode = 128 + os.constants.signals[signal];
    });
  }

  try {
    const result = await runBench(options, workdir);
    process.stdout.write(report(options, result) + '\n');
  } catch (error) {
    const message = receivedSignal !== undefined ? `stopped by ${receivedSignal}` : error instanceof Error ? error.message : String(error);
    process.stderr.write(`error: ${message}\nThe work directory ${workdir} is kept for inspection.\n`);
    return 1;
  }
  if (options.keep) progress(`work directory kept: ${workdir}`);
  else fs.rmSync(workdir, { recursive: true, force: true });
  return 0;
}

if (require.main === module) {
  void main().then((code) => {
    process.exitCode = process.exitCode ?? code;
  });
}
