/**
 * The controller's side of the agent contract: a mutual-TLS client that presents the controller
 * identity and accepts only the agent identity of the node it means to reach.
 */
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import {
  ErrorReason,
  loadAgentProto,
  reasonOf,
  responseOf,
  type AgentClient as GeneratedAgentClient,
  type ApplyRequest,
  type ApplyResponse__Output,
  type GetStateRequest,
  type NodeState__Output,
  type PrepareKeysRequest,
  type PrepareKeysResponse__Output,
  type RollbackRequest,
} from '@kubetrust/proto';
import { agentIdentity, peerUris } from '@kubetrust/shared/dist/identity';
import type { NodeSpec } from '@kubetrust/shared/dist/inventory';

export interface ControllerCredentials {
  readonly managementCaPem: string;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

export const DEADLINES_MS = { getState: 15_000, prepareKeys: 180_000, apply: 600_000, rollback: 600_000 } as const;

/** Waits before each repeat of a call that the agent refused as busy: about half a minute in all. */
export const BUSY_RETRY_DELAYS_MS: readonly number[] = [1_000, 2_000, 4_000, 8_000, 15_000];

/**
 * What the controller does when an agent call fails with a typed reason; the one place that decides.
 * retry: repeat after a delay (BUSY_RETRY_DELAYS_MS). response: the call's response came along
 * in the trailer, so the caller handles it like a success and sees the failing services in it,
 * which makes distribute roll the node back. stop: fail the node with the reason and message.
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
export class AgentCallError extends Error {
  constructor(
    readonly node: string,
    readonly method: string,
    readonly code: grpc.status | undefined,
    message: string,
    /** The agent's typed reason, when the agent sent one. */
    readonly reason?: ErrorReason,
  ) {
    super(message);
    this.name = 'AgentCallError';
  }
}

/** Strips grpc-js's connection boilerplate so that the cause itself is what the operator reads. */
function cause(details: string): string {
  return details
    .replace(/^No connection established\. Last error: (Error: )?/, '')
    .replace(/\s*Resolution note:\s*$/, '')
    .trim();
}

function describe(node: NodeSpec, method: string, error: grpc.ServiceError, attempts: number): AgentCallError {
  const reason = reasonOf(error);
  const details = cause(error.details);
  let message: string;
  if (reason === ErrorReason.Busy) {
    message = `agent at ${node.agent.endpoint} stayed busy with another change after ${attempts} attempts of ${method} (${details}); run the command again when that change has finished`;
  } else if (error.code === grpc.status.UNAVAILABLE && /certificate|TLS|SSL|agent certificate does not carry/i.test(error.details)) {
    message = `TLS handshake with the agent at ${node.agent.endpoint} failed (${details}); the agent must present the identity \`controller enroll --node ${node.name}\` issued with this state directory`;
  } else if (error.code === grpc.status.UNAVAILABLE || error.code === grpc.status.DEADLINE_EXCEEDED) {
    message = `agent unreachable at ${node.agent.endpoint} (${details}); check that the agent runs there with the configuration from \`controller enroll\``;
  } else if (error.code === grpc.status.UNAUTHENTICATED || error.code === grpc.status.PERMISSION_DENIED) {
    message = `agent at ${node.agent.endpoint} rejected the controller (${details}); re-enrol the node so it trusts this controller's management CA`;
  } else {
    message = `${method} failed${reason !== undefined ? ` (${reason})` : ''}: ${details}`;
  }
  return new AgentCallError(node.name, method, error.code, message, reason);
}

export class AgentConnection {
  private readonly client: GeneratedAgentClient;

  constructor(
    private readonly cluster: string,
    private readonly node: NodeSpec,
    credentials: ControllerCredentials,
    private readonly options: AgentConnectionOptions = {},
  ) {
    const expected = agentIdentity(cluster, node.name);
    const channelCredentials = grpc.credentials.createSsl(
      Buffer.from(credentials.managementCaPem),
      Buffer.from(credentials.privateKeyPem),
      Buffer.from(credentials.certificatePem),
      {
        // The agent must present its own node's identity, not merely any certificate the management CA signed.
        checkServerIdentity: (hostname, certificate) => {
          const hostError = tls.checkServerIdentity(hostname, certificate);
          if (hostError !== undefined) return hostError;
          if (!peerUris(certificate).includes(expected)) {
            return new Error(`agent certificate does not carry ${expected}; the endpoint may belong to another node`);
          }
          return undefined;
        },
      },
    );
    const target = node.agent.host.includes(':') ? `ipv6:[${node.agent.host}]:${node.agent.port}` : `${node.agent.host}:${node.agent.port}`;
    const proto = loadAgentProto();
    this.client = new proto.kubetrust.agent.v1.Agent(target, channelCredentials, {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // TLS server names must be DNS names; the agent certificate carries the node name as one.
      'grpc.ssl_target_name_override': node.name,
      'grpc.default_authority': node.name,
    });
  }

  /** Makes one call, repeating it while the agent refuses it as busy; see ACTION_BY_REASON. */
  private async call<Req, Res>(method: 'GetState' | 'PrepareKeys' | 'Apply' | 'Rollback', request: Req, deadlineMs: number): Promise<Res> {
    const delays = this.options.busyRetryDelaysMs ?? BUSY_RETRY_DELAYS_MS;
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.callOnce<Req, Res>(method, request, deadlineMs);
      if (!('error' in outcome)) return outcome.response;
      const reason = reasonOf(outcome.error);
      const action = reason === undefined ? 'stop' : ACTION_BY_REASON[reason];
      if (action === 'response') {
        const encoded = responseOf(outcome.error);
        if (encoded !== undefined) return loadAgentProto().kubetrust.agent.v1.Agent.service[method].responseDeserialize(encoded) as Res;
      }
      const delay = delays[attempt - 1];
      if (action !== 'retry' || delay === undefined) throw describe(this.node, method, outcome.error, attempt);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  private callOnce<Req, Res>(method: 'GetState' | 'PrepareKeys' | 'Apply' | 'Rollback', request: Req, deadlineMs: number): Promise<{ response: Res } | { error: grpc.ServiceError }> {
    return new Promise((resolve, reject) => {
      const invoke = this.client[method].bind(this.client) as unknown as (
        request: Req,
        options: grpc.CallOptions,
        callback: (error: grpc.ServiceError | null, response?: Res) => void,
      ) => void;
      invoke(request, { deadline: Date.now() + deadlineMs }, (error, response) => {
        if (error !== null) resolve({ error });
        else if (response === undefined) reject(new AgentCallError(this.node.name, method, undefined, `${method} returned no response`));
        else resolve({ response });
      });
    });
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
    this.client.close();
  }

  get clusterName(): string {
    return this.cluster;
  }
}
