// The public X.509 API. Helpers that the modules share through ./asn1 stay internal.
export { KeyPool, type GeneratedKeyPair, type KeyPoolOptions } from './key-pool';
export {
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  type KeyPair,
  type GeneratedPublicKey,
  type SubjectPublicKey,
  isRsaKey,
  subjectKeyAlgorithm,
  subjectPublicKeyDer,
  generateKeyPair,
  isEcAlgorithm,
  keyAlgorithmOf,
  loadPrivateKey,
  privateKeyToPem,
  publicKeySha256,
  publicKeyToDer,
  publicKeyToPem,
} from './keys';
export {
  type CertificateTemplate,
  type DistinguishedName,
  type ExtKeyUsage,
  type Issuer,
  type KeyUsage,
  createCertificate,
  createCertificateDer,
  randomSerialNumber,
} from './certificate';
export { type CsrSubject, type ParsedCsr, createCsr, parseCsr } from './csr';
export { derToPem } from './asn1';
export { type CertificateInfo, certificateFingerprint, inspectCertificate, isSignedBy, normalizeIp, readSerialAndValidity, splitPem } from './inspect';
