import * as crypto from 'node:crypto';
import {
  type Asn1,
  OID,
  bitString,
  booleanTrue,
  childAt,
  contextConstructed,
  contextPrimitive,
  derToPem,
  encodeExtension,
  encodeName,
  encodeSubjectAltNames,
  encodeTime,
  integer,
  objectIdentifier,
  octetString,
  parseDer,
  readOctetAlignedBitString,
  readOctetString,
  sequence,
  signStructure,
  signatureAlgorithmIdentifier,
  validateName,
} from './asn1';
import { firstCertificateDer, readTbsCertificate } from './inspect';
import { publicKeySha256, subjectPublicKeyDer, type SubjectPublicKey } from './keys';

export type KeyUsage = 'digitalSignature' | 'keyEncipherment' | 'keyCertSign' | 'cRLSign';
export type ExtKeyUsage = 'serverAuth' | 'clientAuth';

export interface DistinguishedName {
  readonly commonName: string;
  readonly organizations?: readonly string[];
}

export interface CertificateTemplate {
  readonly subject: DistinguishedName;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCA: boolean;
  readonly keyUsage: readonly KeyUsage[];
  /** Must be empty for a CA and non-empty for a leaf. */
  readonly extKeyUsage: readonly ExtKeyUsage[];
  readonly dnsNames?: readonly string[];
  /** IPv4 or IPv6 addresses. */
  readonly ipAddresses?: readonly string[];
  readonly uris?: readonly string[];
  /** Defaults to randomSerialNumber(). */
  readonly serialNumber?: bigint;
}

export interface Issuer {
  readonly certificatePem: string;
  readonly privateKey: crypto.KeyObject;
}

/** Bit positions in the KeyUsage BIT STRING (RFC 5280, section 4.2.1.3). */
const KEY_USAGE_BITS: Readonly<Record<KeyUsage, number>> = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
};

const EXT_KEY_USAGE_OIDS: Readonly<Record<ExtKeyUsage, string>> = {
  serverAuth: OID.serverAuth,
  clientAuth: OID.clientAuth,
};

/** RFC 5280 allows at most 20 content octets, and a positive INTEGER needs the top bit clear, so serials stay below 2^159. */
const SERIAL_NUMBER_LIMIT = 1n << 159n;

/** Returns a uniformly random serial number in [1, 2^127), which DER encodes as a positive INTEGER of at most 16 octets. */
export function randomSerialNumber(): bigint {
  for (;;) {
    const bytes = crypto.randomBytes(16);
    bytes[0] = (bytes[0] ?? 0) & 0x7f;
    const serial = BigInt(`0x${bytes.toString('hex')}`);
    // Redrawing on zero keeps the remaining values equally likely.
    if (serial !== 0n) {
      return serial;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Template checks. Messages start with "invalid <field> <value>" so a caller can find the input.

function wholeSeconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

function validateDate(date: Date, field: string): void {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) {
    throw new Error(`invalid ${field} "${String(date)}": expected a valid Date`);
  }
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) {
    throw new Error(`invalid ${field} ${date.toISOString()}: the year must be between 0 and 9999`);
  }
}

function validateValidity(template: CertificateTemplate): void {
  validateDate(template.notBefore, 'notBefore');
  validateDate(template.notAfter, 'notAfter');
  // Both times are encoded in whole seconds, so they are compared that way.
  if (wholeSeconds(template.notAfter) <= wholeSeconds(template.notBefore)) {
    throw new Error(
      `invalid notAfter ${template.notAfter.toISOString()}: ` +
        `must be later than notBefore ${template.notBefore.toISOString()}`,
    );
  }
}

function validateUsages(template: CertificateTemplate): void {
  const extKeyUsage = template.extKeyUsage.join(', ');
  if (template.isCA && template.extKeyUsage.length > 0) {
    throw new Error(`invalid extKeyUsage [${extKeyUsage}]: must be empty for a CA certificate`);
  }
  if (!template.isCA && template.extKeyUsage.length === 0) {
    throw new Error('invalid extKeyUsage []: a leaf certificate needs serverAuth, clientAuth or both');
  }
  template.extKeyUsage.forEach((usage, index) => {
    if (!(usage in EXT_KEY_USAGE_OIDS)) {
      throw new Error(`invalid extKeyUsage[${index}] "${String(usage)}": expected serverAuth or clientAuth`);
    }
  });

  const keyUsage = template.keyUsage.join(', ');
  if (template.keyUsage.length === 0) {
    throw new Error('invalid keyUsage []: must not be empty');
  }
  template.keyUsage.forEach((usage, index) => {
    if (!(usage in KEY_USAGE_BITS)) {
      throw new Error(`invalid keyUsage[${index}] "${String(usage)}": expected one of ${Object.keys(KEY_USAGE_BITS).join(', ')}`);
    }
  });
  // RFC 5280 (section 4.2.1.3) allows keyCertSign only with cA TRUE, and OpenSSL rejects a CA certificate without keyCertSign.
  const hasKeyCertSign = template.keyUsage.includes('keyCertSign');
  if (template.isCA && !hasKeyCertSign) {
    throw new Error(`invalid keyUsage [${keyUsage}]: a CA certificate needs keyCertSign`);
  }
  if (!template.isCA && hasKeyCertSign) {
    throw new Error(`invalid keyUsage [${keyUsage}]: keyCertSign is only allowed on a CA certificate`);
  }
}

function validateSerialNumber(serialNumber: bigint): void {
  if (typeof serialNumber !== 'bigint' || serialNumber <= 0n) {
    throw new Error(`invalid serialNumber ${String(serialNumber)}: must be a positive bigint`);
  }
  if (serialNumber >= SERIAL_NUMBER_LIMIT) {
    throw new Error(`invalid serialNumber ${serialNumber.toString(16)}: must fit in 20 octets (less than 2^159)`);
  }
}

// ---------------------------------------------------------------------------------------------
// Issuer

interface IssuerDetails {
  /** The issuer's subject Name, re-encoded to exactly its original bytes. It is shared between calls and never modified. */
  readonly subject: Asn1;
  /** The subject as X509Certificate.subject formats it, for error messages. */
  readonly subjectText: string;
  readonly notAfter: Date;
  readonly subjectKeyIdentifier: Buffer | undefined;
}

/** IssuerDetails plus the SHA-256 of the issuer's public key, which a different signing key is compared against. */
interface CheckedIssuer extends IssuerDetails {
  readonly publicKeySha256: string;
}

/** Issuers whose certificate and private key readIssuer has already checked, per private key and certificate PEM. */
const checkedIssuers = new WeakMap<crypto.KeyObject, Map<string, CheckedIssuer>>();
/** Certificates remembered per private key; a CA key rarely signs with more than one or two. */
const ISSUERS_PER_KEY = 4;

/**
 * Reads and checks the issuer, once per issuer private key and certificate PEM. A KeyObject and a
 * string never change, so a repeated call returns the details of the first. A controller that signs
 * thousands of leaves with one CA thus parses the CA certificate and exports its keys once. Doing
 * that per leaf took about 0.5 ms on a 2-vCPU VM (Node 20, OpenSSL 3.0). Failures are not cached.
 */
function readIssuer(issuer: Issuer, signingKey: crypto.KeyObject): IssuerDetails {
  const cached = checkedIssuers.get(issuer.privateKey)?.get(issuer.certificatePem);
  if (cached === undefined) return checkIssuer(issuer, signingKey);
  if (signingKey !== issuer.privateKey && publicKeySha256(signingKey) !== cached.publicKeySha256) {
    throw new Error(`invalid signer.privateKey: it does not match the issuer certificate "${cached.subjectText}"`);
  }
  return cached;
}

function checkIssuer(issuer: Issuer, signingKey: crypto.KeyObject): IssuerDetails {
  const der = firstCertificateDer(issuer.certificatePem, 'issuer.certificatePem');
  const certificate = new crypto.X509Certificate(der);
  if (!certificate.ca) {
    throw new Error(`invalid issuer.certificatePem "${certificate.subject}": not a CA certificate`);
  }
  const issuerKeySha256 = publicKeySha256(certificate.publicKey);
  if (publicKeySha256(issuer.privateKey) !== issuerKeySha256) {
    throw new Error(`invalid issuer.privateKey: it does not match the certificate "${certificate.subject}"`);
  }
  if (publicKeySha256(signingKey) !== issuerKeySha256) {
    throw new Error(`invalid signer.privateKey: it does not match the issuer certificate "${certificate.subject}"`);
  }

  const tbs = readTbsCertificate(der);
  const extension = tbs.extensions.find((candidate) => candidate.oid === OID.subjectKeyIdentifier);
  const context = 'issuer subjectKeyIdentifier';
  const details: CheckedIssuer = {
    subject: tbs.subject,
    subjectText: certificate.subject,
    notAfter: tbs.notAfter,
    subjectKeyIdentifier: extension === undefined ? undefined : readOctetString(parseDer(extension.value, context), context),
    publicKeySha256: issuerKeySha256,
  };
  let byCertificate = checkedIssuers.get(issuer.privateKey);
  if (byCertificate === undefined) {
    byCertificate = new Map();
    checkedIssuers.set(issuer.privateKey, byCertificate);
  }
  if (byCertificate.size >= ISSUERS_PER_KEY) byCertificate.clear();
  byCertificate.set(issuer.certificatePem, details);
  return details;
}

// ---------------------------------------------------------------------------------------------
// Extensions

function keyUsageBits(usages: readonly KeyUsage[]): Asn1 {
  let bits = 0;
  for (const usage of usages) {
    bits |= 0x80 >> KEY_USAGE_BITS[usage];
  }
  // DER drops trailing zero bits and counts them as unused. All defined usages fit in the first octet.
  let unusedBits = 0;
  while (((bits >> unusedBits) & 1) === 0) {
    unusedBits += 1;
  }
  return bitString(Buffer.from([bits]), unusedBits);
}

/** Computes a key identifier with RFC 5280 method 1 (section 4.2.1.2): SHA-1 of the subjectPublicKey BIT STRING contents. */
function keyIdentifier(subjectPublicKeyInfo: Asn1): Buffer {
  const publicKey = readOctetAlignedBitString(childAt(subjectPublicKeyInfo, 1, 'subjectPublicKeyInfo'), 'subjectPublicKey');
  return crypto.createHash('sha1').update(publicKey).digest();
}

function buildExtensions(
  template: CertificateTemplate,
  subjectKeyIdentifier: Buffer,
  issuer: IssuerDetails | undefined,
): Asn1[] {
  const extensions = [
    // DER leaves out cA when it is FALSE, its DEFAULT.
    encodeExtension(OID.basicConstraints, true, sequence(template.isCA ? [booleanTrue()] : [])),
    encodeExtension(OID.keyUsage, true, keyUsageBits(template.keyUsage)),
  ];
  if (template.extKeyUsage.length > 0) {
    const oids = template.extKeyUsage.map((usage) => objectIdentifier(EXT_KEY_USAGE_OIDS[usage]));
    extensions.push(encodeExtension(OID.extKeyUsage, false, sequence(oids)));
  }
  const subjectAltNames = encodeSubjectAltNames({
    dnsNames: template.dnsNames ?? [],
    ipAddresses: template.ipAddresses ?? [],
    uris: template.uris ?? [],
  });
  if (subjectAltNames !== undefined) {
    extensions.push(encodeExtension(OID.subjectAltName, false, subjectAltNames));
  }
  extensions.push(encodeExtension(OID.subjectKeyIdentifier, false, octetString(subjectKeyIdentifier)));
  // Like Go's CreateCertificate, leave the authority key identifier out when the issuer has no subject key identifier to copy.
  if (issuer?.subjectKeyIdentifier !== undefined) {
    // keyIdentifier is [0] IMPLICIT OCTET STRING.
    const authorityKeyIdentifier = sequence([contextPrimitive(0, issuer.subjectKeyIdentifier)]);
    extensions.push(encodeExtension(OID.authorityKeyIdentifier, false, authorityKeyIdentifier));
  }
  return extensions;
}

// ---------------------------------------------------------------------------------------------

/**
 * Builds and signs an X.509 v3 certificate and returns it as PEM "CERTIFICATE".
 *
 * The certificate is self-signed when `signer.issuer` is undefined, and then `signer.privateKey`
 * must be the private key of `subjectPublicKey`. Otherwise `signer.privateKey` must be the
 * issuer's key. The signature algorithm follows the signing key: sha256WithRSAEncryption for
 * RSA, ecdsa-with-SHA256 for P-256 and ecdsa-with-SHA384 for P-384. Throws for an invalid
 * template, naming the field and value.
 */
export function createCertificate(
  template: CertificateTemplate,
  subjectPublicKey: SubjectPublicKey,
  signer: { issuer?: Issuer; privateKey: crypto.KeyObject },
): string {
  return derToPem('CERTIFICATE', createCertificateDer(template, subjectPublicKey, signer));
}

/** Builds and signs a certificate as createCertificate does and returns its DER. */
export function createCertificateDer(
  template: CertificateTemplate,
  subjectPublicKey: SubjectPublicKey,
  signer: { issuer?: Issuer; privateKey: crypto.KeyObject },
): Buffer {
  const subjectFields = { commonName: template.subject.commonName, organizations: template.subject.organizations ?? [] };
  validateName(subjectFields, 'subject.');
  validateValidity(template);
  validateUsages(template);
  const serialNumber = template.serialNumber ?? randomSerialNumber();
  validateSerialNumber(serialNumber);

  const issuer = signer.issuer === undefined ? undefined : readIssuer(signer.issuer, signer.privateKey);
  if (issuer === undefined && publicKeySha256(signer.privateKey) !== crypto.createHash('sha256').update(subjectPublicKeyDer(subjectPublicKey)).digest('hex')) {
    throw new Error('invalid signer.privateKey: a self-signed certificate needs the private key of subjectPublicKey');
  }
  if (issuer !== undefined && !template.isCA && wholeSeconds(template.notAfter) > wholeSeconds(issuer.notAfter)) {
    throw new Error(
      `invalid notAfter ${template.notAfter.toISOString()}: ` +
        `later than the issuer's notAfter ${issuer.notAfter.toISOString()}`,
    );
  }

  const subject = encodeName(subjectFields);
  // The SubjectPublicKeyInfo goes in exactly as Node exports it.
  const subjectPublicKeyInfo = parseDer(subjectPublicKeyDer(subjectPublicKey), 'subjectPublicKey');
  const extensions = buildExtensions(template, keyIdentifier(subjectPublicKeyInfo), issuer);
  const version3 = 2n;
  const tbsCertificate = sequence([
    contextConstructed(0, [integer(version3)]),
    integer(serialNumber),
    signatureAlgorithmIdentifier(signer.privateKey),
    // Go finds the issuer by authority key identifier or, without one, by these raw Name bytes.
    issuer?.subject ?? subject,
    sequence([encodeTime(template.notBefore), encodeTime(template.notAfter)]),
    subject,
    subjectPublicKeyInfo,
    contextConstructed(3, [sequence(extensions)]),
  ]);
  return signStructure(tbsCertificate, signer.privateKey);
}
