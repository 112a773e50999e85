/**
 * The Kubernetes API calls that kubelet bootstrapping makes, behind one interface. The
 * implementation on `@kubernetes/client-node` is in `./client-node.ts`; tests use an in-memory one.
 */
import type { ClusterRoleBindingObject, CsrObject, NodeObject, SecretObject } from './types';

/**
 * A failed API call. `status` is the HTTP status (0 when no response arrived) and `reason` the
 * Status reason such as `AlreadyExists` or `Forbidden`. The message never contains a request body.
 */
export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

export type CsrEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface CsrWatchHandler {
  /** Called for every CSR that exists when the watch starts (as ADDED) and for every later change. */
  onEvent(type: CsrEventType, csr: CsrObject): void;
  /** Called when the watch fails; the implementation keeps retrying until stopped. */
  onError(error: Error): void;
}

export interface CsrWatch {
  stop(): void;
}

export interface KubeClient {
  /** Creates the Secret. Throws KubeApiError with status 409 when it exists. Returns nothing, so no token secret travels back. */
  createSecret(secret: SecretObject): Promise<void>;
  /**
   * Returns undefined when the Secret does not exist. Reads of Secrets return `token-secret` as
   * `<redacted>`, because kubetrust never needs the secret half of a token it has written.
   */
  getSecret(namespace: string, name: string): Promise<SecretObject | undefined>;
  /** Lists the Secrets that match the label selector, with `token-secret` redacted as in getSecret. */
  listSecrets(namespace: string, labelSelector: string): Promise<SecretObject[]>;
  /** Returns false when the Secret did not exist. */
  deleteSecret(namespace: string, name: string): Promise<boolean>;

  /** Returns undefined when the binding does not exist. */
  getClusterRoleBinding(name: string): Promise<ClusterRoleBindingObject | undefined>;
  createClusterRoleBinding(binding: ClusterRoleBindingObject): Promise<ClusterRoleBindingObject>;
  listClusterRoleBindings(labelSelector: string): Promise<ClusterRoleBindingObject[]>;

  /** Lists CSRs, only those of `signerName` when it is given. */
  listCsrs(signerName?: string): Promise<CsrObject[]>;
  /** Watches the CSRs of one signer until `stop()` is called. */
  watchCsrs(signerName: string, handler: CsrWatchHandler): Promise<CsrWatch>;
  /**
   * Writes the CSR's conditions through the `approval` subresource and returns the updated CSR.
   * The caller adds the Approved condition; the other fields must be those last read.
   */
  updateCsrApproval(csr: CsrObject): Promise<CsrObject>;

  /** Returns undefined when the Node does not exist. */
  getNode(name: string): Promise<NodeObject | undefined>;
  listNodes(): Promise<NodeObject[]>;
}
