/**
 * The controller's side of the agent contract: a mutual-TLS client that presents the controller
 * identity and accepts only the agent identity of the node it means to reach.
 */
import * as tls from 'node:tls';
import type {
  ApplyRequest,
  ApplyResponse__Output,
  DefaultHealthCheck,
  GetStateRequest,
  NodeState__Output,
  PrepareKeysRequest,
  PrepareKeysResponse__Output,
  RollbackRequest,
} from '@kubetrust/proto';
import { ErrorReason, GrpcStatus, agentCodec, agentMethod, reasonOf, responseOf, type AgentMethodName } from '@kubetrust/proto/dist/wire';
import { agentIdentity, peerUris } from '@kubetrust/shared/dist/identity';
import { defaultHealthChecks, itemsForNode, type NodeItem } from '@kubetrust/shared/dist/catalogue';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import { UnaryChannel, type CallFailure } from './grpc-unary';

export interface ControllerCredentials {
  readonly managementCaPem: string;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

export const DEADLINES_MS = { getState: 15_000, prepareKeys: 180_000, apply: 600_000, rollback: 600_000 } as const;

/** Waits before each repeat of a call that the agent refused as busy: about half a minute in all. */
export const BUSY_RETRY_DELAYS_MS: readonly number[] = [1_000, 2_000, 4_000, 8_000, 15_000];

/**
 * Action of the controller for each typed reason of a failed agent call, decided here only.
 * retry: repeat after a delay (BUSY_RETRY_DELAYS_MS). response: the call's response came along in
 * the trailer, so the caller handles it like a success and finds the failing services in it, which
 * makes distribute roll the node back. stop: fail the node with the reason and message.
 */
export const ACTION_BY_REASON: Readonly<Record<ErrorReason, 'retry' | 'response' | 'stop'>> = {
  UNAUTHENTICATED: 'stop',
  PERMISSION_DENIED: 'stop',
  INVALID_REQUEST: 'stop',
  FILE_SYSTEM: 'stop',
  HEALTH_CHECK_FAILED: 'response',
  BUSY: 'retry',
  INTERNAL: 'stop',
};

export interface AgentConnectionOptions {
  /** Delays before the repeats of a call refused as busy; defaults to BUSY_RETRY_DELAYS_MS. */
  readonly busyRetryDelaysMs?: readonly number[];
}

/** A failed agent call, with the node and a hint at what to do. */
/** Returns the default health checks of a node's etcd and kube-apiserver as Apply and Rollback carry them (shared/src/catalogue/health.ts). */
export function defaultHealthCheckMessages(inventory: Inventory, node: NodeSpec, items: readonly NodeItem[] = itemsForNode(inventory, node)): DefaultHealthCheck[] {
  return defaultHealthChecks(node, items).map((check) => ({
    service: check.service,
    url: check.url,
    ca_file: check.caFile,
    cert_file: check.certFile,
    key_file: check.keyFile,
  }));
}

export class AgentCallError extends Error {
  constructor(
    readonly node: string,
    readonly method: string,
    readonly code: GrpcStatus | undefined,
    message: string,
    /** The agent's typed reason, when the agent sent one. */
    readonly reason?: ErrorReason,
  ) {
    super(message);
    this.name = 'AgentCallError';
  }
}

/** Drops a final period, which would read as part of the address that often ends the details. */
function cause(details: string): string {
  return details.trim().replace(/\.$/, '');
}

function describe(node: NodeSpec, method: string, error: CallFailure, attempts: number): AgentCallError {
  const reason = reasonOf(error);
  const details = cause(error.details);
  let message: string;
  if (reason === ErrorReason.Busy) {
    message = `agent at ${node.agent.endpoint} stayed busy with another change after ${attempts} attempts of ${method} (${details}); run the command again when that change has finished`;
  } else if (error.code === GrpcStatus.UNAVAILABLE && /certificate|TLS|SSL|agent certificate does not carry/i.test(error.details)) {
    message = `TLS handshake with the agent at ${node.agent.endpoint} failed (${details}); the agent must present the identity \`controller enroll --node ${node.name}\` issued with this state directory`;
  } else if (error.code === GrpcStatus.UNAVAILABLE || error.code === GrpcStatus.DEADLINE_EXCEEDED) {
    message = `agent unreachable at ${node.agent.endpoint} (${details}); check that the agent runs there with the configuration from \`controller enroll\``;
  } else if (error.code === GrpcStatus.UNAUTHENTICATED || error.code === GrpcStatus.PERMISSION_DENIED) {
    message = `agent at ${node.agent.endpoint} rejected the controller (${details}); re-enrol the node so it trusts this controller's management CA`;
  } else {
    message = `${method} failed${reason !== undefined ? ` (${reason})` : ''}: ${details}`;
  }
  return new AgentCallError(node.name, method, error.code, message, reason);
}

/**
 * One TLS context per set of controller credentials: building it parses the management CA, the
 * controller's key and its certificate, which would otherwise be repeated for every connection.
 */
const secureContexts = new WeakMap<ControllerCredentials, tls.SecureContext>();

function secureContextFor(credentials: ControllerCredentials): tls.SecureContext {
  let context = secureContexts.get(credentials);
  if (context === undefined) {
    // The options grpc.credentials.createSsl passes, including its cipher suite override.
    context = tls.createSecureContext({
      ca: credentials.managementCaPem,
      key: credentials.privateKeyPem,
      cert: credentials.certificatePem,
      ciphers: process.env.GRPC_SSL_CIPHER_SUITES,
    });
    secureContexts.set(credentials, context);
  }
  return context;
}

export class AgentConnection {
  private readonly channel: UnaryChannel;

  constructor(
    private readonly cluster: string,
    private readonly node: NodeSpec,
    credentials: ControllerCredentials,
    private readonly options: AgentConnectionOptions = {},
  ) {
    const expected = agentIdentity(cluster, node.name);
    this.channel = new UnaryChannel({
      host: node.agent.host,
      port: node.agent.port,
      // TLS server names must be DNS names; the agent certificate carries the node name as one.
      serverName: node.name,
      secureContext: secureContextFor(credentials),
      // The agent must present its own node's identity, not merely any certificate the management CA signed.
      checkServerIdentity: (hostname, certificate) => {
        const hostError = tls.checkServerIdentity(hostname, certificate);
        if (hostError !== undefined) return hostError;
        if (!peerUris(certificate).includes(expected)) {
          return new Error(`agent certificate does not carry ${expected}; the endpoint may belong to another node`);
        }
        return undefined;
      },
    });
  }

  /** Makes one call, repeating it while the agent refuses it as busy; see ACTION_BY_REASON. */
  private async call<Req, Res>(name: AgentMethodName, request: Req, deadlineMs: number): Promise<Res> {
    const method = agentMethod(name);
    const delays = this.options.busyRetryDelaysMs ?? BUSY_RETRY_DELAYS_MS;
    const encoded = agentCodec.encode(method.requestType, request);
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.channel.call(method.path, encoded, deadlineMs);
      if (!('error' in outcome)) return this.decode<Res>(name, method.responseType, outcome.message);
      const reason = reasonOf(outcome.error);
      const action = reason === undefined ? 'stop' : ACTION_BY_REASON[reason];
      if (action === 'response') {
        const carried = responseOf(outcome.error);
        if (carried !== undefined) return this.decode<Res>(name, method.responseType, carried);
      }
      const delay = delays[attempt - 1];
      if (action !== 'retry' || delay === undefined) throw describe(this.node, name, outcome.error, attempt);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  private decode<Res>(name: AgentMethodName, responseType: string, bytes: Buffer): Res {
    try {
      return agentCodec.decode(responseType, bytes) as Res;
    } catch (error) {
      throw new AgentCallError(this.node.name, name, GrpcStatus.INTERNAL, `${name} returned a response that does not decode: ${(error as Error).message}`);
    }
  }

  getState(request: GetStateRequest): Promise<NodeState__Output> {
    return this.call('GetState', request, DEADLINES_MS.getState);
  }

  prepareKeys(request: PrepareKeysRequest): Promise<PrepareKeysResponse__Output> {
    return this.call('PrepareKeys', request, DEADLINES_MS.prepareKeys);
  }

  apply(request: ApplyRequest): Promise<ApplyResponse__Output> {
    return this.call('Apply', request, DEADLINES_MS.apply);
  }

  rollback(request: RollbackRequest): Promise<ApplyResponse__Output> {
    return this.call('Rollback', request, DEADLINES_MS.rollback);
  }

  close(): void {
    this.channel.close();
  }

  get clusterName(): string {
    return this.cluster;
  }
}

/** How long a connection that planned a node waits for that node's change before it is closed. */
export const KEEP_FOR_APPLY_MS = 60_000;
/**
 * Connections kept open at one time. Each open connection takes about 100 KB of the controller's
 * memory (1,006 nodes, Node 20). A node whose planning connection was not kept needs a second
 * handshake for its change, and Node.js reads the agent's whole certificate chain into objects on
 * the main thread for each one. At 1,006 nodes with 256 kept, the changes of a worker batch
 * opened 100 connections at once, and their handshakes held the event loop for up to 78 ms.
 */
export const MAX_KEPT_CONNECTIONS = 1024;

/**
 * Connections that distribute keeps between planning a node and changing it, so that each node
 * needs one TLS handshake instead of two. A kept connection is closed when the node's change takes
 * it and finishes, when it has waited KEEP_FOR_APPLY_MS, or at closeAll. A change that starts later
 * opens a new connection, so that a connection idle for long, which a firewall or NAT may have
 * dropped, is never used. At most MAX_KEPT_CONNECTIONS are kept, in the order the nodes were planned,
 * which is about the order the rollout changes them in.
 */
export class AgentConnections {
  private readonly kept = new Map<string, { connection: AgentConnection; timer: NodeJS.Timeout }>();

  constructor(
    private readonly cluster: string,
    private readonly credentials: ControllerCredentials,
    private readonly keepMs: number = KEEP_FOR_APPLY_MS,
    private readonly maxKept: number = MAX_KEPT_CONNECTIONS,
  ) {}

  /** Opens a new connection to the node's agent. */
  open(node: NodeSpec): AgentConnection {
    return new AgentConnection(this.cluster, node, this.credentials);
  }

  /**
   * Keeps `connection` for the node's change and returns true, or returns false when the maximum
   * is already kept, and the caller then closes it. A connection already kept for the node is closed.
   */
  keep(node: NodeSpec, connection: AgentConnection): boolean {
    this.take(node)?.close();
    if (this.kept.size >= this.maxKept) return false;
    const timer = setTimeout(() => {
      if (this.kept.get(node.name)?.connection !== connection) return;
      this.kept.delete(node.name);
      connection.close();
    }, this.keepMs);
    timer.unref();
    this.kept.set(node.name, { connection, timer });
    return true;
  }

  /** Removes and returns the connection kept for the node, which the caller then closes; undefined when none is kept. */
  take(node: NodeSpec): AgentConnection | undefined {
    const entry = this.kept.get(node.name);
    if (entry === undefined) return undefined;
    clearTimeout(entry.timer);
    this.kept.delete(node.name);
    return entry.connection;
  }

  /** Returns the connection kept for the node, or opens a new one. The caller closes it. */
  takeOrOpen(node: NodeSpec): AgentConnection {
    return this.take(node) ?? this.open(node);
  }

  /** Closes every kept connection. */
  closeAll(): void {
    for (const { connection, timer } of this.kept.values()) {
      clearTimeout(timer);
      connection.close();
    }
    this.kept.clear();
  }
}
