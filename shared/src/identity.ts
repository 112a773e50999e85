/**
 * Identities on the management trust plane. The management CA signs one certificate for the
 * controller and one per agent; each carries a URI SAN naming the cluster and the role, so a node
 * certificate can never pass as the controller and one node's agent cannot pass as another's.
 */
import type { PeerCertificate } from 'node:tls';

export function controllerIdentity(cluster: string): string {
  return `kubetrust://${cluster}/controller`;
}

export function agentIdentity(cluster: string, node: string): string {
  return `kubetrust://${cluster}/nodes/${node}`;
}

/** URI SANs of a peer certificate as Node's TLS layer reports it. */
export function peerUris(certificate: PeerCertificate | undefined): string[] {
  const altNames = certificate?.subjectaltname ?? '';
  return altNames
    .split(', ')
    .filter((entry) => entry.startsWith('URI:'))
    .map((entry) => entry.slice('URI:'.length));
}
