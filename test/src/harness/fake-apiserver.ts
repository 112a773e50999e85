/**
 * A stand-in for kube-apiserver and the two kube-controller-manager controllers that kubelet TLS
 * bootstrapping needs, for tests on machines where no real API server can run. It serves HTTPS on
 * a loopback address, authenticates client certificates and bootstrap tokens, and authorizes with
 * the Node authorizer and RBAC. It stores Secrets, Nodes, ClusterRoles, ClusterRoleBindings and
 * CertificateSigningRequests with the object shapes, status codes and watch stream of the real
 * API. test/README.md lists what it leaves out.
 */
import * as crypto from 'node:crypto';
import * as https from 'node:https';
import type * as http from 'node:http';
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import {
  ANONYMOUS_USER,
  BUILT_IN_CLUSTER_ROLES,
  BUILT_IN_CLUSTER_ROLE_BINDINGS,
  authenticateBootstrapToken,
  authenticateClientCertificate,
  forbiddenMessage,
  nodeAuthorizerAllows,
  nodeNameOf,
  rbacAllows,
  withAuthenticatedGroup,
  type ClusterRole,
  type ClusterRoleBinding,
  type RequestAttributes,
  type StoredSecret,
  type UserInfo,
} from './fake-apiserver-auth';
import {
  KUBELET_CLIENT_SIGNER,
  KUBELET_SERVING_SIGNER,
  decodeCsrRequest,
  hasCondition,
  kubeletClientProblem,
  kubeletServingProblem,
  signKubeletCsr,
  validateCsrConditions,
  validateCsrCreate,
  type CsrCondition,
  type CsrObject,
  type SigningAuthority,
} from './fake-apiserver-csr';
import {
  ApiError,
  alreadyExists,
  badRequest,
  conflict,
  forbidden,
  gone,
  invalid,
  methodNotAllowed,
  notFound,
  pathNotFound,
  unauthorized,
  type FieldError,
} from './fake-apiserver-status';

export { BUILT_IN_CLUSTER_ROLES, type ClusterRole, type ClusterRoleBinding, type PolicyRule, type UserInfo } from './fake-apiserver-auth';
export { KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER } from './fake-apiserver-csr';

export interface FakeApiServerOptions {
  /** Loopback address to listen on; the tests use 127.0.45.0/24. */
  readonly host: string;
  /** TCP port, or 0 for a free one (read it back from `url`). */
  readonly port: number;
  /** The apiserver's serving certificate (PEM, leaf first) and its private key. */
  readonly servingCertificatePem: string;
  readonly servingKeyPem: string;
  /** The client CA bundle (PEM) that client certificates must chain to, as `--client-ca-file`. */
  readonly clientCaPem: string;
  /**
   * The CA that kube-controller-manager's csrsigning controller signs kubelet CSRs with
   * (`--cluster-signing-cert-file` and `--cluster-signing-key-file`). Without it, approved CSRs
   * stay without a certificate.
   */
  readonly signingCa?: { readonly certificatePem: string; readonly privateKeyPem: string };
  /** Runs the csrapproving controller that auto-approves kubelet client CSRs. Defaults to true. */
  readonly autoApproveKubeletClientCsrs?: boolean;
  /** `--cluster-signing-duration`, in milliseconds. Defaults to one year. */
  readonly signingDurationMs?: number;
  /** Authorizes with the Node authorizer before RBAC (`--authorization-mode=Node,RBAC`). Defaults to true. */
  readonly nodeAuthorizer?: boolean;
  /** Treats requests without credentials as `system:anonymous` (`--anonymous-auth`). Defaults to false, so they get 401. */
  readonly anonymousAuth?: boolean;
  /** Extra ClusterRoles besides the built-in ones. */
  readonly clusterRoles?: readonly ClusterRole[];
  /** Clock for token expiry, timestamps and certificate validity. Defaults to the system clock. */
  readonly now?: () => Date;
}

/** One handled request, for assertions. It never contains credentials. */
export interface FakeApiRequestRecord {
  readonly method: string;
  readonly path: string;
  readonly user: string;
  readonly code: number;
}

interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly resource: string;
  readonly kind: string;
  readonly namespaced: boolean;
  readonly subresources: readonly string[];
}

const RESOURCE_TYPES: readonly ResourceType[] = [
  { group: '', version: 'v1', resource: 'secrets', kind: 'Secret', namespaced: true, subresources: [] },
  { group: '', version: 'v1', resource: 'nodes', kind: 'Node', namespaced: false, subresources: [] },
  { group: 'rbac.authorization.k8s.io', version: 'v1', resource: 'clusterroles', kind: 'ClusterRole', namespaced: false, subresources: [] },
  { group: 'rbac.authorization.k8s.io', version: 'v1', resource: 'clusterrolebindings', kind: 'ClusterRoleBinding', namespaced: false, subresources: [] },
  { group: 'certificates.k8s.io', version: 'v1', resource: 'certificatesigningrequests', kind: 'CertificateSigningRequest', namespaced: false, subresources: ['approval', 'status'] },
];

const NAMESPACES: readonly string[] = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const SECRET_KEY = /^[-._a-zA-Z0-9]+$/;
const GENERATE_NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';
const WATCH_HISTORY_LIMIT = 10_000;
const MAX_BODY_BYTES = 3 * 1024 * 1024;

// Objects are stored as parsed JSON. The fake relies on its own writes to keep the shapes right.
type KubeObject = { apiVersion: string; kind: string; metadata: ObjectMeta; [key: string]: unknown };
interface ObjectMeta {
  name: string;
  namespace?: string;
  generateName?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  labels?: Record<string, string>;
  [key: string]: unknown;
}

interface WatchEvent {
  readonly resourceVersion: number;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly typeKey: string;
  readonly object: KubeObject;
}

interface Watcher {
  readonly typeKey: string;
  readonly namespace: string;
  readonly matches: (object: KubeObject) => boolean;
  readonly response: http.ServerResponse;
}

interface ParsedPath {
  readonly type: ResourceType;
  readonly namespace: string;
  readonly name: string;
  readonly subresource: string;
}

function typeKey(type: ResourceType): string {
  return `${type.group}/${type.resource}`;
}

function clone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function timestamp(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The fake API server. Start it with `FakeApiServer.start`, talk to it with any Kubernetes client
 * that trusts the serving certificate, and stop it with `close`.
 */
export class FakeApiServer {
  /** Every request handled so far, in order. */
  readonly requests: FakeApiRequestRecord[] = [];

  private readonly objects = new Map<string, KubeObject>();
  private readonly roles = new Map<string, ClusterRole>();
  private readonly history: WatchEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<net.Socket>();
  private readonly signing: SigningAuthority | undefined;
  private readonly now: () => Date;
  private revision = 1;
  private controllersScheduled = false;
  private closed = false;
  private listenedUrl: string | undefined;

  private constructor(
    private readonly server: https.Server,
    private readonly options: FakeApiServerOptions,
  ) {
    this.now = options.now ?? (() => new Date());
    this.signing =
      options.signingCa === undefined
        ? undefined
        : { certificatePem: options.signingCa.certificatePem, privateKey: crypto.createPrivateKey(options.signingCa.privateKeyPem) };
    for (const role of [...BUILT_IN_CLUSTER_ROLES, ...(options.clusterRoles ?? [])]) this.storeBuiltIn('clusterroles', role);
    for (const binding of BUILT_IN_CLUSTER_ROLE_BINDINGS) this.storeBuiltIn('clusterrolebindings', binding);
  }

  /** Starts the server and resolves once it listens. */
  static async start(options: FakeApiServerOptions): Promise<FakeApiServer> {
    const server = https.createServer({
      cert: options.servingCertificatePem,
      key: options.servingKeyPem,
      ca: options.clientCaPem,
      requestCert: true,
      rejectUnauthorized: false,
    });
    const fake = new FakeApiServer(server, options);
    server.on('request', (request: http.IncomingMessage, response: http.ServerResponse) => {
      fake.handle(request, response).catch((err: unknown) => fake.sendError(request, response, '', err));
    });
    server.on('connection', (socket: net.Socket) => {
      fake.sockets.add(socket);
      socket.on('close', () => fake.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    fake.listenedUrl = `https://${options.host}:${(server.address() as net.AddressInfo).port}`;
    return fake;
  }

  /** The base URL, such as `https://127.0.45.1:6443`. It stays the same while `stopServing` has the server down. */
  get url(): string {
    return this.baseUrl;
  }

  private get baseUrl(): string {
    if (this.listenedUrl === undefined) throw new Error('the fake API server has not listened yet');
    return this.listenedUrl;
  }

  /** Ends every watch and connection and stops listening. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const watcher of this.watchers) watcher.response.end();
    this.watchers.clear();
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await stopped;
  }

  /**
   * Stops listening and drops every connection, but keeps the stored objects and the watch history,
   * as a kube-apiserver process that stops while etcd keeps its data. `resumeServing` listens again
   * on the same address and port.
   */
  async stopServing(): Promise<void> {
    if (this.closed) throw new Error('the fake API server is closed; start a new one');
    this.endWatches();
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await stopped;
  }

  /** Listens again on the address and port that `stopServing` released, with the objects kept. */
  async resumeServing(): Promise<void> {
    if (this.closed) throw new Error('the fake API server is closed; start a new one');
    const port = Number(new URL(this.baseUrl).port);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, this.options.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /** Ends every open watch stream, as kube-apiserver does when a watch reaches its timeout, and returns how many it ended. */
  endWatches(): number {
    const count = this.watchers.size;
    for (const watcher of this.watchers) watcher.response.end();
    this.watchers.clear();
    return count;
  }

  /** Adds or replaces a ClusterRole, as an administrator would with `kubectl apply`. */
  addClusterRole(role: ClusterRole): void {
    this.storeBuiltIn('clusterroles', role);
  }

  /** Returns a copy of a stored object, or undefined. `resource` is the plural, such as `certificatesigningrequests`. */
  getObject(resource: string, name: string, namespace = ''): Record<string, unknown> | undefined {
    const type = RESOURCE_TYPES.find((candidate) => candidate.resource === resource);
    if (type === undefined) throw new Error(`unknown resource "${resource}": expected one of ${RESOURCE_TYPES.map((t) => t.resource).join(', ')}`);
    const object = this.objects.get(this.objectKey(type, namespace, name));
    return object === undefined ? undefined : clone(object);
  }

  private storeBuiltIn(resource: string, object: { metadata: { name: string } }): void {
    const type = RESOURCE_TYPES.find((candidate) => candidate.resource === resource) as ResourceType;
    const stored = clone(object) as unknown as KubeObject;
    stored.apiVersion = type.group === '' ? type.version : `${type.group}/${type.version}`;
    stored.kind = type.kind;
    const key = this.objectKey(type, '', stored.metadata.name);
    const previous = this.objects.get(key);
    this.stampMetadata(stored, previous);
    this.objects.set(key, stored);
    if (resource === 'clusterroles') this.roles.set(stored.metadata.name, stored as unknown as ClusterRole);
    this.recordEvent(previous === undefined ? 'ADDED' : 'MODIFIED', type, stored);
  }

  private objectKey(type: ResourceType, namespace: string, name: string): string {
    return `${typeKey(type)}/${namespace}/${name}`;
  }

  private stampMetadata(object: KubeObject, previous: KubeObject | undefined): void {
    this.revision += 1;
    object.metadata.uid = previous?.metadata.uid ?? crypto.randomUUID();
    object.metadata.creationTimestamp = previous?.metadata.creationTimestamp ?? timestamp(this.now());
    object.metadata.resourceVersion = String(this.revision);
  }

  private recordEvent(type: WatchEvent['type'], resourceType: ResourceType, object: KubeObject): void {
    const event: WatchEvent = { resourceVersion: this.revision, type, typeKey: typeKey(resourceType), object: clone(object) };
    this.history.push(event);
    if (this.history.length > WATCH_HISTORY_LIMIT) this.history.shift();
    for (const watcher of this.watchers) this.deliver(watcher, event);
    if (resourceType.resource === 'certificatesigningrequests') this.scheduleControllers();
  }

  private deliver(watcher: Watcher, event: WatchEvent): void {
    if (watcher.typeKey !== event.typeKey) return;
    if (watcher.namespace !== '' && event.object.metadata.namespace !== watcher.namespace) return;
    if (!watcher.matches(event.object)) return;
    watcher.response.write(`${JSON.stringify({ type: event.type, object: event.object })}\n`);
  }

  // ---- request handling ----

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'https://fake-apiserver.invalid');
    const user = this.authenticate(request);
    if (user === undefined) throw unauthorized();

    const nonResource = ['/version', '/healthz', '/livez', '/readyz'].includes(url.pathname);
    if (nonResource) {
      const attributes: RequestAttributes = { verb: (request.method ?? 'GET').toLowerCase(), apiGroup: '', resource: '', subresource: '', namespace: '', name: '', path: url.pathname };
      this.authorize(user, attributes);
      const body = url.pathname === '/version' ? { major: '1', minor: '33', gitVersion: 'v1.33.0-kubetrust-fake', platform: 'linux/amd64' } : 'ok';
      this.send(request, response, user, 200, body);
      return;
    }

    const parsed = this.parsePath(url.pathname);
    const verb = this.verbOf(request.method ?? 'GET', parsed, url.searchParams);
    const attributes: RequestAttributes = {
      verb,
      apiGroup: parsed.type.group,
      resource: parsed.type.resource,
      subresource: parsed.subresource,
      namespace: parsed.namespace,
      name: parsed.name,
    };
    this.authorize(user, attributes);
    if (parsed.namespace !== '' && !NAMESPACES.includes(parsed.namespace)) throw notFound('namespaces', '', parsed.namespace);

    switch (verb) {
      case 'get':
        this.send(request, response, user, 200, this.getSubresource(parsed));
        return;
      case 'list':
        this.send(request, response, user, 200, this.list(parsed, url.searchParams));
        return;
      case 'watch':
        this.watch(request, response, user, parsed, url.searchParams);
        return;
      case 'create':
        this.send(request, response, user, 201, this.create(parsed, await readJson(request), user));
        return;
      case 'update':
        this.send(request, response, user, 200, this.update(parsed, await readJson(request), user));
        return;
      case 'delete':
        this.send(request, response, user, 200, this.delete(parsed));
        return;
      default:
        throw methodNotAllowed();
    }
  }

  private authenticate(request: http.IncomingMessage): UserInfo | undefined {
    // kube-apiserver tries each authenticator in turn, so a failed certificate still lets a valid token through.
    const fromCertificate = authenticateClientCertificate(request.socket as tls.TLSSocket);
    if (fromCertificate !== undefined) return withAuthenticatedGroup(fromCertificate);

    const header = request.headers.authorization;
    if (header !== undefined) {
      const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
      if (match === null) return undefined;
      const fromToken = authenticateBootstrapToken(match[1] as string, (name) => this.lookupSecret(name), this.now());
      return fromToken === undefined ? undefined : withAuthenticatedGroup(fromToken);
    }
    const presentedCertificate = (request.socket as tls.TLSSocket).getPeerX509Certificate() !== undefined;
    return this.options.anonymousAuth === true && !presentedCertificate ? ANONYMOUS_USER : undefined;
  }

  private lookupSecret(name: string): StoredSecret | undefined {
    const type = RESOURCE_TYPES[0] as ResourceType;
    return this.objects.get(this.objectKey(type, 'kube-system', name)) as unknown as StoredSecret | undefined;
  }

  /** Returns whether the user may do what the attributes describe, with the same authorizer chain as requests. */
  allows(user: UserInfo, attributes: RequestAttributes): boolean {
    if (this.options.nodeAuthorizer !== false && nodeAuthorizerAllows(user, attributes)) return true;
    const bindings = [...this.objects.values()].filter((object) => object.kind === 'ClusterRoleBinding') as unknown as ClusterRoleBinding[];
    return rbacAllows(user, attributes, bindings, (name) => this.roles.get(name));
  }

  private authorize(user: UserInfo, attributes: RequestAttributes): void {
    if (this.allows(user, attributes)) return;
    const details = attributes.path === undefined ? { name: attributes.name, group: attributes.apiGroup, kind: attributes.resource } : undefined;
    throw forbidden(forbiddenMessage(user, attributes), details);
  }

  private parsePath(pathname: string): ParsedPath {
    // Clients percent-encode names such as `kubetrust:kubelet-bootstrap`, and kube-apiserver decodes each segment.
    let parts: string[];
    try {
      parts = pathname
        .split('/')
        .filter((part) => part !== '')
        .map((part) => decodeURIComponent(part));
    } catch {
      throw pathNotFound();
    }
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === 'api' && parts.length >= 2) {
      group = '';
      version = parts[1] as string;
      rest = parts.slice(2);
    } else if (parts[0] === 'apis' && parts.length >= 3) {
      group = parts[1] as string;
      version = parts[2] as string;
      rest = parts.slice(3);
    } else {
      throw pathNotFound();
    }
    let namespace = '';
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1] as string;
      rest = rest.slice(2);
    }
    const type = RESOURCE_TYPES.find((candidate) => candidate.group === group && candidate.version === version && candidate.resource === rest[0]);
    const misplaced = type !== undefined && ((!type.namespaced && namespace !== '') || (type.namespaced && namespace === '' && rest.length > 1));
    if (type === undefined || misplaced || rest.length > 3) throw pathNotFound();
    const subresource = rest[2] ?? '';
    if (subresource !== '' && !type.subresources.includes(subresource)) throw pathNotFound();
    return { type, namespace, name: rest[1] ?? '', subresource };
  }

  private verbOf(method: string, parsed: ParsedPath, query: URLSearchParams): string {
    const watch = query.get('watch');
    const isWatch = watch === 'true' || watch === '1';
    switch (method) {
      case 'GET':
        if (parsed.name !== '') return 'get';
        return isWatch ? 'watch' : 'list';
      case 'POST':
        if (parsed.name !== '') throw methodNotAllowed();
        return 'create';
      case 'PUT':
        if (parsed.name === '') throw methodNotAllowed();
        return 'update';
      case 'DELETE':
        if (parsed.name === '' || parsed.subresource !== '') throw methodNotAllowed();
        return 'delete';
      default:
        throw methodNotAllowed();
    }
  }

  private getExisting(parsed: ParsedPath): KubeObject {
    const object = this.objects.get(this.objectKey(parsed.type, parsed.namespace, parsed.name));
    if (object === undefined) throw notFound(parsed.type.resource, parsed.type.group, parsed.name);
    return object;
  }

  private getSubresource(parsed: ParsedPath): KubeObject {
    return clone(this.getExisting(parsed));
  }

  private selectorFilter(type: ResourceType, query: URLSearchParams): (object: KubeObject) => boolean {
    const labels = parseLabelSelector(query.get('labelSelector') ?? '');
    const fields = parseFieldSelector(type, query.get('fieldSelector') ?? '');
    return (object) => labels(object.metadata.labels ?? {}) && fields(object);
  }

  private list(parsed: ParsedPath, query: URLSearchParams): Record<string, unknown> {
    const matches = this.selectorFilter(parsed.type, query);
    const allNamespaces = parsed.type.namespaced && parsed.namespace === '';
    const prefix = allNamespaces ? `${typeKey(parsed.type)}/` : `${typeKey(parsed.type)}/${parsed.namespace}/`;
    const items = [...this.objects.entries()]
      .filter(([key, object]) => key.startsWith(prefix) && object.kind === parsed.type.kind && matches(object))
      .map(([, object]) => {
        const { apiVersion: _apiVersion, kind: _kind, ...item } = clone(object);
        return item;
      })
      .sort((a, b) => `${a.metadata.namespace ?? ''}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace ?? ''}/${b.metadata.name}`));
    const apiVersion = parsed.type.group === '' ? parsed.type.version : `${parsed.type.group}/${parsed.type.version}`;
    return { kind: `${parsed.type.kind}List`, apiVersion, metadata: { resourceVersion: String(this.revision) }, items };
  }

  private watch(request: http.IncomingMessage, response: http.ServerResponse, user: UserInfo, parsed: ParsedPath, query: URLSearchParams): void {
    const matches = this.selectorFilter(parsed.type, query);
    const requested = query.get('resourceVersion') ?? '';
    const watcher: Watcher = { typeKey: typeKey(parsed.type), namespace: parsed.namespace, matches, response };
    let backlog: WatchEvent[];
    if (requested === '' || requested === '0') {
      // Without a resourceVersion, a watch starts with a synthetic ADDED event for every current object.
      backlog = [...this.objects.values()]
        .filter((object) => object.kind === parsed.type.kind)
        .map((object) => ({ resourceVersion: this.revision, type: 'ADDED' as const, typeKey: watcher.typeKey, object: clone(object) }));
    } else {
      const from = Number(requested);
      if (!Number.isInteger(from) || from < 0) throw badRequest(`invalid resource version "${requested}"`);
      const oldest = this.history[0]?.resourceVersion ?? this.revision;
      if (from < oldest - 1) {
        response.writeHead(200, { 'Content-Type': 'application/json' });
        const status = gone(`too old resource version: ${from} (${oldest - 1})`).status;
        response.end(`${JSON.stringify({ type: 'ERROR', object: status })}\n`);
        this.record(request, user, 200);
        return;
      }
      backlog = this.history.filter((event) => event.resourceVersion > from);
    }

    response.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private' });
    response.flushHeaders();
    this.record(request, user, 200);
    for (const event of backlog) this.deliver(watcher, event);
    this.watchers.add(watcher);

    const timeoutSeconds = Number(query.get('timeoutSeconds') ?? '0');
    const timer = timeoutSeconds > 0 ? setTimeout(() => response.end(), timeoutSeconds * 1000) : undefined;
    const stop = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      this.watchers.delete(watcher);
    };
    response.on('close', stop);
    request.on('close', stop);
  }

  private create(parsed: ParsedPath, body: unknown, user: UserInfo): KubeObject {
    const type = parsed.type;
    if (parsed.subresource !== '') throw methodNotAllowed();
    const object = this.checkBody(type, body, '');
    if (type.namespaced) {
      if (object.metadata.namespace !== undefined && object.metadata.namespace !== parsed.namespace) {
        throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      object.metadata.namespace = parsed.namespace;
    } else {
      delete object.metadata.namespace;
    }
    if ((object.metadata.name ?? '') === '' && typeof object.metadata.generateName === 'string' && object.metadata.generateName !== '') {
      object.metadata.name = object.metadata.generateName + randomSuffix();
    }
    delete object.metadata.uid;
    delete object.metadata.resourceVersion;
    delete object.metadata.creationTimestamp;

    const errors = validateMetadata(object, type.resource === 'secrets' || type.resource === 'nodes');
    switch (type.resource) {
      case 'secrets':
        errors.push(...prepareSecret(object));
        break;
      case 'clusterrolebindings':
        errors.push(...validateClusterRoleBinding(object));
        break;
      case 'clusterroles':
        if (!Array.isArray(object.rules)) object.rules = [];
        break;
      case 'nodes':
        this.admitNodeCreate(user, object.metadata.name);
        if (object.spec === undefined) object.spec = {};
        if (object.status === undefined) object.status = {};
        break;
      case 'certificatesigningrequests':
        errors.push(...this.prepareCsr(object, user));
        break;
      default:
        break;
    }
    if (errors.length > 0) throw invalid(type.kind, type.group, object.metadata.name ?? '', errors);

    const key = this.objectKey(type, parsed.namespace, object.metadata.name);
    if (this.objects.has(key)) throw alreadyExists(type.resource, type.group, object.metadata.name);
    this.stampMetadata(object, undefined);
    this.objects.set(key, object);
    if (type.resource === 'clusterroles') this.roles.set(object.metadata.name, object as unknown as ClusterRole);
    this.recordEvent('ADDED', type, object);
    return clone(object);
  }

  /** NodeRestriction admission: a kubelet may create only the Node that carries its own name. */
  private admitNodeCreate(user: UserInfo, name: string): void {
    const nodeName = nodeNameOf(user);
    if (nodeName !== undefined && nodeName !== name) {
      throw forbidden(`nodes "${name}" is forbidden: node "${nodeName}" is not allowed to modify node "${name}"`, { name, group: '', kind: 'nodes' });
    }
  }

  private prepareCsr(object: KubeObject, user: UserInfo): FieldError[] {
    const csr = object as unknown as CsrObject;
    if (typeof csr.spec !== 'object' || csr.spec === null) csr.spec = {} as CsrObject['spec'];
    const errors = validateCsrCreate(csr);
    // The requester's identity always comes from authentication, whatever the body contains.
    csr.spec.username = user.name;
    csr.spec.groups = [...user.groups];
    if (user.uid !== '') csr.spec.uid = user.uid;
    else delete csr.spec.uid;
    if (Object.keys(user.extra).length > 0) csr.spec.extra = clone(user.extra) as Record<string, string[]>;
    else delete csr.spec.extra;
    csr.status = {};
    return errors;
  }

  private update(parsed: ParsedPath, body: unknown, user: UserInfo): KubeObject {
    const type = parsed.type;
    if (type.resource !== 'certificatesigningrequests' || parsed.subresource === '') {
      throw methodNotAllowed();
    }
    const existing = this.getExisting(parsed);
    const incoming = this.checkBody(type, body, parsed.name) as unknown as CsrObject;
    if (incoming.metadata.resourceVersion !== undefined && incoming.metadata.resourceVersion !== '' && incoming.metadata.resourceVersion !== existing.metadata.resourceVersion) {
      throw conflict(type.resource, type.group, parsed.name);
    }
    const current = clone(existing) as unknown as CsrObject;
    const previousConditions = current.status.conditions ?? [];
    const nextConditions = stampConditions(previousConditions, incoming.status?.conditions ?? [], this.now());
    const errors = validateCsrConditions(previousConditions, nextConditions);

    if (parsed.subresource === 'approval') {
      this.admitSignerVerb(user, 'approve', current);
      current.status.conditions = nextConditions;
    } else {
      const certificate = incoming.status?.certificate;
      if (certificate !== undefined && certificate !== current.status.certificate) {
        this.admitSignerVerb(user, 'sign', current);
        if (!hasCondition(current, 'Approved')) {
          errors.push({ field: 'status.certificate', type: 'FieldValueForbidden', detail: 'Forbidden: certificate can only be set once an Approved condition exists' });
        }
        current.status.certificate = certificate;
      }
      current.status.conditions = nextConditions;
    }
    if (errors.length > 0) throw invalid(type.kind, type.group, parsed.name, errors);
    if (current.status.conditions?.length === 0) delete current.status.conditions;
    return this.replace(type, existing, current as unknown as KubeObject);
  }

  /** Enforces the CertificateApproval and CertificateSigning admission plugins, which also need `approve` or `sign` on the CSR's signer. */
  private admitSignerVerb(user: UserInfo, verb: 'approve' | 'sign', csr: CsrObject): void {
    const signerName = csr.spec.signerName;
    const domainWildcard = `${signerName.split('/')[0] ?? ''}/*`;
    const allowed = [signerName, domainWildcard].some((name) =>
      this.allows(user, { verb, apiGroup: 'certificates.k8s.io', resource: 'signers', subresource: '', namespace: '', name }),
    );
    if (!allowed) {
      throw forbidden(`certificatesigningrequests.certificates.k8s.io "${csr.metadata.name}" is forbidden: user not permitted to ${verb} requests with signerName "${signerName}"`, {
        name: csr.metadata.name,
        group: 'certificates.k8s.io',
        kind: 'certificatesigningrequests',
      });
    }
  }

  private replace(type: ResourceType, previous: KubeObject, next: KubeObject): KubeObject {
    this.stampMetadata(next, previous);
    this.objects.set(this.objectKey(type, previous.metadata.namespace ?? '', previous.metadata.name), next);
    this.recordEvent('MODIFIED', type, next);
    return clone(next);
  }

  private delete(parsed: ParsedPath): Record<string, unknown> {
    const existing = this.getExisting(parsed);
    const key = this.objectKey(parsed.type, parsed.namespace, parsed.name);
    this.objects.delete(key);
    if (parsed.type.resource === 'clusterroles') this.roles.delete(parsed.name);
    this.revision += 1;
    const deleted = clone(existing);
    deleted.metadata.resourceVersion = String(this.revision);
    this.recordEvent('DELETED', parsed.type, deleted);
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Success',
      details: { name: parsed.name, group: parsed.type.group, kind: parsed.type.resource, uid: existing.metadata.uid },
    };
  }

  private checkBody(type: ResourceType, body: unknown, urlName: string): KubeObject {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the body of the request was not a JSON object');
    const object = body as KubeObject;
    const apiVersion = type.group === '' ? type.version : `${type.group}/${type.version}`;
    if (object.kind !== undefined && object.kind !== type.kind) {
      throw badRequest(`the API version in the data (${String(object.apiVersion)}) does not match the expected API version (${apiVersion})`);
    }
    object.apiVersion = apiVersion;
    object.kind = type.kind;
    if (typeof object.metadata !== 'object' || object.metadata === null) object.metadata = { name: '' };
    if (urlName !== '' && object.metadata.name !== urlName) {
      throw badRequest(`the name of the object (${String(object.metadata.name)}) does not match the name on the URL (${urlName})`);
    }
    return object;
  }

  // ---- kube-controller-manager ----

  private scheduleControllers(): void {
    if (this.controllersScheduled || this.closed) return;
    this.controllersScheduled = true;
    setImmediate(() => {
      this.controllersScheduled = false;
      if (!this.closed) this.runCsrControllers();
    });
  }

  /** Runs one pass of the csrapproving and csrsigning controllers over every stored CSR. */
  private runCsrControllers(): void {
    const type = RESOURCE_TYPES.find((candidate) => candidate.resource === 'certificatesigningrequests') as ResourceType;
    for (const stored of [...this.objects.values()].filter((object) => object.kind === type.kind)) {
      const csr = clone(stored) as unknown as CsrObject;
      if (this.options.autoApproveKubeletClientCsrs !== false && this.approveKubeletClient(csr)) {
        this.replace(type, stored, csr as unknown as KubeObject);
        continue;
      }
      if (this.signing !== undefined && this.signApproved(csr, this.signing)) {
        this.replace(type, stored, csr as unknown as KubeObject);
      }
    }
  }

  /**
   * Adds an Approved condition to a kubelet client CSR when a SubjectAccessReview for its requester
   * allows `create` on `certificatesigningrequests/selfnodeclient` (the node renews its own
   * certificate, so the requester equals the CN) or on `certificatesigningrequests/nodeclient`.
   * It never denies: a CSR that fails both checks stays pending.
   */
  private approveKubeletClient(csr: CsrObject): boolean {
    if (csr.spec.signerName !== KUBELET_CLIENT_SIGNER) return false;
    if (hasCondition(csr, 'Approved') || hasCondition(csr, 'Denied')) return false;
    let parsed;
    try {
      parsed = decodeCsrRequest(csr.spec.request);
    } catch {
      return false;
    }
    if (kubeletClientProblem(parsed, csr.spec.usages) !== undefined) return false;

    const requester: UserInfo = { name: csr.spec.username ?? '', uid: csr.spec.uid ?? '', groups: csr.spec.groups ?? [], extra: csr.spec.extra ?? {} };
    const review = (subresource: string): boolean =>
      this.allows(requester, { verb: 'create', apiGroup: 'certificates.k8s.io', resource: 'certificatesigningrequests', subresource, namespace: '', name: '' });
    let message: string | undefined;
    if (requester.name === parsed.commonName && review('selfnodeclient')) {
      message = 'Auto approving self kubelet client certificate after SubjectAccessReview.';
    } else if (review('nodeclient')) {
      message = 'Auto approving kubelet client certificate after SubjectAccessReview.';
    }
    if (message === undefined) return false;
    const now = timestamp(this.now());
    csr.status.conditions = [...(csr.status.conditions ?? []), { type: 'Approved', status: 'True', reason: 'AutoApproved', message, lastUpdateTime: now, lastTransitionTime: now }];
    return true;
  }

  /** Signs an approved kubelet CSR, or marks it Failed with SignerValidationFailure when its content breaks the signer's rules. */
  private signApproved(csr: CsrObject, authority: SigningAuthority): boolean {
    const signer = csr.spec.signerName;
    if (signer !== KUBELET_CLIENT_SIGNER && signer !== KUBELET_SERVING_SIGNER) return false;
    if (!hasCondition(csr, 'Approved') || hasCondition(csr, 'Failed') || (csr.status.certificate ?? '') !== '') return false;

    let problem: string | undefined;
    let certificatePem: string | undefined;
    try {
      const parsed = decodeCsrRequest(csr.spec.request);
      problem = signer === KUBELET_CLIENT_SIGNER ? kubeletClientProblem(parsed, csr.spec.usages) : kubeletServingProblem(parsed, csr.spec.usages);
      if (problem === undefined) {
        const durationMs = this.options.signingDurationMs ?? 365 * 24 * 60 * 60 * 1000;
        certificatePem = signKubeletCsr(authority, parsed, csr.spec.usages, durationMs, csr.spec.expirationSeconds, this.now());
      }
    } catch (err) {
      problem = (err as Error).message;
    }
    if (certificatePem !== undefined) {
      csr.status.certificate = Buffer.from(certificatePem, 'utf8').toString('base64');
      return true;
    }
    const now = timestamp(this.now());
    const failed: CsrCondition = { type: 'Failed', status: 'True', reason: 'SignerValidationFailure', message: problem ?? 'invalid request', lastUpdateTime: now, lastTransitionTime: now };
    csr.status.conditions = [...(csr.status.conditions ?? []), failed];
    return true;
  }

  // ---- responses ----

  private record(request: http.IncomingMessage, user: UserInfo | string, code: number): void {
    const path = new URL(request.url ?? '/', 'https://fake-apiserver.invalid').pathname;
    this.requests.push({ method: request.method ?? '', path, user: typeof user === 'string' ? user : user.name, code });
  }

  private send(request: http.IncomingMessage, response: http.ServerResponse, user: UserInfo, code: number, body: unknown): void {
    this.record(request, user, code);
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    response.writeHead(code, { 'Content-Type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json' });
    response.end(text);
  }

  private sendError(request: http.IncomingMessage, response: http.ServerResponse, user: string, err: unknown): void {
    const status =
      err instanceof ApiError
        ? err.status
        : { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: (err as Error).message, reason: 'InternalError', code: 500 };
    this.record(request, user, status.code);
    if (response.headersSent) {
      response.end();
      return;
    }
    response.writeHead(status.code, { 'Content-Type': 'application/json' });
    response.end(JSON.stringify(status));
  }
}

function randomSuffix(): string {
  const bytes = crypto.randomBytes(5);
  return [...bytes].map((byte) => GENERATE_NAME_ALPHABET[byte % GENERATE_NAME_ALPHABET.length]).join('');
}

function readJson(request: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new ApiError({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'Request entity too large', reason: 'RequestEntityTooLarge', code: 413 }));
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(badRequest(`the body of the request was in an unknown format: ${(err as Error).message}`));
      }
    });
    request.on('error', reject);
  });
}

/**
 * Validates metadata.name: Secrets and Nodes need a DNS subdomain, while RBAC objects and CSRs only
 * need a valid path segment, so names such as `system:node-bootstrapper` and the kubelet's
 * base64url `node-csr-…` are accepted.
 */
function validateMetadata(object: KubeObject, dnsSubdomain: boolean): FieldError[] {
  const name = object.metadata.name;
  if (typeof name !== 'string' || name === '') {
    return [{ field: 'metadata.name', type: 'FieldValueRequired', detail: 'Required value: name or generateName is required' }];
  }
  if (!dnsSubdomain) {
    const badSegment = name === '.' || name === '..' || name.includes('/') || name.includes('%');
    return badSegment ? [{ field: 'metadata.name', type: 'FieldValueInvalid', detail: `Invalid value: "${name}": may not be '.' or '..' and may not contain '/' or '%'` }] : [];
  }
  if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) {
    const detail = `Invalid value: "${name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`;
    return [{ field: 'metadata.name', type: 'FieldValueInvalid', detail }];
  }
  return [];
}

/** Merges `stringData` into base64 `data` as the Secret strategy does, defaults the type, and validates keys and values. */
function prepareSecret(object: KubeObject): FieldError[] {
  const errors: FieldError[] = [];
  const data: Record<string, string> = typeof object.data === 'object' && object.data !== null ? (object.data as Record<string, string>) : {};
  for (const [key, value] of Object.entries(data)) {
    if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
      throw badRequest(`Secret in version "v1" cannot be handled as a Secret: illegal base64 data in data["${key}"]`);
    }
  }
  const stringData = object.stringData;
  if (typeof stringData === 'object' && stringData !== null) {
    for (const [key, value] of Object.entries(stringData as Record<string, unknown>)) {
      data[key] = Buffer.from(String(value), 'utf8').toString('base64');
    }
  }
  delete object.stringData;
  for (const key of Object.keys(data)) {
    if (!SECRET_KEY.test(key)) {
      errors.push({ field: `data[${key}]`, type: 'FieldValueInvalid', detail: `Invalid value: "${key}": a valid config key must consist of alphanumeric characters, '-', '_' or '.'` });
    }
  }
  object.data = data;
  if (typeof object.type !== 'string' || object.type === '') object.type = 'Opaque';
  return errors;
}

function validateClusterRoleBinding(object: KubeObject): FieldError[] {
  const errors: FieldError[] = [];
  const roleRef = object.roleRef as { apiGroup?: string; kind?: string; name?: string } | undefined;
  if (roleRef === undefined || typeof roleRef !== 'object') {
    return [{ field: 'roleRef', type: 'FieldValueRequired', detail: 'Required value' }];
  }
  if (roleRef.apiGroup !== 'rbac.authorization.k8s.io') {
    errors.push({ field: 'roleRef.apiGroup', type: 'FieldValueNotSupported', detail: `Unsupported value: "${String(roleRef.apiGroup)}": supported values: "rbac.authorization.k8s.io"` });
  }
  if (roleRef.kind !== 'ClusterRole') {
    errors.push({ field: 'roleRef.kind', type: 'FieldValueNotSupported', detail: `Unsupported value: "${String(roleRef.kind)}": supported values: "ClusterRole"` });
  }
  if (typeof roleRef.name !== 'string' || roleRef.name === '') {
    errors.push({ field: 'roleRef.name', type: 'FieldValueRequired', detail: 'Required value' });
  }
  const subjects = Array.isArray(object.subjects) ? (object.subjects as { kind?: string; name?: string; namespace?: string }[]) : [];
  subjects.forEach((subject, index) => {
    if (!['User', 'Group', 'ServiceAccount'].includes(subject.kind ?? '')) {
      errors.push({ field: `subjects[${index}].kind`, type: 'FieldValueNotSupported', detail: `Unsupported value: "${String(subject.kind)}": supported values: "ServiceAccount", "User", "Group"` });
    }
    if (typeof subject.name !== 'string' || subject.name === '') {
      errors.push({ field: `subjects[${index}].name`, type: 'FieldValueRequired', detail: 'Required value' });
    }
    if (subject.kind === 'ServiceAccount' && (subject.namespace ?? '') === '') {
      errors.push({ field: `subjects[${index}].namespace`, type: 'FieldValueRequired', detail: 'Required value' });
    }
  });
  return errors;
}

/** Fills lastUpdateTime and lastTransitionTime of new or changed conditions, as the CSR strategy does. */
function stampConditions(previous: readonly CsrCondition[], next: readonly CsrCondition[], now: Date): CsrCondition[] {
  const stamp = timestamp(now);
  return next.map((condition) => {
    const before = previous.find((candidate) => candidate.type === condition.type);
    const result: CsrCondition = { ...condition };
    if (result.lastUpdateTime === undefined || result.lastUpdateTime === null) result.lastUpdateTime = stamp;
    if (result.lastTransitionTime === undefined || result.lastTransitionTime === null) {
      result.lastTransitionTime = before !== undefined && before.status === condition.status ? (before.lastTransitionTime ?? stamp) : stamp;
    }
    return result;
  });
}

type LabelTest = (labels: Readonly<Record<string, string>>) => boolean;

/** Parses the label selector syntax of the API: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`, joined by commas. */
export function parseLabelSelector(selector: string): LabelTest {
  const tests: LabelTest[] = [];
  const requirements = selector.match(/[^,(]+(\([^)]*\))?/g) ?? [];
  for (const raw of requirements) {
    const requirement = raw.trim();
    if (requirement === '') continue;
    let match: RegExpExecArray | null;
    if ((match = /^(\S+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(requirement)) !== null) {
      const key = match[1] as string;
      const values = (match[3] as string).split(',').map((value) => value.trim());
      const isIn = match[2] === 'in';
      tests.push((labels) => (isIn ? key in labels && values.includes(labels[key] as string) : !(key in labels) || !values.includes(labels[key] as string)));
    } else if ((match = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(requirement)) !== null) {
      const key = match[1] as string;
      const value = match[3] as string;
      const equal = match[2] !== '!=';
      tests.push((labels) => (equal ? labels[key] === value : labels[key] !== value));
    } else if ((match = /^!\s*(\S+)$/.exec(requirement)) !== null) {
      const key = match[1] as string;
      tests.push((labels) => !(key in labels));
    } else if (/^\S+$/.test(requirement)) {
      tests.push((labels) => requirement in labels);
    } else {
      throw badRequest(`unable to parse requirement: ${requirement}`);
    }
  }
  return (labels) => tests.every((test) => test(labels));
}

const FIELD_LABELS: Readonly<Record<string, readonly string[]>> = {
  secrets: ['metadata.name', 'metadata.namespace', 'type'],
  nodes: ['metadata.name', 'spec.unschedulable'],
  clusterroles: ['metadata.name'],
  clusterrolebindings: ['metadata.name'],
  certificatesigningrequests: ['metadata.name', 'spec.signerName'],
};

function fieldValue(object: KubeObject, field: string): string {
  let value: unknown = object;
  for (const part of field.split('.')) value = (value as Record<string, unknown> | undefined)?.[part];
  if (value !== undefined) return String(value);
  return field === 'spec.unschedulable' ? 'false' : '';
}

/** Parses a field selector with `=`, `==` and `!=` over the fields that the resource supports. */
function parseFieldSelector(type: ResourceType, selector: string): (object: KubeObject) => boolean {
  const tests: ((object: KubeObject) => boolean)[] = [];
  for (const raw of selector.split(',')) {
    const requirement = raw.trim();
    if (requirement === '') continue;
    const match = /^([^!=]+)(==|=|!=)(.*)$/.exec(requirement);
    if (match === null) throw badRequest(`invalid selector: '${selector}'; can't understand '${requirement}'`);
    const field = (match[1] as string).trim();
    if (!(FIELD_LABELS[type.resource] ?? []).includes(field)) throw badRequest(`field label not supported: ${field}`);
    const value = match[3] as string;
    const equal = match[2] !== '!=';
    tests.push((object) => (fieldValue(object, field) === value) === equal);
  }
  return (object) => tests.every((test) => test(object));
}
