import * as crypto from 'node:crypto';
import {
  type Asn1,
  type DerElement,
  type Extension,
  type PemBlock,
  OID,
  childAt,
  childrenOf,
  decodeInteger,
  decodeName,
  decodeSubjectAltNames,
  decodeTime,
  formatIp,
  formatPem,
  ipToBytes,
  isContextTag,
  parseDer,
  pemBlockToDer,
  readExtensions,
  readInteger,
  readDerElement,
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

/** Results of inspectCertificate for recent string inputs, oldest first. */
const inspected = new Map<string, CertificateInfo>();
/** Enough for every CA certificate that a controller signs with, while leaves inspected once pass through. */
const INSPECTED_LIMIT = 32;

function copyInfo(info: CertificateInfo): CertificateInfo {
  return {
    ...info,
    subject: { ...info.subject, organizations: [...(info.subject.organizations ?? [])] },
    issuer: { ...info.issuer, organizations: [...(info.issuer.organizations ?? [])] },
    notBefore: new Date(info.notBefore.getTime()),
    notAfter: new Date(info.notAfter.getTime()),
    dnsNames: [...info.dnsNames],
    ipAddresses: [...info.ipAddresses],
    uris: [...info.uris],
    extKeyUsage: [...info.extKeyUsage],
  };
}

/**
 * Reads the first CERTIFICATE block. Throws when there is none or it does not parse.
 *
 * The result for a string is remembered, and a repeated call returns a fresh copy of it. The
 * controller inspects each CA certificate for every leaf it signs, and parsing one took about
 * 0.3 ms on a 2-vCPU VM (Node 20, OpenSSL 3.0). The most recently used strings are kept.
 */
export function inspectCertificate(pem: string | Buffer): CertificateInfo {
  if (typeof pem !== 'string') return readCertificateInfo(pem);
  let info = inspected.get(pem);
  if (info === undefined) {
    info = readCertificateInfo(pem);
    if (inspected.size >= INSPECTED_LIMIT) inspected.delete(inspected.keys().next().value as string);
  } else {
    inspected.delete(pem);
  }
  inspected.set(pem, info);
  return copyInfo(info);
}

function readCertificateInfo(pem: string | Buffer): CertificateInfo {
  const block = firstCertificateBlock(pem, 'the input');
  const der = pemBlockToDer(block);
  const formatted = formatPem(block);
  // OpenSSL parses the whole certificate here and provides the CA flag, the extended key usages and the public key.
  const certificate = new crypto.X509Certificate(der);
  rememberParsed(formatted, certificate);
  const tbs = readTbsCertificate(der);
  const subjectAltName = tbs.extensions.find((extension) => extension.oid === OID.subjectAltName);
  const names = subjectAltName
    ? decodeSubjectAltNames(subjectAltName.value)
    : { dnsNames: [], ipAddresses: [], uris: [] };

  return {
    pem: formatted,
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

/** Tag octets that readSerialAndValidity expects. */
const DER_TAG = { sequence: 0x30, integer: 0x02, explicitVersion: 0xa0 } as const;

function expectDerTag(element: DerElement, tag: number, context: string): DerElement {
  if (element.tag !== tag) {
    throw new Error(`${context}: expected tag 0x${tag.toString(16)}, got 0x${element.tag.toString(16)}`);
  }
  return element;
}

/**
 * Reads the serial number and validity of the first CERTIFICATE block, formatted as
 * inspectCertificate formats them. It walks the DER to those fields and decodes nothing else, so it
 * does not check the rest of the certificate. That suits a certificate that createCertificate has
 * just built, where a full inspection cost about 0.4 ms on a 2-vCPU VM (Node 20, OpenSSL 3.0).
 */
export function readSerialAndValidity(pem: string | Buffer): Pick<CertificateInfo, 'serialNumber' | 'notBefore' | 'notAfter'> {
  const der = firstCertificateDer(pem, 'the input');
  const certificate = expectDerTag(readDerElement(der, 0, der.length, 'certificate'), DER_TAG.sequence, 'certificate');
  const tbs = expectDerTag(readDerElement(der, certificate.start, certificate.end, 'tbsCertificate'), DER_TAG.sequence, 'tbsCertificate');
  // The version is an EXPLICIT [0] tag that v1 certificates leave out.
  let serial = readDerElement(der, tbs.start, tbs.end, 'tbsCertificate');
  if (serial.tag === DER_TAG.explicitVersion) serial = readDerElement(der, serial.end, tbs.end, 'tbsCertificate.serialNumber');
  expectDerTag(serial, DER_TAG.integer, 'tbsCertificate.serialNumber');
  const signature = readDerElement(der, serial.end, tbs.end, 'tbsCertificate.signature');
  const issuer = readDerElement(der, signature.end, tbs.end, 'tbsCertificate.issuer');
  const validity = expectDerTag(readDerElement(der, issuer.end, tbs.end, 'tbsCertificate.validity'), DER_TAG.sequence, 'tbsCertificate.validity');
  const notBefore = readDerElement(der, validity.start, validity.end, 'validity.notBefore');
  const notAfter = readDerElement(der, notBefore.end, validity.end, 'validity.notAfter');
  return {
    serialNumber: formatSerialNumber(decodeInteger(der.subarray(serial.start, serial.end), 'serialNumber')),
    // A universal primitive tag octet is the tag number itself.
    notBefore: decodeTime(notBefore.tag, der.subarray(notBefore.start, notBefore.end), 'validity.notBefore'),
    notAfter: decodeTime(notAfter.tag, der.subarray(notAfter.start, notAfter.end), 'validity.notAfter'),
  };
}

/**
 * Returns the SHA-256 fingerprint of the first certificate in `pem`: the hash of its DER in
 * lowercase hex, as `openssl x509 -noout -fingerprint -sha256` prints it without colons.
 */
export function certificateFingerprint(pem: string | Buffer): string {
  const block = readPemBlocks(pem).find((candidate) => candidate.label === 'CERTIFICATE');
  if (block === undefined) throw new Error('no CERTIFICATE block to fingerprint');
  return crypto.createHash('sha256').update(pemBlockToDer(block)).digest('hex');
}

/**
 * Checks that `certificatePem` names the subject of `issuerPem` as its issuer and that its
 * signature verifies with the issuer's public key. The issuer check is OpenSSL's
 * X509_check_issued, which also compares the authority and subject key identifiers when both are
 * present and requires keyCertSign when the issuer has a key usage extension.
 */
export function isSignedBy(certificatePem: string, issuerPem: string): boolean {
  const certificate = recentlyParsed.get(certificatePem) ?? new crypto.X509Certificate(firstCertificateDer(certificatePem, 'the certificate'));
  const issuer = parsedIssuer(issuerPem);
  return certificate.checkIssued(issuer.certificate) && certificate.verify(issuer.publicKey);
}

/**
 * Certificates that readCertificateInfo parsed last, by their normalised PEM (the `pem` of its
 * result). Planning inspects a node's certificate and then checks its signature with that PEM.
 */
const MAX_RECENTLY_PARSED = 32;
const recentlyParsed = new Map<string, crypto.X509Certificate>();

function rememberParsed(pem: string, certificate: crypto.X509Certificate): void {
  if (recentlyParsed.size >= MAX_RECENTLY_PARSED) recentlyParsed.delete(recentlyParsed.keys().next().value as string);
  recentlyParsed.set(pem, certificate);
}

/** Issuers are a cluster's few CAs, checked against every certificate of every node. */
const MAX_CACHED_ISSUERS = 32;
const issuerCache = new Map<string, { readonly certificate: crypto.X509Certificate; readonly publicKey: crypto.KeyObject }>();

/** Returns the parsed issuer certificate and public key of `issuerPem`, parsing each PEM once. */
function parsedIssuer(issuerPem: string): { readonly certificate: crypto.X509Certificate; readonly publicKey: crypto.KeyObject } {
  const cached = issuerCache.get(issuerPem);
  if (cached !== undefined) return cached;
  const certificate = new crypto.X509Certificate(firstCertificateDer(issuerPem, 'the issuer certificate'));
  const parsed = { certificate, publicKey: certificate.publicKey };
  if (issuerCache.size >= MAX_CACHED_ISSUERS) issuerCache.clear();
  issuerCache.set(issuerPem, parsed);
  return parsed;
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
