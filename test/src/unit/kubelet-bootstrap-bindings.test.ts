/**
 * The bootstrap ClusterRoleBindings and the controller's own RBAC: what ensureBindings creates,
 * that a second run changes nothing, and that bindings kubetrust did not create are never touched.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as YAML from 'yaml';
import {
  BOOTSTRAP_BINDING_NAMES,
  BootstrapToken,
  bootstrapBindings,
  bootstrapSettings,
  catalogueBindings,
  CONTROLLER_API_USER,
  controllerRbacManifest,
  controllerRbacObjects,
  ensureBindings,
  issueControllerApiCredentials,
  listOwnBindings,
  readTokenSecret,
  tokenSecret,
  type ClusterRoleBindingObject,
} from '@kubetrust/controller/dist/kubelet-bootstrap';
import { selfSignedCa } from '@kubetrust/controller/dist/authority';
import { parseInventory } from '@kubetrust/shared/dist/inventory';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { generateKeyPair, inspectCertificate, isSignedBy, privateKeyToPem } from '@kubetrust/shared/dist/pki';
import { runController } from '../harness/local-cluster';
import { MemoryKubeClient } from '../harness/memory-kube-client';

const GROUP = 'system:bootstrappers:kubetrust:prod';
const NOW = new Date('2030-05-06T07:08:09Z');

function subjectsOf(binding: ClusterRoleBindingObject | undefined): string[] {
  return (binding?.subjects ?? []).map((subject) => `${subject.kind}/${subject.name}`);
}

describe('bootstrap bindings', () => {
  it('bind the token group and system:nodes to the three roles', () => {
    const byName = new Map(bootstrapBindings('prod', GROUP).map((binding) => [binding.metadata.name, binding]));
    assert.equal(byName.size, 3);
    const createCsrs = byName.get(BOOTSTRAP_BINDING_NAMES.createCsrs);
    const firstClient = byName.get(BOOTSTRAP_BINDING_NAMES.approveFirstClientCertificate);
    const renewals = byName.get(BOOTSTRAP_BINDING_NAMES.approveClientRenewals);
    assert.equal(createCsrs?.roleRef.name, 'system:node-bootstrapper');
    assert.deepEqual(subjectsOf(createCsrs), [`Group/${GROUP}`]);
    assert.equal(firstClient?.roleRef.name, 'system:certificates.k8s.io:certificatesigningrequests:nodeclient');
    assert.deepEqual(subjectsOf(firstClient), [`Group/${GROUP}`]);
    assert.equal(renewals?.roleRef.name, 'system:certificates.k8s.io:certificatesigningrequests:selfnodeclient');
    assert.deepEqual(subjectsOf(renewals), ['Group/system:nodes']);
    for (const binding of byName.values()) {
      assert.match(binding.metadata.name, /^kubetrust:/);
      assert.equal(binding.metadata.labels?.['kubetrust.io/managed-by'], 'kubetrust');
      assert.equal(binding.roleRef.apiGroup, 'rbac.authorization.k8s.io');
      assert.equal(binding.roleRef.kind, 'ClusterRole');
      assert.equal(binding.subjects?.[0]?.apiGroup, 'rbac.authorization.k8s.io');
    }
  });

  it('creates missing bindings, then leaves them unchanged', async () => {
    const client = new MemoryKubeClient();
    const first = await ensureBindings(client, bootstrapBindings('prod', GROUP));
    assert.deepEqual(first.map((result) => result.status), ['created', 'created', 'created']);
    const calls = client.calls.length;
    const second = await ensureBindings(client, bootstrapBindings('prod', GROUP));
    assert.deepEqual(second.map((result) => result.status), ['unchanged', 'unchanged', 'unchanged']);
    assert.ok(client.calls.slice(calls).every((call) => call.startsWith('getClusterRoleBinding')), client.calls.slice(calls).join('\n'));
    assert.equal((await listOwnBindings(client, 'prod')).length, 3);
  });

  it('reports a foreign binding of the same name as a conflict', async () => {
    const client = new MemoryKubeClient();
    const foreign: ClusterRoleBindingObject = {
      metadata: { name: BOOTSTRAP_BINDING_NAMES.createCsrs },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
      subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: 'someone' }],
    };
    await client.createClusterRoleBinding(foreign);
    const before = JSON.stringify(client.bindings.get(foreign.metadata.name));
    const results = await ensureBindings(client, bootstrapBindings('prod', GROUP));
    const result = results.find((candidate) => candidate.name === foreign.metadata.name);
    assert.equal(result?.status, 'conflict');
    assert.match(result?.message ?? '', /kubetrust\.io\/managed-by/);
    assert.equal(JSON.stringify(client.bindings.get(foreign.metadata.name)), before);
    assert.deepEqual(results.filter((candidate) => candidate.status === 'created').length, 2);
  });

  it('never touches bindings of other names', async () => {
    const client = new MemoryKubeClient();
    await client.createClusterRoleBinding({
      metadata: { name: 'kubeadm:kubelet-bootstrap' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:node-bootstrapper' },
      subjects: [{ kind: 'Group', apiGroup: 'rbac.authorization.k8s.io', name: 'system:bootstrappers:kubeadm:default-node-token' }],
    });
    await ensureBindings(client, bootstrapBindings('prod', GROUP));
    const touched = client.calls.filter((call) => call.includes('kubeadm:kubelet-bootstrap'));
    assert.deepEqual(touched, ['createClusterRoleBinding kubeadm:kubelet-bootstrap']);
    assert.deepEqual(subjectsOf(client.bindings.get('kubeadm:kubelet-bootstrap')), ['Group/system:bootstrappers:kubeadm:default-node-token']);
  });

  it('reports its own binding with another group as outdated', async () => {
    const client = new MemoryKubeClient();
    await ensureBindings(client, bootstrapBindings('prod', 'system:bootstrappers:old'));
    const results = await ensureBindings(client, bootstrapBindings('prod', GROUP));
    const byName = new Map(results.map((result) => [result.name, result]));
    assert.equal(byName.get(BOOTSTRAP_BINDING_NAMES.createCsrs)?.status, 'outdated');
    assert.match(byName.get(BOOTSTRAP_BINDING_NAMES.createCsrs)?.message ?? '', /system:bootstrappers:old/);
    assert.equal(byName.get(BOOTSTRAP_BINDING_NAMES.approveClientRenewals)?.status, 'unchanged');
    assert.deepEqual(subjectsOf(client.bindings.get(BOOTSTRAP_BINDING_NAMES.createCsrs)), ['Group/system:bootstrappers:old']);
  });

  it('judges a binding created concurrently instead of failing', async () => {
    const client = new MemoryKubeClient();
    const expected = bootstrapBindings('prod', GROUP);
    const get = client.getClusterRoleBinding.bind(client);
    let raced = false;
    client.getClusterRoleBinding = async (name) => {
      const found = await get(name);
      if (!raced && found === undefined) {
        raced = true;
        await client.createClusterRoleBinding({ ...expected[0]!, metadata: { name: expected[0]!.metadata.name } });
      }
      return found;
    };
    const results = await ensureBindings(client, expected);
    assert.equal(results[0]?.status, 'conflict');
  });
});

describe('bootstrap token forbidden to create CSRs', () => {
  it('every token carries exactly the bound group', () => {
    const inventory = parseInventory(
      `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: prod}
spec:
  apiServer: {endpoint: "https://198.51.100.100:6443"}
  kubelet: {credentials: bootstrap}
  nodes:
    - {name: cp-a, addresses: [198.51.100.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [198.51.100.21], roles: [worker]}
    - {name: wk-b, addresses: [198.51.100.22], roles: [worker]}
`,
      'unit.yaml',
    ).inventory;
    const settings = bootstrapSettings(inventory, { group: 'system:bootstrappers:cluster-nodes' });
    const bound = bootstrapBindings(inventory.name, settings.group)
      .filter((binding) => binding.metadata.name !== BOOTSTRAP_BINDING_NAMES.approveClientRenewals)
      .flatMap((binding) => (binding.subjects ?? []).map((subject) => subject.name));
    assert.deepEqual(bound, ['system:bootstrappers:cluster-nodes', 'system:bootstrappers:cluster-nodes']);
    for (const node of ['wk-a', 'wk-b']) {
      const record = readTokenSecret(tokenSecret({ token: BootstrapToken.generate(), cluster: inventory.name, node, group: settings.group, now: NOW }));
      assert.deepEqual(record?.groups, ['system:bootstrappers:cluster-nodes'], node);
    }
  });

  it('the default group is bound and carried alike', () => {
    const inventory = parseInventory('apiVersion: kubetrust/v1\nkind: Cluster\nmetadata: {name: prod}\nspec:\n  apiServer: {endpoint: "https://192.0.2.1:6443"}\n  nodes: [{name: c, addresses: [192.0.2.3], roles: [etcd, master]}, {name: w, addresses: [192.0.2.2], roles: [worker]}]\n', 'unit.yaml').inventory;
    const settings = bootstrapSettings(inventory);
    const record = readTokenSecret(tokenSecret({ token: BootstrapToken.generate(), cluster: 'prod', node: 'w', group: settings.group, now: NOW }));
    assert.deepEqual(subjectsOf(bootstrapBindings('prod', settings.group)[0]), [`Group/${record?.groups[0]}`]);
  });

  it('a group outside system:bootstrappers: is rejected before any binding exists', () => {
    assert.throws(() => bootstrapBindings('prod', 'system:bootstrappers'), /invalid bootstrap group/);
    assert.throws(() => bootstrapBindings('prod', 'cluster-nodes'), /invalid bootstrap group/);
  });
});

describe('controller RBAC', () => {
  const objects = controllerRbacObjects() as { kind: string; metadata: { namespace?: string }; rules?: { resources: string[]; verbs: string[]; resourceNames?: string[] }[] }[];

  it('grants Secrets only in kube-system', () => {
    const clusterRole = objects.find((object) => object.kind === 'ClusterRole');
    const role = objects.find((object) => object.kind === 'Role');
    assert.ok(clusterRole);
    assert.ok(role);
    assert.ok(!(clusterRole.rules ?? []).some((rule) => rule.resources.includes('secrets')));
    assert.equal(role.metadata.namespace, 'kube-system');
    assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['secrets'], verbs: ['create', 'get', 'list', 'delete'] }]);
  });

  it('grants approval only for kubelet-serving', () => {
    const clusterRole = objects.find((object) => object.kind === 'ClusterRole');
    const signers = (clusterRole?.rules ?? []).filter((rule) => rule.resources.includes('signers'));
    assert.deepEqual(signers.map((rule) => rule.resourceNames), [['kubernetes.io/kubelet-serving']]);
    for (const rule of clusterRole?.rules ?? []) {
      assert.ok(!rule.verbs.includes('*'), JSON.stringify(rule));
      assert.ok(!rule.resources.includes('*'), JSON.stringify(rule));
      assert.ok(!rule.verbs.includes('update') || rule.resources.includes('certificatesigningrequests/approval'), JSON.stringify(rule));
      assert.ok(!rule.verbs.includes('delete'), JSON.stringify(rule));
    }
  });

  it('manifest in docs matches the code', () => {
    const file = path.resolve(__dirname, '../../../docs/kubernetes/controller-rbac.yaml');
    const text = fs.readFileSync(file, 'utf8');
    const documents = YAML.parseAllDocuments(text).map((document) => document.toJSON() as unknown);
    assert.deepEqual(documents, YAML.parseAllDocuments(controllerRbacManifest()).map((document) => document.toJSON() as unknown));
  });

  it('controller API certificate is a client certificate without groups', async () => {
    const inventory = parseInventory('apiVersion: kubetrust/v1\nkind: Cluster\nmetadata: {name: prod}\nspec:\n  apiServer: {endpoint: "https://192.0.2.100:6443"}\n  pki: {keyAlgorithm: ECDSA-P256}\n  nodes: [{name: c, addresses: [192.0.2.3], roles: [etcd, master]}]\n', 'unit.yaml').inventory;
    const caKey = await generateKeyPair('ECDSA-P256');
    const caPem = selfSignedCa('kubernetes', caKey, 10 * 365 * 86_400_000, NOW);
    const credentials = await issueControllerApiCredentials({ inventory, clusterCa: { certificatePem: caPem, privateKey: caKey.privateKey, privateKeyPem: privateKeyToPem(caKey.privateKey) }, now: NOW });
    const info = inspectCertificate(credentials.certificatePem);
    assert.equal(info.subject.commonName, 'kubetrust:controller');
    assert.deepEqual(info.subject.organizations ?? [], []);
    assert.deepEqual(info.extKeyUsage, ['clientAuth']);
    assert.ok(isSignedBy(credentials.certificatePem, caPem));
    const kubeconfig = parseKubeconfig(credentials.kubeconfig);
    assert.equal(kubeconfig.server, 'https://192.0.2.100:6443');
    assert.equal(kubeconfig.user, CONTROLLER_API_USER);
    assert.equal(kubeconfig.clientCertificatePem, credentials.certificatePem);
    const bound = (controllerRbacObjects() as { subjects?: { name: string }[] }[]).flatMap((object) => object.subjects ?? []).map((subject) => subject.name);
    assert.deepEqual(bound, [CONTROLLER_API_USER, CONTROLLER_API_USER]);
  });
});

describe('bindings the certificates need', function () {
  this.timeout(30_000);
  const inventoryText = (admin: string): string =>
    `apiVersion: kubetrust/v1\nkind: Cluster\nmetadata: {name: prod}\nspec:\n  apiServer: {endpoint: "https://192.0.2.1:6443"}\n${admin}  nodes: [{name: c, addresses: [192.0.2.3], roles: [etcd, master]}]\n`;

  it('bind the kubelet client to the kubelet API', () => {
    const bindings = catalogueBindings(parseInventory(inventoryText(''), 'unit.yaml').inventory);
    assert.deepEqual(
      bindings.map((binding) => [binding.metadata.name, binding.roleRef.name, subjectsOf(binding)]),
      [['kubetrust:kubelet-api-admin', 'system:kubelet-api-admin', ['User/kube-apiserver-kubelet-client']]],
    );
    assert.equal(bindings[0]?.metadata.labels?.['kubetrust.io/cluster'], 'prod');
  });

  it('bind a custom admin group to cluster-admin', () => {
    const bindings = catalogueBindings(parseInventory(inventoryText('  admin: {group: "kubetrust:cluster-admins"}\n'), 'unit.yaml').inventory);
    const admin = bindings.find((binding) => binding.roleRef.name === 'cluster-admin');
    assert.equal(admin?.metadata.name, 'kubetrust:cluster-admin');
    assert.deepEqual(subjectsOf(admin), ['Group/kubetrust:cluster-admins']);
  });

  it('prints them for kubectl apply', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-bindings-'));
    try {
      const inventoryFile = path.join(dir, 'cluster.yaml');
      fs.writeFileSync(inventoryFile, inventoryText('  admin: {group: "kubetrust:cluster-admins"}\n'));
      const text = await runController(['plan', '--inventory', inventoryFile, '--bindings']);
      assert.equal(text.code, 0, text.stderr);
      const documents = YAML.parseAllDocuments(text.stdout).map((document) => document.toJS() as ClusterRoleBindingObject);
      assert.deepEqual(documents.map((document) => document.roleRef.name), ['system:kubelet-api-admin', 'cluster-admin']);
      const json = await runController(['plan', '--inventory', inventoryFile, '--bindings', '--output', 'json']);
      assert.deepEqual((JSON.parse(json.stdout) as { items: ClusterRoleBindingObject[] }).items, documents);
      const both = await runController(['plan', '--inventory', inventoryFile, '--bindings', '--flags', '--node', 'c']);
      assert.equal(both.code, 2, both.stderr);
      assert.match(both.stderr, /--bindings and --flags print different reports/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
