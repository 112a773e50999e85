/** A request the agent rejects because of what it asks for, not because the node failed. */
export class InvalidRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidRequestError';
  }
}

/** A change call that arrived while another change ran on the node. */
export class BusyError extends Error {
  constructor(method: string) {
    super(`${method} refused: another change is running on this node; repeat the call when it has finished`);
    this.name = 'BusyError';
  }
}

/** A change that was installed but left a service failing its health check, with the full response. */
export class HealthCheckFailedError<Res> extends Error {
  constructor(
    message: string,
    readonly response: Res,
  ) {
    super(message);
    this.name = 'HealthCheckFailedError';
  }
}

/** Returns whether an error came from a file system call: Node sets `syscall` and an errno `code` on those. */
export function isFileSystemError(error: unknown): boolean {
  const candidate = error as { syscall?: unknown; code?: unknown } | null;
  return typeof candidate?.syscall === 'string' && typeof candidate.code === 'string';
}
