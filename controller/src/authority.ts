/**
 * Certificate profiles the controller signs: CAs, leaves from node CSRs, and the management-plane
 * identities. Subjects, usages and SANs come from the catalogue or the identity helpers; this file
 * adds the X.509 profile every issued certificate follows:
 *
 * - CAs: keyCertSign and cRLSign, no extended key usage, the CN repeated as a DNS SAN as kubeadm does.
 * - Leaves: digitalSignature, plus keyEncipherment for RSA keys only (RSA key transport is the
 *   only use of keyEncipherment; an ECDSA key cannot encipher).
 * - NotBefore backdated five minutes for clock skew; a leaf never outlives its CA, because the
 *   chain stops verifying the moment the CA expires.
 * - A leaf subject never equals its CA's subject, which would make the leaf look self-issued.
 */
import * as crypto from 'node:crypto';
import { NOT_BEFORE_BACKDATE_MS } from '@kubetrust/shared/dist/rotation';
import {
  createCertificate,
  createCertificateDer,
  derToPem,
  inspectCertificate,
  isRsaKey,
  randomSerialNumber,
  subjectKeyAlgorithm,
  type CertificateTemplate,
  type SubjectPublicKey,
  type ExtKeyUsage,
  type KeyUsage,
} from '@kubetrust/shared/dist/pki';
import type { KubeconfigItem, LeafItem } from '@kubetrust/shared/dist/catalogue';
import type { KeyMaterial } from './state-dir';

const CA_KEY_USAGE: readonly KeyUsage[] = ['keyCertSign', 'cRLSign'];

/** Raised when a certificate cannot be issued as requested. The message names what to change. */
export class IssueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IssueError';
  }
}

/** Key usages of a leaf whose subject key is `publicKey`. */
export function leafKeyUsage(publicKey: SubjectPublicKey): KeyUsage[] {
  return isRsaKey(publicKey) ? ['digitalSignature', 'keyEncipherment'] : ['digitalSignature'];
}

/** Creates a self-signed CA certificate that, like kubeadm's, carries its CN as a DNS SAN and no extended key usage. */
export function selfSignedCa(commonName: string, keyPair: { publicKey: crypto.KeyObject; privateKey: crypto.KeyObject }, validityMs: number, now: Date): string {
  const template: CertificateTemplate = {
    subject: { commonName },
    notBefore: new Date(now.getTime() - NOT_BEFORE_BACKDATE_MS),
    notAfter: new Date(now.getTime() + validityMs),
    isCA: true,
    keyUsage: CA_KEY_USAGE,
    extKeyUsage: [],
    dnsNames: [commonName],
  };
  return createCertificate(template, keyPair.publicKey, { privateKey: keyPair.privateKey });
}

export interface LeafProfile {
  /** Names the certificate in errors, for example `apiserver on master-1`. */
  readonly label?: string;
  readonly commonName: string;
  readonly organizations?: readonly string[];
  readonly extKeyUsage: readonly ExtKeyUsage[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly uris?: readonly string[];
}

/**
 * Returns the profile of a catalogue item's certificate: subject and SANs from the catalogue, its extended
 * key usages for leaves, and clientAuth only for a kubeconfig's client certificate.
 */
export function leafProfile(item: LeafItem | KubeconfigItem, nodeName: string): LeafProfile {
  const sans = item.type === 'leaf' ? item.sans : { dnsNames: [], ipAddresses: [] };
  return {
    label: `${item.name} for node ${nodeName}`,
    commonName: item.subject.commonName,
    organizations: item.subject.organizations,
    extKeyUsage: item.type === 'leaf' ? item.extKeyUsage : ['clientAuth'],
    dnsNames: sans.dnsNames,
    ipAddresses: sans.ipAddresses,
  };
}

export interface SignOptions {
  /** Shorten a leaf that would outlive its CA instead of refusing it. */
  readonly capToCa?: boolean;
  /** Serial numbers this CA has already used; a new serial is drawn until it is not among them. */
  readonly usedSerials?: ReadonlySet<string>;
}

/**
 * Draws serials until one is not in `used` (lowercase hex without leading zeros, as the ledger
 * stores them). With 127 random bits a repeat is practically impossible; the check makes
 * uniqueness per CA a guarantee instead of a probability.
 */
export function uniqueSerial(used: ReadonlySet<string> | undefined, draw: () => bigint = randomSerialNumber): bigint {
  for (;;) {
    const serial = draw();
    if (used === undefined || !used.has(serial.toString(16))) return serial;
  }
}

/** The fields of a CA certificate that every leaf it signs is checked against. */
interface CaFacts {
  readonly subject: { readonly commonName: string; readonly organizations: readonly string[] };
  readonly notAfter: Date;
}

/**
 * CA facts by certificate PEM. inspectCertificate keeps only the 32 certificates read last, which a
 * distribute that also reads the nodes' certificates passes through quickly, and copies its result.
 */
const caFacts = new Map<string, CaFacts>();
const CA_FACTS_LIMIT = 16;

function caFactsOf(ca: KeyMaterial): CaFacts {
  let facts = caFacts.get(ca.certificatePem);
  if (facts === undefined) {
    const info = inspectCertificate(ca.certificatePem);
    facts = { subject: { commonName: info.subject.commonName, organizations: [...(info.subject.organizations ?? [])] }, notAfter: info.notAfter };
    if (caFacts.size >= CA_FACTS_LIMIT) caFacts.clear();
    caFacts.set(ca.certificatePem, facts);
  }
  return facts;
}

function notAfterFor(ca: KeyMaterial, label: string, validityMs: number, now: Date, capToCa: boolean): Date {
  const caInfo = caFactsOf(ca);
  const requested = new Date(now.getTime() + validityMs);
  if (requested.getTime() <= caInfo.notAfter.getTime()) return requested;
  if (capToCa) return new Date(caInfo.notAfter.getTime());
  throw new IssueError(
    `${label} would expire at ${requested.toISOString()}, after its CA (CN "${caInfo.subject.commonName}") expires at ${caInfo.notAfter.toISOString()}; ` +
      'shorten pki.certValidity, replace the CA with `controller ca rotate`, or pass --cap-to-ca to end the certificate with its CA',
  );
}

function checkSubjectDiffersFromCa(ca: KeyMaterial, profile: LeafProfile, label: string): void {
  const caSubject = caFactsOf(ca).subject;
  const organizations = profile.organizations ?? [];
  const caOrganizations = caSubject.organizations;
  const sameOrganizations = organizations.length === caOrganizations.length && organizations.every((value, index) => value === caOrganizations[index]);
  if (profile.commonName === caSubject.commonName && sameOrganizations) {
    throw new IssueError(`${label} would have the subject of its CA (CN "${caSubject.commonName}"); rename the node or the identity so that the two differ`);
  }
}

/** A leaf certificate with the serial number and expiry written in it. */
export interface IssuedLeaf {
  readonly certificatePem: string;
  /** SHA-256 of the DER in lowercase hex, as certificateFingerprint gives it. */
  readonly fingerprint: string;
  /** Lowercase hex without leading zeros, as inspectCertificate gives it. */
  readonly serialNumber: string;
  /** In whole seconds, as the certificate encodes it. */
  readonly notAfter: Date;
}

/**
 * Signs a leaf for `publicKey` with the CA. Throws IssueError when the leaf would outlive the CA
 * (unless capped) or would carry the CA's own subject.
 */
export function signLeaf(ca: KeyMaterial, profile: LeafProfile, publicKey: SubjectPublicKey, validityMs: number, now: Date, options: SignOptions = {}): string {
  return issueLeaf(ca, profile, publicKey, validityMs, now, options).certificatePem;
}

/** Signs a leaf as signLeaf does and returns its serial number and expiry, which the ledger records, without parsing it again. */
export function issueLeaf(ca: KeyMaterial, profile: LeafProfile, publicKey: SubjectPublicKey, validityMs: number, now: Date, options: SignOptions = {}): IssuedLeaf {
  const label = profile.label ?? `certificate "${profile.commonName}"`;
  checkSubjectDiffersFromCa(ca, profile, label);
  if (subjectKeyAlgorithm(publicKey) === undefined) {
    throw new IssueError(`${label}: the public key is not RSA 2048/3072/4096 or ECDSA P-256/P-384; request a key of a supported algorithm`);
  }
  const serialNumber = uniqueSerial(options.usedSerials);
  const notAfter = notAfterFor(ca, label, validityMs, now, options.capToCa === true);
  const template: CertificateTemplate = {
    subject: { commonName: profile.commonName, organizations: profile.organizations ?? [] },
    serialNumber,
    notBefore: new Date(now.getTime() - NOT_BEFORE_BACKDATE_MS),
    notAfter,
    isCA: false,
    keyUsage: leafKeyUsage(publicKey),
    extKeyUsage: profile.extKeyUsage,
    dnsNames: profile.dnsNames ?? [],
    ipAddresses: profile.ipAddresses ?? [],
    uris: profile.uris ?? [],
  };
  const der = createCertificateDer(template, publicKey, { issuer: { certificatePem: ca.certificatePem, privateKey: ca.privateKey }, privateKey: ca.privateKey });
  return {
    certificatePem: derToPem('CERTIFICATE', der),
    fingerprint: crypto.createHash('sha256').update(der).digest('hex'),
    serialNumber: serialNumber.toString(16),
    // The certificate keeps whole seconds.
    notAfter: new Date(Math.floor(notAfter.getTime() / 1000) * 1000),
  };
}
