/**
 * The push of bootstrap credentials during `distribute`, for workers with `kubelet.credentials:
 * bootstrap`.
 *
 * While such a node's kubelet has not registered, distribute issues the node a fresh bootstrap
 * token and pushes a bootstrap kubeconfig with it through the agent. The Apply carries
 * `kubelet_bootstrap`, so the agent watches for the kubelet's client certificate and then
 * deletes the kubeconfig. Once the agent reports the kubelet registered and the Node object exists
 * in the API, the controller deletes the node's token Secrets and records both facts in the
 * ledger.
 *
 * A node counts as registered when the agent's watch says so, or when the node's
 * `kubelet-client-current.pem` holds a certificate for `system:node:<name>` in `system:nodes`
 * that the cluster CA signed and that is valid now.
 *
 * Reads: the node's files through GetState, the state directory's ledger and the API kubeconfig.
 * Writes: token Secrets and ClusterRoleBindings in the API, the ledger. Never logs, prints or
 * records a token secret.
 */
import * as crypto from 'node:crypto';
import type { FileChange, FileQuery, KubeletBootstrapWatch, NodeState__Output } from '@kubetrust/proto';
import { BOOTSTRAP_KUBECONFIG_NAME, kubeletBootstrapFiles, type KubeletBootstrapFiles } from '@kubetrust/shared/dist/catalogue';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { KubeApiInputError, openKubeApi, type KubeApi } from './kube-api';
import type { BindingResult } from './kubelet-bootstrap/bindings';
import type { TokenListing } from './kubelet-bootstrap/tokens';
import type { KubeletBootstrapRecord, StateDir } from './state-dir';

/** Registration state of a bootstrapping kubelet, as the node's agent reports it. */
export interface KubeletObservation {
  readonly registered: boolean;
  /** Observation of the agent or the file query, in words, such as "no file at ... yet". */
  readonly observed: string;
  /** The agent still watches for the kubelet's client certificate. */
  readonly watching: boolean;
  readonly bootstrapKubeconfigPresent: boolean;
  /** SHA-256 of the bootstrap kubeconfig on the node; empty when there is none. */
  readonly bootstrapKubeconfigSha256: string;
  readonly bootstrapKubeconfigRemoved: boolean;
  readonly clientCertificateSerial?: string;
}

/**
 * issue-token: push a new token. waiting: the node has a valid token that kubetrust pushed, and the
 * agent watches. registered: nothing to push.
 */
export type KubeletBootstrapAction = 'issue-token' | 'waiting' | 'registered';

export interface KubeletBootstrapDecision {
  readonly action: KubeletBootstrapAction;
  /** The sentence the plan shows; it names the token id and expiration, never the token. */
  readonly reason: string;
  readonly tokenId?: string;
  readonly expiration?: string;
  /** Registered, but the Node object and token cleanup are not in the ledger yet. */
  readonly cleanupPending?: boolean;
}

/**
 * token-issued: pushed in this run. would-issue-token: a dry run found that a token is needed.
 * not-registered: `--wait-registration` ended before the kubelet registered.
 */
export type KubeletBootstrapState = 'token-issued' | 'would-issue-token' | 'waiting' | 'registered' | 'not-registered' | 'failed';

/** The kubelet bootstrap part of a node's report. */
export interface KubeletBootstrapReport {
  readonly state: KubeletBootstrapState;
  readonly message: string;
  readonly tokenId?: string;
  readonly expiration?: string;
  /** Last observation of the agent. */
  readonly observed?: string;
  readonly clientCertificateSerial?: string;
  readonly bootstrapKubeconfigRemoved?: boolean;
  /** Token ids whose Secrets this run deleted. */
  readonly tokensDeleted?: readonly string[];
}

/** A token pushed to a node in this run. */
export interface PushedToken {
  readonly tokenId: string;
  readonly expiration: Date;
  readonly sha256: string;
  readonly fileChange: FileChange;
  readonly watch: KubeletBootstrapWatch;
}

/** Invalid input for the bootstrap push, such as a missing API kubeconfig; the CLI exits with 2. */
export class KubeletBootstrapInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeletBootstrapInputError';
  }
}

/** Lists the file queries that show whether the node's kubelet registered; empty for other nodes. */
export function kubeletQueries(files: KubeletBootstrapFiles | undefined): FileQuery[] {
  if (files === undefined) return [];
  return [
    { path: files.clientCertificatePath, kind: 'FILE_KIND_CERTIFICATE' },
    // Unspecified kind: the agent reports existence and hash only, never the token inside.
    { path: files.bootstrapKubeconfig.path, kind: 'FILE_KIND_UNSPECIFIED' },
  ];
}

/** Checks a kubelet client certificate against the node name and the cluster CA certificates; returns what was found. */
function checkClientCertificate(pem: Buffer, clusterCaPem: string, node: string, now: Date): { valid: boolean; observed: string; serial?: string } {
  const block = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem.toString('utf8'))?.[0];
  if (block === undefined) return { valid: false, observed: 'the kubelet client certificate file holds no certificate' };
  const certificate = new crypto.X509Certificate(block);
  // While the cluster CA rotates, `clusterCaPem` contains the old and the new CA, and either may have signed it.
  const cas = (clusterCaPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((pem) => new crypto.X509Certificate(pem));
  const subject = certificate.subject.split('\n');
  if (!subject.includes(`CN=system:node:${node}`) || !subject.includes('O=system:nodes')) {
    return { valid: false, observed: `the kubelet client certificate is for ${subject.join(', ')}, not system:node:${node} in system:nodes` };
  }
  if (!cas.some((ca) => certificate.checkIssued(ca) && certificate.verify(ca.publicKey))) return { valid: false, observed: 'the kubelet client certificate does not chain to the cluster CA' };
  if (Date.parse(certificate.validFrom) > now.getTime() || Date.parse(certificate.validTo) <= now.getTime()) {
    return { valid: false, observed: `the kubelet client certificate is valid only from ${certificate.validFrom} to ${certificate.validTo}` };
  }
  return { valid: true, observed: `the kubelet holds a client certificate for system:node:${node}, serial ${certificate.serialNumber}`, serial: certificate.serialNumber };
}

/** Reads the GetState response of a bootstrapping node. */
export function observeKubelet(node: string, files: KubeletBootstrapFiles, held: NodeState__Output, clusterCaPem: string, now: Date): KubeletObservation {
  const agent = held.kubelet_bootstrap;
  const kubeconfig = held.files.find((file) => file.path === files.bootstrapKubeconfig.path);
  const present = kubeconfig?.exists === true;
  const base = {
    bootstrapKubeconfigPresent: present,
    bootstrapKubeconfigSha256: present ? (kubeconfig?.sha256 ?? '') : '',
    bootstrapKubeconfigRemoved: agent?.bootstrap_kubeconfig_removed === true,
    watching: agent?.watching === true,
  };
  if (agent?.registered === true) {
    return { ...base, registered: true, observed: agent.observed, ...(agent.client_certificate_serial !== '' ? { clientCertificateSerial: agent.client_certificate_serial } : {}) };
  }
  const certificate = held.files.find((file) => file.path === files.clientCertificatePath);
  if (certificate?.exists === true && certificate.error === '') {
    const checked = checkClientCertificate(certificate.content, clusterCaPem, node, now);
    if (checked.valid) return { ...base, registered: true, observed: checked.observed, ...(checked.serial !== undefined ? { clientCertificateSerial: checked.serial } : {}) };
    return { ...base, registered: false, observed: checked.observed };
  }
  const observed = agent !== undefined && agent !== null && agent.observed !== '' ? agent.observed : `no file at ${files.clientCertificatePath} yet`;
  return { ...base, registered: false, observed };
}

export interface KubeletPushOptions {
  readonly dryRun: boolean;
  readonly ttlMs?: number;
  /** `--kubeconfig`; otherwise the state directory's controller kubeconfig. */
  readonly kubeconfig?: string;
  /** Nodes that get a new token even while a valid one waits on them (`controller bootstrap-kubelet`). */
  readonly replaceTokens?: ReadonlySet<string>;
}

/** Issues, pushes and cleans up the bootstrap tokens of one distribute run. */
export class KubeletPush {
  private api: Promise<KubeApi> | undefined;
  private bindings: Promise<BindingResult[]> | undefined;
  private records: Promise<KubeletBootstrapRecord[]> | undefined;

  constructor(
    private readonly inventory: Inventory,
    private readonly state: StateDir,
    private readonly logger: Logger,
    private readonly options: KubeletPushOptions,
    private readonly clusterCa: string,
  ) {}

  files(node: NodeSpec): KubeletBootstrapFiles | undefined {
    return kubeletBootstrapFiles(this.inventory, node);
  }

  /** Opens the API once. A missing kubeconfig is a KubeletBootstrapInputError that names `controller kube-credentials`. */
  openApi(node: string): Promise<KubeApi> {
    this.api ??= openKubeApi({ ...(this.options.kubeconfig !== undefined ? { kubeconfig: this.options.kubeconfig } : {}), stateDir: this.state.root }).catch((error: unknown) => {
      if (error instanceof KubeApiInputError) {
        throw new KubeletBootstrapInputError(`node ${node} bootstraps its kubelet through the Kubernetes API, but ${error.message}`);
      }
      throw error;
    });
    return this.api;
  }

  /** Returns the cluster CA certificate from the state directory, which signs kubelet client certificates. */
  clusterCaPem(): string {
    return this.clusterCa;
  }

  private ledger(): Promise<KubeletBootstrapRecord[]> {
    this.records ??= this.state.readKubeletBootstrapRecords();
    return this.records;
  }

  private async nodeTokens(node: string, now: Date): Promise<TokenListing[]> {
    const { listTokens } = await import('./kubelet-bootstrap/tokens');
    const api = await this.openApi(node);
    return (await listTokens(api.client, this.inventory, now)).filter((listing) => listing.node === node);
  }

  /**
   * Decides what the node needs. A dry run without an API kubeconfig still plans: it then cannot
   * see the tokens and plans a new one for every node that has not registered.
   */
  async decide(node: NodeSpec, observation: KubeletObservation, now: Date): Promise<KubeletBootstrapDecision> {
    const records = (await this.ledger()).filter((record) => record.node === node.name);
    if (observation.registered) {
      const recorded = records.some((record) => record.event === 'registered' && record.clientCertificateSerial === observation.clientCertificateSerial);
      const serial = observation.clientCertificateSerial !== undefined ? `, client certificate serial ${observation.clientCertificateSerial}` : '';
      return { action: 'registered', reason: `kubelet registered${serial}; no bootstrap token needed`, cleanupPending: !recorded };
    }
    let tokens: TokenListing[] | undefined;
    try {
      tokens = await this.nodeTokens(node.name, now);
    } catch (error) {
      if (!(this.options.dryRun && error instanceof KubeletBootstrapInputError)) throw error;
    }
    const { tokenExpiration, DEFAULT_TOKEN_TTL_MS } = await import('./kubelet-bootstrap/token');
    const expires = tokenExpiration(now, this.options.ttlMs ?? DEFAULT_TOKEN_TTL_MS).toISOString();
    const lastPush = records.filter((record) => record.event === 'token-issued').at(-1);
    const pushed = lastPush === undefined ? undefined : tokens?.find((token) => token.tokenId === lastPush.tokenId);
    const onNode = lastPush !== undefined && observation.bootstrapKubeconfigPresent && observation.bootstrapKubeconfigSha256 === lastPush.bootstrapKubeconfigSha256;
    const notRegistered = `kubelet not registered (${observation.observed})`;
    if (pushed !== undefined && onNode && pushed.state !== 'expired' && observation.watching && !(this.options.replaceTokens?.has(node.name) ?? false)) {
      return {
        action: 'waiting',
        reason: `${notRegistered}; waiting with bootstrap token ${pushed.tokenId} for ${node.name}, expires ${pushed.expiration ?? '-'}`,
        tokenId: pushed.tokenId,
        ...(pushed.expiration !== undefined ? { expiration: pushed.expiration } : {}),
      };
    }
    const expired = pushed?.state === 'expired' ? `; token ${pushed.tokenId} expired at ${pushed.expiration ?? '-'}` : '';
    return { action: 'issue-token', reason: `${notRegistered}${expired}; new bootstrap token for ${node.name}, expires ${expires}`, expiration: expires };
  }

  /**
   * Ensures the bootstrap bindings (once per run), issues a new token for the node and returns the
   * file change and the watch for its Apply.
   */
  async issue(node: NodeSpec, files: KubeletBootstrapFiles, now: Date): Promise<PushedToken> {
    const bootstrap = await import('./kubelet-bootstrap');
    const api = await this.openApi(node.name);
    const settings = bootstrap.bootstrapSettings(this.inventory, this.options.ttlMs !== undefined ? { ttlMs: this.options.ttlMs } : {});
    this.bindings ??= bootstrap.ensureBindings(api.client, bootstrap.bootstrapBindings(this.inventory.name, settings.group)).then((results) => {
      for (const binding of results) {
        if (binding.message !== undefined) this.logger.warn('bootstrap binding not as expected', { binding: binding.name, status: binding.status, message: binding.message });
      }
      return results;
    });
    await this.bindings;
    const issued = await bootstrap.issueNodeToken(api.client, { inventory: this.inventory, node, clusterCaPem: api.clusterCaPem, settings, now, logger: this.logger });
    const data = Buffer.from(issued.kubeconfig.reveal());
    const file = files.bootstrapKubeconfig;
    return {
      tokenId: issued.token.id,
      expiration: issued.expiration,
      sha256: crypto.createHash('sha256').update(data).digest('hex'),
      fileChange: { path: file.path, mode: file.mode, uid: file.uid, gid: file.gid, data },
      watch: { bootstrap_kubeconfig_path: file.path, client_certificate_path: files.clientCertificatePath, ca_path: files.caPath },
    };
  }

  /**
   * Records a token that reached the node and deletes the node's older kubetrust tokens, which the
   * new file replaced. A token whose Apply failed is deleted instead.
   */
  async afterApply(node: string, pushed: PushedToken, installed: boolean, now: Date): Promise<string[]> {
    const { BOOTSTRAP_NAMESPACE } = await import('./kubelet-bootstrap/types');
    const api = await this.openApi(node);
    if (!installed) {
      await api.client.deleteSecret(BOOTSTRAP_NAMESPACE, `bootstrap-token-${pushed.tokenId}`);
      this.logger.info('deleted bootstrap token that did not reach the node', { node, tokenId: pushed.tokenId });
      return [pushed.tokenId];
    }
    const records: KubeletBootstrapRecord[] = [
      { node, event: 'token-issued', at: now.toISOString(), tokenId: pushed.tokenId, expiration: pushed.expiration.toISOString(), bootstrapKubeconfigSha256: pushed.sha256 },
    ];
    const superseded = (await this.nodeTokens(node, now)).filter((token) => token.tokenId !== pushed.tokenId);
    for (const token of superseded) {
      await api.client.deleteSecret(BOOTSTRAP_NAMESPACE, token.secretName);
      this.logger.info('deleted superseded bootstrap token', { node, tokenId: token.tokenId });
      records.push({ node, event: 'token-deleted', at: now.toISOString(), tokenId: token.tokenId, reason: `replaced by token ${pushed.tokenId}` });
    }
    await this.state.appendKubeletBootstrapRecords(records);
    return superseded.map((token) => token.tokenId);
  }

  /**
   * Finishes a registration: when the Node object exists, deletes the node's kubetrust tokens and
   * records the registration and each deletion. Returns undefined while the Node does not exist.
   */
  async finishRegistration(node: string, observation: KubeletObservation, now: Date): Promise<string[] | undefined> {
    const { BOOTSTRAP_NAMESPACE } = await import('./kubelet-bootstrap/types');
    const api = await this.openApi(node);
    if ((await api.client.getNode(node)) === undefined) return undefined;
    const tokens = await this.nodeTokens(node, now);
    const records: KubeletBootstrapRecord[] = [
      {
        node,
        event: 'registered',
        at: now.toISOString(),
        ...(observation.clientCertificateSerial !== undefined ? { clientCertificateSerial: observation.clientCertificateSerial } : {}),
        bootstrapKubeconfigRemoved: observation.bootstrapKubeconfigRemoved || !observation.bootstrapKubeconfigPresent,
      },
    ];
    for (const token of tokens) {
      await api.client.deleteSecret(BOOTSTRAP_NAMESPACE, token.secretName);
      this.logger.info('deleted bootstrap token of registered node', { node, tokenId: token.tokenId });
      records.push({ node, event: 'token-deleted', at: now.toISOString(), tokenId: token.tokenId, reason: 'node registered' });
    }
    await this.state.appendKubeletBootstrapRecords(records);
    return tokens.map((token) => token.tokenId);
  }
}

/** Builds the plan entry of a bootstrapping node's bootstrap kubeconfig. */
export function bootstrapPlanEntry(files: KubeletBootstrapFiles, decision: KubeletBootstrapDecision): {
  name: string;
  action: 'unchanged' | 'add' | 'change';
  paths: string[];
  reasons: string[];
  restarts: 'kubelet'[];
} {
  const action = decision.action !== 'issue-token' ? 'unchanged' : 'add';
  return { name: BOOTSTRAP_KUBECONFIG_NAME, action, paths: [files.bootstrapKubeconfig.path], reasons: [decision.reason], restarts: action === 'unchanged' ? [] : ['kubelet'] };
}
