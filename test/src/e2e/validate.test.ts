/**
 * End to end: `controller validate --live` through the real CLI against one agent process per
 * node, each on its own loopback address in 127.0.27.0/24 with its own install root. No etcd runs;
 * every restart hook only appends to a log.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { LocalCluster, runController, type CommandResult } from '../harness/local-cluster';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: validate-live}
spec:
  apiServer: {endpoint: "https://127.0.27.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: cp-1, addresses: [127.0.27.21], roles: [etcd, master]}
    - {name: wk-1, addresses: [127.0.27.31], roles: [worker]}
`;

interface ValidateJson {
  readonly ok: boolean;
  readonly source: string;
  readonly problems: readonly { node: string; path: string; check: string; message: string; fix: string }[];
}

describe('controller validate --live', function () {
  this.timeout(300_000);
  let cluster: LocalCluster;

  async function validateLive(): Promise<{ result: CommandResult; report: ValidateJson }> {
    const result = await runController(['validate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--live', '--output', 'json']);
    try {
      return { result, report: JSON.parse(result.stdout) as ValidateJson };
    } catch {
      throw new Error(`validate printed no JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
    }
  }

  before(async () => {
    cluster = await LocalCluster.start(INVENTORY, { etcd: false, prefix: 'kubetrust-validate-live-' });
  });

  after(async () => {
    await cluster?.destroy();
  });

  it('reports every file as missing before distribute', async () => {
    const { result, report } = await validateLive();
    assert.equal(result.code, 1, result.stderr);
    assert.equal(report.ok, false);
    assert.ok(report.problems.length > 0);
    assert.ok(report.problems.every((problem) => problem.check === 'missing'), JSON.stringify(report.problems, null, 1));
  });

  it('passes after distribute', async () => {
    const distribute = await cluster.distribute();
    assert.equal(distribute.code, 0, distribute.stdout + distribute.stderr);
    const { result, report } = await validateLive();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.deepEqual(report, { ok: true, cluster: 'validate-live', source: 'live', problems: [] });
  });

  it('reports a file deleted on a node', async () => {
    fs.rmSync(cluster.file('wk-1', '/var/lib/kubelet/pki/kubelet.key'));
    const { result, report } = await validateLive();
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(
      report.problems.map((problem) => [problem.node, problem.path, problem.check]),
      [['wk-1', '/var/lib/kubelet/pki/kubelet.key', 'missing']],
    );
    assert.match(report.problems[0]!.fix, /controller distribute/);
    const text = await runController(['validate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--live']);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /^wk-1: \/var\/lib\/kubelet\/pki\/kubelet\.key: file is missing; run `controller distribute`/m);
  });

  it('reports a changed mode on a node', async () => {
    const distribute = await cluster.distribute();
    assert.equal(distribute.code, 0, distribute.stdout + distribute.stderr);
    fs.chmodSync(cluster.file('cp-1', '/etc/kubernetes/pki/apiserver.key'), 0o640);
    const { result, report } = await validateLive();
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(
      report.problems.map((problem) => [problem.node, problem.path, problem.check]),
      [['cp-1', '/etc/kubernetes/pki/apiserver.key', 'mode']],
    );
  });

  it('reports an agent that does not answer', async () => {
    await cluster.stopAgents(['wk-1']);
    const { result, report } = await validateLive();
    assert.equal(result.code, 1, result.stderr);
    const agent = report.problems.filter((problem) => problem.check === 'agent');
    assert.deepEqual(agent.map((problem) => problem.node), ['wk-1'], JSON.stringify(report.problems, null, 1));
    assert.match(agent[0]!.message, /agent unreachable at 127\.0\.27\.31:7443 \(connect ECONNREFUSED 127\.0\.27\.31:7443\);/);
  });
});
