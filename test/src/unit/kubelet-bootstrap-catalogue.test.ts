import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kubeletBootstrapFiles, kubeletBootstrapFlags, overrideKeys } from '@kubetrust/shared/dist/catalogue';
import { readFileState } from '@kubetrust/shared/dist/file-state';
import { parseInventory, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';
import { createFakeClusterPki } from '../harness/fake-cluster';
import { runController } from '../harness/local-cluster';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: boot}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  nodes:
    - {name: cp-1, addresses: [192.0.2.21], roles: [etcd, master]}
    - {name: wk-1, addresses: [192.0.2.31], roles: [worker]}
    - {name: wk-boot, addresses: [192.0.2.32], roles: [worker], kubelet: {credentials: bootstrap}}
`;

function inventory(pki = '{}'): Inventory {
  return parseInventory(INVENTORY.replace('spec:\n', `spec:\n  pki: ${pki}\n`), 'boot.yaml').inventory;
}

function node(inv: Inventory, name: string): NodeSpec {
  const found = inv.nodes.find((candidate) => candidate.name === name);
  if (found === undefined) throw new Error(`no node ${name}`);
  return found;
}

describe('kubelet bootstrap files', () => {
  it('kubeadm layout paths', () => {
    const inv = inventory();
    const files = kubeletBootstrapFiles(inv, node(inv, 'wk-boot'));
    assert.ok(files !== undefined);
    assert.equal(files.bootstrapKubeconfig.path, '/etc/kubernetes/bootstrap-kubelet.conf');
    assert.equal(files.bootstrapKubeconfig.mode, 0o600);
    assert.deepEqual(files.bootstrapKubeconfig.consumers, ['kubelet']);
    assert.equal(files.kubeconfigPath, '/etc/kubernetes/kubelet.conf');
    assert.equal(files.clientCertificatePath, '/var/lib/kubelet/pki/kubelet-client-current.pem');
    assert.equal(files.caPath, '/etc/kubernetes/pki/ca.crt');
  });

  it('cfssl layout paths', () => {
    const inv = inventory('{pathLayout: cfssl}');
    const files = kubeletBootstrapFiles(inv, node(inv, 'wk-boot'));
    assert.equal(files?.bootstrapKubeconfig.path, '/etc/kubernetes/bootstrap-kubelet.kubeconfig');
    assert.equal(files?.kubeconfigPath, '/etc/kubernetes/kubelet.kubeconfig');
    assert.equal(files?.caPath, '/etc/kubernetes/ssl/ca.pem');
  });

  it('path override moves the bootstrap kubeconfig', () => {
    assert.ok(overrideKeys().includes('bootstrap-kubelet.conf.file'));
    const inv = inventory('{pathOverrides: {bootstrap-kubelet.conf.file: /var/lib/kubelet/bootstrap.conf}}');
    assert.equal(kubeletBootstrapFiles(inv, node(inv, 'wk-boot'))?.bootstrapKubeconfig.path, '/var/lib/kubelet/bootstrap.conf');
  });

  it('none for a pre-provisioned kubelet', () => {
    const inv = inventory();
    assert.equal(kubeletBootstrapFiles(inv, node(inv, 'wk-1')), undefined);
    assert.deepEqual(kubeletBootstrapFlags(inv, node(inv, 'wk-1')), []);
    assert.equal(kubeletBootstrapFiles(inv, node(inv, 'cp-1')), undefined);
  });

  it('kubelet settings for bootstrapping', () => {
    const inv = inventory();
    const flags = kubeletBootstrapFlags(inv, node(inv, 'wk-boot')).map((flag) => `${flag.flag}=${flag.value}`);
    assert.deepEqual(flags, [
      '--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf',
      '--kubeconfig=/etc/kubernetes/kubelet.conf',
      '--cert-dir=/var/lib/kubelet/pki',
      'rotateCertificates=true',
      'serverTLSBootstrap=true',
    ]);
  });

  it('plan --flags prints them', async function () {
    this.timeout(30_000);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-boot-flags-'));
    try {
      const file = path.join(dir, 'cluster.yaml');
      fs.writeFileSync(file, INVENTORY);
      const result = await runController(['plan', '--flags', '--node', 'wk-boot', '--inventory', file]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /--bootstrap-kubeconfig=\/etc\/kubernetes\/bootstrap-kubelet\.conf/);
      assert.match(result.stdout, /--kubeconfig=\/etc\/kubernetes\/kubelet\.conf/);
      assert.match(result.stdout, /--cert-dir=\/var\/lib\/kubelet\/pki/);
      assert.match(result.stdout, /rotateCertificates: true/);
      assert.match(result.stdout, /serverTLSBootstrap: true/);
      assert.match(result.stdout, /authentication\.x509\.clientCAFile: \/etc\/kubernetes\/pki\/ca\.crt/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('certificate file state', () => {
  it('leaves out a key stored with the certificate', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-file-state-'));
    try {
      const pki = await createFakeClusterPki('127.0.49.1');
      const file = path.join(dir, 'kubelet-client-current.pem');
      fs.writeFileSync(file, pki.apiserver.certificatePem + pki.apiserver.keyPem);
      const state = await readFileState(file, '/var/lib/kubelet/pki/kubelet-client-current.pem', 'FILE_KIND_CERTIFICATE');
      assert.equal(state.error, '');
      assert.ok(!state.content.toString('utf8').includes('PRIVATE KEY'), 'no key in the reported content');
      assert.equal(new crypto.X509Certificate(state.content).serialNumber, new crypto.X509Certificate(pki.apiserver.certificatePem).serialNumber);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
