/**
 * `controller csr approve --watch` as an operator runs it: a long-running process against the fake
 * API server that approves the serving CSRs of test kubelets as they arrive. It reports each CSR it
 * leaves pending once, reconnects after the API server restarts and exits 0 on SIGTERM.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CertificatesV1Api } from '@kubernetes/client-node';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { createCsr, generateKeyPair } from '@kubetrust/shared/dist/pki';
import { KUBELET_SERVING_SIGNER, type FakeApiServer } from '../harness/fake-apiserver';
import { kubeConfigFor, type FakeClusterPki } from '../harness/fake-cluster';
import { startControllerApi } from '../harness/fake-controller-rbac';
import { runFakeKubelet, type FakeKubeletResult } from '../harness/fake-kubelet';
import { CONTROLLER_CLI, runController, type CommandResult } from '../harness/local-cluster';

const HOST = '127.0.51.10';

const INVENTORY = (endpoint: string): string => `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: watch}
spec:
  apiServer: {endpoint: "${endpoint}"}
  kubelet: {credentials: bootstrap}
  nodes:
    - {name: cp-a, addresses: [192.0.2.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [192.0.2.21], roles: [worker]}
    - {name: wk-b, addresses: [192.0.2.22], roles: [worker]}
`;

interface DecisionLine {
  time: string;
  name: string;
  node: string | null;
  outcome: string;
  reasons: string[];
}

/** Polls `probe` every 100 ms until it returns a value. The mocha timeout bounds the wait. */
async function until<T>(probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('controller csr approve --watch', function () {
  let pki: FakeClusterPki;
  let server: FakeApiServer;
  let workDir: string;
  let stateDir: string;
  let inventoryFile: string;
  let approver: ChildProcess | undefined;
  let stdout = '';
  let stderr = '';
  const secrets: string[] = [];
  /** CSR names that the approver must leave pending, with the reason it must report. */
  const rogue = new Map<string, string>();

  function decisions(): DecisionLine[] {
    return stdout
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as DecisionLine);
  }

  function decisionsFor(name: string): DecisionLine[] {
    return decisions().filter((line) => line.name === name);
  }

  function assertNoSecrets(text: string): void {
    for (const secret of secrets) assert.ok(!text.includes(secret), 'output contains no token secret');
    assert.doesNotMatch(text, /PRIVATE KEY|client-key-data|token-secret/);
  }

  /** Writes a bootstrap kubeconfig for `node` with `controller bootstrap-kubelet --out`. */
  async function bootstrapFile(node: string): Promise<string> {
    const file = path.join(workDir, `${node}-bootstrap.conf`);
    const result = await runController(['bootstrap-kubelet', '--inventory', inventoryFile, '--state-dir', stateDir, '--node', node, '--ttl', '30m', '--out', file]);
    assert.equal(result.code, 0, result.stderr);
    secrets.push((parseKubeconfig(fs.readFileSync(file, 'utf8')).token ?? '').split('.')[1] ?? '');
    return file;
  }

  function kubelet(nodeName: string, bootstrap: string, addresses: readonly string[], servingTimeoutMs: number): Promise<FakeKubeletResult> {
    return runFakeKubelet({
      nodeName,
      bootstrapKubeconfigPath: bootstrap,
      kubeconfigPath: path.join(workDir, nodeName, 'kubelet.conf'),
      certDir: path.join(workDir, nodeName, 'pki'),
      addresses,
      hostnames: [nodeName],
      servingCertificateTimeoutMs: servingTimeoutMs,
    });
  }

  /** Creates a serving CSR as node `node` would, with the names and usages given. */
  async function postServingCsr(node: string, names: { dnsNames: string[]; ipAddresses: string[] }, usages: string[]): Promise<string> {
    const identity = await pki.issueClientCertificate(`system:node:${node}`, ['system:nodes']);
    const certificates = kubeConfigFor(server.url, pki.ca.certificatePem, node, identity).makeApiClient(CertificatesV1Api);
    const keyPair = await generateKeyPair('ECDSA-P256');
    const request = createCsr({ commonName: `system:node:${node}`, organizations: ['system:nodes'], ...names }, keyPair);
    const created = await certificates.createCertificateSigningRequest({
      body: { metadata: { generateName: 'csr-' }, spec: { request: Buffer.from(request).toString('base64'), signerName: KUBELET_SERVING_SIGNER, usages } },
    });
    return created.metadata?.name as string;
  }

  function watchRequests(): number {
    return server.requests.filter((request) => request.user === 'kubetrust:controller' && request.method === 'GET' && request.path.endsWith('certificatesigningrequests')).length;
  }

  before(async function () {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-csr-watch-'));
    stateDir = path.join(workDir, 'state');
    ({ pki, server } = await startControllerApi(HOST, workDir, stateDir));
    inventoryFile = path.join(workDir, 'inventory.yaml');
    fs.writeFileSync(inventoryFile, INVENTORY(server.url));
    const credentials = await runController(['kube-credentials', '--inventory', inventoryFile, '--state-dir', stateDir]);
    assert.equal(credentials.code, 0, credentials.stderr);
  });

  after(async function () {
    if (approver !== undefined && approver.exitCode === null) approver.kill('SIGKILL');
    await server?.close();
    if (workDir !== undefined) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('missing kubeconfig exits 2 and names the fix', async function () {
    const empty = fs.mkdtempSync(path.join(workDir, 'no-credentials-'));
    const result: CommandResult = await runController(['csr', 'approve', '--watch', '--inventory', inventoryFile, '--state-dir', empty]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /controller\.kubeconfig is missing; run `controller kube-credentials` with this --state-dir first/);
  });

  it('approves a serving CSR posted after it started', async function () {
    approver = spawn(process.execPath, [CONTROLLER_CLI, 'csr', 'approve', '--watch', '--output', 'json', '--inventory', inventoryFile, '--state-dir', stateDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    approver.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    approver.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await until(() => (stderr.includes('approving kubelet serving CSRs as they arrive') ? true : undefined));
    assert.deepEqual(decisions(), [], 'no CSR existed at the start');

    const result = await kubelet('wk-a', await bootstrapFile('wk-a'), ['192.0.2.21'], 60_000);
    assert.equal(result.steps.at(-1)?.name, 'serving-certificate-written');
    // The kubelet can see its certificate before the approver's line reaches this process.
    const lines = await until(() => (decisionsFor(result.servingCsrName as string).length > 0 ? decisionsFor(result.servingCsrName as string) : undefined));
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.outcome, 'approved');
    assert.equal(lines[0]?.node, 'wk-a');
    assert.deepEqual(lines[0]?.reasons, []);
    assert.ok(!Number.isNaN(Date.parse(lines[0]?.time ?? '')), 'each line has a time');
  });

  it('approves the request of a restarted kubelet', async function () {
    // The kubelet keeps its client certificate and requests a new serving certificate, as on renewal.
    const result = await kubelet('wk-a', path.join(workDir, 'wk-a-bootstrap.conf'), ['192.0.2.21'], 60_000);
    assert.equal(result.bootstrapped, false);
    assert.equal(result.steps.at(-1)?.name, 'serving-certificate-written');
    assert.equal((await until(() => decisionsFor(result.servingCsrName as string)[0])).outcome, 'approved');
  });

  it('leaves rogue CSRs pending and reports each once', async function () {
    const extraIp = await kubelet('wk-b', await bootstrapFile('wk-b'), ['192.0.2.22', '198.51.100.7'], 500);
    assert.equal(extraIp.steps.at(-1)?.name, 'serving-certificate-pending');
    rogue.set(extraIp.servingCsrName as string, 'IP 198.51.100.7 is not an address of wk-b in the inventory');
    // A kubelet that names itself wk-x, a node that the inventory does not list, with wk-a's token.
    const foreign = await kubelet('wk-x', path.join(workDir, 'wk-a-bootstrap.conf'), ['192.0.2.99'], 500);
    assert.equal(foreign.steps.at(-1)?.name, 'serving-certificate-pending');
    rogue.set(foreign.servingCsrName as string, 'node wk-x is not in the inventory');
    const clientUsage = await postServingCsr('wk-a', { dnsNames: ['wk-a'], ipAddresses: ['192.0.2.21'] }, ['digital signature', 'server auth', 'client auth']);
    rogue.set(clientUsage, 'usage client auth is not allowed for a serving certificate');

    for (const [name, reason] of rogue) {
      const line = await until(() => decisionsFor(name)[0]);
      assert.equal(line.outcome, 'pending', name);
      assert.deepEqual(line.reasons, [reason], name);
    }

    // The server ends the watch, so the approver lists again. A CSR created after that shows that it
    // has handled the listed ones.
    const before = watchRequests();
    assert.ok(server.endWatches() > 0, 'a watch was open');
    await until(() => (watchRequests() >= before + 2 ? true : undefined));
    const marker = await postServingCsr('wk-b', { dnsNames: ['wk-b'], ipAddresses: ['192.0.2.22'] }, ['digital signature', 'server auth']);
    assert.equal((await until(() => decisionsFor(marker)[0])).outcome, 'approved');
    for (const name of rogue.keys()) assert.equal(decisionsFor(name).length, 1, `${name} is reported once`);
    assert.equal((stderr.match(/kubelet serving CSR left pending/g) ?? []).length, rogue.size, 'each pending CSR is logged once');
  });

  it('reconnects after the API server restarts', async function () {
    await server.stopServing();
    await until(() => (stderr.includes('kubelet serving CSR watch failed; retrying') ? true : undefined));
    await server.resumeServing();
    const connected = (): number => (stderr.match(/kubelet serving CSR watch connected/g) ?? []).length;
    const seen = connected();
    await until(() => (connected() > seen ? true : undefined));

    const name = await postServingCsr('wk-b', { dnsNames: ['wk-b'], ipAddresses: ['192.0.2.22'] }, ['digital signature', 'server auth']);
    assert.equal((await until(() => decisionsFor(name)[0])).outcome, 'approved');
    for (const rogueName of rogue.keys()) assert.equal(decisionsFor(rogueName).length, 1, `${rogueName} is still reported once`);
    assert.match(stderr, /kubelet serving CSR watch failed; retrying.*retryInSeconds=\d/);
  });

  it('exits 0 on SIGTERM', async function () {
    const child = approver as ChildProcess;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /kubelet serving CSR approver stopped/);
    assertNoSecrets(stdout + stderr);
  });
});
