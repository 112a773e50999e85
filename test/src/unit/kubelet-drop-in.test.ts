/**
 * The kubelet configuration drop-in that distribute writes on workers: its content for each kind of
 * kubelet credentials and path layout, its path override, and how the plan judges the node's copy.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import type { FileState__Output } from '@kubetrust/proto';
import { planNode, type DesiredMaterial } from '@kubetrust/controller/dist/plan';
import { KUBELET_DROP_IN_NAME, catalogueIssues, itemsForNode, type NodeItem, type StaticItem } from '@kubetrust/shared/dist/catalogue';
import { kubeletDropInFlags } from '@kubetrust/shared/dist/catalogue/flags';
import { parseInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import * as YAML from 'yaml';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: unit}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  nodes:
    - {name: cp-1, addresses: [192.0.2.21], roles: [etcd, master]}
    - {name: wk-pre, addresses: [192.0.2.31], roles: [worker]}
    - {name: wk-boot, addresses: [192.0.2.32], roles: [worker], kubelet: {credentials: bootstrap}}
`;

function inventory(pki = ''): Inventory {
  return parseInventory(pki === '' ? INVENTORY : INVENTORY.replace('spec:\n', `spec:\n  pki: ${pki}\n`), 'unit.yaml').inventory;
}

function dropIn(inv: Inventory, name: string): StaticItem {
  const node = inv.nodes.find((candidate) => candidate.name === name);
  assert.ok(node, `node ${name}`);
  const item = itemsForNode(inv, node).find((candidate) => candidate.name === KUBELET_DROP_IN_NAME);
  assert.ok(item?.type === 'static', `${name} has a kubelet drop-in`);
  return item;
}

function content(item: StaticItem): string {
  assert.ok('kubeletConfig' in item.source, `${item.name} is a kubelet drop-in`);
  return item.source.content;
}

/** Stands in for the state directory: the plan needs only the rendered drop-in. */
const MATERIAL: DesiredMaterial = {
  staticContent: (item) => content(item),
  caCertificate: () => {
    throw new Error('no CA is needed to plan a kubelet drop-in');
  },
  issuerCertificate: () => {
    throw new Error('no CA is needed to plan a kubelet drop-in');
  },
};

function heldFile(item: NodeItem & { type: 'static' }, text: string | undefined, mode = 0o644): FileState__Output {
  if (text === undefined) return { path: item.file.path, exists: false } as FileState__Output;
  return { path: item.file.path, exists: true, sha256: crypto.createHash('sha256').update(text).digest('hex'), mode, uid: 0, gid: 0, error: '' } as FileState__Output;
}

describe('kubelet drop-in content', () => {
  it('bootstrapping kubelet rotates and requests serving certificates', () => {
    assert.equal(
      content(dropIn(inventory(), 'wk-boot')),
      [
        '# Written by kubetrust for node wk-boot of cluster unit (kubelet.credentials: bootstrap).',
        '# The next `controller distribute` replaces any edit. The kubelet reads this file only when it runs',
        '# with --config-dir=/etc/kubernetes/kubelet.conf.d, and command-line flags override its fields.',
        'apiVersion: kubelet.config.k8s.io/v1beta1',
        'kind: KubeletConfiguration',
        'authentication:',
        '  x509:',
        '    clientCAFile: "/etc/kubernetes/pki/ca.crt"',
        'rotateCertificates: true',
        'serverTLSBootstrap: true',
        '',
      ].join('\n'),
    );
  });

  it('pre-provisioned kubelet serves the issued certificate', () => {
    const parsed = YAML.parse(content(dropIn(inventory(), 'wk-pre'))) as Record<string, unknown>;
    assert.deepEqual(parsed, {
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      authentication: { x509: { clientCAFile: '/etc/kubernetes/pki/ca.crt' } },
      rotateCertificates: false,
      serverTLSBootstrap: false,
      tlsCertFile: '/var/lib/kubelet/pki/kubelet.crt',
      tlsPrivateKeyFile: '/var/lib/kubelet/pki/kubelet.key',
    });
  });

  it('follows the path layout and overrides', () => {
    const inv = inventory('{pathLayout: cfssl, pathOverrides: {cluster-ca.certificate: /srv/ca.pem, kubelet-server.certificate: /srv/kubelet.pem}}');
    const parsed = YAML.parse(content(dropIn(inv, 'wk-pre'))) as { authentication: { x509: { clientCAFile: string } }; tlsCertFile: string; tlsPrivateKeyFile: string };
    assert.equal(parsed.authentication.x509.clientCAFile, '/srv/ca.pem');
    assert.equal(parsed.tlsCertFile, '/srv/kubelet.pem');
    assert.equal(parsed.tlsPrivateKeyFile, '/etc/kubernetes/ssl/kubelet-key.pem');
  });

  it('is a root-owned 0644 file that restarts the kubelet', () => {
    const item = dropIn(inventory(), 'wk-boot');
    assert.equal(item.file.path, '/etc/kubernetes/kubelet.conf.d/50-kubetrust.conf');
    assert.equal(item.file.mode, 0o644);
    assert.equal(item.file.uid, 0);
    assert.equal(item.file.gid, 0);
    assert.deepEqual(item.file.consumers, ['kubelet']);
  });

  it('is not given to a node without a kubelet', () => {
    const inv = inventory();
    const master = inv.nodes.find((candidate) => candidate.name === 'cp-1');
    assert.ok(master);
    assert.equal(itemsForNode(inv, master).some((item) => item.name === KUBELET_DROP_IN_NAME), false);
    assert.deepEqual(kubeletDropInFlags(inv, master), []);
  });
});

describe('kubelet drop-in path', () => {
  it('override moves the file and --config-dir', () => {
    const inv = inventory('{pathOverrides: {kubelet-drop-in.file: /etc/kubelet.d/10-certs.conf}}');
    assert.deepEqual(catalogueIssues(inv), []);
    assert.equal(dropIn(inv, 'wk-boot').file.path, '/etc/kubelet.d/10-certs.conf');
    const node = inv.nodes.find((candidate) => candidate.name === 'wk-boot');
    assert.ok(node);
    assert.deepEqual(
      kubeletDropInFlags(inv, node).map((flag) => `${flag.flag}=${flag.value}`),
      ['--config-dir=/etc/kubelet.d'],
    );
    assert.match(content(dropIn(inv, 'wk-boot')), /--config-dir=\/etc\/kubelet\.d,/);
  });

  it('override without .conf is rejected', () => {
    const issues = catalogueIssues(inventory('{pathOverrides: {kubelet-drop-in.file: /etc/kubelet.d/kubetrust.yaml}}'));
    assert.equal(issues.length, 1);
    assert.equal(issues[0]?.path, 'spec.pki.pathOverrides.kubelet-drop-in.file');
    assert.match(issues[0]?.message ?? '', /reads only files whose names end with \.conf .* ignore \/etc\/kubelet\.d\/kubetrust\.yaml/);
    assert.match(issues[0]?.fix ?? '', /ends with \.conf/);
  });

  it('override onto another file is rejected', () => {
    const issues = catalogueIssues(inventory('{pathOverrides: {kubelet-drop-in.file: /etc/kubernetes/kube-proxy.conf}}'));
    assert.ok(issues.some((issue) => /kube-proxy\.conf and kubelet-drop-in resolve to the same path/.test(issue.message)), JSON.stringify(issues));
  });
});

describe('kubelet drop-in plan', () => {
  const inv = inventory();
  const now = new Date();

  function plan(name: string, held: (item: StaticItem) => FileState__Output): { action: string; reasons: readonly string[] } {
    const item = dropIn(inv, name);
    const [planned] = planNode([item], [held(item)], MATERIAL, now);
    assert.ok(planned);
    return planned;
  }

  it('missing drop-in is added', () => {
    const planned = plan('wk-boot', (item) => heldFile(item, undefined));
    assert.equal(planned.action, 'add');
    assert.deepEqual(planned.reasons, ['new']);
  });

  it('same drop-in is unchanged', () => {
    const planned = plan('wk-boot', (item) => heldFile(item, content(item)));
    assert.equal(planned.action, 'unchanged');
    assert.deepEqual(planned.reasons, []);
  });

  it('switch to bootstrap changes it', () => {
    // wk-boot as it was while the inventory left it pre-provisioned.
    const before = parseInventory(INVENTORY.replace('roles: [worker], kubelet: {credentials: bootstrap}}', 'roles: [worker]}'), 'unit.yaml').inventory;
    const planned = plan('wk-boot', (item) => heldFile(item, content(dropIn(before, 'wk-boot'))));
    assert.equal(planned.action, 'change');
    assert.deepEqual(planned.reasons, ['content differs: the node has the settings of kubelet.credentials pre-provisioned, and the inventory now sets bootstrap']);
  });

  it('switch to pre-provisioned changes it', () => {
    const bootstrap = dropIn(inventory(), 'wk-boot');
    const switched = parseInventory(INVENTORY.replace('roles: [worker], kubelet: {credentials: bootstrap}}', 'roles: [worker]}'), 'unit.yaml').inventory;
    const item = dropIn(switched, 'wk-boot');
    const [planned] = planNode([item], [heldFile(item, content(bootstrap))], MATERIAL, now);
    assert.equal(planned?.action, 'change');
    assert.deepEqual(planned?.reasons, ['content differs: the node has the settings of kubelet.credentials bootstrap, and the inventory now sets pre-provisioned']);
  });

  it('edited drop-in changes it', () => {
    const planned = plan('wk-boot', (item) => heldFile(item, content(item).replace('serverTLSBootstrap: true', 'serverTLSBootstrap: false')));
    assert.equal(planned.action, 'change');
    assert.deepEqual(planned.reasons, ['content differs from the settings of kubelet.credentials bootstrap']);
  });

  it('wrong mode changes it', () => {
    const planned = plan('wk-boot', (item) => heldFile(item, content(item), 0o600));
    assert.equal(planned.action, 'change');
    assert.deepEqual(planned.reasons, ['/etc/kubernetes/kubelet.conf.d/50-kubetrust.conf: mode 600, expected 644']);
  });
});
