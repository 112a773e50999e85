/**
 * The rotation daemon on a real three-member etcd under load. The certificates are issued with an
 * eight-minute validity, and `serve` renews the etcd server, peer and health-check certificates
 * and the apiserver's etcd client certificate before they expire, with no operator command. All
 * the while a client writes a key every 50 ms through etcd's HTTP gateway with that client
 * certificate. No write may fail, and every acknowledged write must read back.
 *
 * How time is driven: `serve` runs in this process with an injected clock (ServeOptions.now),
 * and only the controller's clock moves. etcd, the agents and TLS keep checking certificates
 * against the real time, so every certificate must stay valid in real time.
 * - A certificate is due once less than a third of its lifetime is left. The lifetime is the
 *   validity plus the five-minute NotBefore backdate, so with `certValidity: 8m` it is 13 minutes.
 *   Renewal is then due 8 min 40 s after NotBefore, which is 3 min 40 s after issue.
 * - The test first lets a round run on the real time, in which nothing may be renewed. Then it
 *   moves the controller's clock to 30 s past that point, about four minutes ahead of the real time.
 * - A certificate issued then starts at the controller's time minus the backdate, which is still
 *   in the real past, so etcd and the client accept the renewed certificates at once.
 * - That holds only while the controller's clock is less than the backdate ahead. Right after
 *   issue, renewal needs the clock (2 * certValidity - 5 min) / 3 ahead, so without a real wait
 *   certValidity must stay below 10m.
 * - The agents' clocks are then up to five minutes behind the controller's. So the test allows a
 *   clock skew of the backdate (ServeOptions.maxClockSkewMs), and the production default stays two minutes.
 *
 * NOTE: the test depends on the real time in two ways. The agent and controller identities and the
 * first etcd certificates also use certValidity, so they really expire eight minutes after
 * `controller init`. And with the real clock, the first certificates come due 3 min 40 s after the
 * first distribute. A machine that takes longer than that to reach the first daemon round fails
 * the first test, and its assertion message gives both times.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import { Writable } from 'node:stream';
import * as tls from 'node:tls';
import * as winston from 'winston';
import { StateDir, type LedgerEntry } from '@kubetrust/controller';
import { serve } from '@kubetrust/controller/dist/serve';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { inspectCertificate } from '@kubetrust/shared/dist/pki';
import { NOT_BEFORE_BACKDATE_MS } from '@kubetrust/shared/dist/rotation';
import { EtcdGatewayClient, type EtcdClientCredentials } from '../harness/etcd-gateway';
import { ETCD_CLIENT_PORT, ETCD_PEER_PORT } from '../harness/etcd-service';
import { LocalCluster, which } from '../harness/local-cluster';
import { httpGet, metricValue } from '../harness/metrics-scrape';

const SUBNET = '127.0.50';
const MEMBERS = ['11', '12', '13'].map((host) => `${SUBNET}.${host}`);
const METRICS_HOST = `${SUBNET}.200`;

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: serve-etcd}
spec:
  apiServer: {endpoint: "https://${SUBNET}.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256, certValidity: 8m}
  nodes:
    - {name: etcd-1, addresses: [${MEMBERS[0]}], roles: [etcd]}
    - {name: etcd-2, addresses: [${MEMBERS[1]}], roles: [etcd]}
    - {name: etcd-3, addresses: [${MEMBERS[2]}], roles: [etcd]}
    - {name: master-1, addresses: [${SUBNET}.21], roles: [master]}
`;

/** The certificates that etcd members and their clients present; the daemon must renew each. */
const WATCHED = [
  ...['etcd-1', 'etcd-2', 'etcd-3'].flatMap((node) => ['etcd-server', 'etcd-peer', 'etcd-healthcheck-client'].map((certificate) => ({ node, certificate }))),
  { node: 'master-1', certificate: 'apiserver-etcd-client' },
];

/** How far past two thirds of the lifetime the controller's clock is moved. */
const PAST_RENEWAL_POINT_MS = 30_000;

/** Writes with the renewed client certificate that the writer must make before it stops. */
const WRITES_WITH_RENEWED_CLIENT = 20;

interface HeldCertificate {
  readonly serial: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

interface Renewed extends HeldCertificate {
  /** The controller's time at issue, from the ledger. */
  readonly issuedAt: number;
}

const keyOf = (node: string, certificate: string): string => `${node}/${certificate}`;

/** Returns the serial of the certificate that host:port presents in a TLS handshake, written as the ledger writes serials. */
function presentedSerial(host: string, port: number, credentials: EtcdClientCredentials): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, ca: credentials.ca, cert: credentials.cert, key: credentials.key }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(BigInt(`0x${serial}`).toString(16));
    });
    socket.on('error', reject);
  });
}

/** Collects the daemon's log as parsed JSON lines and lets the test wait for rotation rounds to end. */
class DaemonLog {
  readonly entries: Record<string, unknown>[] = [];
  private readonly lines = new EventEmitter();
  readonly logger = winston.createLogger({
    level: 'info',
    format: winston.format.json(),
    transports: [
      new winston.transports.Stream({
        stream: new Writable({
          write: (chunk: Buffer, _encoding, done) => {
            for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) this.entries.push(JSON.parse(line) as Record<string, unknown>);
            this.lines.emit('line');
            done();
          },
        }),
      }),
    ],
  });

  withMessage(message: string): Record<string, unknown>[] {
    return this.entries.filter((entry) => entry.message === message);
  }

  roundsEnded(): number {
    return this.withMessage('rotation round ended').length;
  }

  /** Warnings and errors, one line each, for assertion messages. */
  problems(): string {
    return this.entries
      .filter((entry) => entry.level === 'warn' || entry.level === 'error')
      .map((entry) => JSON.stringify(entry))
      .join('\n');
  }

  /** Resolves once `count` rounds have ended in total; rejects when the daemon stops first. */
  waitForRounds(count: number, daemon: Promise<void>): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.roundsEnded() < count) return;
        this.lines.off('line', check);
        resolve();
      };
      this.lines.on('line', check);
      daemon.then(
        () => reject(new Error(`the daemon stopped after ${this.roundsEnded()} rounds, before round ${count} ended`)),
        (error: unknown) => reject(error instanceof Error ? error : new Error(String(error))),
      );
      check();
    });
  }
}

describe('controller serve on etcd under load', function () {
  this.timeout(600_000);
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const log = new DaemonLog();
  const stop = new AbortController();
  let clockOffsetMs = 0;
  const clock = (): Date => new Date(Date.now() + clockOffsetMs);
  let cluster: LocalCluster;
  let daemon: Promise<void> | undefined;
  let ledgerLengthAtStart = 0;
  const initial = new Map<string, HeldCertificate>();
  const renewed = new Map<string, Renewed>();

  // The writer, which plays the kube-apiserver's etcd client.
  let client: EtcdGatewayClient;
  let clientSerial = '';
  let writing = true;
  let writer: Promise<void> | undefined;
  const acknowledged: { key: string; value: string; clientSerial: string }[] = [];
  const failures: { key: string; errors: readonly string[] }[] = [];
  /** Writes acknowledged when the controller's clock moved and when the renewal was seen. */
  let acknowledgedAtClockMove = 0;
  let acknowledgedAtRenewal = 0;

  function leafPaths(node: string, certificate: string): { certificate: string; privateKey: string } {
    const item = itemsForNode(cluster.inventory, cluster.node(node).spec).find((candidate) => candidate.name === certificate);
    assert.ok(item?.type === 'leaf', `${node} has no leaf ${certificate} in the catalogue`);
    return { certificate: cluster.file(node, item.certificate.path), privateKey: cluster.file(node, item.privateKey.path) };
  }

  function held(node: string, certificate: string): HeldCertificate {
    const info = inspectCertificate(fs.readFileSync(leafPaths(node, certificate).certificate));
    return { serial: info.serialNumber, notBefore: info.notBefore.getTime(), notAfter: info.notAfter.getTime() };
  }

  async function ledger(): Promise<LedgerEntry[]> {
    return new StateDir(cluster.stateDir).readLedger();
  }

  /** Reads master-1's etcd client certificate and key; undefined when the two do not match. */
  function readClientCredentials(ca: Buffer): { credentials: EtcdClientCredentials; serial: string } | undefined {
    const paths = leafPaths('master-1', 'apiserver-etcd-client');
    try {
      const cert = fs.readFileSync(paths.certificate);
      const key = fs.readFileSync(paths.privateKey);
      if (!new crypto.X509Certificate(cert).checkPrivateKey(crypto.createPrivateKey(key))) return undefined;
      return { credentials: { ca, cert, key }, serial: inspectCertificate(cert).serialNumber };
    } catch {
      // A file that is being replaced; the next write tries again.
      return undefined;
    }
  }

  /** Switches the writer to the client certificate on disk once it has changed. */
  function reloadClientIfRenewed(): void {
    let onDisk: Buffer;
    try {
      onDisk = fs.readFileSync(leafPaths('master-1', 'apiserver-etcd-client').certificate);
    } catch {
      return;
    }
    if (onDisk.equals(client.credentials.cert)) return;
    // The agent replaces the certificate and the key one after the other, so a pair read between the two does not match and is kept out.
    const loaded = readClientCredentials(client.credentials.ca);
    if (loaded === undefined) return;
    client.credentials = loaded.credentials;
    clientSerial = loaded.serial;
  }

  async function writeUntilStopped(): Promise<void> {
    for (let index = 0; writing; index++) {
      reloadClientIfRenewed();
      const key = `/serve-etcd/${index}`;
      const value = String(index);
      const result = await client.put(key, value);
      if (result.member !== undefined) acknowledged.push({ key, value, clientSerial });
      else failures.push({ key, errors: result.errors });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  before(async () => {
    assert.ok(which('etcd'), 'etcd is not installed: `.ci/run` installs the Debian package etcd-server');
    cluster = await LocalCluster.start(INVENTORY, { etcd: true, prefix: 'kubetrust-serve-etcd-' });
    const { result } = await cluster.distributeJson();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    for (const { node, certificate } of WATCHED) initial.set(keyOf(node, certificate), held(node, certificate));
    ledgerLengthAtStart = (await ledger()).length;

    const trust = itemsForNode(cluster.inventory, cluster.node('master-1').spec).find((item) => item.name === 'etcd-ca.crt');
    assert.ok(trust?.type === 'static', 'master-1 has no etcd CA file');
    const loaded = readClientCredentials(fs.readFileSync(cluster.file('master-1', trust.file.path)));
    assert.ok(loaded !== undefined, 'the apiserver etcd client certificate on master-1 does not match its key');
    client = new EtcdGatewayClient(MEMBERS, loaded.credentials);
    clientSerial = loaded.serial;
    writer = writeUntilStopped();

    daemon = serve(cluster.inventory, cluster.stateDir, log.logger, {
      intervalMs: 1_000,
      jitter: 0,
      retryBaseMs: 1_000,
      metrics: { host: METRICS_HOST, port },
      signal: stop.signal,
      now: clock,
      maxClockSkewMs: NOT_BEFORE_BACKDATE_MS,
    });
  });

  after(async () => {
    writing = false;
    await writer?.catch(() => undefined);
    stop.abort();
    await daemon?.catch(() => undefined);
    await cluster?.destroy();
  });

  it('renews nothing before renewal is due', async () => {
    assert.ok(daemon !== undefined);
    await log.waitForRounds(1, daemon);
    const firstDue = Math.min(...[...initial.values()].map((certificate) => certificate.notBefore + ((certificate.notAfter - certificate.notBefore) * 2) / 3));
    const timing = `renewal is due from ${new Date(firstDue).toISOString()} by the real clock, and the first round ended at ${new Date().toISOString()}`;
    assert.deepEqual(log.withMessage('certificate renewed'), [], `renewed before the controller's clock moved (${timing})`);
    assert.equal((await ledger()).length, ledgerLengthAtStart, `issued before the controller's clock moved (${timing})`);
    for (const { node, certificate } of WATCHED) assert.equal(held(node, certificate).serial, initial.get(keyOf(node, certificate))?.serial, `${node} ${certificate} changed`);
    assert.deepEqual(
      log.withMessage('rotation round ended').map((entry) => entry.result),
      ['success'],
      log.problems(),
    );
  });

  it('renews etcd certificates once due', async () => {
    assert.ok(daemon !== undefined);
    const renewalPoint = Math.max(...[...initial.values()].map((certificate) => certificate.notBefore + ((certificate.notAfter - certificate.notBefore) * 2) / 3));
    const offset = renewalPoint + PAST_RENEWAL_POINT_MS - Date.now();
    assert.ok(offset > 0, `the real clock is already ${-offset} ms past the renewal point`);
    assert.ok(offset < NOT_BEFORE_BACKDATE_MS, `the controller's clock would run ${offset} ms ahead, so what it issues would not be valid yet in real time`);
    clockOffsetMs = offset;
    acknowledgedAtClockMove = acknowledged.length;

    // The round in progress may have planned on the old time, so the round after it is the first to start on the new one.
    await log.waitForRounds(log.roundsEnded() + 2, daemon);
    acknowledgedAtRenewal = acknowledged.length;
    const entries = await ledger();
    const renewals = log.withMessage('certificate renewed');
    for (const { node, certificate } of WATCHED) {
      const name = `${node} ${certificate}`;
      const before = initial.get(keyOf(node, certificate))!;
      const issued = entries.filter((entry) => entry.node === node && entry.name === certificate);
      const latest = issued[issued.length - 1];
      assert.ok(latest !== undefined, `${name} is not in the ledger`);
      assert.notEqual(latest.serialNumber, before.serial, `${name} still has serial ${before.serial}; daemon warnings and errors:\n${log.problems()}`);
      assert.ok(Date.parse(latest.issuedAt) < before.notAfter, `${name} was renewed at ${latest.issuedAt} by the controller's clock, after the old one expired`);
      assert.ok(Date.now() < before.notAfter, `${name} expired in real time before the renewal was seen`);
      const now = held(node, certificate);
      assert.equal(now.serial, latest.serialNumber, `${name} on disk is not the one last issued`);
      assert.ok(now.notBefore <= Date.now(), `${name} starts at ${new Date(now.notBefore).toISOString()}, after the real time`);
      const logged = renewals.filter((entry) => entry.node === node && entry.certificate === certificate);
      assert.deepEqual(
        logged.map((entry) => [entry.oldSerial, entry.newSerial]),
        [[before.serial, latest.serialNumber]],
        `${name}: renewal log lines`,
      );
      renewed.set(keyOf(node, certificate), { ...now, issuedAt: Date.parse(latest.issuedAt) });
    }
    // Each member restarted on its renewed files: it presents the new certificates to clients and to peers.
    for (const [index, member] of MEMBERS.entries()) {
      const node = `etcd-${index + 1}`;
      assert.equal(await presentedSerial(member, ETCD_CLIENT_PORT, client.credentials), renewed.get(keyOf(node, 'etcd-server'))?.serial, `${node} serves another certificate than its renewed etcd-server`);
      assert.equal(await presentedSerial(member, ETCD_PEER_PORT, client.credentials), renewed.get(keyOf(node, 'etcd-peer'))?.serial, `${node} serves another certificate than its renewed etcd-peer`);
    }
    const results = log.withMessage('rotation round ended').map((entry) => entry.result);
    assert.deepEqual(
      results.filter((result) => result !== 'success'),
      [],
      log.problems(),
    );
  });

  it('reports renewed certificates in metrics', async () => {
    assert.equal(renewed.size, WATCHED.length, 'the renewal test did not pass');
    const { status, body } = await httpGet(METRICS_HOST, port, '/metrics');
    const scrapedAt = clock().getTime();
    assert.equal(status, 200);
    assert.equal(metricValue(body, 'kubetrust_last_rotation_success'), 1);
    assert.equal(metricValue(body, 'kubetrust_agents_reachable'), 4);
    for (const { node, certificate } of WATCHED) {
      const certificateNow = renewed.get(keyOf(node, certificate))!;
      const seconds = metricValue(body, 'kubetrust_certificate_expiry_seconds', `node="${node}",certificate="${certificate}"`);
      assert.ok(seconds !== undefined, `no expiry metric for ${node} ${certificate}`);
      // The round that produced the metric read the clock after the certificate was issued and before this scrape.
      const atIssue = Math.floor((certificateNow.notAfter - certificateNow.issuedAt) / 1000);
      const atScrape = Math.floor((certificateNow.notAfter - scrapedAt) / 1000);
      assert.ok(seconds <= atIssue, `${node} ${certificate}: ${seconds} s left, more than the ${atIssue} s the renewed certificate had at issue`);
      assert.ok(seconds >= atScrape, `${node} ${certificate}: ${seconds} s left, less than the ${atScrape} s the renewed certificate has now`);
    }
  });

  it('loses no etcd write', async () => {
    const renewedClient = renewed.get(keyOf('master-1', 'apiserver-etcd-client'));
    assert.ok(renewedClient !== undefined, 'the renewal test did not pass');
    const withRenewedClient = (): number => acknowledged.filter((write) => write.clientSerial === renewedClient.serial).length;
    // Bounded by writes, not time: the writer must switch to the renewed certificate well within this many attempts.
    const attemptLimit = acknowledged.length + failures.length + 10 * WRITES_WITH_RENEWED_CLIENT;
    while (withRenewedClient() < WRITES_WITH_RENEWED_CLIENT && acknowledged.length + failures.length < attemptLimit) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    writing = false;
    await writer;

    assert.deepEqual(failures.slice(0, 5), [], `${failures.length} writes found no member that acknowledged them`);
    assert.ok(acknowledgedAtRenewal > acknowledgedAtClockMove, 'no write went through while the daemon renewed');
    assert.ok(acknowledged.some((write) => write.clientSerial === initial.get(keyOf('master-1', 'apiserver-etcd-client'))?.serial), 'no write went through with the first client certificate');
    assert.ok(withRenewedClient() >= WRITES_WITH_RENEWED_CLIENT, `only ${withRenewedClient()} writes went through with the renewed client certificate`);
    for (const write of acknowledged) assert.equal(await client.get(write.key), write.value, `write ${write.key} was lost`);
  });
});
