/**
 * End to end: the real controller CLI, one real agent process per node on its own loopback
 * address, and a real three-member etcd (Debian etcd-server) started by the agents' restart hooks
 * on the files they installed. kube-apiserver and the kubelet cannot run here; their restart hooks
 * append to a per-node log that the tests read.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { itemPaths, itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { distribute } from '@kubetrust/controller';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { LocalCluster, exitCodeOf, runController, runControllerWithClockOffset, which, type DistributeJson } from '../harness/local-cluster';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: e2e}
spec:
  apiServer: {endpoint: "https://127.0.20.100:6443", extraSANs: [api.e2e.example]}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: etcd-1, addresses: [127.0.20.11], roles: [etcd]}
    - {name: etcd-2, addresses: [127.0.20.12], roles: [etcd]}
    - {name: etcd-3, addresses: [127.0.20.13], roles: [etcd]}
    - {name: master-1, addresses: [127.0.20.21], hostnames: [master-1.e2e.example], roles: [master]}
    - {name: worker-1, addresses: [127.0.20.31], roles: [worker]}
    - {name: worker-2, addresses: [127.0.20.32], roles: [worker]}
`;

interface Exec {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function exec(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<Exec> {
  return new Promise((resolve) => {
    execFile(command, args, { env, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: exitCodeOf(error), stdout, stderr });
    });
  });
}

/** SHA-256 of every file below a directory, keyed by relative path. */
function treeDigest(root: string): Map<string, string> {
  const digest = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else digest.set(path.relative(root, full), crypto.createHash('sha256').update(fs.readFileSync(full)).digest('hex'));
    }
  };
  walk(root);
  return digest;
}

describe('controller distribute end to end', function () {
  this.timeout(300_000);
  let cluster: LocalCluster;

  before(async () => {
    assert.ok(which('etcd'), 'etcd is not installed: `.ci/run` installs the Debian package etcd-server');
    assert.ok(which('etcdctl'), 'etcdctl is not installed: `.ci/run` installs the Debian package etcd-client');
    cluster = await LocalCluster.start(INVENTORY, { etcd: true, prefix: 'kubetrust-e2e-' });
  });

  after(async () => {
    await cluster?.destroy();
  });

  it('installs exactly what each role needs and restarts its services', async () => {
    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    for (const node of report.nodes) {
      assert.equal(node.status, 'changed', `${node.name}: ${node.error ?? ''}`);
      const spec = cluster.node(node.name).spec;
      const expected = itemsForNode(cluster.inventory, spec).flatMap(itemPaths).sort();
      assert.deepEqual([...node.changedFiles].sort(), expected, `${node.name} changed files`);
      for (const file of expected) assert.ok(fs.existsSync(cluster.file(node.name, file)), `${node.name}: ${file} is not on disk`);
    }
    const byName = new Map(report.nodes.map((node) => [node.name, node]));
    assert.deepEqual(byName.get('etcd-1')?.restartedServices, ['etcd']);
    assert.deepEqual(byName.get('master-1')?.restartedServices, ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']);
    assert.deepEqual(byName.get('worker-1')?.restartedServices, ['kubelet', 'kube-proxy']);
    assert.deepEqual(cluster.restarts('master-1'), ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']);
    // agent.yaml gives etcd no check of its own, so the controller's default gated it.
    for (const name of ['etcd-1', 'etcd-2', 'etcd-3']) {
      const address = cluster.node(name).spec.addresses[0];
      assert.deepEqual(byName.get(name)?.services, [{ name: 'etcd', healthy: true, check: `default https https://${address}:2379/health`, output: '' }]);
    }
  });

  it('keeps private files private and gives workers no cluster secrets', () => {
    const key = fs.statSync(cluster.file('master-1', '/etc/kubernetes/pki/apiserver.key'));
    assert.equal(key.mode & 0o777, 0o600);
    assert.equal(fs.statSync(cluster.file('master-1', '/etc/kubernetes/admin.conf')).mode & 0o777, 0o600);
    assert.equal(fs.statSync(cluster.file('master-1', '/etc/kubernetes/pki/apiserver.crt')).mode & 0o777, 0o644);
    for (const forbidden of ['/etc/kubernetes/pki/ca.key', '/etc/kubernetes/pki/sa.key', '/etc/kubernetes/pki/etcd', '/etc/kubernetes/admin.conf']) {
      assert.ok(!fs.existsSync(cluster.file('worker-1', forbidden)), `worker-1 received ${forbidden}`);
    }
  });

  it('issues certificates that openssl verifies against their CA', async () => {
    const ca = (name: string): string => path.join(cluster.stateDir, 'pki', `${name}.crt`);
    const checks: [string, string, string][] = [
      ['master-1', '/etc/kubernetes/pki/apiserver.crt', 'cluster-ca'],
      ['master-1', '/etc/kubernetes/pki/apiserver-kubelet-client.crt', 'cluster-ca'],
      ['master-1', '/etc/kubernetes/pki/front-proxy-client.crt', 'front-proxy-ca'],
      ['master-1', '/etc/kubernetes/pki/apiserver-etcd-client.crt', 'etcd-ca'],
      ['etcd-1', '/etc/kubernetes/pki/etcd/server.crt', 'etcd-ca'],
      ['etcd-2', '/etc/kubernetes/pki/etcd/peer.crt', 'etcd-ca'],
      ['etcd-3', '/etc/kubernetes/pki/etcd/healthcheck-client.crt', 'etcd-ca'],
      ['worker-1', '/var/lib/kubelet/pki/kubelet.crt', 'cluster-ca'],
    ];
    for (const [node, file, issuer] of checks) {
      const verify = await exec('openssl', ['verify', '-CAfile', ca(issuer), cluster.file(node, file)]);
      assert.equal(verify.code, 0, `${node}:${file} against ${issuer}: ${verify.stdout}${verify.stderr}`);
    }
    const text = (await exec('openssl', ['x509', '-noout', '-text', '-in', cluster.file('master-1', '/etc/kubernetes/pki/apiserver.crt')])).stdout;
    assert.match(text, /Subject: CN\s?=\s?kube-apiserver/);
    assert.match(text, /TLS Web Server Authentication/);
    assert.doesNotMatch(text, /TLS Web Client Authentication/);
    for (const san of ['DNS:kubernetes.default.svc.cluster.local', 'DNS:master-1.e2e.example', 'DNS:api.e2e.example', 'IP Address:10.96.0.1', 'IP Address:127.0.20.21', 'IP Address:127.0.20.100']) {
      assert.ok(text.includes(san), `apiserver certificate lacks ${san}`);
    }
    const etcdText = (await exec('openssl', ['x509', '-noout', '-text', '-in', cluster.file('etcd-1', '/etc/kubernetes/pki/etcd/server.crt')])).stdout;
    assert.match(etcdText, /TLS Web Server Authentication, TLS Web Client Authentication|TLS Web Client Authentication, TLS Web Server Authentication/);
    assert.ok(etcdText.includes('IP Address:127.0.20.11'), 'etcd server certificate lacks its member address');
  });

  it('embeds the cluster CA and a matching key in kubeconfigs', async () => {
    const YAML = await import('yaml');
    const config = YAML.parse(fs.readFileSync(cluster.file('worker-1', '/etc/kubernetes/kube-proxy.conf'), 'utf8')) as {
      clusters: { cluster: { server: string; 'certificate-authority-data': string } }[];
      users: { user: { 'client-certificate-data': string; 'client-key-data': string } }[];
    };
    assert.equal(config.clusters[0]?.cluster.server, 'https://127.0.20.100:6443');
    const caPem = Buffer.from(config.clusters[0]!.cluster['certificate-authority-data'], 'base64').toString();
    assert.equal(caPem.trim(), fs.readFileSync(path.join(cluster.stateDir, 'pki', 'cluster-ca.crt'), 'utf8').trim());
    const certificate = new crypto.X509Certificate(Buffer.from(config.users[0]!.user['client-certificate-data'], 'base64'));
    const key = crypto.createPrivateKey(Buffer.from(config.users[0]!.user['client-key-data'], 'base64'));
    assert.ok(certificate.checkPrivateKey(key), 'client key does not match client certificate');
    assert.match(certificate.subject, /CN=system:kube-proxy/);
  });

  it('runs a three-member etcd on the installed files', async () => {
    const pki = cluster.file('master-1', '/etc/kubernetes/pki');
    const endpoints = ['127.0.20.11', '127.0.20.12', '127.0.20.13'].map((ip) => `https://${ip}:2379`).join(',');
    const env = { ...process.env, ETCDCTL_API: '3' };
    const healthy = await exec(
      'etcdctl',
      [`--endpoints=${endpoints}`, `--cacert=${pki}/etcd/ca.crt`, `--cert=${pki}/apiserver-etcd-client.crt`, `--key=${pki}/apiserver-etcd-client.key`, 'endpoint', 'health'],
      env,
    );
    assert.equal(healthy.code, 0, healthy.stdout + healthy.stderr);
    assert.equal((healthy.stdout + healthy.stderr).match(/is healthy/g)?.length, 3, healthy.stdout + healthy.stderr);
    const members = await exec('etcdctl', [`--endpoints=${endpoints}`, `--cacert=${pki}/etcd/ca.crt`, `--cert=${pki}/apiserver-etcd-client.crt`, `--key=${pki}/apiserver-etcd-client.key`, 'member', 'list'], env);
    assert.equal(members.stdout.trim().split('\n').length, 3, members.stdout);

    const anonymous = await exec('etcdctl', ['--endpoints=https://127.0.20.11:2379', `--cacert=${pki}/etcd/ca.crt`, '--dial-timeout=3s', '--command-timeout=5s', 'endpoint', 'health'], env);
    assert.notEqual(anonymous.code, 0, 'etcd accepted a client without a certificate');
  });

  it('changes nothing on a second run', async () => {
    const pids = ['etcd-1', 'etcd-2', 'etcd-3'].map((name) => fs.readFileSync(cluster.node(name).etcd!.pidFile, 'utf8'));
    const before = cluster.nodes.map((node) => treeDigest(node.installRoot));
    const restartsBefore = cluster.nodes.map((node) => cluster.restarts(node.spec.name).length);
    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, result.stderr);
    for (const node of report.nodes) {
      assert.equal(node.status, 'unchanged', `${node.name}: ${JSON.stringify(node.plan.filter((entry) => entry.action !== 'unchanged'))}`);
      assert.deepEqual(node.changedFiles, []);
      assert.deepEqual(node.restartedServices, []);
    }
    assert.deepEqual(cluster.nodes.map((node) => treeDigest(node.installRoot)), before);
    assert.deepEqual(cluster.nodes.map((node) => cluster.restarts(node.spec.name).length), restartsBefore);
    assert.deepEqual(['etcd-1', 'etcd-2', 'etcd-3'].map((name) => fs.readFileSync(cluster.node(name).etcd!.pidFile, 'utf8')), pids, 'etcd was restarted');
  });

  it('changes no byte on any node in a dry run', async () => {
    const missing = cluster.file('worker-2', '/etc/kubernetes/kube-proxy.conf');
    fs.rmSync(missing);
    const before = cluster.nodes.map((node) => treeDigest(node.installRoot));
    const { result, report } = await cluster.distributeJson(['--dry-run']);
    assert.equal(result.code, 0, result.stderr);
    const worker = report.nodes.find((node) => node.name === 'worker-2');
    assert.equal(worker?.status, 'planned');
    const entry = worker?.plan.find((item) => item.name === 'kube-proxy.conf');
    assert.equal(entry?.action, 'add');
    assert.deepEqual(entry?.reasons, ['new']);
    assert.deepEqual(cluster.nodes.map((node) => treeDigest(node.installRoot)), before);
    assert.ok(!fs.existsSync(missing), 'dry run wrote the missing file');
  });

  it('reports an unreachable agent and converges once it is back', async () => {
    await cluster.stopAgents(['worker-2']);
    const { result, report } = await cluster.distributeJson();
    assert.notEqual(result.code, 0, 'distribute succeeded with an agent down');
    const byName = new Map(report.nodes.map((node) => [node.name, node]));
    assert.equal(byName.get('worker-2')?.status, 'failed');
    assert.match(byName.get('worker-2')?.error ?? '', /unreachable at 127\.0\.20\.32:7443/);
    for (const name of ['etcd-1', 'etcd-2', 'etcd-3', 'master-1', 'worker-1']) assert.equal(byName.get(name)?.status, 'unchanged', name);

    await cluster.startAgents(['worker-2']);
    const again = await cluster.distributeJson();
    assert.equal(again.result.code, 0, again.result.stderr);
    const worker = again.report.nodes.find((node) => node.name === 'worker-2');
    assert.equal(worker?.status, 'changed');
    assert.deepEqual(worker?.changedFiles, ['/etc/kubernetes/kube-proxy.conf']);
    assert.deepEqual(worker?.restartedServices, ['kube-proxy']);
  });

  it('reissues a certificate whose SAN no longer matches the inventory', async () => {
    const certificateFile = cluster.file('etcd-2', '/etc/kubernetes/pki/etcd/server.crt');
    const serialBefore = new crypto.X509Certificate(fs.readFileSync(certificateFile)).serialNumber;
    // Swap in a peer certificate of another member: a valid chain, but the wrong names and key.
    fs.copyFileSync(cluster.file('etcd-3', '/etc/kubernetes/pki/etcd/server.crt'), certificateFile);
    const plan = await cluster.distributeJson(['--dry-run']);
    const entry = plan.report.nodes.find((node) => node.name === 'etcd-2')?.plan.find((item) => item.name === 'etcd-server');
    assert.equal(entry?.action, 'change');
    assert.ok(entry?.reasons.some((reason) => reason.startsWith('SAN missing: etcd-2')), JSON.stringify(entry?.reasons));
    assert.ok(entry?.reasons.includes('key does not match certificate'), JSON.stringify(entry?.reasons));

    const { result, report } = await cluster.distributeJson();
    assert.equal(result.code, 0, result.stderr);
    // The dry run announced exactly what the real run then did, on every node.
    for (const planned of plan.report.nodes) {
      const actual = report.nodes.find((candidate) => candidate.name === planned.name);
      const announced = planned.plan.filter((item) => item.action !== 'unchanged').flatMap((item) => item.paths).sort();
      assert.deepEqual([...(actual?.changedFiles ?? [])].sort(), announced, `${planned.name}: dry run and real run differ`);
    }
    const node = report.nodes.find((candidate) => candidate.name === 'etcd-2');
    assert.equal(node?.status, 'changed', node?.error);
    assert.deepEqual([...(node?.changedFiles ?? [])].sort(), ['/etc/kubernetes/pki/etcd/server.crt', '/etc/kubernetes/pki/etcd/server.key']);
    assert.deepEqual(node?.restartedServices, ['etcd']);
    const installed = new crypto.X509Certificate(fs.readFileSync(certificateFile));
    assert.notEqual(installed.serialNumber, serialBefore);
    assert.ok(installed.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(cluster.file('etcd-2', '/etc/kubernetes/pki/etcd/server.key')))));
  });

  it('reports a failed health check with its output', async () => {
    const node = cluster.node('worker-1');
    const original = fs.readFileSync(node.configFile, 'utf8');
    const config = (await import('yaml')).parse(original) as { services: Record<string, unknown> };
    config.services['kube-proxy'] = {
      restart: { command: ['/bin/true'] },
      health: { command: ['/bin/sh', '-c', 'echo kube-proxy is not serving >&2; exit 1'] },
      timeoutSeconds: 2,
    };
    fs.writeFileSync(node.configFile, (await import('yaml')).stringify(config));
    await cluster.stopAgents(['worker-1']);
    await cluster.startAgents(['worker-1']);
    fs.rmSync(cluster.file('worker-1', '/etc/kubernetes/kube-proxy.conf'));
    try {
      const { result, report } = await cluster.distributeJson();
      assert.equal(result.code, 1, result.stdout);
      const worker = report.nodes.find((candidate) => candidate.name === 'worker-1');
      assert.equal(worker?.status, 'failed');
      assert.deepEqual(worker?.changedFiles, ['/etc/kubernetes/kube-proxy.conf']);
      assert.match(worker?.error ?? '', /kube-proxy unhealthy after restart \(command \/bin\/sh -c .*\): \/bin\/sh failed: exit status 1 \| kube-proxy is not serving/);
      // The node is rolled back: the kubeconfig the change created is gone again, and because the
      // broken hook also fails on the old files, the node stays failed and reports it.
      assert.deepEqual(worker?.rolledBackFiles, ['/etc/kubernetes/kube-proxy.conf']);
      assert.ok(!fs.existsSync(cluster.file('worker-1', '/etc/kubernetes/kube-proxy.conf')), 'the rollback left the new kubeconfig in place');
      assert.match(worker?.error ?? '', /rolled back to the previous files, but still unhealthy/);
      for (const other of report.nodes.filter((candidate) => candidate.name !== 'worker-1')) assert.equal(other.status, 'unchanged', other.name);
    } finally {
      fs.writeFileSync(node.configFile, original);
      await cluster.stopAgents(['worker-1']);
      await cluster.startAgents(['worker-1']);
    }

    // With the hook fixed, the next run installs the kubeconfig again and restarts kube-proxy.
    const retry = await cluster.distributeJson();
    assert.equal(retry.result.code, 0, retry.result.stdout);
    const retried = retry.report.nodes.find((candidate) => candidate.name === 'worker-1');
    assert.equal(retried?.status, 'changed');
    assert.deepEqual(retried?.changedFiles, ['/etc/kubernetes/kube-proxy.conf']);
    assert.deepEqual(retried?.restartedServices, ['kube-proxy']);
    assert.equal(cluster.restarts('worker-1').at(-1), 'kube-proxy');
    const settled = await cluster.distributeJson();
    assert.equal(settled.report.nodes.find((candidate) => candidate.name === 'worker-1')?.status, 'unchanged');
  });

  it('logs issued certificates with fingerprints, never secrets', async () => {
    fs.rmSync(cluster.file('worker-2', '/etc/kubernetes/kube-proxy.conf'));
    const result = await cluster.distribute(['--log-format', 'json', '--log-level', 'debug']);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const records = result.stderr.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>);
    const issued = records.filter((record) => record.message === 'issued certificate');
    assert.equal(issued.length, 1, result.stderr);
    const kubeconfig = parseKubeconfig(fs.readFileSync(cluster.file('worker-2', '/etc/kubernetes/kube-proxy.conf'), 'utf8'));
    const installed = new crypto.X509Certificate(kubeconfig.clientCertificatePem!);
    assert.deepEqual(
      { node: issued[0]!.node, cert: issued[0]!.cert, serial: issued[0]!.serial, fingerprint: issued[0]!.fingerprint },
      { node: 'worker-2', cert: 'kube-proxy.conf', serial: installed.serialNumber.toLowerCase().replace(/^0+/, ''), fingerprint: installed.fingerprint256.replace(/:/g, '').toLowerCase() },
    );
    for (const secret of ['PRIVATE KEY', 'client-key-data', kubeconfig.clientKeyPem!.split('\n')[1]!]) {
      assert.ok(!result.stderr.includes(secret), `the log contains ${secret}`);
      assert.ok(!result.stdout.includes(secret), `the report contains ${secret}`);
    }
  });

  it('rolls a node back to its previous files', async () => {
    const file = cluster.file('worker-2', '/etc/kubernetes/kube-proxy.conf');
    const before = fs.readFileSync(file, 'utf8');
    fs.rmSync(cluster.file('worker-2', '/var/lib/kubelet/pki/kubelet.crt'));
    const { result } = await cluster.distributeJson();
    assert.equal(result.code, 0, result.stderr);
    const reissued = fs.readFileSync(cluster.file('worker-2', '/var/lib/kubelet/pki/kubelet.crt'), 'utf8');
    const restartsBefore = cluster.restarts('worker-2').length;

    const rollback = await runController(['rollback', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--node', 'worker-2', '--output', 'json']);
    assert.equal(rollback.code, 0, rollback.stderr);
    const report = JSON.parse(rollback.stdout) as { change: string; restoredFiles: string[]; removedFiles: string[]; restartedServices: string[] };
    assert.match(report.change, /^\d{14}-[0-9a-f]{8}$/);
    assert.deepEqual(report.restoredFiles, ['/var/lib/kubelet/pki/kubelet.key']);
    assert.deepEqual(report.removedFiles, ['/var/lib/kubelet/pki/kubelet.crt']);
    assert.deepEqual(report.restartedServices, ['kubelet']);
    assert.ok(!fs.existsSync(cluster.file('worker-2', '/var/lib/kubelet/pki/kubelet.crt')), 'the certificate that did not exist before the change is still there');
    assert.equal(fs.readFileSync(file, 'utf8'), before, 'a file outside the change was touched');
    assert.equal(cluster.restarts('worker-2').length, restartsBefore + 1);

    const unknown = await runController(['rollback', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--node', 'worker-2', '--change', 'no-such-change']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^error: Rollback failed \(INVALID_REQUEST\): no backup of change "no-such-change"; backups kept: /m);
    assert.doesNotMatch(unknown.stderr, /TypeError|    at /, 'the error was printed as a stack trace');

    // The next distribute repairs what the rollback put back.
    const again = await cluster.distributeJson();
    assert.equal(again.result.code, 0, again.result.stderr);
    assert.notEqual(fs.readFileSync(cluster.file('worker-2', '/var/lib/kubelet/pki/kubelet.crt'), 'utf8'), reissued);
  });

  /** Runs `controller plan` with the controller's clock `offsetMs` ahead of the agents' and returns its report. */
  async function planWithClockOffset(offsetMs: number, extra: readonly string[] = []): Promise<{ code: number; stderr: string; report: DistributeJson }> {
    const result = await runControllerWithClockOffset(offsetMs, ['plan', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--output', 'json', ...extra]);
    assert.ok(result.stdout !== '', `plan printed no report (exit ${result.code}):\n${result.stderr}`);
    return { code: result.code, stderr: result.stderr, report: JSON.parse(result.stdout) as DistributeJson };
  }

  it('plan allows two minutes of clock skew by default', async () => {
    for (const offsetMs of [60_000, -60_000]) {
      const { code, stderr, report } = await planWithClockOffset(offsetMs);
      assert.equal(code, 0, `controller clock ${offsetMs / 1000} s off:\n${stderr}`);
      for (const node of report.nodes) assert.notEqual(node.status, 'failed', `${node.name} with the controller clock ${offsetMs / 1000} s off: ${node.error ?? ''}`);
    }
    for (const [offsetMs, direction] of [
      [180_000, 'behind'],
      [-180_000, 'ahead of'],
    ] as const) {
      const { code, stderr, report } = await planWithClockOffset(offsetMs);
      assert.equal(code, 1, `controller clock ${offsetMs / 1000} s off:\n${stderr}`);
      for (const node of report.nodes) {
        assert.equal(node.status, 'failed', `${node.name} with the controller clock ${offsetMs / 1000} s off`);
        assert.match(node.error ?? '', new RegExp(`clock of node ${node.name} is (179|180|181) s ${direction} the controller's \\(allowed: 120 s\\)`));
      }
    }
  });

  it('plan takes the allowed clock skew from --max-clock-skew', async () => {
    const lenient = await planWithClockOffset(180_000, ['--max-clock-skew', '240']);
    assert.equal(lenient.code, 0, lenient.stderr);
    for (const node of lenient.report.nodes) assert.notEqual(node.status, 'failed', `${node.name}: ${node.error ?? ''}`);

    const strict = await planWithClockOffset(60_000, ['--max-clock-skew', '30']);
    assert.equal(strict.code, 1, strict.stderr);
    for (const node of strict.report.nodes) {
      assert.equal(node.status, 'failed', node.name);
      assert.match(node.error ?? '', new RegExp(`clock of node ${node.name} is (59|60|61) s behind the controller's \\(allowed: 30 s\\)`));
    }
  });

  it('fails every node whose clock is far off', async () => {
    const tenMinutesAhead = (): Date => new Date(Date.now() + 10 * 60 * 1000);
    const report = await distribute(cluster.inventory, cluster.stateDir, silentLogger(), { dryRun: true, now: tenMinutesAhead });
    for (const node of report.nodes) {
      assert.equal(node.status, 'failed', node.name);
      assert.match(node.error ?? '', new RegExp(`clock of node ${node.name} is 6\\d\\d s behind the controller's`));
    }
  });
});
