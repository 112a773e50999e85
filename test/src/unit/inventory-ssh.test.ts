import assert from 'node:assert/strict';

import { describe, it } from 'mocha';
import { parse, stringify } from 'yaml';

import { InventoryError, parseInventory, type InventoryIssue, type SshSettings } from '@kubetrust/shared/dist/inventory/index';

const FINGERPRINT = 'SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s';
const OPTIONS = { env: {}, homeDir: '/home/ops', baseDir: '/srv/inventory' } as const;

/** An inventory with two nodes and the given `spec.ssh` and per-node `ssh` and `agent` mappings. */
function inventoryYaml(clusterSsh: unknown, nodeSsh: unknown = undefined, agent: unknown = undefined): string {
  const document = parse(`
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: demo}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  nodes:
    - {name: cp-1, addresses: [192.0.2.11, 192.0.2.12], roles: [etcd, master]}
    - {name: worker-1, addresses: [192.0.2.31], roles: [worker]}
`) as { spec: { ssh?: unknown; nodes: Record<string, unknown>[] } };
  if (clusterSsh !== undefined) {
    document.spec.ssh = clusterSsh;
  }
  if (nodeSsh !== undefined) {
    document.spec.nodes[0]!['ssh'] = nodeSsh;
  }
  if (agent !== undefined) {
    document.spec.nodes[0]!['agent'] = agent;
  }
  return stringify(document);
}

function sshOf(text: string, options: Parameters<typeof parseInventory>[2] = OPTIONS): SshSettings[] {
  return parseInventory(text, 'ssh.yaml', options).inventory.nodes.map((node) => node.ssh);
}

function issuesOf(text: string): readonly InventoryIssue[] {
  try {
    parseInventory(text, 'ssh.yaml', OPTIONS);
  } catch (error) {
    if (error instanceof InventoryError) {
      return error.issues;
    }
    throw error;
  }
  assert.fail('expected an InventoryError');
}

describe('inventory ssh settings', () => {
  it('fills in every default', () => {
    const [first, second] = sshOf(inventoryYaml(undefined));

    assert.deepEqual(first, {
      host: '192.0.2.11',
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
    });
    assert.equal(second?.host, '192.0.2.31');
  });

  it('uses the ssh-agent when SSH_AUTH_SOCK is set', () => {
    const [withSocket] = sshOf(inventoryYaml(undefined), { ...OPTIONS, env: { SSH_AUTH_SOCK: '/run/agent.sock' } });
    assert.equal(withSocket?.agent, true);
    assert.equal(withSocket?.agentSocket, '/run/agent.sock');

    const [turnedOff] = sshOf(inventoryYaml({ agent: false }), { ...OPTIONS, env: { SSH_AUTH_SOCK: '/run/agent.sock' } });
    assert.equal(turnedOff?.agent, false);
  });

  it('lets a node override the cluster field by field', () => {
    const cluster = {
      port: 2222,
      user: 'ops',
      privateKeyFile: 'keys/id_ed25519',
      passphraseEnv: 'OPS_KEY_PASSPHRASE',
      knownHostsFile: '~/kt/known_hosts',
      jumpHost: { host: 'bastion.example' },
    };
    const node = { host: 'cp-1.example', user: 'root', hostKeyFingerprint: FINGERPRINT };
    const [first, second] = sshOf(inventoryYaml(cluster, node));

    assert.deepEqual(first, {
      host: 'cp-1.example',
      port: 2222,
      user: 'root',
      privateKeyFile: '/srv/inventory/keys/id_ed25519',
      passphraseEnv: 'OPS_KEY_PASSPHRASE',
      agent: false,
      agentSocket: undefined,
      jumpHost: { host: 'bastion.example', port: 22, user: 'root', privateKeyFile: '/srv/inventory/keys/id_ed25519' },
      sudo: false,
      knownHostsFile: '/home/ops/kt/known_hosts',
      hostKeyFingerprint: FINGERPRINT,
    });
    assert.equal(second?.host, '192.0.2.31');
    assert.equal(second?.user, 'ops');
    assert.equal(second?.sudo, true);
    assert.equal(second?.jumpHost?.user, 'ops');
  });

  it('keeps an explicit sudo setting', () => {
    const [first] = sshOf(inventoryYaml({ user: 'ops', sudo: false }));
    assert.equal(first?.sudo, false);
  });

  it('reads agent.prefix', () => {
    const parsed = parseInventory(inventoryYaml(undefined, undefined, { prefix: '/srv/node-1/' }), 'ssh.yaml', OPTIONS);

    assert.equal(parsed.inventory.nodes[0]?.agent.prefix, '/srv/node-1');
    assert.equal(parsed.inventory.nodes[1]?.agent.prefix, '/');
  });

  const invalid: readonly (readonly [name: string, text: string, path: string, message: RegExp, fix: RegExp])[] = [
    ['port out of range', inventoryYaml({ port: 70000 }), 'spec.ssh.port', /invalid SSH port: found the number 70000/, /from 1 to 65535/],
    ['port as a string', inventoryYaml(undefined, { port: '22' }), 'spec.nodes[0].ssh.port', /the string "22"/, /port number/],
    ['invalid user', inventoryYaml({ user: 'ops user' }), 'spec.ssh.user', /invalid user name "ops user"/, /such as admin/],
    ['invalid host', inventoryYaml(undefined, { host: 'cp_1:22' }), 'spec.nodes[0].ssh.host', /invalid SSH host "cp_1:22"/, /set the port in port/],
    ['host for the whole cluster', inventoryYaml({ host: '192.0.2.11' }), 'spec.ssh.host', /each node has its own/, /ssh mapping of each node/],
    ['cluster-wide fingerprint', inventoryYaml({ hostKeyFingerprint: FINGERPRINT }), 'spec.ssh.hostKeyFingerprint', /each node has its own host key/, /node whose key it is/],
    ['malformed fingerprint', inventoryYaml(undefined, { hostKeyFingerprint: 'MD5:aa:bb' }), 'spec.nodes[0].ssh.hostKeyFingerprint', /invalid host key fingerprint "MD5:aa:bb"/, /ssh-keygen -lf/],
    ['passphrase instead of a variable name', inventoryYaml({ privateKeyFile: '/k', passphraseEnv: 'my secret' }), 'spec.ssh.passphraseEnv', /not an environment variable name/, /not the passphrase itself/],
    ['passphraseEnv without a key', inventoryYaml({ passphraseEnv: 'PASS' }), 'spec.nodes[0].ssh.passphraseEnv', /no privateKeyFile/, /add privateKeyFile/],
    ['agent as a string', inventoryYaml({ agent: 'yes' }), 'spec.ssh.agent', /expected true or false/, /agent: true/],
    ['home of another user', inventoryYaml({ privateKeyFile: '~ops/.ssh/id' }), 'spec.ssh.privateKeyFile', /invalid file path/, /below ~\//],
    ['jump host without host', inventoryYaml({ jumpHost: { user: 'ops' } }), 'spec.ssh.jumpHost.host', /missing required field "host"/, /bastion/],
    ['unknown jump host field', inventoryYaml({ jumpHost: { host: 'b.example', prot: 22 } }), 'spec.ssh.jumpHost.prot', /unknown field "prot"/, /rename "prot" to "port"/],
    ['unknown ssh field', inventoryYaml(undefined, { users: 'ops' }), 'spec.nodes[0].ssh.users', /unknown field "users"/, /rename "users" to "user"/],
    ['relative prefix', inventoryYaml(undefined, undefined, { prefix: 'srv/node-1' }), 'spec.nodes[0].agent.prefix', /not an absolute directory/, /such as \/srv\/node-1/],
    ['prefix with ..', inventoryYaml(undefined, undefined, { prefix: '/srv/../etc' }), 'spec.nodes[0].agent.prefix', /without "\.\."/, /remove prefix/],
  ];

  for (const [name, text, path, message, fix] of invalid) {
    it(`rejects ${name}`, () => {
      const issues = issuesOf(text);
      const issue = issues.find((candidate) => candidate.path === path);

      assert.ok(issue, `no issue at ${path}: ${JSON.stringify(issues)}`);
      assert.match(issue.message, message);
      assert.match(issue.fix, fix);
    });
  }
});
