/**
 * The single-file agent executable as a node would run it: built by the build script, copied to a
 * directory without node_modules and run with a minimal PATH. It enrolls on the "node" with a key
 * it generates there, and then serves the controller over mutual TLS on 127.0.44.11. The agent is
 * started and stopped by the control script that hosts without systemd use.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AGENT_VERSION } from '@kubetrust/agent';
import { AGENT_MACHINES, AgentConnection, agentInstallPaths, findAgentArtifact, initState, renderControlScript, renderSystemdUnit, signAgentCsr, type AgentArtifact } from '@kubetrust/controller';
import { parseInventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { inspectCertificate, parseCsr, publicKeySha256 } from '@kubetrust/shared/dist/pki';
import { REPO_ROOT, exitCodeOf, runNode, waitForPort, which, type CommandResult } from '../harness/local-cluster';

const ADDRESS = '127.0.44.11';
const PORT = 7443;
const CLUSTER = 'pkg';
const NODE = 'node-p';
const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: ${CLUSTER}}
spec:
  apiServer: {endpoint: "https://127.0.44.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: ${NODE}, addresses: [${ADDRESS}], roles: [etcd, master, worker]}
`;
const BUILD_SCRIPT = path.join(REPO_ROOT, 'agent', 'packaging', 'build-artifact.js');
/** The PATH of the node: system directories only, so nothing from this repository or its Node.js is found. */
const NODE_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

function machineOfThisHost(): string {
  const machine = Object.entries(AGENT_MACHINES).find(([, arch]) => arch === process.arch)?.[0];
  if (machine === undefined) throw new Error(`the agent executable cannot be built on ${process.arch}`);
  return machine;
}

/** Runs a program in `cwd` with only NODE_PATH in its environment; never rejects on a non-zero exit. */
function runOnNode(file: string, args: readonly string[], cwd: string): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(file, [...args], { cwd, env: { PATH: NODE_PATH }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: exitCodeOf(error), stdout, stderr });
    });
  });
}

/** Reports whether process `pid` runs. A zombie counts as stopped, because only its parent can reap it. */
function isRunning(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] !== 'Z';
  } catch {
    return false;
  }
}

function mode(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

describe('single-file agent executable', function () {
  this.timeout(120_000);
  let workdir: string;
  let artifact: AgentArtifact;
  let prefix: string;
  let binary: string;
  let stateDir: string;
  let startedPid: number | undefined;
  const inventory = parseInventory(INVENTORY, 'pkg.yaml').inventory;

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-artifact-'));
    const built = await runNode(BUILD_SCRIPT, ['--out', path.join(workdir, 'artifact')]);
    assert.equal(built.code, 0, `build-artifact.js failed: ${built.stderr}`);
    artifact = await findAgentArtifact(machineOfThisHost(), { dir: path.join(workdir, 'artifact') });

    // The node: a prefix directory with the executable at its production path, and no Node.js.
    prefix = path.join(workdir, 'node');
    binary = agentInstallPaths(prefix).binary;
    fs.mkdirSync(path.dirname(binary), { recursive: true });
    fs.copyFileSync(artifact.path, binary);
    fs.chmodSync(binary, 0o755);
    stateDir = path.join(workdir, 'controller-state');
    await initState(inventory, stateDir, silentLogger());
  });

  after(() => {
    // Only the agent that this suite started, by its PID, and only when the control script failed to stop it.
    if (startedPid !== undefined && isRunning(startedPid)) process.kill(startedPid, 'SIGKILL');
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('is found with its digest and version', () => {
    assert.equal(artifact.bytes, fs.statSync(artifact.path).size);
    assert.equal(artifact.version, AGENT_VERSION);
    assert.equal(path.basename(artifact.path), `kubetrust-agent-linux-${process.arch}`);
    const recorded = fs.readFileSync(`${artifact.path}.sha256`, 'utf8');
    assert.equal(recorded, `${artifact.sha256}  ${path.basename(artifact.path)}\n`);
  });

  it('rejects machine types that are not built', async () => {
    const dir = path.join(workdir, 'artifact');
    const other = machineOfThisHost() === 'x86_64' ? 'aarch64' : 'x86_64';
    await assert.rejects(findAgentArtifact(other, { dir }), /is not built .*run `npm run package:agent` on a/);
    await assert.rejects(findAgentArtifact('armv7l', { dir }), /no agent executable exists for machine type "armv7l".*x86_64 and aarch64 only/);
    await assert.rejects(findAgentArtifact(machineOfThisHost(), { dir: path.join(workdir, 'nothing') }), /not built: .*manifest\.json is missing; run `npm run package:agent`/);
  });

  it('runs the V8 flags before the agent code', () => {
    // The bundle is stored as plain text in the executable's SEA blob.
    const text = fs.readFileSync(binary).toString('latin1');
    const entry = text.indexOf('// agent/dist/single-executable.js');
    assert.ok(entry >= 0, 'the entry module is not in the executable');
    const applyAt = text.indexOf('applyRuntimeFlags)()', entry);
    // esbuild names the loader of each bundled module require_<name>, with a number when names repeat.
    const cliAt = entry + text.slice(entry).search(/require_cli\d*\(\)/);
    assert.ok(applyAt > entry, 'the entry does not call applyRuntimeFlags()');
    assert.ok(cliAt > applyAt, 'the entry loads the CLI before it applies the runtime flags');
  });

  it('prints its version without node_modules or Node.js on PATH', async () => {
    const result = await runOnNode(binary, ['--version'], prefix);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), AGENT_VERSION);
    assert.equal(result.stderr, '');
  });

  it('enrolls with a key born on the node and serves over mutual TLS', async () => {
    const paths = agentInstallPaths(prefix);

    const request = await runOnNode(binary, ['enroll-request', '--config-dir', paths.configDir, '--node', NODE, '--cluster', CLUSTER, '--host', ADDRESS], prefix);
    assert.equal(request.code, 0, request.stderr);
    assert.doesNotMatch(request.stdout + request.stderr, /PRIVATE KEY/);
    const csr = parseCsr(request.stdout);
    assert.equal(csr.commonName, NODE);
    assert.deepEqual(csr.ipAddresses, [ADDRESS]);
    assert.deepEqual(csr.dnsNames, [NODE]);
    assert.deepEqual(csr.uris, [`kubetrust://${CLUSTER}/nodes/${NODE}`]);
    const pendingKey = path.join(paths.configDir, 'agent.key.pending');
    assert.equal(mode(pendingKey), 0o600);
    assert.equal(mode(paths.configDir), 0o700);

    const again = await runOnNode(binary, ['enroll-request', '--config-dir', paths.configDir, '--node', NODE, '--cluster', CLUSTER, '--host', ADDRESS], prefix);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(publicKeySha256(parseCsr(again.stdout).publicKey), publicKeySha256(csr.publicKey), 'a second request generated a new key');

    const signed = await signAgentCsr(inventory, stateDir, NODE, request.stdout);
    const transfer = path.join(prefix, 'tmp');
    fs.mkdirSync(transfer);
    fs.writeFileSync(path.join(transfer, 'agent.crt'), signed.certificatePem);
    fs.writeFileSync(path.join(transfer, 'management-ca.crt'), signed.managementCaPem);
    const installRoot = path.join(prefix, 'root');
    const install = await runOnNode(
      binary,
      [
        'enroll-install',
        '--config-dir', paths.configDir,
        '--certificate', 'tmp/agent.crt',
        '--management-ca', 'tmp/management-ca.crt',
        '--controller-identity', signed.controllerIdentity,
        '--listen', signed.listen,
        '--install-root', installRoot,
        '--state-dir', paths.stateDir,
      ],
      prefix,
    );
    assert.equal(install.code, 0, install.stderr);
    assert.equal(mode(paths.configFile), 0o600);
    assert.ok(!fs.existsSync(pendingKey), 'the pending key is still there after the install');
    const config = fs.readFileSync(paths.configFile, 'utf8');
    assert.match(config, new RegExp(`listen: ${ADDRESS.replace(/\./g, '\\.')}:${PORT}`));
    const keyFile = /keyFile: (\S+)/.exec(config)?.[1];
    assert.ok(keyFile !== undefined, `no tls.keyFile in ${config}`);
    assert.equal(mode(path.join(paths.configDir, keyFile)), 0o600);

    const script = path.join(workdir, 'kubetrust-agent-ctl');
    fs.writeFileSync(script, renderControlScript(paths), { mode: 0o755 });
    const start = await runOnNode(script, ['start'], prefix);
    assert.equal(start.code, 0, `${start.stdout}${start.stderr}`);
    startedPid = Number(fs.readFileSync(paths.pidFile, 'utf8'));
    assert.ok(isRunning(startedPid), `agent ${startedPid} is not running`);
    await waitForPort(ADDRESS, PORT, 20_000);

    const credentials = {
      managementCaPem: fs.readFileSync(path.join(stateDir, 'management', 'ca.crt'), 'utf8'),
      certificatePem: fs.readFileSync(path.join(stateDir, 'management', 'controller.crt'), 'utf8'),
      privateKeyPem: fs.readFileSync(path.join(stateDir, 'management', 'controller.key'), 'utf8'),
    };
    const connection = new AgentConnection(CLUSTER, inventory.nodes[0]!, credentials);
    try {
      const state = await connection.getState({ files: [] });
      assert.equal(state.node_name, NODE);
      assert.equal(state.agent_version, AGENT_VERSION);
      // Key generation runs on the node inside the executable.
      const keys = await connection.prepareKeys({ keys: [{ key_id: 'probe', algorithm: 'ECDSA-P256', common_name: 'probe', organizations: [], dns_names: ['probe'], ip_addresses: [] }] });
      assert.equal(parseCsr(keys.keys[0]!.csr_pem).commonName, 'probe');
      const applied = await connection.apply({ change_id: 'artifact-1', files: [{ path: '/etc/kubernetes/probe.txt', mode: 0o644, uid: process.getuid!(), gid: process.getgid!(), data: Buffer.from('probe\n') }], restart_services: [] });
      assert.deepEqual(applied.changed_paths, ['/etc/kubernetes/probe.txt']);
      assert.equal(fs.readFileSync(path.join(installRoot, 'etc/kubernetes/probe.txt'), 'utf8'), 'probe\n');
    } finally {
      connection.close();
    }

    const status = await runOnNode(script, ['status'], prefix);
    assert.equal(status.code, 0, status.stdout);
    const stop = await runOnNode(script, ['stop'], prefix);
    assert.equal(stop.code, 0, `${stop.stdout}${stop.stderr}`);
    assert.ok(!isRunning(startedPid), `agent ${startedPid} still runs after stop`);
    assert.ok(!fs.existsSync(paths.pidFile), 'the PID file is still there after stop');
    const stopped = await runOnNode(script, ['status'], prefix);
    assert.equal(stopped.code, 3, stopped.stdout);

    const log = fs.readFileSync(paths.logFile, 'utf8');
    assert.match(log, /agent stopping/);
    assert.doesNotMatch(log, /PRIVATE KEY/);
    const certificate = inspectCertificate(fs.readFileSync(path.join(transfer, 'agent.crt')));
    assert.deepEqual(certificate.uris, [`kubetrust://${CLUSTER}/nodes/${NODE}`]);
  });

  it('has a systemd unit that systemd-analyze accepts', async function () {
    const analyze = which('systemd-analyze');
    if (analyze === undefined) this.skip();
    const paths = agentInstallPaths(prefix);
    const unit = renderSystemdUnit(paths);
    assert.match(unit, new RegExp(`^ExecStart=${binary.replace(/[.+]/g, '\\$&')} --config ${paths.configFile.replace(/[.+]/g, '\\$&')}$`, 'm'));
    assert.match(unit, /^Restart=on-failure$/m);
    const unitFile = path.join(workdir, 'kubetrust-agent.service');
    fs.writeFileSync(unitFile, unit);
    const result = await new Promise<CommandResult>((resolve) => {
      execFile(analyze!, ['verify', '--man=no', unitFile], { timeout: 60_000 }, (error, stdout, stderr) => resolve({ code: exitCodeOf(error), stdout, stderr }));
    });
    // Only lines about this unit count. Without a running systemd, verify also reports the
    // dependencies (network-online.target) that it cannot load.
    const problems = result.stderr.split('\n').filter((line) => line.includes('kubetrust-agent.service') && !/network-online|Failed to (create|connect)/.test(line));
    assert.deepEqual(problems, []);
  });
});
