/**
 * CertificateSigningRequest rules of the fake Kubernetes API server: the API validation of
 * certificates.k8s.io/v1, the checks of kube-controller-manager's kubelet signers, and the
 * certificate profile that its csrsigning controller issues.
 */
import type * as crypto from 'node:crypto';
import { createCertificate, inspectCertificate, parseCsr, type ExtKeyUsage, type KeyUsage, type ParsedCsr } from '@kubetrust/shared/dist/pki';
import type { FieldError } from './fake-apiserver-status';

export const KUBELET_CLIENT_SIGNER = 'kubernetes.io/kube-apiserver-client-kubelet';
export const KUBELET_SERVING_SIGNER = 'kubernetes.io/kubelet-serving';
const LEGACY_UNKNOWN_SIGNER = 'kubernetes.io/legacy-unknown';

/** The key usages that certificates.k8s.io/v1 accepts in `spec.usages`. */
export const KNOWN_USAGES: readonly string[] = [
  'signing', 'digital signature', 'content commitment', 'key encipherment', 'key agreement', 'data encipherment',
  'cert sign', 'crl sign', 'encipher only', 'decipher only', 'any', 'server auth', 'client auth', 'code signing',
  'email protection', 's/mime', 'ipsec end system', 'ipsec tunnel', 'ipsec user', 'timestamping', 'ocsp signing',
  'microsoft sgc', 'netscape sgc',
];

export interface CsrCondition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastUpdateTime?: string;
  lastTransitionTime?: string;
}

export interface CsrObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; resourceVersion?: string; uid?: string; [key: string]: unknown };
  spec: {
    request: string;
    signerName: string;
    usages: string[];
    expirationSeconds?: number;
    username?: string;
    uid?: string;
    groups?: string[];
    extra?: Record<string, string[]>;
  };
  status: { conditions?: CsrCondition[]; certificate?: string };
}

const SIGNER_NAME_PATTERN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9._~%!$&'()*+,;=:@/-]+$/;

/** Decodes `spec.request` (base64 of a PEM CERTIFICATE REQUEST) and verifies its self-signature. */
export function decodeCsrRequest(request: string): ParsedCsr {
  return parseCsr(Buffer.from(request, 'base64').toString('utf8'));
}

/** Validates a CSR on create as certificates.k8s.io/v1 does, and returns every field error. */
export function validateCsrCreate(csr: CsrObject): FieldError[] {
  const errors: FieldError[] = [];
  const spec = csr.spec ?? {};
  if (typeof spec.request !== 'string' || spec.request === '') {
    errors.push({ field: 'spec.request', type: 'FieldValueRequired', detail: 'Required value' });
  } else {
    try {
      decodeCsrRequest(spec.request);
    } catch (err) {
      errors.push({ field: 'spec.request', type: 'FieldValueInvalid', detail: `Invalid value: "<request>": ${(err as Error).message}` });
    }
  }

  if (typeof spec.signerName !== 'string' || spec.signerName === '') {
    errors.push({ field: 'spec.signerName', type: 'FieldValueRequired', detail: 'Required value' });
  } else if (spec.signerName === LEGACY_UNKNOWN_SIGNER) {
    errors.push({ field: 'spec.signerName', type: 'FieldValueInvalid', detail: `Invalid value: "${spec.signerName}": the legacy signerName is not allowed via this API version` });
  } else if (!SIGNER_NAME_PATTERN.test(spec.signerName)) {
    errors.push({ field: 'spec.signerName', type: 'FieldValueInvalid', detail: `Invalid value: "${spec.signerName}": must be a fully qualified domain and path of the form 'example.com/signer-name'` });
  }

  if (!Array.isArray(spec.usages) || spec.usages.length === 0) {
    errors.push({ field: 'spec.usages', type: 'FieldValueRequired', detail: 'Required value' });
  } else {
    const seen = new Set<string>();
    spec.usages.forEach((usage, index) => {
      if (!KNOWN_USAGES.includes(usage)) {
        errors.push({ field: `spec.usages[${index}]`, type: 'FieldValueNotSupported', detail: `Unsupported value: "${usage}"` });
      } else if (seen.has(usage)) {
        errors.push({ field: `spec.usages[${index}]`, type: 'FieldValueDuplicate', detail: `Duplicate value: "${usage}"` });
      }
      seen.add(usage);
    });
  }

  if (spec.expirationSeconds !== undefined && (!Number.isInteger(spec.expirationSeconds) || spec.expirationSeconds < 600)) {
    errors.push({ field: 'spec.expirationSeconds', type: 'FieldValueInvalid', detail: `Invalid value: ${String(spec.expirationSeconds)}: may not specify a duration less than 600 seconds (10 minutes)` });
  }
  return errors;
}

/**
 * Validates the conditions of an approval or status update: known statuses, no duplicate types,
 * Approved and Denied mutually exclusive, and neither removed once set.
 */
export function validateCsrConditions(previous: readonly CsrCondition[], next: readonly CsrCondition[]): FieldError[] {
  const errors: FieldError[] = [];
  const seen = new Set<string>();
  next.forEach((condition, index) => {
    const field = `status.conditions[${index}]`;
    if (typeof condition.type !== 'string' || condition.type === '') {
      errors.push({ field: `${field}.type`, type: 'FieldValueRequired', detail: 'Required value' });
      return;
    }
    if (seen.has(condition.type)) {
      errors.push({ field: `${field}.type`, type: 'FieldValueDuplicate', detail: `Duplicate value: "${condition.type}"` });
    }
    seen.add(condition.type);
    const allowed = ['Approved', 'Denied', 'Failed'].includes(condition.type) ? ['True'] : ['True', 'False', 'Unknown'];
    if (!allowed.includes(condition.status)) {
      const supported = allowed.map((value) => `"${value}"`).join(', ');
      errors.push({ field: `${field}.status`, type: 'FieldValueNotSupported', detail: `Unsupported value: "${String(condition.status)}": supported values: ${supported}` });
    }
  });
  if (seen.has('Approved') && seen.has('Denied')) {
    errors.push({ field: 'status.conditions', type: 'FieldValueInvalid', detail: 'Invalid value: "Approved": Approved and Denied conditions are mutually exclusive' });
  }
  for (const kept of ['Approved', 'Denied', 'Failed']) {
    if (previous.some((condition) => condition.type === kept) && !seen.has(kept)) {
      errors.push({ field: 'status.conditions', type: 'FieldValueForbidden', detail: `Forbidden: updates may not remove a condition of type "${kept}"` });
    }
  }
  return errors;
}

export function hasCondition(csr: CsrObject, type: string): boolean {
  return (csr.status.conditions ?? []).some((condition) => condition.type === type && condition.status === 'True');
}

function sameSet(actual: readonly string[], expected: readonly string[]): boolean {
  return actual.length === expected.length && expected.every((value) => actual.includes(value));
}

/** Returns why a CSR is not a valid kubelet client request, or undefined when it is. */
export function kubeletClientProblem(parsed: ParsedCsr, usages: readonly string[]): string | undefined {
  if (!sameSet(parsed.organizations, ['system:nodes'])) return 'subject organization is not system:nodes';
  if (!parsed.commonName.startsWith('system:node:')) return 'subject common name does not begin with system:node:';
  if (parsed.dnsNames.length + parsed.ipAddresses.length + parsed.uris.length > 0) return 'subject alternative names are not allowed';
  const allowed = [['digital signature', 'key encipherment', 'client auth'], ['digital signature', 'client auth']];
  if (!allowed.some((set) => sameSet(usages, set))) return `usages ${JSON.stringify(usages)} are not allowed`;
  return undefined;
}

/** Returns why a CSR is not a valid kubelet serving request, or undefined when it is. */
export function kubeletServingProblem(parsed: ParsedCsr, usages: readonly string[]): string | undefined {
  if (!sameSet(parsed.organizations, ['system:nodes'])) return 'subject organization is not system:nodes';
  if (!parsed.commonName.startsWith('system:node:')) return 'subject common name does not begin with system:node:';
  if (parsed.dnsNames.length + parsed.ipAddresses.length === 0) return 'at least one DNS or IP subject alternative name is required';
  if (parsed.uris.length > 0) return 'URI subject alternative names are not allowed';
  const allowed = [['digital signature', 'key encipherment', 'server auth'], ['digital signature', 'server auth']];
  if (!allowed.some((set) => sameSet(usages, set))) return `usages ${JSON.stringify(usages)} are not allowed`;
  return undefined;
}

export interface SigningAuthority {
  readonly certificatePem: string;
  readonly privateKey: crypto.KeyObject;
}

const FIVE_MINUTES_MS = 5 * 60 * 1000;
const SHORT_LIVED_THRESHOLD_MS = 8 * 60 * 60 * 1000;

const KEY_USAGE_OF: Readonly<Record<string, KeyUsage>> = { 'digital signature': 'digitalSignature', 'key encipherment': 'keyEncipherment' };
const EXT_KEY_USAGE_OF: Readonly<Record<string, ExtKeyUsage>> = { 'server auth': 'serverAuth', 'client auth': 'clientAuth' };

/**
 * Signs a validated kubelet CSR with the KCM signer's profile: subject and SANs copied, CA:FALSE,
 * NotBefore five minutes back, and NotAfter at the TTL (minus five minutes for certificates of 8 h
 * or more) but never past the CA's NotAfter. The TTL is the shorter of the signing duration and
 * `spec.expirationSeconds`.
 */
export function signKubeletCsr(authority: SigningAuthority, parsed: ParsedCsr, usages: readonly string[], signingDurationMs: number, expirationSeconds: number | undefined, now: Date): string {
  const requestedMs = expirationSeconds === undefined ? signingDurationMs : Math.min(signingDurationMs, expirationSeconds * 1000);
  const backdate = requestedMs >= SHORT_LIVED_THRESHOLD_MS ? FIVE_MINUTES_MS : 0;
  const caNotAfter = inspectCertificate(authority.certificatePem).notAfter.getTime();
  const notAfter = Math.min(now.getTime() + requestedMs - backdate, caNotAfter);
  return createCertificate(
    {
      subject: { commonName: parsed.commonName, organizations: parsed.organizations },
      notBefore: new Date(now.getTime() - FIVE_MINUTES_MS),
      notAfter: new Date(notAfter),
      isCA: false,
      keyUsage: usages.flatMap((usage) => (KEY_USAGE_OF[usage] === undefined ? [] : [KEY_USAGE_OF[usage]])),
      extKeyUsage: usages.flatMap((usage) => (EXT_KEY_USAGE_OF[usage] === undefined ? [] : [EXT_KEY_USAGE_OF[usage]])),
      dnsNames: parsed.dnsNames,
      ipAddresses: parsed.ipAddresses,
      uris: parsed.uris,
    },
    parsed.publicKey,
    { issuer: { certificatePem: authority.certificatePem, privateKey: authority.privateKey }, privateKey: authority.privateKey },
  );
}
