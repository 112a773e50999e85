import { strict as assert } from 'node:assert';
import * as https from 'node:https';
import {
  ApiException,
  CertificatesV1Api,
  CoreV1Api,
  RbacAuthorizationV1Api,
  Watch,
  type KubeConfig,
  type V1CertificateSigningRequest,
} from '@kubernetes/client-node';
import { createCsr, generateKeyPair, inspectCertificate } from '@kubetrust/shared/dist/pki';
import { FakeApiServer, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER } from '../harness/fake-apiserver';
import { createFakeClusterPki, kubeConfigFor, randomBootstrapToken, type FakeClusterPki, type KubeconfigCredentials } from '../harness/fake-cluster';

const HOST = '127.0.45.1';
const BOOTSTRAP_GROUP = 'system:bootstrappers:kubetrust:nodes';
const NODECLIENT_ROLE = 'system:certificates.k8s.io:certificatesigningrequests:nodeclient';
const SELFNODECLIENT_ROLE = 'system:certificates.k8s.io:certificatesigningrequests:selfnodeclient';

/** Calls the API and returns the HTTP status code of the ApiException, or 0 on success. */
async function statusOf(call: () => Promise<unknown>): Promise<number> {
  try {
    await call();
    return 0;
  } catch (err) {
    if (err instanceof ApiException) return err.code;
    throw err;
  }
}

async function failureBody(call: () => Promise<unknown>): Promise<Record<string, unknown>> {
  try {
    await call();
  } catch (err) {
    if (err instanceof ApiException) return (typeof err.body === 'string' ? JSON.parse(err.body) : err.body) as Record<string, unknown>;
    throw err;
  }
  throw new Error('expected the call to fail');
}

async function waitFor<T>(description: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${description}`);
}

/** Sends a GET without client credentials, trusting only the cluster CA. */
function rawGetFrom(server: FakeApiServer, caPem: string, path: string): Promise<{ code: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = https.get(`${server.url}${path}`, { ca: caPem }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ code: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    request.on('error', reject);
  });
}

describe('fake apiserver', function () {
  let pki: FakeClusterPki;
  let server: FakeApiServer;
  let admin: KubeConfig;

  const rawGet = (path: string): Promise<{ code: number; body: string }> => rawGetFrom(server, pki.ca.certificatePem, path);
  const configFor = (userName: string, credentials: KubeconfigCredentials): KubeConfig => kubeConfigFor(server.url, pki.ca.certificatePem, userName, credentials);

  async function createTokenSecret(id: string, data: Record<string, string>): Promise<void> {
    await admin.makeApiClient(CoreV1Api).createNamespacedSecret({
      namespace: 'kube-system',
      body: { metadata: { name: `bootstrap-token-${id}` }, type: 'bootstrap.kubernetes.io/token', stringData: data },
    });
  }

  async function newBootstrapToken(extra: Record<string, string> = {}): Promise<string> {
    const token = randomBootstrapToken();
    await createTokenSecret(token.id, {
      'token-id': token.id,
      'token-secret': token.secret,
      'usage-bootstrap-authentication': 'true',
      expiration: new Date(Date.now() + 3600_000).toISOString(),
      'auth-extra-groups': BOOTSTRAP_GROUP,
      ...extra,
    });
    return token.token;
  }

  async function bind(name: string, role: string, subject: { kind: 'Group' | 'User'; name: string }): Promise<void> {
    await admin.makeApiClient(RbacAuthorizationV1Api).createClusterRoleBinding({
      body: {
        metadata: { name },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
        subjects: [{ apiGroup: 'rbac.authorization.k8s.io', ...subject }],
      },
    });
  }

  async function unbind(name: string): Promise<void> {
    await admin.makeApiClient(RbacAuthorizationV1Api).deleteClusterRoleBinding({ name });
  }

  async function kubeletCsrBody(nodeName: string, signerName: string, options: { dnsNames?: string[]; ipAddresses?: string[] } = {}): Promise<V1CertificateSigningRequest> {
    const keys = await generateKeyPair('ECDSA-P256');
    const request = createCsr({ commonName: `system:node:${nodeName}`, organizations: ['system:nodes'], ...options }, keys);
    const usages = signerName === KUBELET_SERVING_SIGNER ? ['digital signature', 'server auth'] : ['digital signature', 'client auth'];
    return { metadata: { generateName: 'csr-' }, spec: { request: Buffer.from(request).toString('base64'), signerName, usages } };
  }

  before(async function () {
    pki = await createFakeClusterPki(HOST);
    server = await FakeApiServer.start({
      host: HOST,
      port: 0,
      servingCertificatePem: pki.apiserver.certificatePem,
      servingKeyPem: pki.apiserver.keyPem,
      clientCaPem: pki.ca.certificatePem,
      signingCa: { certificatePem: pki.ca.certificatePem, privateKeyPem: pki.ca.keyPem },
    });
    admin = configFor('kubernetes-admin', await pki.issueClientCertificate('kubernetes-admin', ['system:masters']));
  });

  after(async function () {
    await server?.close();
  });

  describe('authentication', function () {
    it('maps certificate CN and O to user and groups', async function () {
      const credentials = await pki.issueClientCertificate('jane', ['team-a', 'team-b']);
      await bind('jane-reads-nodes', 'cluster-admin', { kind: 'Group', name: 'team-b' });
      try {
        assert.equal(await statusOf(() => configFor('jane', credentials).makeApiClient(CoreV1Api).listNode()), 0);
        const csr = await configFor('jane', credentials)
          .makeApiClient(CertificatesV1Api)
          .createCertificateSigningRequest({ body: await kubeletCsrBody('x', KUBELET_SERVING_SIGNER, { dnsNames: ['x'] }) });
        assert.equal(csr.spec.username, 'jane');
        assert.deepEqual(csr.spec.groups, ['team-a', 'team-b', 'system:authenticated']);
      } finally {
        await unbind('jane-reads-nodes');
      }
    });

    it('rejects a certificate from another CA', async function () {
      const other = await createFakeClusterPki(HOST);
      const stranger = await other.issueClientCertificate('kubernetes-admin', ['system:masters']);
      assert.equal(await statusOf(() => configFor('stranger', stranger).makeApiClient(CoreV1Api).listNode()), 401);
    });

    it('rejects requests without credentials', async function () {
      assert.equal(await statusOf(() => configFor('nobody', {}).makeApiClient(CoreV1Api).listNode()), 401);
      // client-node drops the body of a 401, so the Status object is read with a plain HTTPS request.
      const response = await rawGet('/api/v1/nodes');
      assert.equal(response.code, 401);
      assert.deepEqual(JSON.parse(response.body), { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 });
    });

    it('authenticates a valid bootstrap token', async function () {
      const token = await newBootstrapToken();
      const id = token.split('.')[0] as string;
      await bind('bootstrap-csr-probe', 'system:node-bootstrapper', { kind: 'Group', name: BOOTSTRAP_GROUP });
      try {
        const csr = await configFor('bootstrap', { token })
          .makeApiClient(CertificatesV1Api)
          .createCertificateSigningRequest({ body: await kubeletCsrBody('probe', KUBELET_CLIENT_SIGNER) });
        assert.equal(csr.spec.username, `system:bootstrap:${id}`);
        assert.deepEqual(csr.spec.groups, ['system:bootstrappers', BOOTSTRAP_GROUP, 'system:authenticated']);
      } finally {
        await unbind('bootstrap-csr-probe');
      }
    });

    const rejectedTokens: { name: string; data: (id: string, secret: string) => Record<string, string> }[] = [
      { name: 'wrong token-secret', data: (id) => ({ 'token-id': id, 'token-secret': 'zzzzzzzzzzzzzzzz', 'usage-bootstrap-authentication': 'true' }) },
      { name: 'token-id not matching', data: (_id, secret) => ({ 'token-id': 'aaaaaa', 'token-secret': secret, 'usage-bootstrap-authentication': 'true' }) },
      { name: 'expired', data: (id, secret) => ({ 'token-id': id, 'token-secret': secret, 'usage-bootstrap-authentication': 'true', expiration: '2020-01-01T00:00:00Z' }) },
      { name: 'unparseable expiration', data: (id, secret) => ({ 'token-id': id, 'token-secret': secret, 'usage-bootstrap-authentication': 'true', expiration: 'tomorrow' }) },
      { name: 'missing usage flag', data: (id, secret) => ({ 'token-id': id, 'token-secret': secret }) },
      { name: 'usage flag not "true"', data: (id, secret) => ({ 'token-id': id, 'token-secret': secret, 'usage-bootstrap-authentication': 'yes' }) },
      {
        name: 'bare system:bootstrappers extra group',
        data: (id, secret) => ({ 'token-id': id, 'token-secret': secret, 'usage-bootstrap-authentication': 'true', 'auth-extra-groups': 'system:bootstrappers' }),
      },
      {
        name: 'one invalid extra group',
        data: (id, secret) => ({ 'token-id': id, 'token-secret': secret, 'usage-bootstrap-authentication': 'true', 'auth-extra-groups': `${BOOTSTRAP_GROUP},system:masters` }),
      },
    ];
    for (const testCase of rejectedTokens) {
      it(`rejects token with ${testCase.name}`, async function () {
        const token = randomBootstrapToken();
        await createTokenSecret(token.id, testCase.data(token.id, token.secret));
        const code = await statusOf(() => configFor('bootstrap', { token: token.token }).makeApiClient(CertificatesV1Api).listCertificateSigningRequest());
        assert.equal(code, 401);
      });
    }

    it('rejects token whose Secret has another type', async function () {
      const token = randomBootstrapToken();
      await admin.makeApiClient(CoreV1Api).createNamespacedSecret({
        namespace: 'kube-system',
        body: { metadata: { name: `bootstrap-token-${token.id}` }, type: 'Opaque', stringData: { 'token-id': token.id, 'token-secret': token.secret, 'usage-bootstrap-authentication': 'true' } },
      });
      assert.equal(await statusOf(() => configFor('bootstrap', { token: token.token }).makeApiClient(CertificatesV1Api).listCertificateSigningRequest()), 401);
    });

    it('rejects token of the wrong format', async function () {
      assert.equal(await statusOf(() => configFor('bootstrap', { token: 'ABCDEF.0123456789abcdef' }).makeApiClient(CoreV1Api).listNode()), 401);
    });

    it('rejects token after its Secret is deleted', async function () {
      const token = await newBootstrapToken();
      const id = token.split('.')[0] as string;
      await bind('bootstrap-delete-probe', 'system:node-bootstrapper', { kind: 'Group', name: BOOTSTRAP_GROUP });
      try {
        const bootstrap = configFor('bootstrap', { token }).makeApiClient(CertificatesV1Api);
        assert.equal(await statusOf(() => bootstrap.listCertificateSigningRequest()), 0);
        await admin.makeApiClient(CoreV1Api).deleteNamespacedSecret({ name: `bootstrap-token-${id}`, namespace: 'kube-system' });
        assert.equal(await statusOf(() => bootstrap.listCertificateSigningRequest()), 401);
      } finally {
        await unbind('bootstrap-delete-probe');
      }
    });
  });

  describe('resources', function () {
    it('stores Secret data as base64', async function () {
      const core = admin.makeApiClient(CoreV1Api);
      const created = await core.createNamespacedSecret({
        namespace: 'default',
        body: { metadata: { name: 'shape', labels: { app: 'kubetrust', tier: 'test' } }, stringData: { greeting: 'hello' }, data: { raw: Buffer.from('bytes').toString('base64') } },
      });
      assert.equal(created.type, 'Opaque');
      assert.equal(created.data?.greeting, Buffer.from('hello').toString('base64'));
      assert.equal(created.data?.raw, Buffer.from('bytes').toString('base64'));
      assert.equal(created.stringData, undefined);
      assert.match(created.metadata?.uid ?? '', /^[0-9a-f-]{36}$/);
      assert.match(created.metadata?.resourceVersion ?? '', /^\d+$/);

      const read = await core.readNamespacedSecret({ name: 'shape', namespace: 'default' });
      assert.equal(read.metadata?.uid, created.metadata?.uid);
      assert.equal(read.metadata?.resourceVersion, created.metadata?.resourceVersion);
    });

    it('lists Secrets by label selector', async function () {
      const core = admin.makeApiClient(CoreV1Api);
      await core.createNamespacedSecret({ namespace: 'default', body: { metadata: { name: 'other', labels: { app: 'else' } } } });
      const byApp = await core.listNamespacedSecret({ namespace: 'default', labelSelector: 'app=kubetrust' });
      assert.deepEqual(byApp.items.map((item) => item.metadata?.name), ['shape']);
      const notIn = await core.listNamespacedSecret({ namespace: 'default', labelSelector: 'app notin (kubetrust)' });
      assert.deepEqual(notIn.items.map((item) => item.metadata?.name), ['other']);
      const withTier = await core.listNamespacedSecret({ namespace: 'default', labelSelector: 'tier,app!=else' });
      assert.deepEqual(withTier.items.map((item) => item.metadata?.name), ['shape']);
      assert.equal(byApp.kind, 'SecretList');
    });

    it('returns 409, 404 and 422 Status objects', async function () {
      const core = admin.makeApiClient(CoreV1Api);
      const duplicate = await failureBody(() => core.createNamespacedSecret({ namespace: 'default', body: { metadata: { name: 'shape' } } }));
      assert.equal(duplicate.code, 409);
      assert.equal(duplicate.reason, 'AlreadyExists');
      assert.equal(duplicate.message, 'secrets "shape" already exists');

      const missing = await failureBody(() => core.readNamespacedSecret({ name: 'absent', namespace: 'default' }));
      assert.equal(missing.code, 404);
      assert.equal(missing.reason, 'NotFound');
      assert.equal(missing.message, 'secrets "absent" not found');

      const unnamed = await failureBody(() => core.createNamespacedSecret({ namespace: 'default', body: { metadata: {} } }));
      assert.equal(unnamed.code, 422);
      assert.equal(unnamed.reason, 'Invalid');
      assert.equal(unnamed.status, 'Failure');
      assert.equal(unnamed.apiVersion, 'v1');
    });

    it('deletes a Secret', async function () {
      const core = admin.makeApiClient(CoreV1Api);
      const status = await core.deleteNamespacedSecret({ name: 'other', namespace: 'default' });
      assert.equal(status.status, 'Success');
      assert.equal(await statusOf(() => core.readNamespacedSecret({ name: 'other', namespace: 'default' })), 404);
    });

    it('creates, reads, lists and deletes ClusterRoleBindings', async function () {
      const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
      await bind('crb-shape', 'system:node-bootstrapper', { kind: 'Group', name: BOOTSTRAP_GROUP });
      const read = await rbac.readClusterRoleBinding({ name: 'crb-shape' });
      assert.equal(read.roleRef.name, 'system:node-bootstrapper');
      assert.equal(read.subjects?.[0]?.name, BOOTSTRAP_GROUP);
      const names = (await rbac.listClusterRoleBinding()).items.map((item) => item.metadata?.name);
      assert.ok(names.includes('crb-shape'));
      assert.ok(names.includes('cluster-admin'));
      await unbind('crb-shape');
      assert.equal(await statusOf(() => rbac.readClusterRoleBinding({ name: 'crb-shape' })), 404);
    });

    it('rejects a ClusterRoleBinding without roleRef', async function () {
      const body = await failureBody(() =>
        admin.makeApiClient(RbacAuthorizationV1Api).createClusterRoleBinding({ body: { metadata: { name: 'broken' } } as never }),
      );
      assert.equal(body.code, 422);
    });

    it('rejects a CSR without usages', async function () {
      const csr = await kubeletCsrBody('x', KUBELET_CLIENT_SIGNER);
      csr.spec.usages = [];
      const body = await failureBody(() => admin.makeApiClient(CertificatesV1Api).createCertificateSigningRequest({ body: csr }));
      assert.equal(body.code, 422);
      assert.match(String(body.message), /spec\.usages: Required value/);
    });
  });

  describe('authorization', function () {
    it('forbids a user without a binding', async function () {
      const credentials = await pki.issueClientCertificate('bob', ['developers']);
      const body = await failureBody(() => configFor('bob', credentials).makeApiClient(CoreV1Api).listNamespacedSecret({ namespace: 'kube-system' }));
      assert.equal(body.code, 403);
      assert.equal(body.reason, 'Forbidden');
      assert.equal(body.message, 'secrets is forbidden: User "bob" cannot list resource "secrets" in API group "" in the namespace "kube-system"');
    });

    it('forbids bootstrap token CSRs without binding', async function () {
      const token = await newBootstrapToken();
      const id = token.split('.')[0] as string;
      const body = await failureBody(async () =>
        configFor('bootstrap', { token })
          .makeApiClient(CertificatesV1Api)
          .createCertificateSigningRequest({ body: await kubeletCsrBody('wk-a', KUBELET_CLIENT_SIGNER) }),
      );
      assert.equal(body.code, 403);
      assert.equal(
        body.message,
        `certificatesigningrequests.certificates.k8s.io is forbidden: User "system:bootstrap:${id}" cannot create resource "certificatesigningrequests" in API group "certificates.k8s.io" at the cluster scope`,
      );
    });

    it('forbids bootstrap CSRs bound to another group', async function () {
      const token = await newBootstrapToken();
      await bind('other-group-bootstrapper', 'system:node-bootstrapper', { kind: 'Group', name: 'system:bootstrappers:kubeadm:default-node-token' });
      try {
        const code = await statusOf(async () =>
          configFor('bootstrap', { token })
            .makeApiClient(CertificatesV1Api)
            .createCertificateSigningRequest({ body: await kubeletCsrBody('wk-a', KUBELET_CLIENT_SIGNER) }),
        );
        assert.equal(code, 403);
      } finally {
        await unbind('other-group-bootstrapper');
      }
    });

    it('honours extra ClusterRoles', async function () {
      server.addClusterRole({ metadata: { name: 'secret-reader' }, rules: [{ verbs: ['get', 'list'], apiGroups: [''], resources: ['secrets'] }] });
      const credentials = await pki.issueClientCertificate('carol', []);
      await bind('carol-reads-secrets', 'secret-reader', { kind: 'User', name: 'carol' });
      try {
        const core = configFor('carol', credentials).makeApiClient(CoreV1Api);
        assert.equal(await statusOf(() => core.listNamespacedSecret({ namespace: 'default' })), 0);
        assert.equal(await statusOf(() => core.deleteNamespacedSecret({ name: 'shape', namespace: 'default' })), 403);
      } finally {
        await unbind('carol-reads-secrets');
      }
    });
  });

  describe('certificate signing requests', function () {
    let bootstrapToken: string;

    before(async function () {
      bootstrapToken = await newBootstrapToken();
      await bind('create-csrs-for-bootstrapping', 'system:node-bootstrapper', { kind: 'Group', name: BOOTSTRAP_GROUP });
    });

    after(async function () {
      await unbind('create-csrs-for-bootstrapping');
    });

    it('leaves client CSRs pending without nodeclient binding', async function () {
      const api = configFor('bootstrap', { token: bootstrapToken }).makeApiClient(CertificatesV1Api);
      const created = await api.createCertificateSigningRequest({ body: await kubeletCsrBody('wk-pending', KUBELET_CLIENT_SIGNER) });
      await new Promise((resolve) => setTimeout(resolve, 300));
      const read = await api.readCertificateSigningRequest({ name: created.metadata?.name as string });
      assert.equal(read.status?.conditions, undefined);
      assert.equal(read.status?.certificate, undefined);
    });

    it('auto-approves and signs client CSRs with nodeclient binding', async function () {
      await bind('auto-approve-csrs-for-group', NODECLIENT_ROLE, { kind: 'Group', name: BOOTSTRAP_GROUP });
      try {
        const api = configFor('bootstrap', { token: bootstrapToken }).makeApiClient(CertificatesV1Api);
        const created = await api.createCertificateSigningRequest({ body: await kubeletCsrBody('wk-a', KUBELET_CLIENT_SIGNER) });
        const name = created.metadata?.name as string;
        const issued = await waitFor('the client certificate', async () => {
          const csr = await api.readCertificateSigningRequest({ name });
          return (csr.status?.certificate ?? '') === '' ? undefined : csr;
        });
        const approved = issued.status?.conditions?.find((condition) => condition.type === 'Approved');
        assert.equal(approved?.status, 'True');
        assert.equal(approved?.reason, 'AutoApproved');
        const certificate = inspectCertificate(Buffer.from(issued.status?.certificate as string, 'base64').toString('utf8'));
        assert.equal(certificate.subject.commonName, 'system:node:wk-a');
        assert.deepEqual(certificate.subject.organizations, ['system:nodes']);
        assert.deepEqual(certificate.extKeyUsage, ['clientAuth']);
        assert.equal(certificate.issuer.commonName, 'kubernetes');
      } finally {
        await unbind('auto-approve-csrs-for-group');
      }
    });

    it('auto-approves node renewals with selfnodeclient binding', async function () {
      await bind('auto-approve-renewals-for-nodes', SELFNODECLIENT_ROLE, { kind: 'Group', name: 'system:nodes' });
      try {
        const node = await pki.issueClientCertificate('system:node:wk-r', ['system:nodes']);
        const api = configFor('wk-r', node).makeApiClient(CertificatesV1Api);
        const own = await api.createCertificateSigningRequest({ body: await kubeletCsrBody('wk-r', KUBELET_CLIENT_SIGNER) });
        await waitFor('the renewal approval', async () => {
          const csr = await api.readCertificateSigningRequest({ name: own.metadata?.name as string });
          return (csr.status?.certificate ?? '') === '' ? undefined : csr;
        });
        const foreign = await api.createCertificateSigningRequest({ body: await kubeletCsrBody('wk-other', KUBELET_CLIENT_SIGNER) });
        await new Promise((resolve) => setTimeout(resolve, 300));
        const unapproved = await api.readCertificateSigningRequest({ name: foreign.metadata?.name as string });
        assert.equal(unapproved.status?.conditions, undefined);
      } finally {
        await unbind('auto-approve-renewals-for-nodes');
      }
    });

    it('keeps serving CSRs pending until approved', async function () {
      await bind('auto-approve-everything', NODECLIENT_ROLE, { kind: 'Group', name: 'system:nodes' });
      await bind('auto-approve-renewals-everything', SELFNODECLIENT_ROLE, { kind: 'Group', name: 'system:nodes' });
      try {
        const node = await pki.issueClientCertificate('system:node:wk-s', ['system:nodes']);
        const nodeApi = configFor('wk-s', node).makeApiClient(CertificatesV1Api);
        const created = await nodeApi.createCertificateSigningRequest({
          body: await kubeletCsrBody('wk-s', KUBELET_SERVING_SIGNER, { dnsNames: ['wk-s'], ipAddresses: ['192.0.2.21'] }),
        });
        const name = created.metadata?.name as string;
        assert.match(name, /^csr-[a-z0-9]{5}$/);
        await new Promise((resolve) => setTimeout(resolve, 300));
        const pending = await nodeApi.readCertificateSigningRequest({ name });
        assert.equal(pending.status?.conditions, undefined);

        const forbiddenApproval = await failureBody(() =>
          nodeApi.replaceCertificateSigningRequestApproval({
            name,
            body: { ...pending, status: { conditions: [{ type: 'Approved', status: 'True', reason: 'SelfApproved', message: 'self' }] } },
          }),
        );
        assert.equal(forbiddenApproval.code, 403);

        const adminApi = admin.makeApiClient(CertificatesV1Api);
        await adminApi.replaceCertificateSigningRequestApproval({
          name,
          body: { ...pending, status: { conditions: [{ type: 'Approved', status: 'True', reason: 'KubetrustApproved', message: 'SANs match the inventory' }] } },
        });
        const issued = await waitFor('the serving certificate', async () => {
          const csr = await nodeApi.readCertificateSigningRequest({ name });
          return (csr.status?.certificate ?? '') === '' ? undefined : csr;
        });
        const certificate = inspectCertificate(Buffer.from(issued.status?.certificate as string, 'base64').toString('utf8'));
        assert.deepEqual(certificate.extKeyUsage, ['serverAuth']);
        assert.deepEqual(certificate.dnsNames, ['wk-s']);
        assert.deepEqual(certificate.ipAddresses, ['192.0.2.21']);
      } finally {
        await unbind('auto-approve-everything');
        await unbind('auto-approve-renewals-everything');
      }
    });

    it('rejects approval with a stale resourceVersion', async function () {
      const adminApi = admin.makeApiClient(CertificatesV1Api);
      const created = await adminApi.createCertificateSigningRequest({ body: await kubeletCsrBody('wk-c', KUBELET_SERVING_SIGNER, { dnsNames: ['wk-c'] }) });
      const name = created.metadata?.name as string;
      await adminApi.replaceCertificateSigningRequestApproval({ name, body: { ...created, status: { conditions: [{ type: 'Denied', status: 'True', reason: 'Test' }] } } });
      const stale = await failureBody(() =>
        adminApi.replaceCertificateSigningRequestApproval({ name, body: { ...created, status: { conditions: [{ type: 'Approved', status: 'True', reason: 'Test' }] } } }),
      );
      assert.equal(stale.code, 409);
      assert.equal(stale.reason, 'Conflict');
    });

    it('rejects both Approved and Denied', async function () {
      const adminApi = admin.makeApiClient(CertificatesV1Api);
      const created = await adminApi.createCertificateSigningRequest({ body: await kubeletCsrBody('wk-d', KUBELET_SERVING_SIGNER, { dnsNames: ['wk-d'] }) });
      const body = await failureBody(() =>
        adminApi.replaceCertificateSigningRequestApproval({
          name: created.metadata?.name as string,
          body: { ...created, status: { conditions: [{ type: 'Approved', status: 'True' }, { type: 'Denied', status: 'True' }] } },
        }),
      );
      assert.equal(body.code, 422);
    });

    it('marks invalid serving CSRs Failed', async function () {
      const adminApi = admin.makeApiClient(CertificatesV1Api);
      const created = await adminApi.createCertificateSigningRequest({ body: await kubeletCsrBody('wk-nosan', KUBELET_SERVING_SIGNER) });
      const name = created.metadata?.name as string;
      await adminApi.replaceCertificateSigningRequestApproval({ name, body: { ...created, status: { conditions: [{ type: 'Approved', status: 'True', reason: 'Test' }] } } });
      const failed = await waitFor('the Failed condition', async () => {
        const csr = await adminApi.readCertificateSigningRequest({ name });
        return csr.status?.conditions?.find((condition) => condition.type === 'Failed');
      });
      assert.equal(failed.reason, 'SignerValidationFailure');
    });

    it('watch delivers ADDED and MODIFIED events', async function () {
      const adminApi = admin.makeApiClient(CertificatesV1Api);
      const list = await adminApi.listCertificateSigningRequest();
      const events: { phase: string; name: string; resourceVersion: string }[] = [];
      const abort = await new Watch(admin).watch(
        '/apis/certificates.k8s.io/v1/certificatesigningrequests',
        { resourceVersion: list.metadata?.resourceVersion },
        (phase, object: V1CertificateSigningRequest) => {
          events.push({ phase, name: object.metadata?.name ?? '', resourceVersion: object.metadata?.resourceVersion ?? '' });
        },
        () => undefined,
      );
      try {
        const created = await adminApi.createCertificateSigningRequest({ body: await kubeletCsrBody('wk-w', KUBELET_SERVING_SIGNER, { dnsNames: ['wk-w'] }) });
        const name = created.metadata?.name as string;
        await adminApi.replaceCertificateSigningRequestApproval({ name, body: { ...created, status: { conditions: [{ type: 'Approved', status: 'True', reason: 'Test' }] } } });
        await waitFor('the signing event', async () => (events.filter((event) => event.name === name).length >= 3 ? true : undefined));
        const mine = events.filter((event) => event.name === name);
        assert.deepEqual(mine.map((event) => event.phase), ['ADDED', 'MODIFIED', 'MODIFIED']);
        assert.equal(mine[0]?.resourceVersion, created.metadata?.resourceVersion);
        const versions = mine.map((event) => Number(event.resourceVersion));
        assert.ok(versions[0]! < versions[1]!, `resourceVersions ${versions.join(', ')} must increase`);
        assert.ok(versions[1]! < versions[2]!, `resourceVersions ${versions.join(', ')} must increase`);
      } finally {
        abort.abort();
      }
    });
  });

  describe('nodes', function () {
    it('lets a kubelet create only its own Node', async function () {
      const node = await pki.issueClientCertificate('system:node:wk-n', ['system:nodes']);
      const core = configFor('wk-n', node).makeApiClient(CoreV1Api);
      const created = await core.createNode({ body: { metadata: { name: 'wk-n' } } });
      assert.equal(created.metadata?.name, 'wk-n');
      assert.equal((await core.readNode({ name: 'wk-n' })).metadata?.uid, created.metadata?.uid);

      const other = await failureBody(() => core.createNode({ body: { metadata: { name: 'wk-m' } } }));
      assert.equal(other.code, 403);
      assert.equal(other.message, 'nodes "wk-m" is forbidden: node "wk-n" is not allowed to modify node "wk-m"');
      assert.equal(await statusOf(() => core.readNode({ name: 'wk-m' })), 404);
    });

    it('forbids Node creation to a bootstrap token', async function () {
      const token = await newBootstrapToken();
      assert.equal(await statusOf(() => configFor('bootstrap', { token }).makeApiClient(CoreV1Api).createNode({ body: { metadata: { name: 'wk-t' } } })), 403);
    });

    it('lists Nodes for an administrator', async function () {
      const nodes = await admin.makeApiClient(CoreV1Api).listNode();
      assert.equal(nodes.kind, 'NodeList');
      assert.ok(nodes.items.some((item) => item.metadata?.name === 'wk-n'));
    });
  });
});
