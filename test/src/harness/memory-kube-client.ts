/**
 * An in-memory KubeClient for unit tests. It stores objects by name, answers label selectors of
 * the form `a=b,c=d`, and returns the status codes of the real API for a missing object (404,
 * returned as undefined or false) and an existing one on create (409). It records every call, so
 * tests can check what the logic did and did not touch. Like the real client, it returns Secrets
 * with `token-secret` redacted; `secrets` holds them as the API server stores them. It does no authentication or
 * authorization: the fake API server is the place for those.
 */
import {
  KubeApiError,
  type ClusterRoleBindingObject,
  type CsrEventType,
  type CsrObject,
  type CsrWatch,
  type CsrWatchHandler,
  type CsrWatchOptions,
  type KubeClient,
  type NodeObject,
  type SecretObject,
  redactSecret,
} from '@kubetrust/controller/dist/kubelet-bootstrap';

type Labelled = { readonly metadata: { readonly labels?: Readonly<Record<string, string>> } };

function matches(object: Labelled, selector: string): boolean {
  if (selector === '') return true;
  return selector.split(',').every((term) => {
    const [key, value] = term.split('=');
    return object.metadata.labels?.[key ?? ''] === value;
  });
}

/** Deep-copies own enumerable fields, so callers never share objects with the store and redacting hooks are not applied. */
function copy<T>(value: T): T {
  return structuredClone(value);
}

export class MemoryKubeClient implements KubeClient {
  readonly secrets = new Map<string, SecretObject>();
  readonly bindings = new Map<string, ClusterRoleBindingObject>();
  readonly csrs = new Map<string, CsrObject>();
  readonly nodes = new Map<string, NodeObject>();
  /** One entry per call, such as `createSecret kube-system/bootstrap-token-abcdef`. */
  readonly calls: string[] = [];
  private readonly watchers = new Set<{ signerName: string; handler: CsrWatchHandler }>();
  private resourceVersion = 1;

  private nextVersion(): string {
    return String(++this.resourceVersion);
  }

  async createSecret(secret: SecretObject): Promise<void> {
    const key = `${secret.metadata.namespace ?? 'default'}/${secret.metadata.name}`;
    this.calls.push(`createSecret ${key}`);
    if (this.secrets.has(key)) throw new KubeApiError(409, 'AlreadyExists', `create Secret ${key} failed: secrets "${secret.metadata.name}" already exists`);
    // Keep only enumerable fields, as a JSON body on the wire would without the redacting hooks.
    this.secrets.set(key, { ...copy({ ...secret }), metadata: { ...copy(secret.metadata), resourceVersion: this.nextVersion() } });
  }

  async getSecret(namespace: string, name: string): Promise<SecretObject | undefined> {
    this.calls.push(`getSecret ${namespace}/${name}`);
    const found = this.secrets.get(`${namespace}/${name}`);
    return found === undefined ? undefined : redactSecret(copy(found));
  }

  async listSecrets(namespace: string, labelSelector: string): Promise<SecretObject[]> {
    this.calls.push(`listSecrets ${namespace} ${labelSelector}`);
    return [...this.secrets.entries()].filter(([key, secret]) => key.startsWith(`${namespace}/`) && matches(secret, labelSelector)).map(([, secret]) => redactSecret(copy(secret)));
  }

  async deleteSecret(namespace: string, name: string): Promise<boolean> {
    this.calls.push(`deleteSecret ${namespace}/${name}`);
    return this.secrets.delete(`${namespace}/${name}`);
  }

  async getClusterRoleBinding(name: string): Promise<ClusterRoleBindingObject | undefined> {
    this.calls.push(`getClusterRoleBinding ${name}`);
    const found = this.bindings.get(name);
    return found === undefined ? undefined : copy(found);
  }

  async createClusterRoleBinding(binding: ClusterRoleBindingObject): Promise<ClusterRoleBindingObject> {
    this.calls.push(`createClusterRoleBinding ${binding.metadata.name}`);
    if (this.bindings.has(binding.metadata.name)) {
      throw new KubeApiError(409, 'AlreadyExists', `create ClusterRoleBinding ${binding.metadata.name} failed: already exists`);
    }
    const stored = { ...copy(binding), metadata: { ...copy(binding.metadata), resourceVersion: this.nextVersion() } };
    this.bindings.set(binding.metadata.name, stored);
    return copy(stored);
  }

  async listClusterRoleBindings(labelSelector: string): Promise<ClusterRoleBindingObject[]> {
    this.calls.push(`listClusterRoleBindings ${labelSelector}`);
    return [...this.bindings.values()].filter((binding) => matches(binding, labelSelector)).map(copy);
  }

  async listCsrs(signerName?: string): Promise<CsrObject[]> {
    this.calls.push(`listCsrs ${signerName ?? ''}`);
    return [...this.csrs.values()].filter((csr) => signerName === undefined || csr.spec.signerName === signerName).map(copy);
  }

  /** Lists, then delivers later changes. It ignores the backoff options, because `breakWatches` reconnects at once. */
  async watchCsrs(signerName: string, handler: CsrWatchHandler, _options?: CsrWatchOptions): Promise<CsrWatch> {
    this.calls.push(`watchCsrs ${signerName}`);
    const watcher = { signerName, handler };
    for (const csr of await this.listCsrs(signerName)) handler.onEvent('ADDED', csr);
    this.watchers.add(watcher);
    handler.onConnected?.();
    return { stop: () => this.watchers.delete(watcher) };
  }

  /**
   * Breaks every open watch as a dropped connection does: each handler gets `error`, then the watch
   * reconnects, lists every CSR again as ADDED and reports that it is connected.
   */
  async breakWatches(error: Error): Promise<void> {
    for (const watcher of [...this.watchers]) {
      watcher.handler.onError(error, 0);
      for (const csr of await this.listCsrs(watcher.signerName)) watcher.handler.onEvent('ADDED', csr);
      watcher.handler.onConnected?.();
    }
  }

  async updateCsrApproval(csr: CsrObject): Promise<CsrObject> {
    const name = csr.metadata.name;
    this.calls.push(`updateCsrApproval ${name}`);
    const stored = this.csrs.get(name);
    if (stored === undefined) throw new KubeApiError(404, 'NotFound', `approve CertificateSigningRequest ${name} failed: not found`);
    if (csr.metadata.resourceVersion !== undefined && csr.metadata.resourceVersion !== stored.metadata.resourceVersion) {
      throw new KubeApiError(409, 'Conflict', `approve CertificateSigningRequest ${name} failed: the object has been modified`);
    }
    // The approval subresource changes only the conditions.
    const updated: CsrObject = { ...stored, metadata: { ...stored.metadata, resourceVersion: this.nextVersion() }, status: { ...stored.status, conditions: copy(csr.status?.conditions ?? []) } };
    this.csrs.set(name, updated);
    this.emit('MODIFIED', updated);
    return copy(updated);
  }

  async getNode(name: string): Promise<NodeObject | undefined> {
    this.calls.push(`getNode ${name}`);
    const found = this.nodes.get(name);
    return found === undefined ? undefined : copy(found);
  }

  async listNodes(): Promise<NodeObject[]> {
    this.calls.push('listNodes');
    return [...this.nodes.values()].map(copy);
  }

  /** Stores a CSR as a kubelet would create it, and tells the watchers. */
  addCsr(csr: CsrObject): void {
    const stored = { ...copy(csr), metadata: { ...copy(csr.metadata), resourceVersion: this.nextVersion() } };
    this.csrs.set(csr.metadata.name, stored);
    this.emit('ADDED', stored);
  }

  /** Stores a Node as a registering kubelet would. */
  addNode(name: string): void {
    this.nodes.set(name, { apiVersion: 'v1', kind: 'Node', metadata: { name } });
  }

  private emit(type: CsrEventType, csr: CsrObject): void {
    for (const watcher of this.watchers) {
      if (watcher.signerName === csr.spec.signerName) watcher.handler.onEvent(type, copy(csr));
    }
  }
}
