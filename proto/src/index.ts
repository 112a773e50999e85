/**
 * The agent gRPC contract: the service definition and the generated message types. The messages
 * are encoded by src/codec.ts from a schema generated at build time (scripts/generate-schema.js),
 * so neither program parses agent.proto or loads protobufjs at run time. The generated types are
 * those of proto-loader-gen-types with the options in this package's `generate` script, and the
 * codec decodes to exactly that shape.
 */
import * as grpc from '@grpc/grpc-js';
import { MessageCodec } from './codec';
import { AGENT_ENUMS, AGENT_MESSAGES, AGENT_SERVICE } from './generated/agent-schema';
import type { ProtoGrpcType } from './generated/agent';

export type { AgentClient, AgentHandlers } from './generated/kubetrust/agent/v1/Agent';
export type { ApplyRequest, ApplyRequest__Output } from './generated/kubetrust/agent/v1/ApplyRequest';
export type { ApplyResponse, ApplyResponse__Output } from './generated/kubetrust/agent/v1/ApplyResponse';
export type { FileChange, FileChange__Output } from './generated/kubetrust/agent/v1/FileChange';
export type { FileKind } from './generated/kubetrust/agent/v1/FileKind';
export type { FileQuery, FileQuery__Output } from './generated/kubetrust/agent/v1/FileQuery';
export type { FileState, FileState__Output } from './generated/kubetrust/agent/v1/FileState';
export type { GeneratedKey, GeneratedKey__Output } from './generated/kubetrust/agent/v1/GeneratedKey';
export type { GetStateRequest, GetStateRequest__Output } from './generated/kubetrust/agent/v1/GetStateRequest';
export type { KeyRequest, KeyRequest__Output } from './generated/kubetrust/agent/v1/KeyRequest';
export type { KubeconfigContent, KubeconfigContent__Output } from './generated/kubetrust/agent/v1/KubeconfigContent';
export type { KubeconfigState, KubeconfigState__Output } from './generated/kubetrust/agent/v1/KubeconfigState';
export type { KubeletBootstrapState, KubeletBootstrapState__Output } from './generated/kubetrust/agent/v1/KubeletBootstrapState';
export type { KubeletBootstrapWatch, KubeletBootstrapWatch__Output } from './generated/kubetrust/agent/v1/KubeletBootstrapWatch';
export type { NodeState, NodeState__Output } from './generated/kubetrust/agent/v1/NodeState';
export type { PrepareKeysRequest, PrepareKeysRequest__Output } from './generated/kubetrust/agent/v1/PrepareKeysRequest';
export type { RollbackRequest, RollbackRequest__Output } from './generated/kubetrust/agent/v1/RollbackRequest';
export type { PrepareKeysResponse, PrepareKeysResponse__Output } from './generated/kubetrust/agent/v1/PrepareKeysResponse';
export type { ServiceResult, ServiceResult__Output } from './generated/kubetrust/agent/v1/ServiceResult';

export { CodecError, MessageCodec } from './codec';

/** The service constructor and definition, as grpc-js's loadPackageDefinition would give them. */
export interface AgentProto {
  readonly kubetrust: { readonly agent: { readonly v1: { readonly Agent: ProtoGrpcType['kubetrust']['agent']['v1']['Agent'] } } };
}

let loaded: AgentProto | undefined;

/** The codec of the agent's messages. */
export const agentCodec = new MessageCodec(AGENT_MESSAGES, AGENT_ENUMS);

/** Builds the agent service definition once per process. */
export function loadAgentProto(): AgentProto {
  if (loaded === undefined) {
    const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    for (const method of AGENT_SERVICE.methods) {
      definition[method.name] = {
        path: `/${AGENT_SERVICE.name}/${method.name}`,
        requestStream: false,
        responseStream: false,
        requestSerialize: (message: unknown) => agentCodec.encode(method.requestType, message),
        requestDeserialize: (bytes: Buffer) => agentCodec.decode(method.requestType, bytes),
        responseSerialize: (message: unknown) => agentCodec.encode(method.responseType, message),
        responseDeserialize: (bytes: Buffer) => agentCodec.decode(method.responseType, bytes),
        // The lower-camel-case alias that proto-loader gives every method, such as `getState`.
        originalName: method.name.charAt(0).toLowerCase() + method.name.slice(1),
      };
    }
    const Agent = grpc.makeClientConstructor(definition, AGENT_SERVICE.name);
    loaded = { kubetrust: { agent: { v1: { Agent: Agent as unknown as AgentProto['kubetrust']['agent']['v1']['Agent'] } } } };
  }
  return loaded;
}

/**
 * Why an agent call failed, sent as the `kubetrust-reason` trailer beside the gRPC status so that
 * callers decide from the reason, never from the message text. STATUS_BY_REASON below is the one
 * place that maps a reason to its gRPC status.
 */
export const ErrorReason = {
  /** The client presented no certificate or one the agent's management CA did not issue. */
  Unauthenticated: 'UNAUTHENTICATED',
  /** The client is authenticated but is not the controller identity this agent accepts. */
  PermissionDenied: 'PERMISSION_DENIED',
  /** The request is malformed: a path outside the install root, an unknown staged key or key algorithm, and so on. */
  InvalidRequest: 'INVALID_REQUEST',
  /** A file system call on the node failed (no space, read-only, permission, I/O error). For Apply
   * nothing of the change set was installed. */
  FileSystem: 'FILE_SYSTEM',
  /** The files were installed, but a restarted service failed its health check. The call's
   * response is still sent, in the `kubetrust-response-bin` trailer, so the caller can roll back. */
  HealthCheckFailed: 'HEALTH_CHECK_FAILED',
  /** Another change runs on the node. Nothing was done, and the call can be repeated later. */
  Busy: 'BUSY',
  /** Anything else that went wrong on the node. */
  Internal: 'INTERNAL',
} as const;
export type ErrorReason = (typeof ErrorReason)[keyof typeof ErrorReason];

export const REASON_METADATA_KEY = 'kubetrust-reason';
/** Binary trailer with the serialised response of a call that failed with HEALTH_CHECK_FAILED. */
export const RESPONSE_METADATA_KEY = 'kubetrust-response-bin';

const STATUS_BY_REASON: Record<ErrorReason, grpc.status> = {
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  INVALID_REQUEST: grpc.status.INVALID_ARGUMENT,
  FILE_SYSTEM: grpc.status.ABORTED,
  HEALTH_CHECK_FAILED: grpc.status.FAILED_PRECONDITION,
  BUSY: grpc.status.UNAVAILABLE,
  INTERNAL: grpc.status.INTERNAL,
};

/** Returns the gRPC status an agent sends for a reason. */
export function statusOfReason(reason: ErrorReason): grpc.status {
  return STATUS_BY_REASON[reason];
}

/** Builds the gRPC error an agent handler returns for a typed reason, with the serialised response when there is one. */
export function agentError(reason: ErrorReason, message: string, response?: Buffer): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  metadata.set(REASON_METADATA_KEY, reason);
  if (response !== undefined) metadata.set(RESPONSE_METADATA_KEY, response);
  return { code: STATUS_BY_REASON[reason], details: message, metadata };
}

/** Returns the serialised response that a failed call carried in its trailer, if any. */
export function responseOf(error: grpc.ServiceError): Buffer | undefined {
  const value = error.metadata?.get(RESPONSE_METADATA_KEY)[0];
  return Buffer.isBuffer(value) ? value : undefined;
}

/** Reads the typed reason from a failed call, or undefined when the failure did not come from an agent handler. */
export function reasonOf(error: grpc.ServiceError): ErrorReason | undefined {
  const value = error.metadata?.get(REASON_METADATA_KEY)[0];
  const reasons = Object.values(ErrorReason) as string[];
  return typeof value === 'string' && reasons.includes(value) ? (value as ErrorReason) : undefined;
}
