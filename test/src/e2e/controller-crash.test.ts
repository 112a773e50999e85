/**
 * Killing the controller mid-rollout: `controller distribute` is killed with SIGKILL at seeded
 * random moments while it changes every node, and then run again. The rerun must converge, a
 * third run must find nothing to do, every installed certificate must match its key and appear in
 * the ledger, and no CA may have issued a serial twice.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { CONTROLLER_CLI, LocalCluster } from '../harness/local-cluster';

const SUBNET = '127.0.38';
const TRIALS = 6;

function inventory(extraSan: string): string {
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: controller-crash}
spec:
  apiServer: {endpoint: "https://${SUBNET}.100:6443", extraSANs: [${extraSan}]}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: etcd-1, addresses: [${SUBNET}.11], roles: [etcd]}
    - {name: master-1, addresses: [${SUBNET}.21], roles: [master]}
    - {name: master-2, addresses: [${SUBNET}.22], roles: [master]}
    - {name: worker-1, addresses: [${SUBNET}.31], roles: [worker]}
    - {name: worker-2, addresses: [${SUBNET}.32], roles: [worker]}
`;
}

/** Runs `controller distribute` and kills it with SIGKILL after `killAfterMs`. */
function distributeAndKill(cluster: LocalCluster, killAfterMs: number): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CONTROLLER_CLI, 'distribute', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--max-parallel', '2'], {
      stdio: 'ignore',
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(signal ?? `exit ${String(code)}`);
    });
  });
}

describe('controller killed mid-rollout', function () {
  this.timeout(600_000);
  let cluster: LocalCluster;

  before(async () => {
    cluster = await LocalCluster.start(inventory('api-0.crash.example'), { etcd: false, prefix: 'kubetrust-controller-crash-' });
    const { result } = await cluster.distributeJson();
    assert.equal(result.code, 0, result.stderr);
  });

  after(async () => {
    await cluster?.destroy();
  });

  it('converges on rerun without reissuing twice', async () => {
    const outcomes: string[] = [];
    for (let trial = 1; trial <= TRIALS; trial++) {
      // Every trial changes every node: new apiserver SANs on the masters, missing files elsewhere.
      fs.writeFileSync(cluster.inventoryFile, inventory(`api-${trial}.crash.example`));
      for (const name of ['etcd-1', 'worker-1', 'worker-2']) {
        const first = itemsForNode(cluster.inventory, cluster.node(name).spec).find((item) => item.type === 'leaf');
        assert.ok(first?.type === 'leaf');
        fs.rmSync(cluster.file(name, first.certificate.path), { force: true });
      }
      const killAfterMs = 150 + ((trial * 7919) % 1300);
      outcomes.push(`${killAfterMs} ms: ${await distributeAndKill(cluster, killAfterMs)}`);

      const rerun = await cluster.distributeJson();
      assert.equal(rerun.result.code, 0, `trial ${trial} (kill after ${killAfterMs} ms): rerun failed\n${rerun.result.stdout}\n${rerun.result.stderr}`);
      const settled = await cluster.distributeJson();
      for (const node of settled.report.nodes) assert.equal(node.status, 'unchanged', `trial ${trial}: ${node.name} still changes after the rerun`);
    }

    const ledger = JSON.parse(fs.readFileSync(path.join(cluster.stateDir, 'ledger.json'), 'utf8')) as { issued: { ca: string; serialNumber: string }[] };
    const serials = ledger.issued.map((entry) => `${entry.ca}/${entry.serialNumber}`);
    assert.equal(new Set(serials).size, serials.length, 'a CA issued a serial twice');
    for (const node of cluster.nodes) {
      for (const item of itemsForNode(cluster.inventory, node.spec)) {
        if (item.type !== 'leaf') continue;
        const certificate = new crypto.X509Certificate(fs.readFileSync(cluster.file(node.spec.name, item.certificate.path)));
        const key = crypto.createPrivateKey(fs.readFileSync(cluster.file(node.spec.name, item.privateKey.path)));
        assert.ok(certificate.checkPrivateKey(key), `${node.spec.name} ${item.name}: key does not match certificate`);
        const serial = certificate.serialNumber.toLowerCase().replace(/^0+/, '');
        assert.ok(serials.includes(`${item.parent}/${serial}`), `${node.spec.name} ${item.name}: serial ${serial} is not in the ledger`);
      }
    }
    assert.ok(outcomes.some((outcome) => outcome.endsWith('SIGKILL')), `no trial killed the controller: ${outcomes.join('; ')}`);
  });
});
