/**
 * Compares what the catalogue requires a node to hold with what its agent reports, item by item,
 * and decides for each item whether it is unchanged, to be added or to be changed, and why.
 * Pure: no I/O, and the time is a parameter.
 */
import type { FileKind, FileQuery, FileState__Output } from '@kubetrust/proto';
import type { CaName, NodeItem, ResolvedFile, SanSet, SubjectSpec } from '@kubetrust/shared/dist/catalogue';
import { itemPaths } from '@kubetrust/shared/dist/catalogue';
import { sha256Hex } from '@kubetrust/shared/dist/files';
import { inspectCertificate, isSignedBy, type CertificateInfo, type ExtKeyUsage } from '@kubetrust/shared/dist/pki';
import { renewalDue } from '@kubetrust/shared/dist/rotation';
import { sideOf, type CertificateSide } from './ca-rotation-state';

export type PlanAction = 'unchanged' | 'add' | 'change';

export interface PlannedItem {
  readonly item: NodeItem;
  readonly action: PlanAction;
  readonly reasons: readonly string[];
  /** The certificate installed now, when there is one. */
  readonly current?: { readonly serialNumber: string; readonly notAfter: string; readonly dnsNames: readonly string[]; readonly ipAddresses: readonly string[] };
}

/** The content the controller holds for static items, the CAs kubeconfigs embed, and the CAs that leaves must chain to. */
export interface DesiredMaterial {
  staticContent(item: Extract<NodeItem, { type: 'static' }>): string;
  /** Returns the CA certificates a kubeconfig embeds: the CA, or the old and the new CA while it rotates. */
  caCertificate(ca: CaName): string;
  /** The CA that must have signed a certificate of this side. */
  issuerCertificate(ca: CaName, side: CertificateSide): string;
}

const STATIC_KINDS: Record<'certificate' | 'signerCertificate' | 'privateKey' | 'publicKey', FileKind> = {
  certificate: 'FILE_KIND_CERTIFICATE',
  signerCertificate: 'FILE_KIND_CERTIFICATE',
  privateKey: 'FILE_KIND_PRIVATE_KEY',
  publicKey: 'FILE_KIND_PUBLIC_KEY',
};

/** Lists the files to ask an agent about, each with the kind to read it as. */
export function queriesFor(items: readonly NodeItem[]): FileQuery[] {
  const queries: FileQuery[] = [];
  const add = (path: string, kind: FileKind): void => void queries.push({ path, kind });
  for (const item of items) {
    switch (item.type) {
      case 'static':
        // The kubelet drop-in is plain text, so the agent reports only its hash, mode and owner.
        add(item.file.path, 'part' in item.source ? STATIC_KINDS[item.source.part] : 'FILE_KIND_UNSPECIFIED');
        break;
      case 'leaf':
        add(item.certificate.path, 'FILE_KIND_CERTIFICATE');
        add(item.privateKey.path, 'FILE_KIND_PRIVATE_KEY');
        break;
      case 'kubeconfig':
        add(item.file.path, 'FILE_KIND_KUBECONFIG');
        break;
    }
  }
  return queries;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const left = new Set(a);
  return left.size === new Set(b).size && b.every((value) => left.has(value));
}


function fileProblems(state: FileState__Output, expected: ResolvedFile): string[] {
  const problems: string[] = [];
  if (state.mode !== expected.mode) problems.push(`${state.path}: mode ${state.mode.toString(8)}, expected ${expected.mode.toString(8)}`);
  if (state.uid !== expected.uid || state.gid !== expected.gid) problems.push(`${state.path}: owner ${state.uid}:${state.gid}, expected ${expected.uid}:${expected.gid}`);
  return problems;
}

interface CertificateExpectation {
  readonly caPem: string;
  readonly subject: SubjectSpec;
  readonly sans: SanSet;
  readonly extKeyUsage: readonly ExtKeyUsage[];
  readonly keySha256: string;
}

/**
 * When a certificate that is otherwise correct is renewed. By default once less than a third of
 * its lifetime is left; `controller rotate` can add an absolute window and name items to renew now.
 */
export interface RenewalPolicy {
  /** Renew when less than this many milliseconds are left. */
  readonly beforeMs?: number;
  /** Catalogue items renewed whatever their expiry, or every leaf and kubeconfig with `all`. */
  readonly force?: ReadonlySet<string> | 'all';
}

/** Lists why an installed certificate does not satisfy the catalogue; empty when it does. */
export function certificateProblems(info: CertificateInfo, expected: CertificateExpectation, now: Date, policy: RenewalPolicy = {}, itemName = ''): string[] {
  const problems: string[] = [];
  if (!isSignedBy(info.pem, expected.caPem)) problems.push('issuer changed: not signed by the current CA');
  if (info.subject.commonName !== expected.subject.commonName || !sameSet(info.subject.organizations ?? [], expected.subject.organizations)) {
    problems.push(`subject differs: CN "${info.subject.commonName}" O [${(info.subject.organizations ?? []).join(', ')}]`);
  }
  const missing = [...expected.sans.dnsNames.filter((name) => !info.dnsNames.includes(name)), ...expected.sans.ipAddresses.filter((ip) => !info.ipAddresses.includes(ip))];
  if (missing.length > 0) problems.push(`SAN missing: ${missing.join(', ')}`);
  const extra = [...info.dnsNames.filter((name) => !expected.sans.dnsNames.includes(name)), ...info.ipAddresses.filter((ip) => !expected.sans.ipAddresses.includes(ip))];
  if (extra.length > 0) problems.push(`SAN not in the inventory: ${extra.join(', ')}`);
  const missingUsages = expected.extKeyUsage.filter((usage) => !info.extKeyUsage.includes(usage));
  const extraUsages = info.extKeyUsage.filter((usage) => !(expected.extKeyUsage as readonly string[]).includes(usage));
  if (missingUsages.length > 0) problems.push(`usage missing: ${missingUsages.join(', ')}`);
  if (extraUsages.length > 0) problems.push(`usage not in the catalogue: ${extraUsages.join(', ')}`);
  if (info.publicKeySha256 !== expected.keySha256) problems.push('key does not match certificate');
  if (info.notAfter.getTime() <= now.getTime()) problems.push(`expired at ${info.notAfter.toISOString()}`);
  else if (renewalDue(info, now)) problems.push(`expiring at ${info.notAfter.toISOString()}`);
  else if (policy.beforeMs !== undefined && info.notAfter.getTime() - now.getTime() < policy.beforeMs) problems.push(`expiring within the renewal window, at ${info.notAfter.toISOString()}`);
  else if (policy.force === 'all' || policy.force?.has(itemName) === true) problems.push('renewal requested');
  return problems;
}

function currentOf(info: CertificateInfo): NonNullable<PlannedItem['current']> {
  return { serialNumber: info.serialNumber, notAfter: info.notAfter.toISOString(), dnsNames: info.dnsNames, ipAddresses: info.ipAddresses };
}

function parseHeld(pem: Buffer | undefined): CertificateInfo | undefined {
  try {
    return pem === undefined || pem.length === 0 ? undefined : inspectCertificate(pem);
  } catch {
    return undefined;
  }
}

/** Says why the content of a static file differs, naming a kubelet drop-in written for the other `kubelet.credentials`. */
function contentDiffers(item: Extract<NodeItem, { type: 'static' }>, sha256: string): string {
  if (!('kubeletConfig' in item.source)) return 'content differs';
  const wanted = item.source.kubeletConfig;
  const held = item.source.alternatives.find((alternative) => sha256Hex(alternative.content) === sha256);
  if (held !== undefined) return `content differs: the node has the settings of kubelet.credentials ${held.credentials}, and the inventory now sets ${wanted}`;
  return `content differs from the settings of kubelet.credentials ${wanted}`;
}

function planStatic(item: Extract<NodeItem, { type: 'static' }>, state: FileState__Output, material: DesiredMaterial): PlannedItem {
  if (!state.exists) return { item, action: 'add', reasons: ['new'] };
  const reasons = fileProblems(state, item.file);
  if (state.sha256 !== sha256Hex(material.staticContent(item))) reasons.unshift(contentDiffers(item, state.sha256));
  return { item, action: reasons.length === 0 ? 'unchanged' : 'change', reasons };
}

function planLeaf(item: Extract<NodeItem, { type: 'leaf' }>, certificate: FileState__Output, key: FileState__Output, material: DesiredMaterial, now: Date, policy: RenewalPolicy): PlannedItem {
  if (!certificate.exists && !key.exists) return { item, action: 'add', reasons: ['new'] };
  if (!certificate.exists || !key.exists) return { item, action: 'change', reasons: [`${certificate.exists ? key.path : certificate.path} missing`] };
  const info = parseHeld(certificate.content);
  if (info === undefined || certificate.error || key.error) {
    return { item, action: 'change', reasons: [certificate.error || key.error || `${certificate.path} is not a certificate`] };
  }
  const reasons = [
    ...certificateProblems(info, { caPem: material.issuerCertificate(item.parent, sideOf(item.extKeyUsage)), subject: item.subject, sans: item.sans, extKeyUsage: item.extKeyUsage, keySha256: key.public_key_sha256 }, now, policy, item.name),
    ...fileProblems(certificate, item.certificate),
    ...fileProblems(key, item.privateKey),
  ];
  return { item, action: reasons.length === 0 ? 'unchanged' : 'change', reasons, current: currentOf(info) };
}

function planKubeconfig(item: Extract<NodeItem, { type: 'kubeconfig' }>, state: FileState__Output, material: DesiredMaterial, now: Date, policy: RenewalPolicy): PlannedItem {
  if (!state.exists) return { item, action: 'add', reasons: ['new'] };
  const kubeconfig = state.kubeconfig;
  const info = parseHeld(kubeconfig?.client_certificate_pem);
  if (state.error || kubeconfig === null || kubeconfig === undefined || info === undefined) {
    return { item, action: 'change', reasons: [state.error || 'no embedded client certificate'] };
  }
  const caPem = material.caCertificate(item.parent);
  const reasons: string[] = [];
  if (kubeconfig.server !== item.server) reasons.push(`server is ${kubeconfig.server}, expected ${item.server}`);
  if (kubeconfig.certificate_authority_pem.toString('utf8').trim() !== caPem.trim()) reasons.push('embedded CA differs from the current CA');
  reasons.push(
    ...certificateProblems(info, { caPem: material.issuerCertificate(item.parent, 'client'), subject: item.subject, sans: { dnsNames: [], ipAddresses: [] }, extKeyUsage: ['clientAuth'], keySha256: kubeconfig.client_key_public_sha256 }, now, policy, item.name),
    ...fileProblems(state, item.file),
  );
  return { item, action: reasons.length === 0 ? 'unchanged' : 'change', reasons, current: currentOf(info) };
}

/** Plans every item of a node against the files its agent reported. */
export function planNode(items: readonly NodeItem[], files: readonly FileState__Output[], material: DesiredMaterial, now: Date, policy: RenewalPolicy = {}): PlannedItem[] {
  const byPath = new Map(files.map((file) => [file.path, file]));
  const stateOf = (path: string): FileState__Output => byPath.get(path) ?? ({ path, exists: false } as FileState__Output);
  return items.map((item) => {
    const [first, second] = itemPaths(item).map(stateOf);
    switch (item.type) {
      case 'static':
        return planStatic(item, first!, material);
      case 'leaf':
        return planLeaf(item, first!, second!, material, now, policy);
      case 'kubeconfig':
        return planKubeconfig(item, first!, material, now, policy);
    }
  });
}
