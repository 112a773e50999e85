/**
 * The parts of Kubernetes API objects that kubelet bootstrapping reads and writes. The field names
 * and nesting are those of the API (core/v1 Secret and Node, rbac.authorization.k8s.io/v1
 * ClusterRoleBinding, certificates.k8s.io/v1 CertificateSigningRequest), so the shapes convert to
 * and from `@kubernetes/client-node` objects without renaming. Fields that kubetrust never reads are
 * left out.
 */

export interface ObjectMeta {
  readonly name: string;
  readonly namespace?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly creationTimestamp?: string;
  readonly resourceVersion?: string;
}

export interface SecretObject {
  readonly apiVersion?: 'v1';
  readonly kind?: 'Secret';
  readonly metadata: ObjectMeta;
  readonly type?: string;
  /** Base64-encoded values, as the API returns them. */
  readonly data?: Readonly<Record<string, string>>;
}

export interface RoleRef {
  readonly apiGroup: string;
  readonly kind: string;
  readonly name: string;
}

export interface Subject {
  readonly kind: string;
  readonly name: string;
  readonly apiGroup?: string;
  readonly namespace?: string;
}

export interface ClusterRoleBindingObject {
  readonly apiVersion?: 'rbac.authorization.k8s.io/v1';
  readonly kind?: 'ClusterRoleBinding';
  readonly metadata: ObjectMeta;
  readonly roleRef: RoleRef;
  readonly subjects?: readonly Subject[];
}

export interface CsrCondition {
  /** Approved, Denied or Failed. */
  readonly type: string;
  readonly status: string;
  readonly reason?: string;
  readonly message?: string;
  readonly lastUpdateTime?: string;
  readonly lastTransitionTime?: string;
}

export interface CsrObject {
  readonly apiVersion?: 'certificates.k8s.io/v1';
  readonly kind?: 'CertificateSigningRequest';
  readonly metadata: ObjectMeta;
  readonly spec: {
    readonly signerName: string;
    /**
     * The PKCS#10 request as PEM. The API carries it base64-encoded in JSON; the client layer and
     * the approval decision accept either form.
     */
    readonly request: string;
    readonly usages?: readonly string[];
    readonly username?: string;
    readonly groups?: readonly string[];
    readonly uid?: string;
    readonly expirationSeconds?: number;
  };
  readonly status?: {
    readonly conditions?: readonly CsrCondition[];
    /** Base64-encoded PEM once the signer has issued the certificate. */
    readonly certificate?: string;
  };
}

export interface NodeObject {
  readonly apiVersion?: 'v1';
  readonly kind?: 'Node';
  readonly metadata: ObjectMeta;
  readonly status?: {
    readonly conditions?: readonly { readonly type: string; readonly status: string }[];
    readonly addresses?: readonly { readonly type: string; readonly address: string }[];
  };
}

/** Signer of kubelet serving certificates, which kube-controller-manager never approves by itself. */
export const KUBELET_SERVING_SIGNER = 'kubernetes.io/kubelet-serving';
/** Signer of kubelet client certificates. */
export const KUBELET_CLIENT_SIGNER = 'kubernetes.io/kube-apiserver-client-kubelet';

/** Group of every node's client certificate. */
export const NODES_GROUP = 'system:nodes';

export const RBAC_API_GROUP = 'rbac.authorization.k8s.io';
export const BOOTSTRAP_NAMESPACE = 'kube-system';

/** Labels and annotations by which kubetrust finds the objects it created. */
export const LABEL_MANAGED_BY = 'kubetrust.io/managed-by';
export const LABEL_CLUSTER = 'kubetrust.io/cluster';
export const LABEL_NODE = 'kubetrust.io/node';
export const ANNOTATION_NODE = 'kubetrust.io/node';
export const MANAGED_BY_VALUE = 'kubetrust';
