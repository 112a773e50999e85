/**
 * Certificate failures that operators of binary-installed clusters have reported. Each test is
 * named by what the operator saw and asserts the property that rules the failure out. The first
 * suite checks the catalogue against each failure's own inventory, which uses documentation
 * addresses because nothing is contacted. The second suite issues and distributes to a running
 * cluster on loopback (one agent per node, a real three-member etcd) and inspects the installed
 * files with openssl. Reported failures of bootstrap tokens, kubelet serving CSR approval and
 * client CA rotation are tested beside that code: the unit tests kubelet-bootstrap-tokens,
 * kubelet-bootstrap-bindings and kubelet-serving-approval, and the e2e test ca-rotation-apiserver.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CATALOGUE, itemsForNode, type NodeItem } from '@kubetrust/shared/dist/catalogue';
import { parseInventory, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';
import { LocalCluster, which, type DistributeJson } from '../harness/local-cluster';
import {
  certificateFacts,
  certificateKeySha256,
  exec,
  extractKubeconfigPair,
  fileSha256,
  forgeCertificate,
  freshPrivateKey,
  isListening,
  privateKeySha256,
  publicKeySha256,
  readKubeconfig,
  replaceKubeconfigKey,
  sleep,
  verifyChain,
  type CertificateFacts,
} from './cases-support';

type LeafItem = Extract<NodeItem, { type: 'leaf' }>;
type KubeconfigItem = Extract<NodeItem, { type: 'kubeconfig' }>;
type StaticItem = Extract<NodeItem, { type: 'static' }>;

const IN_CLUSTER_NAMES = ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'];

function inventoryOf(yaml: string): Inventory {
  return parseInventory(yaml, 'case.yaml').inventory;
}

function nodeOf(inventory: Inventory, name: string): NodeSpec {
  const node = inventory.nodes.find((candidate) => candidate.name === name);
  assert.ok(node !== undefined, `inventory has no node ${name}`);
  return node;
}

function itemOf(inventory: Inventory, nodeName: string, itemName: string): NodeItem | undefined {
  return itemsForNode(inventory, nodeOf(inventory, nodeName)).find((item) => item.name === itemName);
}

function leafOf(inventory: Inventory, nodeName: string, itemName: string): LeafItem {
  const item = itemOf(inventory, nodeName, itemName);
  assert.ok(item?.type === 'leaf', `${nodeName} has no certificate ${itemName}`);
  return item;
}

function kubeconfigOf(inventory: Inventory, nodeName: string, itemName: string): KubeconfigItem {
  const item = itemOf(inventory, nodeName, itemName);
  assert.ok(item?.type === 'kubeconfig', `${nodeName} has no kubeconfig ${itemName}`);
  return item;
}

function staticOf(inventory: Inventory, nodeName: string, itemName: string): StaticItem {
  const item = itemOf(inventory, nodeName, itemName);
  assert.ok(item?.type === 'static', `${nodeName} has no file ${itemName}`);
  return item;
}

function namesOf(inventory: Inventory, role: 'etcd' | 'master' | 'worker'): string[] {
  return inventory.nodes.filter((node) => node.roles.includes(role)).map((node) => node.name);
}

/** Host of an https URL without IPv6 brackets. */
function hostOf(url: string): string {
  return new URL(url).hostname.replace(/^\[|\]$/g, '');
}

/** Returns every SAN of a certificate, sorted, so that the sets of two masters compare byte for byte. */
function sortedSans(sans: { dnsNames: readonly string[]; ipAddresses: readonly string[] }): string[] {
  return [...sans.dnsNames, ...sans.ipAddresses].sort();
}

/**
 * Masters whose apiserver a kubeconfig server URL reaches: the master that has the host as an
 * address, or every master when the host is the shared endpoint in front of them.
 */
function mastersBehind(inventory: Inventory, server: string): NodeSpec[] {
  const host = hostOf(server);
  const masters = inventory.nodes.filter((node) => node.roles.includes('master'));
  const direct = masters.filter((node) => node.addresses.includes(host));
  return direct.length > 0 ? direct : masters;
}

describe('certificate failure cases in the catalogue', () => {
  const HA_VIP = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: ha-vip}
spec:
  clusterDomain: cluster.local
  serviceCIDR: 10.96.0.0/12
  apiServer: {endpoint: "https://192.0.2.100:6443", extraSANs: [api.cluster.example]}
  nodes:
    - {name: cp-a, addresses: [192.0.2.11], roles: [etcd, master]}
    - {name: cp-b, addresses: [192.0.2.12], roles: [etcd, master]}
    - {name: cp-c, addresses: [192.0.2.13], roles: [etcd, master]}
    - {name: wk-a, addresses: [192.0.2.21], roles: [worker]}
`;

  it('clients through the HA VIP get x509 errors', () => {
    const inventory = inventoryOf(HA_VIP);
    const shared = new Map<string, string[]>();
    for (const name of ['cp-a', 'cp-b', 'cp-c']) {
      const node = nodeOf(inventory, name);
      const apiserver = leafOf(inventory, name, 'apiserver');
      for (const ip of ['192.0.2.100', '10.96.0.1', '127.0.0.1', '192.0.2.11', '192.0.2.12', '192.0.2.13', ...node.addresses]) {
        assert.ok(apiserver.sans.ipAddresses.includes(ip), `${name}: apiserver certificate lacks IP ${ip}: ${apiserver.sans.ipAddresses.join(', ')}`);
      }
      for (const dns of ['api.cluster.example', ...IN_CLUSTER_NAMES]) {
        assert.ok(apiserver.sans.dnsNames.includes(dns), `${name}: apiserver certificate lacks DNS ${dns}: ${apiserver.sans.dnsNames.join(', ')}`);
      }
      assert.deepEqual(apiserver.extKeyUsage, ['serverAuth'], `${name}: apiserver certificate usages`);
      shared.set(name, sortedSans(apiserver.sans));
    }
    assert.deepEqual(shared.get('cp-b'), shared.get('cp-a'), 'cp-a and cp-b differ in the SANs that every master must carry');
    assert.deepEqual(shared.get('cp-c'), shared.get('cp-a'), 'cp-a and cp-c differ in the SANs that every master must carry');
  });

  it('clients through a second VIP get x509 errors', () => {
    const inventory = inventoryOf(HA_VIP.replace('extraSANs: [api.cluster.example]', 'extraSANs: [api.cluster.example, 198.51.100.100]'));
    for (const name of namesOf(inventory, 'master')) {
      const apiserver = leafOf(inventory, name, 'apiserver');
      assert.ok(apiserver.sans.ipAddresses.includes('198.51.100.100'), `${name}: apiserver certificate lacks the second VIP`);
      assert.ok(apiserver.sans.ipAddresses.includes('192.0.2.100'), `${name}: apiserver certificate lost the first VIP`);
    }
  });

  const FLOATING_IP = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: floating-ip}
spec:
  clusterDomain: cluster.local
  serviceCIDR: 10.233.0.0/18
  apiServer: {endpoint: "https://203.0.113.50:6443"}
  nodes:
    - {name: cp-a, addresses: [203.0.113.10], roles: [etcd, master]}
    - {name: wk-a, addresses: [203.0.113.20], roles: [worker]}
    - {name: wk-b, addresses: [203.0.113.21], roles: [worker]}
`;

  it('kubectl through the kube-vip address gets x509 errors', () => {
    const inventory = inventoryOf(FLOATING_IP);
    assert.deepEqual(inventory.apiServer.extraSANs, []);
    const apiserver = leafOf(inventory, 'cp-a', 'apiserver');
    assert.ok(apiserver.sans.ipAddresses.includes('203.0.113.50'), `apiserver certificate lacks the endpoint VIP: ${apiserver.sans.ipAddresses.join(', ')}`);
    assert.ok(apiserver.sans.ipAddresses.includes('10.233.0.1'), `apiserver certificate lacks the first service IP: ${apiserver.sans.ipAddresses.join(', ')}`);
    for (const [node, name] of [['cp-a', 'admin.conf'], ['wk-a', 'kubelet.conf'], ['wk-a', 'kube-proxy.conf'], ['wk-b', 'kubelet.conf'], ['wk-b', 'kube-proxy.conf']] as const) {
      assert.equal(kubeconfigOf(inventory, node, name).server, 'https://203.0.113.50:6443', `${node}: ${name} server`);
    }
  });

  it('kubectl through the endpoint hostname gets x509 errors', () => {
    const inventory = inventoryOf(FLOATING_IP.replace('https://203.0.113.50:6443', 'https://api.cluster.example:6443'));
    const apiserver = leafOf(inventory, 'cp-a', 'apiserver');
    assert.ok(apiserver.sans.dnsNames.includes('api.cluster.example'), `apiserver certificate lacks the endpoint name: ${apiserver.sans.dnsNames.join(', ')}`);
    assert.deepEqual([...apiserver.sans.ipAddresses].sort(), ['10.233.0.1', '127.0.0.1', '203.0.113.10']);
  });

  it('kubectl works only with --insecure-skip-tls-verify', () => {
    // The host of every kubeconfig's server must be a SAN of each apiserver that the URL reaches.
    for (const yaml of [FLOATING_IP, HA_VIP]) {
      const inventory = inventoryOf(yaml);
      let checked = 0;
      for (const node of inventory.nodes) {
        for (const item of itemsForNode(inventory, node)) {
          if (item.type !== 'kubeconfig') continue;
          const host = hostOf(item.server);
          for (const master of mastersBehind(inventory, item.server)) {
            const sans = leafOf(inventory, master.name, 'apiserver').sans;
            assert.ok([...sans.dnsNames, ...sans.ipAddresses].includes(host), `${inventory.name}: ${node.name} ${item.name} dials ${host}, which is not a SAN of ${master.name}'s apiserver`);
            checked++;
          }
        }
      }
      assert.ok(checked >= inventory.nodes.length, `${inventory.name}: only ${checked} kubeconfig servers checked`);
    }
  });

  const KUBELET_SERVING = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: kubelet-serving}
spec:
  serviceCIDR: 10.96.0.0/12
  apiServer: {endpoint: "https://192.0.2.11:6443"}
  pki: {layout: LAYOUT}
  nodes:
    - {name: cp-a, addresses: [192.0.2.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [192.0.2.21], roles: [worker]}
    - {name: wk-b, addresses: [192.0.2.22], roles: [worker]}
`;

  const CONTROL_PLANE_KUBELET = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: control-plane-kubelet}
spec:
  apiServer: {endpoint: "https://198.51.100.11:6443"}
  nodes:
    - {name: cp-a, addresses: [198.51.100.11], roles: [etcd, master, worker]}
    - {name: wk-a, addresses: [198.51.100.21], roles: [worker]}
`;

  it('kubectl logs fails on one worker: unknown authority', () => {
    const cases = [inventoryOf(KUBELET_SERVING.replace('LAYOUT', 'kubeadm')), inventoryOf(KUBELET_SERVING.replace('LAYOUT', 'single-ca')), inventoryOf(CONTROL_PLANE_KUBELET)];
    for (const inventory of cases) {
      const kubeletNodes = namesOf(inventory, 'worker');
      assert.ok(kubeletNodes.length >= 2, `${inventory.name}: expected at least two kubelet nodes`);
      for (const name of kubeletNodes) {
        const node = nodeOf(inventory, name);
        const serving = leafOf(inventory, name, 'kubelet-server');
        const where = `${inventory.name} ${inventory.pki.layout} ${name}`;
        assert.equal(serving.parent, 'cluster-ca', `${where}: kubelet serving certificate issuer`);
        assert.equal(serving.certificate.path, '/var/lib/kubelet/pki/kubelet.crt', `${where}: kubelet serving certificate path`);
        assert.equal(serving.privateKey.path, '/var/lib/kubelet/pki/kubelet.key', `${where}: kubelet serving key path`);
        assert.deepEqual(serving.extKeyUsage, ['serverAuth'], `${where}: kubelet serving usages`);
        assert.deepEqual(serving.sans.ipAddresses, node.addresses, `${where}: kubelet serving IP SANs`);
        assert.ok(serving.sans.dnsNames.includes(name), `${where}: kubelet serving certificate lacks DNS ${name}`);
        assert.equal(kubeconfigOf(inventory, name, 'kubelet.conf').subject.commonName, `system:node:${name}`, `${where}: kubelet.conf CN`);
      }
      // The apiserver verifies kubelets with the CA certificate that masters receive as ca.crt.
      for (const master of namesOf(inventory, 'master')) {
        const trust = staticOf(inventory, master, 'cluster-ca.crt');
        assert.equal(trust.file.path, '/etc/kubernetes/pki/ca.crt', `${master}: cluster CA path`);
        assert.ok('ca' in trust.source, `${master}: ca.crt is not a CA certificate`);
        assert.equal(trust.source.ca, 'cluster-ca', `${master}: ca.crt is not the cluster CA`);
      }
    }
  });

  const DIALED_BY_IP = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: kubelet-ips}
spec:
  apiServer: {endpoint: "https://198.51.100.11:6443"}
  nodes:
    - {name: cp-a, addresses: [198.51.100.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [198.51.100.21, 203.0.113.21, "2001:db8::21"], hostnames: [wk-a.example.internal], roles: [worker]}
    - {name: wk-b, addresses: [198.51.100.22], roles: [worker]}
`;

  it("kubectl logs: certificate doesn't contain any IP SANs", () => {
    // The apiserver dials kubelets by their InternalIP for logs and exec, so every address must be an IP SAN.
    const inventory = inventoryOf(DIALED_BY_IP);
    for (const name of namesOf(inventory, 'worker')) {
      const node = nodeOf(inventory, name);
      const serving = leafOf(inventory, name, 'kubelet-server');
      for (const address of node.addresses) assert.ok(serving.sans.ipAddresses.includes(address), `${name}: kubelet serving certificate lacks IP SAN ${address}`);
      assert.ok(serving.sans.dnsNames.includes(name), `${name}: kubelet serving certificate lacks DNS ${name}`);
    }
    assert.ok(leafOf(inventory, 'wk-a', 'kubelet-server').sans.dnsNames.includes('wk-a.example.internal'), 'wk-a: hostname missing from its kubelet serving certificate');
  });

  const EXTERNAL_ETCD = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: etcd-members}
spec:
  apiServer: {endpoint: "https://192.0.2.11:6443"}
  pki: {layout: LAYOUT}
  nodes:
    - {name: cp-a, addresses: [192.0.2.11], roles: [master]}
    - {name: etcd-a, addresses: [192.0.2.31], roles: [etcd]}
    - {name: etcd-b, addresses: [192.0.2.32], roles: [etcd]}
    - {name: etcd-c, addresses: [192.0.2.33], roles: [etcd]}
`;

  // etcd's gRPC gateway dials its own client port with the server certificate, and on the peer
  // port every member is both TLS server and client, so both certificates need both usages.
  for (const [certificate, symptom] of [
    ['etcd-server', 'etcd logs "bad certificate" on 127.0.0.1:2379'],
    ['etcd-peer', 'etcd peers never form a cluster'],
  ] as const) {
    it(symptom, () => {
      for (const layout of ['kubeadm', 'single-ca']) {
        const inventory = inventoryOf(EXTERNAL_ETCD.replace('LAYOUT', layout));
        const etcdCa = layout === 'kubeadm' ? 'etcd-ca' : 'cluster-ca';
        for (const name of ['etcd-a', 'etcd-b', 'etcd-c']) {
          const node = nodeOf(inventory, name);
          const leaf = leafOf(inventory, name, certificate);
          const where = `${layout} ${name} ${certificate}`;
          assert.deepEqual([...leaf.extKeyUsage].sort(), ['clientAuth', 'serverAuth'], `${where}: usages`);
          assert.equal(leaf.parent, etcdCa, `${where}: issuer`);
          for (const ip of [...node.addresses, '127.0.0.1']) assert.ok(leaf.sans.ipAddresses.includes(ip), `${where}: lacks IP ${ip}`);
          for (const dns of [name, 'localhost']) assert.ok(leaf.sans.dnsNames.includes(dns), `${where}: lacks DNS ${dns}`);
        }
      }
    });
  }

  const NODE_AUTHORIZER = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: node-authorizer}
spec:
  apiServer: {endpoint: "https://198.51.100.11:6443"}
  nodes:
    - {name: cp-a, addresses: [198.51.100.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [198.51.100.21], roles: [worker]}
    - {name: wk-b, addresses: [198.51.100.22], roles: [worker]}
    - {name: wk-c, addresses: [198.51.100.23], roles: [worker]}
`;

  it('kubelets forbidden as user "system:node"', () => {
    const inventory = inventoryOf(NODE_AUTHORIZER);
    const commonNames = new Set<string>();
    for (const name of ['wk-a', 'wk-b', 'wk-c']) {
      const kubelet = kubeconfigOf(inventory, name, 'kubelet.conf');
      assert.equal(kubelet.subject.commonName, `system:node:${name}`, `${name}: kubelet CN`);
      assert.deepEqual(kubelet.subject.organizations, ['system:nodes'], `${name}: kubelet O`);
      assert.equal(kubelet.parent, 'cluster-ca', `${name}: kubelet client issuer`);
      commonNames.add(kubelet.subject.commonName);
    }
    assert.equal(commonNames.size, 3, 'two kubelets share a client identity');
    assert.ok(!commonNames.has('system:node'), 'a kubelet identity lacks the node name');
  });

  const KUBELET_API = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: kubelet-api}
spec:
  apiServer: {endpoint: "https://192.0.2.11:6443"}
  nodes:
    - {name: cp-a, addresses: [192.0.2.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [192.0.2.21], roles: [worker]}
`;

  it('kubectl logs forbidden on nodes/proxy', () => {
    const inventory = inventoryOf(KUBELET_API);
    const client = leafOf(inventory, 'cp-a', 'apiserver-kubelet-client');
    assert.equal(client.subject.commonName, 'kube-apiserver-kubelet-client');
    for (const organization of client.subject.organizations) {
      assert.match(organization, /^[a-z0-9:-]+$/, `organization "${organization}" contains punctuation or whitespace`);
    }
    assert.deepEqual(client.extKeyUsage, ['clientAuth']);
    assert.equal(client.parent, 'cluster-ca', 'kubelets verify this client with the cluster CA');
    // Without a group in the certificate, kubelets authorise the user through this binding.
    const entry = CATALOGUE.find((candidate) => candidate.name === 'apiserver-kubelet-client');
    assert.ok(entry?.kind === 'leaf');
    assert.deepEqual(entry.requiredBindings?.(inventory), [{ clusterRole: 'system:kubelet-api-admin', subjectKind: 'User', subjectName: 'kube-apiserver-kubelet-client' }]);
  });

  const AGGREGATION = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: aggregation}
spec:
  apiServer: {endpoint: "https://203.0.113.11:6443"}
  pki: {layout: LAYOUT}
  nodes:
    - {name: cp-a, addresses: [203.0.113.11], roles: [etcd, master]}
    - {name: cp-b, addresses: [203.0.113.12], roles: [master]}
`;

  it('metrics API unavailable: unknown authority or key usage', () => {
    for (const layout of ['kubeadm', 'single-ca']) {
      const inventory = inventoryOf(AGGREGATION.replace('LAYOUT', layout));
      for (const name of ['cp-a', 'cp-b']) {
        const client = leafOf(inventory, name, 'front-proxy-client');
        assert.equal(client.parent, 'front-proxy-ca', `${layout} ${name}: front-proxy client issuer`);
        assert.deepEqual(client.extKeyUsage, ['clientAuth'], `${layout} ${name}: front-proxy client usages`);
        assert.equal(client.subject.commonName, 'front-proxy-client', `${layout} ${name}: front-proxy client CN`);
        const trust = staticOf(inventory, name, 'front-proxy-ca.crt');
        assert.ok('ca' in trust.source, `${layout} ${name}: front-proxy-ca.crt is not a CA certificate`);
        assert.equal(trust.source.ca, 'front-proxy-ca', `${layout} ${name}: front-proxy-ca.crt is another CA`);
      }
    }
  });

  it('service-account tokens fail on some apiservers', () => {
    // One service-account key pair for the cluster, the same on every master and unlike any TLS key.
    const inventory = inventoryOf(HA_VIP);
    for (const part of ['sa.key', 'sa.pub']) {
      const items = namesOf(inventory, 'master').map((name) => staticOf(inventory, name, part));
      assert.equal(items.length, 3);
      for (const item of items) {
        assert.deepEqual(item.source, items[0]!.source, `${part} comes from different sources on different masters`);
        assert.equal(item.file.path, `/etc/kubernetes/pki/${part}`);
        assert.ok('keyPair' in item.source, `${part} is not the service-account key pair`);
      }
    }
    assert.equal(itemOf(inventory, 'wk-a', 'sa.key'), undefined, 'a worker receives the service-account signing key');
  });

  const KUBE_PROXY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: kube-proxy}
spec:
  apiServer: {endpoint: "https://198.51.100.11:6443"}
  nodes:
    - {name: cp-a, addresses: [198.51.100.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [198.51.100.21], roles: [worker]}
    - {name: wk-b, addresses: [198.51.100.22], roles: [worker]}
`;

  it('only kube-proxy fails with unknown authority', () => {
    const inventory = inventoryOf(KUBE_PROXY);
    for (const name of ['wk-a', 'wk-b']) {
      const proxy = kubeconfigOf(inventory, name, 'kube-proxy.conf');
      assert.equal(proxy.server, 'https://198.51.100.11:6443', `${name}: kube-proxy server`);
      assert.equal(proxy.parent, 'cluster-ca', `${name}: kube-proxy client issuer`);
      assert.equal(proxy.subject.commonName, 'system:kube-proxy', `${name}: kube-proxy CN`);
      assert.deepEqual(proxy.subject.organizations, [], `${name}: kube-proxy O`);
      assert.deepEqual(proxy.file.consumers, ['kube-proxy'], `${name}: kube-proxy.conf consumers`);
    }
    assert.ok(leafOf(inventory, 'cp-a', 'apiserver').sans.ipAddresses.includes('198.51.100.11'));
    // Serving and client roles never share a certificate: each is its own entry with its own usage.
    assert.deepEqual(leafOf(inventory, 'cp-a', 'apiserver').extKeyUsage, ['serverAuth']);
    assert.deepEqual(leafOf(inventory, 'cp-a', 'apiserver-kubelet-client').extKeyUsage, ['clientAuth']);
    assert.notEqual(leafOf(inventory, 'cp-a', 'apiserver').certificate.path, leafOf(inventory, 'cp-a', 'apiserver-kubelet-client').certificate.path);
    assert.deepEqual(leafOf(inventory, 'wk-a', 'kubelet-server').extKeyUsage, ['serverAuth']);
  });
});

/**
 * Builds the inventory of the running cluster: three masters behind a VIP, three external etcd
 * members and three workers, and one master also runs a kubelet. Documentation addresses map to
 * loopback with the same last octet, so 192.0.2.x is 127.0.22.x and 198.51.100.x is 127.0.23.x.
 * Nothing listens on or dials the VIPs, which appear only in certificates and kubeconfigs.
 */
function clusterInventory(extraSans: readonly string[]): string {
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: cases}
spec:
  clusterDomain: cluster.local
  serviceCIDR: 10.96.0.0/12
  apiServer: {endpoint: "https://127.0.22.100:6443", extraSANs: [${extraSans.join(', ')}]}
  pki: {keyAlgorithm: RSA-2048, certValidity: ${LEAF_LIFETIME_HOURS}h, caValidity: ${CA_LIFETIME_HOURS}h}
  nodes:
    - {name: cp-a, addresses: [127.0.22.11], roles: [master]}
    - {name: cp-b, addresses: [127.0.22.12], roles: [master]}
    - {name: cp-c, addresses: [127.0.22.13], roles: [master, worker]}
    - {name: wk-a, addresses: [127.0.22.21], roles: [worker]}
    - {name: wk-b, addresses: [127.0.22.22], roles: [worker]}
    - {name: wk-c, addresses: [127.0.22.23], roles: [worker]}
    - {name: etcd-a, addresses: [127.0.22.31], roles: [etcd]}
    - {name: etcd-b, addresses: [127.0.22.32], roles: [etcd]}
    - {name: etcd-c, addresses: [127.0.22.33], roles: [etcd]}
`;
}

/** Leaf and CA lifetimes of 5 and 20 years of 365 days, as operators set them when they expect no renewal for years. */
const LEAF_LIFETIME_HOURS = 5 * 8760;
const CA_LIFETIME_HOURS = 20 * 8760;
const HOUR_MS = 3_600_000;

const VIP = '127.0.22.100';
const SECOND_VIP = '127.0.23.100';
const MASTERS = ['cp-a', 'cp-b', 'cp-c'];
const KUBELET_NODES = ['cp-c', 'wk-a', 'wk-b', 'wk-c'];
const ETCD_MEMBERS = ['etcd-a', 'etcd-b', 'etcd-c'];
const PKI = '/etc/kubernetes/pki';
/** etcd log lines that show a TLS peer or client was refused for its certificate. */
const ETCD_TLS_REJECTION = /bad certificate|incompatible key usage/i;

describe('certificate failure cases on a running cluster', function () {
  this.timeout(300_000);
  let workdir: string;
  let scratch: string;
  let inventoryFile: string;
  let cluster: LocalCluster;
  let initStartedAt: Date;
  let initEndedAt: Date;
  let issueStartedAt: Date;
  let issueEndedAt: Date;

  const stateCa = (name: string): string => path.join(cluster.stateDir, 'pki', `${name}.crt`);
  const stateCaKey = (name: string): string => path.join(cluster.stateDir, 'pki', `${name}.key`);
  const onNode = (node: string, file: string): string => cluster.file(node, file);
  const nodeReport = (report: DistributeJson, name: string): DistributeJson['nodes'][number] => {
    const node = report.nodes.find((candidate) => candidate.name === name);
    assert.ok(node !== undefined, `report has no node ${name}`);
    return node;
  };
  const planEntry = (report: DistributeJson, node: string, item: string): DistributeJson['nodes'][number]['plan'][number] => {
    const entry = nodeReport(report, node).plan.find((candidate) => candidate.name === item);
    assert.ok(entry !== undefined, `plan of ${node} has no ${item}`);
    return entry;
  };
  /** Names of nodes the report lists with a status other than `unchanged`. */
  const touchedNodes = (report: DistributeJson): string[] => report.nodes.filter((node) => node.status !== 'unchanged').map((node) => node.name).sort();
  const etcdctl = (endpoints: string, args: readonly string[]) => {
    const pki = onNode('cp-a', PKI);
    return exec(
      'etcdctl',
      [`--endpoints=${endpoints}`, `--cacert=${pki}/etcd/ca.crt`, `--cert=${pki}/apiserver-etcd-client.crt`, `--key=${pki}/apiserver-etcd-client.key`, '--dial-timeout=5s', '--command-timeout=10s', ...args],
      { ...process.env, ETCDCTL_API: '3' },
    );
  };

  /**
   * Checks with openssl that every certificate the catalogue puts on every node carries the public
   * key of the private key beside it. The pairs are the leaves, the cluster CA on masters, the
   * service-account keys and the client credentials in each kubeconfig. Returns how many pairs
   * were compared.
   */
  async function assertEveryPairMatches(inventory: Inventory): Promise<number> {
    let compared = 0;
    const compare = async (node: string, what: string, publicSha: Promise<string>, privateSha: Promise<string>): Promise<void> => {
      assert.equal(await publicSha, await privateSha, `${node}: ${what}: the public key does not match the private key`);
      compared++;
    };
    for (const node of inventory.nodes) {
      const items = itemsForNode(inventory, node);
      for (const item of items) {
        if (item.type === 'leaf') {
          await compare(node.name, item.certificate.path, certificateKeySha256(onNode(node.name, item.certificate.path)), privateKeySha256(onNode(node.name, item.privateKey.path)));
        } else if (item.type === 'kubeconfig') {
          const pair = extractKubeconfigPair(readKubeconfig(onNode(node.name, item.file.path)), path.join(scratch, node.name), item.name);
          await compare(node.name, item.file.path, certificateKeySha256(pair.certificate), privateKeySha256(pair.privateKey));
        } else if ('ca' in item.source && item.source.part === 'privateKey') {
          const ca = item.source.ca;
          const certificate = items.find((other) => other.type === 'static' && 'ca' in other.source && other.source.ca === ca && other.source.part === 'certificate');
          assert.ok(certificate?.type === 'static', `${node.name}: holds the ${ca} key without its certificate`);
          await compare(node.name, item.file.path, certificateKeySha256(onNode(node.name, certificate.file.path)), privateKeySha256(onNode(node.name, item.file.path)));
        } else if ('keyPair' in item.source && item.source.part === 'privateKey') {
          await compare(node.name, item.file.path, publicKeySha256(onNode(node.name, `${PKI}/sa.pub`)), privateKeySha256(onNode(node.name, item.file.path)));
        }
      }
    }
    return compared;
  }

  before(async () => {
    assert.ok(which('etcd'), 'etcd is not installed: install the Debian package etcd-server');
    assert.ok(which('etcdctl'), 'etcdctl is not installed: install the Debian package etcd-client');
    assert.ok(which('openssl'), 'openssl is not installed: install the Debian package openssl');
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-cases-'));
    scratch = path.join(workdir, 'scratch');
    inventoryFile = path.join(workdir, 'cluster.yaml');
    fs.writeFileSync(inventoryFile, clusterInventory(['api.cluster.example']));
    cluster = await LocalCluster.create({ inventoryFile, workdir, etcd: true });
    // A second run of this suite at the same time would listen on these ports, and our controller would call its agents.
    for (const node of cluster.inventory.nodes) {
      const endpoints: [string, number][] = [[node.agent.host, node.agent.port]];
      if (node.roles.includes('etcd')) endpoints.push([node.addresses[0]!, 2379], [node.addresses[0]!, 2380]);
      for (const [host, port] of endpoints) {
        const inUse = await isListening(host, port);
        assert.ok(!inUse, `${host}:${port} is already in use; another run of this suite or another cluster on 127.0.22.0/24 is running, so wait for it to finish`);
      }
    }

    initStartedAt = new Date();
    const init = await cluster.init();
    initEndedAt = new Date();
    assert.equal(init.code, 0, init.stderr);
    await cluster.enrollAll();
    await cluster.startAgents();

    issueStartedAt = new Date();
    const { result, report } = await cluster.distributeJson();
    issueEndedAt = new Date();
    assert.equal(result.code, 0, `first distribute failed:\n${result.stdout}\n${result.stderr}`);
    for (const node of report.nodes) assert.equal(node.status, 'changed', `${node.name}: ${node.error ?? ''}`);
  });

  after(async () => {
    await cluster?.stop();
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('clients through the HA VIP get x509 errors', async () => {
    const shared = new Map<string, string[]>();
    for (const name of MASTERS) {
      const node = cluster.node(name).spec;
      const facts = await certificateFacts(onNode(name, `${PKI}/apiserver.crt`));
      for (const ip of [VIP, '10.96.0.1', '127.0.0.1', ...MASTERS.map((master) => cluster.node(master).spec.addresses[0]!), ...node.addresses]) assert.ok(facts.ipAddresses.includes(ip), `${name}: apiserver certificate lacks IP ${ip}: ${facts.ipAddresses.join(', ')}`);
      for (const dns of ['api.cluster.example', ...IN_CLUSTER_NAMES]) assert.ok(facts.dnsNames.includes(dns), `${name}: apiserver certificate lacks DNS ${dns}: ${facts.dnsNames.join(', ')}`);
      assert.deepEqual(facts.extKeyUsage, ['serverAuth'], `${name}: apiserver certificate usages`);
      const chain = await verifyChain(onNode(name, `${PKI}/ca.crt`), onNode(name, `${PKI}/apiserver.crt`));
      assert.ok(chain.ok, `${name}: apiserver certificate does not verify against ca.crt: ${chain.output}`);
      shared.set(name, sortedSans(facts));
    }
    assert.deepEqual(shared.get('cp-b'), shared.get('cp-a'), 'cp-a and cp-b differ in the SANs that every master must carry');
    assert.deepEqual(shared.get('cp-c'), shared.get('cp-a'), 'cp-a and cp-c differ in the SANs that every master must carry');
  });

  it('kubectl works only with --insecure-skip-tls-verify', async () => {
    // The host of every kubeconfig's server must be a SAN of each apiserver that the URL reaches.
    let checked = 0;
    for (const node of cluster.inventory.nodes) {
      for (const item of itemsForNode(cluster.inventory, node)) {
        if (item.type !== 'kubeconfig') continue;
        const server = readKubeconfig(onNode(node.name, item.file.path)).server;
        assert.equal(server, item.server, `${node.name}: ${item.name} server`);
        const host = hostOf(server);
        for (const master of mastersBehind(cluster.inventory, server)) {
          const facts = await certificateFacts(onNode(master.name, `${PKI}/apiserver.crt`));
          assert.ok([...facts.dnsNames, ...facts.ipAddresses].includes(host), `${node.name}: ${item.name} dials ${host}, which is not a SAN of ${master.name}'s apiserver`);
          checked++;
        }
      }
    }
    assert.ok(checked >= 20, `only ${checked} kubeconfig servers checked`);
    for (const [node, name] of [['cp-a', 'admin.conf'], ['wk-a', 'kubelet.conf'], ['wk-b', 'kube-proxy.conf']] as const) {
      assert.equal(readKubeconfig(onNode(node, `/etc/kubernetes/${name}`)).server, `https://${VIP}:6443`, `${node}: ${name} bypasses the VIP`);
    }
  });

  it('kubectl logs fails on one worker: unknown authority', async () => {
    for (const name of KUBELET_NODES) {
      const node = cluster.node(name).spec;
      const file = onNode(name, '/var/lib/kubelet/pki/kubelet.crt');
      assert.ok(fs.existsSync(onNode(name, '/var/lib/kubelet/pki/kubelet.key')), `${name}: kubelet serving key is missing`);
      // The apiserver's --kubelet-certificate-authority is the ca.crt on the masters.
      for (const master of MASTERS) {
        const chain = await verifyChain(onNode(master, `${PKI}/ca.crt`), file);
        assert.ok(chain.ok, `${name}: kubelet serving certificate does not verify against ${master}'s ca.crt: ${chain.output}`);
      }
      const facts = await certificateFacts(file);
      assert.notDeepEqual(facts.issuer, facts.subject, `${name}: kubelet serving certificate is self-signed`);
      assert.deepEqual(facts.subject, [`CN=system:node:${name}`, 'O=system:nodes'], `${name}: kubelet serving subject`);
      assert.deepEqual(facts.ipAddresses, [...node.addresses], `${name}: kubelet serving IP SANs`);
      assert.ok(facts.dnsNames.includes(name), `${name}: kubelet serving certificate lacks DNS ${name}`);
      assert.deepEqual(facts.extKeyUsage, ['serverAuth'], `${name}: kubelet serving usages`);
    }
  });

  for (const [file, symptom] of [
    ['server.crt', 'etcd logs "bad certificate" on 127.0.0.1:2379'],
    ['peer.crt', 'etcd peers never form a cluster'],
  ] as const) {
    it(symptom, async () => {
      for (const name of ETCD_MEMBERS) {
        const node = cluster.node(name).spec;
        const where = `${name}: etcd ${file}`;
        const facts = await certificateFacts(onNode(name, `${PKI}/etcd/${file}`));
        assert.deepEqual([...facts.extKeyUsage].sort(), ['clientAuth', 'serverAuth'], `${where}: extended key usage`);
        assert.ok(facts.keyUsage.includes('Digital Signature'), `${where}: key usage ${facts.keyUsage.join(', ')}`);
        assert.ok(facts.keyUsage.includes('Key Encipherment'), `${where}: key usage ${facts.keyUsage.join(', ')}`);
        for (const ip of [...node.addresses, '127.0.0.1']) assert.ok(facts.ipAddresses.includes(ip), `${where}: lacks IP ${ip}`);
        for (const dns of [name, 'localhost']) assert.ok(facts.dnsNames.includes(dns), `${where}: lacks DNS ${dns}`);
        const chain = await verifyChain(onNode(name, `${PKI}/etcd/ca.crt`), onNode(name, `${PKI}/etcd/${file}`));
        assert.ok(chain.ok, `${where}: does not verify against the etcd CA: ${chain.output}`);
      }
    });
  }

  it('etcd keeps logging "authentication handshake failed"', async () => {
    // Give etcd's gRPC gateway and peers at least 30 s to dial with these certificates.
    const quietUntil = issueEndedAt.getTime() + 30_000;
    if (Date.now() < quietUntil) await sleep(quietUntil - Date.now());

    for (const name of ETCD_MEMBERS) {
      const endpoint = `https://${cluster.node(name).spec.addresses[0]}:2379`;
      const health = await etcdctl(endpoint, ['endpoint', 'health']);
      assert.equal(health.code, 0, `${name}: ${health.stdout}${health.stderr}`);
      assert.match(health.stdout + health.stderr, /is healthy/, `${name}: ${health.stdout}${health.stderr}`);
    }
    const endpoints = ETCD_MEMBERS.map((name) => `https://${cluster.node(name).spec.addresses[0]}:2379`).join(',');
    const members = await etcdctl(endpoints, ['member', 'list']);
    assert.equal(members.code, 0, members.stderr);
    const started = members.stdout.split('\n').filter((line) => /,\s*started,/.test(line));
    assert.equal(started.length, 3, `expected three started members:\n${members.stdout}`);

    for (const name of ETCD_MEMBERS) {
      const logFile = cluster.node(name).etcd?.logFile;
      assert.ok(logFile !== undefined, `${name}: runs no etcd member`);
      assert.ok(fs.existsSync(logFile), `${name}: etcd log ${logFile} is missing`);
      const log = fs.readFileSync(logFile, 'utf8');
      assert.match(log, /ready to serve client requests/, `${name}: the etcd log shows no start-up, so it cannot show TLS errors either`);
      const rejections = log.split('\n').filter((line) => ETCD_TLS_REJECTION.test(line));
      assert.deepEqual(rejections, [], `${name}: etcd refused a certificate`);
    }
  });

  it('kubelets forbidden as user "system:node"', async () => {
    const certificates = new Set<string>();
    const keys = new Set<string>();
    for (const name of KUBELET_NODES) {
      const kubeconfig = readKubeconfig(onNode(name, '/etc/kubernetes/kubelet.conf'));
      const pair = extractKubeconfigPair(kubeconfig, path.join(scratch, name), 'kubelet-client');
      const facts = await certificateFacts(pair.certificate);
      assert.deepEqual(facts.subject, [`CN=system:node:${name}`, 'O=system:nodes'], `${name}: kubelet client subject`);
      assert.deepEqual(facts.extKeyUsage, ['clientAuth'], `${name}: kubelet client usages`);
      const chain = await verifyChain(stateCa('cluster-ca'), pair.certificate);
      assert.ok(chain.ok, `${name}: kubelet client certificate does not verify against the cluster CA: ${chain.output}`);
      certificates.add(kubeconfig.clientCertificatePem.trim());
      keys.add(await privateKeySha256(pair.privateKey));
    }
    assert.equal(certificates.size, KUBELET_NODES.length, 'two kubelets share a client certificate');
    assert.equal(keys.size, KUBELET_NODES.length, 'two kubelets share a client key');
  });

  it('kubectl logs forbidden on nodes/proxy', async () => {
    for (const name of MASTERS) {
      const file = onNode(name, `${PKI}/apiserver-kubelet-client.crt`);
      const facts = await certificateFacts(file);
      assert.deepEqual(facts.subject, ['CN=kube-apiserver-kubelet-client'], `${name}: apiserver kubelet client subject`);
      assert.deepEqual(facts.extKeyUsage, ['clientAuth'], `${name}: apiserver kubelet client usages`);
      const chain = await verifyChain(onNode(name, `${PKI}/ca.crt`), file);
      assert.ok(chain.ok, `${name}: kubelets cannot verify the apiserver kubelet client: ${chain.output}`);
    }
  });

  it('metrics API unavailable: unknown authority or key usage', async () => {
    const frontProxyCa = fs.readFileSync(onNode('cp-a', `${PKI}/front-proxy-ca.crt`));
    for (const name of MASTERS) {
      const file = onNode(name, `${PKI}/front-proxy-client.crt`);
      assert.ok(fs.readFileSync(onNode(name, `${PKI}/front-proxy-ca.crt`)).equals(frontProxyCa), `${name}: front-proxy CA differs from cp-a's`);
      const ownCa = await verifyChain(onNode(name, `${PKI}/front-proxy-ca.crt`), file);
      assert.ok(ownCa.ok, `${name}: front-proxy client does not verify against front-proxy-ca.crt: ${ownCa.output}`);
      const clusterCa = await verifyChain(onNode(name, `${PKI}/ca.crt`), file);
      assert.ok(!clusterCa.ok, `${name}: front-proxy client verifies against the cluster CA`);
      const facts = await certificateFacts(file);
      assert.deepEqual(facts.subject, ['CN=front-proxy-client'], `${name}: front-proxy client subject`);
      assert.deepEqual(facts.extKeyUsage, ['clientAuth'], `${name}: front-proxy client usages`);
    }
  });

  it('service-account tokens fail on some apiservers', async () => {
    // One service-account key pair for the cluster, the same on every master and unlike any TLS key.
    const expectedKey = fs.readFileSync(path.join(cluster.stateDir, 'pki', 'sa.key'));
    const expectedPublic = fs.readFileSync(path.join(cluster.stateDir, 'pki', 'sa.pub'));
    const serviceAccountSha = await publicKeySha256(path.join(cluster.stateDir, 'pki', 'sa.pub'));
    for (const name of MASTERS) {
      assert.ok(fs.readFileSync(onNode(name, `${PKI}/sa.key`)).equals(expectedKey), `${name}: sa.key differs`);
      assert.ok(fs.readFileSync(onNode(name, `${PKI}/sa.pub`)).equals(expectedPublic), `${name}: sa.pub differs`);
      assert.equal(await privateKeySha256(onNode(name, `${PKI}/sa.key`)), serviceAccountSha, `${name}: sa.pub does not match sa.key`);
      for (const certificate of ['apiserver.crt', 'apiserver-kubelet-client.crt', 'front-proxy-client.crt', 'apiserver-etcd-client.crt']) {
        assert.notEqual(await certificateKeySha256(onNode(name, `${PKI}/${certificate}`)), serviceAccountSha, `${name}: ${certificate} uses the service-account key`);
      }
    }
  });

  it('only kube-proxy fails with unknown authority', async () => {
    const clusterCa = fs.readFileSync(stateCa('cluster-ca'), 'utf8').trim();
    for (const name of KUBELET_NODES) {
      const kubeconfig = readKubeconfig(onNode(name, '/etc/kubernetes/kube-proxy.conf'));
      assert.equal(kubeconfig.server, `https://${VIP}:6443`, `${name}: kube-proxy server`);
      assert.equal(kubeconfig.certificateAuthorityPem.trim(), clusterCa, `${name}: kube-proxy embeds another CA`);
      assert.equal(kubeconfig.certificateAuthorityPem.trim(), fs.readFileSync(onNode(name, `${PKI}/ca.crt`), 'utf8').trim(), `${name}: kube-proxy CA differs from the node's ca.crt`);
      const pair = extractKubeconfigPair(kubeconfig, path.join(scratch, name), 'kube-proxy');
      const facts = await certificateFacts(pair.certificate);
      assert.deepEqual(facts.subject, ['CN=system:kube-proxy'], `${name}: kube-proxy subject`);
      assert.deepEqual(facts.extKeyUsage, ['clientAuth'], `${name}: kube-proxy usages`);
      const chain = await verifyChain(stateCa('cluster-ca'), pair.certificate);
      assert.ok(chain.ok, `${name}: kube-proxy client does not verify against the cluster CA: ${chain.output}`);
    }
    // No certificate serves in one role and authenticates in another.
    for (const name of MASTERS) {
      assert.notEqual(
        await certificateKeySha256(onNode(name, `${PKI}/apiserver.crt`)),
        await certificateKeySha256(onNode(name, `${PKI}/apiserver-kubelet-client.crt`)),
        `${name}: apiserver serving and kubelet client certificates share a key`,
      );
    }
    for (const name of KUBELET_NODES) {
      const client = extractKubeconfigPair(readKubeconfig(onNode(name, '/etc/kubernetes/kubelet.conf')), path.join(scratch, name), 'kubelet-client');
      assert.notEqual(await certificateKeySha256(onNode(name, '/var/lib/kubelet/pki/kubelet.crt')), await certificateKeySha256(client.certificate), `${name}: kubelet serving and client certificates share a key`);
    }
  });

  it('every worker NotReady after one year', async () => {
    // Kubelet client certificates last the configured lifetime of five years, not a one-year signing default.
    const earliest = Math.floor(issueStartedAt.getTime() / 1000) * 1000 + LEAF_LIFETIME_HOURS * HOUR_MS;
    const latest = issueEndedAt.getTime() + LEAF_LIFETIME_HOURS * HOUR_MS;
    for (const name of KUBELET_NODES) {
      const pair = extractKubeconfigPair(readKubeconfig(onNode(name, '/etc/kubernetes/kubelet.conf')), path.join(scratch, name), 'kubelet-client');
      const { notAfter } = await certificateFacts(pair.certificate);
      const expected = `issue time + ${LEAF_LIFETIME_HOURS}h (${new Date(earliest).toISOString()} to ${new Date(latest).toISOString()})`;
      assert.ok(notAfter.getTime() >= earliest, `${name}: kubelet client expires ${notAfter.toISOString()}, before ${expected}`);
      assert.ok(notAfter.getTime() <= latest, `${name}: kubelet client expires ${notAfter.toISOString()}, after ${expected}`);
    }
    const caFacts = await certificateFacts(stateCa('cluster-ca'));
    const caEarliest = Math.floor(initStartedAt.getTime() / 1000) * 1000 + CA_LIFETIME_HOURS * HOUR_MS;
    const caLatest = initEndedAt.getTime() + CA_LIFETIME_HOURS * HOUR_MS;
    const caExpected = `init time + ${CA_LIFETIME_HOURS}h (${new Date(caEarliest).toISOString()} to ${new Date(caLatest).toISOString()})`;
    assert.ok(caFacts.notAfter.getTime() >= caEarliest, `cluster CA expires ${caFacts.notAfter.toISOString()}, before ${caExpected}`);
    assert.ok(caFacts.notAfter.getTime() <= caLatest, `cluster CA expires ${caFacts.notAfter.toISOString()}, after ${caExpected}`);
  });

  it('apiserver logs "private key does not match public key"', async () => {
    // 9 on cp-a and cp-b, 12 on cp-c (it also runs a kubelet), 3 on each worker and etcd member.
    const compared = await assertEveryPairMatches(cluster.inventory);
    assert.ok(compared >= 48, `only ${compared} pairs compared`);
  });

  it('etcd publish fails with "request timed out"', async () => {
    const node = cluster.node('etcd-b').spec;
    const peerCertificate = onNode('etcd-b', `${PKI}/etcd/peer.crt`);
    await forgeCertificate({
      keyFile: onNode('etcd-b', `${PKI}/etcd/peer.key`),
      caCertificateFile: stateCa('etcd-ca'),
      caKeyFile: stateCaKey('etcd-ca'),
      commonName: 'etcd-b',
      extKeyUsage: ['serverAuth'],
      dnsNames: ['etcd-b', 'localhost'],
      ipAddresses: [...node.addresses, '127.0.0.1', '::1'],
      out: peerCertificate,
      scratchDir: scratch,
    });

    const plan = await cluster.distributeJson(['--dry-run']);
    assert.equal(plan.result.code, 0, plan.result.stderr);
    assert.deepEqual(touchedNodes(plan.report), ['etcd-b']);
    const entry = planEntry(plan.report, 'etcd-b', 'etcd-peer');
    assert.equal(entry.action, 'change');
    assert.deepEqual(entry.reasons, ['usage missing: clientAuth']);

    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const repaired = nodeReport(report, 'etcd-b');
    assert.equal(repaired.status, 'changed', repaired.error);
    assert.deepEqual([...repaired.changedFiles].sort(), [`${PKI}/etcd/peer.crt`, `${PKI}/etcd/peer.key`]);
    assert.deepEqual(repaired.restartedServices, ['etcd']);
    assert.deepEqual((await certificateFacts(peerCertificate)).extKeyUsage.slice().sort(), ['clientAuth', 'serverAuth']);

    const endpoints = ETCD_MEMBERS.map((name) => `https://${cluster.node(name).spec.addresses[0]}:2379`).join(',');
    const members = await etcdctl(endpoints, ['member', 'list']);
    assert.equal(members.stdout.split('\n').filter((line) => /,\s*started,/.test(line)).length, 3, members.stdout + members.stderr);
  });

  it('metrics-server logs "incompatible key usage"', async () => {
    // cp-a gets a client certificate from the cluster CA and cp-b one without clientAuth. Both keep their key.
    await forgeCertificate({
      keyFile: onNode('cp-a', `${PKI}/front-proxy-client.key`),
      caCertificateFile: stateCa('cluster-ca'),
      caKeyFile: stateCaKey('cluster-ca'),
      commonName: 'front-proxy-client',
      extKeyUsage: ['clientAuth'],
      out: onNode('cp-a', `${PKI}/front-proxy-client.crt`),
      scratchDir: scratch,
    });
    await forgeCertificate({
      keyFile: onNode('cp-b', `${PKI}/front-proxy-client.key`),
      caCertificateFile: stateCa('front-proxy-ca'),
      caKeyFile: stateCaKey('front-proxy-ca'),
      commonName: 'front-proxy-client',
      extKeyUsage: ['serverAuth'],
      out: onNode('cp-b', `${PKI}/front-proxy-client.crt`),
      scratchDir: scratch,
    });

    const plan = await cluster.distributeJson(['--dry-run']);
    assert.equal(plan.result.code, 0, plan.result.stderr);
    assert.deepEqual(touchedNodes(plan.report), ['cp-a', 'cp-b']);
    assert.deepEqual(planEntry(plan.report, 'cp-a', 'front-proxy-client').reasons, ['issuer changed: not signed by the current CA']);
    assert.deepEqual(planEntry(plan.report, 'cp-b', 'front-proxy-client').reasons, ['usage missing: clientAuth', 'usage not in the catalogue: serverAuth']);

    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    for (const name of ['cp-a', 'cp-b']) {
      const node = nodeReport(report, name);
      assert.equal(node.status, 'changed', node.error);
      assert.deepEqual([...node.changedFiles].sort(), [`${PKI}/front-proxy-client.crt`, `${PKI}/front-proxy-client.key`], `${name} changed files`);
      assert.deepEqual(node.restartedServices, ['kube-apiserver'], `${name} restarted services`);
      const file = onNode(name, `${PKI}/front-proxy-client.crt`);
      const chain = await verifyChain(onNode(name, `${PKI}/front-proxy-ca.crt`), file);
      assert.ok(chain.ok, `${name}: reissued front-proxy client does not verify: ${chain.output}`);
      assert.deepEqual((await certificateFacts(file)).extKeyUsage, ['clientAuth'], `${name}: reissued front-proxy client usages`);
    }
  });

  it('kubectl refuses a kubeconfig with a mismatched key', async () => {
    // A key that no longer matches makes distribute reissue the certificate and install both in one change.
    const leafCertificate = onNode('cp-a', `${PKI}/front-proxy-client.crt`);
    const leafCertificateBefore = fileSha256(leafCertificate);
    fs.writeFileSync(onNode('cp-a', `${PKI}/front-proxy-client.key`), await freshPrivateKey(), { mode: 0o600 });
    const adminConf = onNode('cp-b', '/etc/kubernetes/admin.conf');
    const adminCertificateBefore = readKubeconfig(adminConf).clientCertificatePem;
    replaceKubeconfigKey(adminConf, await freshPrivateKey());

    const plan = await cluster.distributeJson(['--dry-run']);
    assert.equal(plan.result.code, 0, plan.result.stderr);
    assert.deepEqual(touchedNodes(plan.report), ['cp-a', 'cp-b']);
    assert.deepEqual(planEntry(plan.report, 'cp-a', 'front-proxy-client').reasons, ['key does not match certificate']);
    assert.deepEqual(planEntry(plan.report, 'cp-b', 'admin.conf').reasons, ['key does not match certificate']);

    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.deepEqual([...nodeReport(report, 'cp-a').changedFiles].sort(), [`${PKI}/front-proxy-client.crt`, `${PKI}/front-proxy-client.key`]);
    assert.deepEqual(nodeReport(report, 'cp-b').changedFiles, ['/etc/kubernetes/admin.conf']);
    assert.notEqual(fileSha256(leafCertificate), leafCertificateBefore, 'cp-a kept the old front-proxy client certificate beside a new key');
    assert.equal(await certificateKeySha256(leafCertificate), await privateKeySha256(onNode('cp-a', `${PKI}/front-proxy-client.key`)), 'cp-a: front-proxy client pair does not match');
    const admin = readKubeconfig(adminConf);
    assert.notEqual(admin.clientCertificatePem, adminCertificateBefore, 'cp-b kept the old admin certificate beside a new key');
    const pair = extractKubeconfigPair(admin, path.join(scratch, 'cp-b'), 'admin');
    assert.equal(await certificateKeySha256(pair.certificate), await privateKeySha256(pair.privateKey), 'cp-b: admin.conf pair does not match');
  });

  it('key mismatch errors after an interrupted rotation', async () => {
    const certificate = onNode('cp-b', `${PKI}/front-proxy-client.crt`);
    const key = onNode('cp-b', `${PKI}/front-proxy-client.key`);
    // A matching pair that must be reissued (wrong usage), in the same change set as a kubeconfig
    // that cannot be written because a directory sits at its path.
    await forgeCertificate({
      keyFile: key,
      caCertificateFile: stateCa('front-proxy-ca'),
      caKeyFile: stateCaKey('front-proxy-ca'),
      commonName: 'front-proxy-client',
      extKeyUsage: ['serverAuth', 'clientAuth'],
      out: certificate,
      scratchDir: scratch,
    });
    const adminConf = onNode('cp-b', '/etc/kubernetes/admin.conf');
    fs.rmSync(adminConf);
    fs.mkdirSync(adminConf);
    const certificateBefore = fileSha256(certificate);
    const keyBefore = fileSha256(key);

    const failed = await cluster.distributeJson();
    // No node changed, so this is a failure (1), not a partial rollout (3).
    assert.equal(failed.result.code, 1, `distribute exit status with cp-b failed and no node changed:\n${failed.result.stderr}`);
    const node = nodeReport(failed.report, 'cp-b');
    assert.equal(node.status, 'failed');
    assert.ok((node.error ?? '') !== '', 'cp-b failed without an error message');
    assert.deepEqual(touchedNodes(failed.report), ['cp-b']);
    assert.equal(fileSha256(certificate), certificateBefore, 'cp-b: front-proxy client certificate changed although its change failed');
    assert.equal(fileSha256(key), keyBefore, 'cp-b: front-proxy client key changed although its change failed');
    assert.equal(await certificateKeySha256(certificate), await privateKeySha256(key), 'cp-b: front-proxy client pair does not match after the failed change');
    const leftovers = fs.readdirSync(onNode('cp-b', PKI)).filter((entry) => entry.includes('.tmp-'));
    assert.deepEqual(leftovers, [], 'cp-b: staged files left behind');

    fs.rmdirSync(adminConf);
    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const repaired = nodeReport(report, 'cp-b');
    assert.equal(repaired.status, 'changed', repaired.error);
    assert.deepEqual([...repaired.changedFiles].sort(), ['/etc/kubernetes/admin.conf', `${PKI}/front-proxy-client.crt`, `${PKI}/front-proxy-client.key`]);
    assert.equal(await certificateKeySha256(certificate), await privateKeySha256(key), 'cp-b: reissued front-proxy client pair does not match');
    assert.deepEqual((await certificateFacts(certificate)).extKeyUsage, ['clientAuth']);
  });

  it('new VIP still rejected by some masters', async () => {
    // A master that does not receive the reissued certificate is reported as failed, never as a success.
    fs.writeFileSync(inventoryFile, clusterInventory(['api.cluster.example', SECOND_VIP]));

    const plan = await cluster.distributeJson(['--dry-run']);
    assert.equal(plan.result.code, 0, plan.result.stderr);
    assert.deepEqual(touchedNodes(plan.report), MASTERS);
    for (const name of MASTERS) {
      const changes = nodeReport(plan.report, name).plan.filter((entry) => entry.action !== 'unchanged');
      assert.deepEqual(changes.map((entry) => entry.name), ['apiserver'], `${name}: planned changes`);
      assert.deepEqual(changes[0]?.reasons, [`SAN missing: ${SECOND_VIP}`], `${name}: reasons`);
    }

    // With one master unreachable, the run fails and names that master.
    await cluster.stopAgents(['cp-c']);
    const partial = await cluster.distributeJson();
    // cp-a and cp-b changed while cp-c failed: a partial rollout, which exits with 3.
    assert.equal(partial.result.code, 3, `distribute exit status with cp-a and cp-b changed and cp-c failed:\n${partial.result.stderr}`);
    const unreachable = nodeReport(partial.report, 'cp-c');
    assert.equal(unreachable.status, 'failed');
    assert.match(unreachable.error ?? '', /127\.0\.22\.13/);
    for (const name of ['cp-a', 'cp-b']) {
      const node = nodeReport(partial.report, name);
      assert.equal(node.status, 'changed', node.error);
      assert.deepEqual([...node.changedFiles].sort(), [`${PKI}/apiserver.crt`, `${PKI}/apiserver.key`], `${name} changed files`);
      assert.deepEqual(node.restartedServices, ['kube-apiserver'], `${name} restarted services`);
    }

    await cluster.startAgents(['cp-c']);
    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.deepEqual(touchedNodes(report), ['cp-c']);

    const shared = new Map<string, string[]>();
    for (const name of MASTERS) {
      const facts: CertificateFacts = await certificateFacts(onNode(name, `${PKI}/apiserver.crt`));
      for (const ip of [VIP, SECOND_VIP]) assert.ok(facts.ipAddresses.includes(ip), `${name}: apiserver certificate lacks ${ip}`);
      shared.set(name, sortedSans(facts));
    }
    assert.deepEqual(shared.get('cp-b'), shared.get('cp-a'), 'cp-a and cp-b differ in the SANs that every master must carry');
    assert.deepEqual(shared.get('cp-c'), shared.get('cp-a'), 'cp-a and cp-c differ in the SANs that every master must carry');
  });

  it('"private key does not match" after repeated rollouts', async () => {
    // After the repairs above, every installed pair matches and another run changes nothing.
    const inventory = inventoryOf(fs.readFileSync(inventoryFile, 'utf8'));
    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, result.stderr);
    for (const node of report.nodes) {
      assert.equal(node.status, 'unchanged', `${node.name}: ${JSON.stringify(node.plan.filter((entry) => entry.action !== 'unchanged'))}`);
    }
    const compared = await assertEveryPairMatches(inventory);
    assert.ok(compared >= 48, `only ${compared} pairs compared`);
  });
});
