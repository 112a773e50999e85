/**
 * Rollback of failed agent upgrades in `controller bootstrap`, against real OpenSSH servers in
 * network namespaces of their own (`test/src/harness/ssh-nodes.ts`). Three nodes start with an
 * agent that reports version 0.0.9: two with the control script and one with a systemd stand-in.
 * They are then upgraded to builds that cannot start or cannot be confirmed, and to a working
 * build. Needs root, iproute2, nftables, openssh-server and sudo; `.ci/run` installs them.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'mocha';
import { AGENT_VERSION } from '@kubetrust/agent';
import { AgentConnection, type ControllerCredentials } from '@kubetrust/controller/dist/agent-client';
import { agentInstallPaths, renderControlScript, renderSystemdUnit } from '@kubetrust/controller/dist/agent-install';
import { loadInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { allowAgentPort, dropAgentPort, exec, parseBootstrapReport, sshNodesInventory, useSystemdStandIn, type NodeJson } from '../harness/bootstrap-support';
import { REPO_ROOT, runController, runNode, which, type CommandResult } from '../harness/local-cluster';
import { SshNodes, type SshNode } from '../harness/ssh-nodes';

const BUILD_SCRIPT = path.join(REPO_ROOT, 'agent', 'packaging', 'build-artifact.js');
/** Node names of this file, distinct from those of bootstrap.test.ts. */
const NAMES = ['upgrade-1', 'upgrade-2', 'upgrade-3'] as const;
/** The node whose agent runs under the systemd stand-in. */
const SYSTEMD_NODE = 'upgrade-2';
const CLUSTER = 'upgrades';
/** The version that the first installed agent reports; it has the length of AGENT_VERSION, so the executable can be patched in place. */
const OLD_VERSION = '0.0.9';
/** The version in the manifests of the broken builds. */
const BROKEN_VERSION = '0.2.0';
const UNIT_FILE = '/etc/systemd/system/kubetrust-agent.service';
/** AGENT_VERSION, the version of the working build, as a regular expression. */
const CURRENT = AGENT_VERSION.replace(/\./g, '\\.');

interface ManifestEntry {
  readonly arch: string;
  readonly machine: string;
  readonly file: string;
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Returns a copy of the agent executable that reports `version` instead of AGENT_VERSION. The
 * version is a string constant in the JavaScript bundle inside the executable, so a replacement of
 * the same length leaves every offset in the file as it was.
 */
function withVersion(executable: Buffer, version: string): Buffer {
  const from = Buffer.from(`AGENT_VERSION = "${AGENT_VERSION}";`);
  const to = Buffer.from(`AGENT_VERSION = "${version}";`);
  assert.equal(to.length, from.length, `version ${version} must have the length of ${AGENT_VERSION}`);
  const offset = executable.indexOf(from);
  assert.ok(offset >= 0, 'the agent executable does not contain its version constant');
  assert.equal(executable.indexOf(from, offset + 1), -1, 'the agent executable contains its version constant twice');
  const patched = Buffer.from(executable);
  to.copy(patched, offset);
  return patched;
}

/** Writes an agent directory as `npm run package:agent` does: the executable, its .sha256 file and manifest.json. */
function writeAgentDir(dir: string, version: string, executable: Buffer, entry: ManifestEntry): void {
  fs.mkdirSync(dir, { recursive: true });
  const digest = sha256(executable);
  fs.writeFileSync(path.join(dir, entry.file), executable, { mode: 0o755 });
  fs.writeFileSync(path.join(dir, `${entry.file}.sha256`), `${digest}  ${entry.file}\n`);
  const manifest = { version, artifacts: [{ ...entry, bytes: executable.length, sha256: digest }] };
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
}

describe('controller bootstrap upgrade rollback on namespaced sshd nodes', function () {
  this.timeout(300_000);

  let nodes: SshNodes;
  let workdir: string;
  let stateDir: string;
  let knownHosts: string;
  let inventoryFile: string;
  let inventory: Inventory;
  /** Agent directories: the build of this checkout, the same build patched to report OLD_VERSION, and two broken builds. */
  const agentDirs = { current: '', old: '', exits: '', mislabelled: '' };
  /** The executable of agent OLD_VERSION, and its sha256. */
  let oldExecutable: Buffer;
  let oldSha256: string;

  function sshNode(name: string): SshNode {
    return nodes.node(NAMES.indexOf(name as (typeof NAMES)[number]));
  }

  function paths(name: string): ReturnType<typeof agentInstallPaths> {
    return agentInstallPaths(sshNode(name).prefix);
  }

  function credentials(): ControllerCredentials {
    return {
      managementCaPem: fs.readFileSync(path.join(stateDir, 'management', 'ca.crt'), 'utf8'),
      certificatePem: fs.readFileSync(path.join(stateDir, 'management', 'controller.crt'), 'utf8'),
      privateKeyPem: fs.readFileSync(path.join(stateDir, 'management', 'controller.key'), 'utf8'),
    };
  }

  /** Calls the node's agent over mutual TLS, as the controller does, and returns the version it reports. */
  async function respondingVersion(name: string): Promise<string> {
    const spec = inventory.nodes.find((node) => node.name === name)!;
    const connection = new AgentConnection(CLUSTER, spec, credentials(), { busyRetryDelaysMs: [] });
    try {
      const state = await connection.getState({});
      assert.equal(state.node_name, name);
      return state.agent_version;
    } finally {
      connection.close();
    }
  }

  async function bootstrap(names: readonly string[], agentDir: string, extra: readonly string[] = []): Promise<CommandResult> {
    return runController(['bootstrap', '--inventory', inventoryFile, '--state-dir', stateDir, '--agent-dir', agentDir, '--nodes', names.join(','), '--log-level', 'debug', ...extra]);
  }

  async function bootstrapJson(names: readonly string[], agentDir: string, extra: readonly string[] = []): Promise<{ result: CommandResult; nodes: Map<string, NodeJson> }> {
    const result = await bootstrap(names, agentDir, ['--output', 'json', ...extra]);
    return { result, nodes: parseBootstrapReport(result) };
  }

  /** Returns the rollback copies and temporary files of the agent that are on the node. */
  async function copiesOn(name: string): Promise<string[]> {
    const found: string[] = [];
    for (const file of [paths(name).binary, paths(name).controlScript]) {
      const dir = path.dirname(file);
      if (!fs.existsSync(dir)) continue;
      for (const entry of fs.readdirSync(dir)) {
        if (entry.startsWith(`${path.basename(file)}.`)) found.push(path.join(dir, entry));
      }
    }
    if (name === SYSTEMD_NODE) {
      const listed = await nodes.inNodeMounts(sshNode(name).index, 'ls', ['-A', path.dirname(UNIT_FILE)]);
      found.push(...listed.split('\n').filter((entry) => entry.startsWith('kubetrust-agent.service.')).map((entry) => path.join(path.dirname(UNIT_FILE), entry)));
    }
    return found;
  }

  function binarySha256(name: string): string {
    return sha256(fs.readFileSync(paths(name).binary));
  }

  async function unitOn(name: string): Promise<string> {
    return nodes.inNodeMounts(sshNode(name).index, 'cat', [UNIT_FILE]);
  }

  before(async () => {
    assert.ok(which('nft'), 'nft is not installed: `.ci/run` installs the Debian package nftables');
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-upgrade-'));
    agentDirs.current = path.join(workdir, 'agent-current');
    const built = await runNode(BUILD_SCRIPT, ['--out', agentDirs.current]);
    assert.equal(built.code, 0, `build-artifact.js failed: ${built.stderr}`);
    const manifest = JSON.parse(fs.readFileSync(path.join(agentDirs.current, 'manifest.json'), 'utf8')) as { artifacts: ManifestEntry[] };
    const { arch, machine, file } = manifest.artifacts.find((candidate) => candidate.arch === process.arch)!;
    const entry = { arch, machine, file };
    const executable = fs.readFileSync(path.join(agentDirs.current, file));

    agentDirs.old = path.join(workdir, 'agent-old');
    oldExecutable = withVersion(executable, OLD_VERSION);
    oldSha256 = sha256(oldExecutable);
    writeAgentDir(agentDirs.old, OLD_VERSION, oldExecutable, entry);
    agentDirs.exits = path.join(workdir, 'agent-exits');
    writeAgentDir(agentDirs.exits, BROKEN_VERSION, Buffer.from('#!/bin/sh\necho "test build of the agent: exits at once" >&2\nexit 1\n'), entry);
    // The working executable of this checkout, under a manifest version that it does not report.
    agentDirs.mislabelled = path.join(workdir, 'agent-mislabelled');
    writeAgentDir(agentDirs.mislabelled, BROKEN_VERSION, executable, entry);

    nodes = await SshNodes.start({ count: NAMES.length });
    stateDir = path.join(workdir, 'state');
    knownHosts = path.join(workdir, 'admin', 'known_hosts');
    fs.mkdirSync(path.dirname(knownHosts), { recursive: true });
    inventoryFile = path.join(workdir, 'cluster.yaml');
    // An inventory needs an etcd and a master node; the roles do not matter to bootstrap.
    const entries = NAMES.map((name) => ({ name, node: sshNode(name), roles: name === 'upgrade-1' ? 'etcd, master' : 'worker' }));
    fs.writeFileSync(inventoryFile, sshNodesInventory(CLUSTER, nodes, sshNode('upgrade-1'), knownHosts, entries));
    inventory = loadInventory(inventoryFile).inventory;
    const init = await runController(['init', '--inventory', inventoryFile, '--state-dir', stateDir]);
    assert.equal(init.code, 0, init.stderr);

    await useSystemdStandIn(nodes, sshNode(SYSTEMD_NODE));
  });

  after(async () => {
    if (nodes !== undefined) {
      for (const name of NAMES) {
        if (fs.existsSync(paths(name).controlScript)) await exec('ip', ['netns', 'exec', sshNode(name).namespace, paths(name).controlScript, 'stop']);
      }
      // The systemd stand-in records the PID of the agent it started.
      const pidFile = path.join(sshNode(SYSTEMD_NODE).dir, 'kubetrust-agent.service.pid');
      if (fs.existsSync(pidFile)) {
        const pid = Number(fs.readFileSync(pidFile, 'utf8'));
        if (Number.isInteger(pid) && pid > 0) {
          try {
            process.kill(pid, 'SIGTERM');
          } catch {
            // It has exited already.
          }
        }
      }
      await nodes.stop();
    }
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('installs agent 0.0.9 on three nodes', async () => {
    const { result, nodes: report } = await bootstrapJson(NAMES, agentDirs.old, ['--accept-new']);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    for (const name of NAMES) {
      const node = report.get(name)!;
      assert.deepEqual([node.action, node.status], ['install', 'done'], `${name}: ${node.error ?? ''}`);
      assert.equal(node.rollback, null, name);
      assert.equal(await respondingVersion(name), OLD_VERSION, name);
      assert.deepEqual(await copiesOn(name), [], name);
    }
  });

  it('dry run names the rollback copy', async () => {
    const result = await bootstrap(['upgrade-1'], agentDirs.current, ['--dry-run']);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const planned = `upgrade-1 +upgrade +planned +agent 0\\.0\\.9 installed, ${CURRENT} available; keeps agent 0\\.0\\.9 as \\S+ and rolls back to it unless agent ${CURRENT} responds`;
    assert.match(result.stdout, new RegExp(planned));
    assert.ok(result.stdout.includes(`${paths('upgrade-1').binary}.previous`), result.stdout);
    assert.deepEqual(await copiesOn('upgrade-1'), []);
  });

  it('rolls back an executable that exits', async () => {
    // Unit and control script as an earlier release wrote them, so that the upgrade changes both.
    const earlier = '# written by an earlier release\n';
    fs.appendFileSync(paths('upgrade-1').controlScript, earlier);
    const oldScript = fs.readFileSync(paths('upgrade-1').controlScript, 'utf8');
    await nodes.inNodeMounts(sshNode(SYSTEMD_NODE).index, 'sh', ['-c', `printf '%s' '${earlier}' >> ${UNIT_FILE}`]);
    const oldUnit = await unitOn(SYSTEMD_NODE);
    assert.ok(oldUnit.endsWith(earlier), oldUnit);

    const { result, nodes: report } = await bootstrapJson(['upgrade-1', SYSTEMD_NODE], agentDirs.exits);
    assert.equal(result.code, 1, `${result.stdout}\n${result.stderr}`);
    const expectedStep: Record<string, string> = { 'upgrade-1': 'start', [SYSTEMD_NODE]: 'confirm' };
    for (const name of ['upgrade-1', SYSTEMD_NODE]) {
      const node = report.get(name)!;
      assert.deepEqual([node.action, node.status], ['upgrade', 'rolled-back'], `${name}: ${node.error ?? ''}`);
      assert.equal(node.failedStep, expectedStep[name], `${name}: ${node.error ?? ''}`);
      assert.match(node.error ?? '', new RegExp(`^${name}: the upgrade to agent 0\\.2\\.0 failed: .*\\. Rolled back to agent 0\\.0\\.9, which responds over mutual TLS again$`));
      assert.doesNotMatch(node.error ?? '', /\n/);
      assert.equal(node.rollback?.status, 'done', name);
      assert.equal(node.rollback?.version, OLD_VERSION, name);
      assert.ok(node.timingsMs.rollback !== undefined, `${name}: no rollback time`);
      assert.equal(binarySha256(name), oldSha256, `${name}: the executable is not the one of agent 0.0.9`);
      assert.equal(await respondingVersion(name), OLD_VERSION, name);
      assert.deepEqual(await copiesOn(name), [], name);
    }
    assert.match(report.get('upgrade-1')?.error ?? '', /starting the agent failed \(exit 1: test build of the agent: exits at once\)/);
    assert.deepEqual(report.get('upgrade-1')?.rollback?.restored, [paths('upgrade-1').binary, paths('upgrade-1').controlScript]);
    assert.deepEqual(report.get(SYSTEMD_NODE)?.rollback?.restored, [paths(SYSTEMD_NODE).binary, UNIT_FILE]);
    assert.equal(fs.readFileSync(paths('upgrade-1').controlScript, 'utf8'), oldScript);
    assert.equal(await unitOn(SYSTEMD_NODE), oldUnit);
    const calls = fs.readFileSync(path.join(sshNode(SYSTEMD_NODE).dir, 'systemctl.log'), 'utf8').trim().split('\n');
    assert.deepEqual(calls.slice(-2), ['daemon-reload', 'restart kubetrust-agent.service']);
  });

  it('rolls back a version mismatch', async () => {
    const result = await bootstrap(['upgrade-1'], agentDirs.mislabelled);
    assert.equal(result.code, 1, `${result.stdout}\n${result.stderr}`);
    const line = result.stdout.split('\n').find((text) => text.trimStart().startsWith('upgrade-1 ')) ?? '';
    assert.match(line, /^ {2}upgrade-1 +upgrade +rolled-back +upgrade-1: the upgrade to agent 0\.2\.0 failed: /);
    assert.match(line, new RegExp(`the agent at \\S+ responds over mutual TLS with version ${CURRENT}, not 0\\.2\\.0; check which executable runs on the node`));
    assert.match(line, /Rolled back to agent 0\.0\.9, which responds over mutual TLS again$/);
    assert.match(result.stdout, /0 of 1 nodes done, 0 failed, 1 rolled back/);
    assert.equal(binarySha256('upgrade-1'), oldSha256);
    assert.equal(await respondingVersion('upgrade-1'), OLD_VERSION);
    assert.deepEqual(await copiesOn('upgrade-1'), []);
  });

  it('reports a failed rollback', async () => {
    const namespace = sshNode('upgrade-3').namespace;
    await dropAgentPort(namespace);
    let report: Map<string, NodeJson>;
    let code: number;
    try {
      ({ result: { code }, nodes: report } = await bootstrapJson(['upgrade-3'], agentDirs.current));
    } finally {
      await allowAgentPort(namespace);
    }

    assert.equal(code, 1);
    const node = report.get('upgrade-3')!;
    assert.deepEqual([node.action, node.status, node.failedStep], ['upgrade', 'failed', 'confirm'], node.error ?? '');
    const binary = paths('upgrade-3').binary;
    assert.equal(node.rollback?.status, 'failed');
    assert.equal(node.rollback?.version, OLD_VERSION);
    assert.deepEqual(node.rollback?.restored, [binary]);
    assert.ok(node.rollback?.error?.startsWith('the agent did not respond over mutual TLS'), node.rollback?.error ?? '');

    assert.ok(node.error?.includes(`The rollback to agent 0.0.9 failed too: the agent did not respond over mutual TLS`), node.error ?? '');
    assert.ok(node.error?.includes(`Left on the node: agent 0.0.9 is back at ${binary} and was started, but it did not respond as upgrade-3`), node.error ?? '');
    assert.ok(node.error?.includes('run `controller bootstrap --nodes upgrade-3` again'), node.error ?? '');
    assert.doesNotMatch(node.error ?? '', /\n/);

    // What the report gives as left on the node: the old executable, running, and no rollback copy.
    assert.equal(binarySha256('upgrade-3'), oldSha256);
    assert.equal(await respondingVersion('upgrade-3'), OLD_VERSION);
    assert.deepEqual(await copiesOn('upgrade-3'), []);
  });

  it('upgrades once the build works', async () => {
    const { result, nodes: report } = await bootstrapJson(NAMES, agentDirs.current);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    for (const name of NAMES) {
      const node = report.get(name)!;
      assert.deepEqual([node.action, node.status], ['upgrade', 'done'], `${name}: ${node.error ?? ''}`);
      assert.equal(node.rollback, null, name);
      assert.equal(await respondingVersion(name), AGENT_VERSION, name);
      assert.deepEqual(await copiesOn(name), [], name);
    }
    assert.equal(fs.readFileSync(paths('upgrade-1').controlScript, 'utf8'), renderControlScript(paths('upgrade-1')));
    assert.equal(await unitOn(SYSTEMD_NODE), renderSystemdUnit(paths(SYSTEMD_NODE)));
  });

  it('rolls back to a leftover copy', async () => {
    // What a controller that stopped between the switch and the confirmation leaves: the new
    // executable in place and the previous one as its rollback copy.
    const binary = paths('upgrade-1').binary;
    fs.writeFileSync(`${binary}.previous`, oldExecutable, { mode: 0o755 });
    const plan = await bootstrapJson(['upgrade-1'], agentDirs.current, ['--dry-run']);
    const planned = plan.nodes.get('upgrade-1')!;
    assert.deepEqual([planned.action, planned.status], ['upgrade', 'planned'], planned.error ?? '');
    assert.ok(planned.reasons.includes(`the upgrade from agent 0.0.9 to ${AGENT_VERSION} was not confirmed`), planned.reasons.join('; '));
    assert.ok(planned.reasons.includes(`keeps agent 0.0.9 in ${binary}.previous, left by an upgrade that was not confirmed, and rolls back to it unless agent ${AGENT_VERSION} responds`), planned.reasons.join('; '));

    // The installed agent of this checkout is not the rollback target: the copy of 0.0.9 is.
    const { result, nodes: report } = await bootstrapJson(['upgrade-1'], agentDirs.mislabelled);
    assert.equal(result.code, 1);
    const node = report.get('upgrade-1')!;
    assert.deepEqual([node.status, node.rollback?.version], ['rolled-back', OLD_VERSION], node.error ?? '');
    assert.equal(binarySha256('upgrade-1'), oldSha256);
    assert.equal(await respondingVersion('upgrade-1'), OLD_VERSION);

    const again = await bootstrapJson(['upgrade-1'], agentDirs.current);
    assert.deepEqual([again.nodes.get('upgrade-1')?.action, again.nodes.get('upgrade-1')?.status], ['upgrade', 'done'], again.result.stdout);
    assert.equal(await respondingVersion('upgrade-1'), AGENT_VERSION);
    assert.deepEqual(await copiesOn('upgrade-1'), []);
  });

  it('uninstall removes rollback copies', async () => {
    fs.copyFileSync(paths('upgrade-3').binary, `${paths('upgrade-3').binary}.previous`);
    const { result, nodes: report } = await bootstrapJson(NAMES, agentDirs.current, ['--uninstall']);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    for (const name of NAMES) {
      assert.deepEqual([report.get(name)?.action, report.get(name)?.status], ['uninstall', 'done'], name);
      assert.equal(fs.existsSync(paths(name).binary), false, name);
      assert.deepEqual(await copiesOn(name), [], name);
    }
  });
});
