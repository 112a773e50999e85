/**
 * Replacing the etcd serving certificates under load. While distribute reissues the server and peer
 * certificates of all three members, a client writes keys through etcd's HTTP gateway with the
 * apiserver's etcd client certificate. It reads each key back at once and pauses 50 ms before the
 * next. The members restart one at a time behind their health gates, so quorum is kept: every
 * write and read-back must succeed, no acknowledged write may be lost, and every member must be
 * healthy at the end.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { EtcdGatewayClient } from '../harness/etcd-gateway';
import { EtcdWriter, type EtcdClientCredentials } from '../harness/etcd-writer';
import { LocalCluster, which } from '../harness/local-cluster';

const SUBNET = '127.0.37';
const MEMBERS = ['11', '12', '13'].map((host) => `${SUBNET}.${host}`);
const ETCD_NODES = ['etcd-1', 'etcd-2', 'etcd-3'];
/** Certificates whose SANs name the member, so a new member hostname changes them. */
const SERVING_CERTIFICATES = ['/etc/kubernetes/pki/etcd/server.crt', '/etc/kubernetes/pki/etcd/peer.crt'];

function serialsOfServingCertificates(cluster: LocalCluster): Map<string, string> {
  const serials = new Map<string, string>();
  for (const name of ETCD_NODES) {
    for (const file of SERVING_CERTIFICATES) serials.set(`${name}:${file}`, new crypto.X509Certificate(fs.readFileSync(cluster.file(name, file))).serialNumber);
  }
  return serials;
}

function inventory(withHostnames: boolean): string {
  const hostnames = (name: string): string => (withHostnames ? `, hostnames: [${name}.rollout.example]` : '');
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: etcd-rollout}
spec:
  apiServer: {endpoint: "https://${SUBNET}.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: etcd-1, addresses: [${MEMBERS[0]}], roles: [etcd]${hostnames('etcd-1')}}
    - {name: etcd-2, addresses: [${MEMBERS[1]}], roles: [etcd]${hostnames('etcd-2')}}
    - {name: etcd-3, addresses: [${MEMBERS[2]}], roles: [etcd]${hostnames('etcd-3')}}
    - {name: master-1, addresses: [${SUBNET}.21], roles: [master]}
`;
}

describe('etcd certificate rollout under load', function () {
  this.timeout(600_000);
  let cluster: LocalCluster;

  before(async () => {
    assert.ok(which('etcd'), 'etcd is not installed: `.ci/run` installs the Debian package etcd-server');
    cluster = await LocalCluster.start(inventory(false), { etcd: true, prefix: 'kubetrust-etcd-rollout-' });
    const { result } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
  });

  after(async () => {
    await cluster?.destroy();
  });

  it('keeps quorum and every write while members restart', async () => {
    const master = cluster.node('master-1').spec;
    const client = itemsForNode(cluster.inventory, master).find((item) => item.name === 'apiserver-etcd-client');
    const trust = itemsForNode(cluster.inventory, master).find((item) => item.name === 'etcd-ca.crt');
    assert.ok(client?.type === 'leaf', 'master-1 has no apiserver-etcd-client');
    assert.ok(trust?.type === 'static', 'master-1 has no etcd CA file');
    const credentials: EtcdClientCredentials = {
      ca: fs.readFileSync(cluster.file('master-1', trust.file.path)),
      cert: fs.readFileSync(cluster.file('master-1', client.certificate.path)),
      key: fs.readFileSync(cluster.file('master-1', client.privateKey.path)),
    };
    const serialsBefore = serialsOfServingCertificates(cluster);

    // Adding a hostname to every member changes the SANs of every server and peer certificate.
    fs.writeFileSync(cluster.inventoryFile, inventory(true));
    const writer = new EtcdWriter(MEMBERS, () => credentials, '/rollout', { readBack: true });
    writer.start();
    const rollout = await cluster.distributeJson();
    await writer.stop();

    assert.equal(rollout.result.code, 0, `${rollout.result.stdout}\n${rollout.result.stderr}`);
    for (const name of ETCD_NODES) {
      const node = rollout.report.nodes.find((candidate) => candidate.name === name);
      assert.equal(node?.status, 'changed', `${name}: ${node?.error ?? ''}`);
      assert.deepEqual(node?.restartedServices, ['etcd']);
    }
    const serialsAfter = serialsOfServingCertificates(cluster);
    for (const [certificate, serial] of serialsBefore) assert.notEqual(serialsAfter.get(certificate), serial, `${certificate} kept its old serial`);

    assert.ok(writer.acknowledged.length > 20, `only ${writer.acknowledged.length} writes went through during the rollout`);
    assert.deepEqual(writer.failures, [], `${writer.failures.length} writes found no member with quorum`);
    assert.deepEqual(writer.readBackFailures, [], `${writer.readBackFailures.length} keys did not read back right after their write`);
    assert.deepEqual(await writer.lost(), [], 'acknowledged writes were lost');

    const healthClient = new EtcdGatewayClient(MEMBERS, credentials);
    for (const member of MEMBERS) {
      const health = await healthClient.health(member).catch((error: Error) => error);
      assert.ok(!(health instanceof Error), `member ${member} did not answer its health check: ${String(health)}`);
      assert.equal(health.health, 'true', `member ${member} is unhealthy after the rollout: ${JSON.stringify(health)}`);
    }
  });
});
