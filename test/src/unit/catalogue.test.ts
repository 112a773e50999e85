import { strict as assert } from 'node:assert';
import {
  CATALOGUE,
  CA_NAMES,
  SERVICES,
  casForPki,
  catalogueIssues,
  defaultHealthChecks,
  itemsForNode,
  itemPaths,
  signingCa,
  type CatalogueEntry,
  type FileSpec,
} from '@kubetrust/shared/dist/catalogue';
import { parseInventory, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: unit}
spec:
  serviceCIDR: 10.96.0.0/12,fd00:10:96::/112
  apiServer: {endpoint: "https://192.0.2.100:6443", extraSANs: [api.unit.example, 198.51.100.7]}
  nodes:
    - {name: etcd-1, addresses: [192.0.2.11], roles: [etcd]}
    - {name: cp-1, addresses: [192.0.2.21], hostnames: [cp-1.unit.example], roles: [master]}
    - {name: stacked-1, addresses: [192.0.2.22], roles: [etcd, master, worker]}
    - {name: wk-1, addresses: [192.0.2.31, "2001:db8::31"], roles: [worker]}
`;

function inventory(layout = 'kubeadm'): Inventory {
  return parseInventory(INVENTORY.replace('spec:\n', `spec:\n  pki: {layout: ${layout}}\n`), 'unit.yaml').inventory;
}

function node(inv: Inventory, name: string): NodeSpec {
  const found = inv.nodes.find((candidate) => candidate.name === name);
  assert.ok(found, `node ${name}`);
  return found;
}

function filesOf(entry: CatalogueEntry): FileSpec[] {
  switch (entry.kind) {
    case 'ca':
      return entry.privateKey === undefined ? [entry.certificate] : [entry.certificate, entry.privateKey];
    case 'keypair':
      return [entry.privateKey, entry.publicKey];
    case 'leaf':
      return [entry.certificate, entry.privateKey];
    case 'kubeconfig':
      return [entry.file];
  }
}

describe('certificate catalogue as data', () => {
  it('lists CAs before every other entry', () => {
    const firstNonCa = CATALOGUE.findIndex((entry) => entry.kind !== 'ca');
    const lastCa = CATALOGUE.map((entry) => entry.kind).lastIndexOf('ca');
    assert.ok(lastCa < firstNonCa, 'a CA appears after a non-CA entry');
  });

  it('has unique entry names and unique paths', () => {
    const names = CATALOGUE.map((entry) => entry.name);
    assert.equal(new Set(names).size, names.length);
    const paths = CATALOGUE.flatMap(filesOf).map((spec) => spec.path.kubeadm);
    assert.equal(new Set(paths).size, paths.length, `duplicate path in ${paths.join(', ')}`);
  });

  it('resolves every parent to a CA in both layouts', () => {
    for (const pki of [{ layout: 'kubeadm', etcdCA: 'separate' }, { layout: 'single-ca', etcdCA: 'shared' }, { layout: 'single-ca', etcdCA: 'separate' }] as const) {
      const cas = casForPki(pki);
      const layout = `${pki.layout}/${pki.etcdCA}`;
      for (const entry of CATALOGUE) {
        if (entry.kind !== 'leaf' && entry.kind !== 'kubeconfig') continue;
        assert.ok(CA_NAMES.includes(entry.parent), `${entry.name}: unknown parent ${entry.parent}`);
        assert.ok(cas.includes(signingCa(entry.parent, pki)), `${entry.name}: parent ${entry.parent} has no key in ${layout}`);
      }
    }
  });

  it('uses one cluster CA for etcd in single-ca and keeps front-proxy separate', () => {
    assert.deepEqual(casForPki({ layout: 'kubeadm', etcdCA: 'separate' }), ['cluster-ca', 'etcd-ca', 'front-proxy-ca']);
    assert.deepEqual(casForPki({ layout: 'single-ca', etcdCA: 'shared' }), ['cluster-ca', 'front-proxy-ca']);
    assert.deepEqual(casForPki({ layout: 'single-ca', etcdCA: 'separate' }), ['cluster-ca', 'etcd-ca', 'front-proxy-ca']);
    assert.equal(signingCa('etcd-ca', { layout: 'single-ca', etcdCA: 'shared' }), 'cluster-ca');
    assert.equal(signingCa('front-proxy-ca', { layout: 'single-ca', etcdCA: 'shared' }), 'front-proxy-ca');
  });

  it('gives every leaf an extended key usage', () => {
    for (const entry of CATALOGUE) {
      if (entry.kind === 'leaf') assert.ok(entry.extKeyUsage.length > 0, `${entry.name} has no extended key usage`);
    }
  });

  it('names only known services and private modes for keys', () => {
    for (const entry of CATALOGUE) {
      for (const spec of filesOf(entry)) {
        for (const consumer of spec.consumers) assert.ok(SERVICES.includes(consumer), `${entry.name}: unknown service ${consumer}`);
        if (/\.key$|\.conf$/.test(spec.path.kubeadm)) assert.equal(spec.mode, 0o600, `${spec.path.kubeadm} must be 0600`);
      }
    }
  });
});

describe('catalogue per node role', () => {
  const inv = inventory();

  it('gives workers no CA key, service-account key, etcd material or admin kubeconfig', () => {
    const paths = itemsForNode(inv, node(inv, 'wk-1')).flatMap(itemPaths);
    assert.deepEqual(paths.filter((p) => /ca\.key$|sa\.key$|sa\.pub$|\/etcd\/|admin\.conf$/.test(p)), []);
    assert.ok(paths.includes('/etc/kubernetes/pki/ca.crt'));
    assert.ok(paths.includes('/etc/kubernetes/kube-proxy.conf'));
  });

  it('gives an etcd-only node its member certificates and no Kubernetes material', () => {
    const paths = itemsForNode(inv, node(inv, 'etcd-1')).flatMap(itemPaths).sort();
    assert.deepEqual(paths, [
      '/etc/kubernetes/pki/etcd/ca.crt',
      '/etc/kubernetes/pki/etcd/healthcheck-client.crt',
      '/etc/kubernetes/pki/etcd/healthcheck-client.key',
      '/etc/kubernetes/pki/etcd/peer.crt',
      '/etc/kubernetes/pki/etcd/peer.key',
      '/etc/kubernetes/pki/etcd/server.crt',
      '/etc/kubernetes/pki/etcd/server.key',
    ]);
  });

  it('gives a master the shared keys and its own serving certificate', () => {
    const paths = itemsForNode(inv, node(inv, 'cp-1')).flatMap(itemPaths);
    for (const expected of ['ca.key', 'sa.key', 'sa.pub', 'front-proxy-ca.crt', 'apiserver.crt', 'apiserver-etcd-client.key', 'etcd/ca.crt']) {
      assert.ok(paths.includes(`/etc/kubernetes/pki/${expected}`), `master lacks ${expected}`);
    }
    assert.ok(!paths.includes('/etc/kubernetes/pki/etcd/server.crt'), 'a master without the etcd role got an etcd member certificate');
  });

  it('gives a stacked node the union of its roles', () => {
    const paths = itemsForNode(inv, node(inv, 'stacked-1')).flatMap(itemPaths);
    for (const expected of ['/etc/kubernetes/pki/etcd/server.crt', '/etc/kubernetes/pki/apiserver.crt', '/etc/kubernetes/kubelet.conf']) {
      assert.ok(paths.includes(expected), `stacked node lacks ${expected}`);
    }
    assert.equal(new Set(paths).size, paths.length, 'a path is listed twice');
  });

  it('puts every required name into the apiserver serving certificate', () => {
    const apiserver = itemsForNode(inv, node(inv, 'cp-1')).find((item) => item.name === 'apiserver');
    assert.ok(apiserver?.type === 'leaf');
    assert.deepEqual(apiserver.sans.dnsNames, [
      'api.unit.example',
      'cp-1',
      'cp-1.unit.example',
      'kubernetes',
      'kubernetes.default',
      'kubernetes.default.svc',
      'kubernetes.default.svc.cluster.local',
      'localhost',
      'stacked-1',
    ]);
    assert.deepEqual(apiserver.sans.ipAddresses, ['10.96.0.1', 'fd00:10:96::1', '127.0.0.1', '192.0.2.21', '192.0.2.22', '192.0.2.100', '198.51.100.7']);
    const other = itemsForNode(inv, node(inv, 'stacked-1')).find((item) => item.name === 'apiserver');
    assert.ok(other?.type === 'leaf');
    assert.deepEqual(other.sans, apiserver.sans, 'every master must carry the same SAN set');
    assert.deepEqual(apiserver.extKeyUsage, ['serverAuth']);
  });

  it('gives etcd member certificates both usages and every member address', () => {
    const server = itemsForNode(inv, node(inv, 'etcd-1')).find((item) => item.name === 'etcd-server');
    assert.ok(server?.type === 'leaf');
    assert.deepEqual([...server.extKeyUsage].sort(), ['clientAuth', 'serverAuth']);
    assert.deepEqual(server.sans.ipAddresses, ['192.0.2.11', '127.0.0.1', '::1']);
    assert.deepEqual(server.sans.dnsNames, ['etcd-1', 'localhost']);
    assert.equal(server.subject.commonName, 'etcd-1');
  });

  it('signs etcd material with the cluster CA in single-ca', () => {
    const single = inventory('single-ca');
    const items = itemsForNode(single, node(single, 'etcd-1'));
    const server = items.find((item) => item.name === 'etcd-server');
    assert.ok(server?.type === 'leaf');
    assert.equal(server.parent, 'cluster-ca');
    const trust = items.find((item) => item.name === 'etcd-ca.crt');
    assert.ok(trust?.type === 'static');
    assert.ok('ca' in trust.source);
    assert.equal(trust.source.ca, 'cluster-ca');
  });

  it('restarts only services the node runs', () => {
    const workerCa = itemsForNode(inv, node(inv, 'wk-1')).find((item) => item.name === 'cluster-ca.crt');
    assert.ok(workerCa?.type === 'static');
    assert.deepEqual(workerCa.file.consumers, ['kubelet']);
    const masterCa = itemsForNode(inv, node(inv, 'cp-1')).find((item) => item.name === 'cluster-ca.crt');
    assert.ok(masterCa?.type === 'static');
    assert.deepEqual(masterCa.file.consumers, ['kube-apiserver', 'kube-controller-manager']);
  });

  it('issues no kubelet credentials for a bootstrapping node', () => {
    const text = INVENTORY.replace('roles: [worker]}', 'roles: [worker], kubelet: {credentials: bootstrap}}');
    const boot = parseInventory(text, 'unit.yaml').inventory;
    const names = itemsForNode(boot, node(boot, 'wk-1')).map((item) => item.name);
    assert.deepEqual(names, ['cluster-ca.crt', 'kube-proxy.conf', 'kubelet-drop-in']);
    const stacked = itemsForNode(boot, node(boot, 'stacked-1')).map((item) => item.name);
    assert.ok(stacked.includes('kubelet.conf'), 'the cluster default pre-provisioned should still apply to other nodes');
  });

  it('puts the configured admin group into admin.conf', () => {
    const text = INVENTORY.replace('spec:\n', 'spec:\n  admin: {group: "kubetrust:cluster-admins"}\n');
    const custom = parseInventory(text, 'unit.yaml').inventory;
    const admin = itemsForNode(custom, node(custom, 'cp-1')).find((item) => item.name === 'admin.conf');
    assert.ok(admin?.type === 'kubeconfig');
    assert.deepEqual(admin.subject.organizations, ['kubetrust:cluster-admins']);
    const entry = CATALOGUE.find((candidate) => candidate.name === 'admin.conf');
    assert.ok(entry?.kind === 'kubeconfig');
    assert.deepEqual(entry.requiredBindings?.(custom), [{ clusterRole: 'cluster-admin', subjectKind: 'Group', subjectName: 'kubetrust:cluster-admins' }]);
    assert.deepEqual(entry.requiredBindings?.(inv), []);
  });

  it('keeps etcd on its own CA in single-ca when asked', () => {
    const separate = inventory('single-ca');
    const text = INVENTORY.replace('spec:\n', 'spec:\n  pki: {layout: single-ca, etcdCA: separate}\n');
    const own = parseInventory(text, 'unit.yaml').inventory;
    const parentOf = (inv2: Inventory): string | undefined => {
      const server = itemsForNode(inv2, node(inv2, 'etcd-1')).find((item) => item.name === 'etcd-server');
      return server?.type === 'leaf' ? server.parent : undefined;
    };
    assert.equal(parentOf(separate), 'cluster-ca');
    assert.equal(parentOf(own), 'etcd-ca');
  });

  it('moves a file to its path override', () => {
    const text = INVENTORY.replace('spec:\n', 'spec:\n  pki: {pathOverrides: {apiserver.certificate: /etc/kubernetes/ssl/kubernetes.pem}}\n');
    const overridden = parseInventory(text, 'unit.yaml').inventory;
    const apiserver = itemsForNode(overridden, node(overridden, 'cp-1')).find((item) => item.name === 'apiserver');
    assert.ok(apiserver?.type === 'leaf');
    assert.equal(apiserver.certificate.path, '/etc/kubernetes/ssl/kubernetes.pem');
    assert.equal(apiserver.privateKey.path, '/etc/kubernetes/pki/apiserver.key');
  });

  it('rejects two different files on one path', () => {
    const text = INVENTORY.replace('spec:\n', 'spec:\n  pki: {pathOverrides: {front-proxy-ca.certificate: /etc/kubernetes/pki/ca.crt}}\n');
    const clash = parseInventory(text, 'unit.yaml').inventory;
    assert.throws(() => itemsForNode(clash, node(clash, 'cp-1')), /cluster-ca\.crt and front-proxy-ca\.crt resolve to the same path \/etc\/kubernetes\/pki\/ca\.crt/);
  });

  it('writes a shared CA once when both trust files share a path', () => {
    const text = INVENTORY.replace('spec:\n', 'spec:\n  pki: {layout: single-ca, pathOverrides: {etcd-ca.certificate: /etc/kubernetes/pki/ca.crt}}\n');
    const shared = parseInventory(text, 'unit.yaml').inventory;
    const items = itemsForNode(shared, node(shared, 'stacked-1'));
    const writers = items.filter((item) => itemPaths(item).includes('/etc/kubernetes/pki/ca.crt'));
    assert.equal(writers.length, 1);
  });

  it('reports a path override for an unknown file', () => {
    const text = INVENTORY.replace('spec:\n', 'spec:\n  pki: {pathOverrides: {apiservr.certificate: /etc/kubernetes/ssl/kubernetes.pem}}\n');
    const issues = catalogueIssues(parseInventory(text, 'unit.yaml').inventory);
    assert.equal(issues.length, 1);
    assert.equal(issues[0]?.path, 'spec.pki.pathOverrides.apiservr.certificate');
    assert.match(issues[0]?.message ?? '', /"apiservr.certificate" is not a catalogue file/);
    assert.match(issues[0]?.fix ?? '', /apiserver\.certificate/);
  });

  it('reports an etcd member named like its CA', () => {
    const text = INVENTORY.replace('name: etcd-1,', 'name: etcd-ca,');
    const issues = catalogueIssues(parseInventory(text, 'unit.yaml').inventory);
    assert.ok(issues.some((issue) => issue.path === 'spec.nodes[0].name' && /subject of its CA \(CN "etcd-ca"\)/.test(issue.message)), JSON.stringify(issues));
  });

  it('finds nothing wrong with a sound inventory', () => {
    assert.deepEqual(catalogueIssues(inv), []);
  });
});

describe('default health checks', () => {
  const checksOf = (inv: Inventory, name: string) => defaultHealthChecks(node(inv, name), itemsForNode(inv, node(inv, name)));

  it('checks etcd health with its client certificate', () => {
    const inv = inventory();
    assert.deepEqual(checksOf(inv, 'etcd-1'), [
      {
        service: 'etcd',
        url: 'https://192.0.2.11:2379/health',
        caFile: '/etc/kubernetes/pki/etcd/ca.crt',
        certFile: '/etc/kubernetes/pki/etcd/healthcheck-client.crt',
        keyFile: '/etc/kubernetes/pki/etcd/healthcheck-client.key',
      },
    ]);
  });

  it('checks the apiserver readyz as a client', () => {
    const inv = inventory();
    assert.deepEqual(checksOf(inv, 'cp-1'), [
      {
        service: 'kube-apiserver',
        url: 'https://192.0.2.21:6443/readyz',
        caFile: '/etc/kubernetes/pki/ca.crt',
        certFile: '/etc/kubernetes/pki/apiserver-kubelet-client.crt',
        keyFile: '/etc/kubernetes/pki/apiserver-kubelet-client.key',
      },
    ]);
    assert.deepEqual(
      checksOf(inv, 'stacked-1').map((check) => [check.service, check.url]),
      [
        ['etcd', 'https://192.0.2.22:2379/health'],
        ['kube-apiserver', 'https://192.0.2.22:6443/readyz'],
      ],
    );
  });

  it('gives workers no default check', () => {
    assert.deepEqual(checksOf(inventory(), 'wk-1'), []);
  });

  it('follows the cfssl paths and a shared CA', () => {
    const cfssl = parseInventory(INVENTORY.replace('spec:\n', 'spec:\n  pki: {layout: single-ca, etcdCA: shared, pathLayout: cfssl}\n'), 'unit.yaml').inventory;
    const [etcd] = checksOf(cfssl, 'etcd-1');
    assert.equal(etcd?.url, 'https://192.0.2.11:2379/health');
    // With a shared CA, etcd verifies against the cluster CA, which is in the etcd node's trust file.
    const trust = itemsForNode(cfssl, node(cfssl, 'etcd-1')).find((item) => item.type === 'static' && item.file.path === etcd?.caFile);
    assert.ok(trust?.type === 'static', `no trust file at ${etcd?.caFile}`);
    assert.ok('ca' in trust.source, `${etcd?.caFile} is not a CA certificate`);
    assert.equal(trust.source.ca, 'cluster-ca');
    assert.match(etcd?.certFile ?? '', /^\/etc\/kubernetes\/ssl\/.*\.pem$/);
    const [apiserver] = checksOf(cfssl, 'cp-1');
    assert.equal(apiserver?.caFile, '/etc/kubernetes/ssl/ca.pem');
  });

  it('brackets an IPv6 first address', () => {
    const v6 = parseInventory(INVENTORY.replace('addresses: [192.0.2.21]', 'addresses: ["2001:db8::21"]'), 'unit.yaml').inventory;
    assert.equal(checksOf(v6, 'cp-1')[0]?.url, 'https://[2001:db8::21]:6443/readyz');
  });
});

describe('kubeconfig servers', () => {
  // The load balancer listens on another address and port than the apiservers behind it.
  const TWO_MASTERS = parseInventory(
    `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: servers}
spec:
  apiServer: {endpoint: "https://192.0.2.100:8443"}
  nodes:
    - {name: etcd-1, addresses: [192.0.2.31], roles: [etcd]}
    - {name: cp-a, addresses: [192.0.2.11, 198.51.100.11], roles: [master]}
    - {name: cp-b, addresses: [192.0.2.12], roles: [master]}
    - {name: wk-a, addresses: [192.0.2.21], roles: [worker]}
`,
    'servers.yaml',
  ).inventory;

  function serverOf(nodeName: string, itemName: string): string {
    const item = itemsForNode(TWO_MASTERS, node(TWO_MASTERS, nodeName)).find((candidate) => candidate.name === itemName);
    assert.ok(item?.type === 'kubeconfig', `${nodeName} has no kubeconfig ${itemName}`);
    return item.server;
  }

  it('points controller-manager and scheduler at their own master', () => {
    // kube-apiserver listens on its default --secure-port 6443 on every master, whatever port the endpoint uses.
    for (const [master, server] of [
      ['cp-a', 'https://192.0.2.11:6443'],
      ['cp-b', 'https://192.0.2.12:6443'],
    ] as const) {
      assert.equal(serverOf(master, 'controller-manager.conf'), server, `${master}: controller-manager.conf server`);
      assert.equal(serverOf(master, 'scheduler.conf'), server, `${master}: scheduler.conf server`);
    }
  });

  it('points admin, kubelet and kube-proxy at the endpoint', () => {
    for (const master of ['cp-a', 'cp-b']) assert.equal(serverOf(master, 'admin.conf'), 'https://192.0.2.100:8443', `${master}: admin.conf server`);
    assert.equal(serverOf('wk-a', 'kubelet.conf'), 'https://192.0.2.100:8443', 'wk-a: kubelet.conf server');
    assert.equal(serverOf('wk-a', 'kube-proxy.conf'), 'https://192.0.2.100:8443', 'wk-a: kube-proxy.conf server');
  });
});
