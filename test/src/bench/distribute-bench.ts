#!/usr/bin/env node
/**
 * `npm run bench`: times `controller init` plus `controller distribute` for a cluster of 3 etcd
 * nodes, 3 masters and N workers, then a second distribute that must change nothing, then
 * `controller rotate --all`, which issues every certificate again.
 *
 *   npm run bench -- [--workers N | --nodes N] [--algorithm RSA-2048|ECDSA-P256] [--concurrency N]
 *                    [--subnets FIRST-LAST] [--workdir DIR] [--keep]
 *                    [--resource-usage auto|time|proc|off] [--cpu-prof] [--keep-node-extra-ca-certs]
 *
 * The commands run as the real CLI (`controller/bin/controller.js`), with KUBETRUST_EVENT_LOOP_REPORT
 * set so that the controller reports its CPU time. The first distribute runs without the report's
 * event-loop monitors, whose timers would add CPU time of their own, and the rotation with them, for
 * the event-loop figures. The agents run in one
 * agent-fleet process on loopback addresses. By default these are 127.0.30.x for etcd nodes and
 * masters and 127.0.31.1 to 127.0.34.254 for workers, and `--subnets` moves them to other /24
 * networks. Their restart hooks run /bin/true. Enrolment and agent start-up happen
 * between init and distribute and are not timed. The last line of output is
 * `RESULT kubetrust-distribute key=value...`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { parseArgs } from 'node:util';
import * as YAML from 'yaml';
import { enrollNode } from '@kubetrust/controller/dist/enroll';
import { itemPaths, itemsForNode, servicesForNode, SERVICES } from '@kubetrust/shared/dist/catalogue';
import { loadInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { KEY_ALGORITHMS, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';
import type { DistributeJson } from '../harness/local-cluster';
import type { FleetUsage } from './agent-fleet';
import {
  BenchError,
  cpuSeconds,
  extraCaCerts,
  DEFAULT_SUBNETS,
  eventLoopFigures,
  expectedIssued,
  TIME_BINARY,
  inventoryYaml,
  ledgerCount,
  maxWorkers,
  megabytes,
  milliseconds,
  phaseCpu,
  positiveInteger,
  parseSubnets,
  progress,
  resolveResourceUsage,
  runControllerMeasured,
  seconds,
  signalChild,
  track,
  type ExtraCaCerts,
  type LoopbackSubnets,
  type MeasuredRun,
  type ResourceUsageMode,
  runBenchMain,
} from './bench-support';

const FLEET_SCRIPT = path.join(__dirname, 'agent-fleet.js');
/** Enrolments run in this process, this many at a time; each is mostly file writes and one P-256 key. */
const ENROLL_JOBS = 4;
/** etcd nodes and masters besides the workers. */
const CONTROL_PLANE_NODES = 6;
/** Upper bounds that keep a hung step from blocking the run forever; none of them is a performance target. */
const FLEET_START_TIMEOUT_MS = 10 * 60_000;
const FLEET_REPLY_TIMEOUT_MS = 30_000;
const FLEET_STOP_TIMEOUT_MS = 60_000;

interface BenchOptions {
  readonly workers: number;
  readonly algorithm: KeyAlgorithm;
  /** Loopback /24 networks of the agents: the first for etcd nodes and masters, the others for workers. */
  readonly subnets: LoopbackSubnets;
  readonly concurrency: number | undefined;
  readonly workdir: string | undefined;
  readonly keep: boolean;
  readonly resourceUsage: ResourceUsageMode;
  readonly cpuProfile: boolean;
  /** Whether the controller keeps NODE_EXTRA_CA_CERTS. */
  readonly keepExtraCaCerts: boolean;
}

// ---------------------------------------------------------------------------------------------
// The cluster: inventory, enrolment and the agent fleet.

interface BenchNode {
  readonly name: string;
  readonly installRoot: string;
  readonly configFile: string;
}

/**
 * Enrols one node with the function behind `controller enroll`, in this process, because a CLI
 * process per node took about 1.3 s each and would add minutes for 1,000 nodes. Then replaces the
 * node's service hooks with /bin/true, which costs about a millisecond.
 */
async function enrollBenchNode(inventory: Inventory, stateDir: string, nodesDir: string, name: string): Promise<BenchNode> {
  const dir = path.join(nodesDir, name);
  const installRoot = path.join(dir, 'root');
  fs.mkdirSync(installRoot, { recursive: true });
  let configFile: string;
  try {
    const result = await enrollNode(inventory, stateDir, name, path.join(dir, 'agent'), silentLogger(), { installRoot, stateDirOnNode: path.join(dir, 'agent-state') });
    configFile = result.configFile;
  } catch (error) {
    throw new BenchError(`enrolling node ${name} failed: ${(error as Error).message}`);
  }

  const config = YAML.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  // Nothing serves on these nodes, so no service gets the controller's default health check.
  config.services = Object.fromEntries(SERVICES.map((service) => [service, { restart: { command: ['/bin/true'] }, health: 'none' }]));
  fs.writeFileSync(configFile, YAML.stringify(config), { mode: 0o600 });
  return { name, installRoot, configFile };
}

async function enrollAll(inventory: Inventory, stateDir: string, nodesDir: string): Promise<BenchNode[]> {
  const nodes = new Array<BenchNode>(inventory.nodes.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < inventory.nodes.length) {
      const index = next++;
      nodes[index] = await enrollBenchNode(inventory, stateDir, nodesDir, inventory.nodes[index]!.name);
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
  /** Run 1, without the event-loop monitors, for the CPU time. */
  readonly first: MeasuredRun;
  readonly second: MeasuredRun;
  /** `rotate --all`, which issues every certificate again, with the event-loop monitors. */
  readonly third: MeasuredRun;
  readonly agentsCpuS: number;
  readonly agentsPeakRssKb: number;
}

async function runBench(options: BenchOptions, workdir: string): Promise<BenchResult> {
  const inventoryFile = path.join(workdir, 'inventory.yaml');
  const stateDir = path.join(workdir, 'state');
  const logsDir = path.join(workdir, 'logs');
  fs.mkdirSync(logsDir, { recursive: true });
  fs.writeFileSync(inventoryFile, inventoryYaml(options.workers, options.algorithm, options.subnets));
  const inventory = loadInventory(inventoryFile).inventory;
  const common = ['--inventory', inventoryFile, '--state-dir', stateDir];
  const runOptions = { resourceUsage: options.resourceUsage, keepExtraCaCerts: options.keepExtraCaCerts };
  const concurrency = options.concurrency !== undefined ? ['--concurrency', String(options.concurrency)] : [];

  progress(`controller init (timed), ${options.algorithm}`);
  const initLog = path.join(logsDir, 'init.log');
  const init = await runControllerMeasured(['init', ...common, '--output', 'json'], initLog, runOptions);
  if (init.code !== 0) throw new BenchError(`controller init exited with ${init.code}; see ${initLog}`);
  const initItems = (JSON.parse(init.stdout) as { items: { name: string; status: string }[] }).items;
  const reused = initItems.filter((item) => item.status !== 'created');
  if (reused.length > 0) throw new BenchError(`controller init reused ${reused.map((item) => item.name).join(', ')}; the state directory ${stateDir} must start empty`);
  const casCreated = initItems.filter((item) => item.name.endsWith(' CA')).length;

  progress(`enrolling ${inventory.nodes.length} nodes and starting the agent fleet (not timed)`);
  const nodes = await enrollAll(inventory, stateDir, path.join(workdir, 'nodes'));
  const fleet = await Fleet.start(
    nodes.map((node) => node.configFile),
    path.join(logsDir, 'agent-fleet.log'),
  );
  try {
    progress('controller distribute, run 1 (timed)');
    const firstLog = path.join(logsDir, 'distribute-1.log');
    const before = await fleet.usage();
    const profile = options.cpuProfile ? ['--cpu-prof', `--cpu-prof-dir=${path.join(logsDir, 'cpu-profile')}`] : [];
    const first = await runControllerMeasured(['distribute', ...common, ...concurrency, '--output', 'json'], firstLog, { ...runOptions, nodeOptions: profile, eventLoopMonitors: false });
    const after = await fleet.usage();
    checkDistribute(parseDistribute(first, 'distribute run 1', firstLog), first, inventory, 'changed', 'distribute run 1', firstLog);
    const issued = ledgerCount(stateDir);
    if (issued !== expectedIssued(inventory)) throw new BenchError(`ledger.json lists ${issued} certificates after run 1, expected ${expectedIssued(inventory)}`);
    checkInstalledFiles(inventory, nodes);

    progress('controller distribute, run 2 (timed; nothing may change)');
    const secondLog = path.join(logsDir, 'distribute-2.log');
    const second = await runControllerMeasured(['distribute', ...common, ...concurrency, '--output', 'json'], secondLog, runOptions);
    checkDistribute(parseDistribute(second, 'distribute run 2', secondLog), second, inventory, 'unchanged', 'distribute run 2', secondLog);
    if (ledgerCount(stateDir) !== issued) throw new BenchError(`distribute run 2 issued ${ledgerCount(stateDir) - issued} certificates, expected none`);

    progress('controller rotate --all, run 3 (event loop measured; every certificate is issued again)');
    const thirdLog = path.join(logsDir, 'rotate-3.log');
    const third = await runControllerMeasured(['rotate', '--all', ...common, ...concurrency, '--output', 'json'], thirdLog, runOptions);
    checkDistribute(parseDistribute(third, 'rotate run 3', thirdLog), third, inventory, 'changed', 'rotate run 3', thirdLog);
    if (ledgerCount(stateDir) !== 2 * issued) throw new BenchError(`rotate run 3 issued ${ledgerCount(stateDir) - issued} certificates, expected ${issued}`);

    return {
      nodes: inventory.nodes.length,
      certificates: issued + casCreated,
      issued,
      casCreated,
      init,
      first,
      second,
      third,
      agentsCpuS: (after.userCpuUs + after.systemCpuUs - before.userCpuUs - before.systemCpuUs) / 1e6,
      agentsPeakRssKb: after.maxRssKb,
    };
  } finally {
    await fleet.stop();
  }
}

function report(options: BenchOptions, result: BenchResult): string {
  const wallS = result.init.wallS + result.first.wallS;
  const controllerCpuS = result.init.cpuS !== undefined && result.first.cpuS !== undefined ? result.init.cpuS + result.first.cpuS : undefined;
  const peakRssKb = [result.init, result.first, result.second, result.third].reduce<number | undefined>(
    (max, run) => (run.peakRssKb === undefined ? max : Math.max(max ?? 0, run.peakRssKb)),
    undefined,
  );
  const loop = eventLoopFigures(result.third, 'distribute');
  const cpuMsPerCertificate = result.first.cpuS === undefined ? undefined : (1000 * result.first.cpuS) / result.issued;
  const split = phaseCpu(result.first, 'distribute');
  const phaseMsPerCertificate = split === undefined ? undefined : (1000 * split.phaseS) / result.issued;
  const fields = [
    `N=${options.workers}`,
    `algorithm=${options.algorithm}`,
    `node_extra_ca_certs=${extraCaCerts(options.keepExtraCaCerts)}`,
    `nodes=${result.nodes}`,
    `certs=${result.certificates}`,
    `init_s=${seconds(result.init.wallS)}`,
    `distribute_s=${seconds(result.first.wallS)}`,
    `wall_s=${seconds(wallS)}`,
    `certs_per_s=${(result.certificates / wallS).toFixed(2)}`,
    `rerun_s=${seconds(result.second.wallS)}`,
    `rotate_s=${seconds(result.third.wallS)}`,
    `controller_cpu_s=${cpuSeconds(controllerCpuS)}`,
    `distribute_cpu_s=${cpuSeconds(result.first.cpuS)}`,
    `cpu_ms_per_cert=${cpuMsPerCertificate === undefined ? 'n/a' : cpuMsPerCertificate.toFixed(2)}`,
    `startup_cpu_s=${cpuSeconds(split?.startupS)}`,
    `phase_cpu_ms_per_cert=${phaseMsPerCertificate === undefined ? 'n/a' : phaseMsPerCertificate.toFixed(2)}`,
    `loop_max_ms=${milliseconds(loop?.delayMaxMs)}`,
    `gap_max_ms=${milliseconds(loop?.gapMaxMs)}`,
    `gap_max_run_ms=${milliseconds(loop?.gapMaxRunMs)}`,
    `gap_max_wait_ms=${milliseconds(loop?.gapMaxWaitMs)}`,
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
    `  controller CPU (init + run 1) ${cpuSeconds(controllerCpuS)} s, peak RSS ${megabytes(peakRssKb)} MB; agents CPU (run 1) ${seconds(result.agentsCpuS)} s`,
    `  controller rotate --all, 3 ${seconds(result.third.wallS).padStart(8)} s   every certificate issued again; event loop max delay ${milliseconds(loop?.delayMaxMs)} ms, longest gap ${milliseconds(loop?.gapMaxMs)} ms`,
    `  controller CPU in run 1    ${cpuSeconds(result.first.cpuS).padStart(8)} s   ${cpuMsPerCertificate === undefined ? 'n/a' : cpuMsPerCertificate.toFixed(2)} ms per issued certificate, without the event-loop monitors`,
    `    before distributing      ${cpuSeconds(split?.startupS).padStart(8)} s   Node start-up, modules, inventory and state directory`,
    `    distributing             ${cpuSeconds(split?.phaseS).padStart(8)} s   ${phaseMsPerCertificate === undefined ? 'n/a' : phaseMsPerCertificate.toFixed(2)} ms per issued certificate`,
    `  NODE_EXTRA_CA_CERTS        ${EXTRA_CA_CERTS_TEXT[extraCaCerts(options.keepExtraCaCerts)]}`,
    `RESULT kubetrust-distribute ${fields.join(' ')}`,
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Command line.

const EXTRA_CA_CERTS_TEXT: Readonly<Record<ExtraCaCerts, string>> = {
  unset: 'not set here',
  removed: 'set here, removed from the controller environment (--keep-node-extra-ca-certs keeps it)',
  kept: 'set here and kept for the controller',
};

const USAGE = `usage: npm run bench -- [options]
  --workers N                 worker nodes besides 3 etcd nodes and 3 masters, 1-${maxWorkers(DEFAULT_SUBNETS)} with the
                              default --subnets, 254 per worker network (default 10)
  --nodes N                   total nodes instead of --workers: 3 etcd nodes, 3 masters and N-6 workers (N >= 7)
  --algorithm NAME            key algorithm of the cluster PKI: ${KEY_ALGORITHMS.join(', ')} (default RSA-2048)
  --concurrency N             passed to controller distribute (default: the controller's own default)
  --subnets FIRST-LAST        loopback networks 127.0.FIRST.0/24 to 127.0.LAST.0/24 by third octet: etcd nodes,
                              masters and the API endpoint in the first, workers in the others
                              (default ${DEFAULT_SUBNETS.first}-${DEFAULT_SUBNETS.last})
  --workdir DIR               empty or new scratch directory (default: a new directory below ${path.join(os.tmpdir(), 'kubetrust-bench')})
  --keep                      keep the scratch directory after a successful run (it is always kept after a failure)
  --resource-usage MODE       how to measure the controller's peak RSS, and its CPU time when the controller
                              writes no event-loop report with its own: time (GNU ${TIME_BINARY}),
                              proc (sample /proc), off, or auto (time when installed, otherwise proc; the default)
  --cpu-prof                  write a V8 CPU profile of distribute run 1 below the work directory's logs/cpu-profile
                              (implies --keep)
  --keep-node-extra-ca-certs  start the controller with this environment's NODE_EXTRA_CA_CERTS; without it the
                              controller runs without the variable, as on an admin host that does not set it
`;

function parseOptions(argv: readonly string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      workers: { type: 'string' },
      nodes: { type: 'string' },
      algorithm: { type: 'string', default: 'RSA-2048' },
      concurrency: { type: 'string' },
      subnets: { type: 'string', default: `${DEFAULT_SUBNETS.first}-${DEFAULT_SUBNETS.last}` },
      workdir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'resource-usage': { type: 'string', default: 'auto' },
      'cpu-prof': { type: 'boolean', default: false },
      'keep-node-extra-ca-certs': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return undefined;
  if (!(KEY_ALGORITHMS as readonly string[]).includes(values.algorithm)) {
    throw new BenchError(`--algorithm: "${values.algorithm}" is invalid; use one of ${KEY_ALGORITHMS.join(', ')}`);
  }
  if (values.workers !== undefined && values.nodes !== undefined) throw new BenchError('--workers and --nodes both set the cluster size; pass only one of them');
  const subnets = parseSubnets(values.subnets, '--subnets');
  const max = maxWorkers(subnets);
  let workers: number;
  if (values.nodes !== undefined) {
    const nodes = Number(values.nodes);
    if (!Number.isInteger(nodes) || nodes <= CONTROL_PLANE_NODES || nodes > max + CONTROL_PLANE_NODES) {
      throw new BenchError(`--nodes: "${values.nodes}" is invalid; pass an integer from ${CONTROL_PLANE_NODES + 1} (3 etcd nodes, 3 masters and one worker) to ${max + CONTROL_PLANE_NODES}`);
    }
    workers = nodes - CONTROL_PLANE_NODES;
  } else {
    workers = positiveInteger(values.workers ?? '10', '--workers', max);
  }
  return {
    workers,
    algorithm: values.algorithm as KeyAlgorithm,
    subnets,
    concurrency: values.concurrency !== undefined ? positiveInteger(values.concurrency, '--concurrency', 1024) : undefined,
    workdir: values.workdir,
    keep: values.keep || values['cpu-prof'],
    resourceUsage: resolveResourceUsage(values['resource-usage']),
    cpuProfile: values['cpu-prof'],
    keepExtraCaCerts: values['keep-node-extra-ca-certs'],
  };
}

function main(): Promise<number> {
  return runBenchMain<BenchOptions, Awaited<ReturnType<typeof runBench>>>({ usage: USAGE, parse: parseOptions, run: runBench, report });
}

if (require.main === module) {
  void main().then((code) => {
    process.exitCode = process.exitCode ?? code;
  });
}
