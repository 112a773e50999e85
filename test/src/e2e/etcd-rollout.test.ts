/**
 * Replacing every etcd certificate under load: a client writes and reads back a key every 50 ms
 * through etcd's HTTP gateway with the apiserver's etcd client certificate while distribute
 * reissues the server and peer certificates of all three members. The members restart one at a
 * time behind their health gates, so quorum is kept and no acknowledged write is lost.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { EtcdWriter, type EtcdClientCredentials } from '../harness/etcd-writer';
import { LocalCluster, which } from '../harness/local-cluster';

const SUBNET = '127.0.37';
const MEMBERS = ['11', '12', '13'].map((host) => `${SUBNET}.${host}`);

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
    const serialsBefore = ['etcd-1', 'etcd-2', 'etcd-3'].map((name) => fs.readFileSync(cluster.file(name, '/etc/kubernetes/pki/etcd/server.crt'), 'utf8'));

    // Adding a hostname to every member changes the SANs of every server and peer certificate.
    fs.writeFileSync(cluster.inventoryFile, inventory(true));
    const writer = new EtcdWriter(MEMBERS, () => credentials, '/rollout');
    writer.start();
    const rollout = await cluster.distributeJson();
    await writer.stop();

    assert.equal(rollout.result.code, 0, `${rollout.result.stdout}\n${rollout.result.stderr}`);
    for (const name of ['etcd-1', 'etcd-2', 'etcd-3']) {
      const node = rollout.report.nodes.find((candidate) => candidate.name === name);
      assert.equal(node?.status, 'changed', `${name}: ${node?.error ?? ''}`);
      assert.deepEqual(node?.restartedServices, ['etcd']);
    }
    const serialsAfter = ['etcd-1', 'etcd-2', 'etcd-3'].map((name) => fs.readFileSync(cluster.file(name, '/etc/kubernetes/pki/etcd/server.crt'), 'utf8'));
    serialsAfter.forEach((pem, index) => assert.notEqual(pem, serialsBefore[index], `etcd-${index + 1} kept its old certificate`));

    assert.ok(writer.acknowledged.length > 20, `only ${writer.acknowledged.length} writes went through during the rollout`);
    assert.deepEqual(writer.failures, [], `${writer.failures.length} writes found no member with quorum`);
    assert.deepEqual(await writer.lost(), [], 'acknowledged writes were lost');
  });
});
