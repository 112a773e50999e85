/**
 * Go's crypto/x509 as the judge of every issued certificate. kube-apiserver, the kubelet and etcd
 * verify peers with Go, which is stricter than OpenSSL. It compares issuer and subject bytes and
 * enforces extended key usages along the whole chain. It matches IP SANs only against IP
 * addresses, and it never treats the common name as a host name.
 *
 * Each cluster shape is distributed with the real controller CLI and one agent per node on
 * loopback (127.0.25.0/24 and 127.0.26.0/24, no etcd members). The checks come from the
 * catalogue, through itemsForNode, so a new catalogue item is judged without changing this file.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { selfSignedCa, signLeaf } from '@kubetrust/controller/dist/authority';
import { itemsForNode, type NodeItem } from '@kubetrust/shared/dist/catalogue';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import { generateKeyPair, privateKeyToPem } from '@kubetrust/shared/dist/pki';
import { verifyWithGo, type GoCheck, type GoKeyUsage, type GoResult } from '../harness/go-verifier';
import { LocalCluster } from '../harness/local-cluster';
import { readKubeconfig } from './cases-support';

type LeafItem = Extract<NodeItem, { type: 'leaf' }>;
type KubeconfigItem = Extract<NodeItem, { type: 'kubeconfig' }>;
type StaticItem = Extract<NodeItem, { type: 'static' }>;

const DAY_MS = 24 * 60 * 60 * 1000;

/** Encodes DER as a PEM CERTIFICATE block. */
function certificatePem(der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** Fails with every rejected check listed, so one run shows all that Go rejects. */
function assertAllAccepted(results: readonly GoResult[]): void {
  const rejected = results.filter((result) => !result.ok).map((result) => `${result.name}: ${result.errors.join('; ')}`);
  assert.deepEqual(rejected, [], `Go rejected ${rejected.length} of ${results.length} checks:\n${rejected.join('\n')}`);
}

/** Requires one failure with exactly one error that matches `expected`, so the check failed for that reason alone. */
function assertRejected(result: GoResult | undefined, expected: RegExp): void {
  assert.ok(result !== undefined, 'the verifier returned no result');
  assert.equal(result.ok, false, `${result.name}: Go accepted it`);
  assert.equal(result.errors.length, 1, `${result.name}: expected one error, got ${JSON.stringify(result.errors)}`);
  assert.match(result.errors[0] ?? '', expected, result.name);
}

/** Splits names into the DNS names and IP addresses that `VerifyHostname` gets. */
function splitNames(names: readonly string[]): { dnsNames: string[]; ips: string[] } {
  return { dnsNames: names.filter((name) => isIP(name) === 0), ips: names.filter((name) => isIP(name) !== 0) };
}

/** Host of an https URL, without the brackets of an IPv6 address. */
function hostOf(url: string): string {
  return new URL(url).hostname.replace(/^\[|\]$/g, '');
}

/**
 * Returns the first address of a CIDR, which kube-apiserver gives the `kubernetes` service.
 * Computed here rather than taken from the catalogue, so that a wrong service IP there is caught.
 */
function firstServiceIp(cidr: string): string {
  const [network = ''] = cidr.split('/');
  if (isIP(network) === 4) {
    const octets = network.split('.').map(Number);
    const value = octets.reduce((sum, octet) => sum * 256 + octet, 0) + 1;
    return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
  }
  const [head = '', tail = ''] = network.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  const groups = [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  const value = groups.reduce((sum, group) => (sum << 16n) + BigInt(parseInt(group, 16)), 0n) + 1n;
  const words = [...Array(8).keys()].map((index) => ((value >> BigInt(16 * (7 - index))) & 0xffffn).toString(16));
  return words.join(':');
}

/**
 * Usages that a leaf's consumers rely on, joined with the usages the catalogue declares. A leaf
 * with SANs is a serving certificate, because only a client checks names. A leaf without SANs can
 * only identify a client. etcd also dials with its server and peer certificates (members connect
 * to each other, and the gRPC gateway connects to the member's own client port), so a leaf that
 * etcd reads and that has SANs needs both usages.
 */
function requiredUsages(item: LeafItem): GoKeyUsage[] {
  const hasSans = item.sans.dnsNames.length + item.sans.ipAddresses.length > 0;
  const usages = new Set<GoKeyUsage>(item.extKeyUsage);
  usages.add(hasSans ? 'serverAuth' : 'clientAuth');
  if (hasSans && item.certificate.consumers.includes('etcd')) usages.add('clientAuth');
  return [...usages].sort();
}

/** Tells whether an item is kube-apiserver's serving certificate: read by kube-apiserver and used for serverAuth. */
function isApiServerServing(item: NodeItem): item is LeafItem {
  return item.type === 'leaf' && item.certificate.consumers.includes('kube-apiserver') && requiredUsages(item).includes('serverAuth');
}

function leavesOf(items: readonly NodeItem[]): LeafItem[] {
  return items.filter((item): item is LeafItem => item.type === 'leaf');
}

/** Check builder for one distributed cluster: reads the installed files and the state directory. */
class ClusterChecks {
  constructor(readonly cluster: LocalCluster) {}

  get inventory(): Inventory {
    return this.cluster.inventory;
  }

  items(node: NodeSpec): NodeItem[] {
    return itemsForNode(this.inventory, node);
  }

  /** Reads a CA certificate from the controller's state directory, which every node's trust files copy. */
  caPem(ca: string): string {
    return fs.readFileSync(path.join(this.cluster.stateDir, 'pki', `${ca}.crt`), 'utf8');
  }

  /** Lists the names of the CA certificates in the state directory. */
  caNames(): string[] {
    return fs
      .readdirSync(path.join(this.cluster.stateDir, 'pki'))
      .filter((name) => name.endsWith('.crt'))
      .map((name) => name.slice(0, -'.crt'.length))
      .sort();
  }

  read(node: NodeSpec, nodePath: string): string {
    return fs.readFileSync(this.cluster.file(node.name, nodePath), 'utf8');
  }

  masters(): NodeSpec[] {
    return this.inventory.nodes.filter((node) => node.roles.includes('master'));
  }

  /** Finds the apiserver serving leaf of a master, and fails the test unless there is exactly one. */
  apiServerLeaf(master: NodeSpec): LeafItem {
    const serving = this.items(master).filter(isApiServerServing);
    assert.equal(serving.length, 1, `${master.name}: expected one kube-apiserver serving certificate, found ${serving.map((item) => item.name).join(', ')}`);
    return serving[0]!;
  }

  /**
   * Masters whose apiserver a client of `server` reaches: the master that has the URL's host as an
   * address or name, or every master when the host is the shared endpoint in front of them.
   */
  mastersBehind(server: string): NodeSpec[] {
    const host = hostOf(server);
    const direct = this.masters().filter((node) => [node.name, ...node.hostnames, ...node.addresses].includes(host));
    return direct.length > 0 ? direct : this.masters();
  }

  /**
   * Builds checks of every leaf against its parent CA, for its usages, every SAN and its key. Every
   * installed CA file is also checked against the CA that it copies.
   */
  leafChecks(): GoCheck[] {
    const checks: GoCheck[] = [];
    for (const node of this.inventory.nodes) {
      for (const item of this.items(node)) {
        if (item.type === 'leaf') {
          checks.push({
            name: `${node.name} ${item.name}`,
            certPem: this.read(node, item.certificate.path),
            roots: [this.caPem(item.parent)],
            keyUsages: requiredUsages(item),
            dnsNames: item.sans.dnsNames,
            ips: item.sans.ipAddresses,
            keyPem: this.read(node, item.privateKey.path),
          });
        } else if (item.type === 'static' && 'ca' in item.source && item.source.part === 'certificate') {
          checks.push(this.caFileCheck(node, item));
        }
      }
    }
    return checks;
  }

  private caFileCheck(node: NodeSpec, item: StaticItem): GoCheck {
    assert.ok('ca' in item.source);
    return {
      name: `${node.name} ${item.name} at ${item.file.path}`,
      certPem: this.read(node, item.file.path),
      roots: [this.caPem(item.source.ca)],
      keyUsages: ['any'],
    };
  }

  /**
   * Builds checks of every kubeconfig's client certificate and embedded key against the embedded CA
   * and the cluster CA. The apiserver of each master behind the server URL is checked for the URL's
   * host against the embedded CA, as the client that uses the kubeconfig verifies it.
   */
  kubeconfigChecks(): GoCheck[] {
    const checks: GoCheck[] = [];
    for (const node of this.inventory.nodes) {
      const kubeconfigs = this.items(node).filter((item): item is KubeconfigItem => item.type === 'kubeconfig');
      for (const item of kubeconfigs) {
        const kubeconfig = readKubeconfig(this.cluster.file(node.name, item.file.path));
        const client = { certPem: kubeconfig.clientCertificatePem, keyUsages: ['clientAuth'] as GoKeyUsage[], keyPem: kubeconfig.clientKeyPem };
        checks.push({ name: `${node.name} ${item.name} client against the embedded CA`, roots: [kubeconfig.certificateAuthorityPem], ...client });
        checks.push({ name: `${node.name} ${item.name} client against ${item.parent}`, roots: [this.caPem(item.parent)], ...client });

        assert.equal(kubeconfig.server, item.server, `${node.name} ${item.name}: server URL`);
        for (const master of this.mastersBehind(kubeconfig.server)) {
          checks.push({
            name: `${node.name} ${item.name} server ${kubeconfig.server} served by ${master.name}`,
            certPem: this.read(master, this.apiServerLeaf(master).certificate.path),
            roots: [kubeconfig.certificateAuthorityPem],
            keyUsages: ['serverAuth'],
            ...splitNames([hostOf(kubeconfig.server)]),
          });
        }
      }
    }
    return checks;
  }

  /**
   * Builds a check of each master's apiserver for the names that clients dial. They come from the
   * inventory rather than the catalogue: the endpoint host, every extra SAN, the in-cluster service
   * names and the `kubernetes` service IP of every service CIDR.
   */
  apiServerChecks(): GoCheck[] {
    const domain = this.inventory.clusterDomain;
    const inClusterNames = ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', `kubernetes.default.svc.${domain}`];
    const names = [this.inventory.apiServer.host, ...this.inventory.apiServer.extraSANs, ...inClusterNames, ...this.inventory.serviceCIDRs.map(firstServiceIp)];
    return this.masters().map((master) => {
      const leaf = this.apiServerLeaf(master);
      return {
        name: `${master.name} ${leaf.name} for the names clients dial`,
        certPem: this.read(master, leaf.certificate.path),
        roots: [this.caPem(leaf.parent)],
        keyUsages: ['serverAuth'],
        ...splitNames(names),
      };
    });
  }

  /** Builds checks that must fail, each with one fault, from the first master's certificates. */
  negativeChecks(): { check: GoCheck; expected: RegExp }[] {
    const master = this.masters()[0];
    assert.ok(master !== undefined, 'the inventory has no master');
    const server = this.apiServerLeaf(master);
    const clientLeaf = leavesOf(this.items(master)).find((item) => !requiredUsages(item).includes('serverAuth'));
    assert.ok(clientLeaf !== undefined, `${master.name} has no client-only certificate`);
    const wrongCa = this.caNames().find((name) => name !== server.parent);
    assert.ok(wrongCa !== undefined, `the state directory has no CA other than ${server.parent}`);

    const serverPem = this.read(master, server.certificate.path);
    const validity = new crypto.X509Certificate(serverPem);
    const sans = [...server.sans.dnsNames, ...server.sans.ipAddresses];
    const commonName = server.subject.commonName;
    assert.ok(!sans.includes(commonName), `${server.name}: the common name ${commonName} is also a SAN, so it cannot show that Go ignores the common name`);

    const base: GoCheck = { name: '', certPem: serverPem, roots: [this.caPem(server.parent)], keyUsages: ['serverAuth'] };
    const clientBase: GoCheck = { name: '', certPem: this.read(master, clientLeaf.certificate.path), roots: [this.caPem(clientLeaf.parent)], keyUsages: ['clientAuth'] };
    const outOfValidity = /^verify for serverAuth: x509: certificate has expired or is not yet valid/;
    return [
      { check: { ...base, name: `${server.name} used for clientAuth`, keyUsages: ['clientAuth'] }, expected: /^verify for clientAuth: x509: certificate specifies an incompatible key usage/ },
      { check: { ...clientBase, name: `${clientLeaf.name} used for serverAuth`, keyUsages: ['serverAuth'] }, expected: /^verify for serverAuth: x509: certificate specifies an incompatible key usage/ },
      { check: { ...base, name: `${server.name} for a DNS name not in its SANs`, dnsNames: ['not-a-san.gv.example'] }, expected: /^hostname not-a-san\.gv\.example: x509: certificate is valid for .*, not not-a-san\.gv\.example/ },
      { check: { ...base, name: `${server.name} for an IP not in its SANs`, ips: ['192.0.2.250'] }, expected: /^IP 192\.0\.2\.250: x509: certificate is valid for .*, not 192\.0\.2\.250/ },
      { check: { ...base, name: `${server.name} for its common name`, dnsNames: [commonName] }, expected: new RegExp(`^hostname ${commonName}: x509: certificate is valid for .*, not ${commonName}`) },
      { check: { ...base, name: `${server.name} against ${wrongCa}`, roots: [this.caPem(wrongCa)] }, expected: /^verify for serverAuth: x509: certificate signed by unknown authority/ },
      { check: { ...base, name: `${server.name} after notAfter`, at: new Date(new Date(validity.validTo).getTime() + 1000) }, expected: outOfValidity },
      { check: { ...base, name: `${server.name} before notBefore`, at: new Date(new Date(validity.validFrom).getTime() - 60 * 60 * 1000) }, expected: outOfValidity },
      { check: { ...base, name: `${server.name} with the key of ${clientLeaf.name}`, keyPem: this.read(master, clientLeaf.privateKey.path) }, expected: /^key pair: tls: private key does not match public key/ },
    ];
  }
}

interface Shape {
  readonly title: string;
  readonly inventory: string;
}

/**
 * Cluster shapes. Each uses its own loopback addresses for its agents, so an agent that is slow to
 * stop cannot hold the port of the next shape. The endpoint hosts, extra SANs and IPv6 addresses
 * only go into certificates and kubeconfigs, and nothing connects to them.
 */
const SHAPES: readonly Shape[] = [
  {
    title: 'kubeadm layout, RSA-2048, stacked node',
    inventory: `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: gv-kubeadm}
spec:
  apiServer: {endpoint: "https://127.0.25.100:6443", extraSANs: [api.gv-kubeadm.example, 127.0.25.101]}
  pki: {layout: kubeadm, keyAlgorithm: RSA-2048}
  nodes:
    - {name: etcd-1, addresses: [127.0.25.11], roles: [etcd]}
    - {name: master-1, addresses: [127.0.25.12], hostnames: [master-1.gv-kubeadm.example], roles: [master]}
    - {name: worker-1, addresses: [127.0.25.13], roles: [worker]}
    - {name: stacked-1, addresses: [127.0.25.14], hostnames: [stacked-1.gv-kubeadm.example], roles: [etcd, master, worker]}
`,
  },
  {
    title: 'single-ca layout, ECDSA-P256, DNS endpoint',
    inventory: `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: gv-single}
spec:
  apiServer: {endpoint: "https://api.gv-single.example:6443", extraSANs: [127.0.25.120]}
  pki: {layout: single-ca, keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: cp-1, addresses: [127.0.25.21], roles: [etcd, master]}
    - {name: worker-1, addresses: [127.0.25.22], roles: [worker]}
`,
  },
  {
    title: 'kubeadm layout, ECDSA-P384',
    inventory: `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: gv-p384}
spec:
  apiServer: {endpoint: "https://127.0.26.100:6443"}
  pki: {layout: kubeadm, keyAlgorithm: ECDSA-P384}
  nodes:
    - {name: cp-1, addresses: [127.0.26.11], roles: [etcd, master]}
    - {name: worker-1, addresses: [127.0.26.12], roles: [worker]}
`,
  },
  {
    title: 'single-ca layout, RSA-3072',
    inventory: `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: gv-rsa3072}
spec:
  apiServer: {endpoint: "https://127.0.26.110:6443"}
  pki: {layout: single-ca, keyAlgorithm: RSA-3072}
  nodes:
    - {name: cp-1, addresses: [127.0.26.21], roles: [etcd, master]}
    - {name: worker-1, addresses: [127.0.26.22], roles: [worker]}
`,
  },
  {
    // The master's first address is IPv6, so its agent endpoint is set to a loopback address, and
    // its own kubeconfigs point at https://[fd00:26::31]:6443.
    title: 'dual-stack service CIDR, IPv6 node addresses',
    inventory: `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: gv-dual}
spec:
  serviceCIDR: "10.96.0.0/12,fd00:10:96::/112"
  apiServer: {endpoint: "https://[fd00:26::100]:6443", extraSANs: [127.0.26.130, "fd00:26::101"]}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: cp-1, addresses: ["fd00:26::31", 127.0.26.31], roles: [etcd, master], agent: {endpoint: "127.0.26.31:7443"}}
    - {name: worker-1, addresses: [127.0.26.32, "fd00:26::32"], roles: [worker]}
`,
  },
];

describe('Go verifier', function () {
  this.timeout(300_000);

  it('reports malformed certificates', async () => {
    const garbage = certificatePem(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]));
    const keys = await generateKeyPair('ECDSA-P256');
    const ca = selfSignedCa('gv-unit-ca', keys, 365 * DAY_MS, new Date());
    const results = await verifyWithGo([
      { name: 'not PEM', certPem: 'not a certificate', roots: [ca], keyUsages: ['serverAuth'] },
      { name: 'bad DER', certPem: garbage, roots: [ca], keyUsages: ['serverAuth'] },
      { name: 'bad root', certPem: ca, roots: [garbage], keyUsages: ['any'] },
    ]);
    assertRejected(results[0], /^certPem: no PEM block found$/);
    assertRejected(results[1], /^certPem: PEM block 0: x509: malformed/);
    assertRejected(results[2], /^roots\[0\]: PEM block 0: x509: malformed/);
  });

  it('never falls back to system roots', async () => {
    const keys = await generateKeyPair('ECDSA-P256');
    const ca = selfSignedCa('gv-unit-ca', keys, 365 * DAY_MS, new Date());
    const [result] = await verifyWithGo([{ name: 'no roots', certPem: ca, roots: [], keyUsages: ['any'] }]);
    assertRejected(result, /^roots: no CA certificate given/);
  });

  it('rejects a tampered signature', async () => {
    const caKeys = await generateKeyPair('ECDSA-P256');
    const leafKeys = await generateKeyPair('ECDSA-P256');
    const now = new Date();
    const caPem = selfSignedCa('gv-unit-ca', caKeys, 365 * DAY_MS, now);
    const ca = { certificatePem: caPem, privateKey: caKeys.privateKey, privateKeyPem: privateKeyToPem(caKeys.privateKey) };
    const leafPem = signLeaf(ca, { commonName: 'gv-unit-leaf', extKeyUsage: ['clientAuth'] }, leafKeys.publicKey, DAY_MS, now);
    const der = Buffer.from(new crypto.X509Certificate(leafPem).raw);
    // The last byte belongs to the signature value, so the certificate still parses.
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
    const results = await verifyWithGo([
      { name: 'intact', certPem: leafPem, roots: [caPem], keyUsages: ['clientAuth'] },
      { name: 'tampered', certPem: certificatePem(der), roots: [caPem], keyUsages: ['clientAuth'] },
    ]);
    assertAllAccepted(results.slice(0, 1));
    assertRejected(results[1], /^verify for clientAuth: x509: certificate signed by unknown authority \(possibly because of .*verification/);
  });

  it('rejects a negative serial number', async () => {
    const caKeys = await generateKeyPair('ECDSA-P256');
    const leafKeys = await generateKeyPair('ECDSA-P256');
    const now = new Date();
    const caPem = selfSignedCa('gv-unit-ca', caKeys, 365 * DAY_MS, now);
    const ca = { certificatePem: caPem, privateKey: caKeys.privateKey, privateKeyPem: privateKeyToPem(caKeys.privateKey) };
    const leafPem = signLeaf(ca, { commonName: 'gv-unit-leaf', extKeyUsage: ['clientAuth'] }, leafKeys.publicKey, DAY_MS, now);
    const der = Buffer.from(new crypto.X509Certificate(leafPem).raw);
    // Certificate and TBSCertificate headers take 4 bytes each (long lengths), the version field 5,
    // so the serial number INTEGER starts at byte 13. Its first content byte is at 15.
    assert.equal(der[13], 0x02, 'the serial number is not where this test expects it');
    der[15] = (der[15] ?? 0) | 0x80;
    const [result] = await verifyWithGo([{ name: 'negative serial', certPem: certificatePem(der), roots: [caPem], keyUsages: ['clientAuth'] }]);
    assertRejected(result, /^certPem: PEM block 0: x509: negative serial number/);
  });

  it('accepts an RSA-4096 CA and leaf from the controller signer', async () => {
    const [caKeys, leafKeys] = await Promise.all([generateKeyPair('RSA-4096'), generateKeyPair('RSA-4096')]);
    const now = new Date();
    const caPem = selfSignedCa('gv-rsa4096-ca', caKeys, 3650 * DAY_MS, now);
    const ca = { certificatePem: caPem, privateKey: caKeys.privateKey, privateKeyPem: privateKeyToPem(caKeys.privateKey) };
    const profile = { commonName: 'gv-rsa4096-server', extKeyUsage: ['serverAuth', 'clientAuth'] as const, dnsNames: ['server.gv.example'], ipAddresses: ['192.0.2.10', '2001:db8::10'] };
    const leafPem = signLeaf(ca, profile, leafKeys.publicKey, 365 * DAY_MS, now);
    const results = await verifyWithGo([
      { name: 'RSA-4096 CA', certPem: caPem, roots: [caPem], keyUsages: ['any'] },
      {
        name: 'RSA-4096 leaf',
        certPem: leafPem,
        roots: [caPem],
        keyUsages: ['serverAuth', 'clientAuth'],
        dnsNames: profile.dnsNames,
        ips: profile.ipAddresses,
        keyPem: privateKeyToPem(leafKeys.privateKey),
      },
    ]);
    assertAllAccepted(results);
  });
});

for (const shape of SHAPES) {
  describe(`Go verification of ${shape.title}`, function () {
    this.timeout(300_000);
    let workdir: string;
    let cluster: LocalCluster | undefined;
    let clusterChecks: ClusterChecks;

    before(async () => {
      workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-go-verify-'));
      const inventoryFile = path.join(workdir, 'cluster.yaml');
      fs.writeFileSync(inventoryFile, shape.inventory);
      cluster = await LocalCluster.create({ inventoryFile, workdir, etcd: false });
      const init = await cluster.init();
      assert.equal(init.code, 0, `controller init failed:\n${init.stdout}\n${init.stderr}`);
      await cluster.enrollAll();
      await cluster.startAgents();
      const { result, report } = await cluster.distributeJson();
      assert.equal(result.code, 0, `controller distribute failed:\n${result.stdout}\n${result.stderr}`);
      for (const node of report.nodes) assert.equal(node.status, 'changed', `${node.name}: ${node.error ?? ''}`);
      clusterChecks = new ClusterChecks(cluster);
    });

    after(async () => {
      await cluster?.stop();
      if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
    });

    it('accepts every leaf and CA file', async () => {
      const checks = clusterChecks.leafChecks();
      const leafCount = clusterChecks.inventory.nodes.reduce((sum, node) => sum + leavesOf(clusterChecks.items(node)).length, 0);
      assert.ok(leafCount > 0, 'the catalogue gives this cluster no leaf certificate');
      assertAllAccepted(await verifyWithGo(checks));
    });

    it('accepts every kubeconfig and its server', async () => {
      const checks = clusterChecks.kubeconfigChecks();
      assert.ok(checks.length > 0, 'the catalogue gives this cluster no kubeconfig');
      assertAllAccepted(await verifyWithGo(checks));
    });

    it('accepts the apiserver for dialed names', async () => {
      assertAllAccepted(await verifyWithGo(clusterChecks.apiServerChecks()));
    });

    it('rejects wrong usage, name, CA, time and key', async () => {
      const negatives = clusterChecks.negativeChecks();
      const results = await verifyWithGo(negatives.map((negative) => negative.check));
      negatives.forEach((negative, index) => assertRejected(results[index], negative.expected));
    });
  });
}
