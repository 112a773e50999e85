import * as crypto from 'node:crypto';
import {
  type Asn1,
  type Extension,
  type PemBlock,
  OID,
  childAt,
  childrenOf,
  decodeName,
  decodeSubjectAltNames,
  formatIp,
  formatPem,
  ipToBytes,
  isContextTag,
  parseDer,
  pemBlockToDer,
  readExtensions,
  readInteger,
  readPemBlocks,
  readTime,
} from './asn1';
import type { DistinguishedName } from './certificate';
import { publicKeySha256 } from './keys';

export interface CertificateInfo {
  /** The CERTIFICATE block that was read, normalised as splitPem returns it. */
  readonly pem: string;
  readonly subject: DistinguishedName;
  readonly issuer: DistinguishedName;
  /** Lowercase hex without leading zeros. A negative serial, which RFC 5280 forbids, gets a leading "-". */
  readonly serialNumber: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCA: boolean;
  readonly dnsNames: readonly string[];
  /** IPv4 in dotted decimal, IPv6 compressed in lowercase as normalizeIp formats it. */
  readonly ipAddresses: readonly string[];
  readonly uris: readonly string[];
  /** 'serverAuth', 'clientAuth', or the dotted OID of any other extended key usage. */
  readonly extKeyUsage: readonly string[];
  /** Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER. */
  readonly publicKeySha256: string;
}

/** Returns every PEM block, or only those with `label`, each normalised with LF line ends and a trailing newline. */
export function splitPem(pem: string | Buffer, label?: string): string[] {
  return readPemBlocks(pem)
    .filter((block) => label === undefined || block.label === label)
    .map(formatPem);
}

function firstCertificateBlock(pem: string | Buffer, context: string): PemBlock {
  const block = readPemBlocks(pem).find((candidate) => candidate.label === 'CERTIFICATE');
  if (block === undefined) {
    throw new Error(`no CERTIFICATE PEM block found in ${context}`);
  }
  return block;
}

/** Returns the DER of the first CERTIFICATE block. `context` names the input in the error. */
export function firstCertificateDer(pem: string | Buffer, context: string): Buffer {
  return pemBlockToDer(firstCertificateBlock(pem, context));
}

/** Fields of a TBSCertificate (RFC 5280, section 4.1), with the extensions decoded. */
export interface TbsCertificate {
  readonly serialNumber: Asn1;
  readonly issuer: Asn1;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly subject: Asn1;
  readonly subjectPublicKeyInfo: Asn1;
  readonly extensions: readonly Extension[];
}

export function readTbsCertificate(der: Buffer): TbsCertificate {
  const tbs = childAt(parseDer(der, 'certificate'), 0, 'certificate');
  const fields = childrenOf(tbs, 'tbsCertificate');
  // The version is an EXPLICIT [0] tag that v1 certificates leave out.
  const first = isContextTag(fields[0], 0) ? 1 : 0;
  const field = (offset: number, name: string): Asn1 => childAt(tbs, first + offset, `tbsCertificate.${name}`);

  const validity = field(3, 'validity');
  // Extensions are the EXPLICIT [3] tag after the optional issuerUniqueID [1] and subjectUniqueID [2].
  const extensionsTag = fields.slice(first + 6).find((node) => isContextTag(node, 3));
  const extensions =
    extensionsTag === undefined
      ? []
      : readExtensions(childAt(extensionsTag, 0, 'tbsCertificate.extensions'), 'tbsCertificate.extensions');

  return {
    serialNumber: field(0, 'serialNumber'),
    issuer: field(2, 'issuer'),
    notBefore: readTime(childAt(validity, 0, 'validity.notBefore'), 'validity.notBefore'),
    notAfter: readTime(childAt(validity, 1, 'validity.notAfter'), 'validity.notAfter'),
    subject: field(4, 'subject'),
    subjectPublicKeyInfo: field(5, 'subjectPublicKeyInfo'),
    extensions,
  };
}

const EXTENDED_KEY_USAGE_NAMES: Readonly<Record<string, string>> = {
  [OID.serverAuth]: 'serverAuth',
  [OID.clientAuth]: 'clientAuth',
};

function formatSerialNumber(serial: bigint): string {
  return serial < 0n ? `-${(-serial).toString(16)}` : serial.toString(16);
}

/** Reads the first CERTIFICATE block. Throws when there is none or it does not parse. */
export function inspectCertificate(pem: string | Buffer): CertificateInfo {
  const block = firstCertificateBlock(pem, 'the input');
  const der = pemBlockToDer(block);
  // OpenSSL parses the whole certificate here and provides the CA flag, the extended key usages and the public key.
  const certificate = new crypto.X509Certificate(der);
  const tbs = readTbsCertificate(der);
  const subjectAltName = tbs.extensions.find((extension) => extension.oid === OID.subjectAltName);
  const names = subjectAltName
    ? decodeSubjectAltNames(subjectAltName.value)
    : { dnsNames: [], ipAddresses: [], uris: [] };

  return {
    pem: formatPem(block),
    subject: decodeName(tbs.subject, 'subject'),
    issuer: decodeName(tbs.issuer, 'issuer'),
    serialNumber: formatSerialNumber(readInteger(tbs.serialNumber, 'serialNumber')),
    notBefore: tbs.notBefore,
    notAfter: tbs.notAfter,
    isCA: certificate.ca,
    ...names,
    // Node returns the extended key usage OIDs as "keyUsage", and undefined when the extension is absent.
    extKeyUsage: (certificate.keyUsage ?? []).map((oid) => EXTENDED_KEY_USAGE_NAMES[oid] ?? oid),
    publicKeySha256: publicKeySha256(certificate.publicKey),
  };
}

/**
 * Checks that `certificatePem` names the subject of `issuerPem` as its issuer and that its
 * signature verifies with the issuer's public key. The issuer check is OpenSSL's
 * X509_check_issued, which also compares the authority and subject key identifiers when both are
 * present and requires keyCertSign when the issuer has a key usage extension.
 */
export function isSignedBy(certificatePem: string, issuerPem: string): boolean {
  const certificate = new crypto.X509Certificate(firstCertificateDer(certificatePem, 'the certificate'));
  const issuer = new crypto.X509Certificate(firstCertificateDer(issuerPem, 'the issuer certificate'));
  return certificate.checkIssued(issuer) && certificate.verify(issuer.publicKey);
}

/**
 * Normalises an IP address as the WHATWG URL parser prints it: IPv4 in dotted decimal, IPv6 in
 * lowercase with the longest zero run compressed ("2001:db8::31"). Throws for invalid text and
 * for an IPv6 zone index.
 */
export function normalizeIp(ip: string): string {
  const bytes = ipToBytes(ip);
  if (bytes === undefined) {
    throw new Error(`invalid IP address "${ip}": expected IPv4 dotted decimal or IPv6 without a zone index`);
  }
  return formatIp(bytes);
}
