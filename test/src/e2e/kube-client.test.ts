/**
 * The controller's kubelet bootstrapping code with the client-node KubeClient against the fake API
 * server: bindings, token Secrets, the fake kubelet's bootstrap, serving CSR approval, token listing
 * and pruning. The controller calls the API with its own certificate identity and RBAC.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CertificatesV1Api } from '@kubernetes/client-node';
import {
  BOOTSTRAP_BINDING_NAMES,
  KUBELET_SERVING_SIGNER,
  KubeApiError,
  bootstrapBindings,
  bootstrapSettings,
  createKubeClient,
  createKubeClientFromText,
  ensureBindings,
  issueControllerApiCredentials,
  issueNodeToken,
  listTokens,
  pruneTokens,
  watchServingCsrs,
  approveServingCsrs,
  type ClusterRoleBindingObject,
  type IssuedNodeToken,
  type KubeClient,
  type ServingCsrResult,
} from '@kubetrust/controller/dist/kubelet-bootstrap';
import { parseInventory, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';
import { createCsr, generateKeyPair } from '@kubetrust/shared/dist/pki';
import { FakeApiServer } from '../harness/fake-apiserver';
import { controllerRbacForFake } from '../harness/fake-controller-rbac';
import { createFakeClusterPki, kubeConfigFor, renderKubeconfigFile, writeKubeconfigFile, type FakeClusterPki } from '../harness/fake-cluster';
import { runFakeKubelet, type FakeKubeletResult } from '../harness/fake-kubelet';

const HOST = '127.0.48.1';

function inventoryText(endpoint: string, extraNode = ''): string {
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: lab}
spec:
  apiServer: {endpoint: "${endpoint}"}
  kubelet: {credentials: bootstrap}
  nodes:
    - {name: cp-a, addresses: [192.0.2.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [192.0.2.21], hostnames: [wk-a.lab.example], roles: [worker]}
    - {name: wk-b, addresses: [192.0.2.22], roles: [worker]}
    - {name: wk-c, addresses: [192.0.2.23], roles: [worker]}
${extraNode}`;
}

function nodeOf(inventory: Inventory, name: string): NodeSpec {
  const found = inventory.nodes.find((candidate) => candidate.name === name);
  assert.ok(found, `node ${name} in the test inventory`);
  return found;
}

async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('client-node KubeClient against the fake API server', function () {
  let pki: FakeClusterPki;
  let server: FakeApiServer;
  let inventory: Inventory;
  let admin: KubeClient;
  let controller: KubeClient;
  let workDir: string;
  const tokens = new Map<string, IssuedNodeToken>();
  const kubelets = new Map<string, FakeKubeletResult>();

  async function issueToken(node: string, inv: Inventory = inventory, now = new Date()): Promise<IssuedNodeToken> {
    const issued = await issueNodeToken(controller, { inventory: inv, node: nodeOf(inv, node), clusterCaPem: pki.ca.certificatePem, settings: bootstrapSettings(inv), now });
    tokens.set(`${node}:${issued.token.id}`, issued);
    return issued;
  }

  function writeBootstrapKubeconfig(issued: IssuedNodeToken): string {
    const file = path.join(workDir, `${issued.node}-${issued.token.id}-bootstrap.conf`);
    fs.writeFileSync(file, issued.kubeconfig.reveal(), { mode: 0o600 });
    return file;
  }

  async function runKubelet(node: string, bootstrapKubeconfigPath: string, addresses: readonly string[], hostnames: readonly string[], servingCertificateTimeoutMs = 1_500): Promise<FakeKubeletResult> {
    const result = await runFakeKubelet({
      nodeName: node,
      bootstrapKubeconfigPath,
      kubeconfigPath: path.join(workDir, node, 'kubelet.conf'),
      certDir: path.join(workDir, node, 'pki'),
      addresses,
      hostnames,
      clientCertificateTimeoutMs: 10_000,
      servingCertificateTimeoutMs,
    });
    kubelets.set(node, result);
    return result;
  }

  function csr(name: string): { status?: { conditions?: { type: string; reason?: string }[]; certificate?: string } } {
    const found = server.getObject('certificatesigningrequests', name);
    assert.ok(found, `CSR ${name} is stored`);
    return found as ReturnType<typeof csr>;
  }

  function assertNoTokenSecret(text: string): void {
    for (const issued of tokens.values()) {
      assert.ok(!text.includes(issued.token.reveal().split('.')[1] as string), `token ${issued.token.id} secret must not appear in: ${text.slice(0, 200)}`);
    }
  }

  before(async function () {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-kube-client-'));
    pki = await createFakeClusterPki(HOST);
    const rbac = controllerRbacForFake();
    server = await FakeApiServer.start({
      host: HOST,
      port: 0,
      servingCertificatePem: pki.apiserver.certificatePem,
      servingKeyPem: pki.apiserver.keyPem,
      clientCaPem: pki.ca.certificatePem,
      signingCa: { certificatePem: pki.ca.certificatePem, privateKeyPem: pki.ca.keyPem },
      clusterRoles: rbac.roles,
    });
    inventory = parseInventory(inventoryText(server.url), 'lab.yaml').inventory;

    const adminFile = path.join(workDir, 'admin.conf');
    writeKubeconfigFile(adminFile, server.url, pki.ca.certificatePem, 'kubernetes-admin', await pki.issueClientCertificate('kubernetes-admin', ['system:masters']));
    admin = await createKubeClient(adminFile);
    for (const binding of rbac.bindings) await admin.createClusterRoleBinding(binding);

    const credentials = await issueControllerApiCredentials({
      inventory,
      clusterCa: { certificatePem: pki.ca.certificatePem, privateKey: crypto.createPrivateKey(pki.ca.keyPem), privateKeyPem: pki.ca.keyPem },
      now: new Date(),
    });
    controller = await createKubeClientFromText(credentials.kubeconfig);
  });

  after(async function () {
    await server?.close();
    fs.rmSync(workDir, { recursive: true, force: true });
  });

  describe('ensureBindings', function () {
    let foreign: Record<string, unknown> | undefined;

    before(async function () {
      // A binding that an administrator made by hand under kubetrust's name, granting the same.
      const expected = bootstrapBindings(inventory.name, bootstrapSettings(inventory).group)[2] as ClusterRoleBindingObject;
      await admin.createClusterRoleBinding({ ...expected, metadata: { name: expected.metadata.name, labels: { team: 'platform' } } });
      foreign = server.getObject('clusterrolebindings', BOOTSTRAP_BINDING_NAMES.approveClientRenewals);
    });

    it('creates the missing bindings', async function () {
      const results = await ensureBindings(controller, bootstrapBindings(inventory.name, bootstrapSettings(inventory).group));
      assert.deepEqual(
        results.map((result) => [result.name, result.status]),
        [
          [BOOTSTRAP_BINDING_NAMES.createCsrs, 'created'],
          [BOOTSTRAP_BINDING_NAMES.approveFirstClientCertificate, 'created'],
          [BOOTSTRAP_BINDING_NAMES.approveClientRenewals, 'conflict'],
        ],
      );
      assert.match(results[2]?.message ?? '', /without the label kubetrust\.io\/managed-by=kubetrust/);
      const stored = server.getObject('clusterrolebindings', BOOTSTRAP_BINDING_NAMES.createCsrs) as { metadata: { labels: Record<string, string> } };
      assert.equal(stored.metadata.labels['kubetrust.io/managed-by'], 'kubetrust');
    });

    it('is idempotent', async function () {
      const results = await ensureBindings(controller, bootstrapBindings(inventory.name, bootstrapSettings(inventory).group));
      assert.deepEqual(
        results.map((result) => result.status),
        ['unchanged', 'unchanged', 'conflict'],
      );
    });

    it('leaves the foreign binding alone', function () {
      assert.deepEqual(server.getObject('clusterrolebindings', BOOTSTRAP_BINDING_NAMES.approveClientRenewals), foreign);
      const writes = server.requests.filter((request) => request.user === 'kubetrust:controller' && request.method !== 'GET' && request.path.includes('clusterrolebindings'));
      assert.equal(writes.length, 2, 'the controller created two bindings and wrote nothing else');
    });
  });

  describe('API errors', function () {
    it('maps 404 to undefined and false', async function () {
      assert.equal(await controller.getSecret('kube-system', 'bootstrap-token-zzzzzz'), undefined);
      assert.equal(await controller.deleteSecret('kube-system', 'bootstrap-token-zzzzzz'), false);
      assert.equal(await controller.getNode('no-such-node'), undefined);
      assert.equal(await controller.getClusterRoleBinding('no-such-binding'), undefined);
    });

    it('maps 409 to AlreadyExists', async function () {
      const binding = bootstrapBindings(inventory.name, bootstrapSettings(inventory).group)[0] as ClusterRoleBindingObject;
      await assert.rejects(controller.createClusterRoleBinding(binding), (error: unknown) => {
        assert.ok(error instanceof KubeApiError);
        assert.equal(error.status, 409);
        assert.equal(error.reason, 'AlreadyExists');
        assert.match(error.message, /^create ClusterRoleBinding kubetrust:kubelet-bootstrap failed: /);
        return true;
      });
    });

    it('maps 403 to Forbidden', async function () {
      const issued = await issueToken('wk-c');
      const bootstrap = await createKubeClientFromText(issued.kubeconfig.reveal());
      await assert.rejects(bootstrap.listNodes(), (error: unknown) => {
        assert.ok(error instanceof KubeApiError);
        assert.equal(error.status, 403);
        assert.equal(error.reason, 'Forbidden');
        assert.match(error.message, /^list Nodes failed: nodes is forbidden: User "system:bootstrap:[a-z0-9]{6}"/);
        assertNoTokenSecret(error.message);
        assertNoTokenSecret(String(error.stack));
        return true;
      });
    });
  });

  describe('bootstrapping a kubelet', function () {
    it('issueNodeToken creates the Secret', async function () {
      const issued = await issueToken('wk-a');
      const secret = server.getObject('secrets', issued.secretName, 'kube-system') as { type: string; metadata: { labels: Record<string, string> }; data: Record<string, string> };
      assert.ok(secret, `Secret ${issued.secretName} is stored`);
      assert.equal(secret.type, 'bootstrap.kubernetes.io/token');
      assert.equal(secret.metadata.labels['kubetrust.io/node'], 'wk-a');
      assert.equal(Buffer.from(secret.data['token-id'] as string, 'base64').toString(), issued.token.id);
      const read = await controller.getSecret('kube-system', issued.secretName);
      assert.equal(read?.data?.['token-secret'], '<redacted>');
    });

    it('client CSR is approved, serving CSR stays pending', async function () {
      const issued = [...tokens.values()].find((token) => token.node === 'wk-a') as IssuedNodeToken;
      const result = await runKubelet('wk-a', writeBootstrapKubeconfig(issued), ['192.0.2.21'], ['wk-a', 'wk-a.lab.example']);

      assert.equal(result.bootstrapped, true);
      assert.ok(fs.existsSync(result.clientCertificatePath));
      const client = csr(result.clientCsrName as string);
      assert.equal(client.status?.conditions?.[0]?.type, 'Approved');
      assert.equal(result.steps.at(-1)?.name, 'serving-certificate-pending');
      assert.equal(csr(result.servingCsrName as string).status?.conditions, undefined);
    });

    it('approveServingCsrs approves the pending CSR', async function () {
      const servingCsrName = kubelets.get('wk-a')?.servingCsrName as string;
      const results = await approveServingCsrs(controller, inventory);
      assert.deepEqual(results, [{ name: servingCsrName, node: 'wk-a', outcome: 'approved', phase: 'approved', reasons: [] }]);
      const approved = csr(servingCsrName);
      assert.equal(approved.status?.conditions?.[0]?.reason, 'KubetrustApproved');
      await waitFor('the serving certificate of wk-a', () => csr(servingCsrName).status?.certificate);
      const again = await approveServingCsrs(controller, inventory);
      assert.deepEqual(
        again.map((result) => [result.name, result.outcome, result.phase]),
        [[servingCsrName, 'skipped', 'issued']],
      );
    });

    it('watchServingCsrs approves a new serving CSR', async function () {
      const seen: ServingCsrResult[] = [];
      const watch = await watchServingCsrs(controller, inventory, { onResult: (result) => seen.push(result) });
      try {
        const issued = await issueToken('wk-b');
        const result = await runKubelet('wk-b', writeBootstrapKubeconfig(issued), ['192.0.2.22'], ['wk-b'], 10_000);
        assert.equal(result.steps.at(-1)?.name, 'serving-certificate-written');
        assert.ok(fs.existsSync(result.servingCertificatePath as string));
        assert.deepEqual(
          seen.map((entry) => [entry.name, entry.node, entry.outcome]),
          [[result.servingCsrName, 'wk-b', 'approved']],
        );
      } finally {
        watch.stop();
      }
    });
  });

  describe('CSR watch', function () {
    it('starts again after the server ends it', async function () {
      const seen: ServingCsrResult[] = [];
      const watch = await watchServingCsrs(controller, inventory, { onResult: (result) => seen.push(result) });
      try {
        await waitFor('the watch to open', () => (server.requests.some((request) => request.user === 'kubetrust:controller' && request.code === 200 && request.path.endsWith('certificatesigningrequests') && request.method === 'GET') ? true : undefined));
        const before = server.requests.length;
        await waitFor('an open watch to end', () => (server.endWatches() > 0 ? true : undefined));
        // The next round lists again and opens a new watch on which a new CSR arrives.
        await waitFor('a new list of CSRs', () => (server.requests.slice(before).some((request) => request.user === 'kubetrust:controller' && request.path.endsWith('certificatesigningrequests')) ? true : undefined));

        const identity = await pki.issueClientCertificate('system:node:wk-a', ['system:nodes']);
        const certificates = kubeConfigFor(server.url, pki.ca.certificatePem, 'wk-a', identity).makeApiClient(CertificatesV1Api);
        const keyPair = await generateKeyPair('ECDSA-P256');
        const request = createCsr({ commonName: 'system:node:wk-a', organizations: ['system:nodes'], dnsNames: ['wk-a.lab.example'] }, keyPair);
        const created = await certificates.createCertificateSigningRequest({
          body: { metadata: { generateName: 'csr-' }, spec: { request: Buffer.from(request).toString('base64'), signerName: KUBELET_SERVING_SIGNER, usages: ['digital signature', 'server auth'] } },
        });
        const name = created.metadata?.name as string;
        const result = await waitFor('the new CSR to be approved', () => seen.find((entry) => entry.name === name));
        assert.equal(result.outcome, 'approved');
      } finally {
        watch.stop();
      }
    });
  });

  describe('serving CSRs that stay pending', function () {
    const pendingNames = new Map<string, string>();

    before(async function () {
      // wk-c requests an address that the inventory does not list.
      const wkC = [...tokens.values()].find((token) => token.node === 'wk-c') as IssuedNodeToken;
      const extraIp = await runKubelet('wk-c', writeBootstrapKubeconfig(wkC), ['192.0.2.23', '198.51.100.7'], ['wk-c'], 500);
      pendingNames.set('extra IP', extraIp.servingCsrName as string);

      // wk-x got a token while it was in the inventory and has since been removed from it.
      const withGhost = parseInventory(inventoryText(server.url, '    - {name: wk-x, addresses: [192.0.2.29], roles: [worker]}\n'), 'lab.yaml').inventory;
      const ghostToken = await issueToken('wk-x', withGhost);
      const ghost = await runKubelet('wk-x', writeBootstrapKubeconfig(ghostToken), ['192.0.2.29'], ['wk-x'], 500);
      pendingNames.set('unknown node', ghost.servingCsrName as string);

      // A serving CSR from the identity of wk-a that also requests client auth.
      const identity = await pki.issueClientCertificate('system:node:wk-a', ['system:nodes']);
      const certificates = kubeConfigFor(server.url, pki.ca.certificatePem, 'wk-a', identity).makeApiClient(CertificatesV1Api);
      const keyPair = await generateKeyPair('ECDSA-P256');
      const request = createCsr({ commonName: 'system:node:wk-a', organizations: ['system:nodes'], dnsNames: ['wk-a'], ipAddresses: ['192.0.2.21'] }, keyPair);
      const created = await certificates.createCertificateSigningRequest({
        body: {
          metadata: { generateName: 'csr-' },
          spec: { request: Buffer.from(request).toString('base64'), signerName: KUBELET_SERVING_SIGNER, usages: ['digital signature', 'server auth', 'client auth'] },
        },
      });
      pendingNames.set('client auth', created.metadata?.name as string);
    });

    it('stay pending with their reasons', async function () {
      const results = await approveServingCsrs(controller, inventory);
      const byName = new Map(results.map((result) => [result.name, result]));
      const expected: [string, string, string][] = [
        ['extra IP', 'wk-c', 'IP 198.51.100.7 is not an address of wk-c in the inventory'],
        ['unknown node', 'wk-x', 'node wk-x is not in the inventory'],
        ['client auth', 'wk-a', 'usage client auth is not allowed for a serving certificate'],
      ];
      for (const [label, node, reason] of expected) {
        const result = byName.get(pendingNames.get(label) as string);
        assert.ok(result, `${label}: CSR is listed`);
        assert.equal(result.outcome, 'pending', `${label}: outcome`);
        assert.equal(result.node, node, `${label}: node`);
        assert.deepEqual(result.reasons, [reason], `${label}: reasons`);
        assert.equal(csr(result.name).status?.conditions, undefined, `${label}: CSR has no condition`);
      }
    });
  });

  describe('tokens', function () {
    it('listTokens shows every token without its secret', async function () {
      const listings = await listTokens(controller, inventory, new Date());
      assert.deepEqual(
        listings.map((listing) => [listing.node, listing.state, listing.nodeBootstraps]),
        [
          ['wk-a', 'valid', true],
          ['wk-b', 'valid', true],
          ['wk-c', 'valid', true],
          ['wk-x', 'valid', false],
        ],
      );
      assertNoTokenSecret(JSON.stringify(listings));
    });

    it('pruneTokens deletes tokens of registered nodes', async function () {
      const results = await pruneTokens(controller, inventory, new Date());
      assert.deepEqual(
        results.map((result) => [result.node, result.reason, result.deleted]),
        [
          ['wk-a', 'node registered', true],
          ['wk-b', 'node registered', true],
          ['wk-c', 'node registered', true],
          ['wk-x', 'node not bootstrapping', true],
        ],
      );
      for (const result of results) assert.equal(server.getObject('secrets', result.secretName, 'kube-system'), undefined, `${result.secretName} deleted`);
      assert.deepEqual(await listTokens(controller, inventory, new Date()), []);
    });

    it('expired token is rejected, a fresh one works', async function () {
      const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
      const expired = await issueToken('wk-b', inventory, twoHoursAgo);
      const bootstrap = await createKubeClientFromText(expired.kubeconfig.reveal());
      await assert.rejects(bootstrap.listCsrs(), (error: unknown) => {
        assert.ok(error instanceof KubeApiError);
        assert.equal(error.status, 401);
        assertNoTokenSecret(error.message);
        return true;
      });
      assert.deepEqual(
        (await listTokens(controller, inventory, new Date())).map((listing) => [listing.tokenId, listing.state]),
        [[expired.token.id, 'expired']],
      );

      const fresh = await issueToken('wk-b');
      const freshClient = await createKubeClientFromText(fresh.kubeconfig.reveal());
      assert.ok(Array.isArray(await freshClient.listCsrs()));
    });
  });
});
