/**
 * `controller certs check-expiration` on a running local cluster: what the agents report, beside
 * the CAs and the ledger.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { selfSignedCa, signLeaf } from '@kubetrust/controller';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { generateKeyPair, privateKeyToPem } from '@kubetrust/shared/dist/pki';
import { distributedCluster, runController, smallInventory, type CommandResult, type DistributeJson, type LocalCluster } from '../harness/local-cluster';

const SUBNET = '127.0.43';
const INVENTORY = smallInventory('expiry', SUBNET, { pki: 'certValidity: 2160h' });

interface Row {
  node: string;
  name: string;
  serialNumber: string;
  path: string;
  kind: string;
  notAfter: string;
  secondsLeft: number;
  signedBy: string;
  renewedBy: string;
  due: boolean;
  warnings: string[];
}

interface Report {
  certificates: Row[];
  problems: { node: string; message: string; fix: string }[];
}

describe('certificate expiry and rotate', function () {
  this.timeout(180_000);
  let workdir: string;
  let cluster: LocalCluster;

  async function check(extra: readonly string[] = []): Promise<{ result: CommandResult; report: Report }> {
    const result = await runController(['certs', 'check-expiration', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--output', 'json', ...extra]);
    try {
      return { result, report: JSON.parse(result.stdout) as Report };
    } catch {
      throw new Error(`check-expiration printed no JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
    }
  }

  before(async () => {
    ({ workdir, cluster } = await distributedCluster(INVENTORY, 'kubetrust-expiry-'));
  });

  after(async () => {
    await cluster?.stop();
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('lists every certificate each node holds, with its CA and the ledger agreeing', async () => {
    const { result, report } = await check();
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(report.problems, []);
    for (const node of cluster.inventory.nodes) {
      const items = itemsForNode(cluster.inventory, node).filter((item) => item.type !== 'static');
      for (const item of items) {
        const found = report.certificates.find((entry) => entry.node === node.name && entry.name === item.name);
        assert.ok(found !== undefined, `${node.name} ${item.name} is not listed`);
        assert.equal(found.signedBy, item.parent, `${node.name} ${item.name}`);
        assert.equal(found.renewedBy, 'distribute');
        assert.equal(found.due, false);
        assert.deepEqual(found.warnings, []);
        const days = found.secondsLeft / 86_400;
        assert.ok(days > 89, `${node.name} ${item.name}: ${days} days left`);
        assert.ok(days <= 90, `${node.name} ${item.name}: ${days} days left`);
      }
    }
    const cas = report.certificates.filter((entry) => entry.kind === 'ca').map((entry) => entry.name).sort();
    assert.deepEqual(cas, ['cluster-ca', 'etcd-ca', 'front-proxy-ca', 'management']);
    assert.ok(report.certificates.some((entry) => entry.kind === 'trust' && entry.node === 'worker-1' && entry.warnings.length === 0));
  });

  it('counts everything as due inside an absolute window and prints a table', async () => {
    const { report } = await check(['--before', '100d']);
    assert.ok(report.certificates.filter((entry) => entry.renewedBy === 'distribute').every((entry) => entry.due));
    const text = await runController(['certs', 'check-expiration', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--nodes', 'worker-1']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^NODE +CERTIFICATE +EXPIRES +LEFT +SIGNED BY +RENEWED BY +DUE$/m);
    assert.match(text.stdout, /^worker-1 +kubelet\.conf +\S+ +8\dd +cluster-ca +distribute +no$/m);
    const invalid = await runController(['certs', 'check-expiration', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--before', 'soon']);
    assert.equal(invalid.code, 2);
    assert.match(invalid.stderr, /--before: "soon" is not a positive duration/);
  });

  it('rotate plans renewals inside a window', async () => {
    const quiet = await runController(['rotate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--dry-run', '--output', 'json']);
    assert.equal(quiet.code, 0, quiet.stderr);
    const nothing = JSON.parse(quiet.stdout) as DistributeJson;
    for (const node of nothing.nodes) assert.equal(node.status, 'unchanged', `${node.name}: ${JSON.stringify(node.plan.filter((item) => item.action !== 'unchanged'))}`);

    const window = await runController(['rotate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--dry-run', '--before', '100d', '--output', 'json']);
    assert.equal(window.code, 0, window.stderr);
    const planned = JSON.parse(window.stdout) as DistributeJson;
    for (const node of planned.nodes) {
      assert.equal(node.status, 'planned', node.name);
      const certificates = node.plan.filter((item) => itemsForNode(cluster.inventory, cluster.node(node.name).spec).some((candidate) => candidate.name === item.name && candidate.type !== 'static'));
      assert.ok(certificates.length > 0);
      for (const item of certificates) assert.match(item.reasons.join('; '), /expiring within the renewal window/, `${node.name} ${item.name}`);
    }
    const invalid = await runController(['rotate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--before', '0d']);
    assert.equal(invalid.code, 2);
    assert.match(invalid.stderr, /--before: "0d" is not a positive duration/);
  });

  it('rotate renews a named certificate', async () => {
    const before = await check(['--nodes', 'worker-1']);
    const serialOf = (report: Report, name: string): string | undefined => report.certificates.find((entry) => entry.node === 'worker-1' && entry.name === name)?.serialNumber;
    const kubeconfigBefore = fs.readFileSync(cluster.file('worker-1', '/etc/kubernetes/kubelet.conf'), 'utf8');
    const rotated = await runController(['rotate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--nodes', 'worker-1', '--only', 'kubelet.conf', '--output', 'json']);
    assert.equal(rotated.code, 0, `${rotated.stdout}\n${rotated.stderr}`);
    const report = JSON.parse(rotated.stdout) as DistributeJson;
    const node = report.nodes.find((candidate) => candidate.name === 'worker-1')!;
    assert.equal(node.status, 'changed', node.error ?? '');
    assert.deepEqual(node.plan.filter((item) => item.action !== 'unchanged').map((item) => item.name), ['kubelet.conf']);
    assert.match(node.plan.find((item) => item.name === 'kubelet.conf')!.reasons.join(' '), /renewal requested/);
    const after = await check(['--nodes', 'worker-1']);
    assert.notEqual(serialOf(after.report, 'kubelet.conf'), serialOf(before.report, 'kubelet.conf'));
    assert.deepEqual(after.report.certificates.find((entry) => entry.name === 'kubelet.conf')!.warnings, [], 'the ledger does not know the renewed certificate');
    const keyOf = (text: string): string | undefined => /client-key-data: (\S+)/.exec(text)?.[1];
    assert.notEqual(keyOf(fs.readFileSync(cluster.file('worker-1', '/etc/kubernetes/kubelet.conf'), 'utf8')), keyOf(kubeconfigBefore), 'the key was not renewed');
  });

  it('warns about certificates unknown to the ledger', async () => {
    const spec = cluster.node('worker-1').spec;
    const serving = itemsForNode(cluster.inventory, spec).find((item) => item.type === 'leaf' && item.name.includes('kubelet'));
    assert.ok(serving !== undefined, 'worker-1 has no kubelet leaf');
    assert.ok(serving.type === 'leaf');
    // A certificate put there by hand, from the right CA but never recorded.
    const caPem = fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.crt'), 'utf8');
    const caKey = fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.key'), 'utf8');
    const keys = await generateKeyPair('ECDSA-P256');
    const { createPrivateKey } = await import('node:crypto');
    const handMade = signLeaf({ certificatePem: caPem, privateKey: createPrivateKey(caKey), privateKeyPem: caKey }, { commonName: 'worker-1', extKeyUsage: ['serverAuth'], dnsNames: ['worker-1'] }, keys.publicKey, 30 * 86_400_000, new Date());
    fs.writeFileSync(cluster.file('worker-1', serving.certificate.path), handMade);
    fs.writeFileSync(cluster.file('worker-1', serving.privateKey.path), privateKeyToPem(keys.privateKey), { mode: 0o600 });
    // The kubelet's own rotated client certificate.
    const rotated = cluster.file('worker-1', '/var/lib/kubelet/pki/kubelet-client-current.pem');
    fs.mkdirSync(path.dirname(rotated), { recursive: true });
    const rotatedKeys = await generateKeyPair('ECDSA-P256');
    fs.writeFileSync(rotated, signLeaf({ certificatePem: caPem, privateKey: createPrivateKey(caKey), privateKeyPem: caKey }, { commonName: 'system:node:worker-1', organizations: ['system:nodes'], extKeyUsage: ['clientAuth'] }, rotatedKeys.publicKey, 365 * 86_400_000, new Date()));

    const { report } = await check(['--nodes', 'worker-1']);
    const changed = report.certificates.find((entry) => entry.node === 'worker-1' && entry.name === serving.name)!;
    assert.match(changed.warnings.join(' '), /differs from the ledger's/);
    assert.equal(changed.due, false);
    const kubelet = report.certificates.find((entry) => entry.kind === 'kubelet')!;
    assert.deepEqual([kubelet.name, kubelet.renewedBy, kubelet.signedBy], ['kubelet-client-current.pem', 'the kubelet', 'cluster-ca']);
    assert.ok(report.certificates.every((entry) => entry.node === '' || entry.node === 'worker-1'));
  });

  it('reports a node whose agent does not answer and fails', async () => {
    await cluster.stopAgents(['master-1']);
    const { result, report } = await check();
    assert.equal(result.code, 1);
    assert.match(report.problems.map((problem) => `${problem.node}: ${problem.message}`).join('\n'), /^master-1: GetState failed/m);
    assert.ok(report.certificates.some((entry) => entry.node === 'worker-1'), 'the other nodes are still listed');
  });
});
