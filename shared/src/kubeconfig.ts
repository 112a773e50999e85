/**
 * Renders and reads kubeconfig files with embedded credentials. The controller and the agent use
 * the same renderer, so a kubeconfig looks the same whichever side assembled it.
 */
import * as YAML from 'yaml';

export interface KubeconfigParts {
  readonly clusterName: string;
  readonly server: string;
  readonly certificateAuthorityPem: string;
  readonly user: string;
  readonly clientCertificatePem: string;
  readonly clientKeyPem: string;
}

const b64 = (pem: string): string => Buffer.from(pem, 'utf8').toString('base64');

export function renderKubeconfig(parts: KubeconfigParts): string {
  const context = `${parts.user}@${parts.clusterName}`;
  const document = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      { name: parts.clusterName, cluster: { 'certificate-authority-data': b64(parts.certificateAuthorityPem), server: parts.server } },
    ],
    users: [
      {
        name: parts.user,
        user: { 'client-certificate-data': b64(parts.clientCertificatePem), 'client-key-data': b64(parts.clientKeyPem) },
      },
    ],
    contexts: [{ name: context, context: { cluster: parts.clusterName, user: parts.user } }],
    'current-context': context,
  };
  return YAML.stringify(document);
}

export interface KubeconfigSummary {
  readonly server: string;
  readonly user: string;
  readonly certificateAuthorityPem: string;
  readonly clientCertificatePem: string;
  /** Absent when the kubeconfig references key files instead of embedding the key. */
  readonly clientKeyPem?: string;
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`kubeconfig: ${what} is not a mapping`);
  return value as Record<string, unknown>;
}

function named(list: unknown, name: unknown, what: string): Record<string, unknown> {
  if (!Array.isArray(list)) throw new Error(`kubeconfig: ${what}s is not a list`);
  const found = list.map((item) => record(item, what)).find((item) => item.name === name);
  if (found === undefined) throw new Error(`kubeconfig: no ${what} named "${String(name)}"`);
  return record(found[what], `${what} "${String(name)}"`);
}

function decoded(value: unknown): string {
  return typeof value === 'string' ? Buffer.from(value, 'base64').toString('utf8') : '';
}

/** Reads the current context's server, CA and embedded client credentials. Throws on a malformed file. */
export function parseKubeconfig(text: string): KubeconfigSummary {
  const root = record(YAML.parse(text) as unknown, 'document');
  const contextName = root['current-context'];
  const context = named(root.contexts, contextName, 'context');
  const cluster = named(root.clusters, context.cluster, 'cluster');
  const user = named(root.users, context.user, 'user');
  const key = decoded(user['client-key-data']);
  return {
    server: typeof cluster.server === 'string' ? cluster.server : '',
    user: typeof context.user === 'string' ? context.user : '',
    certificateAuthorityPem: decoded(cluster['certificate-authority-data']),
    clientCertificatePem: decoded(user['client-certificate-data']),
    ...(key !== '' ? { clientKeyPem: key } : {}),
  };
}
