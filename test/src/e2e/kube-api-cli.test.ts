/**
 * The controller's Kubernetes API commands (kube-credentials, bootstrap-kubelet, csr list and
 * approve, tokens list and prune) run as a user runs them, against the fake API server.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { KubeClient } from '@kubetrust/controller/dist/kubelet-bootstrap';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import type { FakeApiServer } from '../harness/fake-apiserver';
import { writeKubeconfigFile, type FakeClusterPki } from '../harness/fake-cluster';
import { startControllerApi } from '../harness/fake-controller-rbac';
import { runFakeKubelet, type FakeKubeletResult } from '../harness/fake-kubelet';
import { runController, type CommandResult } from '../harness/local-cluster';

const HOST = '127.0.48.2';

function inventoryText(endpoint: string): string {
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: lab}
spec:
  apiServer: {endpoint: "${endpoint}"}
  kubelet: {credentials: bootstrap}
  nodes:
    - {name: cp-a, addresses: [192.0.2.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [192.0.2.21], roles: [worker]}
    - {name: wk-b, addresses: [192.0.2.22], roles: [worker]}
`;
}

describe('controller Kubernetes API commands', function () {
  let pki: FakeClusterPki;
  let server: FakeApiServer;
  let admin: KubeClient;
  let workDir: string;
  let stateDir: string;
  let inventoryFile: string;
  /** Token secrets written into bootstrap kubeconfigs, which no command output may contain. */
  const secrets: string[] = [];

  function assertNoSecrets(result: CommandResult): void {
    for (const secret of secrets) {
      assert.ok(!result.stdout.includes(secret), 'stdout contains no token secret');
      assert.ok(!result.stderr.includes(secret), 'stderr contains no token secret');
    }
    assert.ok(!/PRIVATE KEY|client-key-data/.test(result.stdout + result.stderr), 'output contains no private key');
  }

  async function controller(...args: string[]): Promise<CommandResult> {
    const result = await runController(args);
    assertNoSecrets(result);
    return result;
  }

  function api(...args: string[]): string[] {
    return [...args, '--inventory', inventoryFile, '--state-dir', stateDir];
  }

  function json<T>(result: CommandResult): T {
    assert.equal(result.code, 0, `exit code 0, stderr: ${result.stderr}`);
    return JSON.parse(result.stdout) as T;
  }

  async function bootstrapKubelet(node: string, addresses: readonly string[]): Promise<{ file: string; tokenId: string; kubelet: FakeKubeletResult }> {
    const file = path.join(workDir, `${node}-bootstrap.conf`);
    const issued = json<{ tokenId: string; file: string }>(await controller(...api('bootstrap-kubelet', '--node', node, '--ttl', '30m', '--out', file, '--output', 'json')));
    secrets.push((parseKubeconfig(fs.readFileSync(file, 'utf8')).token ?? '').split('.')[1] ?? '');
    const kubelet = await runFakeKubelet({
      nodeName: node,
      bootstrapKubeconfigPath: file,
      kubeconfigPath: path.join(workDir, node, 'kubelet.conf'),
      certDir: path.join(workDir, node, 'pki'),
      addresses,
      hostnames: [node],
      servingCertificateTimeoutMs: 500,
    });
    return { file, tokenId: issued.tokenId, kubelet };
  }

  before(async function () {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-kube-api-cli-'));
    stateDir = path.join(workDir, 'state');
    ({ pki, server, admin } = await startControllerApi(HOST, workDir, stateDir));
    inventoryFile = path.join(workDir, 'inventory.yaml');
    fs.writeFileSync(inventoryFile, inventoryText(server.url));
  });

  after(async function () {
    await server?.close();
    fs.rmSync(workDir, { recursive: true, force: true });
  });

  describe('kube-credentials', function () {
    it('API command without kubeconfig exits 2', async function () {
      const result = await controller(...api('tokens', 'list'));
      assert.equal(result.code, 2);
      assert.match(result.stderr, /controller\.kubeconfig is missing; run `controller kube-credentials` with this --state-dir first/);
    });

    it('writes the kubeconfig and RBAC manifest', async function () {
      const result = json<{ kubeconfigPath: string; rbacManifestPath: string; user: string; server: string }>(
        await controller('kube-credentials', '--inventory', inventoryFile, '--state-dir', stateDir, '--output', 'json'),
      );
      assert.equal(result.kubeconfigPath, path.join(stateDir, 'kubernetes', 'controller.kubeconfig'));
      assert.equal(fs.statSync(result.kubeconfigPath).mode & 0o777, 0o600);
      const kubeconfig = parseKubeconfig(fs.readFileSync(result.kubeconfigPath, 'utf8'));
      assert.equal(kubeconfig.server, server.url);
      assert.equal(kubeconfig.certificateAuthorityPem, pki.ca.certificatePem);
      assert.equal(result.user, 'kubetrust:controller');
      assert.match(fs.readFileSync(result.rbacManifestPath, 'utf8'), /kind: ClusterRole\n/);
    });

    it('text output names the files', async function () {
      const result = await controller('kube-credentials', '--inventory', inventoryFile, '--state-dir', stateDir);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /kubectl apply -f .*controller-rbac\.yaml/);
    });

    it('init --force moves it aside', async function () {
      const copy = path.join(workDir, 'state-copy');
      fs.cpSync(stateDir, copy, { recursive: true });
      const result = await controller('init', '--inventory', inventoryFile, '--state-dir', copy, '--force');
      assert.equal(result.code, 0, result.stderr);
      assert.equal(fs.existsSync(path.join(copy, 'kubernetes')), false);
      const aside = fs.readdirSync(copy).filter((entry) => entry.startsWith('replaced-'));
      assert.equal(aside.length, 1);
      assert.ok(fs.existsSync(path.join(copy, aside[0] as string, 'kubernetes', 'controller.kubeconfig')));
    });

    it('missing cluster CA exits 2', async function () {
      const empty = fs.mkdtempSync(path.join(workDir, 'empty-state-'));
      const result = await controller('kube-credentials', '--inventory', inventoryFile, '--state-dir', empty);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /cluster CA: .*cluster-ca\.crt is missing/);
    });
  });

  describe('bootstrap-kubelet', function () {
    it('writes a working bootstrap kubeconfig', async function () {
      const { file, tokenId, kubelet } = await bootstrapKubelet('wk-a', ['192.0.2.21']);
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      assert.match(tokenId, /^[a-z0-9]{6}$/);
      assert.equal(kubelet.bootstrapped, true);
      assert.equal(kubelet.steps.at(-1)?.name, 'serving-certificate-pending');
      for (const name of ['kubetrust:kubelet-bootstrap', 'kubetrust:node-autoapprove-bootstrap', 'kubetrust:node-autoapprove-certificate-rotation']) {
        assert.ok(server.getObject('clusterrolebindings', name), `binding ${name} exists`);
      }
    });

    it('text output shows the token id only', async function () {
      const file = path.join(workDir, 'wk-b-text.conf');
      const result = await controller(...api('bootstrap-kubelet', '--node', 'wk-b', '--out', file));
      secrets.push((parseKubeconfig(fs.readFileSync(file, 'utf8')).token ?? '').split('.')[1] ?? '');
      assertNoSecrets(result);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /binding kubetrust:kubelet-bootstrap: unchanged/);
      assert.match(result.stdout, /for node wk-b: token [a-z0-9]{6}, expires /);
    });

    it('invalid input exits 2', async function () {
      const out = path.join(workDir, 'never.conf');
      const cases: [string[], RegExp][] = [
        [['--node', 'wk-9'], /node "wk-9" is not in/],
        [['--node', 'cp-a'], /node cp-a is not a worker with kubelet.credentials: bootstrap/],
        [['--node', 'wk-a', '--ttl', 'soon'], /--ttl: "soon" is not a positive duration/],
        [['--node', 'wk-a', '--ttl', '0s'], /--ttl: "0s" is not a positive duration/],
      ];
      for (const [args, message] of cases) {
        const result = await controller(...api('bootstrap-kubelet', ...args, '--out', out));
        assert.equal(result.code, 2, `${args.join(' ')}: exit code`);
        assert.match(result.stderr, message, `${args.join(' ')}: message`);
      }
      assert.equal(fs.existsSync(out), false);
    });
  });

  describe('csr', function () {
    before(async function () {
      // wk-b requests an address that the inventory does not list.
      await bootstrapKubelet('wk-b', ['192.0.2.22', '198.51.100.7']);
    });

    it('list shows pending CSRs and reasons', async function () {
      const listed = json<{ csrs: { node: string; approvable: boolean; reasons: string[] }[] }>(await controller(...api('csr', 'list', '--output', 'json')));
      assert.deepEqual(
        listed.csrs.map((csr) => [csr.node, csr.approvable, csr.reasons]),
        [
          ['wk-a', true, []],
          ['wk-b', false, ['IP 198.51.100.7 is not an address of wk-b in the inventory']],
        ],
      );
      const text = await controller(...api('csr', 'list'));
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /wk-b\s+system:node:wk-b\s+IP 198\.51\.100\.7 is not an address of wk-b in the inventory/);
    });

    it('approve approves only passing CSRs', async function () {
      const result = await controller(...api('csr', 'approve'));
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^approved {2}csr-\S+ \(node wk-a\)$/m);
      assert.match(result.stdout, /^pending {3}csr-\S+ \(node wk-b\): IP 198\.51\.100\.7 is not an address of wk-b in the inventory$/m);
      assert.match(result.stdout, /1 approved, 1 still pending\./);

      const again = json<{ results: { node: string; outcome: string }[] }>(await controller(...api('csr', 'approve', '--output', 'json')));
      assert.deepEqual(
        again.results.map((entry) => [entry.node, entry.outcome]),
        [['wk-b', 'pending']],
      );
    });
  });

  describe('tokens', function () {
    it('list shows node, id, expiration and state', async function () {
      const listed = json<{ tokens: { node: string; tokenId: string; expiration: string; state: string }[] }>(await controller(...api('tokens', 'list', '--output', 'json')));
      assert.deepEqual(
        listed.tokens.map((token) => [token.node, token.state]),
        [
          ['wk-a', 'valid'],
          ['wk-b', 'valid'],
          ['wk-b', 'valid'],
        ],
      );
      for (const token of listed.tokens) assert.ok(!Number.isNaN(Date.parse(token.expiration)), `${token.tokenId} expiration`);
      const text = await controller(...api('tokens', 'list'));
      assert.match(text.stdout, /^NODE\s+TOKEN ID\s+EXPIRATION\s+STATE$/m);
    });

    it('prune --dry-run deletes nothing', async function () {
      const result = await controller(...api('tokens', 'prune', '--dry-run'));
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /would delete +[a-z0-9]{6} \(node wk-a\): node registered/);
      assert.match(result.stdout, /3 to delete, 0 kept\. Dry run: nothing was deleted\./);
      const listed = json<{ tokens: unknown[] }>(await controller(...api('tokens', 'list', '--output', 'json')));
      assert.equal(listed.tokens.length, 3);
    });

    it('prune deletes tokens of registered nodes', async function () {
      const pruned = json<{ tokens: { node: string; reason: string; deleted: boolean }[] }>(await controller(...api('tokens', 'prune', '--output', 'json')));
      assert.deepEqual(
        pruned.tokens.map((token) => [token.node, token.reason, token.deleted]),
        [
          ['wk-a', 'node registered', true],
          ['wk-b', 'node registered', true],
          ['wk-b', 'node registered', true],
        ],
      );
      const listed = json<{ tokens: unknown[] }>(await controller(...api('tokens', 'list', '--output', 'json')));
      assert.deepEqual(listed.tokens, []);
    });
  });

  describe('API failures', function () {
    it('forbidden request exits 1', async function () {
      // A user without the controller's permissions: a fresh bootstrap token of wk-a.
      const file = path.join(workDir, 'wk-a-again.conf');
      json(await controller(...api('bootstrap-kubelet', '--node', 'wk-a', '--out', file, '--output', 'json')));
      secrets.push((parseKubeconfig(fs.readFileSync(file, 'utf8')).token ?? '').split('.')[1] ?? '');
      const result = await controller('tokens', 'list', '--inventory', inventoryFile, '--kubeconfig', file);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /list Secrets in kube-system failed: secrets is forbidden: User "system:bootstrap:[a-z0-9]{6}"/);
    });

    it('unreachable API server exits 1', async function () {
      const file = path.join(workDir, 'unreachable.conf');
      writeKubeconfigFile(file, 'https://127.0.48.3:1', pki.ca.certificatePem, 'kubetrust:controller', await pki.issueClientCertificate('kubetrust:controller', []));
      const result = await controller('csr', 'list', '--inventory', inventoryFile, '--kubeconfig', file);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /list CertificateSigningRequests failed: /);
    });
  });
});
