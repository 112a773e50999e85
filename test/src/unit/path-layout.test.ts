import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { CATALOGUE, itemPaths, itemsForNode, type CatalogueEntry, type FileSpec } from '@kubetrust/shared/dist/catalogue';
import { PATH_LAYOUTS, parseInventory, type Inventory, type NodeSpec, type PathLayout } from '@kubetrust/shared/dist/inventory';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: layouts}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  nodes:
    - {name: etcd-1, addresses: [192.0.2.11], roles: [etcd]}
    - {name: cp-1, addresses: [192.0.2.21], roles: [master]}
    - {name: stacked-1, addresses: [192.0.2.22], roles: [etcd, master, worker]}
    - {name: wk-1, addresses: [192.0.2.31], roles: [worker]}
    - {name: wk-boot, addresses: [192.0.2.32], roles: [worker], kubelet: {credentials: bootstrap}}
`;

type Part = 'certificate' | 'privateKey' | 'publicKey' | 'kubeconfig';

interface LabelledFile {
  readonly label: string;
  readonly entry: CatalogueEntry;
  readonly part: Part;
  readonly spec: FileSpec;
}

function catalogueFiles(): LabelledFile[] {
  const files: LabelledFile[] = [];
  const add = (entry: CatalogueEntry, part: Part, spec: FileSpec | undefined): void => {
    if (spec !== undefined) files.push({ label: `${entry.name}.${part}`, entry, part, spec });
  };
  for (const entry of CATALOGUE) {
    switch (entry.kind) {
      case 'ca':
        add(entry, 'certificate', entry.certificate);
        add(entry, 'privateKey', entry.privateKey);
        break;
      case 'keypair':
        add(entry, 'privateKey', entry.privateKey);
        add(entry, 'publicKey', entry.publicKey);
        break;
      case 'leaf':
        add(entry, 'certificate', entry.certificate);
        add(entry, 'privateKey', entry.privateKey);
        break;
      case 'kubeconfig':
        add(entry, 'kubeconfig', entry.file);
        break;
    }
  }
  return files;
}

/** File name endings each part must have in each layout. Only keys may end in `.key` or `-key.pem`. */
const SUFFIXES: Readonly<Record<PathLayout, Readonly<Record<Part, RegExp>>>> = {
  kubeadm: { certificate: /\.crt$/, privateKey: /\.key$/, publicKey: /\.pub$/, kubeconfig: /\.conf$/ },
  cfssl: { certificate: /\.pem$/, privateKey: /-key\.pem$/, publicKey: /\.pub$/, kubeconfig: /\.kubeconfig$|^\/root\/\.kube\/config$/ },
};

function inventory(pki = ''): Inventory {
  return parseInventory(INVENTORY.replace('spec:\n', `spec:\n  pki: {pathLayout: cfssl${pki}}\n`), 'layouts.yaml').inventory;
}

function node(inv: Inventory, name: string): NodeSpec {
  const found = inv.nodes.find((candidate) => candidate.name === name);
  assert.ok(found, `node ${name} is not in the test inventory`);
  return found;
}

function sortedPaths(inv: Inventory, name: string): string[] {
  return itemsForNode(inv, node(inv, name)).flatMap(itemPaths).sort();
}

/** True when two files may share a path: the certificates of a CA and of the CA it can share. */
function sharedCaPair(first: LabelledFile, second: LabelledFile): boolean {
  if (first.entry.kind !== 'ca' || second.entry.kind !== 'ca' || first.part !== 'certificate' || second.part !== 'certificate') return false;
  return first.entry.sharedWith?.ca === second.entry.name || second.entry.sharedWith?.ca === first.entry.name;
}

describe('catalogue path layouts', () => {
  const files = catalogueFiles();

  it('gives every file a path in every layout', () => {
    for (const file of files) {
      assert.deepEqual(Object.keys(file.spec.path).sort(), [...PATH_LAYOUTS].sort(), `${file.label} has paths for ${Object.keys(file.spec.path).join(', ')}`);
    }
  });

  it('uses absolute normalised paths', () => {
    for (const layout of PATH_LAYOUTS) {
      for (const file of files) {
        const value = file.spec.path[layout];
        assert.ok(path.posix.isAbsolute(value), `${file.label} in ${layout}: ${value} is not absolute`);
        assert.equal(path.posix.normalize(value), value, `${file.label} in ${layout}: ${value} is not normalised`);
      }
    }
  });

  it('ends every path with its layout suffix', () => {
    for (const layout of PATH_LAYOUTS) {
      for (const file of files) {
        const value = file.spec.path[layout];
        assert.match(value, SUFFIXES[layout][file.part], `${file.label} in ${layout}: ${value}`);
        if (file.part !== 'privateKey') assert.doesNotMatch(value, /-key\.pem$|\.key$/, `${file.label} in ${layout}: ${value} looks like a key`);
      }
    }
  });

  it('keeps paths unique within a layout', () => {
    for (const layout of PATH_LAYOUTS) {
      const byPath = new Map<string, LabelledFile>();
      for (const file of files) {
        const other = byPath.get(file.spec.path[layout]);
        if (other !== undefined) assert.ok(sharedCaPair(other, file), `${other.label} and ${file.label} share ${file.spec.path[layout]} in ${layout}`);
        byPath.set(file.spec.path[layout], file);
      }
    }
  });

  it('keeps cfssl certificates and keys in /etc/kubernetes/ssl', () => {
    for (const file of files) {
      if (file.part === 'kubeconfig') continue;
      assert.equal(path.posix.dirname(file.spec.path.cfssl), '/etc/kubernetes/ssl', `${file.label}: ${file.spec.path.cfssl}`);
    }
  });

  it('keeps keys and kubeconfigs private in both layouts', () => {
    for (const file of files) {
      if (file.part === 'privateKey' || file.part === 'kubeconfig') assert.equal(file.spec.mode, 0o600, `${file.label} must be 0600`);
    }
  });
});

describe('cfssl path layout per node', () => {
  const inv = inventory();

  it('gives a worker exactly its cfssl paths', () => {
    assert.deepEqual(sortedPaths(inv, 'wk-1'), [
      '/etc/kubernetes/kube-proxy.kubeconfig',
      '/etc/kubernetes/kubelet.conf.d/50-kubetrust.conf',
      '/etc/kubernetes/kubelet.kubeconfig',
      '/etc/kubernetes/ssl/ca.pem',
      '/etc/kubernetes/ssl/kubelet-key.pem',
      '/etc/kubernetes/ssl/kubelet.pem',
    ]);
  });

  it('gives a bootstrapping worker no kubelet credentials', () => {
    assert.deepEqual(sortedPaths(inv, 'wk-boot'), ['/etc/kubernetes/kube-proxy.kubeconfig', '/etc/kubernetes/kubelet.conf.d/50-kubetrust.conf', '/etc/kubernetes/ssl/ca.pem']);
  });

  it('gives an etcd node exactly its cfssl paths', () => {
    assert.deepEqual(sortedPaths(inv, 'etcd-1'), [
      '/etc/kubernetes/ssl/etcd-ca.pem',
      '/etc/kubernetes/ssl/etcd-healthcheck-client-key.pem',
      '/etc/kubernetes/ssl/etcd-healthcheck-client.pem',
      '/etc/kubernetes/ssl/etcd-key.pem',
      '/etc/kubernetes/ssl/etcd-peer-key.pem',
      '/etc/kubernetes/ssl/etcd-peer.pem',
      '/etc/kubernetes/ssl/etcd.pem',
    ]);
  });

  it('gives a master exactly its cfssl paths', () => {
    assert.deepEqual(sortedPaths(inv, 'cp-1'), [
      '/etc/kubernetes/kube-controller-manager.kubeconfig',
      '/etc/kubernetes/kube-scheduler.kubeconfig',
      '/etc/kubernetes/ssl/apiserver-etcd-client-key.pem',
      '/etc/kubernetes/ssl/apiserver-etcd-client.pem',
      '/etc/kubernetes/ssl/apiserver-kubelet-client-key.pem',
      '/etc/kubernetes/ssl/apiserver-kubelet-client.pem',
      '/etc/kubernetes/ssl/ca-key.pem',
      '/etc/kubernetes/ssl/ca-signer.pem',
      '/etc/kubernetes/ssl/ca.pem',
      '/etc/kubernetes/ssl/etcd-ca.pem',
      '/etc/kubernetes/ssl/front-proxy-ca.pem',
      '/etc/kubernetes/ssl/front-proxy-client-key.pem',
      '/etc/kubernetes/ssl/front-proxy-client.pem',
      '/etc/kubernetes/ssl/kubernetes-key.pem',
      '/etc/kubernetes/ssl/kubernetes.pem',
      '/etc/kubernetes/ssl/sa-key.pem',
      '/etc/kubernetes/ssl/sa.pub',
      '/root/.kube/config',
    ]);
  });

  it('resolves every node in every PKI layout', () => {
    for (const pki of ['', ', layout: single-ca', ', layout: single-ca, etcdCA: separate']) {
      const layoutInventory = inventory(pki);
      for (const member of layoutInventory.nodes) {
        const paths = itemsForNode(layoutInventory, member).flatMap(itemPaths);
        assert.equal(new Set(paths).size, paths.length, `${member.name} with pki {pathLayout: cfssl${pki}} lists a path twice`);
      }
    }
  });

  it('writes the shared CA to both trust files', () => {
    const shared = inventory(', layout: single-ca');
    const items = itemsForNode(shared, node(shared, 'stacked-1'));
    for (const [name, expected] of [['cluster-ca.crt', '/etc/kubernetes/ssl/ca.pem'], ['etcd-ca.crt', '/etc/kubernetes/ssl/etcd-ca.pem']] as const) {
      const item = items.find((candidate) => candidate.name === name);
      assert.ok(item?.type === 'static', `${name} is missing`);
      assert.ok('ca' in item.source, `${name} does not come from a CA`);
      assert.equal(item.source.ca, 'cluster-ca', `${name} must carry the cluster CA`);
      assert.equal(item.file.path, expected);
    }
  });

  it('writes the shared CA once when overridden to one path', () => {
    const merged = inventory(', layout: single-ca, pathOverrides: {etcd-ca.certificate: /etc/kubernetes/ssl/ca.pem}');
    const paths = itemsForNode(merged, node(merged, 'stacked-1')).flatMap(itemPaths);
    assert.equal(paths.filter((value) => value === '/etc/kubernetes/ssl/ca.pem').length, 1);
    assert.ok(!paths.includes('/etc/kubernetes/ssl/etcd-ca.pem'), 'the overridden etcd CA path is still written');
  });

  it('lets path overrides win over the layout', () => {
    const overridden = inventory(', pathOverrides: {apiserver.certificate: /srv/pki/apiserver.pem, kube-proxy.conf.file: /var/lib/kube-proxy/kubeconfig}');
    const items = itemsForNode(overridden, node(overridden, 'stacked-1'));
    const apiserver = items.find((item) => item.name === 'apiserver');
    assert.ok(apiserver?.type === 'leaf');
    assert.equal(apiserver.certificate.path, '/srv/pki/apiserver.pem');
    assert.equal(apiserver.privateKey.path, '/etc/kubernetes/ssl/kubernetes-key.pem');
    const proxy = items.find((item) => item.name === 'kube-proxy.conf');
    assert.ok(proxy?.type === 'kubeconfig');
    assert.equal(proxy.file.path, '/var/lib/kube-proxy/kubeconfig');
  });

  it('rejects an override onto another file of the layout', () => {
    const clash = inventory(', pathOverrides: {front-proxy-ca.certificate: /etc/kubernetes/ssl/ca.pem}');
    assert.throws(() => itemsForNode(clash, node(clash, 'cp-1')), /cluster-ca\.crt and front-proxy-ca\.crt resolve to the same path \/etc\/kubernetes\/ssl\/ca\.pem/);
  });
});
