/**
 * `controller serve` on a running local cluster: rounds renew without operator action, the
 * metrics and the health endpoint respond, a held state lock skips a round, and SIGTERM ends it.
 */
import { strict as assert } from 'node:assert';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { acquirePidLock } from '@kubetrust/shared/dist/files';
import { CONTROLLER_CLI, REPO_ROOT, distributedCluster, runController, smallInventory, which, type LocalCluster } from '../harness/local-cluster';
import { httpGet, metricValue } from '../harness/metrics-scrape';

const SUBNET = '127.0.42';
const METRICS_HOST = `${SUBNET}.200`;
const INVENTORY = smallInventory('daemon', SUBNET);

function get(port: number, url: string): Promise<{ status: number; body: string }> {
  return httpGet(METRICS_HOST, port, url);
}

async function until<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe('controller serve', function () {
  this.timeout(240_000);
  let workdir: string;
  let cluster: LocalCluster;
  let daemon: ChildProcess | undefined;
  let log = '';
  const port = 20_000 + Math.floor(Math.random() * 20_000);

  async function serialOf(node: string, certificate: string): Promise<string | undefined> {
    const result = await runController(['certs', 'check-expiration', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--nodes', node, '--output', 'json']);
    const report = JSON.parse(result.stdout) as { certificates: { node: string; name: string; serialNumber: string }[] };
    return report.certificates.find((entry) => entry.node === node && entry.name === certificate)?.serialNumber;
  }

  before(async () => {
    ({ workdir, cluster } = await distributedCluster(INVENTORY, 'kubetrust-serve-'));
  });

  after(async () => {
    if (daemon !== undefined && daemon.exitCode === null) daemon.kill('SIGKILL');
    await cluster?.stop();
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('renews what is due without operator action and logs old and new serials', async () => {
    const first = await serialOf('worker-1', 'kubelet.conf');
    assert.ok(first !== undefined);
    // Every certificate has less than a year left, so --before 8760h makes each round renew everything.
    daemon = spawn(process.execPath, [CONTROLLER_CLI, 'serve', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--interval', '2s', '--before', '8760h', '--retry-base', '1s', '--metrics-address', `${METRICS_HOST}:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    daemon.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
    await until(async () => ((await serialOf('worker-1', 'kubelet.conf')) !== first ? true : undefined), 'the daemon renews kubelet.conf');
    assert.match(log, new RegExp(`certificate renewed .*node=worker-1 certificate=kubelet.conf oldSerial=${first} newSerial=[0-9a-f]+`));
    assert.doesNotMatch(log, /BEGIN [A-Z ]*PRIVATE KEY/);
  });

  it('serves metrics with the expiry of each certificate and the health endpoint', async () => {
    const text = await until(async () => {
      const { body } = await get(port, '/metrics');
      return metricValue(body, 'kubetrust_agents_reachable') === 3 && metricValue(body, 'kubetrust_last_rotation_success') === 1 ? body : undefined;
    }, 'a successful round shows in the metrics');
    const expiry = metricValue(text, 'kubetrust_certificate_expiry_seconds', 'node="worker-1",certificate="kubelet.conf"');
    assert.ok(expiry !== undefined, 'no expiry metric for kubelet.conf');
    assert.ok(expiry > 364 * 86_400, `expiry ${expiry}`);
    assert.ok(expiry <= 366 * 86_400, `expiry ${expiry}`);
    assert.equal(metricValue(text, 'kubetrust_agents'), 3);
    assert.ok((metricValue(text, 'kubetrust_last_rotation_timestamp_seconds') ?? 0) > Date.now() / 1000 - 60);
    assert.ok((metricValue(text, 'kubetrust_last_rotation_renewed_certificates') ?? 0) > 0);
    assert.ok([0, 1].includes(metricValue(text, 'kubetrust_rollout_in_progress') ?? -1));
    const health = await get(port, '/healthz');
    assert.deepEqual([health.status, health.body], [200, 'ok\n']);
    assert.equal((await get(port, '/nothing')).status, 404);
  });

  it('skips a round while the state is locked', async () => {
    const lockFile = path.join(cluster.stateDir, 'lock');
    let release: (() => Promise<void>) | undefined;
    await until(async () => {
      release = await acquirePidLock(lockFile);
      return true;
    }, 'this test gets the state lock between two rounds');
    try {
      const seen = log.length;
      await until(async () => (/state directory locked by another controller; skipping this round/.test(log.slice(seen)) ? true : undefined), 'the daemon skips a round');
    } finally {
      await release?.();
    }
  });

  it('reports an unreachable agent in the metrics and keeps going', async () => {
    await cluster.stopAgents(['worker-1']);
    await until(async () => {
      const { body } = await get(port, '/metrics');
      return metricValue(body, 'kubetrust_agents_reachable') === 2 && metricValue(body, 'kubetrust_last_rotation_success') === 0 ? true : undefined;
    }, 'the metrics show two reachable agents and a failed round');
    // The agent may stop between a round's plan and its expiry check, so only the next round logs
    // it. The line also arrives through a pipe after the metrics changed.
    await until(async () => (/node not rotated; retrying with backoff .*node=worker-1/.test(log) ? true : undefined), 'the log names worker-1 as not rotated').catch(() => undefined);
    assert.match(log, /node not rotated; retrying with backoff .*node=worker-1/);
  });

  it('ends after the round in progress on SIGTERM', async () => {
    const exited = new Promise<number | null>((resolve) => daemon?.once('exit', (code) => resolve(code)));
    daemon?.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.match(log, /stopping after the round in progress/);
  });

  it('ships a systemd unit that runs serve and that systemd-analyze accepts', async () => {
    const unitFile = path.join(REPO_ROOT, 'controller', 'packaging', 'kubetrust-controller.service');
    const unit = fs.readFileSync(unitFile, 'utf8');
    assert.match(unit, /^ExecStart=\S+ \S+controller\.js serve --inventory \S+ --state-dir \S+/m);
    assert.match(unit, /^RestartPreventExitStatus=2$/m);
    const analyze = which('systemd-analyze');
    assert.ok(analyze !== undefined, 'systemd-analyze is missing: install the Debian package systemd');
    const result = await new Promise<{ stderr: string }>((resolve) => {
      execFile(analyze, ['verify', '--man=no', unitFile], { timeout: 60_000 }, (_error, _stdout, stderr) => resolve({ stderr }));
    });
    // Without a running systemd, verify also reports dependencies it cannot load; only lines about this unit count.
    const problems = result.stderr.split('\n').filter((line) => line.includes('kubetrust-controller.service') && !/network-online|Failed to (create|connect)/.test(line));
    assert.deepEqual(problems, []);
  });

  it('rejects invalid options before running', async () => {
    const bad = await runController(['serve', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--interval', 'often']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--interval: "often" is not a positive duration/);
    const address = await runController(['serve', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--metrics-address', 'localhost']);
    assert.equal(address.code, 2);
    assert.match(address.stderr, /--metrics-address: "localhost" is not host:port/);
  });
});
