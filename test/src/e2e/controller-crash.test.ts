/**
 * Killing the controller mid-rollout: `controller distribute` changes every node and is killed
 * with SIGKILL a seeded random delay after a seeded random step of its rollout, and then run again. The rerun must converge, a
 * third run must find nothing to do, every installed certificate must match its key and appear in
 * the ledger, and no CA may have issued a serial twice. The rerun must also keep every certificate
 * that was installed and matched the plan when the controller died: same serial, and no second
 * ledger entry for its node and item.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { CONTROLLER_CLI, LocalCluster } from '../harness/local-cluster';
import { seededRandom } from '../harness/seeded-random';

const SUBNET = '127.0.38';
const TRIALS = 12;
/** Seed of the generator that draws every trial's kill plan. A failure names the trial's plan. */
const SEED = 2000;

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

interface LedgerEntry {
  readonly node: string;
  readonly name: string;
  readonly ca: string;
  readonly serialNumber: string;
}

function readLedger(cluster: LocalCluster): LedgerEntry[] {
  return (JSON.parse(fs.readFileSync(path.join(cluster.stateDir, 'ledger.json'), 'utf8')) as { issued: LedgerEntry[] }).issued;
}

/** Serial number as the ledger writes it: lowercase hex without leading zeros. */
function serialOf(certificate: crypto.X509Certificate): string {
  return certificate.serialNumber.toLowerCase().replace(/^0+/, '');
}

/** A certificate that a node holds, from its leaf files or its kubeconfig. */
interface InstalledCertificate {
  readonly node: string;
  readonly item: string;
  readonly ca: string;
  readonly certificate: crypto.X509Certificate;
  readonly matchesKey: boolean;
}

/** Reads the certificate of every leaf and kubeconfig that the agents hold below their roots, by `node/item`. A missing file is left out. */
function installedCertificates(cluster: LocalCluster): Map<string, InstalledCertificate> {
  const found = new Map<string, InstalledCertificate>();
  for (const node of cluster.nodes) {
    for (const item of itemsForNode(cluster.inventory, node.spec)) {
      if (item.type === 'static') continue;
      let certificatePem: string;
      let keyPem: string | undefined;
      if (item.type === 'leaf') {
        const certificateFile = cluster.file(node.spec.name, item.certificate.path);
        if (!fs.existsSync(certificateFile)) continue;
        certificatePem = fs.readFileSync(certificateFile, 'utf8');
        keyPem = fs.readFileSync(cluster.file(node.spec.name, item.privateKey.path), 'utf8');
      } else {
        const kubeconfigFile = cluster.file(node.spec.name, item.file.path);
        if (!fs.existsSync(kubeconfigFile)) continue;
        const kubeconfig = parseKubeconfig(fs.readFileSync(kubeconfigFile, 'utf8'));
        certificatePem = kubeconfig.clientCertificatePem;
        keyPem = kubeconfig.clientKeyPem;
      }
      const certificate = new crypto.X509Certificate(certificatePem);
      const matchesKey = keyPem !== undefined && certificate.checkPrivateKey(crypto.createPrivateKey(keyPem));
      found.set(`${node.spec.name}/${item.name}`, { node: node.spec.name, item: item.name, ca: item.parent, certificate, matchesKey });
    }
  }
  return found;
}

/** When to kill `distribute`: a delay after the nth step of its rollout. */
interface KillPlan {
  readonly step: number;
  readonly delayMs: number;
}

/** Log lines of `distribute` that mark a step of the rollout: a certificate signed, or a node done. */
const ROLLOUT_STEP = /issued certificate|node finished/;
/** Steps of each trial's rollout: one certificate issued and one node finished for each of the five nodes. */
const ROLLOUT_STEPS = 10;

/** Runs `controller distribute`, kills it with SIGKILL at the moment that `kill` gives, and returns the signal or the exit code. */
function distributeAndKill(cluster: LocalCluster, kill: KillPlan): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CONTROLLER_CLI, 'distribute', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--max-parallel', '2'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let steps = 0;
    let timer: NodeJS.Timeout | undefined;
    const lines = readline.createInterface({ input: child.stderr });
    lines.on('line', (line) => {
      if (!ROLLOUT_STEP.test(line)) return;
      steps++;
      if (steps === kill.step) timer = setTimeout(() => child.kill('SIGKILL'), kill.delayMs);
    });
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
    let installedByKilledRun = 0;
    let interruptedRollouts = 0;
    const random = seededRandom(SEED);
    for (let trial = 1; trial <= TRIALS; trial++) {
      // Every trial changes every node: new apiserver SANs on the masters, missing files elsewhere.
      const extraSan = `api-${trial}.crash.example`;
      fs.writeFileSync(cluster.inventoryFile, inventory(extraSan));
      for (const name of ['etcd-1', 'worker-1', 'worker-2']) {
        const first = itemsForNode(cluster.inventory, cluster.node(name).spec).find((item) => item.type === 'leaf');
        assert.ok(first?.type === 'leaf');
        fs.rmSync(cluster.file(name, first.certificate.path), { force: true });
      }
      const beforeTrial = installedCertificates(cluster);
      const kill: KillPlan = { step: 1 + Math.floor(random() * ROLLOUT_STEPS), delayMs: Math.floor(random() * 40) };
      const context = `trial ${trial} (kill ${JSON.stringify(kill)})`;
      const outcome = await distributeAndKill(cluster, kill);
      outcomes.push(`${JSON.stringify(kill)}: ${outcome}`);

      // Right after the kill, every certificate that matches its key and the new plan must survive the
      // rerun unchanged. The plan differs from the last one only in the apiserver SAN and in the
      // certificates that the trial deleted.
      const afterKill = installedCertificates(cluster);
      const ledgerAfterKill = new Set(readLedger(cluster).map((entry) => `${entry.ca}/${entry.serialNumber}`));
      const upToDate = [...afterKill.entries()].filter(([, held]) => held.matchesKey && (held.item !== 'apiserver' || (held.certificate.subjectAltName ?? '').split(', ').includes(`DNS:${extraSan}`)));
      for (const [key, held] of upToDate) {
        const earlier = beforeTrial.get(key);
        if (outcome === 'SIGKILL' && (earlier === undefined || serialOf(earlier.certificate) !== serialOf(held.certificate))) installedByKilledRun++;
      }

      // A run killed during its rollout leaves rollout.json, and the rerun reports that rollout.
      const rolloutFile = path.join(cluster.stateDir, 'rollout.json');
      const leftRecord = fs.existsSync(rolloutFile) ? (JSON.parse(fs.readFileSync(rolloutFile, 'utf8')) as { startedAt: string; finished: Record<string, string>; total: number }) : undefined;
      if (outcome !== 'SIGKILL') assert.equal(leftRecord, undefined, `${context}: a run that ended left rollout.json`);
      if (leftRecord !== undefined) interruptedRollouts++;
      const rerun = await cluster.distributeJson();
      assert.equal(rerun.result.code, 0, `${context}: rerun failed\n${rerun.result.stdout}\n${rerun.result.stderr}`);
      assert.deepEqual(
        (rerun.report as { interrupted?: unknown }).interrupted,
        leftRecord === undefined ? undefined : { startedAt: leftRecord.startedAt, finished: Object.keys(leftRecord.finished).length, total: leftRecord.total },
        `${context}: the rerun reports the interrupted rollout wrongly`,
      );
      assert.ok(!fs.existsSync(rolloutFile), `${context}: the rerun left rollout.json`);
      const afterRerun = installedCertificates(cluster);
      const ledgerAfterRerun = readLedger(cluster);
      const addedByRerun = ledgerAfterRerun.filter((entry) => !ledgerAfterKill.has(`${entry.ca}/${entry.serialNumber}`));
      for (const [key, held] of upToDate) {
        const serial = serialOf(held.certificate);
        const current = afterRerun.get(key);
        assert.ok(current !== undefined, `${context}: ${key} is missing after the rerun`);
        assert.equal(serialOf(current.certificate), serial, `${context}: the rerun reissued ${key}, which was installed and up to date`);
        const added = addedByRerun.filter((entry) => entry.node === held.node && entry.name === held.item);
        assert.deepEqual(added, [], `${context}: the rerun added a ledger entry for ${key}, which was installed and up to date`);
        const recorded = ledgerAfterRerun.filter((entry) => entry.ca === held.ca && entry.serialNumber === serial);
        assert.equal(recorded.length, 1, `${context}: ${key} serial ${serial} has ${recorded.length} ledger entries`);
      }

      const settled = await cluster.distributeJson();
      for (const node of settled.report.nodes) assert.equal(node.status, 'unchanged', `trial ${trial}: ${node.name} still changes after the rerun`);
    }

    const serials = readLedger(cluster).map((entry) => `${entry.ca}/${entry.serialNumber}`);
    assert.equal(new Set(serials).size, serials.length, 'a CA issued a serial twice');
    for (const node of cluster.nodes) {
      for (const item of itemsForNode(cluster.inventory, node.spec)) {
        if (item.type !== 'leaf') continue;
        const certificate = new crypto.X509Certificate(fs.readFileSync(cluster.file(node.spec.name, item.certificate.path)));
        const key = crypto.createPrivateKey(fs.readFileSync(cluster.file(node.spec.name, item.privateKey.path)));
        assert.ok(certificate.checkPrivateKey(key), `${node.spec.name} ${item.name}: key does not match certificate`);
        const serial = serialOf(certificate);
        assert.ok(serials.includes(`${item.parent}/${serial}`), `${node.spec.name} ${item.name}: serial ${serial} is not in the ledger`);
      }
    }
    assert.ok(outcomes.some((outcome) => outcome.endsWith('SIGKILL')), `no trial killed the controller: ${outcomes.join('; ')}`);
    assert.ok(installedByKilledRun > 0, `no killed run had installed a certificate before it died: ${outcomes.join('; ')}`);
    assert.ok(interruptedRollouts > 0, `no killed run left rollout.json: ${outcomes.join('; ')}`);
  });
});
