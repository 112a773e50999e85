/**
 * Rotating the cluster CA while every apiserver reads its client CA only when it starts, as
 * kube-apiserver releases without client-CA reload do. Three masters each run a fake API server
 * built from the files on that master, and a master's server is started again whenever its agent
 * restarts kube-apiserver. Client certificates from the old and the new CA must authenticate on
 * every master from prepare until finish, and update-clients must refuse to start while a master
 * does not hold the bundle, naming it.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { selfSignedCa, signLeaf } from '@kubetrust/controller';
import { generateKeyPair, privateKeyToPem, splitPem } from '@kubetrust/shared/dist/pki';
import { FakeApiServer } from '../harness/fake-apiserver';
import { LocalCluster, runController, type CommandResult } from '../harness/local-cluster';

const SUBNET = '127.0.39';
const MASTERS = ['cp-a', 'cp-b', 'cp-c'];
const ADDRESS: Record<string, string> = { 'cp-a': `${SUBNET}.111`, 'cp-b': `${SUBNET}.112`, 'cp-c': `${SUBNET}.113`, 'wk-a': `${SUBNET}.121`, 'etcd-a': `${SUBNET}.101` };
const PORT = 6443;

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: client-ca-rotation}
spec:
  apiServer: {endpoint: "https://${ADDRESS['cp-a']}:${PORT}"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: etcd-a, addresses: [${ADDRESS['etcd-a']}], roles: [etcd]}
    - {name: cp-a, addresses: [${ADDRESS['cp-a']}], roles: [master]}
    - {name: cp-b, addresses: [${ADDRESS['cp-b']}], roles: [master]}
    - {name: cp-c, addresses: [${ADDRESS['cp-c']}], roles: [master]}
    - {name: wk-a, addresses: [${ADDRESS['wk-a']}], roles: [worker]}
`;

interface Credentials {
  readonly cert: string;
  readonly key: string;
}

/** Issues a client certificate in the group system:masters from `ca`, like the one in an operator's admin kubeconfig. */
async function probeCredentials(caCertificatePem: string, caKeyPem: string, name: string): Promise<Credentials> {
  const pair = await generateKeyPair('ECDSA-P256');
  const ca = { certificatePem: caCertificatePem, privateKey: crypto.createPrivateKey(caKeyPem), privateKeyPem: caKeyPem };
  const cert = signLeaf(ca, { commonName: name, organizations: ['system:masters'], extKeyUsage: ['clientAuth'] }, pair.publicKey, 3600_000, new Date(), { capToCa: true });
  return { cert, key: privateKeyToPem(pair.privateKey) };
}

describe('new-CA clients get 401 until the apiserver restarts', function () {
  this.timeout(600_000);
  let cluster: LocalCluster;
  const servers = new Map<string, FakeApiServer>();
  let restartsSeen = new Map<string, number>();

  const controller = (...args: string[]): Promise<CommandResult> => runController([...args, '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir]);
  const nodeFile = (node: string, file: string): string => cluster.file(node, file);

  /** Starts a master's fake API server from the files on that master, as kube-apiserver starts from its flags. */
  async function startServer(master: string): Promise<void> {
    await servers.get(master)?.close();
    servers.set(
      master,
      await FakeApiServer.start({
        host: ADDRESS[master]!,
        port: PORT,
        servingCertificatePem: fs.readFileSync(nodeFile(master, '/etc/kubernetes/pki/apiserver.crt'), 'utf8'),
        servingKeyPem: fs.readFileSync(nodeFile(master, '/etc/kubernetes/pki/apiserver.key'), 'utf8'),
        clientCaPem: fs.readFileSync(nodeFile(master, '/etc/kubernetes/pki/ca.crt'), 'utf8'),
      }),
    );
  }

  /** Starts again each server whose agent restarted kube-apiserver since the last call. */
  async function followRestarts(): Promise<string[]> {
    const restarted: string[] = [];
    for (const master of MASTERS) {
      const count = cluster.restarts(master).filter((service) => service === 'kube-apiserver').length;
      if (count > (restartsSeen.get(master) ?? 0)) {
        restarted.push(master);
        await startServer(master);
      }
      restartsSeen.set(master, count);
    }
    return restarted;
  }

  /** GETs /api/v1/nodes on a master with a client certificate; returns the HTTP status. */
  function status(master: string, credentials: Credentials): Promise<number> {
    return new Promise((resolve, reject) => {
      https
        .get(
          { host: ADDRESS[master], port: PORT, path: '/api/v1/nodes', ca: fs.readFileSync(nodeFile(master, '/etc/kubernetes/pki/ca.crt')), cert: credentials.cert, key: credentials.key, timeout: 5_000 },
          (response) => {
            response.resume();
            response.on('end', () => resolve(response.statusCode ?? 0));
          },
        )
        .on('error', reject);
    });
  }

  async function rotate(phase: string, extra: readonly string[] = []): Promise<CommandResult> {
    return controller('ca', 'rotate', '--ca', 'cluster-ca', '--phase', phase, ...extra);
  }

  before(async () => {
    cluster = await LocalCluster.start(INVENTORY, { etcd: false, prefix: 'kubetrust-ca-rotation-apiserver-' });
    const first = await cluster.distribute();
    assert.equal(first.code, 0, first.stdout + first.stderr);
    for (const master of MASTERS) await startServer(master);
    restartsSeen = new Map(MASTERS.map((master) => [master, cluster.restarts(master).filter((service) => service === 'kube-apiserver').length]));
  });

  after(async () => {
    for (const server of servers.values()) await server.close();
    await cluster?.destroy();
  });

  it('lists phase files in order', async () => {
    const prepare = await rotate('prepare', ['--dry-run', '--output', 'json']);
    assert.equal(prepare.code, 0, prepare.stderr);
    const changes = (JSON.parse(prepare.stdout) as { changes: { node: string; items: string[] }[] }).changes;
    assert.deepEqual(changes.map((change) => change.node), ['cp-a', 'cp-b', 'cp-c', 'wk-a'], 'masters before workers, and the etcd member has no file of the cluster CA');
    for (const change of changes) assert.ok(change.items.includes('cluster-ca.crt'), `${change.node}: prepare does not bundle ca.crt`);
    const servers = JSON.parse((await rotate('update-servers', ['--dry-run', '--output', 'json'])).stdout) as { changes: { node: string; items: string[] }[]; notNow: string | null };
    assert.deepEqual(servers.changes.find((change) => change.node === 'cp-a')?.items, ['apiserver']);
    assert.match(servers.notNow ?? '', /not started; run --phase prepare first/, 'the dry run does not say that update-servers cannot start yet');
    assert.equal(fs.existsSync(path.join(cluster.stateDir, 'pki', 'cluster-ca-next.crt')), false, 'a dry run generated the new CA');

    await cluster.stopAgents(['wk-a']);
    try {
      const unreachable = await rotate('prepare', ['--dry-run']);
      assert.equal(unreachable.code, 1, `a dry run with a stopped agent exited ${unreachable.code}:\n${unreachable.stdout}`);
      assert.match(unreachable.stdout, /stop before pushing.*wk-a \(/, 'the dry run does not name the node whose agent is stopped');
    } finally {
      await cluster.startAgents(['wk-a']);
    }
  });

  it('accepts both CAs and names a lagging master', async () => {
    const stateKey = fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.key'), 'utf8');
    const oldClient = await probeCredentials(fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.crt'), 'utf8'), stateKey, 'operator-old');
    const stranger = await generateKeyPair('ECDSA-P256');
    const strangerCa = selfSignedCa('kubernetes', stranger, 3600_000, new Date());
    const strangerClient = await probeCredentials(strangerCa, privateKeyToPem(stranger.privateKey), 'operator-stranger');
    for (const master of MASTERS) assert.equal(await status(master, strangerClient), 401, `${master} accepts a client from an unknown CA, so the probe proves nothing`);

    const prepared = await rotate('prepare');
    assert.equal(prepared.code, 0, prepared.stdout + prepared.stderr);
    assert.deepEqual((await followRestarts()).sort(), MASTERS, 'prepare did not restart every apiserver after changing its client CA');
    const newClient = await probeCredentials(
      fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca-next.crt'), 'utf8'),
      fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca-next.key'), 'utf8'),
      'operator-new',
    );
    for (const master of MASTERS) {
      assert.equal(splitPem(fs.readFileSync(nodeFile(master, '/etc/kubernetes/pki/ca.crt')), 'CERTIFICATE').length, 2, `${master}: ca.crt is not a bundle`);
      assert.equal(await status(master, newClient), 200, `${master} rejects a client of the new CA after prepare`);
      assert.equal(await status(master, oldClient), 200, `${master} rejects a client of the old CA after prepare`);
    }

    // cp-b loses the bundle, as a master whose files were restored from an old backup would.
    const bundle = fs.readFileSync(nodeFile('cp-b', '/etc/kubernetes/pki/ca.crt'));
    fs.writeFileSync(nodeFile('cp-b', '/etc/kubernetes/pki/ca.crt'), splitPem(bundle, 'CERTIFICATE')[0]!);
    const rejected = await rotate('update-clients');
    assert.equal(rejected.code, 2, rejected.stdout + rejected.stderr);
    assert.match(rejected.stderr, /cp-b \(cluster-ca\.crt: content differs/);
    assert.doesNotMatch(rejected.stderr, /cp-a|cp-c/, 'the refusal names masters that hold the bundle');

    const resumed = await rotate('prepare');
    assert.equal(resumed.code, 0, resumed.stdout + resumed.stderr);
    await followRestarts();
    const clients = await rotate('update-clients');
    assert.equal(clients.code, 0, clients.stdout + clients.stderr);
    await followRestarts();
    const admin = fs.readFileSync(nodeFile('cp-a', '/etc/kubernetes/admin.conf'), 'utf8');
    const adminClient = {
      cert: Buffer.from(/client-certificate-data: (\S+)/.exec(admin)![1]!, 'base64').toString(),
      key: Buffer.from(/client-key-data: (\S+)/.exec(admin)![1]!, 'base64').toString(),
    };
    for (const master of MASTERS) {
      assert.equal(await status(master, adminClient), 200, `${master} rejects the admin kubeconfig issued by the new CA`);
      assert.equal(await status(master, oldClient), 200, `${master} rejects a client of the old CA during update-clients`);
    }
  });

  it('drops the old CA at finish', async () => {
    const oldCa = fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.crt'), 'utf8');
    const oldClient = await probeCredentials(oldCa, fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.key'), 'utf8'), 'operator-old');
    for (const phase of ['update-servers', 'finish']) {
      const result = await rotate(phase);
      assert.equal(result.code, 0, `${phase}: ${result.stdout}${result.stderr}`);
      await followRestarts();
    }
    const newCa = fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.crt'), 'utf8');
    const newClient = await probeCredentials(newCa, fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.key'), 'utf8'), 'operator-new');
    for (const master of MASTERS) {
      assert.equal(await status(master, newClient), 200, `${master} rejects a client of the new CA after finish`);
      assert.equal(await status(master, oldClient), 401, `${master} still accepts a client of the old CA after finish`);
    }
  });
});
