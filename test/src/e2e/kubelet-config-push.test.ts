/**
 * The kubelet drop-in and continuous serving CSR approval on a local cluster of real agents, with
 * the fake API server serving the apiserver certificate that distribute installed. Distribute pushes
 * the drop-in with the bootstrap kubeconfig and replaces it when a node switches its kubelet
 * credentials. `controller serve --approve-serving-csrs` approves a test kubelet's serving CSR and
 * keeps rotating while the API server is down.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { createKubeClient } from '@kubetrust/controller/dist/kubelet-bootstrap';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import * as YAML from 'yaml';
import { FakeApiServer } from '../harness/fake-apiserver';
import { controllerRbacForFake } from '../harness/fake-controller-rbac';
import { runFakeKubelet } from '../harness/fake-kubelet';
import { CONTROLLER_CLI, freePort, LocalCluster, runController, type CommandResult, type DistributeJson } from '../harness/local-cluster';

const SUBNET = '127.0.51';
const API_HOST = `${SUBNET}.200`;
const METRICS_HOST = `${SUBNET}.201`;
const DROP_IN = '/etc/kubernetes/kubelet.conf.d/50-kubetrust.conf';
const BOOTSTRAP_KUBECONFIG = '/etc/kubernetes/bootstrap-kubelet.conf';

function inventoryText(endpoint: string, wk2Credentials: string): string {
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: dropin}
spec:
  apiServer: {endpoint: "${endpoint}"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: cp-1, addresses: [${SUBNET}.21], roles: [etcd, master]}
    - {name: wk-1, addresses: [${SUBNET}.31], roles: [worker], kubelet: {credentials: bootstrap}}
    - {name: wk-2, addresses: [${SUBNET}.32], roles: [worker], kubelet: {credentials: ${wk2Credentials}}}
`;
}

/** Polls `probe` every 200 ms until it returns a value. The mocha timeout bounds the wait. */
async function until<T>(probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Reads one metric value from the daemon's /metrics, or undefined while the daemon does not respond. */
function metric(port: number, name: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    http
      .get({ host: METRICS_HOST, port, path: '/metrics', timeout: 5_000 }, (response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => (body += chunk.toString()));
        response.on('end', () => {
          const line = body.split('\n').find((candidate) => candidate.startsWith(`${name} `));
          resolve(line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1)));
        });
      })
      .on('error', () => resolve(undefined));
  });
}

type NodeJson = DistributeJson['nodes'][number];
type PlanEntryJson = NodeJson['plan'][number];

describe('kubelet drop-in and serving CSR approval on a local cluster', function () {
  let cluster: LocalCluster;
  let server: FakeApiServer;
  let apiPort: number;
  const secrets: string[] = [];

  function hostFile(node: string, nodePath: string): string {
    return cluster.file(node, nodePath);
  }

  function rememberToken(node: string): void {
    const secret = (parseKubeconfig(fs.readFileSync(hostFile(node, BOOTSTRAP_KUBECONFIG), 'utf8')).token ?? '').split('.')[1];
    if (secret !== undefined && secret !== '') secrets.push(secret);
  }

  function assertNoSecrets(text: string): void {
    for (const secret of secrets) assert.ok(!text.includes(secret), 'output contains no token secret');
    assert.doesNotMatch(text, /PRIVATE KEY|client-key-data/);
  }

  async function controller(command: string, ...args: string[]): Promise<CommandResult> {
    const result = await runController([...command.split(' '), '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, ...args]);
    assertNoSecrets(result.stdout + result.stderr);
    return result;
  }

  async function distributeJson(...args: string[]): Promise<{ result: CommandResult; nodes: Map<string, NodeJson> }> {
    const { result, report } = await cluster.distributeJson(args);
    assertNoSecrets(result.stdout + result.stderr);
    return { result, nodes: new Map(report.nodes.map((node) => [node.name, node])) };
  }

  function dropInEntry(node: NodeJson | undefined): PlanEntryJson | undefined {
    return node?.plan.find((entry) => entry.name === 'kubelet-drop-in');
  }

  function dropInOn(node: string): Record<string, unknown> {
    return YAML.parse(fs.readFileSync(hostFile(node, DROP_IN), 'utf8')) as Record<string, unknown>;
  }

  before(async function () {
    apiPort = await freePort(API_HOST);
    cluster = await LocalCluster.start(inventoryText(`https://${API_HOST}:${apiPort}`, 'pre-provisioned'), { etcd: false, prefix: 'kubetrust-kubelet-config-' });
    const first = await controller('distribute', '--roles', 'etcd,master');
    assert.equal(first.code, 0, first.stdout + first.stderr);

    const rbac = controllerRbacForFake();
    const clusterCa = fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.crt'), 'utf8');
    server = await FakeApiServer.start({
      host: API_HOST,
      port: apiPort,
      servingCertificatePem: fs.readFileSync(hostFile('cp-1', '/etc/kubernetes/pki/apiserver.crt'), 'utf8'),
      servingKeyPem: fs.readFileSync(hostFile('cp-1', '/etc/kubernetes/pki/apiserver.key'), 'utf8'),
      clientCaPem: clusterCa,
      signingCa: { certificatePem: clusterCa, privateKeyPem: fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.key'), 'utf8') },
      clusterRoles: rbac.roles,
    });
    const admin = await createKubeClient(hostFile('cp-1', '/etc/kubernetes/admin.conf'));
    for (const binding of rbac.bindings) await admin.createClusterRoleBinding(binding);
    const credentials = await controller('kube-credentials');
    assert.equal(credentials.code, 0, credentials.stderr);
  });

  after(async function () {
    await server?.close();
    await cluster?.destroy();
  });

  describe('distribute', function () {
    it('plans the drop-in as a new file', async function () {
      const { result, nodes } = await distributeJson('--dry-run', '--nodes', 'wk-1,wk-2');
      assert.equal(result.code, 0, result.stderr);
      for (const worker of ['wk-1', 'wk-2']) {
        const entry = dropInEntry(nodes.get(worker));
        assert.equal(entry?.action, 'add', worker);
        assert.deepEqual(entry?.paths, [DROP_IN], worker);
        assert.deepEqual(entry?.reasons, ['new'], worker);
        assert.deepEqual(entry?.restarts, ['kubelet'], worker);
      }
      const text = await controller('plan', '--nodes', 'wk-1');
      assert.match(text.stdout, /^ {4}add {4}kubelet-drop-in \(new\)$/m);
    });

    it('pushes the drop-in to a bootstrap worker', async function () {
      const { result, nodes } = await distributeJson('--nodes', 'wk-1,wk-2');
      assert.equal(result.code, 0, result.stdout + result.stderr);
      rememberToken('wk-1');
      const wk1 = nodes.get('wk-1');
      assert.ok(wk1 !== undefined);
      assert.ok(wk1.changedFiles.includes(DROP_IN), JSON.stringify(wk1.changedFiles));
      assert.ok(wk1.changedFiles.includes(BOOTSTRAP_KUBECONFIG));
      assert.ok(wk1.restartedServices.includes('kubelet'));
      assert.equal(fs.statSync(hostFile('wk-1', DROP_IN)).mode & 0o777, 0o644);
      assert.deepEqual(dropInOn('wk-1'), {
        apiVersion: 'kubelet.config.k8s.io/v1beta1',
        kind: 'KubeletConfiguration',
        authentication: { x509: { clientCAFile: '/etc/kubernetes/pki/ca.crt' } },
        rotateCertificates: true,
        serverTLSBootstrap: true,
      });
      const wk2 = dropInOn('wk-2');
      assert.equal(wk2.serverTLSBootstrap, false);
      assert.equal(wk2.tlsCertFile, '/var/lib/kubelet/pki/kubelet.crt');
    });

    it('leaves a current drop-in unchanged', async function () {
      const { result, nodes } = await distributeJson('--dry-run', '--nodes', 'wk-1,wk-2');
      assert.equal(result.code, 0, result.stderr);
      for (const worker of ['wk-1', 'wk-2']) assert.equal(dropInEntry(nodes.get(worker))?.action, 'unchanged', worker);
    });

    it('changes the drop-in when the mode changes', async function () {
      fs.writeFileSync(cluster.inventoryFile, inventoryText(`https://${API_HOST}:${apiPort}`, 'bootstrap'));
      const planned = await distributeJson('--dry-run', '--nodes', 'wk-2');
      assert.equal(planned.result.code, 0, planned.result.stderr);
      const entry = dropInEntry(planned.nodes.get('wk-2'));
      assert.equal(entry?.action, 'change');
      assert.deepEqual(entry?.reasons, ['content differs: the node has the settings of kubelet.credentials pre-provisioned, and the inventory now sets bootstrap']);

      const { result, nodes } = await distributeJson('--nodes', 'wk-2');
      assert.equal(result.code, 0, result.stdout + result.stderr);
      rememberToken('wk-2');
      assert.ok(nodes.get('wk-2')?.changedFiles.includes(DROP_IN));
      assert.ok(nodes.get('wk-2')?.restartedServices.includes('kubelet'));
      const dropIn = dropInOn('wk-2');
      assert.equal(dropIn.serverTLSBootstrap, true);
      assert.equal(dropIn.rotateCertificates, true);
      assert.equal(dropIn.tlsCertFile, undefined);
    });
  });

  describe('serve --approve-serving-csrs', function () {
    let daemon: ChildProcess | undefined;
    let log = '';
    let metricsPort: number;

    after(function () {
      if (daemon !== undefined && daemon.exitCode === null) daemon.kill('SIGKILL');
    });

    it('missing kubeconfig exits 2 and names the flag', async function () {
      const missing = path.join(cluster.workdir, 'no-such.kubeconfig');
      const result = await controller('serve', '--approve-serving-csrs', '--kubeconfig', missing, '--metrics-address', 'off');
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, new RegExp(`--approve-serving-csrs: kubeconfig ${missing.replace(/[.]/g, '\\.')} is missing; check the path`));
    });

    it('approves a serving CSR', async function () {
      metricsPort = await freePort(METRICS_HOST);
      const args = ['serve', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--interval', '3s', '--retry-base', '1s', '--approve-serving-csrs', '--metrics-address', `${METRICS_HOST}:${metricsPort}`];
      daemon = spawn(process.execPath, [CONTROLLER_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      daemon.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
      daemon.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString()));
      await until(async () => ((await metric(metricsPort, 'kubetrust_csr_watch_connected')) === 1 ? true : undefined));

      const kubelet = await runFakeKubelet({
        nodeName: 'wk-1',
        bootstrapKubeconfigPath: hostFile('wk-1', BOOTSTRAP_KUBECONFIG),
        kubeconfigPath: hostFile('wk-1', '/etc/kubernetes/kubelet.conf'),
        certDir: hostFile('wk-1', '/var/lib/kubelet/pki'),
        addresses: [`${SUBNET}.31`],
        hostnames: ['wk-1'],
        servingCertificateTimeoutMs: 60_000,
      });
      assert.equal(kubelet.steps.at(-1)?.name, 'serving-certificate-written');
      assert.equal(await until(async () => ((await metric(metricsPort, 'kubetrust_serving_csrs_approved_total')) === 1 ? 1 : undefined)), 1);
      assert.match(log, new RegExp(`approved kubelet serving CSR .*csr=${kubelet.servingCsrName ?? ''} node=wk-1`));
    });

    it('keeps rotating while the API server is down', async function () {
      await server.stopServing();
      await until(async () => ((await metric(metricsPort, 'kubetrust_csr_watch_connected')) === 0 ? true : undefined));
      assert.match(log, /kubelet serving CSR watch failed; retrying/);
      const rounds = (): number => (log.match(/rotation round ended/g) ?? []).length;
      const before = rounds();
      await until(() => (rounds() > before ? true : undefined));
      assert.equal(daemon?.exitCode, null, 'the daemon is still running');

      await server.resumeServing();
      await until(async () => ((await metric(metricsPort, 'kubetrust_csr_watch_connected')) === 1 ? true : undefined));
    });

    it('exits 0 on SIGTERM', async function () {
      const child = daemon as ChildProcess;
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0, log);
      assertNoSecrets(log);
    });
  });
});
