/**
 * The decision whether to approve a kubelet serving CSR (signer `kubernetes.io/kubelet-serving`).
 * kube-controller-manager never approves these by itself, because nothing in the cluster checks
 * that the requested names belong to the node. kubetrust checks them against the inventory, with
 * the rules that the Kubernetes "TLS bootstrapping" page recommends for such an approver:
 *
 * - the requester is `system:node:<name>` in group `system:nodes`, for a node in the inventory;
 * - the subject is CN `system:node:<name>`, O `system:nodes`;
 * - the usages are digital signature and server auth, plus key encipherment for an RSA key only;
 * - there is at least one DNS name or IP address, and each one is the node's name, one of its
 *   hostnames or one of its addresses in the inventory. URI SANs are not allowed.
 *
 * The function never denies. A CSR that fails stays pending, and the caller reports the reasons.
 */
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import { isRsaKey, normalizeIp, parseCsr, type ParsedCsr } from '@kubetrust/shared/dist/pki';
import { KUBELET_SERVING_SIGNER, NODES_GROUP, type CsrObject } from './types';

export const NODE_USER_PREFIX = 'system:node:';

/** CSR usages (certificates.k8s.io/v1 KeyUsage values) that a kubelet serving certificate may request. */
const REQUIRED_USAGES = ['digital signature', 'server auth'] as const;
const RSA_ONLY_USAGE = 'key encipherment';

export type ServingCsrDecision =
  | { readonly approve: true; readonly node: string; readonly message: string }
  | { readonly approve: false; readonly node: string | undefined; readonly reasons: readonly string[] };

/** Returns the PEM of the CSR's request, which the API carries base64-encoded. */
export function csrRequestPem(csr: CsrObject): string {
  const request = csr.spec.request.trim();
  return request.startsWith('-----BEGIN') ? request : Buffer.from(request, 'base64').toString('utf8');
}

function nodeFromUsername(username: string | undefined): string | undefined {
  if (username === undefined || !username.startsWith(NODE_USER_PREFIX)) return undefined;
  const name = username.slice(NODE_USER_PREFIX.length);
  return name === '' ? undefined : name;
}

function usageReasons(usages: readonly string[], request: ParsedCsr | undefined): string[] {
  const reasons: string[] = [];
  const requested = new Set(usages);
  const rsa = request !== undefined && isRsaKey(request.publicKey);
  for (const usage of REQUIRED_USAGES) {
    if (!requested.has(usage)) reasons.push(`usage ${usage} is missing`);
  }
  for (const usage of requested) {
    if ((REQUIRED_USAGES as readonly string[]).includes(usage)) continue;
    if (usage === RSA_ONLY_USAGE) {
      // Without a parsed key, the key reason is reported instead.
      if (!rsa && request !== undefined) reasons.push(`usage ${usage} is allowed only for an RSA key, and this request has a ${request.publicKey.asymmetricKeyType ?? 'non-RSA'} key`);
      continue;
    }
    reasons.push(`usage ${usage} is not allowed for a serving certificate`);
  }
  return reasons;
}

function subjectReasons(request: ParsedCsr, name: string): string[] {
  const reasons: string[] = [];
  const expectedCn = `${NODE_USER_PREFIX}${name}`;
  if (request.commonName !== expectedCn) reasons.push(`subject CN "${request.commonName}" is not "${expectedCn}"`);
  const organizations = request.organizations;
  if (organizations.length !== 1 || organizations[0] !== NODES_GROUP) {
    reasons.push(`subject O is "${organizations.join(', ')}", expected exactly "${NODES_GROUP}"`);
  }
  return reasons;
}

function comparableIp(ip: string): string | undefined {
  try {
    return normalizeIp(ip);
  } catch {
    return undefined;
  }
}

function sanReasons(request: ParsedCsr, node: NodeSpec): string[] {
  const reasons: string[] = [];
  if (request.dnsNames.length === 0 && request.ipAddresses.length === 0) reasons.push('the request has no DNS name or IP address');
  const dnsNames = new Set([node.name, ...node.hostnames].map((name) => name.toLowerCase()));
  for (const dnsName of request.dnsNames) {
    if (!dnsNames.has(dnsName.toLowerCase())) reasons.push(`DNS name ${dnsName} is not a name of ${node.name} in the inventory`);
  }
  const addresses = new Set(node.addresses.map(comparableIp));
  for (const ip of request.ipAddresses) {
    if (!addresses.has(comparableIp(ip))) reasons.push(`IP ${ip} is not an address of ${node.name} in the inventory`);
  }
  for (const uri of request.uris) reasons.push(`URI ${uri} is not allowed in a serving certificate`);
  return reasons;
}

/** Decides whether kubetrust approves a kubelet serving CSR. Pure: it reads only its arguments. */
export function decideServingCsr(csr: CsrObject, inventory: Inventory): ServingCsrDecision {
  const reasons: string[] = [];
  if (csr.spec.signerName !== KUBELET_SERVING_SIGNER) reasons.push(`signer ${csr.spec.signerName} is not ${KUBELET_SERVING_SIGNER}`);

  const name = nodeFromUsername(csr.spec.username);
  if (name === undefined) reasons.push(`requester ${csr.spec.username ?? '(none)'} is not a node: expected ${NODE_USER_PREFIX}<name>`);
  if (!(csr.spec.groups ?? []).includes(NODES_GROUP)) reasons.push(`requester ${csr.spec.username ?? '(none)'} is not in group ${NODES_GROUP}`);
  const node = name === undefined ? undefined : inventory.nodes.find((candidate) => candidate.name === name);
  if (name !== undefined && node === undefined) reasons.push(`node ${name} is not in the inventory`);

  let request: ParsedCsr | undefined;
  try {
    request = parseCsr(csrRequestPem(csr));
  } catch (error) {
    reasons.push(`the request is not a valid CSR: ${error instanceof Error ? error.message : String(error)}`);
  }

  reasons.push(...usageReasons(csr.spec.usages ?? [], request));
  if (request !== undefined && name !== undefined) reasons.push(...subjectReasons(request, name));
  if (request !== undefined && node !== undefined) reasons.push(...sanReasons(request, node));

  if (reasons.length > 0 || name === undefined) return { approve: false, node: name, reasons };
  return {
    approve: true,
    node: name,
    message: `kubetrust checked that requester, subject, usages and names belong to node ${name} in the inventory`,
  };
}
