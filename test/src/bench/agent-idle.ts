#!/usr/bin/env node
/**
 * Measures the memory and CPU use of idle node agents: real agent processes started from
 * `agent/bin/agent.js` with the configuration from `controller enroll`, after start-up, after one
 * distribute and over an idle window after it.
 *
 *   node test/dist/bench/agent-idle.js [--workers N] [--idle-s S] [--settle-s S] [--interval-s S]
 *        [--subnet A.B.C] [--algorithm NAME] [--node-option OPTION]... [--workdir DIR] [--keep]
 *
 * The cluster is 1 etcd node, 1 master and N workers on one loopback /24 network, one agent process
 * per node. Their restart hooks append to a file. A bare `node -e 'setInterval(...)'` runs beside
 * them as the floor that any Node process on this machine needs. RSS is VmRSS from
 * /proc/PID/status, split into RssAnon and RssFile; CPU is utime + stime from /proc/PID/stat, in
 * clock ticks (USER_HZ, 100 per second on x86-64 and arm64), for all threads of the process.
 *
 * Samples: "start" once every agent listens and `--settle-s` has passed. "distributed" right after
 * `controller distribute` exits. Then, after `--settle-s` more, the idle window of `--idle-s`
 * seconds, sampled every `--interval-s`. "idle" is the last sample of the window and idle CPU is
 * the ticks used inside the window. The last line of output is `RESULT agent-idle key=value...`,
 * with the largest figure over all agents.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { KEY_ALGORITHMS, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';
import { AGENT_CLI, LocalCluster, waitForPort } from '../harness/local-cluster';
import { BenchError, positiveInteger, progress, runBenchMain, signalChild, track } from './bench-support';

const MAX_WORKERS = 50;
const MAX_SECONDS = 24 * 60 * 60;
/** Upper bounds that keep a hung step from blocking the run forever; not performance targets. */
const AGENT_START_TIMEOUT_MS = 30_000;
const AGENT_STOP_TIMEOUT_MS = 10_000;
const FLOOR_SCRIPT = 'setInterval(function () {}, 1e9)';
/**
 * Default wait before the start sample and before the idle window. V8's memory reducer runs one to
 * three full collections about 8 s after the last full collection once allocation stops (V8 11.3 in
 * Node 20), and the idle window starts after those, so that it measures the steady state.
 */
const DEFAULT_SETTLE_S = 15;

interface IdleOptions {
  readonly workers: number;
  readonly idleS: number;
  readonly settleS: number;
  readonly intervalS: number;
  readonly subnet: string;
  readonly algorithm: KeyAlgorithm;
  readonly nodeOptions: readonly string[];
  /** The single-file agent executable to run instead of `agent/bin/agent.js` under this Node.js. */
  readonly executable: string | undefined;
  readonly workdir: string | undefined;
  readonly keep: boolean;
}

/** One reading of a process from /proc; sizes in kB. */
interface ProcSample {
  readonly rssKb: number;
  readonly anonKb: number;
  readonly fileKb: number;
  readonly cpuTicks: number;
}

interface Measured {
  readonly name: string;
  readonly pid: number;
  start?: ProcSample;
  distributed?: ProcSample;
  windowStart?: ProcSample;
  idle?: ProcSample;
  idleMaxRssKb: number;
}

interface IdleResult {
  readonly floor: Measured;
  readonly agents: readonly Measured[];
  readonly distributeS: number;
}

/** Reads VmRSS, RssAnon, RssFile and utime + stime of a running process; throws when it has exited. */
export function readProcSample(pid: number): ProcSample {
  let status: string;
  let stat: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (error) {
    throw new BenchError(`process ${pid} is gone: ${(error as Error).message}`);
  }
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (match === null) throw new BenchError(`/proc/${pid}/status has no ${name} line`);
    return Number(match[1]);
  };
  // Fields after the command name, which is in parentheses and may contain spaces: utime is field
  // 14 of stat(5) and stime field 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuTicks = Number(fields[11]) + Number(fields[12]);
  if (!Number.isFinite(cpuTicks)) throw new BenchError(`/proc/${pid}/stat has no CPU times`);
  return { rssKb: field('VmRSS'), anonKb: field('RssAnon'), fileKb: field('RssFile'), cpuTicks };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function inventoryYaml(workers: number, algorithm: KeyAlgorithm, subnet: string): string {
  const node = (name: string, host: number, role: string): string => `    - {name: ${name}, addresses: [${subnet}.${host}], roles: [${role}]}`;
  const lines = [
    '# Written by the kubetrust agent idle benchmark: one etcd node, one master and the workers, on loopback.',
    'apiVersion: kubetrust/v1',
    'kind: Cluster',
    'metadata: {name: idle}',
    'spec:',
    `  apiServer: {endpoint: "https://${subnet}.100:6443"}`,
    `  pki: {keyAlgorithm: ${algorithm}}`,
    '  nodes:',
    node('etcd-1', 11, 'etcd'),
    node('master-1', 21, 'master'),
  ];
  for (let i = 1; i <= workers; i++) lines.push(node(`worker-${i}`, 100 + i, 'worker'));
  return lines.join('\n') + '\n';
}

/** Sends SIGTERM to each child by PID and waits for it to exit; sends SIGKILL after the timeout. */
async function stopChildren(children: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      signalChild(child, 'SIGTERM', false);
      const timer = setTimeout(() => signalChild(child, 'SIGKILL', false), AGENT_STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }),
  );
}

function sampleAll(targets: readonly Measured[], key: 'start' | 'distributed' | 'windowStart' | 'idle'): void {
  for (const target of targets) {
    const sample = readProcSample(target.pid);
    target[key] = sample;
    if (key === 'windowStart' || key === 'idle') target.idleMaxRssKb = Math.max(target.idleMaxRssKb, sample.rssKb);
  }
}

async function runIdle(options: IdleOptions, workdir: string): Promise<IdleResult> {
  const inventoryFile = path.join(workdir, 'cluster.yaml');
  fs.writeFileSync(inventoryFile, inventoryYaml(options.workers, options.algorithm, options.subnet));
  const cluster = await LocalCluster.create({ inventoryFile, workdir, etcd: false });

  progress('controller init and enroll');
  const init = await cluster.init(['--log-level', 'warn']);
  if (init.code !== 0) throw new BenchError(`controller init exited with ${init.code}: ${init.stderr}`);
  await cluster.enrollAll();

  progress(`starting ${cluster.nodes.length} agent processes and the floor process`);
  const children: ChildProcess[] = [];
  try {
    const floorChild = track(spawn(process.execPath, ['-e', FLOOR_SCRIPT], { stdio: 'ignore' }));
    children.push(floorChild);
    const agents: Measured[] = [];
    for (const node of cluster.nodes) {
      const log = fs.openSync(path.join(node.dir, 'agent.log'), 'a');
      const command = options.executable === undefined ? [process.execPath, ...options.nodeOptions, AGENT_CLI] : [options.executable];
      const child = track(spawn(command[0]!, [...command.slice(1), '--config', node.configFile], { stdio: ['ignore', log, log] }));
      fs.closeSync(log);
      children.push(child);
      agents.push({ name: node.spec.name, pid: child.pid!, idleMaxRssKb: 0 });
    }
    await Promise.all(cluster.nodes.map((node) => waitForPort(node.spec.agent.host, node.spec.agent.port, AGENT_START_TIMEOUT_MS)));
    const floor: Measured = { name: 'floor', pid: floorChild.pid!, idleMaxRssKb: 0 };
    const all = [floor, ...agents];

    await sleep(options.settleS * 1000);
    sampleAll(all, 'start');

    progress('controller distribute');
    const started = Date.now();
    const { result, report } = await cluster.distributeJson(['--log-level', 'warn']);
    const distributeS = (Date.now() - started) / 1000;
    sampleAll(all, 'distributed');
    if (result.code !== 0) throw new BenchError(`controller distribute exited with ${result.code}: ${result.stderr}`);
    const unchanged = report.nodes.filter((node) => node.status !== 'changed');
    if (unchanged.length > 0) throw new BenchError(`distribute left ${unchanged.map((node) => `${node.name} ${node.status}`).join(', ')}; every node must change`);

    await sleep(options.settleS * 1000);
    progress(`idle window of ${options.idleS} s, a sample every ${options.intervalS} s`);
    sampleAll(all, 'windowStart');
    const windowEnd = Date.now() + options.idleS * 1000;
    while (Date.now() < windowEnd) {
      await sleep(Math.min(options.intervalS * 1000, windowEnd - Date.now()));
      sampleAll(all, 'idle');
    }
    return { floor, agents, distributeS };
  } finally {
    await stopChildren(children);
  }
}

// ---------------------------------------------------------------------------------------------
// Report.

function mb(kb: number): string {
  return (kb / 1024).toFixed(1);
}

function idleTicks(target: Measured): number {
  return target.idle!.cpuTicks - target.windowStart!.cpuTicks;
}

function describe(target: Measured): string {
  const idle = target.idle!;
  return [
    `  ${target.name.padEnd(10)} RSS MB: start ${mb(target.start!.rssKb).padStart(5)}, after distribute ${mb(target.distributed!.rssKb).padStart(5)},`,
    `idle ${mb(idle.rssKb).padStart(5)} (anon ${mb(idle.anonKb)}, file ${mb(idle.fileKb)}, window max ${mb(target.idleMaxRssKb)});`,
    `CPU ticks: distribute ${target.distributed!.cpuTicks - target.start!.cpuTicks}, idle ${idleTicks(target)}`,
  ].join(' ');
}

function report(options: IdleOptions, result: IdleResult): string {
  const { agents, floor } = result;
  const max = (value: (agent: Measured) => number): number => Math.max(...agents.map(value));
  const fields = [
    `agents=${agents.length}`,
    `algorithm=${options.algorithm}`,
    `idle_s=${options.idleS}`,
    `floor_rss_mb=${mb(floor.idle!.rssKb)}`,
    `start_rss_mb=${mb(max((agent) => agent.start!.rssKb))}`,
    `distributed_rss_mb=${mb(max((agent) => agent.distributed!.rssKb))}`,
    `idle_rss_mb=${mb(max((agent) => agent.idle!.rssKb))}`,
    `idle_rss_max_mb=${mb(max((agent) => agent.idleMaxRssKb))}`,
    `idle_anon_mb=${mb(max((agent) => agent.idle!.anonKb))}`,
    `idle_file_mb=${mb(max((agent) => agent.idle!.fileKb))}`,
    `distribute_cpu_ticks=${max((agent) => agent.distributed!.cpuTicks - agent.start!.cpuTicks)}`,
    `idle_cpu_ticks=${max(idleTicks)}`,
    `idle_cpu_ticks_total=${agents.reduce((sum, agent) => sum + idleTicks(agent), 0)}`,
    `floor_idle_cpu_ticks=${idleTicks(floor)}`,
  ];
  const nodeOptions = options.nodeOptions.length > 0 ? `, agent Node options ${options.nodeOptions.join(' ')}` : '';
  const executable = options.executable === undefined ? '' : `, agent executable ${options.executable}`;
  return [
    `kubetrust agent idle benchmark: ${agents.length} agent processes (1 etcd, 1 master, ${options.workers} worker(s)), ${options.algorithm}, idle window ${options.idleS} s${nodeOptions}${executable}`,
    `  distribute took ${result.distributeS.toFixed(2)} s`,
    describe(floor),
    ...agents.map(describe),
    `RESULT agent-idle ${fields.join(' ')}`,
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Command line.

const USAGE = `usage: node test/dist/bench/agent-idle.js [options]
  --workers N           worker nodes besides one etcd node and one master, 0-${MAX_WORKERS}; one agent process per node (default 1)
  --idle-s S            length of the idle window in seconds (default 60)
  --settle-s S          seconds to wait after start-up and after distribute before sampling (default 15)
  --interval-s S        seconds between samples in the idle window (default 1)
  --subnet A.B.C        loopback /24 network of the agents, as three octets (default 127.0.40)
  --algorithm NAME      key algorithm of the cluster PKI: ${KEY_ALGORITHMS.join(', ')} (default ECDSA-P256)
  --node-option OPTION  a Node.js option for the agent processes, such as --max-semi-space-size=1; repeatable
  --executable FILE     run this single-file agent executable (npm run package:agent) instead of agent/bin/agent.js
  --workdir DIR         empty or new scratch directory (default: a new directory below ${path.join(os.tmpdir(), 'kubetrust-bench')})
  --keep                keep the scratch directory after a successful run (it is always kept after a failure)
`;

function wholeNumber(value: string, option: string, min: number, max: number): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min || parsed > max) throw new BenchError(`${option}: "${value}" is invalid; pass an integer from ${min} to ${max}`);
  return parsed;
}

function parseOptions(argv: readonly string[]): IdleOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      workers: { type: 'string', default: '1' },
      'idle-s': { type: 'string', default: '60' },
      'settle-s': { type: 'string', default: String(DEFAULT_SETTLE_S) },
      'interval-s': { type: 'string', default: '1' },
      subnet: { type: 'string', default: '127.0.40' },
      algorithm: { type: 'string', default: 'ECDSA-P256' },
      'node-option': { type: 'string', multiple: true, default: [] },
      executable: { type: 'string' },
      workdir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return undefined;
  if (!(KEY_ALGORITHMS as readonly string[]).includes(values.algorithm)) {
    throw new BenchError(`--algorithm: "${values.algorithm}" is invalid; use one of ${KEY_ALGORITHMS.join(', ')}`);
  }
  if (!/^127\.\d{1,3}\.\d{1,3}$/.test(values.subnet) || values.subnet.split('.').some((octet) => Number(octet) > 255)) {
    throw new BenchError(`--subnet: "${values.subnet}" is invalid; give the first three octets of a loopback /24 network, such as 127.0.40`);
  }
  const badOption = values['node-option'].find((option) => !option.startsWith('--'));
  if (badOption !== undefined) throw new BenchError(`--node-option: "${badOption}" is invalid; pass a Node.js option that starts with --, such as --node-option=--max-semi-space-size=1`);
  const executable = values.executable === undefined ? undefined : path.resolve(values.executable);
  if (executable !== undefined) {
    if (values['node-option'].length > 0) throw new BenchError('--executable and --node-option do not go together: a single-file executable takes no Node.js options; drop one of them');
    try {
      fs.accessSync(executable, fs.constants.X_OK);
    } catch {
      throw new BenchError(`--executable: "${values.executable}" is not an executable file; build one with npm run package:agent (agent/artifact/kubetrust-agent-linux-<arch>)`);
    }
  }
  return {
    workers: wholeNumber(values.workers, '--workers', 0, MAX_WORKERS),
    idleS: positiveInteger(values['idle-s'], '--idle-s', MAX_SECONDS),
    settleS: wholeNumber(values['settle-s'], '--settle-s', 0, MAX_SECONDS),
    intervalS: positiveInteger(values['interval-s'], '--interval-s', MAX_SECONDS),
    subnet: values.subnet,
    algorithm: values.algorithm as KeyAlgorithm,
    nodeOptions: values['node-option'],
    executable,
    workdir: values.workdir,
    keep: values.keep,
  };
}

function main(): Promise<number> {
  return runBenchMain<IdleOptions, IdleResult>({ usage: USAGE, parse: parseOptions, run: runIdle, report });
}

if (require.main === module) {
  void main().then((code) => {
    process.exitCode = process.exitCode ?? code;
  });
}
