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
  const data = { ca: b64(parts.certificateAuthorityPem), certificate: b64(parts.clientCertificatePem), key: b64(parts.clientKeyPem) };
  const fast = fastKubeconfig(parts, context, data);
  if (fast !== undefined) return fast;
  return stringifyKubeconfig(parts, context, data);
}

export interface TokenKubeconfigParts {
  readonly clusterName: string;
  readonly server: string;
  readonly certificateAuthorityPem: string;
  readonly user: string;
  /** Bearer token, such as a bootstrap token `<id>.<secret>`. */
  readonly token: string;
}

/** Renders a kubeconfig whose user authenticates with a bearer token instead of a client certificate. */
export function renderTokenKubeconfig(parts: TokenKubeconfigParts): string {
  const context = `${parts.user}@${parts.clusterName}`;
  const document = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: parts.clusterName, cluster: { 'certificate-authority-data': b64(parts.certificateAuthorityPem), server: parts.server } }],
    users: [{ name: parts.user, user: { token: parts.token } }],
    contexts: [{ name: context, context: { cluster: parts.clusterName, user: parts.user } }],
    'current-context': context,
  };
  return YAML.stringify(document);
}

function stringifyKubeconfig(parts: KubeconfigParts, context: string, data: { ca: string; certificate: string; key: string }): string {
  const document = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: parts.clusterName, cluster: { 'certificate-authority-data': data.ca, server: parts.server } }],
    users: [{ name: parts.user, user: { 'client-certificate-data': data.certificate, 'client-key-data': data.key } }],
    contexts: [{ name: context, context: { cluster: parts.clusterName, user: parts.user } }],
    'current-context': context,
  };
  return YAML.stringify(document);
}

// Rendering through YAML.stringify took about 0.2 ms per kubeconfig (Node 20, 2-vCPU VM), mostly in
// scanning the long base64 values, and an offline issue of a 1,000-worker cluster renders 2,000.
// When every value is one that YAML writes as a plain scalar, the template below gives the same
// bytes. The first kubeconfig of a process is rendered both ways and compared; a difference turns
// the template off for the rest of the process.

/** Short values already checked: whether YAML writes each as a plain scalar, unchanged. */
const plainScalars = new Map<string, boolean>();
let templateMatches: boolean | undefined;

function isPlainScalar(value: string): boolean {
  let plain = plainScalars.get(value);
  if (plain === undefined) {
    plain = value.length > 0 && value.length <= 253 && !value.includes('\n') && YAML.stringify(value) === `${value}\n`;
    if (plainScalars.size < 10_000) plainScalars.set(value, plain);
  }
  return plain;
}

/** Base64 of a PEM block: it starts with "LS0t" (of "-----") and so is never read as a number or keyword. */
function isPlainBase64(value: string): boolean {
  return value.startsWith('LS0t') && /^[A-Za-z0-9+/]+=*$/.test(value);
}

function fastKubeconfig(parts: KubeconfigParts, context: string, data: { ca: string; certificate: string; key: string }): string | undefined {
  if (templateMatches === false) return undefined;
  if (![parts.clusterName, parts.server, parts.user, context].every(isPlainScalar)) return undefined;
  if (![data.ca, data.certificate, data.key].every(isPlainBase64)) return undefined;
  const text =
    'apiVersion: v1\n' +
    'kind: Config\n' +
    'clusters:\n' +
    `  - name: ${parts.clusterName}\n` +
    '    cluster:\n' +
    `      certificate-authority-data: ${data.ca}\n` +
    `      server: ${parts.server}\n` +
    'users:\n' +
    `  - name: ${parts.user}\n` +
    '    user:\n' +
    `      client-certificate-data: ${data.certificate}\n` +
    `      client-key-data: ${data.key}\n` +
    'contexts:\n' +
    `  - name: ${context}\n` +
    '    context:\n' +
    `      cluster: ${parts.clusterName}\n` +
    `      user: ${parts.user}\n` +
    `current-context: ${context}\n`;
  if (templateMatches === undefined) {
    templateMatches = text === stringifyKubeconfig(parts, context, data);
    if (!templateMatches) return undefined;
  }
  return text;
}

export interface KubeconfigSummary {
  readonly server: string;
  readonly user: string;
  readonly certificateAuthorityPem: string;
  readonly clientCertificatePem: string;
  /** Absent when the kubeconfig references key files instead of embedding the key. */
  readonly clientKeyPem?: string;
  /** Bearer token of a token kubeconfig; absent otherwise. */
  readonly token?: string;
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
    ...(typeof user.token === 'string' ? { token: user.token } : {}),
  };
}
