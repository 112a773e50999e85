/**
 * The parts of the agent contract that need no gRPC library: the message codec, each method's
 * path and message types, the gRPC status codes the agent sends, and the typed reasons it sends
 * with them. The controller's client uses only this module, so it never loads grpc-js; the
 * agent's server adds grpc-js through `./index`.
 */
import { MessageCodec } from './codec';
import { AGENT_ENUMS, AGENT_MESSAGES, AGENT_SERVICE } from './generated/agent-schema';

/** The codec of the agent's messages. */
export const agentCodec = new MessageCodec(AGENT_MESSAGES, AGENT_ENUMS);

export type AgentMethodName = 'GetState' | 'PrepareKeys' | 'Apply' | 'Rollback';

export interface AgentMethod {
  /** The HTTP/2 path of the call, such as `/kubetrust.agent.v1.Agent/GetState`. */
  readonly path: string;
  readonly requestType: string;
  readonly responseType: string;
}

/** Returns a method of the agent service. Throws for a name the service does not define. */
export function agentMethod(name: AgentMethodName): AgentMethod {
  const method = AGENT_SERVICE.methods.find((candidate) => candidate.name === name);
  if (method === undefined) throw new Error(`the agent service defines no method ${name}`);
  return { path: `/${AGENT_SERVICE.name}/${method.name}`, requestType: method.requestType, responseType: method.responseType };
}

/** The gRPC status codes (the numbers of grpc-js's `status` enum and of the gRPC specification). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatus = (typeof GrpcStatus)[keyof typeof GrpcStatus];

/**
 * The typed reason for a failed agent call, sent as the `kubetrust-reason` trailer beside the gRPC status so that
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

const STATUS_BY_REASON: Record<ErrorReason, GrpcStatus> = {
  UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
  PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
  INVALID_REQUEST: GrpcStatus.INVALID_ARGUMENT,
  FILE_SYSTEM: GrpcStatus.ABORTED,
  HEALTH_CHECK_FAILED: GrpcStatus.FAILED_PRECONDITION,
  BUSY: GrpcStatus.UNAVAILABLE,
  INTERNAL: GrpcStatus.INTERNAL,
};

/** Returns the gRPC status an agent sends for a reason. */
export function statusOfReason(reason: ErrorReason): GrpcStatus {
  return STATUS_BY_REASON[reason];
}

/** The trailers of a failed call, as grpc-js's Metadata or the controller's own client give them. */
export interface FailureMetadata {
  get(key: string): ReadonlyArray<string | Buffer>;
}

/** Returns the serialised response that a failed call carried in its trailer, if any. */
export function responseOf(error: { readonly metadata?: FailureMetadata }): Buffer | undefined {
  const value = error.metadata?.get(RESPONSE_METADATA_KEY)[0];
  return Buffer.isBuffer(value) ? value : undefined;
}

/** Reads the typed reason from a failed call, or undefined when the failure did not come from an agent handler. */
export function reasonOf(error: { readonly metadata?: FailureMetadata }): ErrorReason | undefined {
  const value = error.metadata?.get(REASON_METADATA_KEY)[0];
  const reasons = Object.values(ErrorReason) as string[];
  return typeof value === 'string' && reasons.includes(value) ? (value as ErrorReason) : undefined;
}
