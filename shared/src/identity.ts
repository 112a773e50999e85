/**
 * Identities on the management trust plane. The management CA signs one certificate for the
 * controller and one per agent; each carries a URI SAN naming the cluster and the role, so a node
 * certificate can never pass as the controller and one node's agent cannot pass as another's.
 */
import { isIP } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import { normalizeIp } from './pki/inspect';
import type { KeyAlgorithm } from './pki/keys';

/**
 * Key algorithm of the management CA, the controller identity and every agent identity. P-256 is
 * cheap to generate and accepted by every TLS stack.
 */
export const MANAGEMENT_KEY_ALGORITHM: KeyAlgorithm = 'ECDSA-P256';

export function controllerIdentity(cluster: string): string {
  return `kubetrust://${cluster}/controller`;
}

export function agentIdentity(cluster: string, node: string): string {
  return `kubetrust://${cluster}/nodes/${node}`;
}

const AGENT_IDENTITY = /^kubetrust:\/\/([^/]+)\/nodes\/([^/]+)$/;

/** Reads the cluster and node name from an agent identity URI, or returns undefined for any other text. */
export function parseAgentIdentity(uri: string): { readonly cluster: string; readonly node: string } | undefined {
  const match = AGENT_IDENTITY.exec(uri);
  return match === null ? undefined : { cluster: match[1]!, node: match[2]! };
}

/** Subject and SANs of an agent's certificate on the management plane. */
export interface AgentIdentityNames {
  readonly commonName: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly uris: readonly string[];
}

/**
 * Returns the names of the agent certificate of `node`, whose agent listens on `host`, an IP
 * address or a DNS name. The agent puts them in its CSR, and the controller signs a CSR only when
 * it requests exactly these names.
 */
export function agentIdentityNames(cluster: string, node: string, host: string): AgentIdentityNames {
  const hostIsIp = isIP(host) !== 0;
  return {
    commonName: node,
    dnsNames: [...new Set([node, ...(hostIsIp ? [] : [host])])],
    ipAddresses: hostIsIp ? [normalizeIp(host)] : [],
    uris: [agentIdentity(cluster, node)],
  };
}

/** URI SANs of a peer certificate as Node's TLS layer reports it. */
export function peerUris(certificate: PeerCertificate | undefined): string[] {
  const altNames = certificate?.subjectaltname ?? '';
  return altNames
    .split(', ')
    .filter((entry) => entry.startsWith('URI:'))
    .map((entry) => entry.slice('URI:'.length));
}
