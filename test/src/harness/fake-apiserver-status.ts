/**
 * The error bodies of the fake Kubernetes API server. kube-apiserver answers every failed request
 * with a `Status` object (apiVersion v1), and clients such as client-go and @kubernetes/client-node
 * read `reason` and `code` from it, so the fake builds them the same way.
 */

export interface StatusCause {
  readonly reason: string;
  readonly message: string;
  readonly field?: string;
}

export interface StatusDetails {
  readonly name?: string;
  readonly group?: string;
  readonly kind?: string;
  readonly uid?: string;
  readonly causes?: readonly StatusCause[];
}

export interface Status {
  readonly kind: 'Status';
  readonly apiVersion: 'v1';
  readonly metadata: Record<string, never>;
  readonly status: 'Failure' | 'Success';
  readonly message?: string;
  readonly reason?: string;
  readonly details?: StatusDetails;
  readonly code: number;
}

/** An error that the request handler turns into a `Status` response with the same code. */
export class ApiError extends Error {
  constructor(readonly status: Status) {
    super(status.message);
  }
}

/** Names a resource as kube-apiserver does in messages: `secrets` for the core group, `certificatesigningrequests.certificates.k8s.io` otherwise. */
export function qualifiedResource(resource: string, group: string): string {
  return group === '' ? resource : `${resource}.${group}`;
}

function failure(code: number, reason: string, message: string, details?: StatusDetails): ApiError {
  const status: Status = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
  return new ApiError(details === undefined ? status : { ...status, details });
}

export function unauthorized(): ApiError {
  return failure(401, 'Unauthorized', 'Unauthorized');
}

export function forbidden(message: string, details?: StatusDetails): ApiError {
  return failure(403, 'Forbidden', message, details);
}

export function notFound(resource: string, group: string, name: string): ApiError {
  return failure(404, 'NotFound', `${qualifiedResource(resource, group)} "${name}" not found`, { name, group, kind: resource });
}

export function pathNotFound(): ApiError {
  return failure(404, 'NotFound', 'the server could not find the requested resource', {});
}

export function alreadyExists(resource: string, group: string, name: string): ApiError {
  return failure(409, 'AlreadyExists', `${qualifiedResource(resource, group)} "${name}" already exists`, { name, group, kind: resource });
}

export function conflict(resource: string, group: string, name: string): ApiError {
  const message = `Operation cannot be fulfilled on ${qualifiedResource(resource, group)} "${name}": the object has been modified; please apply your changes to the latest version and try again`;
  return failure(409, 'Conflict', message, { name, group, kind: resource });
}

export function badRequest(message: string): ApiError {
  return failure(400, 'BadRequest', message);
}

export function methodNotAllowed(): ApiError {
  return failure(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource', {});
}

export function gone(message: string): ApiError {
  return failure(410, 'Expired', message);
}

/** One field error, written as kube-apiserver's field.Error prints: `spec.usages: Required value`. */
export interface FieldError {
  readonly field: string;
  /** FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, FieldValueDuplicate or FieldValueForbidden. */
  readonly type: string;
  readonly detail: string;
}

/** Builds the 422 Invalid status, whose message names the Kind (not the resource) and lists every field error. */
export function invalid(kind: string, group: string, name: string, errors: readonly FieldError[]): ApiError {
  const qualifiedKind = group === '' ? kind : `${kind}.${group}`;
  const causes = errors.map((error) => ({ reason: error.type, message: error.detail, field: error.field }));
  const summary = errors.map((error) => `${error.field}: ${error.detail}`);
  const listed = summary.length === 1 ? summary[0] : `[${summary.join(', ')}]`;
  return failure(422, 'Invalid', `${qualifiedKind} "${name}" is invalid: ${listed}`, { name, group, kind, causes });
}
