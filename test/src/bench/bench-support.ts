/**
 * Parts that the kubetrust benchmarks share: the benchmark cluster's inventory, timed controller
 * runs with their CPU time, peak RSS and event-loop report, and the child processes that a signal
 * has to stop.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { EVENT_LOOP_MONITORS_ENV, EVENT_LOOP_REPORT_ENV, type EventLoopReport } from '@kubetrust/controller/dist/event-loop-report';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import type { KeyAlgorithm } from '@kubetrust/shared/dist/pki';
import { CONTROLLER_CLI, REPO_ROOT } from '../harness/local-cluster';

export const TIME_BINARY = '/usr/bin/time';
/** Upper bound that keeps a hung controller run from blocking the benchmark forever; not a performance target. */
const COMMAND_TIMEOUT_MS = 60 * 60_000;
/** Interval of /proc sampling when /usr/bin/time is not used. */
const PROC_POLL_MS = 20;
/** Linux reports /proc/<pid>/stat CPU times in USER_HZ (clock ticks), which is 100 on x86-64 and arm64. */
const USER_HZ = 100;

/**
 * The loopback /24 networks of the benchmark cluster, 127.0.<first>.0/24 to 127.0.<last>.0/24, named
 * by their third octet. The first network contains the etcd nodes, the masters and the API
 * endpoint. The others contain the workers, 254 addresses each.
 */
export interface LoopbackSubnets {
  readonly first: number;
  readonly last: number;
}

/** 127.0.30.x for etcd nodes and masters, 127.0.31.1 to 127.0.34.254 for workers. */
export const DEFAULT_SUBNETS: LoopbackSubnets = { first: 30, last: 34 };
const HOSTS_PER_SUBNET = 254;

/** Number of workers that fit in the worker networks of `subnets`. */
export function maxWorkers(subnets: LoopbackSubnets = DEFAULT_SUBNETS): number {
  return (subnets.last - subnets.first) * HOSTS_PER_SUBNET;
}

export const MAX_WORKERS = maxWorkers(DEFAULT_SUBNETS);

export type ResourceUsageMode = 'time' | 'proc' | 'off';

/** An error that the benchmark reports as its own message, without a stack. */
export class BenchError extends Error {}

export function progress(text: string): void {
  process.stderr.write(`[bench] ${text}\n`);
}

export function seconds(value: number | undefined): string {
  return value === undefined ? 'n/a' : value.toFixed(2);
}

/** CPU seconds to the millisecond, which the controller's own measurement resolves. */
export function cpuSeconds(value: number | undefined): string {
  return value === undefined ? 'n/a' : value.toFixed(3);
}

export function megabytes(kb: number | undefined): string {
  return kb === undefined ? 'n/a' : (kb / 1024).toFixed(0);
}

export function milliseconds(value: number | undefined): string {
  return value === undefined ? 'n/a' : value.toFixed(0);
}

// ---------------------------------------------------------------------------------------------
// The cluster.

/** Parses `FIRST-LAST`, the third octets of the first and the last loopback /24 network, such as `30-34`. */
export function parseSubnets(text: string, option: string): LoopbackSubnets {
  const match = /^(\d{1,3})-(\d{1,3})$/.exec(text);
  const first = match === null ? Number.NaN : Number(match[1]);
  const last = match === null ? Number.NaN : Number(match[2]);
  if (!(first >= 1 && last <= 255 && first < last)) {
    throw new BenchError(`${option}: "${text}" is invalid; pass FIRST-LAST with 1 <= FIRST < LAST <= 255, such as 30-34 for 127.0.30.0/24 to 127.0.34.0/24`);
  }
  return { first, last };
}

/** Address of worker `index` (1-based). With the default networks: 127.0.31.1 for the first, 127.0.32.1 for the 255th. */
export function workerAddress(index: number, subnets: LoopbackSubnets = DEFAULT_SUBNETS): string {
  const max = maxWorkers(subnets);
  if (!Number.isInteger(index) || index < 1 || index > max) throw new RangeError(`worker index ${index} is outside 1..${max}`);
  const subnet = subnets.first + 1 + Math.floor((index - 1) / HOSTS_PER_SUBNET);
  return `127.0.${subnet}.${((index - 1) % HOSTS_PER_SUBNET) + 1}`;
}

/** Builds the inventory of 3 etcd nodes, 3 masters and `workers` workers, all on loopback addresses in `subnets`. */
export function inventoryYaml(workers: number, algorithm: KeyAlgorithm, subnets: LoopbackSubnets = DEFAULT_SUBNETS): string {
  const node = (name: string, address: string, role: string): string => `    - {name: ${name}, addresses: [${address}], roles: [${role}]}`;
  const controlPlane = `127.0.${subnets.first}`;
  const lines = [
    '# Written by a kubetrust benchmark: 3 etcd nodes, 3 masters and the workers, all on loopback.',
    'apiVersion: kubetrust/v1',
    'kind: Cluster',
    'metadata: {name: bench}',
    'spec:',
    `  apiServer: {endpoint: "https://${controlPlane}.100:6443"}`,
    `  pki: {keyAlgorithm: ${algorithm}}`,
    '  nodes:',
  ];
  for (let i = 1; i <= 3; i++) lines.push(node(`etcd-${i}`, `${controlPlane}.${10 + i}`, 'etcd'));
  for (let i = 1; i <= 3; i++) lines.push(node(`master-${i}`, `${controlPlane}.${20 + i}`, 'master'));
  for (let i = 1; i <= workers; i++) lines.push(node(`worker-${i}`, workerAddress(i, subnets), 'worker'));
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Child processes. Timed controller runs and the agent fleet are tracked here, so that a signal
// stops them.

const children = new Set<ChildProcess>();
let receivedSignal: NodeJS.Signals | undefined;

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Sends a signal to a tracked child; a controller run under /usr/bin/time leads its own process group. */
export function signalChild(child: ChildProcess, signal: NodeJS.Signals, group: boolean): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(group ? -child.pid : child.pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** On SIGINT or SIGTERM, sends SIGTERM to every tracked child and sets the exit code to 128 + the signal number. */
export function stopChildrenOnSignal(): void {
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
}

/** Returns the signal that stopped the benchmark, if any. */
export function stoppingSignal(): NodeJS.Signals | undefined {
  return receivedSignal;
}

// ---------------------------------------------------------------------------------------------
// Timed controller runs with the controller's CPU time, peak RSS and event-loop report.

export interface MeasuredRun {
  readonly code: number;
  readonly stdout: string;
  readonly wallS: number;
  /**
   * User plus system CPU seconds of the controller process, when measured: from the controller's
   * own getrusage at exit, in microseconds, when it wrote its event-loop report, and otherwise from
   * GNU time or /proc, which count 10 ms ticks and truncate.
   */
  readonly cpuS?: number;
  readonly peakRssKb?: number;
  /** What the controller wrote for KUBETRUST_EVENT_LOOP_REPORT, when it wrote it. */
  readonly eventLoop?: EventLoopReport;
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

function readEventLoopReport(file: string): EventLoopReport | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as EventLoopReport;
  } catch {
    return undefined;
  }
}

export interface ControllerRunOptions {
  readonly resourceUsage: ResourceUsageMode;
  /** Extra Node options for the controller process, such as `--cpu-prof`. */
  readonly nodeOptions?: readonly string[];
  /** Whether the controller keeps NODE_EXTRA_CA_CERTS from this process's environment (default false); see controllerEnvironment. */
  readonly keepExtraCaCerts?: boolean;
  /**
   * Whether the event-loop report runs its two monitors (default true). Their timers cost the
   * controller about 8 ms of CPU per second of waiting, so a run that measures CPU time turns them off.
   */
  readonly eventLoopMonitors?: boolean;
}

/** How the benchmarks start the controller with respect to NODE_EXTRA_CA_CERTS. */
export type ExtraCaCerts = 'unset' | 'removed' | 'kept';

/** Returns whether this process has NODE_EXTRA_CA_CERTS, and what the controller gets with `keep`. */
export function extraCaCerts(keep: boolean, env: NodeJS.ProcessEnv = process.env): ExtraCaCerts {
  if (env.NODE_EXTRA_CA_CERTS === undefined || env.NODE_EXTRA_CA_CERTS === '') return 'unset';
  return keep ? 'kept' : 'removed';
}

/**
 * Returns the controller's environment: this process's, with the event-loop report file and, unless
 * `keepExtraCaCerts`, without NODE_EXTRA_CA_CERTS. Node.js reads that file when it starts, so a
 * machine that sets it for its package proxy adds the parsing of its certificates to every
 * controller command. The controller trusts only its management CA and the cluster CAs and never
 * needs the file.
 */
export function controllerEnvironment(eventLoopFile: string, keepExtraCaCerts: boolean, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const result: NodeJS.ProcessEnv = { ...env, [EVENT_LOOP_REPORT_ENV]: eventLoopFile };
  if (!keepExtraCaCerts) delete result.NODE_EXTRA_CA_CERTS;
  return result;
}

/**
 * Runs the controller CLI, timing it from spawn to exit. Its stderr (the logs) goes to `logFile`,
 * and its event-loop report to `<logFile>.event-loop.json`. With `time`, GNU time measures the CPU
 * time and peak RSS; with `proc`, /proc is sampled every PROC_POLL_MS, which can miss up to one
 * interval of CPU time at the end.
 */
export async function runControllerMeasured(args: readonly string[], logFile: string, options: ControllerRunOptions): Promise<MeasuredRun> {
  const log = fs.openSync(logFile, 'w');
  const usageFile = `${logFile}.usage`;
  const eventLoopFile = `${logFile}.event-loop.json`;
  const useTime = options.resourceUsage === 'time';
  const nodeArgs = [...(options.nodeOptions ?? []), CONTROLLER_CLI, ...args];
  const command = useTime ? TIME_BINARY : process.execPath;
  const commandArgs = useTime ? ['-f', '%U %S %M', '-o', usageFile, process.execPath, ...nodeArgs] : nodeArgs;
  const env = controllerEnvironment(eventLoopFile, options.keepExtraCaCerts === true);
  if (options.eventLoopMonitors === false) env[EVENT_LOOP_MONITORS_ENV] = 'off';

  const start = performance.now();
  const child = track(spawn(command, commandArgs, { stdio: ['ignore', 'pipe', log], detached: useTime, env }));
  fs.closeSync(log);
  let stdout = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));

  let sample: { cpuS: number; peakRssKb: number } | undefined;
  const poller =
    options.resourceUsage === 'proc'
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
  const eventLoop = readEventLoopReport(eventLoopFile);
  const ownCpuMs = eventLoop === undefined ? undefined : eventLoop.userCpuMs + eventLoop.systemCpuMs;
  const cpuS = ownCpuMs !== undefined && Number.isFinite(ownCpuMs) ? ownCpuMs / 1000 : usage?.cpuS;
  return {
    code,
    stdout,
    wallS,
    ...(cpuS !== undefined ? { cpuS } : {}),
    ...(usage !== undefined ? { peakRssKb: usage.peakRssKb } : {}),
    ...(eventLoop !== undefined ? { eventLoop } : {}),
  };
}

/** Chooses how to measure the controller's CPU time: `auto` is GNU time when installed, otherwise /proc. */
export function resolveResourceUsage(mode: string): ResourceUsageMode {
  if (!['auto', 'time', 'proc', 'off'].includes(mode)) throw new BenchError(`--resource-usage: "${mode}" is invalid; use auto, time, proc or off`);
  const timeInstalled = fs.existsSync(TIME_BINARY);
  if (mode === 'time' && !timeInstalled) throw new BenchError(`--resource-usage time: ${TIME_BINARY} is not installed (Debian package time); use proc`);
  if (mode === 'auto') return timeInstalled ? 'time' : 'proc';
  return mode as ResourceUsageMode;
}

export function positiveInteger(value: string, option: string, max: number): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > max) throw new BenchError(`${option}: "${value}" is invalid; pass an integer from 1 to ${max}`);
  return parsed;
}

/** Creates the scratch directory: a new one below the temporary directory, or `requested` when it is new or empty. */
export function prepareWorkdir(requested: string | undefined): string {
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

/** Certificates the catalogue issues for all nodes: every item except static files (CA certificates and keys). */
export function expectedIssued(inventory: Inventory): number {
  return inventory.nodes.reduce((total, node) => total + itemsForNode(inventory, node).filter((item) => item.type !== 'static').length, 0);
}

/** Event-loop figures of one phase; the run and wait times of the main thread in the longest gap are undefined without schedstat. */
export interface EventLoopFigures {
  readonly delayMaxMs: number;
  readonly delayP99Ms: number;
  readonly gapMaxMs: number;
  readonly gapMaxRunMs: number | undefined;
  readonly gapMaxWaitMs: number | undefined;
}

/** Returns the event-loop figures of one phase of a controller run, or of the whole run when the phase is absent; undefined without a report. */
export function eventLoopFigures(run: MeasuredRun, phase: string): EventLoopFigures | undefined {
  const report = run.eventLoop;
  if (report === undefined) return undefined;
  const found = report.phases.find((candidate) => candidate.name === phase);
  if (found === undefined) return { delayMaxMs: report.delayMaxMs, delayP99Ms: Number.NaN, gapMaxMs: report.intervalGapMaxMs, gapMaxRunMs: undefined, gapMaxWaitMs: undefined };
  return { delayMaxMs: found.delayMaxMs, delayP99Ms: found.delayP99Ms, gapMaxMs: found.intervalGapMaxMs, gapMaxRunMs: found.intervalGapMaxRunMs, gapMaxWaitMs: found.intervalGapMaxWaitMs };
}

/**
 * Splits a controller run's CPU time at the start of `phase`: `startupS` is everything before it
 * (Node's start-up, loading the modules, and the phases before), `phaseS` the phase itself. Undefined
 * without a report that has the phase and its CPU time.
 */
export function phaseCpu(run: MeasuredRun, phase: string): { startupS: number; phaseS: number } | undefined {
  const report = run.eventLoop;
  const index = report?.phases.findIndex((candidate) => candidate.name === phase) ?? -1;
  if (report === undefined || index < 0 || typeof report.cpuBeforeMs !== 'number') return undefined;
  const before = report.phases.slice(0, index).reduce((total, candidate) => total + candidate.cpuMs, report.cpuBeforeMs);
  return { startupS: before / 1000, phaseS: report.phases[index]!.cpuMs / 1000 };
}

/**
 * Returns the share of all cores that were busy during the next second, in percent, as
 * bench/common.sh's busy_percent measures it from /proc/stat: iowait counts as idle.
 */
export async function busyPercent(): Promise<number> {
  const sample = (): number[] => (fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const before = sample();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const after = sample();
  const delta = (index: number): number => (after[index] ?? 0) - (before[index] ?? 0);
  // Fields of the cpu line: user nice system idle iowait irq softirq steal.
  const busy = delta(0) + delta(1) + delta(2) + delta(5) + delta(6) + delta(7);
  const idle = delta(3) + delta(4);
  return busy + idle > 0 ? Math.round((100 * busy) / (busy + idle)) : 0;
}

/** Returns the median of `values` (the mean of the two middle values for an even count), or undefined when empty. */
export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Reads the number of certificates in the state directory's ledger. */
export function ledgerCount(stateDir: string): number {
  const ledger = JSON.parse(fs.readFileSync(path.join(stateDir, 'ledger.json'), 'utf8')) as { issued: unknown[] };
  return ledger.issued.length;
}

/** What a benchmark entry point provides to `runBenchMain`. */
export interface BenchProgram<Options extends { workdir?: string; keep: boolean; resourceUsage?: ResourceUsageMode }, Result> {
  readonly usage: string;
  /** Parses the arguments; returns undefined for --help. Throws BenchError for invalid input. */
  parse(argv: readonly string[]): Options | undefined;
  run(options: Options, workdir: string): Promise<Result>;
  report(options: Options, result: Result): string;
}

interface BundleLoader {
  bundleIsCurrent(manifestFile: string): boolean;
  bundlePaths(packageDir: string): { readonly manifest: string };
}

/** The controller package's own loader, which decides at every start whether the bundle is used. */
const bundleLoader = require(path.join(REPO_ROOT, 'controller', 'bin', 'bundle-loader.js')) as BundleLoader;

/**
 * Explains why the controller would load its compiled modules (about 370 files, about 0.1 CPU-s
 * more per start) instead of its bundle, or returns undefined when the bundle is current.
 */
export function staleBundleMessage(manifestFile = bundleLoader.bundlePaths(path.join(REPO_ROOT, 'controller')).manifest): string | undefined {
  if (bundleLoader.bundleIsCurrent(manifestFile)) return undefined;
  return `the controller bundle (${manifestFile}) is missing or older than the files it was built from; run \`npm run build\` before benchmarking`;
}

/**
 * Runs a benchmark from the command line: parses its options (exit 2 when invalid), prepares the
 * work directory, runs it with child processes stopped on a signal, prints the report, and removes
 * the work directory unless asked to keep it or the run failed (exit 1).
 */
export async function runBenchMain<Options extends { workdir?: string; keep: boolean; resourceUsage?: ResourceUsageMode }, Result>(
  program: BenchProgram<Options, Result>,
): Promise<number> {
  let options: Options | undefined;
  try {
    options = program.parse(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n${program.usage}`);
    return 2;
  }
  if (options === undefined) {
    process.stdout.write(program.usage);
    return 0;
  }

  const staleBundle = staleBundleMessage();
  if (staleBundle !== undefined) {
    process.stderr.write(`error: ${staleBundle}\n`);
    return 2;
  }

  let workdir: string;
  try {
    workdir = prepareWorkdir(options.workdir);
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`);
    return 2;
  }
  progress(`work directory ${workdir}${options.resourceUsage !== undefined ? `, controller resource usage from ${options.resourceUsage}` : ''}`);
  stopChildrenOnSignal();

  try {
    const result = await program.run(options, workdir);
    process.stdout.write(program.report(options, result) + '\n');
  } catch (error) {
    const signal = stoppingSignal();
    const message = signal !== undefined ? `stopped by ${signal}` : error instanceof Error ? error.message : String(error);
    process.stderr.write(`error: ${message}\nThe work directory ${workdir} is kept for inspection.\n`);
    return 1;
  }
  if (options.keep) progress(`work directory kept: ${workdir}`);
  else fs.rmSync(workdir, { recursive: true, force: true });
  return 0;
}
