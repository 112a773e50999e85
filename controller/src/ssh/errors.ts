/**
 * One-line SSH errors for `controller bootstrap`: which node, which step failed, what failed and
 * what to do about it.
 */

/** The step of an SSH session that failed. */
export type SshStep = 'connect' | 'host-key' | 'auth' | 'sudo' | 'upload' | 'command';

export class SshError extends Error {
  constructor(
    readonly node: string,
    readonly step: SshStep,
    /** Description of the failure without the node name, such as `connection to 192.0.2.11:22 refused`. */
    readonly problem: string,
    /** The next step for the operator. */
    readonly fix: string,
  ) {
    super(`${node}: ${oneLine(problem)}; ${oneLine(fix)}`);
    this.name = 'SshError';
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** Describes the endpoint for messages: `user@host:port`, with the jump host when there is one. */
export function describeTarget(user: string, host: string, port: number, via: string | undefined): string {
  const target = `${user}@${host.includes(':') ? `[${host}]` : host}:${port}`;
  return via === undefined ? target : `${target} via jump host ${via}`;
}

/**
 * Classifies a socket or ssh2 error from the connect and handshake phases. Errors the host key
 * check raised are thrown where they happen and never reach this function.
 */
export function classifyConnectError(
  node: string,
  error: Error & { readonly code?: unknown; readonly level?: unknown },
  target: string,
  credentials: string,
  user: string,
  timeoutMs: number,
): SshError {
  const code = typeof error.code === 'string' ? error.code : undefined;
  if (error.level === 'client-authentication') {
    return new SshError(
      node,
      'auth',
      `authentication as user "${user}" at ${target} was rejected (tried ${credentials})`,
      `check that user "${user}" exists on the node and that the public key is in its ~/.ssh/authorized_keys, or set ssh.user and ssh.privateKeyFile in the inventory`,
    );
  }
  if (error.level === 'client-timeout' || code === 'ETIMEDOUT') {
    return new SshError(
      node,
      'connect',
      `no SSH handshake with ${target} within ${timeoutMs / 1000} s`,
      'check that the address and port are right, that sshd runs there and that no firewall drops the packets',
    );
  }
  switch (code) {
    case 'ECONNREFUSED':
      return new SshError(node, 'connect', `connection to ${target} refused`, 'check that sshd runs on the node and listens on that port, or set ssh.port in the inventory');
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return new SshError(node, 'connect', `${target} is unreachable (${code})`, 'check the node\'s address in the inventory (ssh.host or the first address) and the route from the admin host');
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new SshError(node, 'connect', `cannot resolve the host name of ${target} (${code})`, 'check the spelling of ssh.host, or write an IP address');
    case 'ECONNRESET':
      return new SshError(node, 'connect', `${target} closed the connection during the SSH handshake`, 'check the sshd log on the node, for example for MaxStartups or a TCP wrapper rule');
    default:
      return new SshError(node, 'connect', `SSH connection to ${target} failed: ${error.message}`, 'check that sshd runs on the node and that the address and port are right');
  }
}
