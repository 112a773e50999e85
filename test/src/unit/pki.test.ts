import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import {
  KEY_ALGORITHMS,
  type CertificateTemplate,
  type KeyAlgorithm,
  type KeyPair,
  createCertificate,
  createCsr,
  generateKeyPair,
  inspectCertificate,
  isSignedBy,
  keyAlgorithmOf,
  loadPrivateKey,
  normalizeIp,
  parseCsr,
  privateKeyToPem,
  publicKeySha256,
  publicKeyToDer,
  publicKeyToPem,
  randomSerialNumber,
  readSerialAndValidity,
  splitPem,
} from '@kubetrust/shared/dist/pki/index';
import { publicKeyFromSpki } from '@kubetrust/shared/dist/pki/keys';

const execFileAsync = promisify(execFile);
const OPENSSL = '/usr/bin/openssl';
const CFSSL = '/usr/bin/cfssl';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

// ---------------------------------------------------------------------------------------------
// Helpers

/** Runs openssl in `cwd`; a non-zero exit rejects with its stderr in the message. */
async function openssl(cwd: string, ...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileAsync(OPENSSL, args, { cwd });
}

async function opensslBinary(cwd: string, ...args: string[]): Promise<Buffer> {
  const { stdout } = await execFileAsync(OPENSSL, args, { cwd, encoding: 'buffer' });
  return stdout;
}

/** Creates a fresh directory before the enclosing describe block and removes it afterwards. */
function useTemporaryDirectory(): { readonly path: string } {
  const directory = { path: '' };
  before(() => {
    directory.path = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-pki-'));
  });
  after(() => {
    fs.rmSync(directory.path, { recursive: true, force: true });
  });
  return directory;
}

function writeFile(directory: string, name: string, contents: string | Buffer): string {
  fs.writeFileSync(path.join(directory, name), contents);
  return name;
}

// RSA key generation takes a noticeable fraction of a second, so each algorithm's key is generated once.
const sharedKeyPairs = new Map<KeyAlgorithm, Promise<KeyPair>>();
function sharedKeyPair(algorithm: KeyAlgorithm): Promise<KeyPair> {
  let keyPair = sharedKeyPairs.get(algorithm);
  if (keyPair === undefined) {
    keyPair = generateKeyPair(algorithm);
    sharedKeyPairs.set(algorithm, keyPair);
  }
  return keyPair;
}

function caTemplate(commonName: string, overrides: Partial<CertificateTemplate> = {}): CertificateTemplate {
  const now = Date.now();
  return {
    subject: { commonName, organizations: ['kubetrust'] },
    notBefore: new Date(now - HOUR_MS),
    notAfter: new Date(now + 3650 * DAY_MS),
    isCA: true,
    keyUsage: ['digitalSignature', 'keyCertSign', 'cRLSign'],
    extKeyUsage: [],
    ...overrides,
  };
}

function leafTemplate(commonName: string, overrides: Partial<CertificateTemplate> = {}): CertificateTemplate {
  const now = Date.now();
  return {
    subject: { commonName, organizations: ['system:nodes', 'kubetrust'] },
    notBefore: new Date(now - HOUR_MS),
    notAfter: new Date(now + 365 * DAY_MS),
    isCA: false,
    keyUsage: ['digitalSignature', 'keyEncipherment'],
    extKeyUsage: ['serverAuth', 'clientAuth'],
    dnsNames: ['node-1.cluster.local', 'localhost'],
    ipAddresses: ['10.0.0.7', '2001:db8::31'],
    uris: ['spiffe://cluster.local/ns/kube-system/sa/node-1'],
    ...overrides,
  };
}

function selfSignedCa(keyPair: KeyPair, commonName: string, overrides: Partial<CertificateTemplate> = {}): string {
  return createCertificate(caTemplate(commonName, overrides), keyPair.publicKey, { privateKey: keyPair.privateKey });
}

function issue(template: CertificateTemplate, subjectKey: crypto.KeyObject, caPem: string, caKey: crypto.KeyObject): string {
  return createCertificate(template, subjectKey, { issuer: { certificatePem: caPem, privateKey: caKey }, privateKey: caKey });
}

/** One DER element: its tag octet, its contents and its whole encoding. */
interface Tlv {
  readonly tag: number;
  readonly contents: Buffer;
  readonly encoded: Buffer;
}

function readTlv(der: Buffer, offset = 0): Tlv {
  const tag = der.readUInt8(offset);
  let length = der.readUInt8(offset + 1);
  let headerLength = 2;
  if ((length & 0x80) !== 0) {
    const lengthOctets = length & 0x7f;
    length = der.readUIntBE(offset + 2, lengthOctets);
    headerLength += lengthOctets;
  }
  const end = offset + headerLength + length;
  assert.ok(end <= der.length, `DER element at ${offset} runs past the end`);
  return { tag, contents: der.subarray(offset + headerLength, end), encoded: der.subarray(offset, end) };
}

function childrenOf(parent: Tlv): Tlv[] {
  const children: Tlv[] = [];
  let offset = 0;
  while (offset < parent.contents.length) {
    const child = readTlv(parent.contents, offset);
    children.push(child);
    offset += child.encoded.length;
  }
  return children;
}

function elementAt(elements: readonly Tlv[], index: number): Tlv {
  const element = elements[index];
  assert.ok(element !== undefined, `missing DER element ${index}`);
  return element;
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(BEGIN|END) [^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

/** TBSCertificate fields of a v3 certificate: version, serial, signature, issuer, validity, subject, ... */
function tbsFields(certificatePem: string): Tlv[] {
  const certificate = readTlv(pemToDer(certificatePem));
  return childrenOf(elementAt(childrenOf(certificate), 0));
}

const TBS = { serialNumber: 1, issuer: 3, validity: 4, subject: 5 } as const;
const TAG = { integer: 0x02, utcTime: 0x17, generalizedTime: 0x18 } as const;

/** Returns the hex key identifier that `openssl x509 -text` prints after `label`. */
function keyIdentifierFromText(text: string, label: string): string {
  const match = new RegExp(`${label}: *\\n\\s*(?:keyid:)?([0-9A-F:]+)`).exec(text);
  assert.ok(match !== null, `no ${label} in:\n${text}`);
  return match[1] ?? '';
}

const SIGNATURE_ALGORITHM_NAMES: Readonly<Record<KeyAlgorithm, string>> = {
  'RSA-2048': 'sha256WithRSAEncryption',
  'RSA-3072': 'sha256WithRSAEncryption',
  'RSA-4096': 'sha256WithRSAEncryption',
  'ECDSA-P256': 'ecdsa-with-SHA256',
  'ECDSA-P384': 'ecdsa-with-SHA384',
};

// ---------------------------------------------------------------------------------------------

describe('certificate chain verified by OpenSSL', () => {
  const directory = useTemporaryDirectory();

  KEY_ALGORITHMS.forEach((algorithm, index) => {
    // The leaf key takes the next algorithm, so every algorithm is used both to sign and to be certified.
    const leafAlgorithm = KEY_ALGORITHMS[(index + 1) % KEY_ALGORITHMS.length] ?? 'ECDSA-P256';

    it(`${algorithm} CA with ${leafAlgorithm} leaf`, async () => {
      const caKey = await sharedKeyPair(algorithm);
      const leafKey = await sharedKeyPair(leafAlgorithm);
      const caPem = selfSignedCa(caKey, `kubetrust ${algorithm} CA`);
      const leafPem = issue(leafTemplate('system:node:node-1'), leafKey.publicKey, caPem, caKey.privateKey);
      const caFile = writeFile(directory.path, `ca-${algorithm}.pem`, caPem);
      const leafFile = writeFile(directory.path, `leaf-${algorithm}.pem`, leafPem);

      for (const purpose of ['sslserver', 'sslclient']) {
        const { stdout } = await openssl(directory.path, 'verify', '-x509_strict', '-purpose', purpose, '-CAfile', caFile, leafFile);
        assert.equal(stdout.trim(), `${leafFile}: OK`);
      }

      const leafText = (await openssl(directory.path, 'x509', '-noout', '-text', '-in', leafFile)).stdout;
      assert.match(leafText, /Version: 3 \(0x2\)/);
      assert.match(leafText, new RegExp(`Signature Algorithm: ${SIGNATURE_ALGORITHM_NAMES[algorithm]}`));
      assert.match(leafText, new RegExp(`Issuer: CN = kubetrust ${algorithm} CA, O = kubetrust\\n`));
      assert.match(leafText, /Subject: CN = system:node:node-1, O = system:nodes, O = kubetrust\n/);
      assert.match(leafText, /X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
      assert.match(leafText, /X509v3 Key Usage: critical\n\s+Digital Signature, Key Encipherment\n/);
      assert.match(leafText, /X509v3 Extended Key Usage: *\n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/);
      assert.match(leafText, /DNS:node-1\.cluster\.local, DNS:localhost, /);
      assert.match(leafText, /IP Address:10\.0\.0\.7, IP Address:2001:DB8:0:0:0:0:0:31, /);
      assert.match(leafText, /URI:spiffe:\/\/cluster\.local\/ns\/kube-system\/sa\/node-1\n/);

      const caText = (await openssl(directory.path, 'x509', '-noout', '-text', '-in', caFile)).stdout;
      assert.match(caText, /X509v3 Basic Constraints: critical\n\s+CA:TRUE\n/);
      assert.match(caText, /X509v3 Key Usage: critical\n\s+Digital Signature, Certificate Sign, CRL Sign\n/);
      assert.doesNotMatch(caText, /Extended Key Usage/);
      assert.doesNotMatch(caText, /Authority Key Identifier/);
      assert.equal(
        keyIdentifierFromText(leafText, 'X509v3 Authority Key Identifier'),
        keyIdentifierFromText(caText, 'X509v3 Subject Key Identifier'),
      );
    });
  });

  it('leaf from an OpenSSL-made CA', async () => {
    const cwd = directory.path;
    await openssl(
      cwd, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', 'openssl-ca.key', '-out', 'openssl-ca.pem', '-days', '30',
      '-subj', '/C=DE/ST=Berlin/O=Example Org/CN=Example Root',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    );
    const caPem = fs.readFileSync(path.join(cwd, 'openssl-ca.pem'), 'utf8');
    const caKey = loadPrivateKey(fs.readFileSync(path.join(cwd, 'openssl-ca.key')));
    const leafKey = await sharedKeyPair('ECDSA-P256');
    const notAfter = new Date(Date.now() + 7 * DAY_MS);
    const leafPem = issue(leafTemplate('etcd-peer', { notAfter }), leafKey.publicKey, caPem, caKey);
    writeFile(cwd, 'openssl-leaf.pem', leafPem);

    const { stdout } = await openssl(cwd, 'verify', '-x509_strict', '-CAfile', 'openssl-ca.pem', 'openssl-leaf.pem');
    assert.equal(stdout.trim(), 'openssl-leaf.pem: OK');
    assert.deepEqual(
      elementAt(tbsFields(leafPem), TBS.issuer).encoded,
      elementAt(tbsFields(caPem), TBS.subject).encoded,
    );
    assert.equal(isSignedBy(leafPem, caPem), true);
  });
});

describe('inspectCertificate', () => {
  const directory = useTemporaryDirectory();

  it('reads back a leaf', async () => {
    const caKey = await sharedKeyPair('ECDSA-P256');
    const leafKey = await sharedKeyPair('ECDSA-P384');
    const caPem = selfSignedCa(caKey, 'inspect CA');
    const notBefore = new Date('2025-03-01T10:00:00.750Z');
    const notAfter = new Date('2026-03-01T10:00:00Z');
    const template = leafTemplate('kube-apiserver', {
      notBefore,
      notAfter,
      serialNumber: 0xabcdefn,
      ipAddresses: ['10.96.0.1', '2001:DB8:0:0:0:0:0:31', '0:0:0:0:0:0:0:1'],
    });
    const leafPem = issue(template, leafKey.publicKey, caPem, caKey.privateKey);

    const info = inspectCertificate(leafPem);
    assert.equal(info.pem, leafPem);
    assert.deepEqual(info.subject, { commonName: 'kube-apiserver', organizations: ['system:nodes', 'kubetrust'] });
    assert.deepEqual(info.issuer, { commonName: 'inspect CA', organizations: ['kubetrust'] });
    assert.equal(info.serialNumber, 'abcdef');
    assert.equal(info.notBefore.toISOString(), '2025-03-01T10:00:00.000Z');
    assert.equal(info.notAfter.toISOString(), '2026-03-01T10:00:00.000Z');
    assert.equal(info.isCA, false);
    assert.deepEqual(info.dnsNames, ['node-1.cluster.local', 'localhost']);
    assert.deepEqual(info.ipAddresses, ['10.96.0.1', '2001:db8::31', '::1']);
    assert.deepEqual(info.uris, ['spiffe://cluster.local/ns/kube-system/sa/node-1']);
    assert.deepEqual(info.extKeyUsage, ['serverAuth', 'clientAuth']);
    assert.equal(info.publicKeySha256, publicKeySha256(leafKey.publicKey));
    assert.equal(inspectCertificate(caPem).isCA, true);
  });

  it('reads an OpenSSL certificate', async () => {
    const cwd = directory.path;
    await openssl(
      cwd, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', 'server.key', '-out', 'server.pem', '-days', '2', '-set_serial', '0x00ff01',
      '-subj', '/O=Org A/O=Org B/CN=server.example',
      '-addext', 'basicConstraints=critical,CA:FALSE',
      '-addext', 'extendedKeyUsage=serverAuth,codeSigning',
      '-addext', 'subjectAltName=DNS:server.example,IP:fd00:0:0:0:0:0:0:10,URI:https://server.example/',
    );
    const pem = fs.readFileSync(path.join(cwd, 'server.pem'), 'utf8');
    const publicKeyDer = await opensslBinary(cwd, 'pkey', '-in', 'server.key', '-pubout', '-outform', 'DER');

    const info = inspectCertificate(pem);
    assert.deepEqual(info.subject, { commonName: 'server.example', organizations: ['Org A', 'Org B'] });
    assert.equal(info.serialNumber, 'ff01');
    assert.equal(info.isCA, false);
    assert.deepEqual(info.dnsNames, ['server.example']);
    assert.deepEqual(info.ipAddresses, ['fd00::10']);
    assert.deepEqual(info.uris, ['https://server.example/']);
    assert.deepEqual(info.extKeyUsage, ['serverAuth', '1.3.6.1.5.5.7.3.3']);
    assert.equal(info.publicKeySha256, crypto.createHash('sha256').update(publicKeyDer).digest('hex'));
    assert.equal(info.notAfter.getTime() - info.notBefore.getTime(), 2 * DAY_MS);
  });

  it('rejects input without a certificate', async () => {
    const keyPem = privateKeyToPem((await sharedKeyPair('ECDSA-P256')).privateKey);
    assert.throws(() => inspectCertificate(keyPem), /no CERTIFICATE PEM block found/);
    assert.throws(() => inspectCertificate(''), /no CERTIFICATE PEM block found/);
  });

  it('isSignedBy checks key and name', async () => {
    const caKey = await sharedKeyPair('ECDSA-P256');
    const otherKey = await generateKeyPair('ECDSA-P256');
    const caPem = selfSignedCa(caKey, 'signing CA');
    const sameNameCaPem = selfSignedCa(otherKey, 'signing CA');
    const otherNameCaPem = selfSignedCa(caKey, 'other name CA');
    const leafPem = issue(leafTemplate('client'), otherKey.publicKey, caPem, caKey.privateKey);

    assert.equal(isSignedBy(leafPem, caPem), true);
    assert.equal(isSignedBy(caPem, caPem), true);
    assert.equal(isSignedBy(leafPem, sameNameCaPem), false);
    assert.equal(isSignedBy(leafPem, otherNameCaPem), false);
    assert.equal(isSignedBy(caPem, leafPem), false);
  });
});

describe('serial numbers', () => {
  it('random serials are positive and unique', () => {
    const serials = Array.from({ length: 200 }, () => randomSerialNumber());
    for (const serial of serials) {
      assert.ok(serial > 0n, `serial ${serial} is not positive`);
      assert.ok(serial < 1n << 127n, `serial ${serial.toString(16)} is not below 2^127`);
    }
    assert.equal(new Set(serials).size, serials.length);
  });

  it('default serials encode as minimal DER', async () => {
    const caKey = await sharedKeyPair('ECDSA-P256');
    const caPem = selfSignedCa(caKey, 'serial CA');
    const seen = new Set<string>();
    for (let index = 0; index < 200; index += 1) {
      const leafPem = issue(leafTemplate(`leaf-${index}`), caKey.publicKey, caPem, caKey.privateKey);
      const serial = elementAt(tbsFields(leafPem), TBS.serialNumber);
      const octets = serial.contents;

      assert.equal(serial.tag, TAG.integer);
      assert.ok(octets.length >= 1, 'serial has no octets');
      assert.ok(octets.length <= 20, `serial has ${octets.length} octets`);
      assert.equal((octets[0] ?? 0) & 0x80, 0, `serial ${octets.toString('hex')} is negative`);
      const redundantZero = octets.length > 1 && octets[0] === 0 && ((octets[1] ?? 0) & 0x80) === 0;
      assert.equal(redundantZero, false, `serial ${octets.toString('hex')} has a redundant leading zero`);
      assert.notEqual(BigInt(`0x${octets.toString('hex')}`), 0n);

      const hex = inspectCertificate(leafPem).serialNumber;
      assert.equal(hex, BigInt(`0x${octets.toString('hex')}`).toString(16));
      seen.add(hex);
    }
    assert.equal(seen.size, 200);
  });

  const explicitSerials: ReadonlyArray<readonly [bigint, string]> = [
    [1n, '01'],
    [0x7fn, '7f'],
    [0x80n, '0080'],
    [0xffn, '00ff'],
    [0x100n, '0100'],
    [0x7fffn, '7fff'],
    [0x8000n, '008000'],
    [(1n << 159n) - 1n, `7f${'ff'.repeat(19)}`],
  ];
  for (const [serial, expectedHex] of explicitSerials) {
    it(`serial ${serial.toString(16)} encodes as ${expectedHex}`, async () => {
      const caKey = await sharedKeyPair('ECDSA-P256');
      const caPem = selfSignedCa(caKey, 'explicit serial CA', { serialNumber: serial });
      const encoded = elementAt(tbsFields(caPem), TBS.serialNumber);
      assert.equal(encoded.contents.toString('hex'), expectedHex);
      assert.equal(inspectCertificate(caPem).serialNumber, serial.toString(16));
    });
  }

  it('rejects zero, negative and 21-octet serials', async () => {
    const caKey = await sharedKeyPair('ECDSA-P256');
    for (const serialNumber of [0n, -1n, 1n << 159n]) {
      assert.throws(() => selfSignedCa(caKey, 'bad serial CA', { serialNumber }), /invalid serialNumber/);
    }
  });
});

describe('issuer name encoding', () => {
  it('leaf issuer equals CA subject bytes', async () => {
    const caKey = await sharedKeyPair('ECDSA-P256');
    const caPem = createCertificate(
      caTemplate('Ünïcode CA', { subject: { commonName: 'Ünïcode CA', organizations: ['O1', 'O2', 'O3'] } }),
      caKey.publicKey,
      { privateKey: caKey.privateKey },
    );
    const leafPem = issue(leafTemplate('leaf'), caKey.publicKey, caPem, caKey.privateKey);

    const caFields = tbsFields(caPem);
    const leafFields = tbsFields(leafPem);
    assert.deepEqual(elementAt(leafFields, TBS.issuer).encoded, elementAt(caFields, TBS.subject).encoded);
    assert.deepEqual(elementAt(caFields, TBS.issuer).encoded, elementAt(caFields, TBS.subject).encoded);
    assert.deepEqual(inspectCertificate(leafPem).issuer, { commonName: 'Ünïcode CA', organizations: ['O1', 'O2', 'O3'] });
  });
});

describe('validity encoding', () => {
  const directory = useTemporaryDirectory();

  const boundaries: ReadonlyArray<readonly [string, number, string]> = [
    ['1949-12-31T23:59:59Z', TAG.generalizedTime, '19491231235959Z'],
    ['1950-01-01T00:00:00Z', TAG.utcTime, '500101000000Z'],
    ['2049-12-31T23:59:59Z', TAG.utcTime, '491231235959Z'],
    ['2050-01-01T00:00:00Z', TAG.generalizedTime, '20500101000000Z'],
    ['2100-01-01T00:00:00Z', TAG.generalizedTime, '21000101000000Z'],
  ];
  for (const [iso, tag, text] of boundaries) {
    it(`notBefore ${iso} encodes as ${text}`, async () => {
      const caKey = await sharedKeyPair('ECDSA-P256');
      const notBefore = new Date(iso);
      const caPem = selfSignedCa(caKey, 'time CA', { notBefore, notAfter: new Date(notBefore.getTime() + DAY_MS) });
      const encoded = elementAt(childrenOf(elementAt(tbsFields(caPem), TBS.validity)), 0);
      assert.equal(encoded.tag, tag);
      assert.equal(encoded.contents.toString('latin1'), text);
      assert.equal(inspectCertificate(caPem).notBefore.toISOString(), notBefore.toISOString());
    });
  }

  it('notAfter in 2100 reads back', async () => {
    const caKey = await sharedKeyPair('ECDSA-P256');
    const notAfter = new Date('2100-01-01T00:00:00.999Z');
    const caPem = selfSignedCa(caKey, 'long-lived CA', { notAfter });
    const leafPem = issue(leafTemplate('long-lived leaf', { notAfter }), caKey.publicKey, caPem, caKey.privateKey);
    const caFile = writeFile(directory.path, 'ca-2100.pem', caPem);
    const leafFile = writeFile(directory.path, 'leaf-2100.pem', leafPem);

    const encoded = elementAt(childrenOf(elementAt(tbsFields(leafPem), TBS.validity)), 1);
    assert.equal(encoded.tag, TAG.generalizedTime);
    assert.equal(encoded.contents.toString('latin1'), '21000101000000Z');
    assert.equal(inspectCertificate(leafPem).notAfter.toISOString(), '2100-01-01T00:00:00.000Z');
    const { stdout } = await openssl(directory.path, 'x509', '-noout', '-enddate', '-in', leafFile);
    assert.equal(stdout.trim(), 'notAfter=Jan  1 00:00:00 2100 GMT');
    const verified = await openssl(directory.path, 'verify', '-x509_strict', '-CAfile', caFile, leafFile);
    assert.equal(verified.stdout.trim(), `${leafFile}: OK`);
  });
});

describe('certification requests', () => {
  const directory = useTemporaryDirectory();
  const subject = {
    commonName: 'system:node:node-1',
    organizations: ['system:nodes'],
    dnsNames: ['node-1', 'node-1.cluster.local'],
    ipAddresses: ['10.0.0.7', 'FD00:0:0:0:0:0:0:7'],
  };

  for (const algorithm of ['ECDSA-P256', 'RSA-2048'] as const) {
    it(`${algorithm} CSR round trip`, async () => {
      const keyPair = await sharedKeyPair(algorithm);
      const csrPem = createCsr(subject, keyPair);
      const csrFile = writeFile(directory.path, `request-${algorithm}.csr`, csrPem);

      await openssl(directory.path, 'req', '-verify', '-noout', '-in', csrFile);
      const text = (await openssl(directory.path, 'req', '-noout', '-text', '-in', csrFile)).stdout;
      assert.match(text, /Subject: CN = system:node:node-1, O = system:nodes\n/);
      assert.match(text, /DNS:node-1, DNS:node-1\.cluster\.local, IP Address:10\.0\.0\.7, IP Address:FD00:0:0:0:0:0:0:7\n/);

      const parsed = parseCsr(csrPem);
      assert.equal(parsed.commonName, 'system:node:node-1');
      assert.deepEqual(parsed.organizations, ['system:nodes']);
      assert.deepEqual(parsed.dnsNames, ['node-1', 'node-1.cluster.local']);
      assert.deepEqual(parsed.ipAddresses, ['10.0.0.7', 'fd00::7']);
      assert.equal(publicKeySha256(parsed.publicKey), publicKeySha256(keyPair.publicKey));
    });
  }

  it('CSR without SANs', async () => {
    const keyPair = await sharedKeyPair('ECDSA-P384');
    const csrPem = createCsr({ commonName: 'kube-admin' }, keyPair);
    const csrFile = writeFile(directory.path, 'no-sans.csr', csrPem);
    await openssl(directory.path, 'req', '-verify', '-noout', '-in', csrFile);
    const parsed = parseCsr(csrPem);
    assert.equal(parsed.commonName, 'kube-admin');
    assert.deepEqual(parsed.organizations, []);
    assert.deepEqual(parsed.dnsNames, []);
    assert.deepEqual(parsed.ipAddresses, []);
  });

  it('parses an OpenSSL CSR', async () => {
    const keyPair = await sharedKeyPair('ECDSA-P256');
    const keyFile = writeFile(directory.path, 'openssl-request.key', privateKeyToPem(keyPair.privateKey));
    await openssl(
      directory.path, 'req', '-new', '-key', keyFile, '-out', 'openssl-request.csr',
      '-subj', '/O=system:nodes/O=extra/CN=system:node:node-2',
      '-addext', 'subjectAltName=DNS:node-2,IP:192.168.1.2,IP:fd00:0:0:0:0:0:0:2',
    );
    const parsed = parseCsr(fs.readFileSync(path.join(directory.path, 'openssl-request.csr')));
    assert.equal(parsed.commonName, 'system:node:node-2');
    assert.deepEqual(parsed.organizations, ['system:nodes', 'extra']);
    assert.deepEqual(parsed.dnsNames, ['node-2']);
    assert.deepEqual(parsed.ipAddresses, ['192.168.1.2', 'fd00::2']);
    assert.equal(publicKeySha256(parsed.publicKey), publicKeySha256(keyPair.publicKey));
  });

  it('rejects a flipped signature byte', async () => {
    const der = pemToDer(createCsr(subject, await sharedKeyPair('ECDSA-P256')));
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    assert.throws(() => parseCsr(tampered), /^Error: invalid CSR: the signature does not verify/);
  });

  it('rejects a changed subject', async () => {
    const der = pemToDer(createCsr(subject, await sharedKeyPair('ECDSA-P256')));
    const at = der.indexOf('node-1', 0, 'latin1');
    assert.ok(at > 0);
    der[at + 5] = '2'.charCodeAt(0);
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    assert.throws(() => parseCsr(tampered), /^Error: invalid CSR: the signature does not verify/);
  });

  it('rejects malformed input', async () => {
    const der = pemToDer(createCsr(subject, await sharedKeyPair('ECDSA-P256')));
    const truncated = `-----BEGIN CERTIFICATE REQUEST-----\n${der.subarray(0, 40).toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    assert.throws(() => parseCsr(truncated), /^Error: invalid CSR: certification request is not valid DER/);
    assert.throws(() => parseCsr('not a CSR'), /^Error: invalid CSR: no CERTIFICATE REQUEST PEM block found/);
    const caPem = selfSignedCa(await sharedKeyPair('ECDSA-P256'), 'not a request');
    assert.throws(() => parseCsr(caPem), /^Error: invalid CSR: no CERTIFICATE REQUEST PEM block found/);
  });

  it('createCsr rejects invalid names', async () => {
    const keyPair = await sharedKeyPair('ECDSA-P256');
    const otherKeyPair = await sharedKeyPair('ECDSA-P384');
    assert.throws(() => createCsr({ ...subject, commonName: '' }, keyPair), /invalid commonName ""/);
    assert.throws(() => createCsr({ ...subject, ipAddresses: ['10.0.0.300'] }, keyPair), /invalid ipAddresses\[0\] "10\.0\.0\.300"/);
    assert.throws(() => createCsr({ ...subject, dnsNames: ['bad name'] }, keyPair), /invalid dnsNames\[0\] "bad name"/);
    assert.throws(
      () => createCsr(subject, { privateKey: keyPair.privateKey, publicKey: otherKeyPair.publicKey }),
      /invalid keyPair/,
    );
  });
});

describe('certificate template errors', () => {
  let caKey: KeyPair;
  let caPem: string;
  before(async () => {
    caKey = await sharedKeyPair('ECDSA-P256');
    caPem = selfSignedCa(caKey, 'errors CA');
  });

  const notBefore = new Date('2030-01-01T00:00:00Z');
  const leafCases: ReadonlyArray<readonly [string, Partial<CertificateTemplate>, RegExp]> = [
    ['empty commonName', { subject: { commonName: '' } }, /invalid subject\.commonName ""/],
    ['blank organization', { subject: { commonName: 'x', organizations: ['ok', ' '] } }, /invalid subject\.organizations\[1\]/],
    ['leaf without extKeyUsage', { extKeyUsage: [] }, /invalid extKeyUsage \[\]: a leaf certificate/],
    ['notAfter equal to notBefore', { notBefore, notAfter: notBefore }, /invalid notAfter 2030-01-01T00:00:00\.000Z: must be later than notBefore/],
    ['notAfter before notBefore', { notBefore, notAfter: new Date('2029-12-31T00:00:00Z') }, /invalid notAfter 2029-12-31T00:00:00\.000Z/],
    ['invalid notBefore', { notBefore: new Date('nonsense') }, /invalid notBefore "Invalid Date"/],
    ['invalid IPv4 address', { ipAddresses: ['10.0.0.1', '10.0.0.256'] }, /invalid ipAddresses\[1\] "10\.0\.0\.256"/],
    ['IPv6 address with zone', { ipAddresses: ['fe80::1%eth0'] }, /invalid ipAddresses\[0\] "fe80::1%eth0"/],
    ['DNS name with space', { dnsNames: ['node 1'] }, /invalid dnsNames\[0\] "node 1"/],
    ['relative URI', { uris: ['/not/absolute'] }, /invalid uris\[0\] "\/not\/absolute"/],
    ['leaf with keyCertSign', { keyUsage: ['digitalSignature', 'keyCertSign'] }, /invalid keyUsage \[digitalSignature, keyCertSign\]/],
    ['leaf outliving the CA', { notAfter: new Date(Date.now() + 36500 * DAY_MS) }, /invalid notAfter .*: later than the issuer's notAfter/],
  ];
  for (const [name, overrides, expected] of leafCases) {
    it(name, () => {
      assert.throws(() => issue(leafTemplate('leaf', overrides), caKey.publicKey, caPem, caKey.privateKey), expected);
    });
  }

  it('CA with extKeyUsage', () => {
    assert.throws(() => selfSignedCa(caKey, 'CA', { extKeyUsage: ['serverAuth'] }), /invalid extKeyUsage \[serverAuth\]: must be empty for a CA/);
  });

  it('CA without keyCertSign', () => {
    assert.throws(() => selfSignedCa(caKey, 'CA', { keyUsage: ['digitalSignature'] }), /invalid keyUsage \[digitalSignature\]: a CA certificate needs keyCertSign/);
  });

  it('signing key of another CA', async () => {
    const otherKey = await sharedKeyPair('ECDSA-P384');
    assert.throws(() => issue(leafTemplate('leaf'), caKey.publicKey, caPem, otherKey.privateKey), /invalid issuer\.privateKey/);
    assert.throws(
      () => createCertificate(leafTemplate('leaf'), caKey.publicKey, {
        issuer: { certificatePem: caPem, privateKey: caKey.privateKey },
        privateKey: otherKey.privateKey,
      }),
      /invalid signer\.privateKey/,
    );
  });

  it('self-signed with a foreign key', async () => {
    const otherKey = await sharedKeyPair('ECDSA-P384');
    assert.throws(
      () => createCertificate(caTemplate('CA'), caKey.publicKey, { privateKey: otherKey.privateKey }),
      /invalid signer\.privateKey: a self-signed certificate needs the private key of subjectPublicKey/,
    );
  });

  it('leaf as issuer', async () => {
    const leafPem = issue(leafTemplate('leaf'), caKey.publicKey, caPem, caKey.privateKey);
    assert.throws(() => issue(leafTemplate('grandchild'), caKey.publicKey, leafPem, caKey.privateKey), /not a CA certificate/);
  });
});

describe('private key encoding', () => {
  const directory = useTemporaryDirectory();

  const expectedLabels: ReadonlyArray<readonly [KeyAlgorithm, string]> = [
    ['RSA-2048', 'RSA PRIVATE KEY'],
    ['ECDSA-P256', 'EC PRIVATE KEY'],
    ['ECDSA-P384', 'EC PRIVATE KEY'],
  ];
  for (const [algorithm, label] of expectedLabels) {
    it(`${algorithm} key loads in OpenSSL`, async () => {
      const keyPair = await sharedKeyPair(algorithm);
      const pem = privateKeyToPem(keyPair.privateKey);
      assert.match(pem, new RegExp(`^-----BEGIN ${label}-----\\n`));
      const keyFile = writeFile(directory.path, `${algorithm}.key`, pem);

      await openssl(directory.path, 'pkey', '-in', keyFile, '-noout');
      const publicKeyDer = await opensslBinary(directory.path, 'pkey', '-in', keyFile, '-pubout', '-outform', 'DER');
      const expected = crypto.createHash('sha256').update(publicKeyDer).digest('hex');
      assert.equal(publicKeySha256(keyPair.privateKey), expected);
      assert.equal(publicKeySha256(keyPair.publicKey), expected);
      assert.equal(keyAlgorithmOf(keyPair.privateKey), algorithm);
      assert.equal(keyAlgorithmOf(keyPair.publicKey), algorithm);
    });
  }

  it('public key PEM loads in OpenSSL', async () => {
    const keyPair = await sharedKeyPair('ECDSA-P256');
    const pem = publicKeyToPem(keyPair.privateKey);
    assert.match(pem, /^-----BEGIN PUBLIC KEY-----\n/);
    const publicFile = writeFile(directory.path, 'public.pem', pem);
    const der = await opensslBinary(directory.path, 'pkey', '-pubin', '-in', publicFile, '-outform', 'DER');
    assert.deepEqual(der, publicKeyToDer(keyPair.publicKey));
  });

  it('loadPrivateKey reads PKCS#1, SEC1 and PKCS#8', async () => {
    for (const algorithm of ['RSA-2048', 'ECDSA-P256'] as const) {
      const keyPair = await sharedKeyPair(algorithm);
      const keyFile = writeFile(directory.path, `load-${algorithm}.key`, privateKeyToPem(keyPair.privateKey));
      // OpenSSL 3 writes PKCS#8 unless another format is requested.
      const pkcs8 = (await openssl(directory.path, 'pkey', '-in', keyFile)).stdout;
      assert.match(pkcs8, /^-----BEGIN PRIVATE KEY-----\n/);

      const expected = publicKeySha256(keyPair.publicKey);
      assert.equal(publicKeySha256(loadPrivateKey(privateKeyToPem(keyPair.privateKey))), expected);
      assert.equal(publicKeySha256(loadPrivateKey(Buffer.from(pkcs8))), expected);
    }
  });

  it('loadPrivateKey rejects other PEM', async () => {
    const keyPair = await sharedKeyPair('ECDSA-P256');
    const keyFile = writeFile(directory.path, 'encrypt-me.key', privateKeyToPem(keyPair.privateKey));
    const encrypted = (await openssl(directory.path, 'pkey', '-in', keyFile, '-aes256', '-passout', 'pass:secret')).stdout;
    assert.match(encrypted, /ENCRYPTED PRIVATE KEY/);

    assert.throws(() => loadPrivateKey(encrypted), /^Error: invalid private key/);
    assert.throws(() => loadPrivateKey(selfSignedCa(keyPair, 'not a key')), /^Error: invalid private key/);
    assert.throws(() => loadPrivateKey(publicKeyToPem(keyPair.publicKey)), /^Error: invalid private key/);
    assert.throws(() => loadPrivateKey('garbage'), /^Error: invalid private key/);
  });

  it('keyAlgorithmOf rejects other keys', async () => {
    const generate = promisify(crypto.generateKeyPair);
    const p521 = await generate('ec', { namedCurve: 'secp521r1' });
    const ed25519 = await generate('ed25519', {});
    assert.equal(keyAlgorithmOf(p521.privateKey), undefined);
    assert.equal(keyAlgorithmOf(ed25519.publicKey), undefined);
  });

  it('generateKeyPair rejects unknown algorithms', async () => {
    await assert.rejects(generateKeyPair('RSA-1024' as KeyAlgorithm), /invalid key algorithm "RSA-1024"/);
  });
});

describe('normalizeIp', () => {
  const cases: ReadonlyArray<readonly [string, string]> = [
    ['10.0.0.1', '10.0.0.1'],
    ['2001:DB8:0:0:0:0:0:31', '2001:db8::31'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['::', '::'],
    ['fe80::', 'fe80::'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ['0:0:1:0:0:1:0:0', '::1:0:0:1:0:0'],
    ['2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'],
    ['::ffff:1.2.3.4', '::ffff:102:304'],
  ];
  for (const [input, expected] of cases) {
    it(`${input} becomes ${expected}`, () => {
      assert.equal(normalizeIp(input), expected);
      if (input.includes(':')) {
        assert.equal(normalizeIp(input), new URL(`http://[${input}]/`).hostname.slice(1, -1));
      }
    });
  }

  it('rejects invalid addresses', () => {
    for (const input of ['10.0.0.256', '01.2.3.4', '1.2.3', 'fe80::1%eth0', '1::2::3', '', 'localhost']) {
      assert.throws(() => normalizeIp(input), /invalid IP address/, input);
    }
  });
});

describe('splitPem', () => {
  it('splits and normalises a bundle', async () => {
    const keyPair = await sharedKeyPair('ECDSA-P256');
    const first = selfSignedCa(keyPair, 'first');
    const second = selfSignedCa(keyPair, 'second');
    const keyPem = privateKeyToPem(keyPair.privateKey);
    const body = second.split('\n').slice(1, -2).join('');
    const unwrapped = `-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----`;
    const bundle = `intro text\r\n${first.replace(/\n/g, '\r\n')}${keyPem}\n${unwrapped}`;

    const blocks = splitPem(bundle);
    assert.deepEqual(blocks, [first, keyPem, second]);
    assert.deepEqual(splitPem(Buffer.from(bundle), 'CERTIFICATE'), [first, second]);
    assert.deepEqual(splitPem(bundle, 'EC PRIVATE KEY'), [keyPem]);
    assert.deepEqual(splitPem(bundle, 'CERTIFICATE REQUEST'), []);
  });
});

describe('Go x509 parser (cfssl)', () => {
  const directory = useTemporaryDirectory();

  before(() => {
    assert.ok(fs.existsSync(CFSSL), `${CFSSL} is missing: \`.ci/run\` installs the Debian package golang-cfssl`);
  });

  it('parses a leaf and a CSR', async () => {
    const caKey = await sharedKeyPair('ECDSA-P384');
    const leafKey = await sharedKeyPair('ECDSA-P256');
    const caPem = selfSignedCa(caKey, 'go CA');
    const leafPem = issue(leafTemplate('go leaf', { serialNumber: 0x80n }), leafKey.publicKey, caPem, caKey.privateKey);
    const leafFile = writeFile(directory.path, 'go-leaf.pem', leafPem);
    const csrFile = writeFile(directory.path, 'go.csr', createCsr({ commonName: 'go csr', ipAddresses: ['fd00::9'] }, leafKey));

    const certificate = JSON.parse((await execFileAsync(CFSSL, ['certinfo', '-cert', leafFile], { cwd: directory.path })).stdout) as {
      subject: { common_name: string };
      serial_number: string;
      sans: string[];
      sigalg: string;
    };
    assert.equal(certificate.subject.common_name, 'go leaf');
    assert.equal(certificate.serial_number, '128');
    assert.deepEqual(certificate.sans, ['node-1.cluster.local', 'localhost', '10.0.0.7', '2001:db8::31']);
    assert.equal(certificate.sigalg, 'ECDSAWithSHA384');

    const request = JSON.parse((await execFileAsync(CFSSL, ['certinfo', '-csr', csrFile], { cwd: directory.path })).stdout) as {
      Subject: { CommonName: string };
      IPAddresses: string[];
    };
    assert.equal(request.Subject.CommonName, 'go csr');
    assert.deepEqual(request.IPAddresses, ['fd00::9']);
  });
});

describe('fast certificate readers', () => {
  it('read the same serial and validity as a full parse', async () => {
    const caKeys = await generateKeyPair('ECDSA-P256');
    const now = Date.now();
    const caPem = createCertificate(
      { subject: { commonName: 'reader-ca' }, notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000), isCA: true, keyUsage: ['keyCertSign'], extKeyUsage: [] },
      caKeys.publicKey,
      { privateKey: caKeys.privateKey },
    );
    for (const serialNumber of [1n, 0x80n, 0x7fn, 2n ** 126n + 12345n]) {
      const leafKeys = await generateKeyPair('ECDSA-P256');
      const pem = createCertificate(
        { subject: { commonName: 'leaf' }, serialNumber, notBefore: new Date(now - 1000), notAfter: new Date(now + 3_600_000), isCA: false, keyUsage: ['digitalSignature'], extKeyUsage: ['clientAuth'] },
        leafKeys.publicKey,
        { issuer: { certificatePem: caPem, privateKey: caKeys.privateKey }, privateKey: caKeys.privateKey },
      );
      const full = inspectCertificate(pem);
      const fast = readSerialAndValidity(pem);
      assert.equal(fast.serialNumber, full.serialNumber);
      assert.equal(fast.notBefore.getTime(), full.notBefore.getTime());
      assert.equal(fast.notAfter.getTime(), full.notAfter.getTime());
    }
  });

  it('read SPKI as createPublicKey does', async () => {
    const inputs: { label: string; der: Buffer }[] = [];
    for (const algorithm of ['ECDSA-P256', 'ECDSA-P384', 'RSA-2048'] as const) {
      const der = (await generateKeyPair(algorithm)).publicKey.export({ type: 'spki', format: 'der' });
      inputs.push({ label: algorithm, der });
      const offCurve = Buffer.from(der);
      offCurve[offCurve.length - 1]! ^= 0x01;
      inputs.push({ label: `${algorithm} with its last octet changed`, der: offCurve });
    }
    // P-256 with a compressed point: same algorithm identifier, a 33-octet point.
    const p256 = inputs[0]!.der;
    const point = p256.subarray(p256.length - 65);
    const compressed = crypto.ECDH.convertKey(point, 'prime256v1', undefined, undefined, 'compressed') as Buffer;
    inputs.push({ label: 'P-256, compressed point', der: Buffer.concat([Buffer.from([0x30, 0x39]), p256.subarray(2, 23), Buffer.from([0x03, 0x22, 0x00]), compressed]) });
    // RSA without the NULL parameters, which RFC 3279 requires but some encoders leave out.
    const rsa = inputs[4]!.der;
    const withoutNull = Buffer.concat([rsa.subarray(0, 4), Buffer.from([0x30, 0x0b]), rsa.subarray(6, 17), rsa.subarray(19)]);
    withoutNull.writeUInt16BE(withoutNull.length - 4, 2);
    inputs.push({ label: 'RSA without NULL parameters', der: withoutNull });

    let accepted = 0;
    for (const { label, der } of inputs) {
      let expected: crypto.KeyObject | Error;
      try {
        expected = crypto.createPublicKey({ key: der, format: 'der', type: 'spki' });
      } catch (error) {
        expected = error as Error;
      }
      if (expected instanceof Error) {
        assert.throws(() => publicKeyFromSpki(der), Error, label);
        continue;
      }
      const key = publicKeyFromSpki(der);
      assert.ok(key.equals(expected), label);
      assert.deepEqual(publicKeyToDer(key), expected.export({ type: 'spki', format: 'der' }), label);
      accepted += 1;
    }
    // The three canonical keys and the compressed point at least; the others depend on OpenSSL's leniency.
    assert.ok(accepted >= 4, `only ${accepted} inputs were accepted`);
  });

  it('import canonical SPKI through JWK', async () => {
    const keys = await Promise.all((['ECDSA-P256', 'ECDSA-P384', 'RSA-2048'] as const).map((algorithm) => generateKeyPair(algorithm)));
    // The module object itself: the namespace that `import *` gives has getters only.
    const cryptoModule = require('node:crypto') as { createPublicKey: typeof crypto.createPublicKey };
    const original = cryptoModule.createPublicKey;
    const formats: string[] = [];
    cryptoModule.createPublicKey = ((input: Parameters<typeof crypto.createPublicKey>[0]) => {
      formats.push(typeof input === 'object' && 'format' in input ? String(input.format) : 'pem');
      return original(input);
    }) as typeof crypto.createPublicKey;
    try {
      for (const { publicKey } of keys) {
        const der = publicKey.export({ type: 'spki', format: 'der' });
        assert.ok(publicKeyFromSpki(der).equals(publicKey));
      }
    } finally {
      cryptoModule.createPublicKey = original;
    }
    assert.deepEqual(formats, ['jwk', 'jwk', 'jwk']);
  });

  it('derive the same public key DER as export', async () => {
    for (const algorithm of ['ECDSA-P256', 'ECDSA-P384', 'RSA-2048'] as const) {
      const keys = await generateKeyPair(algorithm);
      assert.deepEqual(publicKeyToDer(keys.publicKey), keys.publicKey.export({ type: 'spki', format: 'der' }), algorithm);
    }
  });
});
