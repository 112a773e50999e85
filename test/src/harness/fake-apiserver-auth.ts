/**
 * Authentication and authorization of the fake Kubernetes API server: x509 client certificates,
 * bootstrap tokens, the Node authorizer with the NodeRestriction admission rule for Nodes, and RBAC
 * over ClusterRoles and ClusterRoleBindings.
 */
import * as crypto from 'node:crypto';
import type * as tls from 'node:tls';
import { inspectCertificate } from '@kubetrust/shared/dist/pki';

export interface UserInfo {
  readonly name: string;
  readonly uid: string;
  readonly groups: readonly string[];
  readonly extra: Readonly<Record<string, readonly string[]>>;
}

/** A request as RBAC sees it. `path` is set only for non-resource requests such as /version. */
export interface RequestAttributes {
  readonly verb: string;
  readonly apiGroup: string;
  readonly resource: string;
  readonly subresource: string;
  readonly namespace: string;
  readonly name: string;
  readonly path?: string;
}

export interface PolicyRule {
  readonly verbs: readonly string[];
  readonly apiGroups?: readonly string[];
  readonly resources?: readonly string[];
  readonly resourceNames?: readonly string[];
  readonly nonResourceURLs?: readonly string[];
}

export interface ClusterRole {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata: { readonly name: string; readonly [key: string]: unknown };
  readonly rules: readonly PolicyRule[];
}

export interface Subject {
  readonly kind: string;
  readonly name: string;
  readonly namespace?: string;
  readonly apiGroup?: string;
}

export interface ClusterRoleBinding {
  readonly metadata: { readonly name: string; readonly [key: string]: unknown };
  readonly roleRef: { readonly apiGroup: string; readonly kind: string; readonly name: string };
  readonly subjects?: readonly Subject[];
}

export const BOOTSTRAP_TOKEN_SECRET_TYPE = 'bootstrap.kubernetes.io/token';
export const BOOTSTRAP_DEFAULT_GROUP = 'system:bootstrappers';
const TOKEN_PATTERN = /^([a-z0-9]{6})\.([a-z0-9]{16})$/;
const EXTRA_GROUP_PATTERN = /^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$/;
const RFC3339_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

/** The subset of a stored Secret that the bootstrap token authenticator reads. `data` values are base64. */
export interface StoredSecret {
  readonly type?: string;
  readonly metadata: { readonly deletionTimestamp?: string };
  readonly data?: Readonly<Record<string, string>>;
}

function secretString(secret: StoredSecret, key: string): string {
  const value = secret.data?.[key];
  return value === undefined ? '' : Buffer.from(value, 'base64').toString('utf8');
}

function constantTimeEqual(left: string, right: string): boolean {
  const a = Buffer.from(left, 'utf8');
  const b = Buffer.from(right, 'utf8');
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

/**
 * Authenticates a bearer token as kube-apiserver's bootstrap token authenticator does. Returns
 * undefined for a token that is not a bootstrap token or does not authenticate. An unparseable
 * `expiration` counts as expired, and one invalid `auth-extra-groups` entry rejects the token.
 */
export function authenticateBootstrapToken(token: string, lookup: (secretName: string) => StoredSecret | undefined, now: Date): UserInfo | undefined {
  const match = TOKEN_PATTERN.exec(token);
  if (match === null) return undefined;
  const tokenId = match[1] as string;
  const tokenSecret = match[2] as string;

  const secret = lookup(`bootstrap-token-${tokenId}`);
  if (secret === undefined || secret.metadata.deletionTimestamp !== undefined) return undefined;
  if (secret.type !== BOOTSTRAP_TOKEN_SECRET_TYPE) return undefined;
  if (!constantTimeEqual(secretString(secret, 'token-secret'), tokenSecret)) return undefined;
  if (secretString(secret, 'token-id') !== tokenId) return undefined;

  const expiration = secretString(secret, 'expiration');
  if (expiration !== '') {
    const expiresAt = RFC3339_PATTERN.test(expiration) ? Date.parse(expiration) : Number.NaN;
    if (Number.isNaN(expiresAt) || expiresAt <= now.getTime()) return undefined;
  }
  if (secretString(secret, 'usage-bootstrap-authentication') !== 'true') return undefined;

  const groups = new Set([BOOTSTRAP_DEFAULT_GROUP]);
  const extraGroups = secretString(secret, 'auth-extra-groups');
  if (extraGroups !== '') {
    for (const group of extraGroups.split(',')) {
      if (!EXTRA_GROUP_PATTERN.test(group)) return undefined;
      groups.add(group);
    }
  }
  return { name: `system:bootstrap:${tokenId}`, uid: '', groups: [...groups].sort(), extra: {} };
}

/**
 * Maps a verified client certificate to a user: CN is the user name and every O is a group. The
 * TLS layer has already checked the chain against the client CA. A certificate with an extended
 * key usage extension must list client auth, as Go's verifier requires.
 */
export function authenticateClientCertificate(socket: tls.TLSSocket): UserInfo | undefined {
  if (!socket.authorized) return undefined;
  const peer = socket.getPeerX509Certificate();
  if (peer === undefined) return undefined;
  const extKeyUsage = peer.keyUsage;
  if (extKeyUsage !== undefined && !extKeyUsage.includes(CLIENT_AUTH_OID)) return undefined;
  const info = inspectCertificate(peer.toString());
  if (info.subject.commonName === '') return undefined;
  return { name: info.subject.commonName, uid: '', groups: [...(info.subject.organizations ?? [])], extra: {} };
}

/** Adds `system:authenticated` as kube-apiserver's group adder does for every authenticated user. */
export function withAuthenticatedGroup(user: UserInfo): UserInfo {
  return user.groups.includes('system:authenticated') ? user : { ...user, groups: [...user.groups, 'system:authenticated'] };
}

export const ANONYMOUS_USER: UserInfo = { name: 'system:anonymous', uid: '', groups: ['system:unauthenticated'], extra: {} };

const CSR_GROUP = 'certificates.k8s.io';
const RBAC_DEFAULTS_LABELS = { 'kubernetes.io/bootstrapping': 'rbac-defaults' };

function builtInRole(name: string, rules: PolicyRule[]): ClusterRole {
  return { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name, labels: RBAC_DEFAULTS_LABELS }, rules };
}

/** The built-in ClusterRoles of kube-apiserver's RBAC bootstrap policy that TLS bootstrapping uses. */
export const BUILT_IN_CLUSTER_ROLES: readonly ClusterRole[] = [
  builtInRole('cluster-admin', [
    { verbs: ['*'], apiGroups: ['*'], resources: ['*'] },
    { verbs: ['*'], nonResourceURLs: ['*'] },
  ]),
  builtInRole('system:node-bootstrapper', [
    { verbs: ['create', 'get', 'list', 'watch'], apiGroups: [CSR_GROUP], resources: ['certificatesigningrequests'] },
  ]),
  builtInRole('system:certificates.k8s.io:certificatesigningrequests:nodeclient', [
    { verbs: ['create'], apiGroups: [CSR_GROUP], resources: ['certificatesigningrequests/nodeclient'] },
  ]),
  builtInRole('system:certificates.k8s.io:certificatesigningrequests:selfnodeclient', [
    { verbs: ['create'], apiGroups: [CSR_GROUP], resources: ['certificatesigningrequests/selfnodeclient'] },
  ]),
  builtInRole('system:public-info-viewer', [
    { verbs: ['get'], nonResourceURLs: ['/healthz', '/livez', '/readyz', '/version', '/version/'] },
  ]),
];

function builtInBinding(name: string, roleName: string, groups: string[]): ClusterRoleBinding & Record<string, unknown> {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name, labels: RBAC_DEFAULTS_LABELS },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: roleName },
    subjects: groups.map((group) => ({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: group })),
  };
}

/** The built-in ClusterRoleBindings: `system:masters` is cluster-admin, and everyone may read /version and the health endpoints. */
export const BUILT_IN_CLUSTER_ROLE_BINDINGS: readonly (ClusterRoleBinding & Record<string, unknown>)[] = [
  builtInBinding('cluster-admin', 'cluster-admin', ['system:masters']),
  builtInBinding('system:public-info-viewer', 'system:public-info-viewer', ['system:authenticated', 'system:unauthenticated']),
];

function includesOrStar(values: readonly string[] | undefined, value: string): boolean {
  return values !== undefined && (values.includes('*') || values.includes(value));
}

function ruleAllows(rule: PolicyRule, attributes: RequestAttributes): boolean {
  if (!includesOrStar(rule.verbs, attributes.verb)) return false;
  if (attributes.path !== undefined) {
    return (rule.nonResourceURLs ?? []).some((url) => url === '*' || url === attributes.path || (url.endsWith('*') && attributes.path!.startsWith(url.slice(0, -1))));
  }
  if (!includesOrStar(rule.apiGroups, attributes.apiGroup)) return false;
  const combined = attributes.subresource === '' ? attributes.resource : `${attributes.resource}/${attributes.subresource}`;
  const resources = rule.resources ?? [];
  const resourceMatches =
    resources.includes('*') || resources.includes(combined) || (attributes.subresource !== '' && resources.includes(`*/${attributes.subresource}`));
  if (!resourceMatches) return false;
  const names = rule.resourceNames ?? [];
  return names.length === 0 || (attributes.name !== '' && names.includes(attributes.name));
}

function subjectMatches(subject: Subject, user: UserInfo): boolean {
  switch (subject.kind) {
    case 'User':
      return subject.name === user.name;
    case 'Group':
      return user.groups.includes(subject.name);
    case 'ServiceAccount':
      return user.name === `system:serviceaccount:${subject.namespace ?? ''}:${subject.name}`;
    default:
      return false;
  }
}

/** Evaluates RBAC: allowed when some ClusterRoleBinding whose subjects match the user points at a ClusterRole with a matching rule. */
export function rbacAllows(user: UserInfo, attributes: RequestAttributes, bindings: Iterable<ClusterRoleBinding>, roles: (name: string) => ClusterRole | undefined): boolean {
  for (const binding of bindings) {
    if (binding.roleRef.kind !== 'ClusterRole') continue;
    if (!(binding.subjects ?? []).some((subject) => subjectMatches(subject, user))) continue;
    const role = roles(binding.roleRef.name);
    if (role !== undefined && role.rules.some((rule) => ruleAllows(rule, attributes))) return true;
  }
  return false;
}

/** Returns the node name of a kubelet identity (`system:node:<name>` in group `system:nodes`), or undefined. */
export function nodeNameOf(user: UserInfo): string | undefined {
  if (!user.name.startsWith('system:node:') || !user.groups.includes('system:nodes')) return undefined;
  const name = user.name.slice('system:node:'.length);
  return name === '' ? undefined : name;
}

/**
 * Applies the part of kube-apiserver's Node authorizer that TLS bootstrapping touches: a node may
 * read, create and update Nodes and create, read and watch CSRs. Everything else that the real
 * Node authorizer grants (pods, secrets and config maps bound to the node, leases) is left to RBAC.
 */
export function nodeAuthorizerAllows(user: UserInfo, attributes: RequestAttributes): boolean {
  if (nodeNameOf(user) === undefined || attributes.path !== undefined) return false;
  if (attributes.apiGroup === '' && attributes.resource === 'nodes') {
    if (attributes.subresource === '') return ['create', 'get', 'list', 'watch', 'update', 'patch'].includes(attributes.verb);
    if (attributes.subresource === 'status') return ['update', 'patch'].includes(attributes.verb);
    return false;
  }
  if (attributes.apiGroup === CSR_GROUP && attributes.resource === 'certificatesigningrequests' && attributes.subresource === '') {
    return ['create', 'get', 'list', 'watch'].includes(attributes.verb);
  }
  return false;
}

/** Writes RBAC's denial message, for example `secrets "x" is forbidden: User "u" cannot get resource "secrets" in API group "" in the namespace "kube-system"`. */
export function forbiddenMessage(user: UserInfo, attributes: RequestAttributes): string {
  if (attributes.path !== undefined) {
    return `forbidden: User "${user.name}" cannot ${attributes.verb} path "${attributes.path}"`;
  }
  const qualified = attributes.apiGroup === '' ? attributes.resource : `${attributes.resource}.${attributes.apiGroup}`;
  const subject = attributes.name === '' ? qualified : `${qualified} "${attributes.name}"`;
  const resource = attributes.subresource === '' ? attributes.resource : `${attributes.resource}/${attributes.subresource}`;
  const scope = attributes.namespace === '' ? 'at the cluster scope' : `in the namespace "${attributes.namespace}"`;
  return `${subject} is forbidden: User "${user.name}" cannot ${attributes.verb} resource "${resource}" in API group "${attributes.apiGroup}" ${scope}`;
}
