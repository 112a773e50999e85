/**
 * The push of bootstrap credentials through distribute, end to end. The real controller CLI drives
 * one agent per node, each on its own install root. The fake API server uses the cluster CA and
 * the apiserver certificate that distribute installed, and a fake kubelet runs on each worker's
 * install root.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createKubeClient, type KubeClient } from '@kubetrust/controller/dist/kubelet-bootstrap';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { FakeApiServer } from '../harness/fake-apiserver';
import { controllerRbacForFake } from '../harness/fake-controller-rbac';
import { runFakeKubelet, type FakeKubeletResult } from '../harness/fake-kubelet';
import { freePort, LocalCluster, runController, type CommandResult } from '../harness/local-cluster';

const API_HOST = '127.0.49.200';
const WORKERS = ['wk-1', 'wk-2', 'wk-3'];
const BOOTSTRAP_KUBECONFIG = '/etc/kubernetes/bootstrap-kubelet.conf';

interface KubeletBootstrapJson {
  state: string;
  message: string;
  tokenId?: string;
  expiration?: string;
  observed?: string;
  tokensDeleted?: string[];
}

interface NodeJson {
  name: string;
  status: string;
  changedFiles: string[];
  restartedServices: string[];
  plan: { name: string; action: string; reasons: string[] }[];
  kubeletBootstrap?: KubeletBootstrapJson;
  error?: string;
}

function inventoryText(endpoint: string): string {
  const workers = ['wk-1', 'wk-2', 'wk-3', 'wk-4', 'wk-5']
    .map((name, index) => `    - {name: ${name}, addresses: [127.0.49.${31 + index}], roles: [worker], kubelet: {credentials: bootstrap}}`)
    .join('\n');
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: boot}
spec:
  apiServer: {endpoint: "${endpoint}"}
  nodes:
    - {name: etcd-1, addresses: [127.0.49.11], roles: [etcd]}
    - {name: cp-1, addresses: [127.0.49.21], roles: [master]}
${workers}
`;
}

async function until(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe('bootstrap credentials pushed by distribute', function () {
  let cluster: LocalCluster;
  let server: FakeApiServer;
  let admin: KubeClient;
  /** Token secrets found in bootstrap kubeconfigs, which no command output may contain. */
  const secrets: string[] = [];

  function hostFile(node: string, nodePath: string): string {
    const local = cluster.nodes.find((candidate) => candidate.spec.name === node);
    if (local === undefined) throw new Error(`no node ${node}`);
    return path.join(local.installRoot, nodePath);
  }

  /** Reads the token of a node's bootstrap kubeconfig and remembers its secret half. */
  function tokenOnNode(node: string): { id: string } {
    const token = parseKubeconfig(fs.readFileSync(hostFile(node, BOOTSTRAP_KUBECONFIG), 'utf8')).token ?? '';
    const [id, secret] = token.split('.');
    assert.match(id ?? '', /^[a-z0-9]{6}$/);
    if (secret !== undefined && !secrets.includes(secret)) secrets.push(secret);
    return { id: id ?? '' };
  }

  function assertNoSecrets(result: CommandResult): void {
    for (const secret of secrets) {
      assert.ok(!result.stdout.includes(secret), 'stdout contains no token secret');
      assert.ok(!result.stderr.includes(secret), 'stderr contains no token secret');
    }
    assert.ok(!/PRIVATE KEY|client-key-data/.test(result.stdout + result.stderr), 'output contains no private key');
  }

  /** Runs a controller command, such as `csr approve`, with the cluster's inventory and state directory. */
  async function controller(command: string, ...args: string[]): Promise<CommandResult> {
    const result = await runController([...command.split(' '), '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, ...args]);
    assertNoSecrets(result);
    return result;
  }

  async function distributeJson(...args: string[]): Promise<{ result: CommandResult; nodes: Map<string, NodeJson> }> {
    const result = await controller('distribute', '--output', 'json', ...args);
    let nodes: NodeJson[];
    try {
      nodes = (JSON.parse(result.stdout) as { nodes: NodeJson[] }).nodes;
    } catch {
      throw new Error(`distribute printed no JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
    }
    return { result, nodes: new Map(nodes.map((node) => [node.name, node])) };
  }

  async function nodeTokenIds(node: string): Promise<string[]> {
    const secretsOfCluster = await admin.listSecrets('kube-system', 'kubetrust.io/managed-by=kubetrust');
    return secretsOfCluster.filter((secret) => secret.metadata.annotations?.['kubetrust.io/node'] === node).map((secret) => secret.metadata.name.replace('bootstrap-token-', ''));
  }

  function kubelet(node: string, index: number, timeoutMs = 30_000): Promise<FakeKubeletResult> {
    return runFakeKubelet({
      nodeName: node,
      bootstrapKubeconfigPath: hostFile(node, BOOTSTRAP_KUBECONFIG),
      kubeconfigPath: hostFile(node, '/etc/kubernetes/kubelet.conf'),
      certDir: hostFile(node, '/var/lib/kubelet/pki'),
      addresses: [`127.0.49.${31 + index}`],
      hostnames: [node],
      clientCertificateTimeoutMs: timeoutMs,
      servingCertificateTimeoutMs: timeoutMs,
    });
  }

  /** Runs the kubelets while `controller csr approve` approves their serving CSRs. */
  async function kubeletsWithApproval(nodes: readonly string[]): Promise<FakeKubeletResult[]> {
    let running = true;
    const kubelets = Promise.all(nodes.map((node) => kubelet(node, Number(node.slice(3)) - 1))).finally(() => {
      running = false;
    });
    while (running) {
      const approve = await controller('csr approve');
      assert.equal(approve.code, 0, approve.stderr);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    return kubelets;
  }

  function ledger(): { issued: unknown[]; kubeletBootstrap?: { node: string; event: string; tokenId?: string }[] } {
    const text = fs.readFileSync(path.join(cluster.stateDir, 'ledger.json'), 'utf8');
    for (const secret of secrets) assert.ok(!text.includes(secret), 'ledger contains no token secret');
    return JSON.parse(text) as { issued: unknown[]; kubeletBootstrap?: { node: string; event: string; tokenId?: string }[] };
  }

  before(async function () {
    const port = await freePort(API_HOST);
    cluster = await LocalCluster.start(inventoryText(`https://${API_HOST}:${port}`), { etcd: false, prefix: 'kubetrust-kubelet-push-' });
    const first = await controller('distribute', '--roles', 'etcd,master');
    assert.equal(first.code, 0, first.stdout + first.stderr);

    const rbac = controllerRbacForFake();
    server = await FakeApiServer.start({
      host: API_HOST,
      port,
      servingCertificatePem: fs.readFileSync(hostFile('cp-1', '/etc/kubernetes/pki/apiserver.crt'), 'utf8'),
      servingKeyPem: fs.readFileSync(hostFile('cp-1', '/etc/kubernetes/pki/apiserver.key'), 'utf8'),
      clientCaPem: fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.crt'), 'utf8'),
      signingCa: {
        certificatePem: fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.crt'), 'utf8'),
        privateKeyPem: fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.key'), 'utf8'),
      },
      clusterRoles: rbac.roles,
    });
    // The admin kubeconfig that distribute installed on the master.
    admin = await createKubeClient(hostFile('cp-1', '/etc/kubernetes/admin.conf'));
    for (const binding of rbac.bindings) await admin.createClusterRoleBinding(binding);
  });

  after(async function () {
    await server?.close();
    await cluster?.destroy();
  });

  it('bootstrap node without API kubeconfig exits 2', async function () {
    const result = await controller('distribute', '--nodes', 'wk-1');
    assert.equal(result.code, 2, result.stdout + result.stderr);
    assert.match(result.stderr, /node wk-1 bootstraps its kubelet through the Kubernetes API, but kubeconfig .*controller\.kubeconfig is missing; run `controller kube-credentials`/);
    assert.ok(!fs.existsSync(hostFile('wk-1', BOOTSTRAP_KUBECONFIG)), 'no bootstrap kubeconfig pushed');
  });

  it('dry run plans a token and creates none', async function () {
    const credentials = await controller('kube-credentials');
    assert.equal(credentials.code, 0, credentials.stderr);
    const { result, nodes } = await distributeJson('--dry-run', '--nodes', WORKERS.join(','));
    assert.equal(result.code, 0, result.stderr);
    for (const worker of WORKERS) {
      const entry = nodes.get(worker)?.plan.find((item) => item.name === 'bootstrap-kubelet.conf');
      assert.equal(entry?.action, 'add');
      assert.match(entry?.reasons[0] ?? '', new RegExp(`new bootstrap token for ${worker}, expires \\d{4}-`));
      assert.equal(nodes.get(worker)?.kubeletBootstrap?.state, 'would-issue-token');
    }
    const text = await controller('plan', '--nodes', 'wk-1');
    assert.match(text.stdout, /add {4}bootstrap-kubelet\.conf \(kubelet not registered \(no file at \/var\/lib\/kubelet\/pki\/kubelet-client-current\.pem yet\); new bootstrap token for wk-1, expires /);
    assert.deepEqual(await admin.listSecrets('kube-system', 'kubetrust.io/managed-by=kubetrust'), []);
  });

  it('pushes a token per worker and waits until each registered', async function () {
    const distributing = distributeJson('--nodes', WORKERS.join(','), '--wait-registration', '90');
    await until('every worker holds its bootstrap kubeconfig', 60_000, () => WORKERS.every((worker) => fs.existsSync(hostFile(worker, BOOTSTRAP_KUBECONFIG))));
    const tokens = new Map(WORKERS.map((worker) => [worker, tokenOnNode(worker).id]));
    for (const worker of WORKERS) assert.equal(fs.statSync(hostFile(worker, BOOTSTRAP_KUBECONFIG)).mode & 0o777, 0o600);
    assert.equal(new Set(tokens.values()).size, 3, 'each worker has its own token');

    const kubelets = await kubeletsWithApproval(WORKERS);
    for (const result of kubelets) assert.ok(result.servingCertificatePath !== undefined, 'serving certificate issued after csr approve');

    const { result, nodes } = await distributing;
    assert.equal(result.code, 0, result.stdout + result.stderr);
    for (const worker of WORKERS) {
      const report = nodes.get(worker);
      assert.equal(report?.status, 'changed');
      assert.ok(report.changedFiles.includes(BOOTSTRAP_KUBECONFIG));
      assert.ok(report.restartedServices.includes('kubelet'));
      assert.equal(report.kubeletBootstrap?.state, 'registered', report.kubeletBootstrap?.message);
      assert.deepEqual(report.kubeletBootstrap.tokensDeleted, [tokens.get(worker)]);
      assert.ok(!fs.existsSync(hostFile(worker, BOOTSTRAP_KUBECONFIG)), `bootstrap kubeconfig of ${worker} deleted`);
      assert.deepEqual(await nodeTokenIds(worker), [], `no token of ${worker} left in the API`);
      assert.ok((await admin.getNode(worker)) !== undefined);
    }
    const records = ledger().kubeletBootstrap ?? [];
    for (const worker of WORKERS) {
      const events = records.filter((record) => record.node === worker).map((record) => `${record.event} ${record.tokenId ?? ''}`.trim());
      assert.deepEqual(events, [`token-issued ${tokens.get(worker) ?? ''}`, 'registered', `token-deleted ${tokens.get(worker) ?? ''}`]);
    }
  });

  it('issues no token to a registered node', async function () {
    const { result, nodes } = await distributeJson('--nodes', WORKERS.join(','));
    assert.equal(result.code, 0, result.stderr);
    for (const worker of WORKERS) {
      assert.equal(nodes.get(worker)?.status, 'unchanged');
      assert.equal(nodes.get(worker)?.kubeletBootstrap?.state, 'registered');
      assert.deepEqual(await nodeTokenIds(worker), []);
    }
  });

  it('replaces a token that expired before the kubelet started', async function () {
    const first = await distributeJson('--nodes', 'wk-4', '--bootstrap-token-ttl', '6s');
    assert.equal(first.result.code, 0, first.result.stderr);
    const expiredId = tokenOnNode('wk-4').id;
    assert.equal(first.nodes.get('wk-4')?.kubeletBootstrap?.tokenId, expiredId);

    // While the token is valid, the node keeps it.
    const waiting = await distributeJson('--nodes', 'wk-4', '--dry-run');
    assert.equal(waiting.nodes.get('wk-4')?.kubeletBootstrap?.state, 'waiting');
    assert.equal(waiting.nodes.get('wk-4')?.kubeletBootstrap?.tokenId, expiredId);
    assert.equal(waiting.nodes.get('wk-4')?.status, 'unchanged');
    await until('the token expired', 10_000, () => Date.now() > Date.parse(first.nodes.get('wk-4')?.kubeletBootstrap?.expiration ?? '') + 500);

    const list = await controller('tokens list');
    assert.match(list.stdout, new RegExp(`wk-4 +${expiredId} +\\S+ +expired`));
    const plan = await controller('plan', '--nodes', 'wk-4');
    assert.match(plan.stdout, new RegExp(`token ${expiredId} expired at .*; new bootstrap token for wk-4`));
    await assert.rejects(kubelet('wk-4', 3, 3_000), 'the expired token does not authenticate');

    const replaced = await controller('bootstrap-kubelet', '--node', 'wk-4', '--output', 'json');
    assert.equal(replaced.code, 0, replaced.stdout + replaced.stderr);
    const push = JSON.parse(replaced.stdout) as { state: string; tokenId: string; message: string };
    assert.equal(push.state, 'token-issued');
    assert.notEqual(push.tokenId, expiredId);
    assert.equal(tokenOnNode('wk-4').id, push.tokenId);
    assert.deepEqual(await nodeTokenIds('wk-4'), [push.tokenId], 'the expired token was deleted');

    await kubeletsWithApproval(['wk-4']);
    await until('the agent deleted the bootstrap kubeconfig', 15_000, () => !fs.existsSync(hostFile('wk-4', BOOTSTRAP_KUBECONFIG)));
    const after = await distributeJson('--nodes', 'wk-4');
    assert.equal(after.result.code, 0, after.result.stderr);
    assert.equal(after.nodes.get('wk-4')?.kubeletBootstrap?.state, 'registered');
    assert.deepEqual(after.nodes.get('wk-4')?.kubeletBootstrap?.tokensDeleted, [push.tokenId]);
    assert.deepEqual(await nodeTokenIds('wk-4'), []);
  });

  it('reports a kubelet that never registers', async function () {
    const started = Date.now();
    const { result, nodes } = await distributeJson('--nodes', 'wk-5', '--bootstrap-token-ttl', '3s', '--wait-registration', '60');
    assert.ok(Date.now() - started < 40_000, 'the wait ends when the token expires');
    assert.notEqual(result.code, 0, 'a kubelet that did not register fails the run');
    const report = nodes.get('wk-5')?.kubeletBootstrap;
    assert.equal(report?.state, 'not-registered');
    const tokenId = tokenOnNode('wk-5').id;
    assert.equal(report.tokenId, tokenId);
    assert.match(report.message, new RegExp(`did not register before its bootstrap token ${tokenId} expired at`));
    assert.match(report.message, /the agent observed: no file at \/var\/lib\/kubelet\/pki\/kubelet-client-current\.pem yet/);
    assert.deepEqual(await nodeTokenIds('wk-5'), [tokenId], 'the token was not renewed');
    const list = await controller('tokens list');
    assert.match(list.stdout, new RegExp(`wk-5 +${tokenId} +\\S+ +expired`));
    assert.match(result.stderr, /kubelet did not register/);
  });
});
