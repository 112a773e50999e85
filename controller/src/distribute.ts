/**
 * `controller distribute`: brings every node to what the catalogue requires it to hold.
 *
 * Per node: GetState for every catalogue path, plan, then (unless dry run) PrepareKeys for the
 * certificates to issue, sign each returned CSR after checking its names against the request,
 * and Apply the whole change set with the services that read a changed file. Nodes run
 * concurrently; a failed node is reported and never stops the others.
 *
 * Reads: the inventory and the state directory. Writes: the ledger. RPCs: GetState, PrepareKeys, Apply.
 */
import * as crypto from 'node:crypto';
import type { FileChange, KeyRequest } from '@kubetrust/proto';
import { casForPki, itemsForNode, servicesForNode, type CaName, type NodeItem, type Service } from '@kubetrust/shared/dist/catalogue';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { inspectCertificate, parseCsr, type ParsedCsr } from '@kubetrust/shared/dist/pki';
import { leafProfile, signLeaf } from './authority';
import { AgentConnection, type ControllerCredentials } from './agent-client';
import { planNode, queriesFor, type DesiredMaterial, type PlannedItem } from './plan';
import { StateDir, StateError, type KeyMaterial, type LedgerEntry } from './state-dir';

export interface DistributeOptions {
  readonly dryRun?: boolean;
  /** End a leaf that would outlive its CA when the CA ends, instead of failing the node. */
  readonly capToCa?: boolean;
  /** Nodes processed at the same time. */
  readonly concurrency?: number;
  readonly now?: () => Date;
  /** Called when a node starts and ends, for progress output. */
  readonly onProgress?: (event: { node: string; phase: 'start' | 'done'; status?: NodeStatus }) => void;
}

export type NodeStatus = 'changed' | 'unchanged' | 'failed' | 'planned';

export interface NodeReport {
  readonly name: string;
  readonly status: NodeStatus;
  readonly changedFiles: readonly string[];
  readonly restartedServices: readonly string[];
  readonly plan: readonly PlanEntry[];
  /** Services the agent still has to restart after an earlier failed or interrupted restart. */
  readonly pendingRestarts: readonly string[];
  readonly services: readonly { name: string; healthy: boolean; check: string; output: string }[];
  readonly error?: string;
}

export interface PlanEntry {
  readonly name: string;
  readonly action: PlannedItem['action'];
  readonly paths: readonly string[];
  readonly reasons: readonly string[];
  readonly restarts: readonly Service[];
  readonly current?: PlannedItem['current'];
}

export interface DistributeReport {
  readonly cluster: string;
  readonly dryRun: boolean;
  readonly nodes: readonly NodeReport[];
}

export const DEFAULT_CONCURRENCY = 16;

/** Everything distribute needs from the state directory, loaded once. */
export class ClusterMaterial implements DesiredMaterial {
  private constructor(
    private readonly cas: ReadonlyMap<CaName, KeyMaterial>,
    private readonly serviceAccount: { privateKeyPem: string; publicKeyPem: string },
    readonly controller: ControllerCredentials,
    private readonly serials: Map<string, Set<string>>,
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
    const cas = new Map<CaName, KeyMaterial>();
    for (const name of casForPki(inventory.pki)) cas.set(name, await state.loadKeyMaterial(state.caFiles(name), `${name} CA`));
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
    );
  }

  ca(name: CaName): KeyMaterial {
    const material = this.cas.get(name);
    if (material === undefined) throw new StateError(`CA "${name}" is not in the state directory; run \`controller init\` for this layout`);
    return material;
  }

  caCertificate(name: CaName): string {
    return this.ca(name).certificatePem;
  }

  staticContent(item: Extract<NodeItem, { type: 'static' }>): string {
    const source = item.source;
    if ('ca' in source) return source.part === 'certificate' ? this.ca(source.ca).certificatePem : this.ca(source.ca).privateKeyPem;
    return source.part === 'privateKey' ? this.serviceAccount.privateKeyPem : this.serviceAccount.publicKeyPem;
  }
}

function restartsFor(planned: PlannedItem, node: NodeSpec): Service[] {
  const item = planned.item;
  const consumers = item.type === 'leaf' ? [...item.certificate.consumers, ...item.privateKey.consumers] : item.file.consumers;
  return servicesForNode(node).filter((service) => consumers.includes(service));
}

function toPlanEntry(planned: PlannedItem, node: NodeSpec): PlanEntry {
  const item = planned.item;
  const paths = item.type === 'leaf' ? [item.certificate.path, item.privateKey.path] : [item.file.path];
  return {
    name: item.name,
    action: planned.action,
    paths,
    reasons: planned.reasons,
    restarts: planned.action === 'unchanged' ? [] : restartsFor(planned, node),
    ...(planned.current !== undefined ? { current: planned.current } : {}),
  };
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

class NodeRollout {
  constructor(
    private readonly inventory: Inventory,
    private readonly node: NodeSpec,
    private readonly material: ClusterMaterial,
    private readonly state: StateDir,
    private readonly logger: Logger,
    private readonly now: () => Date,
    private readonly capToCa: boolean,
  ) {}

  async run(dryRun: boolean): Promise<NodeReport> {
    const connection = new AgentConnection(this.inventory.name, this.node, this.material.controller);
    try {
      const items = itemsForNode(this.inventory, this.node);
      const held = await connection.getState({ files: queriesFor(items) });
      if (held.node_name !== this.node.name) {
        throw new Error(`agent at ${this.node.agent.endpoint} reports node name "${held.node_name}", expected "${this.node.name}"`);
      }
      const planned = planNode(items, held.files, this.material, this.now());
      const plan = planned.map((entry) => toPlanEntry(entry, this.node));
      const pending = planned.filter((entry) => entry.action !== 'unchanged');
      const pendingRestarts = held.pending_restarts;
      const nothingToDo = pending.length === 0 && pendingRestarts.length === 0;
      if (dryRun || nothingToDo) {
        const status: NodeStatus = nothingToDo ? 'unchanged' : 'planned';
        return { name: this.node.name, status, changedFiles: [], restartedServices: [], plan, pendingRestarts, services: [] };
      }
      const issued = await this.issue(connection, pending);
      const restarts = servicesForNode(this.node).filter((service) => plan.some((entry) => entry.restarts.includes(service)));
      const response = await connection.apply({
        change_id: `${this.now().toISOString().replace(/[^0-9]/g, '').slice(0, 14)}-${crypto.randomBytes(4).toString('hex')}`,
        files: pending.flatMap((entry) => this.fileChanges(entry, issued)),
        restart_services: restarts,
      });
      await this.state.appendLedger([...issued.values()].map((entry) => entry.ledger));
      const unhealthy = response.services.filter((service) => !service.healthy);
      const restarted = response.services.filter((service) => service.restarted);
      let status: NodeStatus = response.changed_paths.length > 0 || restarted.length > 0 ? 'changed' : 'unchanged';
      if (unhealthy.length > 0) status = 'failed';
      const report: NodeReport = {
        name: this.node.name,
        status,
        changedFiles: response.changed_paths,
        restartedServices: restarted.map((service) => service.name),
        plan,
        pendingRestarts,
        services: response.services.map((service) => ({ name: service.name, healthy: service.healthy, check: service.check, output: service.output })),
      };
      if (unhealthy.length === 0) return report;
      const error = unhealthy.map((service) => `${service.name} unhealthy after restart (${service.check}): ${service.output}`).join('; ');
      return { ...report, error };
    } finally {
      connection.close();
    }
  }

  /** Asks the agent for keys and CSRs for every certificate to issue, then signs them. */
  private async issue(connection: AgentConnection, pending: readonly PlannedItem[]): Promise<Map<string, Issued>> {
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
    const issued = new Map<string, Issued>();
    if (requests.size === 0) return issued;
    const response = await connection.prepareKeys({ keys: [...requests.values()] });
    const csrs = new Map(response.keys.map((key) => [key.key_id, key.csr_pem]));
    for (const { item } of pending) {
      const request = requests.get(item.name);
      if (item.type === 'static' || request === undefined) continue;
      const csrPem = csrs.get(request.key_id ?? '');
      if (csrPem === undefined) throw new Error(`agent returned no CSR for ${item.name}`);
      const csr = parseCsr(csrPem);
      checkCsr(csr, request);
      const ca = this.material.ca(item.parent);
      const now = this.now();
      const usedSerials = this.material.usedSerials(item.parent);
      // The names come from the catalogue; checkCsr has already made sure the CSR asked for exactly these.
      const certificatePem = signLeaf(
        ca,
        leafProfile(item, this.node.name),
        csr.publicKey,
        this.inventory.pki.certValidityMs,
        now,
        { capToCa: this.capToCa, usedSerials },
      );
      const info = inspectCertificate(certificatePem);
      usedSerials.add(info.serialNumber);
      this.logger.info('issued certificate', { node: this.node.name, cert: item.name, serial: info.serialNumber, notAfter: info.notAfter.toISOString() });
      issued.set(item.name, {
        certificatePem,
        keyId: request.key_id ?? '',
        ledger: { node: this.node.name, name: item.name, ca: item.parent, serialNumber: info.serialNumber, notAfter: info.notAfter.toISOString(), issuedAt: now.toISOString() },
      });
    }
    return issued;
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

export async function distribute(inventory: Inventory, stateDir: string, logger: Logger, options: DistributeOptions = {}): Promise<DistributeReport> {
  const state = new StateDir(stateDir);
  // Checked before locking, so that a mistyped --state-dir is reported without creating it.
  await state.requireCluster(inventory.name);
  const unlock = await state.lock();
  try {
    const material = await ClusterMaterial.load(state, inventory);
    const now = options.now ?? (() => new Date());
    const dryRun = options.dryRun === true;
    const nodes = await mapConcurrent(inventory.nodes, options.concurrency ?? DEFAULT_CONCURRENCY, async (node) => {
      options.onProgress?.({ node: node.name, phase: 'start' });
      let report: NodeReport;
      try {
        report = await new NodeRollout(inventory, node, material, state, logger, now, options.capToCa === true).run(dryRun);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        logger.error('node failed', { node: node.name, error: message });
        report = { name: node.name, status: 'failed', changedFiles: [], restartedServices: [], plan: [], pendingRestarts: [], services: [], error: message };
      }
      options.onProgress?.({ node: node.name, phase: 'done', status: report.status });
      return report;
    });
    return { cluster: inventory.name, dryRun, nodes };
  } finally {
    await unlock();
  }
}
