/**
 * A real three-member etcd (Debian etcd-server) on the files kubetrust installs, for each way etcd
 * can be trusted: its own CA in the kubeadm layout, the cluster CA in single-ca, its own CA in
 * single-ca, and the cfssl path layout. Every path comes from the catalogue. Every member runs with client and peer certificate authentication.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { LocalCluster, which } from '../harness/local-cluster';

interface Exec {
  readonly code: number;
  readonly output: string;
}

function etcdctl(args: readonly string[]): Promise<Exec> {
  return new Promise((resolve) => {
    execFile('etcdctl', ['--dial-timeout=3s', '--command-timeout=5s', ...args], { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : 1, output: `${stdout}${stderr}` });
    });
  });
}

function inventory(name: string, subnet: string, pki: string): string {
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: ${name}}
spec:
  apiServer: {endpoint: "https://${subnet}.100:6443"}
  pki: ${pki}
  nodes:
    - {name: etcd-1, addresses: [${subnet}.11], roles: [etcd]}
    - {name: etcd-2, addresses: [${subnet}.12], roles: [etcd]}
    - {name: etcd-3, addresses: [${subnet}.13], roles: [etcd]}
    - {name: master-1, addresses: [${subnet}.21], roles: [master]}
    - {name: worker-1, addresses: [${subnet}.31], roles: [worker]}
`;
}

const SHAPES = [
  { title: 'own etcd CA, kubeadm layout, RSA-2048', name: 'etcd-kubeadm', subnet: '127.0.28', pki: '{layout: kubeadm, keyAlgorithm: RSA-2048}', ownCa: true },
  { title: 'cluster CA shared with etcd, single-ca layout, ECDSA-P256', name: 'etcd-shared', subnet: '127.0.29', pki: '{layout: single-ca, keyAlgorithm: ECDSA-P256}', ownCa: false },
  { title: 'own etcd CA, single-ca layout, ECDSA-P384', name: 'etcd-separate', subnet: '127.0.35', pki: '{layout: single-ca, etcdCA: separate, keyAlgorithm: ECDSA-P384}', ownCa: true },
  { title: 'own etcd CA, cfssl path layout, RSA-2048', name: 'etcd-cfssl', subnet: '127.0.36', pki: '{layout: kubeadm, pathLayout: cfssl, keyAlgorithm: RSA-2048}', ownCa: true },
] as const;

for (const shape of SHAPES) {
  describe(`etcd with ${shape.title}`, function () {
    this.timeout(300_000);
    let workdir: string;
    let cluster: LocalCluster;
    const endpoints = ['11', '12', '13'].map((host) => `https://${shape.subnet}.${host}:2379`).join(',');

    before(async () => {
      assert.ok(which('etcd'), 'etcd is not installed: `.ci/run` installs the Debian package etcd-server');
      workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-etcd-'));
      const inventoryFile = path.join(workdir, 'cluster.yaml');
      fs.writeFileSync(inventoryFile, inventory(shape.name, shape.subnet, shape.pki));
      cluster = await LocalCluster.create({ inventoryFile, workdir, etcd: true });
      const init = await cluster.init();
      assert.equal(init.code, 0, init.stderr);
      await cluster.enrollAll();
      await cluster.startAgents();
      const { result, report } = await cluster.distributeJson();
      assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
      for (const node of report.nodes) assert.equal(node.status, 'changed', `${node.name}: ${node.error ?? ''}`);
    });

    after(async () => {
      await cluster?.stop();
      if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
    });

    /** Host path of the file a catalogue item writes on a node, in whatever path layout the shape uses. */
    function itemFile(node: string, name: string, part: 'certificate' | 'privateKey' | 'file' = 'file'): string {
      const item = itemsForNode(cluster.inventory, cluster.node(node).spec).find((candidate) => candidate.name === name);
      assert.ok(item !== undefined, `${node} holds no ${name}`);
      let nodePath: string;
      if (item.type !== 'leaf') nodePath = item.file.path;
      else if (part === 'privateKey') nodePath = item.privateKey.path;
      else nodePath = item.certificate.path;
      return cluster.file(node, nodePath);
    }

    /** Flags that make etcdctl trust etcd's CA and present the apiserver's etcd client certificate. */
    function apiserverClient(): string[] {
      return [
        `--cacert=${itemFile('master-1', 'etcd-ca.crt')}`,
        `--cert=${itemFile('master-1', 'apiserver-etcd-client', 'certificate')}`,
        `--key=${itemFile('master-1', 'apiserver-etcd-client', 'privateKey')}`,
      ];
    }

    /** Writes a kubeconfig's embedded client certificate and key to files etcdctl can read. */
    function clientFromKubeconfig(node: string, kubeconfigItem: string): string[] {
      const summary = parseKubeconfig(fs.readFileSync(itemFile(node, kubeconfigItem), 'utf8'));
      const base = path.join(workdir, `${node}-${kubeconfigItem}`);
      fs.writeFileSync(`${base}.crt`, summary.clientCertificatePem);
      fs.writeFileSync(`${base}.key`, summary.clientKeyPem ?? '', { mode: 0o600 });
      return [`--cert=${base}.crt`, `--key=${base}.key`];
    }

    it('answers health checks with the apiserver etcd client', async () => {
      const health = await etcdctl([`--endpoints=${endpoints}`, ...apiserverClient(), 'endpoint', 'health']);
      assert.equal(health.code, 0, health.output);
      assert.equal(health.output.match(/is healthy/g)?.length, 3, health.output);
    });

    it('logs no rejected certificate', async () => {
      for (const name of ['etcd-1', 'etcd-2', 'etcd-3']) {
        const log = fs.readFileSync(cluster.node(name).etcd!.logFile, 'utf8');
        assert.doesNotMatch(log, /bad certificate|incompatible key usage|unknown certificate authority/i, `${name} etcd log`);
      }
    });

    if (shape.ownCa) {
      it('rejects kubelet and admin certificates', async () => {
        for (const [node, kubeconfig] of [['worker-1', 'kubelet.conf'], ['master-1', 'admin.conf']] as const) {
          const attempt = await etcdctl([`--endpoints=https://${shape.subnet}.11:2379`, `--cacert=${itemFile('master-1', 'etcd-ca.crt')}`, ...clientFromKubeconfig(node, kubeconfig), 'endpoint', 'health']);
          assert.notEqual(attempt.code, 0, `etcd accepted the client certificate of ${kubeconfig}: ${attempt.output}`);
        }
      });
    } else {
      // With one CA for everything, etcd's client check accepts any certificate the cluster CA
      // signed; this is why kubetrust recommends etcdCA: separate when etcd auth is off.
      it('accepts any cluster certificate when etcd shares the cluster CA', async () => {
        const attempt = await etcdctl([`--endpoints=https://${shape.subnet}.11:2379`, `--cacert=${itemFile('master-1', 'etcd-ca.crt')}`, ...clientFromKubeconfig('worker-1', 'kubelet.conf'), 'endpoint', 'health']);
        assert.equal(attempt.code, 0, attempt.output);
      });
    }
  });
}
