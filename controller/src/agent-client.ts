/**
 * The controller's side of the agent contract: a mutual-TLS client that presents the controller
 * identity and accepts only the agent identity of the node it means to reach.
 */
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import {
  loadAgentProto,
  reasonOf,
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

/** A failed agent call, with the node and a hint at what to do. */
export class AgentCallError extends Error {
  constructor(
    readonly node: string,
    readonly method: string,
    readonly code: grpc.status | undefined,
    message: string,
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

function describe(node: NodeSpec, method: string, error: grpc.ServiceError): AgentCallError {
  const reason = reasonOf(error);
  const details = cause(error.details);
  let message: string;
  if (error.code === grpc.status.UNAVAILABLE && /certificate|TLS|SSL|agent certificate does not carry/i.test(error.details)) {
    message = `TLS handshake with the agent at ${node.agent.endpoint} failed (${details}); the agent must present the identity \`controller enroll --node ${node.name}\` issued with this state directory`;
  } else if (error.code === grpc.status.UNAVAILABLE || error.code === grpc.status.DEADLINE_EXCEEDED) {
    message = `agent unreachable at ${node.agent.endpoint} (${details}); check that the agent runs there with the configuration from \`controller enroll\``;
  } else if (error.code === grpc.status.UNAUTHENTICATED || error.code === grpc.status.PERMISSION_DENIED) {
    message = `agent at ${node.agent.endpoint} rejected the controller (${details}); re-enrol the node so it trusts this controller's management CA`;
  } else {
    message = `${method} failed${reason !== undefined ? ` (${reason})` : ''}: ${details}`;
  }
  return new AgentCallError(node.name, method, error.code, message);
}

export class AgentConnection {
  private readonly client: GeneratedAgentClient;

  constructor(
    private readonly cluster: string,
    private readonly node: NodeSpec,
    credentials: ControllerCredentials,
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

  private call<Req, Res>(method: 'GetState' | 'PrepareKeys' | 'Apply' | 'Rollback', request: Req, deadlineMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      const invoke = this.client[method].bind(this.client) as unknown as (
        request: Req,
        options: grpc.CallOptions,
        callback: (error: grpc.ServiceError | null, response?: Res) => void,
      ) => void;
      invoke(request, { deadline: Date.now() + deadlineMs }, (error, response) => {
        if (error !== null) reject(describe(this.node, method, error));
        else if (response === undefined) reject(new AgentCallError(this.node.name, method, undefined, `${method} returned no response`));
        else resolve(response);
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
