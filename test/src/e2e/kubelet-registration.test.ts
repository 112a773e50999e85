/**
 * The agent's watch of a TLS-bootstrapping kubelet: through Apply and GetState over mutual TLS,
 * and the watcher alone for each certificate it must not accept.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadAgentConfig, startAgent, type RunningAgent } from '@kubetrust/agent';
import { InvalidRequestError } from '@kubetrust/agent/dist/errors';
import { KubeletRegistration, inspectClientCertificate } from '@kubetrust/agent/dist/kubelet-registration';
import { AgentConnection, enrollNode, initState, selfSignedCa, signLeaf, type KeyMaterial } from '@kubetrust/controller';
import { parseInventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { generateKeyPair, privateKeyToPem } from '@kubetrust/shared/dist/pki';

const ADDRESS = '127.0.47.11';
const DAY_MS = 24 * 60 * 60 * 1000;
const BOOTSTRAP_KUBECONFIG = '/etc/kubernetes/bootstrap-kubelet.conf';
const CLIENT_CERTIFICATE = '/var/lib/kubelet/pki/kubelet-client-current.pem';
const CLUSTER_CA = '/etc/kubernetes/pki/ca.crt';
const WATCH = { bootstrap_kubeconfig_path: BOOTSTRAP_KUBECONFIG, client_certificate_path: CLIENT_CERTIFICATE, ca_path: CLUSTER_CA };
const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: registration}
spec:
  apiServer: {endpoint: "https://127.0.47.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: worker-1, addresses: [${ADDRESS}], roles: [etcd, master, worker]}
`;

async function makeCa(name: string): Promise<KeyMaterial> {
  const keys = await generateKeyPair('ECDSA-P256');
  return { certificatePem: selfSignedCa(name, keys, 3650 * DAY_MS, new Date()), privateKey: keys.privateKey, privateKeyPem: privateKeyToPem(keys.privateKey) };
}

/** A kubelet client certificate and key in one PEM file, as the kubelet writes it. */
async function kubeletClient(ca: KeyMaterial, node: string, options: { organizations?: string[]; validityMs?: number; issuedAt?: Date } = {}): Promise<string> {
  const keys = await generateKeyPair('ECDSA-P256');
  const certificate = signLeaf(ca, { commonName: `system:node:${node}`, organizations: options.organizations ?? ['system:nodes'], extKeyUsage: ['clientAuth'] }, keys.publicKey, options.validityMs ?? 365 * DAY_MS, options.issuedAt ?? new Date());
  return certificate + privateKeyToPem(keys.privateKey);
}

/** Writes a timestamped file and points the symlink kubelet-client-current.pem at it, as the kubelet does. */
function installClientCertificate(root: string, pem: string, stamp: string): void {
  const dir = path.join(root, path.dirname(CLIENT_CERTIFICATE));
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `kubelet-client-${stamp}.pem`);
  fs.writeFileSync(file, pem, { mode: 0o600 });
  const link = path.join(root, CLIENT_CERTIFICATE);
  fs.rmSync(`${link}.new`, { force: true });
  fs.symlinkSync(file, `${link}.new`);
  fs.renameSync(`${link}.new`, link);
}

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('kubelet registration watch', function () {
  this.timeout(60_000);
  let workdir: string;
  let root: string;
  let ca: KeyMaterial;
  let otherCa: KeyMaterial;

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-registration-'));
    root = path.join(workdir, 'root');
    ca = await makeCa('cluster-ca');
    otherCa = await makeCa('other-ca');
  });

  after(() => {
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  function freshRoot(name: string): { root: string; state: string } {
    const dir = path.join(workdir, name);
    const nodeRoot = path.join(dir, 'root');
    fs.mkdirSync(path.join(nodeRoot, path.dirname(CLUSTER_CA)), { recursive: true });
    fs.writeFileSync(path.join(nodeRoot, CLUSTER_CA), ca.certificatePem);
    fs.writeFileSync(path.join(nodeRoot, BOOTSTRAP_KUBECONFIG), 'bootstrap kubeconfig with a token\n', { mode: 0o600 });
    fs.mkdirSync(path.join(dir, 'state'), { recursive: true });
    return { root: nodeRoot, state: path.join(dir, 'state') };
  }

  it('keeps the bootstrap kubeconfig until a certificate of this node from the cluster CA appears', async () => {
    const node = freshRoot('watcher');
    const registration = new KubeletRegistration(node.root, node.state, 'worker-1', silentLogger(), 50);
    try {
      await registration.arm(registration.validate(WATCH));
      assert.equal(registration.state().watching, true);
      assert.match(registration.state().observed, /no file at \/var\/lib\/kubelet\/pki\/kubelet-client-current\.pem/);

      installClientCertificate(node.root, await kubeletClient(ca, 'worker-2'), '1');
      await until(() => /not system:node:worker-1/.test(registration.state().observed), 'another node is reported');
      installClientCertificate(node.root, await kubeletClient(otherCa, 'worker-1'), '2');
      await until(() => /does not chain to the cluster CA/.test(registration.state().observed), 'another CA is reported');
      installClientCertificate(node.root, await kubeletClient(ca, 'worker-1', { organizations: ['system:bootstrappers'] }), '3');
      await until(() => /not in group system:nodes/.test(registration.state().observed), 'the wrong group is reported');
      assert.equal(fs.existsSync(path.join(node.root, BOOTSTRAP_KUBECONFIG)), true, 'the bootstrap kubeconfig went before registration');

      installClientCertificate(node.root, await kubeletClient(ca, 'worker-1'), '4');
      await until(() => registration.state().registered, 'the kubelet counts as registered');
      const state = registration.state();
      assert.equal(state.watching, false);
      assert.equal(state.bootstrap_kubeconfig_removed, true);
      assert.match(state.client_certificate_subject, /CN=system:node:worker-1/);
      assert.ok(Number(state.registered_unix_ms) > 0);
      assert.equal(fs.existsSync(path.join(node.root, BOOTSTRAP_KUBECONFIG)), false, 'the bootstrap kubeconfig is still on the node');
    } finally {
      registration.stop();
    }
  });

  it('resumes an unfinished watch after an agent restart', async () => {
    const node = freshRoot('resume');
    const first = new KubeletRegistration(node.root, node.state, 'worker-1', silentLogger(), 50);
    await first.arm(first.validate(WATCH));
    first.stop();
    const second = new KubeletRegistration(node.root, node.state, 'worker-1', silentLogger(), 50);
    try {
      await second.resume();
      assert.equal(second.state().watching, true);
      installClientCertificate(node.root, await kubeletClient(ca, 'worker-1'), '1');
      await until(() => second.state().registered, 'the resumed watch sees the registration');
      assert.equal(fs.existsSync(path.join(node.root, BOOTSTRAP_KUBECONFIG)), false);
    } finally {
      second.stop();
    }
  });

  it('refuses a watch with a path outside the install root', () => {
    const registration = new KubeletRegistration(root, workdir, 'worker-1', silentLogger());
    assert.throws(() => registration.validate({ ...WATCH, client_certificate_path: '../kubelet.pem' }), (error: unknown) => error instanceof InvalidRequestError && /client_certificate_path/.test(error.message));
    assert.throws(() => registration.validate({ ...WATCH, bootstrap_kubeconfig_path: '/etc/../../x' }), InvalidRequestError);
  });

  it('does not count an expired certificate as a registration', async () => {
    const expired = await kubeletClient(ca, 'worker-1', { validityMs: DAY_MS, issuedAt: new Date(Date.now() - 10 * DAY_MS) });
    const found = inspectClientCertificate(expired, ca.certificatePem, 'worker-1', new Date());
    assert.equal(found.registered, false);
    assert.match(found.observed, /valid only from/);
  });

  it('reports the watch and the registration through Apply and GetState', async () => {
    const inventory = parseInventory(INVENTORY, 'registration.yaml').inventory;
    const stateDir = path.join(workdir, 'controller');
    await initState(inventory, stateDir, silentLogger());
    const nodeRoot = path.join(workdir, 'agent-root');
    const enrolled = await enrollNode(inventory, stateDir, 'worker-1', path.join(workdir, 'agent'), silentLogger(), { installRoot: nodeRoot, stateDirOnNode: path.join(workdir, 'agent-state') });
    const credentials = {
      managementCaPem: fs.readFileSync(path.join(stateDir, 'management', 'ca.crt'), 'utf8'),
      certificatePem: fs.readFileSync(path.join(stateDir, 'management', 'controller.crt'), 'utf8'),
      privateKeyPem: fs.readFileSync(path.join(stateDir, 'management', 'controller.key'), 'utf8'),
    };
    let agent: RunningAgent | undefined = await startAgent(loadAgentConfig(enrolled.configFile), silentLogger());
    const connection = new AgentConnection('registration', inventory.nodes[0]!, credentials);
    try {
      const before = await connection.getState({ files: [] });
      assert.equal(before.kubelet_bootstrap?.watching ?? false, false);
      await connection.apply({
        change_id: 'bootstrap-1',
        files: [
          { path: CLUSTER_CA, mode: 0o644, uid: 0, gid: 0, data: Buffer.from(ca.certificatePem) },
          { path: BOOTSTRAP_KUBECONFIG, mode: 0o600, uid: 0, gid: 0, data: Buffer.from('bootstrap kubeconfig with a token\n') },
        ],
        restart_services: [],
        kubelet_bootstrap: WATCH,
      });
      const watching = await connection.getState({ files: [] });
      assert.equal(watching.kubelet_bootstrap?.watching, true);
      assert.equal(watching.kubelet_bootstrap?.registered, false);

      // The agent restarts before the kubelet registers: the watch goes on.
      await agent.stop();
      agent = await startAgent(loadAgentConfig(enrolled.configFile), silentLogger());
      installClientCertificate(nodeRoot, await kubeletClient(ca, 'worker-1'), '1');
      let registered = false;
      for (let attempt = 0; attempt < 100 && !registered; attempt++) {
        registered = (await connection.getState({ files: [] })).kubelet_bootstrap?.registered ?? false;
        if (!registered) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(registered, 'GetState never reported the registration');
      const after = await connection.getState({ files: [] });
      assert.equal(after.kubelet_bootstrap?.bootstrap_kubeconfig_removed, true);
      assert.equal(fs.existsSync(path.join(nodeRoot, BOOTSTRAP_KUBECONFIG)), false);
    } finally {
      connection.close();
      await agent?.stop();
    }
  });
});
