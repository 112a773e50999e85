/**
 * `controller bootstrap` against real OpenSSH servers, one per simulated node, each in a network
 * namespace of its own on one bridge (`test/src/harness/ssh-nodes.ts`). Each node's agent files go
 * below its own `agent.prefix`. After the bootstrap, `controller distribute` pushes the cluster's
 * certificates through the agents just installed and a real three-member etcd runs on them.
 * Needs root, iproute2, nftables, openssh-server, sudo and etcd; `.ci/run` installs them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'mocha';
import * as YAML from 'yaml';
import { agentInstallPaths } from '@kubetrust/controller/dist/agent-install';
import { flagsForNode, itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { loadInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { dropAgentPort, exec, parseBootstrapReport, sshNodesInventory, useSystemdStandIn, type Exec, type NodeJson } from '../harness/bootstrap-support';
import { ETCD_PEER_PORT } from '../harness/etcd-service';
import { REPO_ROOT, runController, runNode, testServiceHooks, which, type CommandResult } from '../harness/local-cluster';
import { NO_SUDO_USER, SUDO_USER, SshNodes, ensureSudoUser, type SshNode } from '../harness/ssh-nodes';

const BUILD_SCRIPT = path.join(REPO_ROOT, 'agent', 'packaging', 'build-artifact.js');
/** The five nodes of the cluster, then the nodes the failure tests use. */
const CLUSTER = ['etcd-1', 'etcd-2', 'etcd-3', 'master-1', 'worker-1'] as const;
const FAILING = ['worker-2', 'worker-3', 'worker-4', 'worker-5'] as const;
/** Nodes for the systemd and sudo tests. */
const OTHERS = ['worker-6', 'worker-7'] as const;
const NAMES = [...CLUSTER, ...FAILING, ...OTHERS];
const ROLES: Record<string, string> = { 'etcd-1': 'etcd', 'etcd-2': 'etcd', 'etcd-3': 'etcd', 'master-1': 'master' };

describe('controller bootstrap on namespaced sshd nodes', function () {
  this.timeout(300_000);

  let nodes: SshNodes;
  let workdir: string;
  let stateDir: string;
  let artifactDir: string;
  let knownHosts: string;
  let inventoryFile: string;
  let inventory: Inventory;
  /** Everything the controller printed in this file's runs, to check that no private key shows. */
  const printed: string[] = [];

  function sshNode(name: string): SshNode {
    return nodes.node(NAMES.indexOf(name as (typeof NAMES)[number]));
  }

  /** Returns the inventory text; `nodeSsh` adds SSH settings to single nodes for the failure tests. */
  function inventoryText(nodeSsh: Record<string, string> = {}): string {
    const entries = NAMES.map((name) => ({ name, node: sshNode(name), roles: ROLES[name] ?? 'worker', ...(nodeSsh[name] !== undefined ? { ssh: nodeSsh[name] } : {}) }));
    return sshNodesInventory('boot', nodes, sshNode('master-1'), knownHosts, entries);
  }

  function writeInventory(nodeSsh: Record<string, string> = {}): string {
    fs.writeFileSync(inventoryFile, inventoryText(nodeSsh));
    inventory = loadInventory(inventoryFile).inventory;
    return inventoryFile;
  }

  async function bootstrap(names: readonly string[], extra: readonly string[] = []): Promise<{ result: CommandResult; nodes: Map<string, NodeJson> }> {
    const result = await runController([
      'bootstrap',
      '--inventory', inventoryFile,
      '--state-dir', stateDir,
      '--agent-dir', artifactDir,
      '--nodes', names.join(','),
      '--output', 'json',
      '--log-level', 'debug',
      ...extra,
    ]);
    printed.push(result.stdout, result.stderr);
    return { result, nodes: parseBootstrapReport(result) };
  }

  function paths(name: string): ReturnType<typeof agentInstallPaths> {
    return agentInstallPaths(sshNode(name).prefix);
  }

  /** Reads the private key of a node's installed agent identity from the node's own files. */
  function agentKey(name: string): string {
    const config = YAML.parse(fs.readFileSync(paths(name).configFile, 'utf8')) as { tls: { keyFile: string } };
    return fs.readFileSync(path.resolve(paths(name).configDir, config.tls.keyFile), 'utf8');
  }

  function agentCertificate(name: string): string {
    const config = YAML.parse(fs.readFileSync(paths(name).configFile, 'utf8')) as { tls: { certFile: string } };
    return fs.readFileSync(path.resolve(paths(name).configDir, config.tls.certFile), 'utf8');
  }

  /** Runs the agent's control script inside the node's network namespace, as the node's root would. */
  async function agentCtl(name: string, verb: 'restart' | 'stop'): Promise<Exec> {
    return exec('ip', ['netns', 'exec', sshNode(name).namespace, paths(name).controlScript, verb]);
  }

  before(async () => {
    assert.ok(which('etcd'), 'etcd is not installed: `.ci/run` installs the Debian package etcd-server');
    assert.ok(which('nft'), 'nft is not installed: `.ci/run` installs the Debian package nftables');
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-bootstrap-'));
    artifactDir = path.join(workdir, 'artifact');
    const built = await runNode(BUILD_SCRIPT, ['--out', artifactDir]);
    assert.equal(built.code, 0, `build-artifact.js failed: ${built.stderr}`);
    nodes = await SshNodes.start({ count: NAMES.length, bridged: true });
    stateDir = path.join(workdir, 'state');
    knownHosts = path.join(workdir, 'admin', 'known_hosts');
    fs.mkdirSync(path.dirname(knownHosts), { recursive: true });
    inventoryFile = path.join(workdir, 'cluster.yaml');
    writeInventory();
    const init = await runController(['init', '--inventory', inventoryFile, '--state-dir', stateDir]);
    assert.equal(init.code, 0, init.stderr);
  });

  after(async () => {
    if (nodes !== undefined) {
      for (const name of NAMES) {
        const node = sshNode(name);
        if (fs.existsSync(paths(name).controlScript)) await agentCtl(name, 'stop');
        const pidFile = path.join(node.prefix, 'etcd.pid');
        if (fs.existsSync(pidFile)) await runNode(path.join(REPO_ROOT, 'test', 'dist', 'harness', 'etcd-service.js'), ['stop', path.join(node.prefix, 'etcd.json')]);
      }
      await nodes.stop();
    }
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('refuses nodes whose host key is not known without --accept-new, and installs nothing', async () => {
    const { result, nodes: report } = await bootstrap(CLUSTER);
    assert.equal(result.code, 1, result.stdout);
    for (const name of CLUSTER) {
      const node = report.get(name)!;
      assert.equal(node.status, 'failed', name);
      assert.equal(node.failedStep, 'connect', `${name}: ${node.error ?? ''}`);
      assert.match(node.error ?? '', new RegExp(`^${name}: .*is not in .*known_hosts.*--accept-new`));
      assert.equal(fs.existsSync(paths(name).binary), false, `${name} has an agent`);
    }
    assert.equal(fs.existsSync(knownHosts), false, 'known_hosts was written without --accept-new');
  });

  it('rejects a missing agent directory and empty node list', async () => {
    const missing = await runController(['bootstrap', '--inventory', inventoryFile, '--state-dir', stateDir, '--agent-dir', path.join(workdir, 'no-such-dir'), '--nodes', 'etcd-1']);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /agent directory .*no-such-dir does not exist; pass --agent-dir/);
    const empty = await runController(['bootstrap', '--inventory', inventoryFile, '--state-dir', stateDir, '--agent-dir', artifactDir, '--nodes', ',']);
    assert.equal(empty.code, 2, empty.stdout);
    assert.match(empty.stderr, /--nodes: no node names given/);
    assert.equal(fs.existsSync(knownHosts), false, 'a node was contacted');
  });

  it('plans installs in a dry run', async () => {
    const { result, nodes: report } = await bootstrap(CLUSTER, ['--dry-run', '--accept-new']);
    assert.equal(result.code, 0, result.stderr);
    for (const name of CLUSTER) {
      assert.deepEqual([report.get(name)?.action, report.get(name)?.status], ['install', 'planned'], name);
      assert.equal(fs.existsSync(paths(name).configDir), false, `${name}: the dry run wrote ${paths(name).configDir}`);
      assert.equal(fs.existsSync(paths(name).binary), false, `${name}: the dry run uploaded the agent`);
    }
  });

  it('installs agents on five nodes', async () => {
    const { result, nodes: report } = await bootstrap(CLUSTER, ['--accept-new']);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    for (const name of CLUSTER) {
      const node = report.get(name)!;
      assert.deepEqual([node.action, node.status], ['install', 'done'], `${name}: ${node.error ?? ''}`);
      assert.equal(node.init, 'fallback');
      for (const step of ['connect', 'upload', 'enroll', 'start', 'confirm']) assert.ok(node.timingsMs[step] !== undefined, `${name}: no ${step} time`);
      assert.equal(fs.statSync(paths(name).binary).mode & 0o777, 0o755);
      const keyFile = path.resolve(paths(name).configDir, (YAML.parse(fs.readFileSync(paths(name).configFile, 'utf8')) as { tls: { keyFile: string } }).tls.keyFile);
      assert.equal(fs.statSync(keyFile).mode & 0o777, 0o600, `${name}: agent key mode`);
      assert.match(agentCertificate(name), /BEGIN CERTIFICATE/);
    }
  });

  it('keeps agent keys off the controller', () => {
    const bodies = CLUSTER.map((name) => agentKey(name).split('\n').filter((line) => line !== '' && !line.startsWith('-----')).join(''));
    const haystacks: { where: string; text: string }[] = printed.map((text, index) => ({ where: `controller output ${index}`, text: text.replace(/\s/g, '') }));
    const walk = (dir: string): void => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(full);
        else if (entry.isFile() && fs.statSync(full).size < 1_000_000) haystacks.push({ where: full, text: fs.readFileSync(full, 'utf8').replace(/\s/g, '') });
      }
    };
    walk(stateDir);
    walk(path.dirname(knownHosts));
    for (const body of bodies) {
      assert.ok(body.length > 100);
      for (const haystack of haystacks) assert.equal(haystack.text.includes(body), false, `an agent private key appears in ${haystack.where}`);
    }
  });

  it('leaves enrolled agents that answer alone on a second run', async () => {
    const before = CLUSTER.map(agentCertificate);
    const { result, nodes: report } = await bootstrap(CLUSTER);
    assert.equal(result.code, 0, result.stderr);
    for (const name of CLUSTER) assert.deepEqual([report.get(name)?.action, report.get(name)?.status], ['unchanged', 'done'], name);
    assert.deepEqual(CLUSTER.map(agentCertificate), before);
  });

  it('distributes over the bootstrapped agents, and etcd runs on the distributed certificates', async () => {
    const etcdNodes = CLUSTER.filter((name) => ROLES[name] === 'etcd');
    const initialCluster = etcdNodes.map((name) => `${name}=https://${sshNode(name).address}:${ETCD_PEER_PORT}`).join(',');
    // The test's service hooks stand in for systemd, which is the agent's default.
    for (const name of CLUSTER) {
      const node = sshNode(name);
      const spec = inventory.nodes.find((candidate) => candidate.name === name)!;
      const etcd =
        ROLES[name] === 'etcd'
          ? {
              name,
              address: node.address,
              installRoot: node.prefix,
              dataDir: path.join(node.prefix, 'etcd-data'),
              pidFile: path.join(node.prefix, 'etcd.pid'),
              logFile: path.join(node.prefix, 'etcd.log'),
              initialCluster,
              etcdBinary: which('etcd')!,
              tlsFlags: flagsForNode(inventory, spec)
                .filter((flag) => flag.service === 'etcd' && flag.kind === 'flag')
                .map((flag) => `${flag.flag}=${flag.value}`),
              specFile: path.join(node.prefix, 'etcd.json'),
            }
          : undefined;
      if (etcd !== undefined) fs.writeFileSync(etcd.specFile, JSON.stringify(etcd));
      const config = YAML.parse(fs.readFileSync(paths(name).configFile, 'utf8')) as Record<string, unknown>;
      config.services = testServiceHooks({ restartsLog: path.join(node.prefix, 'restarts.log'), ...(etcd !== undefined ? { etcd } : {}) }, 90);
      fs.writeFileSync(paths(name).configFile, YAML.stringify(config), { mode: 0o600 });
      const restarted = await agentCtl(name, 'restart');
      assert.equal(restarted.code, 0, restarted.output);
    }
    const distribute = await runController(['distribute', '--inventory', inventoryFile, '--state-dir', stateDir, '--nodes', CLUSTER.join(','), '--output', 'json']);
    assert.equal(distribute.code, 0, `${distribute.stdout}\n${distribute.stderr}`);
    const report = JSON.parse(distribute.stdout) as { nodes: { name: string; status: string; error?: string }[] };
    for (const node of report.nodes) assert.equal(node.status, 'changed', `${node.name}: ${node.error ?? ''}`);

    const master = inventory.nodes.find((node) => node.name === 'master-1')!;
    const item = (name: string) => itemsForNode(inventory, master).find((candidate) => candidate.name === name)!;
    const ca = item('etcd-ca.crt');
    const client = item('apiserver-etcd-client');
    assert.ok(ca.type !== 'leaf');
    assert.ok(client.type === 'leaf');
    const below = (nodePath: string): string => path.join(sshNode('master-1').prefix, nodePath);
    const endpoints = etcdNodes.map((name) => `https://${sshNode(name).address}:2379`).join(',');
    const health = await exec('etcdctl', [
      '--dial-timeout=3s', '--command-timeout=5s', `--endpoints=${endpoints}`,
      `--cacert=${below(ca.file.path)}`, `--cert=${below(client.certificate.path)}`, `--key=${below(client.privateKey.path)}`,
      'endpoint', 'health',
    ], { ...process.env, ETCDCTL_API: '3' });
    assert.equal(health.code, 0, health.output);
    assert.equal(health.output.match(/is healthy/g)?.length, 3, health.output);
  });

  it('upgrades an older agent in place and keeps its identity', async () => {
    const binary = paths('worker-1').binary;
    const identity = agentCertificate('worker-1');
    // What an earlier release left: an executable that reports an older version. The running agent is not affected.
    fs.writeFileSync(`${binary}.old`, '#!/bin/sh\necho 0.0.1\n', { mode: 0o755 });
    fs.renameSync(`${binary}.old`, binary);
    const { result, nodes: report } = await bootstrap(['worker-1']);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const node = report.get('worker-1')!;
    assert.deepEqual([node.action, node.status], ['upgrade', 'done'], node.error ?? '');
    assert.match(node.reasons.join(' '), /agent 0\.0\.1 installed/);
    assert.ok(fs.statSync(binary).size > 1_000_000, 'the agent executable was not replaced');
    assert.equal(agentCertificate('worker-1'), identity);
  });

  it('re-enrols an agent whose identity another management CA signed', async () => {
    const otherState = path.join(workdir, 'other-state');
    assert.equal((await runController(['init', '--inventory', inventoryFile, '--state-dir', otherState])).code, 0);
    const { result, nodes: report } = await bootstrap(['worker-1'], []);
    assert.equal(result.code, 0);
    assert.equal(report.get('worker-1')?.action, 'unchanged');
    const other = await runController(['bootstrap', '--inventory', inventoryFile, '--state-dir', otherState, '--agent-dir', artifactDir, '--nodes', 'worker-1', '--output', 'json']);
    printed.push(other.stdout, other.stderr);
    assert.equal(other.code, 0, `${other.stdout}\n${other.stderr}`);
    const node = (JSON.parse(other.stdout) as { nodes: NodeJson[] }).nodes[0]!;
    assert.deepEqual([node.action, node.status], ['enroll', 'done'], node.error ?? '');
    assert.match(node.reasons.join(' '), /different management CA/);
    // Back to this cluster's own management CA for the tests that follow.
    const back = await bootstrap(['worker-1']);
    assert.equal(back.nodes.get('worker-1')?.action, 'enroll', back.result.stdout);
  });

  it('fails a node with a rejected key', async () => {
    writeInventory({ 'worker-2': `{privateKeyFile: ${nodes.otherKeyFile}}` });
    const { result, nodes: report } = await bootstrap(['worker-2'], ['--accept-new']);
    assert.equal(result.code, 1);
    const node = report.get('worker-2')!;
    assert.equal(node.failedStep, 'connect', node.error ?? '');
    assert.match(node.error ?? '', /^worker-2: .*root.*other_ed25519/);
    assert.doesNotMatch(node.error ?? '', /\n/);
  });

  it('fails a node whose host key changed and prints both fingerprints', async () => {
    writeInventory();
    const first = await bootstrap(['worker-3'], ['--dry-run', '--accept-new']);
    assert.equal(first.result.code, 0, first.result.stdout);
    const old = sshNode('worker-3').hostKeyFingerprint;
    await nodes.replaceHostKey(NAMES.indexOf('worker-3'));
    const { result, nodes: report } = await bootstrap(['worker-3'], ['--accept-new']);
    assert.equal(result.code, 1);
    const node = report.get('worker-3')!;
    assert.equal(node.failedStep, 'connect');
    assert.ok(node.error?.includes(old), node.error ?? '');
    assert.ok(node.error?.includes(sshNode('worker-3').hostKeyFingerprint), node.error ?? '');
  });

  it('fails a node without sudo rights', async () => {
    writeInventory({ 'worker-4': `{user: ${NO_SUDO_USER}}` });
    const { result, nodes: report } = await bootstrap(['worker-4', 'worker-1'], ['--accept-new']);
    assert.equal(result.code, 1);
    const node = report.get('worker-4')!;
    assert.equal(node.status, 'failed');
    assert.match(node.error ?? '', /^worker-4: .*sudo/);
    assert.equal(fs.existsSync(paths('worker-4').binary), false);
    assert.deepEqual([report.get('worker-1')?.status, report.get('worker-1')?.action], ['done', 'unchanged'], report.get('worker-1')?.error ?? '');
  });

  it('fails a node with a blocked agent port', async () => {
    writeInventory();
    await dropAgentPort(sshNode('worker-5').namespace);
    const { result, nodes: report } = await bootstrap(['worker-5'], ['--accept-new']);
    assert.equal(result.code, 1);
    const node = report.get('worker-5')!;
    assert.equal(node.failedStep, 'confirm', node.error ?? '');
    assert.match(node.error ?? '', /^worker-5: .*did not respond over mutual TLS.*port/);
    for (const file of [paths('worker-5').binary, paths('worker-5').configDir, paths('worker-5').controlScript]) assert.equal(fs.existsSync(file), false, `${file} was left on the node`);
  });

  it('starts and removes the agent through systemd', async () => {
    writeInventory();
    const node = sshNode('worker-6');
    await useSystemdStandIn(nodes, node);
    const { result, nodes: report } = await bootstrap(['worker-6'], ['--accept-new']);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const done = report.get('worker-6')!;
    assert.deepEqual([done.action, done.status, done.init], ['install', 'done', 'systemd'], done.error ?? '');
    const unit = await nodes.inNodeMounts(node.index, 'cat', ['/etc/systemd/system/kubetrust-agent.service']);
    assert.match(unit, new RegExp(`^ExecStart=${paths('worker-6').binary} --config ${paths('worker-6').configFile}$`, 'm'));
    assert.equal(fs.existsSync(paths('worker-6').controlScript), false, 'the control script was installed beside systemd');
    const calls = () => fs.readFileSync(path.join(node.dir, 'systemctl.log'), 'utf8').trim().split('\n');
    assert.deepEqual(calls(), ['daemon-reload', 'enable kubetrust-agent.service', 'start kubetrust-agent.service']);

    const removed = await bootstrap(['worker-6'], ['--uninstall']);
    assert.equal(removed.result.code, 0, removed.result.stdout);
    assert.ok(calls().includes('disable --now kubetrust-agent.service'), calls().join('; '));
    const left = await nodes.inNodeMounts(node.index, 'ls', ['-A', '/etc/systemd/system']);
    assert.equal(left.trim(), '');
    assert.equal(fs.existsSync(paths('worker-6').binary), false);
  });

  it('installs through sudo as a user with password-less sudo rights', async () => {
    await ensureSudoUser();
    writeInventory({ 'worker-7': `{user: ${SUDO_USER}}` });
    const { result, nodes: report } = await bootstrap(['worker-7'], ['--accept-new']);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const node = report.get('worker-7')!;
    assert.deepEqual([node.action, node.status], ['install', 'done'], node.error ?? '');
    const owner = fs.statSync(paths('worker-7').binary);
    assert.deepEqual([owner.uid, owner.mode & 0o777], [0, 0o755]);
    assert.equal(fs.statSync(paths('worker-7').configFile).uid, 0);
    assert.deepEqual(fs.readdirSync(path.join('/home', SUDO_USER)).filter((name) => !name.startsWith('.')), [], 'an upload was left in the home directory');
  });

  it('logs in with a key from the ssh-agent', async () => {
    const socket = path.join(workdir, 'ssh-agent.sock');
    const started = await exec('ssh-agent', ['-a', socket, '-s']);
    assert.equal(started.code, 0, started.output);
    const agentPid = Number(/SSH_AGENT_PID=(\d+)/.exec(started.output)?.[1]);
    try {
      const env = { ...process.env, SSH_AUTH_SOCK: socket };
      const added = await exec('ssh-add', [nodes.clientKeyFile], env);
      assert.equal(added.code, 0, added.output);
      // No key file anywhere: only the ssh-agent can log in.
      const text = inventoryText().replace(/ {2}ssh: \{privateKeyFile: [^,]+, (.*), agent: false\}/, '  ssh: {$1, agent: true}');
      assert.doesNotMatch(text, /privateKeyFile/);
      fs.writeFileSync(inventoryFile, text);
      const cli = path.join(REPO_ROOT, 'controller', 'bin', 'controller.js');
      const run = await exec(process.execPath, [cli, 'bootstrap', '--inventory', inventoryFile, '--state-dir', stateDir, '--agent-dir', artifactDir, '--nodes', 'worker-1', '--dry-run', '--accept-new', '--output', 'json'], env);
      assert.equal(run.code, 0, run.output);
      assert.match(run.output, /"status": "(done|planned)"/);
    } finally {
      if (Number.isInteger(agentPid) && agentPid > 0) process.kill(agentPid, 'SIGTERM');
      writeInventory();
    }
  });

  it('prompts for a key passphrase without echo', async () => {
    const passphrase = 'kubetrust-test-passphrase';
    const keyFile = path.join(workdir, 'encrypted_ed25519');
    const made = await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', 'kubetrust encrypted test key', '-f', keyFile]);
    assert.equal(made.code, 0, made.output);
    fs.appendFileSync(path.join(sshNode('worker-1').dir, 'authorized_keys'), fs.readFileSync(`${keyFile}.pub`));
    writeInventory({ 'worker-1': `{privateKeyFile: ${keyFile}}` });
    try {
      const cli = path.join(REPO_ROOT, 'controller', 'bin', 'controller.js');
      const command = [process.execPath, cli, 'bootstrap', '--inventory', inventoryFile, '--state-dir', stateDir, '--agent-dir', artifactDir, '--nodes', 'worker-1', '--dry-run', '--accept-new', '--output', 'json'].join(' ');
      // script(1) gives the controller a terminal; the passphrase is typed only once the prompt shows.
      const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let transcript = '';
      let typed = false;
      child.stdout.on('data', (chunk: Buffer) => {
        transcript += chunk.toString();
        if (!typed && transcript.includes('Passphrase for the SSH key of worker-1')) {
          typed = true;
          child.stdin.write(`${passphrase}\r`);
        }
      });
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.ok(typed, `no passphrase prompt: ${transcript}`);
      assert.equal(code, 0, transcript);
      assert.match(transcript, /"status": "(done|planned)"/);
      assert.equal(transcript.includes(passphrase), false, 'the passphrase was echoed');
    } finally {
      writeInventory();
    }
  });

  it('refuses a node of a machine type with no agent build and says how to build one', async () => {
    writeInventory();
    const node = sshNode('worker-4');
    fs.writeFileSync(path.join(node.binDir, 'uname'), '#!/bin/sh\nif [ "$1" = -m ]; then echo aarch64; else exec /bin/uname "$@"; fi\n', { mode: 0o755 });
    try {
      const { result, nodes: report } = await bootstrap(['worker-4'], ['--accept-new']);
      assert.equal(result.code, 1);
      const failed = report.get('worker-4')!;
      assert.equal(failed.failedStep, 'detect', failed.error ?? '');
      assert.match(failed.error ?? '', /^worker-4: .*aarch64.*npm run package:agent/);
      assert.equal(fs.existsSync(paths('worker-4').binary), false);
    } finally {
      fs.rmSync(path.join(node.binDir, 'uname'));
    }
  });

  it('fails a node whose disk is full during the upload and leaves nothing behind', async () => {
    const node = sshNode('worker-4');
    const binDir = path.dirname(paths('worker-4').binary);
    fs.mkdirSync(binDir, { recursive: true });
    await nodes.inNodeMounts(node.index, 'mount', ['-t', 'tmpfs', '-o', 'size=1m', 'kubetrust-test', binDir]);
    try {
      const { result, nodes: report } = await bootstrap(['worker-4'], ['--accept-new']);
      assert.equal(result.code, 1);
      const failed = report.get('worker-4')!;
      assert.equal(failed.failedStep, 'upload', failed.error ?? '');
      assert.match(failed.error ?? '', /^worker-4: .*(space|full)/i);
      assert.doesNotMatch(failed.error ?? '', /\n/);
      assert.equal((await nodes.inNodeMounts(node.index, 'ls', ['-A', binDir])).trim(), '', 'an upload was left on the full disk');
      assert.equal(fs.existsSync(paths('worker-4').configDir), false);
    } finally {
      await nodes.inNodeMounts(node.index, 'umount', [binDir]);
    }
  });

  it('uninstalls the agent and its identity', async () => {
    const { result, nodes: report } = await bootstrap(['master-1'], ['--uninstall']);
    assert.equal(result.code, 0, result.stdout);
    assert.deepEqual([report.get('master-1')?.action, report.get('master-1')?.status], ['uninstall', 'done']);
    for (const file of [paths('master-1').binary, paths('master-1').configDir, paths('master-1').stateDir]) assert.equal(fs.existsSync(file), false, `${file} is still there`);
    const again = await bootstrap(['master-1'], ['--uninstall']);
    assert.equal(again.nodes.get('master-1')?.action, 'absent');
  });
});
