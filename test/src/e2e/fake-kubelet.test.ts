import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CertificatesV1Api, CoreV1Api, RbacAuthorizationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { inspectCertificate, isSignedBy, splitPem } from '@kubetrust/shared/dist/pki';
import { FakeApiServer } from '../harness/fake-apiserver';
import { createFakeClusterPki, kubeConfigFor, randomBootstrapToken, writeKubeconfigFile, type FakeClusterPki } from '../harness/fake-cluster';
import { CsrNotIssuedError, runFakeKubelet, type FakeKubeletStep } from '../harness/fake-kubelet';

const HOST = '127.0.45.2';
const BOOTSTRAP_GROUP = 'system:bootstrappers:kubetrust:nodes';

describe('fake kubelet', function () {
  let pki: FakeClusterPki;
  let server: FakeApiServer;
  let admin: KubeConfig;
  let workDir: string;

  async function bind(name: string, role: string, group: string): Promise<void> {
    await admin.makeApiClient(RbacAuthorizationV1Api).createClusterRoleBinding({
      body: {
        metadata: { name },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
        subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: group }],
      },
    });
  }

  /** Creates a bootstrap token Secret and writes a bootstrap kubeconfig for `nodeName`; returns its path. */
  async function bootstrapKubeconfig(nodeName: string): Promise<string> {
    const token = randomBootstrapToken();
    await admin.makeApiClient(CoreV1Api).createNamespacedSecret({
      namespace: 'kube-system',
      body: {
        metadata: { name: `bootstrap-token-${token.id}` },
        type: 'bootstrap.kubernetes.io/token',
        stringData: {
          'token-id': token.id,
          'token-secret': token.secret,
          'usage-bootstrap-authentication': 'true',
          expiration: new Date(Date.now() + 3600_000).toISOString(),
          'auth-extra-groups': BOOTSTRAP_GROUP,
        },
      },
    });
    const file = path.join(workDir, `${nodeName}-bootstrap-kubelet.conf`);
    writeKubeconfigFile(file, server.url, pki.ca.certificatePem, 'kubelet-bootstrap', { token: token.token });
    return file;
  }

  function nodePaths(nodeName: string): { kubeconfigPath: string; certDir: string } {
    return { kubeconfigPath: path.join(workDir, nodeName, 'kubelet.conf'), certDir: path.join(workDir, nodeName, 'pki') };
  }

  before(async function () {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-fake-kubelet-'));
    pki = await createFakeClusterPki(HOST);
    server = await FakeApiServer.start({
      host: HOST,
      port: 0,
      servingCertificatePem: pki.apiserver.certificatePem,
      servingKeyPem: pki.apiserver.keyPem,
      clientCaPem: pki.ca.certificatePem,
      signingCa: { certificatePem: pki.ca.certificatePem, privateKeyPem: pki.ca.keyPem },
    });
    admin = kubeConfigFor(server.url, pki.ca.certificatePem, 'kubernetes-admin', await pki.issueClientCertificate('kubernetes-admin', ['system:masters']));
    await bind('create-csrs-for-bootstrapping', 'system:node-bootstrapper', BOOTSTRAP_GROUP);
    await bind('auto-approve-csrs-for-group', 'system:certificates.k8s.io:certificatesigningrequests:nodeclient', BOOTSTRAP_GROUP);
    await bind('auto-approve-renewals-for-nodes', 'system:certificates.k8s.io:certificatesigningrequests:selfnodeclient', 'system:nodes');
  });

  after(async function () {
    await server?.close();
    fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('bootstraps, registers and gets a serving certificate', async function () {
    const steps: FakeKubeletStep[] = [];
    const approvals: Promise<unknown>[] = [];
    const certificates = admin.makeApiClient(CertificatesV1Api);
    const { kubeconfigPath, certDir } = nodePaths('wk-a');

    const result = await runFakeKubelet({
      nodeName: 'wk-a',
      bootstrapKubeconfigPath: await bootstrapKubeconfig('wk-a'),
      kubeconfigPath,
      certDir,
      addresses: ['192.0.2.21'],
      hostnames: ['wk-a', 'wk-a.example'],
      onStep: (step) => {
        steps.push(step);
        if (step.name !== 'serving-csr-created') return;
        // The approver that kubetrust will provide: the serving CSR waits until someone approves it.
        approvals.push(
          (async () => {
            await new Promise((resolve) => setTimeout(resolve, 300));
            const pending = await certificates.readCertificateSigningRequest({ name: step.detail });
            assert.equal(pending.status?.conditions, undefined, 'the serving CSR must not be auto-approved');
            await certificates.replaceCertificateSigningRequestApproval({
              name: step.detail,
              body: { ...pending, status: { conditions: [{ type: 'Approved', status: 'True', reason: 'TestApproval', message: 'approved by the test' }] } },
            });
          })(),
        );
      },
    });
    await Promise.all(approvals);

    assert.deepEqual(
      steps.map((step) => step.name),
      [
        'bootstrap-kubeconfig-loaded',
        'client-key-ready',
        'client-csr-created',
        'client-certificate-issued',
        'client-certificate-written',
        'kubeconfig-written',
        'node-registered',
        'serving-csr-created',
        'serving-certificate-issued',
        'serving-certificate-written',
      ],
    );
    assert.equal(result.bootstrapped, true);
    assert.match(result.clientCsrName ?? '', /^node-csr-[A-Za-z0-9_-]{43}$/);

    const clientCsr = await certificates.readCertificateSigningRequest({ name: result.clientCsrName as string });
    assert.match(clientCsr.spec.username ?? '', /^system:bootstrap:[a-z0-9]{6}$/);
    assert.equal(clientCsr.spec.signerName, 'kubernetes.io/kube-apiserver-client-kubelet');
    assert.deepEqual(clientCsr.spec.usages, ['digital signature', 'client auth']);

    const clientLink = path.join(certDir, 'kubelet-client-current.pem');
    assert.ok(fs.lstatSync(clientLink).isSymbolicLink());
    const clientPair = fs.realpathSync(clientLink);
    assert.match(path.basename(clientPair), /^kubelet-client-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}\.pem$/);
    assert.equal(fs.statSync(clientPair).mode & 0o777, 0o600);
    const clientPem = fs.readFileSync(clientPair, 'utf8');
    assert.equal(splitPem(clientPem, 'CERTIFICATE').length, 1);
    assert.match(clientPem, /-----BEGIN (EC )?PRIVATE KEY-----/);
    const clientCertificate = inspectCertificate(clientPem);
    assert.equal(clientCertificate.subject.commonName, 'system:node:wk-a');
    assert.deepEqual(clientCertificate.subject.organizations, ['system:nodes']);
    assert.ok(isSignedBy(clientCertificate.pem, pki.ca.certificatePem));
    assert.equal(fs.existsSync(path.join(certDir, 'kubelet-client.key.tmp')), false);

    const kubeconfig = fs.readFileSync(kubeconfigPath, 'utf8');
    assert.ok(kubeconfig.includes(`client-certificate: ${clientLink}`));
    assert.ok(!kubeconfig.includes('token'));

    const node = await admin.makeApiClient(CoreV1Api).readNode({ name: 'wk-a' });
    assert.deepEqual(node.status?.addresses?.map((address) => address.address), ['192.0.2.21', 'wk-a']);
    assert.ok(server.requests.some((request) => request.method === 'POST' && request.path === '/api/v1/nodes' && request.user === 'system:node:wk-a' && request.code === 201));

    const servingCsr = await certificates.readCertificateSigningRequest({ name: result.servingCsrName as string });
    assert.equal(servingCsr.spec.username, 'system:node:wk-a');
    assert.equal(servingCsr.spec.signerName, 'kubernetes.io/kubelet-serving');
    const serving = inspectCertificate(fs.readFileSync(result.servingCertificatePath as string, 'utf8'));
    assert.deepEqual(serving.extKeyUsage, ['serverAuth']);
    assert.deepEqual(serving.dnsNames, ['wk-a', 'wk-a.example']);
    assert.deepEqual(serving.ipAddresses, ['192.0.2.21']);
  });

  it('skips bootstrap with a valid kubeconfig', async function () {
    const { kubeconfigPath, certDir } = nodePaths('wk-a');
    const result = await runFakeKubelet({
      nodeName: 'wk-a',
      bootstrapKubeconfigPath: path.join(workDir, 'missing-bootstrap.conf'),
      kubeconfigPath,
      certDir,
      serverTlsBootstrap: false,
    });
    assert.equal(result.bootstrapped, false);
    assert.deepEqual(result.steps.map((step) => step.name), ['client-certificate-still-valid', 'node-registered']);
  });

  it('reports serving certificate pending', async function () {
    const { kubeconfigPath, certDir } = nodePaths('wk-b');
    const result = await runFakeKubelet({
      nodeName: 'wk-b',
      bootstrapKubeconfigPath: await bootstrapKubeconfig('wk-b'),
      kubeconfigPath,
      certDir,
      addresses: ['192.0.2.22'],
      keyAlgorithm: 'RSA-2048',
      servingCertificateTimeoutMs: 500,
    });
    assert.equal(result.steps.at(-1)?.name, 'serving-certificate-pending');
    assert.equal(result.servingCertificatePath, undefined);
    const servingCsr = await admin.makeApiClient(CertificatesV1Api).readCertificateSigningRequest({ name: result.servingCsrName as string });
    assert.deepEqual(servingCsr.spec.usages, ['digital signature', 'key encipherment', 'server auth']);
    assert.equal(servingCsr.status?.conditions, undefined);
  });

  it('fails when the client CSR is denied', async function () {
    const { kubeconfigPath, certDir } = nodePaths('wk-c');
    const certificates = admin.makeApiClient(CertificatesV1Api);
    await admin.makeApiClient(RbacAuthorizationV1Api).deleteClusterRoleBinding({ name: 'auto-approve-csrs-for-group' });
    try {
      const run = runFakeKubelet({
        nodeName: 'wk-c',
        bootstrapKubeconfigPath: await bootstrapKubeconfig('wk-c'),
        kubeconfigPath,
        certDir,
        onStep: (step) => {
          if (step.name !== 'client-csr-created') return;
          void certificates.readCertificateSigningRequest({ name: step.detail }).then((pending) =>
            certificates.replaceCertificateSigningRequestApproval({
              name: step.detail,
              body: { ...pending, status: { conditions: [{ type: 'Denied', status: 'True', reason: 'TestDenial', message: 'not in the inventory' }] } },
            }),
          );
        },
      });
      await assert.rejects(run, (err: unknown) => err instanceof CsrNotIssuedError && err.outcome === 'denied' && err.message.includes('not in the inventory'));
      assert.equal(fs.existsSync(kubeconfigPath), false);
      assert.ok(fs.existsSync(path.join(certDir, 'kubelet-client.key.tmp')), 'the key of an unfinished bootstrap is kept');
    } finally {
      await bind('auto-approve-csrs-for-group', 'system:certificates.k8s.io:certificatesigningrequests:nodeclient', BOOTSTRAP_GROUP);
    }
  });
});
