/**
 * `controller ca rotate` on a real three-member etcd under continuous writes. The etcd CA of a
 * kubeadm-layout cluster goes through every phase, then rotates again and is rolled back from
 * update-servers, then a third rotation's prepare is killed halfway and resumed. A single-ca
 * cluster rotates its one cluster CA, which etcd shares. After every phase each member responds,
 * no write has failed and every acknowledged write reads back.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { itemsForNode, type NodeItem } from '@kubetrust/shared/dist/catalogue';
import { splitPem } from '@kubetrust/shared/dist/pki';
import { EtcdGatewayClient } from '../harness/etcd-gateway';
import { EtcdWriter, type EtcdClientCredentials } from '../harness/etcd-writer';
import { CONTROLLER_CLI, LocalCluster, runController, which } from '../harness/local-cluster';

const SUBNET = '127.0.39';

function inventory(name: string, hostBase: number, pki: string): string {
  const address = (offset: number): string => `${SUBNET}.${hostBase + offset}`;
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: ${name}}
spec:
  apiServer: {endpoint: "https://${address(0)}:6443"}
  pki: {keyAlgorithm: ECDSA-P256${pki}}
  nodes:
    - {name: etcd-1, addresses: [${address(1)}], roles: [etcd]}
    - {name: etcd-2, addresses: [${address(2)}], roles: [etcd]}
    - {name: etcd-3, addresses: [${address(3)}], roles: [etcd]}
    - {name: master-1, addresses: [${address(4)}], roles: [master]}
    - {name: worker-1, addresses: [${address(5)}], roles: [worker]}
`;
}

interface RotateJson {
  ca: string;
  phase: string;
  complete: boolean;
  state: { state: string; oldSerial: string; newSerial: string } | null;
  next: string | null;
  steps: { state: string; lagging: { node: string }[]; rollout: { nodes: { name: string; status: string; error?: string }[] } }[];
}

interface StatusJson {
  rotation: { ca: string; state: string; oldSerial: string; newSerial: string } | null;
  lagging: { node: string; items: { name: string }[]; error?: string }[];
  next: string | null;
}

class RotationUnderLoad {
  readonly members: string[];
  writer: EtcdWriter | undefined;

  constructor(
    readonly cluster: LocalCluster,
    readonly ca: string,
  ) {
    this.members = ['etcd-1', 'etcd-2', 'etcd-3'].map((name) => cluster.node(name).spec.addresses[0]!);
  }

  item(node: string, name: string): NodeItem {
    const found = itemsForNode(this.cluster.inventory, this.cluster.node(node).spec).find((candidate) => candidate.name === name);
    assert.ok(found !== undefined, `${node} has no ${name}`);
    return found;
  }

  path(node: string, name: string, part: 'certificate' | 'privateKey' | 'file' = 'file'): string {
    const item = this.item(node, name);
    if (item.type !== 'leaf') return this.cluster.file(node, item.file.path);
    return this.cluster.file(node, part === 'privateKey' ? item.privateKey.path : item.certificate.path);
  }

  /** Reads the apiserver's etcd client files on master-1, again for every request. */
  credentials(): EtcdClientCredentials {
    return {
      ca: fs.readFileSync(this.path('master-1', 'etcd-ca.crt')),
      cert: fs.readFileSync(this.path('master-1', 'apiserver-etcd-client', 'certificate')),
      key: fs.readFileSync(this.path('master-1', 'apiserver-etcd-client', 'privateKey')),
    };
  }

  startWriting(prefix: string): void {
    this.writer = new EtcdWriter(this.members, () => this.credentials(), prefix);
    this.writer.start();
  }

  async rotate(phase: string, extra: readonly string[] = []): Promise<{ code: number; json: RotateJson | undefined; stdout: string; stderr: string }> {
    const result = await runController(['ca', 'rotate', '--inventory', this.cluster.inventoryFile, '--state-dir', this.cluster.stateDir, '--ca', this.ca, '--phase', phase, '--output', 'json', ...extra]);
    let json: RotateJson | undefined;
    try {
      json = JSON.parse(result.stdout) as RotateJson;
    } catch {
      json = undefined;
    }
    return { code: result.code, json, stdout: result.stdout, stderr: result.stderr };
  }

  /** Runs a phase that must complete, then checks that every member responds and the writer lost nothing. */
  async phase(phase: string): Promise<RotateJson> {
    const run = await this.rotate(phase);
    assert.equal(run.code, 0, `${phase}: exit ${run.code}\n${run.stdout}\n${run.stderr}`);
    assert.ok(run.json?.complete, `${phase} did not complete:\n${run.stdout}`);
    for (const step of run.json.steps) {
      for (const node of step.rollout.nodes) assert.ok(node.status === 'changed' || node.status === 'unchanged', `${phase}: ${node.name} ${node.status} ${node.error ?? ''}`);
    }
    await this.checkHealthy(phase);
    return run.json;
  }

  /** Runs `controller validate --live`, which must find every node consistent in the middle of a rotation. */
  async validateLive(after: string): Promise<void> {
    const result = await runController(['validate', '--inventory', this.cluster.inventoryFile, '--state-dir', this.cluster.stateDir, '--live']);
    assert.equal(result.code, 0, `validate --live after ${after}:\n${result.stdout}\n${result.stderr}`);
  }

  async status(): Promise<StatusJson> {
    const result = await runController(['ca', 'status', '--inventory', this.cluster.inventoryFile, '--state-dir', this.cluster.stateDir, '--output', 'json']);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout) as StatusJson;
  }

  async checkHealthy(after: string): Promise<void> {
    const client = new EtcdGatewayClient(this.members, this.credentials());
    for (const member of this.members) {
      const status = await client.post(member, '/v3/maintenance/status', {}).catch((error: Error) => error);
      assert.ok(!(status instanceof Error), `after ${after}: member ${member} does not respond: ${String(status)}`);
    }
    const list = await client.post(this.members[0]!, '/v3/cluster/member/list', {});
    assert.equal((list.members as unknown[]).length, 3, `after ${after}: ${JSON.stringify(list)}`);
    assert.deepEqual(this.writer?.failures ?? [], [], `after ${after}: writes found no member that took them`);
  }

  async stopWriting(): Promise<void> {
    const writer = this.writer;
    assert.ok(writer !== undefined);
    await writer.stop();
    assert.ok(writer.acknowledged.length > 20, `only ${writer.acknowledged.length} writes went through`);
    assert.deepEqual(writer.failures, [], 'writes found no member that took them');
    assert.deepEqual(await writer.lost(), [], 'acknowledged writes were lost');
  }

  /** Serial numbers of the CA certificates in a trust file on a node. */
  trustSerials(node: string, item: string): string[] {
    return splitPem(fs.readFileSync(this.path(node, item)), 'CERTIFICATE').map((pem) => serialOf(new crypto.X509Certificate(pem)));
  }

  /** Reads a CA certificate from the state directory's pki folder, such as the successor during a rotation. */
  stateCa(file: string): crypto.X509Certificate {
    return new crypto.X509Certificate(fs.readFileSync(path.join(this.cluster.stateDir, 'pki', file)));
  }

  issuedBy(node: string, item: string, ca: crypto.X509Certificate): boolean {
    const certificate = new crypto.X509Certificate(fs.readFileSync(this.path(node, item, 'certificate')));
    return certificate.checkIssued(ca) && certificate.verify(ca.publicKey);
  }
}

function serialOf(certificate: crypto.X509Certificate): string {
  return certificate.serialNumber.toLowerCase().replace(/^0+/, '');
}

const ETCD_TRUST = ['etcd-1', 'etcd-2', 'etcd-3', 'master-1'];
const ETCD_SERVING = ['etcd-server', 'etcd-peer'];

/** Starts a distributed etcd cluster before the tests of a describe block and destroys it after them. */
function rotationCluster(name: string, hostBase: number, pki: string, ca: string): { current: () => RotationUnderLoad } {
  let run: RotationUnderLoad | undefined;
  before(async () => {
    assert.ok(which('etcd'), 'etcd is not installed: `.ci/run` installs the Debian package etcd-server');
    const cluster = await LocalCluster.start(inventory(name, hostBase, pki), { etcd: true, prefix: `kubetrust-${name}-` });
    run = new RotationUnderLoad(cluster, ca);
    const { result } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
  });
  after(async () => {
    await run?.writer?.stop();
    await run?.cluster.destroy();
  });
  return {
    current: () => {
      assert.ok(run !== undefined, 'the cluster did not start');
      return run;
    },
  };
}

describe('etcd CA rotation under continuous writes', function () {
  this.timeout(900_000);
  const setup = rotationCluster('ca-rotation', 10, '', 'etcd-ca');
  let run: RotationUnderLoad;
  let cluster: LocalCluster;

  beforeEach(() => {
    run = setup.current();
    cluster = run.cluster;
  });

  it('rotates through every phase under load', async () => {
    const oldCa = run.stateCa('etcd-ca.crt');
    run.startWriting('/rotation');

    const prepared = await run.phase('prepare');
    assert.equal(prepared.state?.state, 'prepared');
    assert.equal(prepared.next, 'update-clients');
    const newCa = run.stateCa('etcd-ca-next.crt');
    assert.equal(prepared.state?.newSerial, serialOf(newCa));
    for (const node of ETCD_TRUST) assert.deepEqual(run.trustSerials(node, 'etcd-ca.crt'), [serialOf(oldCa), serialOf(newCa)], `${node} trusts both after prepare`);
    for (const member of ['etcd-1', 'etcd-2', 'etcd-3']) assert.ok(run.issuedBy(member, 'etcd-server', oldCa), `${member}: server certificate moved before update-servers`);

    await run.validateLive('prepare');

    await run.phase('update-clients');
    await run.validateLive('update-clients');
    assert.ok(run.issuedBy('master-1', 'apiserver-etcd-client', newCa), 'apiserver-etcd-client is not from the new CA');
    for (const member of ['etcd-1', 'etcd-2', 'etcd-3']) {
      assert.ok(run.issuedBy(member, 'etcd-healthcheck-client', newCa), `${member}: health-check client is not from the new CA`);
      assert.ok(run.issuedBy(member, 'etcd-server', oldCa), `${member}: server certificate moved with the clients`);
    }

    await run.phase('update-servers');
    for (const member of ['etcd-1', 'etcd-2', 'etcd-3']) {
      for (const item of ETCD_SERVING) assert.ok(run.issuedBy(member, item, newCa), `${member}: ${item} is not from the new CA`);
    }

    const finished = await run.phase('finish');
    assert.equal(finished.state, null);
    assert.equal(finished.next, null);
    for (const node of ETCD_TRUST) assert.deepEqual(run.trustSerials(node, 'etcd-ca.crt'), [serialOf(newCa)], `${node} still trusts the old CA after finish`);
    assert.equal(serialOf(run.stateCa('etcd-ca.crt')), serialOf(newCa), 'the state directory does not hold the new CA');
    const stateKey = crypto.createPrivateKey(fs.readFileSync(path.join(cluster.stateDir, 'pki', 'etcd-ca.key')));
    assert.ok(newCa.checkPrivateKey(stateKey), 'the CA key in the state directory is not the new one');
    assert.ok(!fs.existsSync(path.join(cluster.stateDir, 'pki', 'etcd-ca-next.key')), 'the new CA key was left under its rotation name');
    assert.equal((await run.status()).rotation, null);

    await run.stopWriting();
  });

  it('rolls back from update-servers', async () => {
    const before = run.stateCa('etcd-ca.crt');
    run.startWriting('/rollback');
    await run.phase('prepare');
    const abandoned = run.stateCa('etcd-ca-next.crt');
    await run.phase('update-clients');
    await run.phase('update-servers');
    assert.ok(run.issuedBy('etcd-1', 'etcd-server', abandoned), 'update-servers did not move etcd-1 to the new CA');

    const back = await run.phase('rollback');
    assert.equal(back.state, null);
    assert.deepEqual(back.steps.map((step) => step.state), ['rolling-back', 'rolled-back']);
    for (const node of ETCD_TRUST) assert.deepEqual(run.trustSerials(node, 'etcd-ca.crt'), [serialOf(before)], `${node} does not trust the old CA alone`);
    for (const member of ['etcd-1', 'etcd-2', 'etcd-3']) {
      for (const item of [...ETCD_SERVING, 'etcd-healthcheck-client']) assert.ok(run.issuedBy(member, item, before), `${member}: ${item} is not back on the old CA`);
    }
    assert.ok(run.issuedBy('master-1', 'apiserver-etcd-client', before), 'apiserver-etcd-client is not back on the old CA');
    assert.ok(!fs.existsSync(path.join(cluster.stateDir, 'pki', 'etcd-ca-next.crt')), 'the abandoned CA is still in the state directory');
    await run.stopWriting();
  });

  it('resumes a killed prepare', async () => {
    run.startWriting('/killed');
    const child = spawn(process.execPath, [CONTROLLER_CLI, 'ca', 'rotate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--ca', 'etcd-ca', '--phase', 'prepare'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    const outcome = await new Promise<string>((resolve) => {
      child.stderr.on('data', (chunk: Buffer) => {
        log += chunk.toString();
        // The first member is done and the next one is on its way: the phase is half pushed.
        if (log.includes('node finished') && child.exitCode === null) child.kill('SIGKILL');
      });
      child.on('exit', (code, signal) => resolve(signal ?? `exit ${String(code)}`));
    });
    assert.equal(outcome, 'SIGKILL', `the controller ended before it could be killed:\n${log}`);

    const halfway = await run.status();
    assert.equal(halfway.rotation?.state, 'prepared');
    assert.ok(halfway.lagging.length > 0, 'no node lags after the kill, so nothing was interrupted');
    assert.equal(halfway.next, 'prepare');

    const early = await run.rotate('update-clients');
    assert.equal(early.code, 2, `update-clients ran while nodes lag:\n${early.stdout}\n${early.stderr}`);
    for (const entry of halfway.lagging) assert.match(early.stderr, new RegExp(entry.node), `the refusal does not name ${entry.node}`);
    assert.equal((await run.status()).rotation?.state, 'prepared', 'the rejected phase changed the state');

    await run.phase('prepare');
    const resumed = await run.status();
    assert.deepEqual(resumed.lagging, []);
    assert.equal(resumed.next, 'update-clients');
    await run.phase('rollback');
    await run.stopWriting();
  });
});

describe('single-ca cluster CA rotation under continuous writes', function () {
  this.timeout(900_000);
  const setup = rotationCluster('ca-rotation-single', 40, ', layout: single-ca', 'cluster-ca');
  let run: RotationUnderLoad;
  let cluster: LocalCluster;

  beforeEach(() => {
    run = setup.current();
    cluster = run.cluster;
  });

  it('rejects a shared etcd CA', async () => {
    const rejected = await runController(['ca', 'rotate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--ca', 'etcd-ca', '--phase', 'prepare']);
    assert.equal(rejected.code, 2, rejected.stderr);
    assert.match(rejected.stderr, /--ca cluster-ca/);
  });

  it('rotates the shared CA under load', async () => {
    const oldCa = run.stateCa('cluster-ca.crt');
    run.startWriting('/single');
    await run.phase('prepare');
    const newCa = run.stateCa('cluster-ca-next.crt');
    for (const node of ETCD_TRUST) assert.deepEqual(run.trustSerials(node, 'etcd-ca.crt'), [serialOf(oldCa), serialOf(newCa)], `${node}: etcd trust file`);
    // The controller-manager signs with one CA: the old one until the clients move.
    const signer = new crypto.X509Certificate(fs.readFileSync(run.path('master-1', 'cluster-ca-signer.crt')));
    assert.equal(serialOf(signer), serialOf(oldCa));
    const kubeconfig = fs.readFileSync(run.path('worker-1', 'kubelet.conf'), 'utf8');
    const embedded = /certificate-authority-data: (\S+)/.exec(kubeconfig)?.[1];
    assert.equal(splitPem(Buffer.from(embedded ?? '', 'base64'), 'CERTIFICATE').length, 2, 'the kubelet kubeconfig does not trust both CAs');

    await run.phase('update-clients');
    assert.equal(serialOf(new crypto.X509Certificate(fs.readFileSync(run.path('master-1', 'cluster-ca-signer.crt')))), serialOf(newCa), 'the signer did not move with the clients');
    const key = crypto.createPrivateKey(fs.readFileSync(run.path('master-1', 'cluster-ca.key')));
    assert.ok(newCa.checkPrivateKey(key), 'the controller-manager key does not match its signer certificate');
    await run.phase('update-servers');
    await run.phase('finish');
    for (const node of ['master-1', 'worker-1']) assert.deepEqual(run.trustSerials(node, 'cluster-ca.crt'), [serialOf(newCa)], `${node}: cluster CA file`);
    for (const member of ['etcd-1', 'etcd-2', 'etcd-3']) assert.ok(run.issuedBy(member, 'etcd-peer', newCa), `${member}: peer certificate`);
    await run.stopWriting();
  });
});
