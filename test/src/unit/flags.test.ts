import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { goDuration, itemsForNode, servicesForNode, type NodeItem, type ResolvedFile } from '@kubetrust/shared/dist/catalogue';
import { flagsForNode, kubeletDropInFlags, type ComponentFlag } from '@kubetrust/shared/dist/catalogue/flags';
import { PATH_LAYOUTS, parseInventory, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';
import { runController } from '../harness/local-cluster';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: flags}
spec:
  clusterDomain: k8s.example
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  nodes:
    - {name: etcd-1, addresses: [192.0.2.11], roles: [etcd]}
    - {name: cp-1, addresses: [192.0.2.21], roles: [master]}
    - {name: stacked-1, addresses: [192.0.2.22], roles: [etcd, master, worker]}
    - {name: wk-1, addresses: [192.0.2.31], roles: [worker]}
    - {name: wk-boot, addresses: [192.0.2.32], roles: [worker], kubelet: {credentials: bootstrap}}
`;

/** PKI blocks that change which files a node holds or where they go. */
const PKI_VARIANTS = [
  '{}',
  '{pathLayout: cfssl}',
  '{layout: single-ca}',
  '{layout: single-ca, pathLayout: cfssl}',
  '{layout: single-ca, pathOverrides: {etcd-ca.certificate: /etc/kubernetes/pki/ca.crt}}',
  '{pathOverrides: {apiserver.certificate: /srv/pki/apiserver.pem, kubelet.conf.file: /var/lib/kubelet/kubeconfig}}',
];

function inventory(pki = '{}'): Inventory {
  return parseInventory(INVENTORY.replace('spec:\n', `spec:\n  pki: ${pki}\n`), 'flags.yaml').inventory;
}

function node(inv: Inventory, name: string): NodeSpec {
  const found = inv.nodes.find((candidate) => candidate.name === name);
  assert.ok(found, `node ${name} is not in the test inventory`);
  return found;
}

function filesOf(item: NodeItem): ResolvedFile[] {
  return item.type === 'leaf' ? [item.certificate, item.privateKey] : [item.file];
}

/** Path of one file of a node item: the certificate or key of a leaf, the only file otherwise. */
function pathOf(items: readonly NodeItem[], name: string, part: 'certificate' | 'privateKey' | 'file' = 'file'): string {
  const item = items.find((candidate) => candidate.name === name);
  assert.ok(item !== undefined, `item ${name} is missing`);
  if (item.type === 'leaf') return part === 'privateKey' ? item.privateKey.path : item.certificate.path;
  return item.file.path;
}

function flagsOf(flags: readonly ComponentFlag[], service: string): Map<string, string> {
  return new Map(flags.filter((flag) => flag.service === service).map((flag) => [flag.flag, flag.value]));
}

describe('component flags of a node', () => {
  for (const layout of PATH_LAYOUTS) {
    it(`points kube-apiserver at the node's files (${layout})`, () => {
      const inv = inventory(`{pathLayout: ${layout}}`);
      const stacked = node(inv, 'stacked-1');
      const items = itemsForNode(inv, stacked);
      const expected = new Map([
        ['--client-ca-file', pathOf(items, 'cluster-ca.crt')],
        ['--kubelet-certificate-authority', pathOf(items, 'cluster-ca.crt')],
        ['--etcd-cafile', pathOf(items, 'etcd-ca.crt')],
        ['--requestheader-client-ca-file', pathOf(items, 'front-proxy-ca.crt')],
        ['--service-account-signing-key-file', pathOf(items, 'sa.key')],
        ['--service-account-key-file', pathOf(items, 'sa.pub')],
        ['--tls-cert-file', pathOf(items, 'apiserver', 'certificate')],
        ['--tls-private-key-file', pathOf(items, 'apiserver', 'privateKey')],
        ['--kubelet-client-certificate', pathOf(items, 'apiserver-kubelet-client', 'certificate')],
        ['--kubelet-client-key', pathOf(items, 'apiserver-kubelet-client', 'privateKey')],
        ['--proxy-client-cert-file', pathOf(items, 'front-proxy-client', 'certificate')],
        ['--proxy-client-key-file', pathOf(items, 'front-proxy-client', 'privateKey')],
        ['--etcd-certfile', pathOf(items, 'apiserver-etcd-client', 'certificate')],
        ['--etcd-keyfile', pathOf(items, 'apiserver-etcd-client', 'privateKey')],
        ['--requestheader-allowed-names', 'front-proxy-client'],
        ['--service-account-issuer', 'https://kubernetes.default.svc.k8s.example'],
      ]);
      assert.deepEqual(flagsOf(flagsForNode(inv, stacked), 'kube-apiserver'), expected);
    });
  }

  it('points etcd and the controllers at their files', () => {
    const inv = inventory();
    const flags = flagsForNode(inv, node(inv, 'stacked-1'));
    const lines = flags.filter((flag) => flag.service !== 'kube-apiserver' && flag.kind === 'flag').map((flag) => `${flag.service} ${flag.flag}=${flag.value}`);
    assert.deepEqual(lines, [
      'etcd --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt',
      'etcd --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt',
      'etcd --cert-file=/etc/kubernetes/pki/etcd/server.crt',
      'etcd --key-file=/etc/kubernetes/pki/etcd/server.key',
      'etcd --peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt',
      'etcd --peer-key-file=/etc/kubernetes/pki/etcd/peer.key',
      'etcd --client-cert-auth=true',
      'etcd --peer-client-cert-auth=true',
      'kube-controller-manager --root-ca-file=/etc/kubernetes/pki/ca.crt',
      'kube-controller-manager --client-ca-file=/etc/kubernetes/pki/ca-signer.crt',
      'kube-controller-manager --cluster-signing-cert-file=/etc/kubernetes/pki/ca-signer.crt',
      'kube-controller-manager --cluster-signing-key-file=/etc/kubernetes/pki/ca.key',
      'kube-controller-manager --requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt',
      'kube-controller-manager --service-account-private-key-file=/etc/kubernetes/pki/sa.key',
      'kube-controller-manager --kubeconfig=/etc/kubernetes/controller-manager.conf',
      'kube-controller-manager --authentication-kubeconfig=/etc/kubernetes/controller-manager.conf',
      'kube-controller-manager --authorization-kubeconfig=/etc/kubernetes/controller-manager.conf',
      'kube-controller-manager --cluster-signing-duration=8760h',
      'kube-controller-manager --use-service-account-credentials=true',
      'kube-scheduler --kubeconfig=/etc/kubernetes/scheduler.conf',
      'kube-scheduler --authentication-kubeconfig=/etc/kubernetes/scheduler.conf',
      'kube-scheduler --authorization-kubeconfig=/etc/kubernetes/scheduler.conf',
      'kubelet --kubeconfig=/etc/kubernetes/kubelet.conf',
    ]);
  });

  it('uses the cfssl names in the cfssl layout', () => {
    const inv = inventory('{pathLayout: cfssl}');
    const apiserver = flagsOf(flagsForNode(inv, node(inv, 'stacked-1')), 'kube-apiserver');
    assert.equal(apiserver.get('--tls-cert-file'), '/etc/kubernetes/ssl/kubernetes.pem');
    assert.equal(apiserver.get('--tls-private-key-file'), '/etc/kubernetes/ssl/kubernetes-key.pem');
    assert.equal(apiserver.get('--etcd-cafile'), '/etc/kubernetes/ssl/etcd-ca.pem');
  });

  it('allows the front-proxy client by its certificate name', () => {
    const inv = inventory();
    const master = node(inv, 'cp-1');
    const client = itemsForNode(inv, master).find((item) => item.name === 'front-proxy-client');
    assert.ok(client?.type === 'leaf');
    assert.equal(flagsOf(flagsForNode(inv, master), 'kube-apiserver').get('--requestheader-allowed-names'), client.subject.commonName);
  });

  it('adds the companion flags of etcd and the controller-manager', () => {
    const inv = inventory();
    const flags = flagsForNode(inv, node(inv, 'stacked-1'));
    const etcd = flagsOf(flags, 'etcd');
    assert.equal(etcd.get('--client-cert-auth'), 'true');
    assert.equal(etcd.get('--peer-client-cert-auth'), 'true');
    assert.equal(flagsOf(flags, 'kube-controller-manager').get('--use-service-account-credentials'), 'true');
  });

  it('signs bootstrapped kubelet certificates for certValidity', () => {
    const inv = inventory("{certValidity: '43800h'}");
    assert.equal(flagsOf(flagsForNode(inv, node(inv, 'stacked-1')), 'kube-controller-manager').get('--cluster-signing-duration'), '43800h');
    const defaults = inventory();
    assert.equal(flagsOf(flagsForNode(defaults, node(defaults, 'stacked-1')), 'kube-controller-manager').get('--cluster-signing-duration'), '8760h');
    assert.equal(goDuration(90 * 60_000), '5400s');
    assert.equal(goDuration(1500), '1500ms');
  });

  it('shows path overrides in the values', () => {
    const inv = inventory(PKI_VARIANTS[5]);
    const flags = flagsForNode(inv, node(inv, 'stacked-1'));
    assert.equal(flagsOf(flags, 'kube-apiserver').get('--tls-cert-file'), '/srv/pki/apiserver.pem');
    assert.equal(flagsOf(flags, 'kubelet').get('--kubeconfig'), '/var/lib/kubelet/kubeconfig');
  });

  it('lists kubelet and kube-proxy settings as configuration fields', () => {
    const inv = inventory();
    const flags = flagsForNode(inv, node(inv, 'wk-1'));
    const fields = flags.filter((flag) => flag.kind === 'config').map((flag) => `${flag.configKind ?? ''} ${flag.flag}=${flag.value}`);
    assert.deepEqual(fields, [
      'KubeletConfiguration authentication.x509.clientCAFile=/etc/kubernetes/pki/ca.crt',
      'KubeletConfiguration tlsCertFile=/var/lib/kubelet/pki/kubelet.crt',
      'KubeletConfiguration tlsPrivateKeyFile=/var/lib/kubelet/pki/kubelet.key',
      'KubeProxyConfiguration clientConnection.kubeconfig=/etc/kubernetes/kube-proxy.conf',
    ]);
    assert.equal(flagsOf(flags, 'kubelet').get('--kubeconfig'), '/etc/kubernetes/kubelet.conf');
    assert.deepEqual([...new Set(flags.map((flag) => flag.service))], ['kubelet', 'kube-proxy']);
  });

  it('leaves out the files a bootstrapping kubelet requests itself', () => {
    const inv = inventory();
    const kubelet = flagsOf(flagsForNode(inv, node(inv, 'wk-boot')), 'kubelet');
    assert.deepEqual([...kubelet.keys()], ['authentication.x509.clientCAFile']);
  });
});

describe('component flags and the catalogue agree', () => {
  for (const pki of PKI_VARIANTS) {
    const inv = inventory(pki);

    it(`references every consumed file (pki ${pki})`, () => {
      for (const member of inv.nodes) {
        // The kubelet finds its drop-in through the directory that --config-dir names.
        const flags = [...flagsForNode(inv, member), ...kubeletDropInFlags(inv, member)];
        for (const item of itemsForNode(inv, member)) {
          for (const file of filesOf(item)) {
            for (const service of file.consumers) {
              const referenced = flags.some((flag) => flag.service === service && (flag.value === file.path || (flag.flag === '--config-dir' && file.path.startsWith(`${flag.value}/`))));
              assert.ok(referenced, `${member.name}: ${service} reads ${file.path} (${item.name}) but no setting of ${service} names it`);
            }
          }
        }
      }
    });

    it(`names only files whose changes restart the service (pki ${pki})`, () => {
      for (const member of inv.nodes) {
        const consumersByPath = new Map(itemsForNode(inv, member).flatMap(filesOf).map((file) => [file.path, file.consumers]));
        const services = servicesForNode(member);
        for (const flag of flagsForNode(inv, member)) {
          assert.ok(services.includes(flag.service), `${member.name} does not run ${flag.service} but got ${flag.flag}`);
          if (!flag.value.startsWith('/')) continue;
          const consumers = consumersByPath.get(flag.value);
          assert.ok(consumers !== undefined, `${member.name}: ${flag.service} ${flag.flag}=${flag.value} names a file the node does not hold`);
          assert.ok(consumers.includes(flag.service), `${member.name}: ${flag.value} does not restart ${flag.service}, which reads it through ${flag.flag}`);
        }
      }
    });

    it(`sets each flag once per service (pki ${pki})`, () => {
      for (const member of inv.nodes) {
        const keys = flagsForNode(inv, member).map((flag) => `${flag.service} ${flag.flag}`);
        assert.deepEqual(keys.filter((key, index) => keys.indexOf(key) !== index), [], `${member.name} sets a flag twice`);
      }
    });
  }
});

describe('controller plan --flags', () => {
  let dir = '';
  let inventoryFile = '';

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-flags-'));
    inventoryFile = path.join(dir, 'cluster.yaml');
    fs.writeFileSync(inventoryFile, INVENTORY);
  });

  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('prints the flags as JSON', async () => {
    const result = await runController(['plan', '--inventory', inventoryFile, '--node', 'stacked-1', '--flags', '--output', 'json']);
    assert.equal(result.code, 0, result.stderr);
    const document = JSON.parse(result.stdout) as { node: string; pathLayout: string; services: string[]; flags: ComponentFlag[]; kubeletDropIn?: string };
    assert.equal(document.node, 'stacked-1');
    assert.equal(document.pathLayout, 'kubeadm');
    assert.deepEqual(document.services, ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy']);
    const inv = inventory();
    const stacked = node(inv, 'stacked-1');
    const expected = [...flagsForNode(inv, stacked), ...kubeletDropInFlags(inv, stacked)].sort((a, b) => document.services.indexOf(a.service) - document.services.indexOf(b.service));
    assert.deepEqual(document.flags, JSON.parse(JSON.stringify(expected)));
    assert.equal(document.kubeletDropIn, '/etc/kubernetes/kubelet.conf.d/50-kubetrust.conf');
  });

  it('names the kubelet drop-in directory', async () => {
    const result = await runController(['plan', '--inventory', inventoryFile, '--node', 'wk-1', '--flags']);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.split('\n');
    assert.ok(lines.includes('  --config-dir=/etc/kubernetes/kubelet.conf.d \\'), result.stdout);
    assert.ok(lines.includes('  (distribute writes these fields into /etc/kubernetes/kubelet.conf.d/50-kubetrust.conf, which the kubelet reads through --config-dir)'), result.stdout);
  });

  it('prints flags ready to paste', async () => {
    const result = await runController(['plan', '--inventory', inventoryFile, '--node', 'stacked-1', '--flags']);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.split('\n');
    assert.ok(lines.includes('  --tls-cert-file=/etc/kubernetes/pki/apiserver.crt \\'), result.stdout);
    assert.ok(lines.includes('  authentication.x509.clientCAFile: /etc/kubernetes/pki/ca.crt'), result.stdout);
  });

  it('exits 2 for an unknown node', async () => {
    const result = await runController(['plan', '--inventory', inventoryFile, '--node', 'wk-9', '--flags']);
    assert.equal(result.code, 2);
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /node "wk-9" is not in the inventory/);
    assert.match(result.stderr, /etcd-1, cp-1, stacked-1, wk-1, wk-boot/);
  });

  it('exits 2 without a state directory', async () => {
    const result = await runController(['plan', '--inventory', inventoryFile]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /needs --state-dir/);
  });

  it('exits 2 for --flags without --node', async () => {
    const result = await runController(['plan', '--inventory', inventoryFile, '--flags']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--flags needs --node NAME/);
    assert.match(result.stderr, /etcd-1, cp-1, stacked-1, wk-1, wk-boot/);
  });
});
