/**
 * The agent gRPC contract: the service definition and the generated message types. The messages
 * are encoded by src/codec.ts from a schema generated at build time (scripts/generate-schema.js),
 * so neither program parses agent.proto or loads protobufjs at run time. The generated types are
 * those of proto-loader-gen-types with the options in this package's `generate` script, and the
 * codec decodes to exactly that shape.
 */
import * as grpc from '@grpc/grpc-js';
import { AGENT_SERVICE } from './generated/agent-schema';
import { ErrorReason, REASON_METADATA_KEY, RESPONSE_METADATA_KEY, agentCodec, statusOfReason } from './wire';
import type { ProtoGrpcType } from './generated/agent';

export type { AgentClient, AgentHandlers } from './generated/kubetrust/agent/v1/Agent';
export type { ApplyRequest, ApplyRequest__Output } from './generated/kubetrust/agent/v1/ApplyRequest';
export type { ApplyResponse, ApplyResponse__Output } from './generated/kubetrust/agent/v1/ApplyResponse';
export type { DefaultHealthCheck, DefaultHealthCheck__Output } from './generated/kubetrust/agent/v1/DefaultHealthCheck';
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
export {
  ErrorReason,
  GrpcStatus,
  REASON_METADATA_KEY,
  RESPONSE_METADATA_KEY,
  agentCodec,
  agentMethod,
  reasonOf,
  responseOf,
  statusOfReason,
  type AgentMethod,
  type AgentMethodName,
  type FailureMetadata,
} from './wire';

/** The service constructor and definition, as grpc-js's loadPackageDefinition would give them. */
export interface AgentProto {
  readonly kubetrust: { readonly agent: { readonly v1: { readonly Agent: ProtoGrpcType['kubetrust']['agent']['v1']['Agent'] } } };
}

let loaded: AgentProto | undefined;

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

/** Builds the gRPC error an agent handler returns for a typed reason, with the serialised response when there is one. */
export function agentError(reason: ErrorReason, message: string, response?: Buffer): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  metadata.set(REASON_METADATA_KEY, reason);
  if (response !== undefined) metadata.set(RESPONSE_METADATA_KEY, response);
  return { code: statusOfReason(reason) as grpc.status, details: message, metadata };
}
