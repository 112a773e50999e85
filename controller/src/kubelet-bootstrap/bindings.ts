/**
 * The ClusterRoleBindings that TLS bootstrapping needs (Kubernetes "TLS bootstrapping", section
 * "Authorize kubelet to create CSR" and "Approval"):
 *
 * - the bootstrap group may create CSRs (built-in ClusterRole `system:node-bootstrapper`);
 * - the first client certificate of a node in that group is approved by kube-controller-manager
 *   (`system:certificates.k8s.io:certificatesigningrequests:nodeclient`);
 * - renewals requested by nodes in `system:nodes` are approved too (`...:selfnodeclient`).
 *
 * The bound group must be the `auth-extra-groups` of every token. A token that carries another
 * group authenticates, but its kubelet is forbidden to create its CSR.
 */
import { requiredBindingsOf } from '@kubetrust/shared/dist/catalogue';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import { KubeApiError, type KubeClient } from './client';
import { LABEL_CLUSTER, LABEL_MANAGED_BY, MANAGED_BY_VALUE, NODES_GROUP, RBAC_API_GROUP, type ClusterRoleBindingObject, type Subject } from './types';
import { labelSelector, validateBootstrapGroup } from './token';

export const NODE_BOOTSTRAPPER_ROLE = 'system:node-bootstrapper';
export const NODE_CLIENT_APPROVAL_ROLE = 'system:certificates.k8s.io:certificatesigningrequests:nodeclient';
export const SELF_NODE_CLIENT_APPROVAL_ROLE = 'system:certificates.k8s.io:certificatesigningrequests:selfnodeclient';

/** Names of kubetrust's bindings. The `kubetrust:` prefix keeps them apart from kubeadm's and from hand-made ones. */
export const BOOTSTRAP_BINDING_NAMES = {
  createCsrs: 'kubetrust:kubelet-bootstrap',
  approveFirstClientCertificate: 'kubetrust:node-autoapprove-bootstrap',
  approveClientRenewals: 'kubetrust:node-autoapprove-certificate-rotation',
} as const;

function groupSubject(name: string): Subject {
  return { kind: 'Group', apiGroup: RBAC_API_GROUP, name };
}

function binding(name: string, clusterRole: string, subject: Subject, cluster: string): ClusterRoleBindingObject {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name, labels: { [LABEL_MANAGED_BY]: MANAGED_BY_VALUE, [LABEL_CLUSTER]: cluster } },
    roleRef: { apiGroup: RBAC_API_GROUP, kind: 'ClusterRole', name: clusterRole },
    subjects: [subject],
  };
}

/**
 * Returns the bindings that the catalogue's certificates need (requiredBindingsOf), named
 * `kubetrust:` and the role without its `system:` prefix, one binding per role.
 */
export function catalogueBindings(inventory: Inventory): ClusterRoleBindingObject[] {
  const byRole = new Map<string, Subject[]>();
  for (const required of requiredBindingsOf(inventory)) {
    const subjects = byRole.get(required.clusterRole) ?? [];
    subjects.push(required.subjectKind === 'Group' ? groupSubject(required.subjectName) : { kind: 'User', apiGroup: RBAC_API_GROUP, name: required.subjectName });
    byRole.set(required.clusterRole, subjects);
  }
  return [...byRole].map(([role, subjects]) => ({ ...binding(`kubetrust:${role.replace(/^system:/, '')}`, role, subjects[0]!, inventory.name), subjects }));
}

/** Returns the three bindings for `group`, the extra group that the cluster's bootstrap tokens carry. */
export function bootstrapBindings(cluster: string, group: string): ClusterRoleBindingObject[] {
  const bootstrappers = groupSubject(validateBootstrapGroup(group));
  return [
    binding(BOOTSTRAP_BINDING_NAMES.createCsrs, NODE_BOOTSTRAPPER_ROLE, bootstrappers, cluster),
    binding(BOOTSTRAP_BINDING_NAMES.approveFirstClientCertificate, NODE_CLIENT_APPROVAL_ROLE, bootstrappers, cluster),
    binding(BOOTSTRAP_BINDING_NAMES.approveClientRenewals, SELF_NODE_CLIENT_APPROVAL_ROLE, groupSubject(NODES_GROUP), cluster),
  ];
}

/**
 * What ensureBindings did with one binding:
 * - created: it was missing and kubetrust created it;
 * - unchanged: kubetrust's binding exists with the expected role and subjects;
 * - conflict: a binding of that name exists without kubetrust's label, so it belongs to someone else and was left alone;
 * - outdated: kubetrust's binding exists with another role or other subjects, for example after the
 *   bootstrap group changed. It was left alone because the controller may not update or delete bindings.
 */
export type BindingStatus = 'created' | 'unchanged' | 'conflict' | 'outdated';

export interface BindingResult {
  readonly name: string;
  readonly status: BindingStatus;
  /** For conflict and outdated: what differs and what to do. */
  readonly message?: string;
}

function describeSubjects(subjects: readonly Subject[] | undefined): string {
  if (subjects === undefined || subjects.length === 0) return 'no subjects';
  return subjects.map((subject) => `${subject.kind} ${subject.name}`).join(', ');
}

function sameRoleRef(actual: ClusterRoleBindingObject, expected: ClusterRoleBindingObject): boolean {
  return actual.roleRef.apiGroup === expected.roleRef.apiGroup && actual.roleRef.kind === expected.roleRef.kind && actual.roleRef.name === expected.roleRef.name;
}

function subjectKey(subject: Subject): string {
  return `${subject.kind}\u0000${subject.apiGroup ?? ''}\u0000${subject.namespace ?? ''}\u0000${subject.name}`;
}

function sameSubjects(actual: ClusterRoleBindingObject, expected: ClusterRoleBindingObject): boolean {
  const actualKeys = new Set((actual.subjects ?? []).map(subjectKey));
  const expectedKeys = new Set((expected.subjects ?? []).map(subjectKey));
  return actualKeys.size === expectedKeys.size && [...expectedKeys].every((key) => actualKeys.has(key));
}

/** Compares an existing binding with the expected one and returns its status, without calling the API. */
export function compareBinding(existing: ClusterRoleBindingObject, expected: ClusterRoleBindingObject): BindingResult {
  const name = expected.metadata.name;
  if (existing.metadata.labels?.[LABEL_MANAGED_BY] !== MANAGED_BY_VALUE) {
    return {
      name,
      status: 'conflict',
      message: `ClusterRoleBinding ${name} exists without the label ${LABEL_MANAGED_BY}=${MANAGED_BY_VALUE}, so kubetrust leaves it alone; rename or delete it if kubetrust should create its own`,
    };
  }
  if (!sameRoleRef(existing, expected)) {
    return {
      name,
      status: 'outdated',
      message: `ClusterRoleBinding ${name} refers to ClusterRole ${existing.roleRef.name}, expected ${expected.roleRef.name}; delete it so that kubetrust can create it again`,
    };
  }
  if (!sameSubjects(existing, expected)) {
    return {
      name,
      status: 'outdated',
      message: `ClusterRoleBinding ${name} binds ${describeSubjects(existing.subjects)}, expected ${describeSubjects(expected.subjects)}; delete it so that kubetrust can create it again`,
    };
  }
  return { name, status: 'unchanged' };
}

/**
 * Creates the expected bindings that are missing and reports on the others. It never updates or
 * deletes a binding: one without kubetrust's label is reported as a conflict, and one of
 * kubetrust's that differs is reported as outdated.
 */
export async function ensureBindings(client: KubeClient, expected: readonly ClusterRoleBindingObject[]): Promise<BindingResult[]> {
  const results: BindingResult[] = [];
  for (const wanted of expected) {
    const existing = await client.getClusterRoleBinding(wanted.metadata.name);
    if (existing !== undefined) {
      results.push(compareBinding(existing, wanted));
      continue;
    }
    try {
      await client.createClusterRoleBinding(wanted);
      results.push({ name: wanted.metadata.name, status: 'created' });
    } catch (error) {
      // Someone else created it between the get and the create: judge what is there now.
      const created = error instanceof KubeApiError && error.status === 409 ? await client.getClusterRoleBinding(wanted.metadata.name) : undefined;
      if (created === undefined) throw error;
      results.push(compareBinding(created, wanted));
    }
  }
  return results;
}

/** Lists the ClusterRoleBindings that kubetrust created for a cluster. */
export function listOwnBindings(client: KubeClient, cluster: string): Promise<ClusterRoleBindingObject[]> {
  return client.listClusterRoleBindings(labelSelector({ [LABEL_MANAGED_BY]: MANAGED_BY_VALUE, [LABEL_CLUSTER]: cluster }));
}
