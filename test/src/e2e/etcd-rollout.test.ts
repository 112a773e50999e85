/**
 * Replacing every etcd certificate under load: a client writes and reads back a key every 50 ms
 * through etcd's HTTP gateway with the apiserver's etcd client certificate while distribute
 * reissues the server and peer certificates of all three members. The members restart one at a
 * time behind their health gates, so quorum is kept and no acknowledged write is lost.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as https from 'node:https';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
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

interface Client {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** POSTs a JSON body to etcd's v3 gateway on one member; resolves with the parsed reply or rejects. */
function gateway(member: string, route: string, body: unknown, client: Client): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const request = https.request(
      { host: member, port: 2379, path: route, method: 'POST', ca: client.ca, cert: client.cert, key: client.key, timeout: 1000, headers: { 'content-type': 'application/json' } },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => {
          if (response.statusCode !== 200) reject(new Error(`HTTP ${response.statusCode}: ${text}`));
          else resolve(JSON.parse(text) as Record<string, unknown>);
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}

const b64 = (text: string): string => Buffer.from(text).toString('base64');

/** Writes through the first member that accepts the write, trying each in turn; returns that member or undefined. */
async function write(key: string, value: string, client: Client): Promise<string | undefined> {
  for (const member of MEMBERS) {
    try {
      await gateway(member, '/v3/kv/put', { key: b64(key), value: b64(value) }, client);
      return member;
    } catch {
      // try the next member, as an etcd client with several endpoints does
    }
  }
  return undefined;
}

async function read(key: string, client: Client): Promise<string | undefined> {
  for (const member of MEMBERS) {
    try {
      const reply = await gateway(member, '/v3/kv/range', { key: b64(key) }, client);
      const kvs = reply.kvs as { value: string }[] | undefined;
      return kvs?.[0] === undefined ? '' : Buffer.from(kvs[0].value, 'base64').toString();
    } catch {
      // try the next member
    }
  }
  return undefined;
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
    const credentials: Client = {
      ca: fs.readFileSync(cluster.file('master-1', trust.file.path)),
      cert: fs.readFileSync(cluster.file('master-1', client.certificate.path)),
      key: fs.readFileSync(cluster.file('master-1', client.privateKey.path)),
    };
    const serialsBefore = ['etcd-1', 'etcd-2', 'etcd-3'].map((name) => fs.readFileSync(cluster.file(name, '/etc/kubernetes/pki/etcd/server.crt'), 'utf8'));

    // Adding a hostname to every member changes the SANs of every server and peer certificate.
    fs.writeFileSync(cluster.inventoryFile, inventory(true));
    let stop = false;
    const acknowledged: string[] = [];
    const failures: number[] = [];
    const writer = (async () => {
      for (let index = 0; !stop && index < 20_000; index++) {
        const key = `/rollout/${index}`;
        const startedAt = Date.now();
        if ((await write(key, String(index), credentials)) !== undefined) acknowledged.push(key);
        else failures.push(startedAt);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const rollout = await cluster.distributeJson();
    stop = true;
    await writer;

    assert.equal(rollout.result.code, 0, `${rollout.result.stdout}\n${rollout.result.stderr}`);
    for (const name of ['etcd-1', 'etcd-2', 'etcd-3']) {
      const node = rollout.report.nodes.find((candidate) => candidate.name === name);
      assert.equal(node?.status, 'changed', `${name}: ${node?.error ?? ''}`);
      assert.deepEqual(node?.restartedServices, ['etcd']);
    }
    const serialsAfter = ['etcd-1', 'etcd-2', 'etcd-3'].map((name) => fs.readFileSync(cluster.file(name, '/etc/kubernetes/pki/etcd/server.crt'), 'utf8'));
    serialsAfter.forEach((pem, index) => assert.notEqual(pem, serialsBefore[index], `etcd-${index + 1} kept its old certificate`));

    assert.ok(acknowledged.length > 20, `only ${acknowledged.length} writes went through during the rollout`);
    assert.deepEqual(failures, [], `${failures.length} writes found no member with quorum`);
    for (const key of acknowledged) assert.equal(await read(key, credentials), key.split('/').pop(), `write ${key} was lost`);
  });
});
