import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StateError, checkCsr, enrollNode, initState } from '@kubetrust/controller';
import type { KeyRequest } from '@kubetrust/proto';
import { parseInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { createCsr, generateKeyPair, inspectCertificate, parseCsr } from '@kubetrust/shared/dist/pki';

function inventory(name = 'unit', layout = 'kubeadm'): Inventory {
  return parseInventory(
    `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: ${name}}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256, layout: ${layout}}
  nodes:
    - {name: cp-1, addresses: [192.0.2.21], roles: [etcd, master]}
    - {name: wk-1, addresses: [192.0.2.31], roles: [worker], agent: {endpoint: "wk-1.unit.example:7600"}}
`,
    'unit.yaml',
  ).inventory;
}

function read(file: string): string {
  return fs.readFileSync(file, 'utf8');
}

describe('controller init', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-init-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('creates the CAs of the kubeadm layout with private keys', async () => {
    const result = await initState(inventory(), dir, silentLogger());
    assert.deepEqual(
      result.items.map((item) => `${item.name}:${item.status}`),
      ['cluster-ca CA:created', 'etcd-ca CA:created', 'front-proxy-ca CA:created', 'service-account key pair:created', 'management CA:created', 'controller identity:created'],
    );
    for (const key of ['pki/cluster-ca.key', 'pki/etcd-ca.key', 'pki/front-proxy-ca.key', 'pki/sa.key', 'management/ca.key', 'management/controller.key']) {
      assert.equal(fs.statSync(path.join(dir, key)).mode & 0o777, 0o600, key);
    }
    const ca = inspectCertificate(read(path.join(dir, 'pki/cluster-ca.crt')));
    assert.equal(ca.isCA, true);
    assert.equal(ca.subject.commonName, 'kubernetes');
    assert.deepEqual(ca.extKeyUsage, []);
    const controller = inspectCertificate(read(path.join(dir, 'management/controller.crt')));
    assert.deepEqual(controller.uris, ['kubetrust://unit/controller']);
    assert.deepEqual(controller.extKeyUsage, ['clientAuth']);
  });

  it('creates no etcd CA in the single-ca layout', async () => {
    await initState(inventory('unit', 'single-ca'), dir, silentLogger());
    assert.ok(!fs.existsSync(path.join(dir, 'pki/etcd-ca.crt')));
    assert.ok(fs.existsSync(path.join(dir, 'pki/front-proxy-ca.crt')));
  });

  it('reuses existing CAs on a second run', async () => {
    await initState(inventory(), dir, silentLogger());
    const before = read(path.join(dir, 'pki/cluster-ca.key'));
    const again = await initState(inventory(), dir, silentLogger());
    assert.ok(again.items.every((item) => item.status === 'reused'), JSON.stringify(again.items));
    assert.equal(read(path.join(dir, 'pki/cluster-ca.key')), before);
  });

  it('refuses a CA whose key does not match and leaves both files', async () => {
    await initState(inventory(), dir, silentLogger());
    fs.copyFileSync(path.join(dir, 'pki/etcd-ca.key'), path.join(dir, 'pki/cluster-ca.key'));
    const certificate = read(path.join(dir, 'pki/cluster-ca.crt'));
    await assert.rejects(initState(inventory(), dir, silentLogger()), (error: Error) => error instanceof StateError && /cluster-ca\.key does not match/.test(error.message));
    assert.equal(read(path.join(dir, 'pki/cluster-ca.crt')), certificate);
  });

  it('refuses a CA certificate without its key', async () => {
    await initState(inventory(), dir, silentLogger());
    fs.rmSync(path.join(dir, 'pki/front-proxy-ca.key'));
    await assert.rejects(initState(inventory(), dir, silentLogger()), /front-proxy-ca\.key is missing/);
    assert.ok(fs.existsSync(path.join(dir, 'pki/front-proxy-ca.crt')));
  });

  it('refuses the state of another cluster', async () => {
    await initState(inventory('first'), dir, silentLogger());
    await assert.rejects(initState(inventory('second'), dir, silentLogger()), /belongs to cluster "first"/);
  });

  it('moves the old CAs aside with force', async () => {
    await initState(inventory(), dir, silentLogger());
    const oldCa = read(path.join(dir, 'pki/cluster-ca.crt'));
    const result = await initState(inventory(), dir, silentLogger(), { force: true });
    assert.ok(result.items.every((item) => item.status === 'created'));
    assert.notEqual(read(path.join(dir, 'pki/cluster-ca.crt')), oldCa);
    const aside = fs.readdirSync(dir).filter((entry) => entry.startsWith('replaced-'));
    assert.equal(aside.length, 1);
    assert.equal(read(path.join(dir, aside[0]!, 'pki/cluster-ca.crt')), oldCa);
  });
});

describe('controller enroll', () => {
  let dir: string;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-enroll-'));
    await initState(inventory(), path.join(dir, 'state'), silentLogger());
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('writes an agent identity for the node and its endpoint', async () => {
    const out = path.join(dir, 'wk-1');
    await enrollNode(inventory(), path.join(dir, 'state'), 'wk-1', out, silentLogger(), { installRoot: '/srv/root' });
    const info = inspectCertificate(read(path.join(out, 'agent.crt')));
    assert.equal(info.subject.commonName, 'wk-1');
    assert.deepEqual(info.uris, ['kubetrust://unit/nodes/wk-1']);
    assert.deepEqual([...info.dnsNames].sort(), ['wk-1', 'wk-1.unit.example']);
    assert.deepEqual(info.extKeyUsage, ['serverAuth']);
    assert.equal(fs.statSync(path.join(out, 'agent.key')).mode & 0o777, 0o600);
    const config = read(path.join(out, 'agent.yaml'));
    assert.match(config, /listen: wk-1\.unit\.example:7600/);
    assert.match(config, /installRoot: \/srv\/root/);
    assert.match(config, /controllerIdentity: kubetrust:\/\/unit\/controller/);
    const ca = new crypto.X509Certificate(read(path.join(out, 'management-ca.crt')));
    assert.ok(new crypto.X509Certificate(read(path.join(out, 'agent.crt'))).verify(ca.publicKey));
  });

  it('rejects a node that is not in the inventory', async () => {
    await assert.rejects(enrollNode(inventory(), path.join(dir, 'state'), 'nope', path.join(dir, 'x'), silentLogger()), /node "nope" is not in the inventory; use one of: cp-1, wk-1/);
    assert.ok(!fs.existsSync(path.join(dir, 'x')));
  });
});

describe('CSR name check', () => {
  const request: KeyRequest = { key_id: 'apiserver-1', common_name: 'kube-apiserver', organizations: [], dns_names: ['cp-1', 'kubernetes'], ip_addresses: ['192.0.2.21'] };

  it('accepts a CSR with exactly the requested names', async () => {
    const keys = await generateKeyPair('ECDSA-P256');
    const csr = parseCsr(createCsr({ commonName: 'kube-apiserver', dnsNames: ['kubernetes', 'cp-1'], ipAddresses: ['192.0.2.21'] }, keys));
    assert.doesNotThrow(() => checkCsr(csr, request));
  });

  it('rejects a CSR that asks for an extra name', async () => {
    const keys = await generateKeyPair('ECDSA-P256');
    const csr = parseCsr(createCsr({ commonName: 'kube-apiserver', dnsNames: ['cp-1', 'kubernetes', 'evil.example'], ipAddresses: ['192.0.2.21'] }, keys));
    assert.throws(() => checkCsr(csr, request), /DNS names \[cp-1, kubernetes, evil\.example\]/);
  });

  it('rejects a CSR for another subject', async () => {
    const keys = await generateKeyPair('ECDSA-P256');
    const csr = parseCsr(createCsr({ commonName: 'system:masters-admin', organizations: ['system:masters'], dnsNames: ['cp-1', 'kubernetes'], ipAddresses: ['192.0.2.21'] }, keys));
    assert.throws(() => checkCsr(csr, request), /CN "system:masters-admin"/);
  });
});
