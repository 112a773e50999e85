#!/usr/bin/env node
/**
 * `controller bootstrap` on N real sshd nodes, beside an Ansible playbook that installs and starts
 * the same agent on the same nodes.
 *
 *   node test/dist/bench/bootstrap-bench.js [--nodes N] [--forks LIST] [--max-parallel N]
 *                                           [--workdir DIR] [--keep] [--resource-usage MODE]
 *
 * The nodes are OpenSSH servers in network namespaces on one bridge (test/src/harness/ssh-nodes.ts),
 * 3 etcd nodes, 3 masters and N-6 workers, each with its own `agent.prefix`. Untimed, the benchmark
 * builds the agent executable and runs `controller init`. Timed, it runs `controller bootstrap
 * --accept-new --output json` (run 1 installs, enrols and starts every agent) and the same bootstrap
 * again (run 2 must change nothing). It then copies each node's agent.yaml, identity and control
 * script aside, stops the agents with their control script and removes their files.
 *
 * For each fork count, the Ansible side runs bench/ansible/bootstrap-agent.yml twice against the
 * same addresses. Run 1 copies the agent executable (uncompressed, with the copy module), the saved
 * files and the control script. It then starts the agent and waits for its port. Run 2 must change
 * nothing.
 * Between the two runs, untimed, `controller bootstrap --dry-run` checks that every agent that
 * Ansible started answers over mutual TLS with its identity. Ansible's home, temporary directories,
 * SSH control sockets and known hosts file are all in the work directory. The last lines of output
 * are `RESULT kubetrust-bootstrap ...` and one `RESULT ansible-bootstrap ...` per fork count.
 * Needs root, iproute2, openssh-server, openssh-client and ansible-core.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import * as YAML from 'yaml';
import { agentInstallPaths, type AgentInstallPaths } from '@kubetrust/controller/dist/agent-install';
import { loadInventory, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';
import { REPO_ROOT, runNode, which } from '../harness/local-cluster';
import { SshNodes, type SshNode } from '../harness/ssh-nodes';
import {
  BenchError,
  busyPercent,
  median,
  positiveInteger,
  progress,
  resolveResourceUsage,
  runBenchMain,
  runControllerMeasured,
  seconds,
  signalChild,
  TIME_BINARY,
  track,
  type MeasuredRun,
  type ResourceUsageMode,
} from './bench-support';

const BUILD_SCRIPT = path.join(REPO_ROOT, 'agent', 'packaging', 'build-artifact.js');
const ANSIBLE_DIR = path.join(REPO_ROOT, 'bench', 'ansible');
const PLAYBOOK = path.join(ANSIBLE_DIR, 'bootstrap-agent.yml');
const CALLBACK_PLUGINS = path.join(ANSIBLE_DIR, 'callback_plugins');
const TIMING_CALLBACK = 'kubetrust_bench_timing';
/** The Python that Ansible runs its modules with on the nodes, which share this machine's file system. */
const NODE_PYTHON = '/usr/bin/python3';
/** etcd nodes and masters besides the workers. */
const CONTROL_PLANE_NODES = 6;
/** The harness puts a bridged run in one /24, with .1 for the host. */
const MAX_NODES = 250;
const DEFAULT_FORKS = [20];
/** The default of `controller bootstrap --max-parallel`. */
const DEFAULT_MAX_PARALLEL = 10;
/** Upper bound that keeps a hung Ansible run from blocking the benchmark forever; not a performance target. */
const ANSIBLE_TIMEOUT_MS = 30 * 60_000;
/**
 * sun_path has room for 108 bytes with the terminating NUL. OpenSSH binds a control socket under its final
 * name plus a 17-character random suffix, and Ansible names it with a 40-character hash (%C).
 */
const MAX_CONTROL_DIR_LENGTH = 107 - 17 - 41;

const BOOTSTRAP_STEPS = ['connect', 'detect', 'upload', 'enroll', 'start', 'confirm'] as const;
type BootstrapStep = (typeof BOOTSTRAP_STEPS)[number];

/** The tasks of bench/ansible/bootstrap-agent.yml by name, and the short key of each in the RESULT line. */
const PLAYBOOK_TASKS: Readonly<Record<string, string>> = {
  'Create the agent directories': 'dirs',
  'Copy the agent executable': 'executable',
  'Copy the agent configuration and identity': 'files',
  'Copy the control script': 'control_script',
  'Start the agent': 'start',
  'Wait until the agent port listens': 'wait',
};

interface BenchOptions {
  readonly nodes: number;
  readonly forks: readonly number[];
  readonly maxParallel: number;
  readonly workdir: string | undefined;
  readonly keep: boolean;
  readonly resourceUsage: ResourceUsageMode;
}

interface BootstrapNodeJson {
  name: string;
  action: string | null;
  status: string;
  error: string | null;
  timingsMs: Partial<Record<BootstrapStep, number>>;
}

/** Median and maximum over nodes, in milliseconds. */
interface Spread {
  readonly median: number | undefined;
  readonly max: number | undefined;
}

interface KubetrustResult {
  readonly first: MeasuredRun;
  readonly second: MeasuredRun;
  readonly firstSteps: Readonly<Record<BootstrapStep, Spread>>;
  readonly secondSteps: Readonly<Record<BootstrapStep, Spread>>;
  readonly busyBeforePercent: number;
}

interface AnsibleRun {
  readonly code: number;
  readonly wallS: number;
  /** User plus system CPU seconds of ansible-playbook and the processes it waited for, when measured. */
  readonly cpuS: number | undefined;
  readonly timing: TimingDocument;
}

interface AnsibleResult {
  readonly forks: number;
  readonly first: AnsibleRun;
  readonly second: AnsibleRun;
  /** Per task of run 1: the task's wall time and the spread of its per-host times. */
  readonly tasks: readonly { key: string; wallMs: number; hosts: Spread }[];
  readonly busyBeforePercent: number;
}

interface BenchResult {
  readonly nodes: number;
  readonly agentMiB: number;
  readonly agentGzipMiB: number;
  readonly kubetrust: KubetrustResult;
  readonly ansible: readonly AnsibleResult[];
}

/** What the callback plugin kubetrust_bench_timing writes; times are seconds since it was loaded. */
interface TimingDocument {
  end: number;
  tasks: { name: string; start: number; hosts: Record<string, { status: string; end: number; changed: boolean }> }[];
  stats: Record<string, { ok: number; changed: number; failures: number; unreachable: number; skipped: number }>;
}

/** One node of the benchmark cluster: its name and role, the sshd it runs on, and its agent paths. */
interface BenchNode {
  readonly name: string;
  readonly role: 'etcd' | 'master' | 'worker';
  readonly ssh: SshNode;
  readonly paths: AgentInstallPaths;
}

// ---------------------------------------------------------------------------------------------
// The cluster.

function benchNodes(sshNodes: SshNodes, count: number): BenchNode[] {
  const nodes: BenchNode[] = [];
  for (let index = 0; index < count; index++) {
    let role: BenchNode['role'] = 'worker';
    let number = index - CONTROL_PLANE_NODES + 1;
    if (index < 3) {
      role = 'etcd';
      number = index + 1;
    } else if (index < CONTROL_PLANE_NODES) {
      role = 'master';
      number = index - 2;
    }
    const ssh = sshNodes.node(index);
    nodes.push({ name: `${role}-${number}`, role, ssh, paths: agentInstallPaths(ssh.prefix) });
  }
  return nodes;
}

function inventoryYaml(nodes: readonly BenchNode[], clientKeyFile: string, knownHostsFile: string): string {
  const master = nodes.find((node) => node.role === 'master')!;
  const lines = [
    '# Written by bootstrap-bench.js: 3 etcd nodes, 3 masters and the workers, each an sshd in a network namespace.',
    'apiVersion: kubetrust/v1',
    'kind: Cluster',
    'metadata: {name: bench}',
    'spec:',
    `  apiServer: {endpoint: "https://${master.ssh.address}:6443"}`,
    '  pki: {keyAlgorithm: ECDSA-P256}',
    `  ssh: {privateKeyFile: ${clientKeyFile}, knownHostsFile: ${knownHostsFile}, agent: false}`,
    '  nodes:',
  ];
  for (const node of nodes) {
    lines.push(`    - {name: ${node.name}, addresses: [${node.ssh.address}], roles: [${node.role}], agent: {prefix: ${node.ssh.prefix}}}`);
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// The kubetrust side.

async function timedBootstrap(
  args: readonly string[],
  logFile: string,
  resourceUsage: ResourceUsageMode,
  expectedAction: string,
  label: string,
): Promise<{ run: MeasuredRun; nodes: BootstrapNodeJson[] }> {
  const run = await runControllerMeasured(['bootstrap', ...args], logFile, { resourceUsage });
  let nodes: BootstrapNodeJson[];
  try {
    nodes = (JSON.parse(run.stdout) as { nodes: BootstrapNodeJson[] }).nodes;
  } catch {
    throw new BenchError(`${label} printed no JSON report (exit ${run.code}); see ${logFile}`);
  }
  const wrong = nodes.filter((node) => node.status !== 'done' || node.action !== expectedAction);
  if (run.code !== 0 || wrong.length > 0) {
    const firstFive = wrong.slice(0, 5).map((node) => `${node.name}: ${node.action ?? '-'} ${node.status}${node.error !== null ? ` (${node.error})` : ''}`);
    throw new BenchError(`${label} exited with ${run.code}; ${wrong.length} node(s) not "${expectedAction}" and done: ${firstFive.join('; ')}; see ${logFile}`);
  }
  return { run, nodes };
}

function stepSpreads(nodes: readonly BootstrapNodeJson[]): Record<BootstrapStep, Spread> {
  const spreads = {} as Record<BootstrapStep, Spread>;
  for (const step of BOOTSTRAP_STEPS) {
    const values = nodes.map((node) => node.timingsMs[step]).filter((value): value is number => value !== undefined);
    spreads[step] = { median: median(values), max: values.length > 0 ? Math.max(...values) : undefined };
  }
  return spreads;
}

// ---------------------------------------------------------------------------------------------
// Between the two sides: the files kubetrust produced, and removing its agents.

/** A node's agent files as kubetrust left them, copied aside for the Ansible side. */
interface SavedAgentFiles {
  readonly dirs: { path: string; mode: string }[];
  readonly files: { src: string; dest: string; mode: string }[];
  readonly controlScriptSrc: string;
}

function octalMode(file: string): string {
  return (fs.statSync(file).mode & 0o7777).toString(8).padStart(4, '0');
}

/** Copies agent.yaml, the identity files and the control script of a node into `asideDir`, with their modes. */
function saveAgentFiles(node: BenchNode, asideDir: string): SavedAgentFiles {
  const { paths } = node;
  const dirs = [path.dirname(paths.binary), paths.configDir, paths.stateDir, path.dirname(paths.controlScript)]
    .filter((dir) => fs.existsSync(dir))
    .map((dir) => ({ path: dir, mode: octalMode(dir) }));
  const files: SavedAgentFiles['files'] = [];
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        dirs.push({ path: full, mode: octalMode(full) });
        walk(full);
      } else if (entry.isFile()) {
        const src = path.join(asideDir, 'config', path.relative(paths.configDir, full));
        fs.mkdirSync(path.dirname(src), { recursive: true });
        fs.copyFileSync(full, src);
        files.push({ src, dest: full, mode: octalMode(full) });
      }
    }
  };
  walk(paths.configDir);
  if (!files.some((file) => file.dest === paths.configFile)) throw new BenchError(`${node.name}: ${paths.configFile} is missing after bootstrap`);
  const controlScriptSrc = path.join(asideDir, path.basename(paths.controlScript));
  fs.copyFileSync(paths.controlScript, controlScriptSrc);
  return { dirs, files, controlScriptSrc };
}

/** Runs a command to completion and returns its exit code and output; never rejects on a non-zero exit. */
function runCommand(command: string, args: readonly string[], timeoutMs = 120_000): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const timer = setTimeout(() => signalChild(child, 'SIGKILL', false), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, output });
    });
  });
}

/**
 * Stops a node's agent with its control script, run in the node's namespace as the node's root
 * would, and removes every file that bootstrap or the playbook installed there.
 */
async function removeAgent(node: BenchNode): Promise<void> {
  const { paths } = node;
  if (fs.existsSync(paths.controlScript)) {
    const stopped = await runCommand('ip', ['netns', 'exec', node.ssh.namespace, paths.controlScript, 'stop']);
    if (stopped.code !== 0) throw new BenchError(`${node.name}: ${paths.controlScript} stop exited with ${stopped.code}: ${stopped.output.trim()}`);
  }
  for (const file of [paths.binary, `${paths.binary}.upload`, `${paths.binary}.upload.gz`, paths.controlScript, paths.configDir, paths.stateDir, paths.logFile, paths.pidFile]) {
    fs.rmSync(file, { recursive: true, force: true });
  }
}

/** Sends SIGTERM to every agent whose PID file a node still has; for the exit hook, where nothing can be awaited. */
function killAgentsSync(nodes: readonly BenchNode[]): void {
  for (const node of nodes) {
    const pid = Number(fs.existsSync(node.paths.pidFile) ? fs.readFileSync(node.paths.pidFile, 'utf8').trim() : '');
    if (!Number.isInteger(pid) || pid <= 1) continue;
    const cmdline = fs.existsSync(`/proc/${pid}/cmdline`) ? fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8') : '';
    // The PID file may be stale; only a process that runs with this node's agent.yaml is stopped.
    if (cmdline.split('\0').includes(node.paths.configFile)) spawnSync('kill', ['-TERM', String(pid)]);
  }
}

// ---------------------------------------------------------------------------------------------
// The Ansible side.

interface AnsibleSetup {
  readonly dir: string;
  readonly configFile: string;
  readonly hostsFile: string;
  readonly controlDir: string;
}

/** Writes ansible.cfg, the inventory with each host's files, and a known hosts file with the nodes' host keys. */
function writeAnsibleSetup(dir: string, controlDir: string, nodes: readonly BenchNode[], inventory: Inventory, saved: ReadonlyMap<string, SavedAgentFiles>, clientKeyFile: string, agentExecutable: string): AnsibleSetup {
  fs.mkdirSync(dir, { recursive: true });
  for (const sub of ['home', 'tmp-local', 'tmp-remote']) fs.mkdirSync(path.join(dir, sub), { recursive: true, mode: 0o700 });
  fs.mkdirSync(controlDir, { recursive: true, mode: 0o700 });

  const knownHosts = path.join(dir, 'known_hosts');
  fs.writeFileSync(knownHosts, nodes.map((node) => `${node.ssh.address} ${node.ssh.hostPublicKey}`).join('\n') + '\n');

  const configFile = path.join(dir, 'ansible.cfg');
  fs.writeFileSync(
    configFile,
    [
      '# Written by bootstrap-bench.js. Everything Ansible writes goes below this directory.',
      '[defaults]',
      `home = ${path.join(dir, 'home')}`,
      `local_tmp = ${path.join(dir, 'tmp-local')}`,
      // The nodes share this machine's file system, so their temporary directory is here as well.
      `remote_tmp = ${path.join(dir, 'tmp-remote')}`,
      `callback_plugins = ${CALLBACK_PLUGINS}`,
      `callbacks_enabled = ${TIMING_CALLBACK}`,
      `interpreter_python = ${NODE_PYTHON}`,
      'host_key_checking = True',
      'retry_files_enabled = False',
      '',
      '[ssh_connection]',
      `control_path_dir = ${controlDir}`,
      // ssh_args keeps Ansible's default (-C -o ControlMaster=auto -o ControlPersist=60s); these are added.
      `ssh_common_args = -o UserKnownHostsFile=${knownHosts} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes`,
      '',
      '[persistent_connection]',
      `control_path_dir = ${path.join(dir, 'persistent')}`,
      '',
    ].join('\n'),
  );

  const hosts: Record<string, unknown> = {};
  for (const node of nodes) {
    const spec = inventory.nodes.find((candidate) => candidate.name === node.name) as NodeSpec;
    const files = saved.get(node.name)!;
    hosts[node.name] = {
      ansible_host: node.ssh.address,
      agent_dirs: files.dirs,
      agent_binary: node.paths.binary,
      agent_files: files.files,
      agent_control_script_src: files.controlScriptSrc,
      agent_control_script: node.paths.controlScript,
      agent_host: spec.agent.host,
      agent_port: spec.agent.port,
    };
  }
  const hostsFile = path.join(dir, 'hosts.yml');
  const vars = { ansible_user: 'root', ansible_ssh_private_key_file: clientKeyFile, agent_executable: agentExecutable };
  fs.writeFileSync(hostsFile, '# Written by bootstrap-bench.js.\n' + YAML.stringify({ nodes: { hosts, vars } }));
  return { dir, configFile, hostsFile, controlDir };
}

/** Runs ansible-playbook once, timed from spawn to exit, with its CPU time from GNU time when that is used. */
async function runPlaybook(setup: AnsibleSetup, forks: number, logFile: string, resourceUsage: ResourceUsageMode): Promise<AnsibleRun> {
  const timingFile = `${logFile}.timing.json`;
  const usageFile = `${logFile}.usage`;
  const useTime = resourceUsage === 'time';
  const playbookArgs = ['-i', setup.hostsFile, '--forks', String(forks), PLAYBOOK];
  const command = useTime ? TIME_BINARY : 'ansible-playbook';
  const args = useTime ? ['-f', '%U %S', '-o', usageFile, 'ansible-playbook', ...playbookArgs] : playbookArgs;
  const env = { ...process.env, ANSIBLE_CONFIG: setup.configFile, ANSIBLE_HOME: path.join(setup.dir, 'home'), KUBETRUST_BENCH_TIMING: timingFile, PYTHONDONTWRITEBYTECODE: '1' };

  const log = fs.openSync(logFile, 'w');
  const start = performance.now();
  const child = track(spawn(command, args, { stdio: ['ignore', log, log], detached: useTime, env, cwd: setup.dir }));
  fs.closeSync(log);
  const timeout = setTimeout(() => signalChild(child, 'SIGTERM', useTime), ANSIBLE_TIMEOUT_MS);
  const code = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (exitCode) => resolve(exitCode ?? 1));
  });
  const wallS = (performance.now() - start) / 1000;
  clearTimeout(timeout);

  let timing: TimingDocument;
  try {
    timing = JSON.parse(fs.readFileSync(timingFile, 'utf8')) as TimingDocument;
  } catch {
    throw new BenchError(`ansible-playbook exited with ${code} and its timing callback wrote no ${timingFile}; see ${logFile}`);
  }
  let cpuS: number | undefined;
  if (useTime) {
    const [user, system] = (fs.readFileSync(usageFile, 'utf8').trim().split('\n').pop() ?? '').split(' ').map(Number);
    if (user !== undefined && system !== undefined && Number.isFinite(user + system)) cpuS = user + system;
  }
  return { code, wallS, cpuS, timing };
}

/** Checks the recap of a playbook run: no failure anywhere, and every host changed (run 1) or none did (run 2). */
function checkPlaybook(run: AnsibleRun, nodes: readonly BenchNode[], expectChanges: boolean, label: string, logFile: string): void {
  if (run.code !== 0) throw new BenchError(`${label}: ansible-playbook exited with ${run.code}; see ${logFile}`);
  for (const node of nodes) {
    const stats = run.timing.stats[node.name];
    if (stats === undefined) throw new BenchError(`${label}: the play recap has no host ${node.name}; see ${logFile}`);
    if (stats.failures > 0 || stats.unreachable > 0) throw new BenchError(`${label}: ${node.name} failed ${stats.failures} and was unreachable ${stats.unreachable} time(s); see ${logFile}`);
    if (expectChanges ? stats.changed === 0 : stats.changed > 0) {
      throw new BenchError(`${label}: ${node.name} reported ${stats.changed} changed task(s), expected ${expectChanges ? 'some' : 'none'}; see ${logFile}`);
    }
  }
}

function taskBreakdown(timing: TimingDocument): AnsibleResult['tasks'] {
  return timing.tasks.map((task, index) => {
    const key = PLAYBOOK_TASKS[task.name];
    if (key === undefined) throw new BenchError(`the playbook ran a task "${task.name}" that the benchmark does not know; update PLAYBOOK_TASKS`);
    const next = timing.tasks[index + 1]?.start ?? timing.end;
    const hostMs = Object.values(task.hosts).map((host) => (host.end - task.start) * 1000);
    return { key, wallMs: (next - task.start) * 1000, hosts: { median: median(hostMs), max: hostMs.length > 0 ? Math.max(...hostMs) : undefined } };
  });
}

/** Ends the SSH control masters that Ansible left (ControlPersist), so that no run reuses another's connections. */
async function closeControlMasters(controlDir: string): Promise<void> {
  if (!fs.existsSync(controlDir)) return;
  for (const entry of fs.readdirSync(controlDir)) {
    // With -S and -O the client talks only to the master's socket; the host name is not used.
    await runCommand('ssh', ['-S', path.join(controlDir, entry), '-O', 'exit', 'control-master'], 30_000);
  }
}

/** Modification times of ~/.ansible and ~/.ssh and everything below them, by path; the Ansible runs must change none. */
function homeSnapshot(): Map<string, number> {
  const snapshot = new Map<string, number>();
  const walk = (file: string): void => {
    let stat: fs.Stats;
    try {
      stat = fs.lstatSync(file);
    } catch {
      return;
    }
    snapshot.set(file, stat.mtimeMs);
    if (stat.isDirectory()) for (const entry of fs.readdirSync(file)) walk(path.join(file, entry));
  };
  for (const name of ['.ansible', '.ssh']) walk(path.join(os.homedir(), name));
  return snapshot;
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

function checkPrerequisites(): void {
  if (process.getuid?.() !== 0) throw new BenchError('run the benchmark as root: it creates network namespaces and starts sshd');
  for (const [binary, fix] of [
    ['ip', 'apt-get install iproute2'],
    ['ssh', 'apt-get install openssh-client'],
    ['ssh-keygen', 'apt-get install openssh-client'],
    ['ansible-playbook', 'apt-get install ansible'],
  ] as const) {
    if (which(binary) === undefined) throw new BenchError(`${binary} is not installed; ${fix}`);
  }
  if (!fs.existsSync('/usr/sbin/sshd')) throw new BenchError('/usr/sbin/sshd is not installed; apt-get install openssh-server');
  if (!fs.existsSync(NODE_PYTHON)) throw new BenchError(`${NODE_PYTHON}, which Ansible's modules run with on the nodes, is missing; apt-get install python3`);
}

async function runBench(options: BenchOptions, workdir: string): Promise<BenchResult> {
  checkPrerequisites();
  const controlDir = path.join(workdir, 'cp');
  if (controlDir.length > MAX_CONTROL_DIR_LENGTH) {
    throw new BenchError(`the SSH control socket directory ${controlDir} is longer than ${MAX_CONTROL_DIR_LENGTH} characters, too long for a socket path; pass a shorter --workdir`);
  }
  const homeBefore = homeSnapshot();
  const logsDir = path.join(workdir, 'logs');
  fs.mkdirSync(logsDir, { recursive: true });

  progress('building the agent executable (not timed)');
  const artifactDir = path.join(workdir, 'artifact');
  const built = await runNode(BUILD_SCRIPT, ['--out', artifactDir]);
  if (built.code !== 0) throw new BenchError(`build-artifact.js exited with ${built.code}: ${built.stderr.trim()}`);
  const executable = fs.readdirSync(artifactDir).find((name) => name.startsWith('kubetrust-agent-linux-') && !name.endsWith('.sha256'));
  if (executable === undefined) throw new BenchError(`build-artifact.js wrote no executable to ${artifactDir}`);
  const agentExecutable = path.join(artifactDir, executable);
  const agentBytes = fs.readFileSync(agentExecutable);
  // The controller uploads the executable compressed with gzip level 1; this is the size it sends.
  const agentGzipMiB = gzipSync(agentBytes, { level: 1 }).length / 2 ** 20;
  const agentMiB = agentBytes.length / 2 ** 20;

  progress(`starting ${options.nodes} sshd nodes in network namespaces on one bridge`);
  const sshNodes = await SshNodes.start({ count: options.nodes, bridged: true });
  const nodes = benchNodes(sshNodes, options.nodes);
  const exitHook = (): void => killAgentsSync(nodes);
  process.on('exit', exitHook);
  try {
    const knownHostsFile = path.join(workdir, 'admin', 'known_hosts');
    fs.mkdirSync(path.dirname(knownHostsFile), { recursive: true });
    const inventoryFile = path.join(workdir, 'cluster.yaml');
    fs.writeFileSync(inventoryFile, inventoryYaml(nodes, sshNodes.clientKeyFile, knownHostsFile));
    const inventory = loadInventory(inventoryFile).inventory;
    const stateDir = path.join(workdir, 'state');

    progress('controller init (not timed)');
    const initLog = path.join(logsDir, 'init.log');
    const init = await runControllerMeasured(['init', '--inventory', inventoryFile, '--state-dir', stateDir], initLog, { resourceUsage: 'off' });
    if (init.code !== 0) throw new BenchError(`controller init exited with ${init.code}; see ${initLog}`);

    const common = ['--inventory', inventoryFile, '--state-dir', stateDir, '--agent-dir', artifactDir, '--max-parallel', String(options.maxParallel), '--output', 'json'];
    const kubetrustBusy = await busyPercent();
    progress(`controller bootstrap, run 1 (timed; machine busy before it: ${kubetrustBusy} %)`);
    const first = await timedBootstrap([...common, '--accept-new'], path.join(logsDir, 'bootstrap-1.log'), options.resourceUsage, 'install', 'bootstrap run 1');
    progress('controller bootstrap, run 2 (timed; nothing may change)');
    const second = await timedBootstrap(common, path.join(logsDir, 'bootstrap-2.log'), options.resourceUsage, 'unchanged', 'bootstrap run 2');
    const kubetrust: KubetrustResult = {
      first: first.run,
      second: second.run,
      firstSteps: stepSpreads(first.nodes),
      secondSteps: stepSpreads(second.nodes),
      busyBeforePercent: kubetrustBusy,
    };

    progress('copying the agent files aside (not timed)');
    const saved = new Map(nodes.map((node) => [node.name, saveAgentFiles(node, path.join(workdir, 'ansible', 'files', node.name))]));
    const setup = writeAnsibleSetup(path.join(workdir, 'ansible'), controlDir, nodes, inventory, saved, sshNodes.clientKeyFile, agentExecutable);

    const ansible: AnsibleResult[] = [];
    for (const forks of options.forks) {
      progress(`stopping the agents and removing their files (not timed)`);
      for (const node of nodes) await removeAgent(node);

      const busy = await busyPercent();
      progress(`ansible-playbook with forks ${forks}, run 1 (timed; machine busy before it: ${busy} %)`);
      const firstLog = path.join(logsDir, `ansible-forks${forks}-1.log`);
      const firstRun = await runPlaybook(setup, forks, firstLog, options.resourceUsage);
      await closeControlMasters(controlDir);
      checkPlaybook(firstRun, nodes, true, `Ansible forks ${forks} run 1`, firstLog);

      progress('checking over mutual TLS that every agent Ansible started answers (not timed)');
      await timedBootstrap([...common, '--dry-run'], path.join(logsDir, `ansible-forks${forks}-check.log`), 'off', 'unchanged', `bootstrap --dry-run after Ansible forks ${forks}`);

      progress(`ansible-playbook with forks ${forks}, run 2 (timed; nothing may change)`);
      const secondLog = path.join(logsDir, `ansible-forks${forks}-2.log`);
      const secondRun = await runPlaybook(setup, forks, secondLog, options.resourceUsage);
      await closeControlMasters(controlDir);
      checkPlaybook(secondRun, nodes, false, `Ansible forks ${forks} run 2`, secondLog);
      ansible.push({ forks, first: firstRun, second: secondRun, tasks: taskBreakdown(firstRun.timing), busyBeforePercent: busy });
    }

    const homeAfter = homeSnapshot();
    const touched = [...homeAfter].filter(([file, mtime]) => homeBefore.get(file) !== mtime).map(([file]) => file);
    if (touched.length > 0) throw new BenchError(`the Ansible runs wrote below the home directory: ${touched.join(', ')}; every path in ${path.join(workdir, 'ansible', 'ansible.cfg')} must point into the work directory`);
    return { nodes: nodes.length, agentMiB, agentGzipMiB, kubetrust, ansible };
  } finally {
    progress('stopping the agents and the sshd nodes');
    await closeControlMasters(controlDir).catch(() => undefined);
    for (const node of nodes) await removeAgent(node).catch((error: Error) => progress(`could not stop the agent of ${node.name}: ${error.message}`));
    process.removeListener('exit', exitHook);
    await sshNodes.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// The report.

function ms(value: number | undefined): string {
  return value === undefined ? 'n/a' : value.toFixed(0);
}

function spreadFields(prefix: string, spreads: Readonly<Record<string, Spread>>): string[] {
  return Object.entries(spreads).flatMap(([key, spread]) => [`${prefix}${key}_ms_median=${ms(spread.median)}`, `${prefix}${key}_ms_max=${ms(spread.max)}`]);
}

function report(options: BenchOptions, result: BenchResult): string {
  const { kubetrust } = result;
  const workers = result.nodes - CONTROL_PLANE_NODES;
  const lines = [
    `kubetrust bootstrap beside Ansible: ${result.nodes} nodes (3 etcd, 3 masters, ${workers} workers), agent executable ${result.agentMiB.toFixed(1)} MiB, ${result.agentGzipMiB.toFixed(1)} MiB with gzip level 1`,
    `  ${'kubetrust bootstrap, run 1 (install)'.padEnd(40)} ${seconds(kubetrust.first.wallS).padStart(8)} s   ${options.maxParallel} nodes at a time; controller CPU ${seconds(kubetrust.first.cpuS)} s`,
    `  ${'kubetrust bootstrap, run 2 (no change)'.padEnd(40)} ${seconds(kubetrust.second.wallS).padStart(8)} s   controller CPU ${seconds(kubetrust.second.cpuS)} s`,
    `    run 1 per node, median / max ms: ${BOOTSTRAP_STEPS.map((step) => `${step} ${ms(kubetrust.firstSteps[step].median)} / ${ms(kubetrust.firstSteps[step].max)}`).join(', ')}`,
  ];
  for (const run of result.ansible) {
    lines.push(
      `  ${`Ansible forks ${run.forks}, run 1 (install)`.padEnd(40)} ${seconds(run.first.wallS).padStart(8)} s   ${(run.first.wallS / kubetrust.first.wallS).toFixed(1)} x kubetrust; CPU ${seconds(run.first.cpuS)} s`,
      `  ${`Ansible forks ${run.forks}, run 2 (no change)`.padEnd(40)} ${seconds(run.second.wallS).padStart(8)} s   ${(run.second.wallS / kubetrust.second.wallS).toFixed(1)} x kubetrust; CPU ${seconds(run.second.cpuS)} s`,
      `    run 1 per task, wall s (per host median / max ms): ${run.tasks.map((task) => `${task.key} ${seconds(task.wallMs / 1000)} (${ms(task.hosts.median)} / ${ms(task.hosts.max)})`).join(', ')}`,
    );
  }
  const kubetrustFields = [
    `nodes=${result.nodes}`,
    `max_parallel=${options.maxParallel}`,
    `agent_mib=${result.agentMiB.toFixed(1)}`,
    `upload_gzip_mib=${result.agentGzipMiB.toFixed(1)}`,
    `wall_s=${seconds(kubetrust.first.wallS)}`,
    `rerun_s=${seconds(kubetrust.second.wallS)}`,
    `controller_cpu_s=${seconds(kubetrust.first.cpuS)}`,
    `rerun_controller_cpu_s=${seconds(kubetrust.second.cpuS)}`,
    ...spreadFields('', kubetrust.firstSteps),
    ...spreadFields('rerun_', { connect: kubetrust.secondSteps.connect, detect: kubetrust.secondSteps.detect, confirm: kubetrust.secondSteps.confirm }),
    `busy_before_pct=${kubetrust.busyBeforePercent}`,
  ];
  lines.push(`RESULT kubetrust-bootstrap ${kubetrustFields.join(' ')}`);
  for (const run of result.ansible) {
    const taskFields = run.tasks.flatMap((task) => [`${task.key}_s=${seconds(task.wallMs / 1000)}`, `${task.key}_host_ms_median=${ms(task.hosts.median)}`, `${task.key}_host_ms_max=${ms(task.hosts.max)}`]);
    const fields = [
      `nodes=${result.nodes}`,
      `forks=${run.forks}`,
      'transfer=uncompressed',
      `first_wall_s=${seconds(run.first.wallS)}`,
      `first_cpu_s=${seconds(run.first.cpuS)}`,
      `second_wall_s=${seconds(run.second.wallS)}`,
      `second_cpu_s=${seconds(run.second.cpuS)}`,
      ...taskFields,
      `busy_before_pct=${run.busyBeforePercent}`,
    ];
    lines.push(`RESULT ansible-bootstrap ${fields.join(' ')}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Command line.

const USAGE = `usage: node test/dist/bench/bootstrap-bench.js [options]
  --nodes N                   sshd nodes: 3 etcd nodes, 3 masters and N-6 workers, ${CONTROL_PLANE_NODES + 1}-${MAX_NODES} (default 20)
  --forks LIST                Ansible fork counts, separated by commas, each run on freshly cleaned nodes
                              (default ${DEFAULT_FORKS.join(',')})
  --max-parallel N            passed to controller bootstrap: nodes handled at the same time
                              (default ${DEFAULT_MAX_PARALLEL}, the controller's own default)
  --workdir DIR               empty or new scratch directory (default: a new directory below ${path.join(os.tmpdir(), 'kubetrust-bench')})
  --keep                      keep the scratch directory after a successful run (it is always kept after a failure)
  --resource-usage MODE       how to measure the CPU time of the controller and of ansible-playbook: time (GNU
                              ${TIME_BINARY}), proc (controller only, sampled from /proc), off, or auto (time when
                              installed, otherwise proc; the default)
Needs root, iproute2, openssh-server, openssh-client and ansible-core.
`;

function parseOptions(argv: readonly string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      nodes: { type: 'string', default: '20' },
      forks: { type: 'string', default: DEFAULT_FORKS.join(',') },
      'max-parallel': { type: 'string', default: String(DEFAULT_MAX_PARALLEL) },
      workdir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'resource-usage': { type: 'string', default: 'auto' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return undefined;
  const nodes = positiveInteger(values.nodes, '--nodes', MAX_NODES);
  if (nodes <= CONTROL_PLANE_NODES) throw new BenchError(`--nodes: "${values.nodes}" is invalid; pass at least ${CONTROL_PLANE_NODES + 1} (3 etcd nodes, 3 masters and one worker)`);
  const forks = values.forks.split(',').map((value) => positiveInteger(value.trim(), '--forks', 500));
  return {
    nodes,
    forks,
    maxParallel: positiveInteger(values['max-parallel'], '--max-parallel', 1000),
    workdir: values.workdir,
    keep: values.keep,
    resourceUsage: resolveResourceUsage(values['resource-usage']),
  };
}

function main(): Promise<number> {
  return runBenchMain<BenchOptions, BenchResult>({ usage: USAGE, parse: parseOptions, run: runBench, report });
}

if (require.main === module) {
  void main().then((code) => {
    process.exitCode = process.exitCode ?? code;
  });
}
