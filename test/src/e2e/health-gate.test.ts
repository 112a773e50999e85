/**
 * End to end: the controller's default health check gates a master. Each master's agent.yaml
 * restarts kube-apiserver through readyz-service.js, a stand-in that serves /readyz with the
 * installed apiserver certificate. The entry sets no health check, so the agent runs the default
 * check that the controller sends: /readyz on the master's address with the apiserver's kubelet
 * client certificate. A certificate that makes /readyz fail rolls the master back.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { LocalCluster, runNode, smallInventory } from '../harness/local-cluster';
import type { ReadyzSpec } from '../harness/readyz-service';

const SUBNET = '127.0.53';
const READYZ_SERVICE = path.join(__dirname, '..', 'harness', 'readyz-service.js');
const UNHEALTHY_NAME = 'unhealthy.gate.example';
const MASTERS = ['master-1', 'master-2'];

/** GETs /readyz with the master's own kubelet client certificate and returns the status code. */
function readyz(cluster: LocalCluster, master: string): Promise<number> {
  const address = cluster.node(master).spec.addresses[0]!;
  const read = (file: string): Buffer => fs.readFileSync(cluster.file(master, file));
  return new Promise((resolve, reject) => {
    const request = https.get(
      `https://${address}:6443/readyz`,
      { ca: read('/etc/kubernetes/pki/ca.crt'), cert: read('/etc/kubernetes/pki/apiserver-kubelet-client.crt'), key: read('/etc/kubernetes/pki/apiserver-kubelet-client.key') },
      (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      },
    );
    request.on('error', reject);
  });
}

describe('default health gate of kube-apiserver', function () {
  this.timeout(300_000);
  let workdir: string;
  let cluster: LocalCluster;
  const specFiles: string[] = [];

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-gate-'));
    const inventoryFile = path.join(workdir, 'cluster.yaml');
    fs.writeFileSync(inventoryFile, smallInventory('gate', SUBNET, { masters: MASTERS.length }));
    cluster = await LocalCluster.create({ inventoryFile, workdir, etcd: false });
    const init = await cluster.init();
    assert.equal(init.code, 0, init.stderr);
    await cluster.enrollAll();
    for (const name of MASTERS) {
      const node = cluster.node(name);
      const spec: ReadyzSpec = {
        address: node.spec.addresses[0]!,
        port: 6443,
        certFile: cluster.file(name, '/etc/kubernetes/pki/apiserver.crt'),
        keyFile: cluster.file(name, '/etc/kubernetes/pki/apiserver.key'),
        clientCaFile: cluster.file(name, '/etc/kubernetes/pki/ca.crt'),
        pidFile: path.join(node.dir, 'readyz.pid'),
        logFile: path.join(node.dir, 'readyz.log'),
        unhealthyName: UNHEALTHY_NAME,
      };
      const specFile = path.join(node.dir, 'readyz.json');
      fs.writeFileSync(specFile, JSON.stringify(spec));
      specFiles.push(specFile);
      const config = YAML.parse(fs.readFileSync(node.configFile, 'utf8')) as { services: Record<string, unknown> };
      // No health entry: the default check from the controller applies.
      config.services['kube-apiserver'] = { restart: { command: [process.execPath, READYZ_SERVICE, 'restart', specFile] }, timeoutSeconds: 5 };
      fs.writeFileSync(node.configFile, YAML.stringify(config));
    }
    await cluster.startAgents();
  });

  after(async () => {
    for (const specFile of specFiles) await runNode(READYZ_SERVICE, ['stop', specFile]);
    if (cluster !== undefined) await cluster.stop();
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('gates each master on its readyz', async () => {
    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    for (const name of MASTERS) {
      const master = report.nodes.find((node) => node.name === name);
      assert.equal(master?.status, 'changed', master?.error);
      const address = cluster.node(name).spec.addresses[0];
      assert.deepEqual(
        master?.services.find((service) => service.name === 'kube-apiserver'),
        { name: 'kube-apiserver', healthy: true, check: `default https https://${address}:6443/readyz`, output: '' },
      );
      assert.equal(await readyz(cluster, name), 200);
    }
  });

  it('rolls back a master that fails readyz', async () => {
    const served = crypto.createHash('sha256').update(fs.readFileSync(cluster.file('master-1', '/etc/kubernetes/pki/apiserver.crt'))).digest('hex');
    const inventory = fs.readFileSync(cluster.inventoryFile, 'utf8');
    const endpoint = `apiServer: {endpoint: "https://${SUBNET}.100:6443"}`;
    assert.ok(inventory.includes(endpoint), inventory);
    fs.writeFileSync(cluster.inventoryFile, inventory.replace(endpoint, `apiServer: {endpoint: "https://${SUBNET}.100:6443", extraSANs: [${UNHEALTHY_NAME}]}`));

    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 1, `${result.stdout}\n${result.stderr}`);
    const first = report.nodes.find((node) => node.name === 'master-1');
    assert.equal(first?.status, 'rolled-back', first?.error);
    assert.match(first?.error ?? '', /kube-apiserver unhealthy after restart \(default https https:\/\/127\.0\.53\.21:6443\/readyz\): HTTP 500 \[-\]serving-certificate failed/);
    assert.match(first?.error ?? '', /rolled back to the previous files, which are healthy/);
    const checks = first?.services.filter((service) => service.name === 'kube-apiserver').map((service) => service.healthy);
    assert.deepEqual(checks, [false, true]);
    // The old certificate is back and serving, and the rollout stopped before the second master.
    const restored = crypto.createHash('sha256').update(fs.readFileSync(cluster.file('master-1', '/etc/kubernetes/pki/apiserver.crt'))).digest('hex');
    assert.equal(restored, served);
    assert.equal(await readyz(cluster, 'master-1'), 200);
    assert.equal(report.nodes.find((node) => node.name === 'master-2')?.status, 'skipped');
  });
});
