import * as crypto from 'node:crypto';
import {
  type Asn1,
  OID,
  childAt,
  childrenOf,
  contextConstructed,
  decodeName,
  decodeSubjectAltNames,
  derToPem,
  encodeExtension,
  encodeName,
  encodeSubjectAltNames,
  errorMessage,
  integer,
  isContextTag,
  objectIdentifier,
  parseDer,
  pemBlockToDer,
  readExtensions,
  readInteger,
  readOid,
  readPemBlocks,
  sequence,
  setOf,
  signStructure,
  toDer,
  validateName,
  verifyStructure,
} from './asn1';
import { type KeyPair, publicKeyFromSpki, publicKeySha256, publicKeyToDer } from './keys';

export interface CsrSubject {
  readonly commonName: string;
  readonly organizations?: readonly string[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly uris?: readonly string[];
}

export interface ParsedCsr {
  readonly commonName: string;
  readonly organizations: readonly string[];
  readonly dnsNames: readonly string[];
  /** Normalised as normalizeIp formats them. */
  readonly ipAddresses: readonly string[];
  readonly uris: readonly string[];
  readonly publicKey: crypto.KeyObject;
}

/** OpenSSL and Go write "CERTIFICATE REQUEST". Some older tools wrote "NEW CERTIFICATE REQUEST". */
const CSR_LABELS: readonly string[] = ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'];

function extensionRequest(subjectAltNames: Asn1): Asn1 {
  const extensions = sequence([encodeExtension(OID.subjectAltName, false, subjectAltNames)]);
  return sequence([objectIdentifier(OID.extensionRequest), setOf([extensions])]);
}

/**
 * Builds a PKCS#10 certification request (RFC 2986) signed with the key pair's private key and
 * returns it as PEM "CERTIFICATE REQUEST". SANs go in an extensionRequest attribute. Throws for
 * an empty commonName, an invalid SAN or a public key that does not belong to the private key.
 */
export function createCsr(subject: CsrSubject, keyPair: KeyPair): string {
  const name = { commonName: subject.commonName, organizations: subject.organizations ?? [] };
  validateName(name, '');
  if (publicKeySha256(keyPair.privateKey) !== publicKeySha256(keyPair.publicKey)) {
    throw new Error('invalid keyPair: publicKey does not belong to privateKey');
  }
  const subjectAltNames = encodeSubjectAltNames({
    dnsNames: subject.dnsNames ?? [],
    ipAddresses: subject.ipAddresses ?? [],
    uris: subject.uris ?? [],
  });

  const version1 = 0n;
  const attributes = subjectAltNames === undefined ? [] : [extensionRequest(subjectAltNames)];
  const certificationRequestInfo = sequence([
    integer(version1),
    encodeName(name),
    parseDer(publicKeyToDer(keyPair.publicKey), 'publicKey'),
    contextConstructed(0, attributes),
  ]);
  return derToPem('CERTIFICATE REQUEST', signStructure(certificationRequestInfo, keyPair.privateKey));
}

/**
 * Parses the first CERTIFICATE REQUEST block and verifies its self-signature. Throws an Error
 * whose message starts with "invalid CSR:" for a bad signature or malformed input.
 */
export function parseCsr(pem: string | Buffer): ParsedCsr {
  const block = readPemBlocks(pem).find((candidate) => CSR_LABELS.includes(candidate.label));
  if (block === undefined) {
    throw new Error('invalid CSR: no CERTIFICATE REQUEST PEM block found');
  }
  try {
    return readCertificationRequest(pemBlockToDer(block));
  } catch (err) {
    throw new Error(`invalid CSR: ${errorMessage(err)}`, { cause: err });
  }
}

function readCertificationRequest(der: Buffer): ParsedCsr {
  const request = parseDer(der, 'certification request');
  const info = childAt(request, 0, 'certificationRequestInfo');
  const version = readInteger(childAt(info, 0, 'version'), 'version');
  if (version !== 0n) {
    throw new Error(`unsupported version ${version}: expected 0 (v1)`);
  }

  const subjectPublicKeyInfo = toDer(childAt(info, 2, 'subjectPKInfo'));
  const publicKey = publicKeyFromSpki(subjectPublicKeyInfo);
  // The names are read only after the signature shows that the key holder requested them.
  if (!verifyStructure(request, publicKey, 'certification request')) {
    throw new Error('the signature does not verify with the public key in the request');
  }

  const { commonName, organizations } = decodeName(childAt(info, 1, 'subject'), 'subject');
  const attributes = childrenOf(info, 'certificationRequestInfo')[3];
  const names = isContextTag(attributes, 0) ? requestedSubjectAltNames(attributes) : undefined;
  return {
    commonName,
    organizations,
    dnsNames: names?.dnsNames ?? [],
    ipAddresses: names?.ipAddresses ?? [],
    uris: names?.uris ?? [],
    publicKey,
  };
}

/** Finds subjectAltName in the extensionRequest attribute (PKCS#9), whose single value is an Extensions SEQUENCE. */
function requestedSubjectAltNames(attributes: Asn1): ReturnType<typeof decodeSubjectAltNames> | undefined {
  for (const attribute of childrenOf(attributes, 'attributes')) {
    if (readOid(childAt(attribute, 0, 'attribute type'), 'attribute type') !== OID.extensionRequest) {
      continue;
    }
    const extensions = childAt(childAt(attribute, 1, 'extensionRequest'), 0, 'extensionRequest');
    const subjectAltName = readExtensions(extensions, 'extensionRequest').find(
      (extension) => extension.oid === OID.subjectAltName,
    );
    return subjectAltName === undefined ? undefined : decodeSubjectAltNames(subjectAltName.value);
  }
  return undefined;
}
