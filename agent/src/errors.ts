/** A request the agent rejects because of what it asks for, not because the node failed. */
export class InvalidRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidRequestError';
  }
}
