import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { describe, it } from 'mocha';
import { stringify } from 'yaml';

import {
  firstAddressOfCidr,
  InventoryError,
  loadInventory,
  parseDuration,
  parseInventory,
  type Inventory,
  type InventoryIssue,
  type SshSettings,
} from '@kubetrust/shared/dist/inventory/index';

/** Compiled to test/dist/unit, three levels below the repository root. */
const EXAMPLE_FILE = path.resolve(__dirname, '../../../examples/cluster.yaml');

const HOUR_MS = 60 * 60 * 1000;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A valid inventory that the invalid cases below edit. */
const BASE: Json = {
  apiVersion: 'kubetrust/v1',
  kind: 'Cluster',
  metadata: { name: 'demo' },
  spec: {
    apiServer: { endpoint: 'https://192.0.2.100:6443' },
    nodes: [
      { name: 'etcd-1', addresses: ['192.0.2.11'], roles: ['etcd'] },
      { name: 'master-1', addresses: ['192.0.2.21'], roles: ['master'] },
      { name: 'worker-1', addresses: ['192.0.2.31'], roles: ['worker'] },
    ],
  },
};

const REMOVE = Symbol('remove');

/** Sets (or with REMOVE deletes) the value at a path such as `spec.nodes[1].addresses`. */
type Edit = readonly [path: string, value: Json | typeof REMOVE];

function isObject(value: Json | undefined): value is { [key: string]: Json } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function childOf(parent: Json, key: string): Json | undefined {
  if (Array.isArray(parent)) {
    return parent[Number(key)];
  }
  return isObject(parent) ? parent[key] : undefined;
}

function applyEdit(document: Json, [fieldPath, value]: Edit): void {
  const keys = [...fieldPath.matchAll(/[^.[\]]+/g)].map((match) => match[0]);
  const last = keys.pop();
  assert.ok(last !== undefined, `empty edit path ${fieldPath}`);

  let parent = document;
  for (const key of keys) {
    let child = childOf(parent, key);
    if (child === undefined && isObject(parent)) {
      child = {};
      parent[key] = child;
    }
    assert.ok(child !== undefined, `edit path ${fieldPath} does not exist in the base inventory`);
    parent = child;
  }

  if (Array.isArray(parent)) {
    const index = Number(last);
    if (value === REMOVE) {
      parent.splice(index, 1);
    } else {
      parent[index] = value;
    }
  } else if (isObject(parent)) {
    if (value === REMOVE) {
      delete parent[last];
    } else {
      parent[last] = value;
    }
  } else {
    assert.fail(`edit path ${fieldPath} does not lead to a list or mapping`);
  }
}

/** Returns the YAML of BASE after the edits. */
function editedYaml(edits: readonly Edit[]): string {
  const document = structuredClone(BASE);
  for (const edit of edits) {
    applyEdit(document, edit);
  }
  return stringify(document);
}

/** Parses `text` and returns the issues of the InventoryError it must throw. */
function issuesOf(text: string): readonly InventoryIssue[] {
  try {
    parseInventory(text, 'test.yaml');
  } catch (error) {
    if (error instanceof InventoryError) {
      return error.issues;
    }
    throw error;
  }
  assert.fail(`expected an InventoryError for:\n${text}`);
}

function formatIssues(issues: readonly InventoryIssue[]): string {
  return issues.map((issue) => `  ${issue.path}: ${issue.message} | ${issue.fix}`).join('\n');
}

const FULL_YAML = `
apiVersion: kubetrust/v1
kind: Cluster
metadata:
  name: prod-eu
spec:
  clusterDomain: k8s.example.internal
  serviceCIDR: 10.100.0.0/16, FD00:10:100::/108
  apiServer:
    endpoint: https://[2001:DB8::100]:8443
    extraSANs: [api.prod.example, "*.apps.prod.example", 192.0.2.100, "2001:DB8:0:0::100"]
  pki:
    layout: single-ca
    keyAlgorithm: ECDSA-P384
    caValidity: 3650d
    certValidity: 2160h30m
    etcdCA: separate
    pathLayout: kubeadm
    pathOverrides: {apiserver.certificate: /etc/kubernetes/ssl/kubernetes.pem}
  admin: {group: "kubetrust:cluster-admins"}
  kubelet: {credentials: bootstrap}
  nodes:
    - name: cp-1.prod.example
      addresses: [192.0.2.21, "2001:DB8:0:0::21"]
      hostnames: [cp-1.prod.example, cp-1]
      roles: [master, etcd]
      agent: {endpoint: "[2001:db8::21]:7501"}
    - name: cp-2.prod.example
      addresses: [192.0.2.22]
      roles: [etcd, master]
      agent: {endpoint: "192.0.2.22:7501"}
    - name: cp-3.prod.example
      addresses: [192.0.2.23]
      roles: [etcd]
    - name: worker-1.prod.example
      addresses: [192.0.2.31]
      roles: [worker]
      agent: {endpoint: "worker-1.prod.example:7600"}
    - name: worker-2.prod.example
      addresses: ["2001:db8:0000::32", 192.0.2.32]
      roles: [worker]
      kubelet: {credentials: pre-provisioned}
`;

/** Environment and home directory of the parse in the full-inventory test, so its SSH defaults are fixed. */
const FIXED_SSH_ENVIRONMENT = { env: {}, homeDir: '/home/ops' } as const;

/** The SSH settings of a node that sets nothing, under FIXED_SSH_ENVIRONMENT. */
function defaultSsh(host: string): SshSettings {
  return {
    host,
    port: 22,
    user: 'root',
    privateKeyFile: undefined,
    passphraseEnv: undefined,
    agent: false,
    agentSocket: undefined,
    jumpHost: undefined,
    sudo: false,
    knownHostsFile: '/home/ops/.ssh/known_hosts',
    hostKeyFingerprint: undefined,
  };
}

const FULL_INVENTORY: Inventory = {
  name: 'prod-eu',
  clusterDomain: 'k8s.example.internal',
  serviceCIDRs: ['10.100.0.0/16', 'fd00:10:100::/108'],
  apiServer: {
    endpoint: 'https://[2001:db8::100]:8443',
    host: '2001:db8::100',
    hostIsIP: true,
    port: 8443,
    extraSANs: ['api.prod.example', '*.apps.prod.example', '192.0.2.100', '2001:db8::100'],
  },
  pki: {
    layout: 'single-ca',
    keyAlgorithm: 'ECDSA-P384',
    caValidityMs: 3650 * 24 * HOUR_MS,
    certValidityMs: 2160.5 * HOUR_MS,
    etcdCA: 'separate',
    pathLayout: 'kubeadm',
    pathOverrides: { 'apiserver.certificate': '/etc/kubernetes/ssl/kubernetes.pem' },
  },
  admin: { group: 'kubetrust:cluster-admins' },
  kubelet: { credentials: 'bootstrap' },
  nodes: [
    {
      name: 'cp-1.prod.example',
      addresses: ['192.0.2.21', '2001:db8::21'],
      hostnames: ['cp-1.prod.example', 'cp-1'],
      roles: ['master', 'etcd'],
      agent: { endpoint: '[2001:db8::21]:7501', host: '2001:db8::21', port: 7501, prefix: '/' },
      ssh: defaultSsh('192.0.2.21'),
      kubelet: { credentials: 'bootstrap' },
    },
    {
      name: 'cp-2.prod.example',
      addresses: ['192.0.2.22'],
      hostnames: [],
      roles: ['etcd', 'master'],
      agent: { endpoint: '192.0.2.22:7501', host: '192.0.2.22', port: 7501, prefix: '/' },
      ssh: defaultSsh('192.0.2.22'),
      kubelet: { credentials: 'bootstrap' },
    },
    {
      name: 'cp-3.prod.example',
      addresses: ['192.0.2.23'],
      hostnames: [],
      roles: ['etcd'],
      agent: { endpoint: '192.0.2.23:7443', host: '192.0.2.23', port: 7443, prefix: '/' },
      ssh: defaultSsh('192.0.2.23'),
      kubelet: { credentials: 'bootstrap' },
    },
    {
      name: 'worker-1.prod.example',
      addresses: ['192.0.2.31'],
      hostnames: [],
      roles: ['worker'],
      agent: { endpoint: 'worker-1.prod.example:7600', host: 'worker-1.prod.example', port: 7600, prefix: '/' },
      ssh: defaultSsh('192.0.2.31'),
      kubelet: { credentials: 'bootstrap' },
    },
    {
      name: 'worker-2.prod.example',
      addresses: ['2001:db8::32', '192.0.2.32'],
      hostnames: [],
      roles: ['worker'],
      agent: { endpoint: '[2001:db8::32]:7443', host: '2001:db8::32', port: 7443, prefix: '/' },
      ssh: defaultSsh('2001:db8::32'),
      kubelet: { credentials: 'pre-provisioned' },
    },
  ],
};

const MINIMAL_YAML = `
apiVersion: kubetrust/v1
kind: Cluster
metadata:
  name: mini
spec:
  apiServer:
    endpoint: https://api.mini.example
  nodes:
    - name: node-1
      addresses: [192.0.2.10]
      roles: [etcd, master, worker]
`;

describe('inventory', () => {
  describe('valid input', () => {
    it('parses a full inventory', () => {
      const parsed = parseInventory(FULL_YAML, 'full.yaml', FIXED_SSH_ENVIRONMENT);

      assert.deepEqual(parsed.inventory, FULL_INVENTORY);
      assert.deepEqual(parsed.warnings, []);
    });

    it('applies defaults to a minimal inventory', () => {
      const { inventory, warnings } = parseInventory(MINIMAL_YAML, 'minimal.yaml');

      assert.equal(inventory.name, 'mini');
      assert.equal(inventory.clusterDomain, 'cluster.local');
      assert.deepEqual(inventory.serviceCIDRs, ['10.96.0.0/12']);
      assert.equal(inventory.apiServer.endpoint, 'https://api.mini.example:443');
      assert.equal(inventory.apiServer.host, 'api.mini.example');
      assert.equal(inventory.apiServer.hostIsIP, false);
      assert.equal(inventory.apiServer.port, 443);
      assert.deepEqual(inventory.apiServer.extraSANs, []);
      assert.equal(inventory.pki.layout, 'kubeadm');
      assert.equal(inventory.pki.keyAlgorithm, 'RSA-2048');
      assert.equal(inventory.pki.caValidityMs, 87600 * HOUR_MS);
      assert.equal(inventory.pki.certValidityMs, 8760 * HOUR_MS);
      assert.equal(inventory.pki.etcdCA, 'separate');
      assert.equal(inventory.pki.pathLayout, 'kubeadm');
      assert.deepEqual(inventory.pki.pathOverrides, {});
      assert.deepEqual(inventory.admin, { group: 'system:masters' });
      assert.deepEqual(inventory.kubelet, { credentials: 'pre-provisioned' });
      assert.equal(inventory.nodes.length, 1);

      const [node] = inventory.nodes;
      assert.ok(node);
      assert.equal(node.name, 'node-1');
      assert.deepEqual(node.addresses, ['192.0.2.10']);
      assert.deepEqual(node.hostnames, []);
      assert.deepEqual(node.roles, ['etcd', 'master', 'worker']);
      assert.deepEqual(node.agent, { endpoint: '192.0.2.10:7443', host: '192.0.2.10', port: 7443, prefix: '/' });
      assert.deepEqual(node.kubelet, { credentials: 'pre-provisioned' });
      assert.deepEqual(warnings, []);
    });

    it('treats empty optional fields as unset', () => {
      const text = editedYaml([
        ['spec.pki', null],
        ['spec.apiServer.extraSANs', null],
        ['spec.nodes[0].hostnames', null],
      ]);

      const { inventory } = parseInventory(text, 'nulls.yaml');

      assert.equal(inventory.pki.layout, 'kubeadm');
      assert.deepEqual(inventory.apiServer.extraSANs, []);
      assert.deepEqual(inventory.nodes[0]?.hostnames, []);
    });

    it('parses the built-in example', () => {
      const { inventory, warnings } = loadInventory(EXAMPLE_FILE);

      assert.deepEqual(warnings, []);
      assert.equal(inventory.name, 'demo');
      assert.equal(inventory.apiServer.endpoint, 'https://127.0.10.100:6443');
      assert.deepEqual(inventory.apiServer.extraSANs, ['api.demo.example']);
      assert.deepEqual(
        inventory.nodes.map((node) => node.name),
        ['etcd-1', 'etcd-2', 'etcd-3', 'master-1', 'master-2', 'worker-1', 'worker-2'],
      );
      assert.deepEqual(
        inventory.nodes.map((node) => node.agent.endpoint),
        [
          '127.0.10.11:7443',
          '127.0.10.12:7443',
          '127.0.10.13:7443',
          '127.0.10.21:7443',
          '127.0.10.22:7443',
          '127.0.10.31:7443',
          '127.0.10.32:7443',
        ],
      );
      assert.deepEqual(inventory.nodes.find((node) => node.name === 'master-1')?.hostnames, ['master-1.demo.example']);
      assert.deepEqual(inventory.nodes.find((node) => node.name === 'worker-1')?.addresses, [
        '127.0.10.31',
        '2001:db8::31',
      ]);
    });
  });

  describe('invalid input', () => {
    interface InvalidCase {
      readonly title: string;
      /** Edits to BASE, or `text` for input that BASE cannot express. */
      readonly edits?: readonly Edit[];
      readonly text?: string;
      readonly path: string;
      readonly message: RegExp;
      /** Strings that the message or the fix must contain, such as the offending value. */
      readonly mentions: readonly string[];
    }

    const cases: readonly InvalidCase[] = [
      // Document and shape.
      {
        title: 'YAML syntax error',
        text: 'apiVersion: kubetrust/v1\nkind: Cluster\nmetadata:\n  name: demo: x\n',
        path: '(yaml)',
        message: /YAML syntax error at line 4, column \d+/,
        mentions: [],
      },
      {
        title: 'duplicate YAML key',
        text: 'apiVersion: kubetrust/v1\napiVersion: kubetrust/v1\n',
        path: '(yaml)',
        message: /line 2, column 1/,
        mentions: ['repeated key'],
      },
      {
        title: 'several YAML documents',
        text: `${editedYaml([])}---\n${editedYaml([])}`,
        path: '(yaml)',
        message: /2 YAML documents/,
        mentions: ['---'],
      },
      { title: 'empty text', text: '# nothing here\n', path: '(document)', message: /empty/, mentions: ['examples/cluster.yaml'] },
      { title: 'top level is a list', text: '- a\n- b\n', path: '(document)', message: /found a list/, mentions: [] },
      {
        title: 'unknown top-level field',
        edits: [['status', 'ready']],
        path: 'status',
        message: /unknown field "status"/,
        mentions: ['apiVersion, kind, metadata, spec'],
      },
      {
        title: 'unknown apiServer field',
        edits: [['spec.apiServer.port', 6443]],
        path: 'spec.apiServer.port',
        message: /unknown field "port"/,
        mentions: ['endpoint, extraSANs'],
      },
      {
        title: 'misspelt apiServer field',
        edits: [['spec.apiServer.extraSans', ['api.demo.example']]],
        path: 'spec.apiServer.extraSans',
        message: /unknown field "extraSans"/,
        mentions: ['rename "extraSans" to "extraSANs"'],
      },
      {
        title: 'unknown pki field',
        edits: [['spec.pki.keySize', 2048]],
        path: 'spec.pki.keySize',
        message: /unknown field "keySize"/,
        mentions: ['layout, keyAlgorithm, caValidity, certValidity'],
      },
      {
        title: 'unknown node field',
        edits: [['spec.nodes[1].ip', '192.0.2.21']],
        path: 'spec.nodes[1].ip',
        message: /unknown field "ip"/,
        mentions: ['name, addresses, hostnames, roles, agent'],
      },
      {
        title: 'unknown agent field',
        edits: [['spec.nodes[0].agent', { endpoint: '192.0.2.11:7443', port: 7443 }]],
        path: 'spec.nodes[0].agent.port',
        message: /unknown field "port"/,
        mentions: ['endpoint'],
      },
      {
        title: 'wrong apiVersion',
        edits: [['apiVersion', 'kubetrust/v2']],
        path: 'apiVersion',
        message: /"kubetrust\/v2"/,
        mentions: ['apiVersion: kubetrust/v1'],
      },
      {
        title: 'wrong kind',
        edits: [['kind', 'Node']],
        path: 'kind',
        message: /unsupported kind "Node"/,
        mentions: ['kind: Cluster'],
      },
      {
        title: 'missing apiVersion',
        edits: [['apiVersion', REMOVE]],
        path: 'apiVersion',
        message: /missing required field "apiVersion"/,
        mentions: ['apiVersion: kubetrust/v1'],
      },
      {
        title: 'missing spec',
        edits: [['spec', REMOVE]],
        path: 'spec',
        message: /missing required field "spec"/,
        mentions: ['apiServer', 'nodes'],
      },
      {
        title: 'missing metadata name',
        edits: [['metadata.name', REMOVE]],
        path: 'metadata.name',
        message: /missing required field "name"/,
        mentions: ['under metadata'],
      },
      {
        title: 'missing apiServer endpoint',
        edits: [['spec.apiServer.endpoint', REMOVE]],
        path: 'spec.apiServer.endpoint',
        message: /missing required field "endpoint"/,
        mentions: ['https://192.0.2.100:6443'],
      },
      {
        title: 'missing nodes',
        edits: [['spec.nodes', REMOVE]],
        path: 'spec.nodes',
        message: /missing required field "nodes"/,
        mentions: ['under spec'],
      },
      {
        title: 'missing node name',
        edits: [['spec.nodes[2].name', REMOVE]],
        path: 'spec.nodes[2].name',
        message: /missing required field "name"/,
        mentions: ['under spec.nodes[2]'],
      },
      {
        title: 'missing node roles',
        edits: [['spec.nodes[2].roles', REMOVE]],
        path: 'spec.nodes[2].roles',
        message: /missing required field "roles"/,
        mentions: [],
      },
      {
        title: 'cluster name is a number',
        edits: [['metadata.name', 42]],
        path: 'metadata.name',
        message: /expected a string, found the number 42/,
        mentions: ['quotes'],
      },
      {
        title: 'nodes is a mapping',
        edits: [['spec.nodes', { name: 'etcd-1' }]],
        path: 'spec.nodes',
        message: /expected a list, found a mapping/,
        mentions: ['nodes: ['],
      },
      {
        title: 'node is a string',
        edits: [['spec.nodes[2]', 'worker-1']],
        path: 'spec.nodes[2]',
        message: /expected a mapping, found the string "worker-1"/,
        mentions: [],
      },
      {
        title: 'addresses is a string',
        edits: [['spec.nodes[0].addresses', '192.0.2.11']],
        path: 'spec.nodes[0].addresses',
        message: /expected a list, found the string "192.0.2.11"/,
        mentions: ['addresses: [192.0.2.11]'],
      },
      {
        title: 'pki is a list',
        edits: [['spec.pki', ['kubeadm']]],
        path: 'spec.pki',
        message: /expected a mapping, found a list/,
        mentions: ['layout: kubeadm'],
      },

      // Metadata and cluster-wide fields.
      {
        title: 'cluster name with uppercase and underscore',
        edits: [['metadata.name', 'Demo_1']],
        path: 'metadata.name',
        message: /"Demo_1" is not a DNS-1123 label/,
        mentions: ['name: demo-1'],
      },
      {
        title: 'cluster name with a dot',
        edits: [['metadata.name', 'demo.example']],
        path: 'metadata.name',
        message: /"demo.example" is not a DNS-1123 label/,
        mentions: ['63'],
      },
      {
        title: 'cluster name too long',
        edits: [['metadata.name', 'a'.repeat(64)]],
        path: 'metadata.name',
        message: new RegExp(`"${'a'.repeat(64)}" is not a DNS-1123 label`),
        mentions: [],
      },
      {
        title: 'cluster domain with underscore',
        edits: [['spec.clusterDomain', 'cluster_local']],
        path: 'spec.clusterDomain',
        message: /"cluster_local" is not a valid DNS name/,
        mentions: ['clusterDomain: cluster-local'],
      },
      {
        title: 'cluster domain with uppercase',
        edits: [['spec.clusterDomain', 'Cluster.Local']],
        path: 'spec.clusterDomain',
        message: /"Cluster.Local"/,
        mentions: ['clusterDomain: cluster.local'],
      },

      // Service CIDR.
      {
        title: 'CIDR with an invalid address',
        edits: [['spec.serviceCIDR', '10.96.0.300/12']],
        path: 'spec.serviceCIDR',
        message: /invalid network address "10.96.0.300"/,
        mentions: ['10.96.0.0/12'],
      },
      {
        title: 'IPv4 prefix length out of range',
        edits: [['spec.serviceCIDR', '10.96.0.0/33']],
        path: 'spec.serviceCIDR',
        message: /prefix length "33" in CIDR "10.96.0.0\/33" is out of range for IPv4/,
        mentions: ['0 to 32'],
      },
      {
        title: 'IPv6 prefix length out of range',
        edits: [['spec.serviceCIDR', 'fd00:10:96::/129']],
        path: 'spec.serviceCIDR',
        message: /prefix length "129" .* IPv6/,
        mentions: ['0 to 128'],
      },
      {
        title: 'CIDR without prefix length',
        edits: [['spec.serviceCIDR', '10.96.0.0']],
        path: 'spec.serviceCIDR',
        message: /"10.96.0.0" has no prefix length/,
        mentions: ['10.96.0.0/12'],
      },
      {
        title: 'CIDR with host bits set',
        edits: [['spec.serviceCIDR', '10.96.0.1/12']],
        path: 'spec.serviceCIDR',
        message: /"10.96.0.1\/12" has bits set after its prefix length/,
        mentions: ['10.96.0.0/12'],
      },
      {
        title: 'CIDR of a single address',
        edits: [['spec.serviceCIDR', '10.96.0.0/32']],
        path: 'spec.serviceCIDR',
        message: /"10.96.0.0\/32" is a single address/,
        mentions: ['/12'],
      },
      {
        title: 'three CIDRs',
        edits: [['spec.serviceCIDR', '10.96.0.0/12,fd00:10:96::/112,10.112.0.0/12']],
        path: 'spec.serviceCIDR',
        message: /lists 3 CIDRs, but at most two are allowed/,
        mentions: ['10.96.0.0/12,fd00:10:96::/112,10.112.0.0/12'],
      },
      {
        title: 'two IPv4 CIDRs',
        edits: [['spec.serviceCIDR', '10.96.0.0/12,10.112.0.0/12']],
        path: 'spec.serviceCIDR',
        message: /"10.96.0.0\/12,10.112.0.0\/12" lists two IPv4 CIDRs/,
        mentions: ['fd00:10:96::/112'],
      },
      {
        title: 'two IPv6 CIDRs',
        edits: [['spec.serviceCIDR', 'fd00:10:96::/112,fd00:20:96::/112']],
        path: 'spec.serviceCIDR',
        message: /lists two IPv6 CIDRs/,
        mentions: ['fd00:20:96::/112'],
      },
      {
        title: 'empty CIDR after a comma',
        edits: [['spec.serviceCIDR', '10.96.0.0/12,']],
        path: 'spec.serviceCIDR',
        message: /"10.96.0.0\/12," contains an empty CIDR/,
        mentions: [],
      },

      // API server.
      {
        title: 'endpoint with http',
        edits: [['spec.apiServer.endpoint', 'http://192.0.2.100:6443']],
        path: 'spec.apiServer.endpoint',
        message: /"http:\/\/192.0.2.100:6443" uses http instead of https/,
        mentions: ['write https://192.0.2.100:6443'],
      },
      {
        title: 'endpoint without a scheme',
        edits: [['spec.apiServer.endpoint', '192.0.2.100:6443']],
        path: 'spec.apiServer.endpoint',
        message: /"192.0.2.100:6443" is not an https URL/,
        mentions: ['write https://192.0.2.100:6443'],
      },
      {
        title: 'endpoint with a path',
        edits: [['spec.apiServer.endpoint', 'https://192.0.2.100:6443/api']],
        path: 'spec.apiServer.endpoint',
        message: /has a path \("\/api"\)/,
        mentions: ['https://192.0.2.100:6443/api', 'write only the scheme, host and port: https://192.0.2.100:6443'],
      },
      {
        title: 'endpoint with a query',
        edits: [['spec.apiServer.endpoint', 'https://192.0.2.100:6443?timeout=5s']],
        path: 'spec.apiServer.endpoint',
        message: /has a query \("\?timeout=5s"\)/,
        mentions: ['https://192.0.2.100:6443'],
      },
      {
        title: 'endpoint with an invalid IPv4 host',
        edits: [['spec.apiServer.endpoint', 'https://192.0.2.300:6443']],
        path: 'spec.apiServer.endpoint',
        message: /invalid host "192.0.2.300"/,
        mentions: ['https://[2001:db8::100]:6443'],
      },
      {
        title: 'endpoint with an invalid DNS host',
        edits: [['spec.apiServer.endpoint', 'https://api_server.example:6443']],
        path: 'spec.apiServer.endpoint',
        message: /invalid host "api_server.example"/,
        mentions: [],
      },
      {
        title: 'endpoint with an IPv4 address in brackets',
        edits: [['spec.apiServer.endpoint', 'https://[192.0.2.100]:6443']],
        path: 'spec.apiServer.endpoint',
        message: /invalid host "192.0.2.100"/,
        mentions: [],
      },
      {
        title: 'endpoint with an unbracketed IPv6 host',
        edits: [['spec.apiServer.endpoint', 'https://2001:db8::100:6443']],
        path: 'spec.apiServer.endpoint',
        message: /"2001:db8::100:6443"/,
        mentions: ['brackets'],
      },
      {
        title: 'endpoint with port 0',
        edits: [['spec.apiServer.endpoint', 'https://api.demo.example:0']],
        path: 'spec.apiServer.endpoint',
        message: /invalid port "0"/,
        mentions: ['https://api.demo.example:6443'],
      },
      {
        title: 'endpoint without a host',
        edits: [['spec.apiServer.endpoint', 'https://:6443']],
        path: 'spec.apiServer.endpoint',
        message: /"https:\/\/:6443" has no host/,
        mentions: [],
      },
      {
        title: 'extra SAN with underscore',
        edits: [['spec.apiServer.extraSANs', ['api.demo.example', 'api_demo.example']]],
        path: 'spec.apiServer.extraSANs[1]',
        message: /"api_demo.example" is neither an IP address nor a valid DNS name/,
        mentions: ['api-demo.example'],
      },
      {
        title: 'extra SAN that is a mistyped IP',
        edits: [['spec.apiServer.extraSANs', ['192.0.2.300']]],
        path: 'spec.apiServer.extraSANs[0]',
        message: /"192.0.2.300" is neither/,
        mentions: [],
      },
      {
        title: 'extra SAN that is a network',
        edits: [['spec.apiServer.extraSANs', ['10.0.0.1/24']]],
        path: 'spec.apiServer.extraSANs[0]',
        message: /"10.0.0.1\/24" is neither/,
        mentions: ['write the single address 10.0.0.1', 'not networks'],
      },
      {
        title: 'extra SAN with a port',
        edits: [['spec.apiServer.extraSANs', ['api.demo.example:6443']]],
        path: 'spec.apiServer.extraSANs[0]',
        message: /"api.demo.example:6443" is neither/,
        mentions: ['write api.demo.example without the port'],
      },
      {
        title: 'extra SAN with a broken IPv6 address',
        edits: [['spec.apiServer.extraSANs', ['fe80::1::2']]],
        path: 'spec.apiServer.extraSANs[0]',
        message: /"fe80::1::2" is neither/,
        mentions: ['a valid IPv6 address'],
      },
      {
        title: 'extra SAN with a wildcard inside',
        edits: [['spec.apiServer.extraSANs', ['api.*.example']]],
        path: 'spec.apiServer.extraSANs[0]',
        message: /"api\.\*\.example"/,
        mentions: ['*.demo.example'],
      },
      {
        title: 'extra SAN that is a number',
        edits: [['spec.apiServer.extraSANs', [6443]]],
        path: 'spec.apiServer.extraSANs[0]',
        message: /found the number 6443/,
        mentions: [],
      },

      // PKI.
      {
        title: 'unknown PKI layout',
        edits: [['spec.pki.layout', 'openssl']],
        path: 'spec.pki.layout',
        message: /unknown PKI layout "openssl"/,
        mentions: ['kubeadm, single-ca'],
      },
      {
        title: 'shared etcd CA with the kubeadm layout',
        edits: [['spec.pki.etcdCA', 'shared']],
        path: 'spec.pki.etcdCA',
        message: /not possible with layout kubeadm/,
        mentions: ['layout: single-ca'],
      },
      {
        title: 'unknown path layout',
        edits: [['spec.pki.pathLayout', 'kubeasz']],
        path: 'spec.pki.pathLayout',
        message: /unknown path layout "kubeasz"/,
        mentions: ['kubeadm, cfssl'],
      },
      {
        title: 'path override with a relative path',
        edits: [['spec.pki.pathOverrides', { 'apiserver.certificate': 'ssl/kubernetes.pem' }]],
        path: 'spec.pki.pathOverrides.apiserver.certificate',
        message: /"ssl\/kubernetes.pem" is not an absolute file path/,
        mentions: ['/etc/kubernetes/ssl/kubernetes.pem'],
      },
      {
        title: 'path override key without a file part',
        edits: [['spec.pki.pathOverrides', { apiserver: '/etc/kubernetes/ssl/kubernetes.pem' }]],
        path: 'spec.pki.pathOverrides.apiserver',
        message: /"apiserver" is not written as <entry>.<file>/,
        mentions: ['apiserver.certificate'],
      },
      {
        title: 'admin group with a trailing comma',
        edits: [['spec.admin', { group: 'system:masters,' }]],
        path: 'spec.admin.group',
        message: /group "system:masters," contains characters that are not allowed/,
        mentions: ['system:masters'],
      },
      {
        title: 'unknown kubelet credentials mode',
        edits: [['spec.kubelet', { credentials: 'bootstraped' }]],
        path: 'spec.kubelet.credentials',
        message: /unknown kubelet credentials mode "bootstraped"/,
        mentions: ['credentials: bootstrap'],
      },
      {
        title: 'unknown kubelet credentials mode on a node',
        edits: [['spec.nodes[0].kubelet', { credentials: 'tls' }]],
        path: 'spec.nodes[0].kubelet.credentials',
        message: /unknown kubelet credentials mode "tls"/,
        mentions: ['pre-provisioned, bootstrap'],
      },
      {
        title: 'unknown key algorithm',
        edits: [['spec.pki.keyAlgorithm', 'RSA-1024']],
        path: 'spec.pki.keyAlgorithm',
        message: /unknown key algorithm "RSA-1024"/,
        mentions: ['RSA-2048, RSA-3072, RSA-4096, ECDSA-P256, ECDSA-P384'],
      },
      {
        title: 'key algorithm in lowercase',
        edits: [['spec.pki.keyAlgorithm', 'ecdsa-p256']],
        path: 'spec.pki.keyAlgorithm',
        message: /"ecdsa-p256"/,
        mentions: ['keyAlgorithm: ECDSA-P256'],
      },
      {
        title: 'duration with an unknown unit',
        edits: [['spec.pki.caValidity', '10y']],
        path: 'spec.pki.caValidity',
        message: /invalid duration "10y"/,
        mentions: ['d, h, m or s'],
      },
      {
        title: 'duration without a unit',
        edits: [['spec.pki.certValidity', '8760']],
        path: 'spec.pki.certValidity',
        message: /invalid duration "8760"/,
        mentions: [],
      },
      {
        title: 'duration written as a number',
        edits: [['spec.pki.certValidity', 8760]],
        path: 'spec.pki.certValidity',
        message: /expected a string, found the number 8760/,
        mentions: ['8760h'],
      },
      {
        title: 'zero duration',
        edits: [['spec.pki.certValidity', '0h']],
        path: 'spec.pki.certValidity',
        message: /duration "0h" is not positive/,
        mentions: [],
      },
      {
        title: 'negative duration',
        edits: [['spec.pki.caValidity', '-8760h']],
        path: 'spec.pki.caValidity',
        message: /duration "-8760h" is not positive/,
        mentions: [],
      },
      {
        title: 'duration past year 9999',
        edits: [['spec.pki.caValidity', '99999999h']],
        path: 'spec.pki.caValidity',
        message: /"99999999h" ends after 9999-12-31/,
        mentions: [],
      },
      {
        title: 'certificate validity equal to CA validity',
        edits: [
          ['spec.pki.caValidity', '8760h'],
          ['spec.pki.certValidity', '365d'],
        ],
        path: 'spec.pki.certValidity',
        message: /certValidity 365d is not shorter than caValidity 8760h/,
        mentions: ['4380h'],
      },
      {
        title: 'certificate validity longer than default CA validity',
        edits: [['spec.pki.certValidity', '100000h']],
        path: 'spec.pki.certValidity',
        message: /certValidity 100000h is not shorter than caValidity 87600h \(the default\)/,
        mentions: ['8760h'],
      },

      // Node fields.
      {
        title: 'node name with uppercase and underscore',
        edits: [['spec.nodes[0].name', 'Etcd_1']],
        path: 'spec.nodes[0].name',
        message: /node name "Etcd_1" is not a DNS-1123 subdomain/,
        mentions: ['name: etcd-1'],
      },
      {
        title: 'node name with a space',
        edits: [['spec.nodes[0].name', 'etcd 1']],
        path: 'spec.nodes[0].name',
        message: /"etcd 1"/,
        mentions: ['name: etcd-1'],
      },
      {
        title: 'invalid IPv4 address',
        edits: [['spec.nodes[1].addresses', ['192.0.2.300']]],
        path: 'spec.nodes[1].addresses[0]',
        message: /^invalid IP address "192.0.2.300"$/,
        mentions: ['write an IPv4 address such as 192.0.2.21 or an IPv6 address such as 2001:db8::21'],
      },
      {
        title: 'invalid IPv6 address',
        edits: [['spec.nodes[1].addresses', ['192.0.2.21', '2001:db8:::21']]],
        path: 'spec.nodes[1].addresses[1]',
        message: /invalid IP address "2001:db8:::21"/,
        mentions: [],
      },
      {
        title: 'address with a zone index',
        edits: [['spec.nodes[1].addresses', ['fe80::21%eth0']]],
        path: 'spec.nodes[1].addresses[0]',
        message: /"fe80::21%eth0" has a zone index/,
        mentions: ['%eth0'],
      },
      {
        title: 'unspecified address',
        edits: [['spec.nodes[1].addresses', ['0.0.0.0']]],
        path: 'spec.nodes[1].addresses[0]',
        message: /"0.0.0.0" is the unspecified address/,
        mentions: [],
      },
      {
        title: 'node without addresses',
        edits: [['spec.nodes[1].addresses', []]],
        path: 'spec.nodes[1].addresses',
        message: /node "master-1" has no addresses/,
        mentions: ['addresses: [192.0.2.11]'],
      },
      {
        title: 'invalid hostname',
        edits: [['spec.nodes[1].hostnames', ['Master_1.demo.example']]],
        path: 'spec.nodes[1].hostnames[0]',
        message: /invalid hostname "Master_1.demo.example"/,
        mentions: ['write master-1.demo.example'],
      },
      {
        title: 'wildcard hostname',
        edits: [['spec.nodes[1].hostnames', ['*.demo.example']]],
        path: 'spec.nodes[1].hostnames[0]',
        message: /invalid hostname "\*.demo.example"/,
        mentions: [],
      },
      {
        title: 'unknown role',
        edits: [['spec.nodes[2].roles', ['worker', 'ingress']]],
        path: 'spec.nodes[2].roles[1]',
        message: /unknown role "ingress"/,
        mentions: ['etcd, master, worker'],
      },
      {
        title: 'role in uppercase',
        edits: [['spec.nodes[1].roles', ['Master']]],
        path: 'spec.nodes[1].roles[0]',
        message: /unknown role "Master"/,
        mentions: ['write master'],
      },
      {
        title: 'duplicate role',
        edits: [['spec.nodes[2].roles', ['worker', 'worker']]],
        path: 'spec.nodes[2].roles[1]',
        message: /role "worker" is listed twice for node "worker-1"/,
        mentions: [],
      },
      {
        title: 'node without roles',
        edits: [['spec.nodes[2].roles', []]],
        path: 'spec.nodes[2].roles',
        message: /node "worker-1" has no roles/,
        mentions: ['etcd, master, worker'],
      },

      // Agent endpoints.
      {
        title: 'agent endpoint without a port',
        edits: [['spec.nodes[0].agent', { endpoint: '192.0.2.11' }]],
        path: 'spec.nodes[0].agent.endpoint',
        message: /agent endpoint "192.0.2.11" has no port/,
        mentions: ['192.0.2.11:7443'],
      },
      {
        title: 'agent endpoint with port 0',
        edits: [['spec.nodes[0].agent', { endpoint: '192.0.2.11:0' }]],
        path: 'spec.nodes[0].agent.endpoint',
        message: /invalid port "0" in agent endpoint "192.0.2.11:0"/,
        mentions: ['1 to 65535'],
      },
      {
        title: 'agent endpoint with port 65536',
        edits: [['spec.nodes[0].agent', { endpoint: '192.0.2.11:65536' }]],
        path: 'spec.nodes[0].agent.endpoint',
        message: /invalid port "65536"/,
        mentions: [],
      },
      {
        title: 'agent endpoint with a named port',
        edits: [['spec.nodes[0].agent', { endpoint: '192.0.2.11:agent' }]],
        path: 'spec.nodes[0].agent.endpoint',
        message: /invalid port "agent"/,
        mentions: [],
      },
      {
        title: 'agent endpoint with an invalid host',
        edits: [['spec.nodes[0].agent', { endpoint: 'etcd_1:7443' }]],
        path: 'spec.nodes[0].agent.endpoint',
        message: /invalid host "etcd_1" in agent endpoint "etcd_1:7443"/,
        mentions: [],
      },
      {
        title: 'agent endpoint with an unbracketed IPv6 address',
        edits: [['spec.nodes[0].agent', { endpoint: '2001:db8::11' }]],
        path: 'spec.nodes[0].agent.endpoint',
        message: /invalid agent endpoint "2001:db8::11"/,
        mentions: ['[2001:db8::11]:7443'],
      },

      // Rules across nodes.
      {
        title: 'duplicate node name',
        edits: [['spec.nodes[2].name', 'etcd-1']],
        path: 'spec.nodes[2].name',
        message: /duplicate node name "etcd-1", already used by spec.nodes\[0\]/,
        mentions: [],
      },
      {
        title: 'address on two nodes',
        edits: [['spec.nodes[2].addresses', ['192.0.2.21']]],
        path: 'spec.nodes[2].addresses[0]',
        message: /address 192.0.2.21 is also used by node "master-1" \(spec.nodes\[1\].addresses\[0\]\)/,
        mentions: [],
      },
      {
        title: 'IPv6 address on two nodes in different spellings',
        edits: [
          ['spec.nodes[1].addresses', ['192.0.2.21', '2001:db8::21']],
          ['spec.nodes[2].addresses', ['2001:DB8:0:0:0:0:0:21']],
        ],
        path: 'spec.nodes[2].addresses[0]',
        message: /address 2001:db8::21 is also used by node "master-1"/,
        mentions: [],
      },
      {
        title: 'address twice on one node',
        edits: [['spec.nodes[1].addresses', ['192.0.2.21', '192.0.2.22', '192.0.2.21']]],
        path: 'spec.nodes[1].addresses[2]',
        message: /address 192.0.2.21 is listed twice for node "master-1", first at spec.nodes\[1\].addresses\[0\]/,
        mentions: [],
      },
      {
        title: 'hostname on two nodes',
        edits: [
          ['spec.nodes[1].hostnames', ['node.demo.example']],
          ['spec.nodes[2].hostnames', ['node.demo.example']],
        ],
        path: 'spec.nodes[2].hostnames[0]',
        message: /hostname node.demo.example is also used by node "master-1"/,
        mentions: [],
      },
      {
        title: 'agent endpoint on two nodes',
        edits: [
          ['spec.nodes[1].agent', { endpoint: '192.0.2.50:7501' }],
          ['spec.nodes[2].agent', { endpoint: '192.0.2.50:7501' }],
        ],
        path: 'spec.nodes[2].agent.endpoint',
        message: /agent endpoint 192.0.2.50:7501 is also used by node "master-1"/,
        mentions: [],
      },
      {
        title: 'agent endpoint equal to the default of another node',
        edits: [['spec.nodes[1].agent', { endpoint: '192.0.2.11:7443' }]],
        path: 'spec.nodes[1].agent.endpoint',
        message: /agent endpoint 192.0.2.11:7443 is also used by node "etcd-1"/,
        mentions: [],
      },
      {
        title: 'no master',
        edits: [['spec.nodes[1].roles', ['worker']]],
        path: 'spec.nodes',
        message: /no node has the role master/,
        mentions: ['roles: [master]'],
      },
      {
        title: 'no etcd member',
        edits: [['spec.nodes[0].roles', ['worker']]],
        path: 'spec.nodes',
        message: /no node has the role etcd/,
        mentions: ['roles: [etcd]'],
      },
      {
        title: 'empty node list',
        edits: [['spec.nodes', []]],
        path: 'spec.nodes',
        message: /no node has the role master/,
        mentions: [],
      },
    ];

    for (const testCase of cases) {
      it(`reports ${testCase.title}`, () => {
        const text = testCase.text ?? editedYaml(testCase.edits ?? []);
        const issues = issuesOf(text);
        const atPath = issues.filter((issue) => issue.path === testCase.path);
        assert.ok(atPath.length > 0, `no issue at ${testCase.path}; issues:\n${formatIssues(issues)}`);

        const issue = atPath.find((candidate) => testCase.message.test(candidate.message));
        assert.ok(issue, `no message at ${testCase.path} matches ${testCase.message}; issues:\n${formatIssues(atPath)}`);

        for (const mention of testCase.mentions) {
          assert.ok(
            `${issue.message} ${issue.fix}`.includes(mention),
            `issue at ${testCase.path} does not mention ${JSON.stringify(mention)}:\n${formatIssues([issue])}`,
          );
        }
      });
    }

    it('names a misspelled required field once', () => {
      const issues = issuesOf(editedYaml([['spec.nodes[1].addresses', REMOVE], ['spec.nodes[1].adresses', ['192.0.2.12']]]));
      const rename = issues.filter((issue) => issue.path === 'spec.nodes[1].adresses');
      assert.equal(rename.length, 1, formatIssues(issues));
      assert.match(rename[0]!.fix, /rename "adresses" to "addresses"/);
      assert.deepEqual(
        issues.filter((issue) => issue.path === 'spec.nodes[1].addresses'),
        [],
        `a misspelled field was also reported as missing:\n${formatIssues(issues)}`,
      );
    });

    it('reports YAML syntax as one issue', () => {
      const issues = issuesOf('spec:\n  nodes: [a, b\n  apiServer: {endpoint: x\n');

      assert.equal(issues.length, 1, formatIssues(issues));
      assert.equal(issues[0]?.path, '(yaml)');
    });

    it('reports all issues together', () => {
      const text = editedYaml([
        ['kind', 'Node'],
        ['spec.serviceCIDR', '10.96.0.0/33'],
        ['spec.nodes[0].addresses', ['192.0.2.300']],
        ['spec.nodes[2].roles', ['worker', 'ingress']],
      ]);

      const paths = issuesOf(text).map((issue) => issue.path);

      assert.deepEqual(paths, ['kind', 'spec.serviceCIDR', 'spec.nodes[0].addresses[0]', 'spec.nodes[2].roles[1]']);
    });

    it('names the source and each issue in the error message', () => {
      const text = editedYaml([['spec.nodes[1].addresses', ['192.0.2.300']]]);

      assert.throws(
        () => parseInventory(text, 'cluster.yaml'),
        (error: unknown) => {
          assert.ok(error instanceof InventoryError);
          assert.equal(error.source, 'cluster.yaml');
          assert.match(error.message, /^invalid inventory cluster\.yaml:\n/);
          assert.match(error.message, /spec\.nodes\[1\]\.addresses\[0\]: invalid IP address "192\.0\.2\.300"/);
          return true;
        },
      );
    });

    it('reports a missing file', () => {
      const file = path.join(tmpdir(), `kubetrust-missing-${process.pid}.yaml`);

      assert.throws(
        () => loadInventory(file),
        (error: unknown) => {
          assert.ok(error instanceof InventoryError);
          assert.equal(error.issues.length, 1);
          assert.equal(error.issues[0]?.path, '(file)');
          assert.match(error.issues[0]?.message ?? '', new RegExp(`not found: ${file}`));
          assert.match(error.issues[0]?.fix ?? '', /examples\/cluster\.yaml/);
          return true;
        },
      );
    });
  });

  describe('etcd member count', () => {
    it('warns about two etcd members', () => {
      const text = editedYaml([['spec.nodes[1].roles', ['master', 'etcd']]]);

      const { warnings } = parseInventory(text, 'two.yaml');

      assert.equal(warnings.length, 1);
      assert.equal(warnings[0]?.path, 'spec.nodes');
      assert.match(warnings[0]?.message ?? '', /^2 nodes have the role etcd/);
      assert.match(warnings[0]?.message ?? '', /no fault tolerance over one fewer member/);
      assert.match(warnings[0]?.fix ?? '', /odd number .* 1 or 3/);
    });

    it('warns about four etcd members', () => {
      const text = editedYaml([
        ['spec.nodes[1].roles', ['master', 'etcd']],
        ['spec.nodes[2].roles', ['worker', 'etcd']],
        ['spec.nodes[3]', { name: 'etcd-2', addresses: ['192.0.2.12'], roles: ['etcd'] }],
      ]);

      const { warnings } = parseInventory(text, 'four.yaml');

      assert.equal(warnings.length, 1);
      assert.match(warnings[0]?.message ?? '', /^4 nodes have the role etcd/);
      assert.match(warnings[0]?.fix ?? '', /3 or 5/);
    });

    it('accepts three etcd members silently', () => {
      const text = editedYaml([
        ['spec.nodes[1].roles', ['master', 'etcd']],
        ['spec.nodes[2].roles', ['worker', 'etcd']],
      ]);

      const { warnings } = parseInventory(text, 'three.yaml');

      assert.deepEqual(warnings, []);
    });
  });

  describe('helpers', () => {
    it('returns the first address of a CIDR', () => {
      const table: ReadonlyArray<readonly [string, string]> = [
        ['10.96.0.0/12', '10.96.0.1'],
        ['fd00:10:96::/112', 'fd00:10:96::1'],
        ['192.168.0.0/31', '192.168.0.1'],
        ['10.0.0.255/23', '10.0.0.1'],
        ['2001:DB8:0:0::/64', '2001:db8::1'],
      ];
      for (const [cidr, expected] of table) {
        assert.equal(firstAddressOfCidr(cidr), expected, cidr);
      }
    });

    it('rejects CIDRs without a first address', () => {
      for (const cidr of ['10.96.0.1/32', 'fd00::1/128', '10.96.0.0', '10.96.0.0/40', 'x/8']) {
        assert.throws(() => firstAddressOfCidr(cidr), /CIDR/, cidr);
      }
    });

    it('parses durations into milliseconds', () => {
      const table: ReadonlyArray<readonly [string, number | undefined]> = [
        ['8760h', 8760 * HOUR_MS],
        ['90m', 1.5 * HOUR_MS],
        ['1h30m', 1.5 * HOUR_MS],
        ['1.5h', 1.5 * HOUR_MS],
        ['365d', 365 * 24 * HOUR_MS],
        ['1d12h', 36 * HOUR_MS],
        ['45s', 45_000],
        ['0', 0],
        ['-2h', -2 * HOUR_MS],
        ['10y', undefined],
        ['1h 30m', undefined],
        ['h', undefined],
        ['', undefined],
        ['500ms', undefined],
      ];
      for (const [text, expected] of table) {
        assert.equal(parseDuration(text), expected, text);
      }
    });
  });
});
