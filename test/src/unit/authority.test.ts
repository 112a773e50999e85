import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IssueError, issueLeaf, selfSignedCa, signLeaf, uniqueSerial, type KeyMaterial } from '@kubetrust/controller';
import { certificateFingerprint, generateKeyPair, inspectCertificate, privateKeyToPem, readSerialAndValidity, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';

const DAY_MS = 24 * 60 * 60 * 1000;
const NOW = new Date('2026-12-04T12:00:00Z');

async function makeCa(algorithm: KeyAlgorithm, validityMs = 3650 * DAY_MS, commonName = 'unit-ca'): Promise<KeyMaterial> {
  const keys = await generateKeyPair(algorithm);
  return { certificatePem: selfSignedCa(commonName, keys, validityMs, NOW), privateKey: keys.privateKey, privateKeyPem: privateKeyToPem(keys.privateKey) };
}

function opensslText(pem: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-authority-'));
  try {
    fs.writeFileSync(path.join(dir, 'cert.pem'), pem);
    return execFileSync('openssl', ['x509', '-noout', '-text', '-in', path.join(dir, 'cert.pem')], { encoding: 'utf8' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('certificate profile', () => {
  let rsaCa: KeyMaterial;
  let p384Ca: KeyMaterial;
  before(async () => {
    rsaCa = await makeCa('RSA-2048');
    p384Ca = await makeCa('ECDSA-P384');
  });

  it('gives CAs only certificate and CRL signing', () => {
    const text = opensslText(rsaCa.certificatePem);
    assert.match(text, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE/);
    assert.doesNotMatch(text, /Extended Key Usage/);
  });

  it('adds key encipherment for RSA leaves only', async () => {
    const rsaKey = await generateKeyPair('RSA-2048');
    const ecKey = await generateKeyPair('ECDSA-P256');
    const rsaLeaf = opensslText(signLeaf(rsaCa, { commonName: 'rsa-leaf', extKeyUsage: ['serverAuth'], dnsNames: ['rsa-leaf'] }, rsaKey.publicKey, DAY_MS, NOW));
    const ecLeaf = opensslText(signLeaf(rsaCa, { commonName: 'ec-leaf', extKeyUsage: ['clientAuth'] }, ecKey.publicKey, DAY_MS, NOW));
    assert.match(rsaLeaf, /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment\n/);
    assert.match(ecLeaf, /X509v3 Key Usage: critical\s+Digital Signature\n/);
    assert.match(ecLeaf, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
  });

  it('signs with SHA-384 under a P-384 CA', async () => {
    const key = await generateKeyPair('ECDSA-P256');
    const text = opensslText(signLeaf(p384Ca, { commonName: 'leaf', extKeyUsage: ['clientAuth'] }, key.publicKey, DAY_MS, NOW));
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA384/);
  });

  it('backdates NotBefore by five minutes', async () => {
    const key = await generateKeyPair('ECDSA-P256');
    const info = inspectCertificate(signLeaf(rsaCa, { commonName: 'leaf', extKeyUsage: ['clientAuth'] }, key.publicKey, DAY_MS, NOW));
    assert.equal(info.notBefore.getTime(), NOW.getTime() - 5 * 60 * 1000);
    assert.equal(info.notAfter.getTime(), NOW.getTime() + DAY_MS);
  });

  it('reports the serial, expiry and fingerprint it signed', async () => {
    const shortCa = await makeCa('ECDSA-P256', 10 * DAY_MS + 789);
    const key = await generateKeyPair('ECDSA-P256');
    const odd = new Date(NOW.getTime() + 456);
    const cases = [
      issueLeaf(rsaCa, { commonName: 'leaf', extKeyUsage: ['clientAuth'] }, key.publicKey, DAY_MS + 999, odd),
      issueLeaf(shortCa, { commonName: 'leaf', extKeyUsage: ['serverAuth'] }, key.publicKey, 365 * DAY_MS, odd, { capToCa: true }),
    ];
    for (const leaf of cases) {
      const read = readSerialAndValidity(leaf.certificatePem);
      assert.equal(leaf.serialNumber, read.serialNumber);
      assert.equal(leaf.notAfter.toISOString(), read.notAfter.toISOString());
      assert.equal(leaf.fingerprint, certificateFingerprint(leaf.certificatePem));
      assert.equal(leaf.fingerprint, new crypto.X509Certificate(leaf.certificatePem).fingerprint256.replaceAll(':', '').toLowerCase());
    }
    assert.equal(cases[0]!.notAfter.toISOString(), '2026-12-05T12:00:01.000Z');
  });

  it('refuses a leaf that would outlive its CA', async () => {
    const shortCa = await makeCa('ECDSA-P256', 10 * DAY_MS);
    const key = await generateKeyPair('ECDSA-P256');
    assert.throws(
      () => signLeaf(shortCa, { label: 'apiserver for node cp-1', commonName: 'kube-apiserver', extKeyUsage: ['serverAuth'] }, key.publicKey, 365 * DAY_MS, NOW),
      (error: Error) => error instanceof IssueError && /apiserver for node cp-1 would expire at 2027-12-04.*after its CA \(CN "unit-ca"\) expires at 2026-12-14.*`controller ca rotate`.*--cap-to-ca/.test(error.message),
    );
  });

  it('ends a capped leaf with its CA', async () => {
    const shortCa = await makeCa('ECDSA-P256', 10 * DAY_MS);
    const key = await generateKeyPair('ECDSA-P256');
    const leaf = inspectCertificate(signLeaf(shortCa, { commonName: 'leaf', extKeyUsage: ['serverAuth'] }, key.publicKey, 365 * DAY_MS, NOW, { capToCa: true }));
    assert.equal(leaf.notAfter.getTime(), inspectCertificate(shortCa.certificatePem).notAfter.getTime());
  });

  it('refuses a leaf with the subject of its CA', async () => {
    const key = await generateKeyPair('ECDSA-P256');
    assert.throws(() => signLeaf(rsaCa, { label: 'etcd-server for node unit-ca', commonName: 'unit-ca', extKeyUsage: ['serverAuth'] }, key.publicKey, DAY_MS, NOW), /would have the subject of its CA \(CN "unit-ca"\)/);
    assert.doesNotThrow(() => signLeaf(rsaCa, { commonName: 'unit-ca', organizations: ['system:nodes'], extKeyUsage: ['clientAuth'] }, key.publicKey, DAY_MS, NOW));
  });

  it('draws a serial the CA has not used', () => {
    const draws = [0x1234n, 0x1234n, 0xabcdn];
    const serial = uniqueSerial(new Set(['1234']), () => draws.shift()!);
    assert.equal(serial, 0xabcdn);
    assert.deepEqual(draws, []);
  });

  it('avoids serials listed as used when signing', async () => {
    const key = await generateKeyPair('ECDSA-P256');
    const used = new Set<string>();
    for (let index = 0; index < 20; index++) {
      const serial = inspectCertificate(signLeaf(rsaCa, { commonName: `leaf-${index}`, extKeyUsage: ['clientAuth'] }, key.publicKey, DAY_MS, NOW, { usedSerials: used })).serialNumber;
      assert.ok(!used.has(serial), `serial ${serial} repeated`);
      used.add(serial);
    }
  });
});
