/**
 * Issuing, listing and pruning the per-node bootstrap tokens of a cluster through a KubeClient.
 * kubetrust finds its own token Secrets by the labels `kubetrust.io/managed-by=kubetrust` and
 * `kubetrust.io/cluster=<cluster>`, and never lists or deletes other bootstrap tokens.
 */
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import { silentLogger, type Logger } from '@kubetrust/shared/dist/log';
import { renderBootstrapKubeconfig, type BootstrapKubeconfig } from './bootstrap-kubeconfig';
import { KubeApiError, type KubeClient } from './client';
import {
  BootstrapToken,
  BootstrapTokenError,
  DEFAULT_TOKEN_TTL_MS,
  defaultBootstrapGroup,
  labelSelector,
  readTokenSecret,
  tokenExpiration,
  tokenLabels,
  tokenSecret,
  tokenState,
  validateBootstrapGroup,
  type RandomInt,
  type TokenState,
} from './token';
import { BOOTSTRAP_NAMESPACE } from './types';

export interface BootstrapSettings {
  /** Extra group of every token of the cluster, the group that the bootstrap bindings name. */
  readonly group: string;
  readonly ttlMs: number;
}

/** Returns the cluster's bootstrap settings with defaults filled in. Throws BootstrapTokenError for an invalid group or lifetime. */
export function bootstrapSettings(inventory: Inventory, overrides: Partial<BootstrapSettings> = {}): BootstrapSettings {
  const group = validateBootstrapGroup(overrides.group ?? defaultBootstrapGroup(inventory.name));
  const ttlMs = overrides.ttlMs ?? DEFAULT_TOKEN_TTL_MS;
  tokenExpiration(new Date(0), ttlMs);
  return { group, ttlMs };
}

/** Returns the nodes whose kubelet joins by TLS bootstrapping: workers with `kubelet.credentials: bootstrap`. */
export function bootstrapNodes(inventory: Inventory): NodeSpec[] {
  return inventory.nodes.filter((node) => node.roles.includes('worker') && node.kubelet.credentials === 'bootstrap');
}

export interface IssueTokenOptions {
  readonly inventory: Inventory;
  readonly node: NodeSpec;
  /** PEM of the cluster CA, embedded in the bootstrap kubeconfig. */
  readonly clusterCaPem: string;
  readonly settings: BootstrapSettings;
  readonly now: Date;
  readonly randomInt?: RandomInt;
  readonly logger?: Logger;
}

export interface IssuedNodeToken {
  readonly node: string;
  readonly token: BootstrapToken;
  readonly secretName: string;
  readonly expiration: Date;
  readonly kubeconfig: BootstrapKubeconfig;
}

/** Attempts before giving up on token ids that already exist; a repeat among 36^6 ids is rare. */
const MAX_ID_ATTEMPTS = 3;

/**
 * Mints a new token for the node, creates its Secret and renders the node's bootstrap kubeconfig.
 * It never reuses an existing token, so the kubeconfig always carries a token with the full
 * lifetime. A token id that already exists is drawn again.
 */
export async function issueNodeToken(client: KubeClient, options: IssueTokenOptions): Promise<IssuedNodeToken> {
  const logger = options.logger ?? silentLogger();
  if (options.node.kubelet.credentials !== 'bootstrap') {
    throw new BootstrapTokenError(`node ${options.node.name} has kubelet credentials "${options.node.kubelet.credentials}"; set kubelet.credentials to bootstrap to issue it a bootstrap token`);
  }
  for (let attempt = 1; ; attempt++) {
    const token = BootstrapToken.generate(options.randomInt);
    const secret = tokenSecret({ token, cluster: options.inventory.name, node: options.node.name, group: options.settings.group, now: options.now, ttlMs: options.settings.ttlMs });
    const expiration = tokenExpiration(options.now, options.settings.ttlMs);
    try {
      await client.createSecret(secret);
    } catch (error) {
      if (error instanceof KubeApiError && error.status === 409 && attempt < MAX_ID_ATTEMPTS) {
        logger.warn('bootstrap token id exists; drawing another', { node: options.node.name, tokenId: token.id });
        continue;
      }
      throw error;
    }
    logger.info('created bootstrap token', { node: options.node.name, tokenId: token.id, expiration: expiration.toISOString() });
    const kubeconfig = renderBootstrapKubeconfig({ inventory: options.inventory, node: options.node, clusterCaPem: options.clusterCaPem, token, expiration, now: options.now });
    return { node: options.node.name, token, secretName: token.secretName, expiration, kubeconfig };
  }
}

export interface TokenListing {
  readonly secretName: string;
  readonly tokenId: string;
  readonly node: string | undefined;
  readonly groups: readonly string[];
  readonly expiration: string | undefined;
  readonly state: TokenState;
  /** Whether the node is in the inventory with `kubelet.credentials: bootstrap`. */
  readonly nodeBootstraps: boolean;
}

/** Tokens with less than this left are listed as expiring. */
export const EXPIRING_WITHIN_MS = 15 * 60 * 1000;

/** Lists kubetrust's bootstrap tokens of the cluster, sorted by node and token id. */
export async function listTokens(client: KubeClient, inventory: Inventory, now: Date): Promise<TokenListing[]> {
  const bootstrapping = new Set(bootstrapNodes(inventory).map((node) => node.name));
  const secrets = await client.listSecrets(BOOTSTRAP_NAMESPACE, labelSelector(tokenLabels(inventory.name)));
  const listings: TokenListing[] = [];
  for (const secret of secrets) {
    const record = readTokenSecret(secret);
    if (record === undefined) continue;
    listings.push({
      secretName: record.secretName,
      tokenId: record.tokenId,
      node: record.node,
      groups: record.groups,
      expiration: record.expiration?.toISOString(),
      state: tokenState(record, now, EXPIRING_WITHIN_MS),
      nodeBootstraps: record.node !== undefined && bootstrapping.has(record.node),
    });
  }
  return listings.sort((a, b) => (a.node ?? '').localeCompare(b.node ?? '') || a.tokenId.localeCompare(b.tokenId));
}

export type PruneReason = 'expired' | 'node registered' | 'node not bootstrapping';

export interface PruneResult {
  readonly secretName: string;
  readonly tokenId: string;
  readonly node: string | undefined;
  /** Undefined for a token that is kept. */
  readonly reason: PruneReason | undefined;
  /** True when the Secret was deleted in this run (never with dryRun). */
  readonly deleted: boolean;
}

export interface PruneOptions {
  readonly dryRun?: boolean;
  readonly logger?: Logger;
}

/**
 * Deletes kubetrust's tokens that are no longer needed: expired ones, those of nodes that have
 * registered (their Node object exists), and those of nodes that left the inventory or no longer
 * bootstrap. Tokens of nodes still waiting to join are kept.
 */
export async function pruneTokens(client: KubeClient, inventory: Inventory, now: Date, options: PruneOptions = {}): Promise<PruneResult[]> {
  const logger = options.logger ?? silentLogger();
  const results: PruneResult[] = [];
  for (const listing of await listTokens(client, inventory, now)) {
    const reason = await pruneReason(client, listing);
    let deleted = false;
    if (reason !== undefined && options.dryRun !== true) {
      deleted = await client.deleteSecret(BOOTSTRAP_NAMESPACE, listing.secretName);
      logger.info('deleted bootstrap token', { node: listing.node, tokenId: listing.tokenId, reason });
    }
    results.push({ secretName: listing.secretName, tokenId: listing.tokenId, node: listing.node, reason, deleted });
  }
  return results;
}

async function pruneReason(client: KubeClient, listing: TokenListing): Promise<PruneReason | undefined> {
  if (listing.state === 'expired') return 'expired';
  if (!listing.nodeBootstraps || listing.node === undefined) return 'node not bootstrapping';
  return (await client.getNode(listing.node)) !== undefined ? 'node registered' : undefined;
}
