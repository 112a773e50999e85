/**
 * KubeClient on `@kubernetes/client-node` 1.4.0, the last release that runs on Node.js 20 (2.x
 * needs undici 8 and Node.js 22.19). The package is an ES module. It is loaded with import() on
 * first use, which Node.js 20.19 and later resolve through require(esm). Loading it takes about
 * a second, so commands that never call the API do not pay for it.
 */
import type * as k8s from '@kubernetes/client-node';
import { KubeApiError, watchRetryDelay, type CsrEventType, type CsrWatch, type CsrWatchHandler, type CsrWatchOptions, type KubeClient } from './client';
import { redactSecret } from './token';
import type { ClusterRoleBindingObject, CsrObject, NodeObject, SecretObject } from './types';

const CSR_PATH = '/apis/certificates.k8s.io/v1/certificatesigningrequests';

/** Converts a client-node object to plain JSON, so dates become RFC 3339 strings as the API sends them. */
function plain<T>(value: unknown): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function statusOf(error: unknown): { status: number; reason: string; message: string } {
  const candidate = error as { code?: unknown; body?: unknown };
  if (typeof candidate?.code === 'number') {
    let body: unknown = candidate.body;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body);
      } catch {
        body = undefined;
      }
    }
    const status = (body ?? {}) as { reason?: unknown; message?: unknown };
    return {
      status: candidate.code,
      reason: typeof status.reason === 'string' ? status.reason : '',
      message: typeof status.message === 'string' ? status.message : `HTTP ${candidate.code}`,
    };
  }
  return { status: 0, reason: '', message: error instanceof Error ? error.message : String(error) };
}

/**
 * Rethrows a client-node error as KubeApiError. The message comes from the Status object only:
 * client-node's own message repeats the whole response body and headers.
 */
function apiError(operation: string, error: unknown): KubeApiError {
  const { status, reason, message } = statusOf(error);
  return new KubeApiError(status, reason, `${operation} failed: ${message}`);
}

async function orUndefinedOn404<T>(operation: string, call: () => Promise<T>): Promise<T | undefined> {
  try {
    return await call();
  } catch (error) {
    const converted = apiError(operation, error);
    if (converted.status === 404) return undefined;
    throw converted;
  }
}

async function wrapped<T>(operation: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw apiError(operation, error);
  }
}

class ClientNodeKubeClient implements KubeClient {
  private readonly core: k8s.CoreV1Api;
  private readonly rbac: k8s.RbacAuthorizationV1Api;
  private readonly certificates: k8s.CertificatesV1Api;

  constructor(
    private readonly library: typeof k8s,
    private readonly config: k8s.KubeConfig,
  ) {
    this.core = config.makeApiClient(library.CoreV1Api);
    this.rbac = config.makeApiClient(library.RbacAuthorizationV1Api);
    this.certificates = config.makeApiClient(library.CertificatesV1Api);
  }

  async createSecret(secret: SecretObject): Promise<void> {
    const namespace = secret.metadata.namespace ?? 'default';
    await wrapped(`create Secret ${namespace}/${secret.metadata.name}`, () => this.core.createNamespacedSecret({ namespace, body: secret as k8s.V1Secret }));
  }

  async getSecret(namespace: string, name: string): Promise<SecretObject | undefined> {
    const found = await orUndefinedOn404(`get Secret ${namespace}/${name}`, () => this.core.readNamespacedSecret({ namespace, name }));
    return found === undefined ? undefined : redactSecret(plain<SecretObject>(found));
  }

  async listSecrets(namespace: string, labelSelector: string): Promise<SecretObject[]> {
    const list = await wrapped(`list Secrets in ${namespace}`, () => this.core.listNamespacedSecret({ namespace, labelSelector }));
    return plain<SecretObject[]>(list.items).map(redactSecret);
  }

  async deleteSecret(namespace: string, name: string): Promise<boolean> {
    const deleted = await orUndefinedOn404(`delete Secret ${namespace}/${name}`, () => this.core.deleteNamespacedSecret({ namespace, name }));
    return deleted !== undefined;
  }

  async getClusterRoleBinding(name: string): Promise<ClusterRoleBindingObject | undefined> {
    const found = await orUndefinedOn404(`get ClusterRoleBinding ${name}`, () => this.rbac.readClusterRoleBinding({ name }));
    return found === undefined ? undefined : plain<ClusterRoleBindingObject>(found);
  }

  async createClusterRoleBinding(binding: ClusterRoleBindingObject): Promise<ClusterRoleBindingObject> {
    const created = await wrapped(`create ClusterRoleBinding ${binding.metadata.name}`, () =>
      this.rbac.createClusterRoleBinding({ body: binding as unknown as k8s.V1ClusterRoleBinding }),
    );
    return plain<ClusterRoleBindingObject>(created);
  }

  async listClusterRoleBindings(labelSelector: string): Promise<ClusterRoleBindingObject[]> {
    const list = await wrapped('list ClusterRoleBindings', () => this.rbac.listClusterRoleBinding({ labelSelector }));
    return plain<ClusterRoleBindingObject[]>(list.items);
  }

  async listCsrs(signerName?: string): Promise<CsrObject[]> {
    const list = await this.listCsrList(signerName);
    return list.items;
  }

  private async listCsrList(signerName: string | undefined): Promise<{ items: CsrObject[]; resourceVersion: string | undefined }> {
    const fieldSelector = signerName === undefined ? undefined : `spec.signerName=${signerName}`;
    const list = await wrapped('list CertificateSigningRequests', () =>
      this.certificates.listCertificateSigningRequest(fieldSelector === undefined ? {} : { fieldSelector }),
    );
    // The field selector is repeated here in case a server ignores it.
    const items = plain<CsrObject[]>(list.items).filter((csr) => signerName === undefined || csr.spec.signerName === signerName);
    return { items, resourceVersion: list.metadata?.resourceVersion };
  }

  async watchCsrs(signerName: string, handler: CsrWatchHandler, options: CsrWatchOptions = {}): Promise<CsrWatch> {
    const watch = new this.library.Watch(this.config);
    let stopped = false;
    let abort: AbortController | undefined;
    let timer: NodeJS.Timeout | undefined;
    let failures = 0;

    const deliver = (type: string, object: unknown): void => {
      if (stopped || (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED')) return;
      const csr = plain<CsrObject>(object);
      if (csr.spec?.signerName === signerName) handler.onEvent(type as CsrEventType, csr);
    };
    const schedule = (delayMs: number): void => {
      if (stopped) return;
      timer = setTimeout(() => void round(), delayMs);
    };
    const fail = (error: unknown): void => {
      if (stopped) return;
      failures += 1;
      const delayMs = watchRetryDelay(failures, options.retryBaseMs, options.retryMaxMs);
      handler.onError(error instanceof Error ? error : new Error(String(error)), delayMs);
      schedule(delayMs);
    };
    // Each round lists first, so a CSR that changed while no watch was open is still seen.
    const open = async (): Promise<void> => {
      const list = await this.listCsrList(signerName);
      if (stopped) return;
      for (const csr of list.items) handler.onEvent('ADDED', csr);
      const query: Record<string, string | boolean> = { fieldSelector: `spec.signerName=${signerName}`, allowWatchBookmarks: true };
      if (list.resourceVersion !== undefined) query.resourceVersion = list.resourceVersion;
      let ended = false;
      let connected = false;
      abort = await watch.watch(CSR_PATH, query, deliver, (error: unknown) => {
        ended = true;
        if (stopped) return;
        if (error !== null && error !== undefined) fail(apiError('watch CertificateSigningRequests', error));
        // A stream that the server closes before it was open counts as a failure, so a server that
        // keeps doing so is asked with the backoff instead of in a tight loop.
        else if (!connected) fail(new KubeApiError(0, '', 'watch CertificateSigningRequests failed: the server closed the watch at once'));
        // The server closes every watch after its timeout; the next round starts at once.
        else schedule(0);
      });
      if (ended || stopped) return;
      connected = true;
      failures = 0;
      handler.onConnected?.();
    };
    const round = async (): Promise<void> => {
      try {
        await open();
      } catch (error) {
        fail(error instanceof KubeApiError ? error : apiError('list CertificateSigningRequests', error));
      }
    };

    if (options.retryFirstRound === true) await round();
    else await open();
    return {
      stop(): void {
        stopped = true;
        if (timer !== undefined) clearTimeout(timer);
        abort?.abort();
      },
    };
  }

  async updateCsrApproval(csr: CsrObject): Promise<CsrObject> {
    const name = csr.metadata.name;
    const updated = await wrapped(`approve CertificateSigningRequest ${name}`, () =>
      this.certificates.replaceCertificateSigningRequestApproval({ name, body: csr as unknown as k8s.V1CertificateSigningRequest }),
    );
    return plain<CsrObject>(updated);
  }

  async getNode(name: string): Promise<NodeObject | undefined> {
    const found = await orUndefinedOn404(`get Node ${name}`, () => this.core.readNode({ name }));
    return found === undefined ? undefined : plain<NodeObject>(found);
  }

  async listNodes(): Promise<NodeObject[]> {
    const list = await wrapped('list Nodes', () => this.core.listNode());
    return plain<NodeObject[]>(list.items);
  }
}

/** Builds a KubeClient from a kubeconfig file and its current context. */
export async function createKubeClient(kubeconfigFile: string): Promise<KubeClient> {
  const library = await import('@kubernetes/client-node');
  const config = new library.KubeConfig();
  config.loadFromFile(kubeconfigFile);
  return new ClientNodeKubeClient(library, config);
}

/** Builds a KubeClient from kubeconfig text, for callers that hold the file's content. */
export async function createKubeClientFromText(kubeconfig: string): Promise<KubeClient> {
  const library = await import('@kubernetes/client-node');
  const config = new library.KubeConfig();
  config.loadFromString(kubeconfig);
  return new ClientNodeKubeClient(library, config);
}
