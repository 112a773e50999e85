/**
 * The kubelet's bootstrap kubeconfig (`--bootstrap-kubeconfig`): the cluster CA, the apiserver
 * endpoint that the catalogue writes into kubelet.conf, and a bootstrap token as the user's
 * credential. The kubelet uses it only until it holds a client certificate of its own.
 */
import * as util from 'node:util';
import { CATALOGUE, type KubeconfigEntry } from '@kubetrust/shared/dist/catalogue';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import { renderTokenKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { BootstrapTokenError, REDACTED, formatRfc3339, type BootstrapToken } from './token';

/** User name inside the bootstrap kubeconfig; the apiserver ignores it and authenticates the token. */
export const BOOTSTRAP_KUBECONFIG_USER = 'kubelet-bootstrap';

function kubeletConfEntry(): KubeconfigEntry {
  const entry = CATALOGUE.find((candidate): candidate is KubeconfigEntry => candidate.kind === 'kubeconfig' && candidate.name === 'kubelet.conf');
  if (entry === undefined) throw new Error('catalogue has no kubeconfig named "kubelet.conf"');
  return entry;
}

/** Returns the apiserver URL of the node's kubelet, the same one the catalogue puts into kubelet.conf. */
export function bootstrapKubeconfigServer(inventory: Inventory, node: NodeSpec): string {
  return kubeletConfEntry().server({ inventory, node });
}

export interface BootstrapKubeconfigOptions {
  readonly inventory: Inventory;
  readonly node: NodeSpec;
  /** PEM of the cluster CA, which signs the apiserver's serving certificate. */
  readonly clusterCaPem: string;
  readonly token: BootstrapToken;
  /** Expiration written into the token's Secret. */
  readonly expiration: Date;
  readonly now: Date;
}

/** A rendered bootstrap kubeconfig. Printing or serialising it shows the token id and never the text. */
export class BootstrapKubeconfig {
  readonly #text: string;

  constructor(
    readonly node: string,
    readonly server: string,
    readonly tokenId: string,
    readonly expiration: Date,
    text: string,
  ) {
    this.#text = text;
  }

  /** Returns the file's content, which contains the token. Call it only where the file is written. */
  reveal(): string {
    return this.#text;
  }

  toJSON(): Record<string, string> {
    return { node: this.node, server: this.server, tokenId: this.tokenId, expiration: formatRfc3339(this.expiration), token: REDACTED };
  }

  toString(): string {
    return `bootstrap kubeconfig for node ${this.node} (server ${this.server}, token ${this.tokenId}.${REDACTED})`;
  }

  [util.inspect.custom](): string {
    return `BootstrapKubeconfig(${JSON.stringify(this.toJSON())})`;
  }
}

/**
 * Renders the node's bootstrap kubeconfig with the shared kubeconfig renderer. Throws
 * BootstrapTokenError when the token has already expired at `now`, because a kubelet with such a
 * file only ever sends unauthenticated requests.
 */
export function renderBootstrapKubeconfig(options: BootstrapKubeconfigOptions): BootstrapKubeconfig {
  if (options.expiration.getTime() <= options.now.getTime()) {
    throw new BootstrapTokenError(
      `bootstrap token ${options.token.id} for node ${options.node.name} expired at ${formatRfc3339(options.expiration)}; issue a new token for the node`,
    );
  }
  const server = bootstrapKubeconfigServer(options.inventory, options.node);
  const text = renderTokenKubeconfig({
    clusterName: options.inventory.name,
    server,
    certificateAuthorityPem: options.clusterCaPem,
    user: BOOTSTRAP_KUBECONFIG_USER,
    token: options.token.reveal(),
  });
  return new BootstrapKubeconfig(options.node.name, server, options.token.id, options.expiration, text);
}
