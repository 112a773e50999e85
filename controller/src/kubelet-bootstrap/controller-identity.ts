/**
 * The controller's own identity for the Kubernetes API, and the RBAC objects that give it exactly
 * the permissions that kubelet bootstrapping needs. The controller talks to the API with this
 * identity, not with the admin kubeconfig, so a leaked controller kubeconfig cannot read other
 * Secrets or change workloads.
 */
import * as YAML from 'yaml';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import { renderKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { generateKeyPair, inspectCertificate, privateKeyToPem, type ExtKeyUsage, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';
import { signLeaf } from '../authority';
import type { KeyMaterial } from '../state-dir';
import { NODE_BOOTSTRAPPER_ROLE, NODE_CLIENT_APPROVAL_ROLE, SELF_NODE_CLIENT_APPROVAL_ROLE } from './bindings';
import { BOOTSTRAP_NAMESPACE, KUBELET_SERVING_SIGNER, LABEL_MANAGED_BY, MANAGED_BY_VALUE, RBAC_API_GROUP } from './types';

/**
 * The controller's client certificate, described like a catalogue kubeconfig entry. It carries no
 * organization, so no built-in group applies, and its user name is bound to the role below.
 */
export const CONTROLLER_API_IDENTITY = {
  name: 'controller-api',
  description: 'kubetrust controller client certificate for the Kubernetes API (bootstrap tokens, bindings, kubelet serving CSR approval)',
  parent: 'cluster-ca',
  subject: { commonName: 'kubetrust:controller', organizations: [] as readonly string[] },
  extKeyUsage: ['clientAuth'] as readonly ExtKeyUsage[],
} as const;

export const CONTROLLER_API_USER = CONTROLLER_API_IDENTITY.subject.commonName;
export const CONTROLLER_ROLE_NAME = 'kubetrust:controller';

const labels = { [LABEL_MANAGED_BY]: MANAGED_BY_VALUE };
const userSubject = { kind: 'User', apiGroup: RBAC_API_GROUP, name: CONTROLLER_API_USER };

/**
 * Returns the four RBAC objects of the controller:
 * - a ClusterRole for the cluster-scoped resources, bound cluster-wide;
 * - a Role in kube-system for Secrets, so the controller cannot read Secrets of other namespaces.
 *
 * `bind` on the three bootstrap ClusterRoles is needed because the apiserver lets a user create a
 * binding only to a role whose permissions the user holds, or may bind.
 */
export function controllerRbacObjects(): Record<string, unknown>[] {
  const clusterRole = {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRole',
    metadata: { name: CONTROLLER_ROLE_NAME, labels },
    rules: [
      { apiGroups: [RBAC_API_GROUP], resources: ['clusterrolebindings'], verbs: ['create', 'get', 'list'] },
      {
        apiGroups: [RBAC_API_GROUP],
        resources: ['clusterroles'],
        verbs: ['bind'],
        resourceNames: [NODE_BOOTSTRAPPER_ROLE, NODE_CLIENT_APPROVAL_ROLE, SELF_NODE_CLIENT_APPROVAL_ROLE],
      },
      { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests/approval'], verbs: ['update'] },
      { apiGroups: ['certificates.k8s.io'], resources: ['signers'], verbs: ['approve'], resourceNames: [KUBELET_SERVING_SIGNER] },
      { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list'] },
    ],
  };
  const clusterRoleBinding = {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: CONTROLLER_ROLE_NAME, labels },
    roleRef: { apiGroup: RBAC_API_GROUP, kind: 'ClusterRole', name: CONTROLLER_ROLE_NAME },
    subjects: [userSubject],
  };
  const role = {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name: CONTROLLER_ROLE_NAME, namespace: BOOTSTRAP_NAMESPACE, labels },
    rules: [{ apiGroups: [''], resources: ['secrets'], verbs: ['create', 'get', 'list', 'delete'] }],
  };
  const roleBinding = {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: CONTROLLER_ROLE_NAME, namespace: BOOTSTRAP_NAMESPACE, labels },
    roleRef: { apiGroup: RBAC_API_GROUP, kind: 'Role', name: CONTROLLER_ROLE_NAME },
    subjects: [userSubject],
  };
  return [clusterRole, clusterRoleBinding, role, roleBinding];
}

/** Renders the RBAC objects as one multi-document YAML manifest for `kubectl apply -f`. */
export function controllerRbacManifest(): string {
  return controllerRbacObjects()
    .map((object) => YAML.stringify(object))
    .join('---\n');
}

export interface ControllerApiCredentials {
  readonly certificatePem: string;
  readonly notAfter: Date;
  /** kubeconfig with the embedded private key: write it with mode 0600 and never log it. */
  readonly kubeconfig: string;
}

export interface ControllerApiOptions {
  readonly inventory: Inventory;
  readonly clusterCa: KeyMaterial;
  /** CA certificates the kubeconfig trusts. Defaults to the cluster CA's certificate; a rotation passes the bundle. */
  readonly certificateAuthorityPem?: string;
  readonly now: Date;
  /** Defaults to the inventory's key algorithm. */
  readonly keyAlgorithm?: KeyAlgorithm;
}

/** Generates a key pair, signs the controller's client certificate with the cluster CA and renders its kubeconfig for the cluster endpoint. */
export async function issueControllerApiCredentials(options: ControllerApiOptions): Promise<ControllerApiCredentials> {
  const keyPair = await generateKeyPair(options.keyAlgorithm ?? options.inventory.pki.keyAlgorithm);
  const certificatePem = signLeaf(
    options.clusterCa,
    {
      label: 'kubetrust controller API certificate',
      commonName: CONTROLLER_API_IDENTITY.subject.commonName,
      organizations: CONTROLLER_API_IDENTITY.subject.organizations,
      extKeyUsage: CONTROLLER_API_IDENTITY.extKeyUsage,
    },
    keyPair.publicKey,
    options.inventory.pki.certValidityMs,
    options.now,
    { capToCa: true },
  );
  const kubeconfig = renderKubeconfig({
    clusterName: options.inventory.name,
    server: options.inventory.apiServer.endpoint,
    certificateAuthorityPem: options.certificateAuthorityPem ?? options.clusterCa.certificatePem,
    user: CONTROLLER_API_USER,
    clientCertificatePem: certificatePem,
    clientKeyPem: privateKeyToPem(keyPair.privateKey),
  });
  return { certificatePem, notAfter: inspectCertificate(certificatePem).notAfter, kubeconfig };
}
