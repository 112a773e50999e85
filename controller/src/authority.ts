/**
 * Certificate profiles the controller signs: CAs, leaves from node CSRs, and the management-plane
 * identities. Subjects, usages and SANs come from the catalogue or the identity helpers; this file
 * adds only validity and the X.509 profile (key usages, backdating).
 */
import type * as crypto from 'node:crypto';
import { NOT_BEFORE_BACKDATE_MS } from '@kubetrust/shared/dist/rotation';
import {
  createCertificate,
  inspectCertificate,
  type CertificateTemplate,
  type ExtKeyUsage,
  type KeyUsage,
} from '@kubetrust/shared/dist/pki';
import type { KeyMaterial } from './state-dir';

const CA_KEY_USAGE: readonly KeyUsage[] = ['digitalSignature', 'keyEncipherment', 'keyCertSign'];
const LEAF_KEY_USAGE: readonly KeyUsage[] = ['digitalSignature', 'keyEncipherment'];

/** A self-signed CA certificate; like kubeadm, it carries its CN as a DNS SAN and no extended key usage. */
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
  readonly commonName: string;
  readonly organizations?: readonly string[];
  readonly extKeyUsage: readonly ExtKeyUsage[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly uris?: readonly string[];
}

/**
 * Signs a leaf for `publicKey`. NotBefore is backdated for clock skew; NotAfter never passes the
 * CA's own NotAfter, because a chain stops verifying the moment its CA expires.
 */
export function signLeaf(ca: KeyMaterial, profile: LeafProfile, publicKey: crypto.KeyObject, validityMs: number, now: Date): string {
  const caNotAfter = inspectCertificate(ca.certificatePem).notAfter;
  const notAfter = new Date(Math.min(now.getTime() + validityMs, caNotAfter.getTime()));
  const template: CertificateTemplate = {
    subject: { commonName: profile.commonName, organizations: profile.organizations ?? [] },
    notBefore: new Date(now.getTime() - NOT_BEFORE_BACKDATE_MS),
    notAfter,
    isCA: false,
    keyUsage: LEAF_KEY_USAGE,
    extKeyUsage: profile.extKeyUsage,
    dnsNames: profile.dnsNames ?? [],
    ipAddresses: profile.ipAddresses ?? [],
    uris: profile.uris ?? [],
  };
  return createCertificate(template, publicKey, { issuer: { certificatePem: ca.certificatePem, privateKey: ca.privateKey }, privateKey: ca.privateKey });
}
