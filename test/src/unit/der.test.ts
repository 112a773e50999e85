import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  bitString,
  childAt,
  contextPrimitive,
  decodeName,
  integer,
  objectIdentifier,
  octetString,
  parseDer,
  readInteger,
  readOid,
  readString,
  sequence,
  toDer,
  utf8String,
  verifyStructure,
} from '@kubetrust/shared/dist/pki/asn1';

function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}

describe('DER encoding', () => {
  it('encodes OIDs, integers and strings', () => {
    assert.equal(toDer(objectIdentifier('1.2.840.113549.1.1.11')).toString('hex'), '06092a864886f70d01010b');
    assert.equal(toDer(objectIdentifier('2.5.29.17')).toString('hex'), '0603551d11');
    assert.equal(toDer(integer(0n)).toString('hex'), '020100');
    assert.equal(toDer(integer(127n)).toString('hex'), '02017f');
    assert.equal(toDer(integer(128n)).toString('hex'), '02020080');
    assert.equal(toDer(utf8String('é')).toString('hex'), '0c02c3a9');
    assert.equal(toDer(bitString(hex('ff00'))).toString('hex'), '030300ff00');
    assert.equal(toDer(contextPrimitive(2, Buffer.from('a'))).toString('hex'), '820161');
  });

  it('writes long lengths in the fewest octets', () => {
    const short = toDer(octetString(Buffer.alloc(127, 1)));
    assert.equal(short.subarray(0, 2).toString('hex'), '047f');
    const long = toDer(octetString(Buffer.alloc(200, 1)));
    assert.equal(long.subarray(0, 3).toString('hex'), '0481c8');
    const longer = toDer(sequence([octetString(Buffer.alloc(300, 1))]));
    assert.equal(longer.subarray(0, 8).toString('hex'), '308201300482012c');
    assert.equal(longer.length, 4 + 4 + 300);
  });

  it('round-trips OIDs with large arcs', () => {
    for (const oid of ['2.25.329800735698586629295641978511506172918', '2.999.3', '0.9.2342.19200300.100.1.25', '1.3.6.1.4.1.311.21.7']) {
      assert.equal(readOid(parseDer(toDer(objectIdentifier(oid)), 'oid'), 'oid'), oid);
    }
  });

  it('rejects invalid OID text', () => {
    for (const oid of ['1', '3.1', '1.40', '1.2.x', '']) {
      assert.throws(() => objectIdentifier(oid), /invalid OBJECT IDENTIFIER/, oid);
    }
  });
});

describe('DER parsing', () => {
  it('reads a certificate that OpenSSL wrote', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-der-'));
    try {
      const keyFile = path.join(dir, 'key.pem');
      const certificateFile = path.join(dir, 'cert.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile,
        '-out', certificateFile, '-days', '2', '-subj', '/O=system:nodes/CN=system:node:worker-1', '-addext', 'subjectAltName=DNS:worker-1,IP:10.0.0.7'], { stdio: 'ignore' });
      const certificate = new crypto.X509Certificate(fs.readFileSync(certificateFile));
      const parsed = parseDer(certificate.raw, 'certificate');
      assert.deepEqual(toDer(parsed), certificate.raw);
      const tbs = childAt(parsed, 0, 'certificate');
      const serial = childAt(tbs, 1, 'tbsCertificate');
      assert.equal(readInteger(serial, 'serial').toString(16).toUpperCase().padStart(certificate.serialNumber.length, '0'), certificate.serialNumber);
      assert.deepEqual(decodeName(childAt(tbs, 5, 'tbsCertificate'), 'subject'), { commonName: 'system:node:worker-1', organizations: ['system:nodes'] });
      assert.ok(certificate.verify(certificate.publicKey));
      assert.ok(verifyStructure(parsed, certificate.publicKey, 'certificate'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives back the exact bytes of parsed elements', () => {
    // INTEGER 1 in two octets: not minimal, but what a foreign signer may have signed.
    const der = hex('3009 0202 0001 0603 551d11');
    const parsed = parseDer(der, 'input');
    assert.deepEqual(toDer(parsed), der);
    assert.deepEqual(toDer(childAt(parsed, 0, 'input')), hex('02020001'));
    assert.equal(readInteger(childAt(parsed, 0, 'input'), 'input'), 1n);
    assert.equal(readOid(childAt(parsed, 1, 'input'), 'input'), '2.5.29.17');
  });

  it('reads BMPString as UCS-2', () => {
    assert.equal(readString(parseDer(hex('1e04 0041 00e9'), 'name'), 'name'), 'Aé');
    assert.throws(() => readString(parseDer(hex('1e03 0041 00'), 'name'), 'name'), /BMPString of 3 octets/);
  });

  const invalid: ReadonlyArray<readonly [string, string, RegExp]> = [
    ['long form for a short length', '0481 05 0102030405', /not in the minimal form/],
    ['a length with a leading zero octet', '0482 0081' + '00'.repeat(129), /not in the minimal form/],
    ['an indefinite length', '3080 0500 0000', /indefinite length at offset 0, which only BER allows/],
    ['octets after the element', '0500 00', /1 extra octets after the element/],
    ['a child past its parent', '3003 040501', /the element at offset 2 has 5 octets of contents, but only 1 remain/],
    ['a truncated element', '30', /the input ends inside the element at offset 0/],
    ['a length of five octets', '3085 0000000001 00', /length of 5 octets at offset 0/],
    ['a multi-octet tag', '1f8100 00', /multi-octet tag/],
  ];
  for (const [name, input, message] of invalid) {
    it(`rejects ${name}`, () => {
      assert.throws(() => parseDer(hex(input), 'sample'), (error: Error) => {
        assert.match(error.message, /^sample is not valid DER: /);
        assert.match(error.message, message);
        return true;
      });
    });
  }

  it('rejects nesting deeper than 64', () => {
    let node = parseDer(hex('0500'), 'null');
    for (let depth = 0; depth < 70; depth++) node = sequence([node]);
    const der = toDer(node);
    assert.throws(() => parseDer(der, 'deep'), /deep is not valid DER: elements nest deeper than 64 levels/);
  });

  it('rejects OID subidentifiers with padding', () => {
    assert.throws(() => readOid(parseDer(hex('0603 2a8001'), 'oid'), 'oid'), /not in the fewest octets/);
    assert.throws(() => readOid(parseDer(hex('0602 2a86'), 'oid'), 'oid'), /truncated OBJECT IDENTIFIER/);
    assert.throws(() => readOid(parseDer(hex('0600'), 'oid'), 'oid'), /truncated OBJECT IDENTIFIER/);
  });
});
