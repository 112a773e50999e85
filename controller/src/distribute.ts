/**
 * `controller distribute`: brings every node to what the catalogue requires it to hold.
 *
 * First every selected node is planned concurrently: GetState for every catalogue path, a clock
 * check, and a plan item by item. Then, unless this is a dry run, the nodes that need a change are
 * changed in the order of rollout.ts. For each of them the agent generates keys and returns CSRs
 * (PrepareKeys), and the controller checks each CSR's names against its request and signs it.
 * Then the agent installs the whole change set and restarts the services that read a changed
 * file (Apply).
 * A node that fails its health check is rolled back (Rollback). A node that cannot be planned is
 * reported failed, and the others still run unless the rollout order says otherwise.
 *
 * A worker whose kubelet bootstraps also gets a bootstrap token until its kubelet has registered
 * (kubelet-push.ts and distribute-kubelet.ts).
 *
 * Reads: the inventory and the state directory. Writes: the ledger, and bootstrap token Secrets
 * and bindings in the Kubernetes API. RPCs: GetState, PrepareKeys, Apply, Rollback.
 */
import * as crypto from 'node:crypto';
import type { DefaultHealthCheck, FileChange, KeyRequest, PrepareKeysResponse__Output } from '@kubetrust/proto';
import { casForPki, itemPaths, itemsForNode, kubeletBootstrapFiles, servicesForNode, type CaName, type KubeletBootstrapFiles, type NodeItem, type Service } from '@kubetrust/shared/dist/catalogue';
import { ROLES, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { parseCsr, type ParsedCsr } from '@kubetrust/shared/dist/pki';
import { issueLeaf, leafProfile } from './authority';
import { AgentConnections, defaultHealthCheckMessages, type AgentConnection, type ControllerCredentials } from './agent-client';
import { CaRotationFiles, issuerOf, sideOf, trustPem, type CaGenerations, type CaRotationRecord, type CertificateSide } from './ca-rotation-state';
import { CpuQueue } from './cpu-queue';
import { markEventLoopPhase } from './event-loop-report';
import { decideKubelet, decisionReport, finishKubeletBootstraps } from './distribute-kubelet';
import {
  KubeletBootstrapInputError,
  KubeletPush,
  kubeletQueries,
  observeKubelet,
  type KubeletBootstrapDecision,
  type KubeletBootstrapReport,
  type KubeletObservation,
  type PushedToken,
} from './kubelet-push';
import { planNode, queriesFor, type DesiredMaterial, type PlannedItem, type RenewalPolicy } from './plan';
import { rollOut, rolloutPositions, type RolloutPosition } from './rollout';
import { StateDir, StateError, type KeyMaterial, type LedgerEntry } from './state-dir';

export interface DistributeOptions {
  readonly dryRun?: boolean;
  /** End a leaf that would outlive its CA when the CA ends, instead of failing the node. */
  readonly capToCa?: boolean;
  /** Nodes processed at the same time. */
  readonly concurrency?: number;
  readonly now?: () => Date;
  /** Called when a node's change starts and ends, for progress output. */
  readonly onProgress?: (event: DistributeProgress) => void;
  /** Limits the run to some nodes, roles or catalogue items. */
  readonly scope?: DistributeScope;
  /** A node whose clock is further than this from the controller's is failed before anything is issued. */
  readonly maxClockSkewMs?: number;
  /** Workers changed at the same time; default 10% of the workers, at least 1. */
  readonly maxParallel?: number;
  /** Let later worker batches run after a worker failed; never applies to etcd members or masters. */
  readonly continueOnError?: boolean;
  /** When correct certificates are renewed anyway; `controller rotate` sets it. */
  readonly renewal?: RenewalPolicy;
  /** Lifetime of the bootstrap tokens issued for TLS-bootstrapping kubelets; default 1 hour. */
  readonly bootstrapTokenTtlMs?: number;
  /** Kubernetes API kubeconfig for the bootstrap tokens; default `<state dir>/kubernetes/controller.kubeconfig`. */
  readonly kubeconfig?: string;
  /** After the rollout, poll the nodes that wait for their kubelet until it registers, for at most this long. */
  readonly waitRegistrationMs?: number;
  /** Nodes that get a new bootstrap token even while a valid one waits on them. */
  readonly replaceBootstrapTokens?: readonly string[];
  /** Time between two polls of `waitRegistrationMs`. */
  readonly registrationPollMs?: number;
}

/**
 * changed: files or restarts were applied and every service is healthy. rolled-back: a service was
 * unhealthy after the change, and the previous files are back and healthy. skipped: the node needed
 * a change but the rollout stopped before it. planned: a dry run found changes.
 */
export type NodeStatus = 'changed' | 'unchanged' | 'failed' | 'planned' | 'rolled-back' | 'skipped';

/** A node starting or finishing its change, with its place in the rollout. */
export interface DistributeProgress {
  readonly node: string;
  readonly phase: 'start' | 'done';
  readonly status?: NodeStatus;
  readonly done?: number;
  readonly total?: number;
  readonly position?: RolloutPosition;
  /** Steps in the whole rollout; see rolloutPositions. */
  readonly steps?: number;
}

export interface NodeReport {
  readonly name: string;
  readonly status: NodeStatus;
  readonly changedFiles: readonly string[];
  /** Files the change deleted because the node's catalogue no longer names them. */
  readonly removedFiles?: readonly string[];
  readonly restartedServices: readonly string[];
  readonly plan: readonly PlanEntry[];
  /** Services the agent still has to restart after an earlier failed or interrupted restart. */
  readonly pendingRestarts: readonly string[];
  readonly services: readonly { name: string; healthy: boolean; check: string; output: string }[];
  /** Files put back by a rollback after a failed health check. */
  readonly rolledBackFiles?: readonly string[];
  /** For a worker whose kubelet bootstraps: the token pushed or awaited, or the registration. */
  readonly kubeletBootstrap?: KubeletBootstrapReport;
  /** The node's place in the rollout that changes it (or would, in a dry run). */
  readonly rollout?: RolloutPosition;
  readonly error?: string;
}

/** A node's plan, made before anything on any node changes. */
export interface NodePlan {
  readonly node: NodeSpec;
  readonly planned: readonly PlannedItem[];
  readonly plan: readonly PlanEntry[];
  readonly pendingRestarts: readonly string[];
  /** Node paths to delete: installed earlier by kubetrust and no longer in the node's catalogue. */
  readonly removals: readonly string[];
  /** The default checks of the node's etcd and kube-apiserver, which Apply and Rollback carry. */
  readonly healthChecks: DefaultHealthCheck[];
  readonly needsChange: boolean;
  /** Present for a worker whose kubelet bootstraps; `decision` is set once the API was asked. */
  readonly kubelet?: { readonly files: KubeletBootstrapFiles; readonly observation: KubeletObservation; readonly decision?: KubeletBootstrapDecision };
}

function serviceReport(service: { name: string; healthy: boolean; check: string; output: string }): NodeReport['services'][number] {
  return { name: service.name, healthy: service.healthy, check: service.check, output: service.output };
}

export interface PlanEntry {
  readonly name: string;
  /** `remove`: a file that the agent installed earlier and the node's catalogue no longer names. */
  readonly action: PlannedItem['action'] | 'remove';
  readonly paths: readonly string[];
  readonly reasons: readonly string[];
  readonly restarts: readonly Service[];
  readonly current?: PlannedItem['current'];
  /**
   * For a certificate or kubeconfig to issue: the names of the new certificate and the expiry it
   * gets when issued at planning time (a CA that ends sooner ends it sooner with --cap-to-ca).
   */
  readonly next?: { readonly dnsNames: readonly string[]; readonly ipAddresses: readonly string[]; readonly notAfter: string };
}

export interface DistributeReport {
  readonly cluster: string;
  readonly dryRun: boolean;
  readonly nodes: readonly NodeReport[];
  /**
   * Set when an earlier rollout stopped before it ended (its `rollout.json` was still there): when
   * it started, how many of its nodes had finished and how many it was to change. This run planned
   * again from what the nodes hold.
   */
  readonly interrupted?: { readonly startedAt: string; readonly finished: number; readonly total: number };
}

export const DEFAULT_CONCURRENCY = 16;

/** Everything distribute needs from the state directory, loaded once. */
export class ClusterMaterial implements DesiredMaterial {
  private constructor(
    private readonly cas: ReadonlyMap<CaName, CaGenerations>,
    private readonly serviceAccount: { privateKeyPem: string; publicKeyPem: string },
    readonly controller: ControllerCredentials,
    private readonly serials: Map<string, Set<string>>,
    /** The CA rotation in progress, if any. */
    readonly rotation: CaRotationRecord | undefined,
  ) {}

  /** Serial numbers already issued by a CA, from the ledger and this run; callers add what they issue. */
  usedSerials(ca: CaName): Set<string> {
    let used = this.serials.get(ca);
    if (used === undefined) {
      used = new Set();
      this.serials.set(ca, used);
    }
    return used;
  }

  static async load(state: StateDir, inventory: Inventory): Promise<ClusterMaterial> {
    await state.requireCluster(inventory.name);
    const rotationFiles = new CaRotationFiles(state);
    const rotation = await rotationFiles.record();
    const cas = new Map<CaName, CaGenerations>();
    for (const name of casForPki(inventory.pki)) cas.set(name, await rotationFiles.generations(name, rotation));
    const management = await state.loadKeyMaterial(state.caFiles('management'), 'management CA');
    const controller = await state.loadKeyMaterial(state.controllerFiles(), 'controller identity');
    const serials = new Map<string, Set<string>>();
    for (const entry of await state.readLedger()) {
      const used = serials.get(entry.ca) ?? new Set<string>();
      used.add(entry.serialNumber);
      serials.set(entry.ca, used);
    }
    return new ClusterMaterial(
      cas,
      await state.readServiceAccount(),
      { managementCaPem: management.certificatePem, certificatePem: controller.certificatePem, privateKeyPem: controller.privateKeyPem },
      serials,
      rotation,
    );
  }

  private generations(name: CaName): CaGenerations {
    const generations = this.cas.get(name);
    if (generations === undefined) throw new StateError(`CA "${name}" is not in the state directory; run \`controller init\` for this layout`);
    return generations;
  }

  /** Returns the CA that signs the certificates of one side: the old or the new one while the CA rotates. */
  issuer(name: CaName, side: CertificateSide): KeyMaterial {
    return issuerOf(this.generations(name), side, name);
  }

  issuerCertificate(name: CaName, side: CertificateSide): string {
    return this.issuer(name, side).certificatePem;
  }

  /** Returns the content of a CA's trust files and kubeconfig CA fields: the CA, or old and new while it rotates. */
  caCertificate(name: CaName): string {
    return trustPem(this.generations(name), name);
  }

  staticContent(item: Extract<NodeItem, { type: 'static' }>): string {
    const source = item.source;
    if ('kubeletConfig' in source) return source.content;
    if ('ca' in source) {
      switch (source.part) {
        case 'certificate':
          return this.caCertificate(source.ca);
        case 'signerCertificate':
          return this.issuer(source.ca, 'client').certificatePem;
        case 'privateKey':
          return this.issuer(source.ca, 'client').privateKeyPem;
      }
    }
    return source.part === 'privateKey' ? this.serviceAccount.privateKeyPem : this.serviceAccount.publicKeyPem;
  }
}

function restartsFor(planned: PlannedItem, node: NodeSpec): Service[] {
  const item = planned.item;
  const consumers = item.type === 'leaf' ? [...item.certificate.consumers, ...item.privateKey.consumers] : item.file.consumers;
  return servicesForNode(node).filter((service) => consumers.includes(service));
}

function toPlanEntry(planned: PlannedItem, node: NodeSpec, notAfter: string): PlanEntry {
  const item = planned.item;
  const paths = item.type === 'leaf' ? [item.certificate.path, item.privateKey.path] : [item.file.path];
  const issues = planned.action !== 'unchanged' && item.type !== 'static';
  return {
    name: item.name,
    action: planned.action,
    paths,
    reasons: planned.reasons,
    restarts: planned.action === 'unchanged' ? [] : restartsFor(planned, node),
    ...(planned.current !== undefined ? { current: planned.current } : {}),
    ...(issues ? { next: { dnsNames: item.type === 'leaf' ? item.sans.dnsNames : [], ipAddresses: item.type === 'leaf' ? item.sans.ipAddresses : [], notAfter } } : {}),
  };
}

/**
 * Returns the installed paths that the node's catalogue no longer names, such as the CA key of a
 * node that is no longer a master, sorted. The files of a bootstrapping kubelet (its bootstrap
 * kubeconfig, the kubeconfig it writes and its certificate directory) always stay.
 */
export function obsoletePaths(installed: readonly string[], items: readonly NodeItem[], kubelet: KubeletBootstrapFiles | undefined): string[] {
  const expected = new Set(items.flatMap(itemPaths));
  const isKubeletFile = (nodePath: string): boolean =>
    kubelet !== undefined && (nodePath === kubelet.bootstrapKubeconfig.path || nodePath === kubelet.kubeconfigPath || nodePath.startsWith(`${kubelet.certDir}/`));
  return installed.filter((nodePath) => !expected.has(nodePath) && !isKubeletFile(nodePath)).sort();
}

function removalEntry(nodePath: string, node: NodeSpec): PlanEntry {
  return { name: nodePath, action: 'remove', paths: [nodePath], reasons: [`no longer in the catalogue of a node with roles ${node.roles.join(', ')}`], restarts: [] };
}

function keyIdFor(item: NodeItem): string {
  return `${item.name.replace(/[^a-z0-9.-]/g, '-')}-${crypto.randomBytes(6).toString('hex')}`;
}

/** Checks that a CSR returned by an agent requests exactly the names the controller requested. */
export function checkCsr(csr: ParsedCsr, request: KeyRequest): void {
  const same = (a: readonly string[], b: readonly string[] | undefined): boolean => a.length === (b ?? []).length && a.every((value) => (b ?? []).includes(value));
  const problems: string[] = [];
  if (csr.commonName !== request.common_name) problems.push(`CN "${csr.commonName}" instead of "${request.common_name ?? ''}"`);
  if (!same(csr.organizations, request.organizations)) problems.push(`O [${csr.organizations.join(', ')}]`);
  if (!same(csr.dnsNames, request.dns_names)) problems.push(`DNS names [${csr.dnsNames.join(', ')}]`);
  if (!same(csr.ipAddresses, request.ip_addresses)) problems.push(`IP addresses [${csr.ipAddresses.join(', ')}]`);
  if (problems.length > 0) throw new Error(`CSR for ${request.key_id ?? ''} asks for names that were not requested: ${problems.join('; ')}`);
}

interface Issued {
  readonly certificatePem: string;
  readonly keyId: string;
  readonly ledger: LedgerEntry;
}

/**
 * The keys of a node's change, requested from its agent while an earlier node is still being
 * changed. Only the agent's CSRs are fetched early: the certificates are signed at the node's turn.
 */
export interface PrefetchedKeys {
  readonly connection: AgentConnection;
  /** The requests sent, by catalogue item name. Each has a fresh key id. */
  readonly requests: ReadonlyMap<string, KeyRequest>;
  readonly response: Promise<PrepareKeysResponse__Output | undefined>;
}

export class NodeRollout {
  constructor(
    private readonly inventory: Inventory,
    private readonly node: NodeSpec,
    private readonly material: ClusterMaterial,
    private readonly state: StateDir,
    private readonly logger: Logger,
    private readonly now: () => Date,
    private readonly capToCa: boolean,
    private readonly maxClockSkewMs: number = DEFAULT_MAX_CLOCK_SKEW_MS,
    private readonly connections: AgentConnections = new AgentConnections(inventory.name, material.controller),
    private readonly cpu: CpuQueue = new CpuQueue(),
    private readonly kubeletPush?: KubeletPush,
    private readonly renewal: RenewalPolicy = {},
  ) {}

  /**
   * Reads the node's files through its agent and plans every catalogue item (or only the `only`
   * ones) against them. With `keepConnection`, the connection of a node that needs a change stays
   * open for apply.
   */
  async plan(only: ReadonlySet<string> | undefined, keepConnection = false): Promise<NodePlan> {
    const connection = this.connections.open(this.node);
    let kept = false;
    try {
      const catalogue = itemsForNode(this.inventory, this.node);
      const items = only === undefined ? catalogue : catalogue.filter((item) => only.has(item.name));
      const kubeletFiles = this.kubeletPush?.files(this.node);
      const requestedAt = this.now().getTime();
      const held = await connection.getState({ files: [...queriesFor(items), ...kubeletQueries(kubeletFiles)] });
      checkClockSkew(this.node.name, Number(held.clock_unix_ms), (requestedAt + this.now().getTime()) / 2, this.maxClockSkewMs);
      if (held.node_name !== this.node.name) {
        throw new Error(`agent at ${this.node.agent.endpoint} reports node name "${held.node_name}", expected "${this.node.name}"`);
      }
      const planned = await this.cpu.run(() => planNode(items, held.files, this.material, this.now(), this.renewal));
      const pendingRestarts = held.pending_restarts;
      // With --only the plan covers part of the catalogue, so it cannot tell what is no longer in it.
      const removals = only === undefined ? obsoletePaths(held.installed_paths, catalogue, kubeletBootstrapFiles(this.inventory, this.node)) : [];
      const needsChange = planned.some((entry) => entry.action !== 'unchanged') || pendingRestarts.length > 0 || removals.length > 0;
      const kubelet =
        kubeletFiles === undefined ? undefined : { files: kubeletFiles, observation: observeKubelet(this.node.name, kubeletFiles, held, this.material.caCertificate('cluster-ca'), this.now()) };
      // A bootstrapping node may need a token even when every file is in place, so its connection is kept too.
      if ((needsChange || kubelet !== undefined) && keepConnection) kept = this.connections.keep(this.node, connection);
      // Whole seconds, as the certificate will carry it.
      const notAfter = new Date(Math.floor((this.now().getTime() + this.inventory.pki.certValidityMs) / 1000) * 1000).toISOString();
      const plan = [...planned.map((entry) => toPlanEntry(entry, this.node, notAfter)), ...removals.map((nodePath) => removalEntry(nodePath, this.node))];
      const healthChecks = defaultHealthCheckMessages(this.inventory, this.node, catalogue);
      return { node: this.node, planned, plan, pendingRestarts, removals, healthChecks, needsChange, ...(kubelet !== undefined ? { kubelet } : {}) };
    } finally {
      if (!kept) connection.close();
    }
  }

  /**
   * Issues and installs the planned changes. When a service is unhealthy afterwards, the node is
   * rolled back to its previous files and its services are restarted and checked again on them.
   */
  async apply(nodePlan: NodePlan, prefetched?: PrefetchedKeys): Promise<NodeReport> {
    const { plan, pendingRestarts } = nodePlan;
    const pending = nodePlan.planned.filter((entry) => entry.action !== 'unchanged');
    // Nodes of a worker batch start together; each takes its own turn of the event loop to set up.
    await this.cpu.turn();
    const connection = prefetched?.connection ?? this.connections.takeOrOpen(this.node);
    try {
      const issued = await this.issue(connection, pending, prefetched);
      const restarts = servicesForNode(this.node).filter((service) => plan.some((entry) => entry.restarts.includes(service)));
      const changeId = `${this.now().toISOString().replace(/[^0-9]/g, '').slice(0, 14)}-${crypto.randomBytes(4).toString('hex')}`;
      // Recorded before the push: a controller killed after the agent installed the files still has
      // every installed certificate in its ledger, at the cost of listing some that never arrived.
      await this.state.appendLedger([...issued.values()].map((entry) => entry.ledger));
      const kubelet = nodePlan.kubelet;
      // The token is minted last, just before the Apply, so that it spends none of its lifetime on key generation.
      const pushed = kubelet?.decision?.action === 'issue-token' && this.kubeletPush !== undefined ? await this.kubeletPush.issue(this.node, kubelet.files, this.now()) : undefined;
      const files = pending.flatMap((entry) => this.fileChanges(entry, issued));
      let report: NodeReport;
      try {
        const response = await connection.apply({
          change_id: changeId,
          files: pushed === undefined ? files : [...files, pushed.fileChange],
          restart_services: restarts,
          default_health_checks: nodePlan.healthChecks,
          remove_paths: [...nodePlan.removals],
          ...(pushed !== undefined ? { kubelet_bootstrap: pushed.watch } : {}),
        });
        report = await this.report(connection, changeId, nodePlan, response);
      } catch (error) {
        if (pushed !== undefined) await this.kubeletPush?.afterApply(this.node.name, pushed, false, this.now());
        throw error;
      }
      return pushed === undefined ? report : await this.reportPushedToken(report, pushed);
    } finally {
      connection.close();
    }
  }

  private async report(connection: AgentConnection, changeId: string, nodePlan: NodePlan, response: Awaited<ReturnType<AgentConnection['apply']>>): Promise<NodeReport> {
    const unhealthy = response.services.filter((service) => !service.healthy);
    const restarted = response.services.filter((service) => service.restarted);
    const touched = response.changed_paths.length > 0 || response.removed_paths.length > 0;
    const report: NodeReport = {
      name: this.node.name,
      status: touched || restarted.length > 0 ? 'changed' : 'unchanged',
      changedFiles: response.changed_paths,
      ...(response.removed_paths.length > 0 ? { removedFiles: response.removed_paths } : {}),
      restartedServices: restarted.map((service) => service.name),
      plan: nodePlan.plan,
      pendingRestarts: nodePlan.pendingRestarts,
      services: response.services.map(serviceReport),
    };
    if (unhealthy.length === 0) return report;
    const error = unhealthy.map((service) => `${service.name} unhealthy after restart (${service.check}): ${service.output}`).join('; ');
    if (!touched) return { ...report, status: 'failed', error };
    return await this.rollBack(connection, changeId, report, error, nodePlan.healthChecks);
  }

  /** Records a pushed token, or deletes it when the node did not keep the change. */
  private async reportPushedToken(report: NodeReport, pushed: PushedToken): Promise<NodeReport> {
    const push = this.kubeletPush!;
    const expiration = pushed.expiration.toISOString();
    if (report.status !== 'changed' && report.status !== 'unchanged') {
      await push.afterApply(this.node.name, pushed, false, this.now());
      return { ...report, kubeletBootstrap: { state: 'failed', message: `bootstrap token ${pushed.tokenId} deleted, because the change did not stay on the node`, tokenId: pushed.tokenId } };
    }
    const superseded = await push.afterApply(this.node.name, pushed, true, this.now());
    const replaced = superseded.length > 0 ? `; deleted the tokens it replaced: ${superseded.join(', ')}` : '';
    return {
      ...report,
      kubeletBootstrap: {
        state: 'token-issued',
        message: `bootstrap token ${pushed.tokenId} for ${this.node.name} pushed, expires ${expiration}; the agent deletes the bootstrap kubeconfig once the kubelet registers${replaced}`,
        tokenId: pushed.tokenId,
        expiration,
        tokensDeleted: superseded,
      },
    };
  }

  private async rollBack(connection: AgentConnection, changeId: string, report: NodeReport, error: string, healthChecks: DefaultHealthCheck[]): Promise<NodeReport> {
    this.logger.warn('rolling back node', { node: this.node.name, change: changeId, reason: error });
    // The change was made by this very run, so undoing it may delete files it created.
    const rollback = await connection.rollback({ change_id: changeId, allow_removing_all: true, default_health_checks: healthChecks });
    const stillUnhealthy = rollback.services.filter((service) => !service.healthy);
    const rolledBack: NodeReport = {
      ...report,
      status: stillUnhealthy.length === 0 ? 'rolled-back' : 'failed',
      rolledBackFiles: [...rollback.changed_paths, ...rollback.removed_paths],
      services: [...report.services, ...rollback.services.map(serviceReport)],
    };
    if (stillUnhealthy.length === 0) return { ...rolledBack, error: `${error}; rolled back to the previous files, which are healthy` };
    const after = stillUnhealthy.map((service) => `${service.name} (${service.check}): ${service.output}`).join('; ');
    return { ...rolledBack, error: `${error}; rolled back to the previous files, but still unhealthy: ${after}` };
  }

  /**
   * Sends the PrepareKeys call of a planned change now, on the connection that apply then uses.
   * The caller passes the result to apply, or closes its connection when the node is skipped.
   */
  prefetchKeys(nodePlan: NodePlan): PrefetchedKeys {
    const connection = this.connections.takeOrOpen(this.node);
    const requests = this.keyRequests(nodePlan.planned.filter((entry) => entry.action !== 'unchanged'));
    const response = requests.size === 0 ? Promise.resolve(undefined) : connection.prepareKeys({ keys: [...requests.values()] });
    // A failure surfaces when apply awaits the response; a node that is skipped never awaits it.
    response.catch(() => undefined);
    return { connection, requests, response };
  }

  /** Builds one key request per certificate to issue, by catalogue item name. */
  private keyRequests(pending: readonly PlannedItem[]): Map<string, KeyRequest> {
    const requests = new Map<string, KeyRequest>();
    for (const { item } of pending) {
      if (item.type === 'static') continue;
      const sans = item.type === 'leaf' ? item.sans : { dnsNames: [], ipAddresses: [] };
      requests.set(item.name, {
        key_id: keyIdFor(item),
        algorithm: this.inventory.pki.keyAlgorithm,
        common_name: item.subject.commonName,
        organizations: [...item.subject.organizations],
        dns_names: [...sans.dnsNames],
        ip_addresses: [...sans.ipAddresses],
      });
    }
    return requests;
  }

  /**
   * Gets keys and CSRs from the agent for every certificate to issue, then signs them. `prefetched`
   * is the PrepareKeys call that prefetchKeys sent for the same plan.
   */
  private async issue(connection: AgentConnection, pending: readonly PlannedItem[], prefetched?: PrefetchedKeys): Promise<Map<string, Issued>> {
    const requests = prefetched?.requests ?? this.keyRequests(pending);
    const issued = new Map<string, Issued>();
    if (requests.size === 0) return issued;
    const response = (await prefetched?.response) ?? (await connection.prepareKeys({ keys: [...requests.values()] }));
    const csrs = new Map(response.keys.map((key) => [key.key_id, key.csr_pem]));
    for (const { item } of pending) {
      const request = requests.get(item.name);
      if (item.type === 'static' || request === undefined) continue;
      const csrPem = csrs.get(request.key_id ?? '');
      if (csrPem === undefined) throw new Error(`agent returned no CSR for ${item.name}`);
      issued.set(item.name, await this.cpu.run(() => this.signCsr(item, request, csrPem)));
    }
    return issued;
  }

  /** Checks one CSR against its request and signs it; synchronous, so that it runs as one CpuQueue job. */
  private signCsr(item: Exclude<NodeItem, { type: 'static' }>, request: KeyRequest, csrPem: string | Buffer): Issued {
    const csr = parseCsr(csrPem);
    checkCsr(csr, request);
    const ca = this.material.issuer(item.parent, item.type === 'leaf' ? sideOf(item.extKeyUsage) : 'client');
    const now = this.now();
    const usedSerials = this.material.usedSerials(item.parent);
    // The names come from the catalogue; checkCsr has already made sure the CSR asked for exactly these.
    const info = issueLeaf(
      ca,
      leafProfile(item, this.node.name),
      csr.publicKey,
      this.inventory.pki.certValidityMs,
      now,
      { capToCa: this.capToCa, usedSerials },
    );
    const { certificatePem } = info;
    usedSerials.add(info.serialNumber);
    this.logger.info('issued certificate', { node: this.node.name, cert: item.name, serial: info.serialNumber, fingerprint: info.fingerprint, notAfter: info.notAfter.toISOString() });
    return {
      certificatePem,
      keyId: request.key_id ?? '',
      ledger: { node: this.node.name, name: item.name, ca: item.parent, serialNumber: info.serialNumber, notAfter: info.notAfter.toISOString(), issuedAt: now.toISOString() },
    };
  }

  private fileChanges(planned: PlannedItem, issued: ReadonlyMap<string, Issued>): FileChange[] {
    const item = planned.item;
    if (item.type === 'static') {
      return [{ path: item.file.path, mode: item.file.mode, uid: item.file.uid, gid: item.file.gid, data: Buffer.from(this.material.staticContent(item)) }];
    }
    const certificate = issued.get(item.name);
    if (certificate === undefined) throw new Error(`no certificate was issued for ${item.name}`);
    if (item.type === 'leaf') {
      // Key and certificate travel in one change set, so the node installs both or neither.
      return [
        { path: item.privateKey.path, mode: item.privateKey.mode, uid: item.privateKey.uid, gid: item.privateKey.gid, staged_key_id: certificate.keyId },
        { path: item.certificate.path, mode: item.certificate.mode, uid: item.certificate.uid, gid: item.certificate.gid, data: Buffer.from(certificate.certificatePem) },
      ];
    }
    return [
      {
        path: item.file.path,
        mode: item.file.mode,
        uid: item.file.uid,
        gid: item.file.gid,
        kubeconfig: {
          cluster_name: this.inventory.name,
          server: item.server,
          certificate_authority_pem: Buffer.from(this.material.caCertificate(item.parent)),
          user: item.subject.commonName,
          client_certificate_pem: Buffer.from(certificate.certificatePem),
          client_key_id: certificate.keyId,
        },
      },
    ];
  }
}

/** Runs `task` over `items` with at most `limit` in flight, keeping result order. */
async function mapConcurrent<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]!);
    }
  });
  await Promise.all(workers);
  return results;
}

/** How far a node's clock may be from the controller's before nothing is issued for it. */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 2 * 60 * 1000;

/**
 * Throws when the node's clock is more than `maxSkewMs` away from the controller's. A node whose
 * clock runs behind rejects a fresh certificate as not yet valid, because NotBefore is backdated
 * only five minutes. A node whose clock runs ahead expires certificates early. `controllerMs` is the midpoint of the
 * call, which cancels the network delay when both directions take as long.
 */
export function checkClockSkew(node: string, nodeMs: number, controllerMs: number, maxSkewMs: number): void {
  if (!Number.isFinite(nodeMs) || nodeMs <= 0) return;
  const skew = nodeMs - controllerMs;
  if (Math.abs(skew) <= maxSkewMs) return;
  const direction = skew > 0 ? 'ahead of' : 'behind';
  throw new Error(
    `clock of node ${node} is ${Math.round(Math.abs(skew) / 1000)} s ${direction} the controller's (allowed: ${Math.round(maxSkewMs / 1000)} s); ` +
      'fix time synchronisation (chrony or NTP) on the node before issuing, because certificates would not be valid there yet',
  );
}

/** Raised for scope options that name nodes, roles or certificates that do not exist. */
export class ScopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScopeError';
  }
}

export interface DistributeScope {
  readonly nodes?: readonly string[];
  readonly roles?: readonly string[];
  /** Catalogue item names, as the plan shows them (apiserver, admin.conf, cluster-ca.crt, ...). */
  readonly only?: readonly string[];
}

/** Selects the nodes in scope; every unknown name is an error listing the valid ones. */
export function selectNodes(inventory: Inventory, scope: DistributeScope): NodeSpec[] {
  const names = inventory.nodes.map((node) => node.name);
  const unknownNodes = (scope.nodes ?? []).filter((name) => !names.includes(name));
  if (unknownNodes.length > 0) throw new ScopeError(`--nodes: unknown node ${unknownNodes.join(', ')}; use names from the inventory: ${names.join(', ')}`);
  const unknownRoles = (scope.roles ?? []).filter((role) => !(ROLES as readonly string[]).includes(role));
  if (unknownRoles.length > 0) throw new ScopeError(`--roles: unknown role ${unknownRoles.join(', ')}; use ${ROLES.join(', ')}`);
  const items = new Set(inventory.nodes.flatMap((node) => itemsForNode(inventory, node).map((item) => item.name)));
  const unknownItems = (scope.only ?? []).filter((name) => !items.has(name));
  if (unknownItems.length > 0) throw new ScopeError(`--only: ${unknownItems.join(', ')} not found on any node of this cluster; use one of: ${[...items].join(', ')}`);
  const selected = inventory.nodes.filter(
    (node) => (scope.nodes === undefined || scope.nodes.includes(node.name)) && (scope.roles === undefined || node.roles.some((role) => scope.roles!.includes(role))),
  );
  if (selected.length === 0) throw new ScopeError('no node matches --nodes and --roles together; widen the selection');
  return selected;
}

export async function distribute(inventory: Inventory, stateDir: string, logger: Logger, options: DistributeOptions = {}): Promise<DistributeReport> {
  const selected = selectNodes(inventory, options.scope ?? {});
  const only = options.scope?.only === undefined ? undefined : new Set(options.scope.only);
  const state = new StateDir(stateDir);
  // Checked before locking, so that a mistyped --state-dir is reported without creating it.
  await state.requireCluster(inventory.name);
  const unlock = await state.lock();
  let connections: AgentConnections | undefined;
  try {
    const material = await ClusterMaterial.load(state, inventory);
    const now = options.now ?? (() => new Date());
    const dryRun = options.dryRun === true;
    const previous = await state.readRollout();
    const interrupted = previous === undefined ? undefined : { startedAt: previous.startedAt, finished: Object.keys(previous.finished).length, total: previous.total };
    if (interrupted !== undefined) logger.warn('the last rollout stopped before it ended; this run plans again from what the nodes hold', interrupted);
    const open = new AgentConnections(inventory.name, material.controller);
    connections = open;
    // One queue for all nodes, so that signing for many nodes at once still yields to the event loop between certificates.
    const cpu = new CpuQueue();
    const kubeletPush = new KubeletPush(inventory, state, logger, {
      dryRun,
      ...(options.bootstrapTokenTtlMs !== undefined ? { ttlMs: options.bootstrapTokenTtlMs } : {}),
      ...(options.kubeconfig !== undefined ? { kubeconfig: options.kubeconfig } : {}),
      replaceTokens: new Set(options.replaceBootstrapTokens ?? []),
    }, material.caCertificate('cluster-ca'));
    const rollout = (node: NodeSpec): NodeRollout =>
      new NodeRollout(inventory, node, material, state, logger, now, options.capToCa === true, options.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS, open, cpu, kubeletPush, options.renewal ?? {});
    markEventLoopPhase('distribute');

    // Plan every node before changing any, so that ordering decisions see the whole cluster.
    const planned = await mapConcurrent(selected, options.concurrency ?? DEFAULT_CONCURRENCY, async (node): Promise<NodePlan | NodeReport> => {
      try {
        return await rollout(node).plan(only, !dryRun);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        logger.error('node failed', { node: node.name, error: message });
        return { name: node.name, status: 'failed', changedFiles: [], restartedServices: [], plan: [], pendingRestarts: [], services: [], error: message };
      }
    });
    const reports = new Map<string, NodeReport>();
    for (const entry of planned) if (!('needsChange' in entry)) reports.set(entry.name, entry);
    // Asked one node at a time, so that a missing API kubeconfig is reported once, before any node changes.
    const plans: NodePlan[] = [];
    for (const entry of planned) {
      if (!('needsChange' in entry)) continue;
      try {
        plans.push(await decideKubelet(entry, kubeletPush, now()));
      } catch (error) {
        if (error instanceof KubeletBootstrapInputError) throw error;
        const message = error instanceof Error ? error.message : String(error);
        logger.error('node failed', { node: entry.node.name, error: message });
        reports.set(entry.node.name, { ...planReport(entry, 'failed'), error: `bootstrap token check failed: ${message}` });
      }
    }
    const positions = rolloutPositions(plans, options.maxParallel);
    for (const plan of plans) {
      if (!plan.needsChange) reports.set(plan.node.name, planReport(plan, 'unchanged'));
      else if (dryRun) reports.set(plan.node.name, { ...planReport(plan, 'planned'), rollout: positions.get(plan.node.name)! });
    }

    if (!dryRun) {
      const unreachableEtcd = selected.filter((node) => node.roles.includes('etcd') && reports.get(node.name)?.status === 'failed').map((node) => node.name);
      const total = plans.filter((plan) => plan.needsChange).length;
      const stepCount = Math.max(0, ...[...positions.values()].map((position) => position.step));
      let done = 0;
      // rollout.json lives from here until the rollout ends, so a controller that stops midway leaves it.
      const record = { startedAt: now().toISOString(), total, finished: {} as Record<string, string> };
      // The record is passed as it is, not copied: a write serializes it when it runs, so it always
      // writes the latest state. Copying 1,000 finished nodes took about 0.7 ms per node.
      const saveRecord = (value: typeof record | undefined, progress = false): Promise<void> =>
        state.writeRollout(value, progress).catch((error: unknown) => {
          logger.warn('could not write rollout.json', { error: error instanceof Error ? error.message : String(error) });
        });
      await saveRecord(total > 0 ? record : undefined);
      const prefetched = new Map<string, Promise<PrefetchedKeys>>();
      const steps = {
        prefetch: (plan: NodePlan): void => {
          if (prefetched.has(plan.node.name)) return;
          // Each request is built and sent in a turn of its own, so that prefetching a batch of
          // hundreds of workers does not hold the event loop.
          const keys = cpu.turn().then(() => rollout(plan.node).prefetchKeys(plan));
          // A failure surfaces when apply awaits the keys; a node that is skipped never awaits them.
          keys.catch(() => undefined);
          prefetched.set(plan.node.name, keys);
        },
        apply: async (plan: NodePlan): Promise<NodeReport> => {
          options.onProgress?.({ node: plan.node.name, phase: 'start', done, total, steps: stepCount, ...progressPosition(positions, plan.node.name) });
          const keys = prefetched.get(plan.node.name);
          prefetched.delete(plan.node.name);
          try {
            return await rollout(plan.node).apply(plan, await keys);
          } catch (error) {
            const message = error instanceof Error ? error.message : String(error);
            logger.error('node failed', { node: plan.node.name, error: message });
            return { ...planReport(plan, 'failed'), error: message };
          }
        },
        skipped: (plan: NodePlan, reason: string): NodeReport => ({ ...planReport(plan, 'skipped'), error: reason }),
        onNodeDone: (report: NodeReport): void => {
          done++;
          record.finished[report.name] = report.status;
          void saveRecord(record, true);
          options.onProgress?.({ node: report.name, phase: 'done', status: report.status, done, total, steps: stepCount, ...progressPosition(positions, report.name) });
        },
      };
      const rolloutOptions = { ...(options.maxParallel !== undefined ? { maxParallel: options.maxParallel } : {}), continueOnError: options.continueOnError === true };
      try {
        for (const report of await rollOut(plans, unreachableEtcd, steps, rolloutOptions)) {
          const position = positions.get(report.name);
          reports.set(report.name, position === undefined ? report : { ...report, rollout: position });
        }
      } finally {
        // Nodes skipped after a failure may have had their keys requested already.
        for (const keys of prefetched.values()) keys.then((unused) => unused.connection.close()).catch(() => undefined);
      }
      await saveRecord(undefined);
      await finishKubeletBootstraps(plans, reports, kubeletPush, open, logger, now, options);
    }
    return { cluster: inventory.name, dryRun, nodes: selected.map((node) => reports.get(node.name)!), ...(interrupted !== undefined ? { interrupted } : {}) };
  } finally {
    // Nodes that the rollout skipped still have the connections that planned them.
    connections?.closeAll();
    await unlock();
  }
}

/** Returns `{position}` for a node with a place in the rollout, else nothing to spread. */
function progressPosition(positions: ReadonlyMap<string, RolloutPosition>, node: string): { position?: RolloutPosition } {
  const position = positions.get(node);
  return position === undefined ? {} : { position };
}

function planReport(plan: NodePlan, status: NodeStatus): NodeReport {
  const kubeletBootstrap = plan.kubelet?.decision === undefined ? undefined : decisionReport(plan.kubelet.decision, plan.kubelet.observation, status === 'planned' || status === 'unchanged');
  return {
    name: plan.node.name,
    status,
    changedFiles: [],
    restartedServices: [],
    plan: plan.plan,
    pendingRestarts: plan.pendingRestarts,
    services: [],
    ...(kubeletBootstrap !== undefined ? { kubeletBootstrap } : {}),
  };
}
