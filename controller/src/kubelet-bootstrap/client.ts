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
  /** Called each time a round has listed the CSRs and opened the watch stream. */
  onConnected?(): void;
  /** Called when a round fails or the stream breaks. The implementation tries again after `retryInMs`, until stopped. */
  onError(error: Error, retryInMs: number): void;
}

export interface CsrWatchOptions {
  /** Wait after the first failed round, which doubles after each further failed round up to `retryMaxMs`. */
  readonly retryBaseMs?: number;
  readonly retryMaxMs?: number;
  /**
   * Keeps retrying when the first round fails, so the returned promise always resolves. Without it,
   * a failure of the first round rejects the promise and nothing is retried.
   */
  readonly retryFirstRound?: boolean;
}

export interface CsrWatch {
  stop(): void;
}

export const DEFAULT_WATCH_RETRY_BASE_MS = 1_000;
export const DEFAULT_WATCH_RETRY_MAX_MS = 30_000;

/** Returns the wait before the next watch round after `failures` failed rounds in a row: base, 2 × base, 4 × base, ..., at most `maxMs`. */
export function watchRetryDelay(failures: number, baseMs = DEFAULT_WATCH_RETRY_BASE_MS, maxMs = DEFAULT_WATCH_RETRY_MAX_MS): number {
  if (failures <= 0) return 0;
  return Math.min(maxMs, baseMs * 2 ** Math.min(failures - 1, 30));
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
  /**
   * Watches the CSRs of one signer until `stop()` is called. Each round lists the CSRs, then watches
   * from the list's resource version. A round that fails is retried with the backoff of `options`.
   */
  watchCsrs(signerName: string, handler: CsrWatchHandler, options?: CsrWatchOptions): Promise<CsrWatch>;
  /**
   * Writes the CSR's conditions through the `approval` subresource and returns the updated CSR.
   * The caller adds the Approved condition; the other fields must be those last read.
   */
  updateCsrApproval(csr: CsrObject): Promise<CsrObject>;

  /** Returns undefined when the Node does not exist. */
  getNode(name: string): Promise<NodeObject | undefined>;
  listNodes(): Promise<NodeObject[]>;
}
