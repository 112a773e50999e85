/**
 * `controller ca rotate --ca NAME --phase PHASE`: replaces a cluster-plane CA without downtime,
 * phase by phase, with the same rollout as distribute (etcd one member at a time, masters one at
 * a time, workers in batches, health gates and rollback per node).
 *
 *   prepare         a new CA is generated, and every trust file and kubeconfig contains both
 *   update-clients  client certificates and the controller-manager's signer move to the new CA
 *   update-servers  serving certificates move to the new CA
 *   finish          trust files hold the new CA alone; then it replaces the old CA in the state
 *                   directory and the old key is destroyed
 *   rollback        from any phase before finish: every certificate back to the old CA while both
 *                   are trusted, then trust files hold the old CA alone and the new CA is deleted
 *
 * The record of the phase is written before anything is pushed, so that a phase interrupted by a
 * crash, a failed node or an unreachable agent is resumed by running the same phase again. A phase
 * starts only when every node holds the files of the phase before it (ca-rotation-state.ts says
 * which files those are), so no certificate is ever in use that some node does not trust.
 *
 * Reads and writes: `pki/ca-rotation.json`, `pki/<ca>-next.{crt,key}`, `pki/<ca>.{crt,key}` and
 * `pki/ca-rotation.lock` in the state directory; as distribute otherwise. RPCs: GetState, then as
 * distribute.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { CA_NAMES, CATALOGUE, casForPki, itemsForNode, signingCa, type CaName, type NodeItem } from '@kubetrust/shared/dist/catalogue';
import { LockedError, acquirePidLock } from '@kubetrust/shared/dist/files';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { generateKeyPair, inspectCertificate, privateKeyToPem } from '@kubetrust/shared/dist/pki';
import { AgentConnections } from './agent-client';
import { selfSignedCa } from './authority';
import { CaRotationFiles, sideOf, type CaRotationRecord, type CaRotationState, type CertificateSide } from './ca-rotation-state';
import { ClusterMaterial, DEFAULT_MAX_CLOCK_SKEW_MS, NodeRollout, distribute, type DistributeOptions, type DistributeReport } from './distribute';
import { StateDir } from './state-dir';

export const CA_PHASES = ['prepare', 'update-clients', 'update-servers', 'finish', 'rollback'] as const;
export type CaPhase = (typeof CA_PHASES)[number];

/** Error for a phase that cannot run now or a CA that cannot rotate. The CLI exits with the invalid-input code. */
export class CaRotationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CaRotationError';
  }
}

/** Node that lacks some files of a rotation state, with the items it lacks and why. */
export interface LaggingNode {
  readonly node: string;
  readonly items: readonly { readonly name: string; readonly reasons: readonly string[] }[];
  /** Set when the node could not be read at all. */
  readonly error?: string;
}

/** One push of a phase: the state it brought the nodes to, the rollout, and the nodes that still lag. */
export interface CaRotationStep {
  readonly state: CaRotationState;
  readonly report: DistributeReport;
  readonly lagging: readonly LaggingNode[];
}

export interface CaRotationResult {
  readonly ca: CaName;
  readonly phase: CaPhase;
  /** The record after the phase; undefined once the rotation has finished or is rolled back. */
  readonly record: CaRotationRecord | undefined;
  readonly steps: readonly CaRotationStep[];
  /** True when every node has the files of the phase. */
  readonly complete: boolean;
  /** The phase to run next, or undefined when nothing is left to do. */
  readonly next: CaPhase | undefined;
  /** For a dry run: the items each node would change, in rollout order. */
  readonly dryRun?: readonly { readonly node: string; readonly items: readonly string[] }[];
  /** For a dry run of a phase that cannot start in the current state: why not. */
  readonly notNow?: string;
  /** For a dry run: the nodes that lack the files of the current state, or whose agent did not respond. */
  readonly lagging?: readonly LaggingNode[];
}

export interface CaRotationOptions {
  readonly dryRun?: boolean;
  readonly now?: () => Date;
  /** Passed to every rollout of the phase: progress, parallelism, clock skew. */
  readonly rollout?: Pick<DistributeOptions, 'onProgress' | 'maxParallel' | 'maxClockSkewMs' | 'concurrency' | 'capToCa'>;
}

const PHASE_OF_STATE: Record<CaRotationState, CaPhase> = {
  prepared: 'prepare',
  'clients-updated': 'update-clients',
  'servers-updated': 'update-servers',
  finishing: 'finish',
  'rolling-back': 'rollback',
  'rolled-back': 'rollback',
};

const NEXT_PHASE: Partial<Record<CaRotationState, CaPhase>> = { prepared: 'update-clients', 'clients-updated': 'update-servers', 'servers-updated': 'finish' };

/** Checks that `name` is a CA with its own key under the inventory's layout. */
export function rotatableCa(inventory: Inventory, name: string): CaName {
  if (!(CA_NAMES as readonly string[]).includes(name)) throw new CaRotationError(`--ca: "${name}" is not a cluster CA; use one of: ${casForPki(inventory.pki).join(', ')}`);
  const ca = name as CaName;
  const signer = signingCa(ca, inventory.pki);
  if (signer !== ca) {
    throw new CaRotationError(`--ca: ${ca} shares the key of ${signer} in this cluster's layout (pki.layout ${inventory.pki.layout}, pki.etcdCA ${inventory.pki.etcdCA}); rotate --ca ${signer}, which covers the ${ca} files too`);
  }
  return ca;
}

/** True when the item is a file of the CA: its trust file, key or signer, or a certificate it signs. */
function belongsTo(item: NodeItem, ca: CaName): boolean {
  return item.type === 'static' ? 'ca' in item.source && item.source.ca === ca : item.parent === ca;
}

/** Names of every catalogue item in the cluster that the CA's rotation touches. */
export function caItemNames(inventory: Inventory, ca: CaName): string[] {
  return [...new Set(inventory.nodes.flatMap((node) => itemsForNode(inventory, node).filter((item) => belongsTo(item, ca)).map((item) => item.name)))];
}

/** Lists the items of a node that a phase rewrites, for the dry run. */
function itemsChangedBy(phase: CaPhase, items: readonly NodeItem[]): string[] {
  const side = (item: NodeItem): CertificateSide | 'trust' => {
    if (item.type === 'static') return 'ca' in item.source && item.source.part === 'certificate' ? 'trust' : 'client';
    return item.type === 'leaf' ? sideOf(item.extKeyUsage) : 'client';
  };
  const touched: Record<CaPhase, (item: NodeItem) => boolean> = {
    // A kubeconfig embeds the trust bundle, so it changes with every trust file.
    prepare: (item) => side(item) === 'trust' || item.type === 'kubeconfig',
    'update-clients': (item) => side(item) === 'client',
    'update-servers': (item) => side(item) === 'server',
    finish: (item) => side(item) === 'trust' || item.type === 'kubeconfig',
    rollback: () => true,
  };
  return items.filter(touched[phase]).map((item) => item.name);
}

/**
 * Plans the CA's items on every node against the files of the state on disk, without changing
 * anything, and returns the nodes that do not hold them yet.
 */
export async function laggingNodes(inventory: Inventory, stateDir: string, logger: Logger, ca: CaName, options: CaRotationOptions = {}): Promise<LaggingNode[]> {
  const state = new StateDir(path.resolve(stateDir));
  const material = await ClusterMaterial.load(state, inventory);
  const only = new Set(caItemNames(inventory, ca));
  const now = options.now ?? (() => new Date());
  const connections = new AgentConnections(inventory.name, material.controller);
  try {
    const nodes = await Promise.all(
      inventory.nodes.map(async (node): Promise<LaggingNode | undefined> => {
        try {
          const rollout = new NodeRollout(inventory, node, material, state, logger, now, false, options.rollout?.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS, connections);
          const plan = await rollout.plan(only);
          const items = plan.plan.filter((entry) => entry.action !== 'unchanged').map((entry) => ({ name: entry.name, reasons: entry.reasons }));
          return items.length === 0 ? undefined : { node: node.name, items };
        } catch (error) {
          return { node: node.name, items: [], error: error instanceof Error ? error.message : String(error) };
        }
      }),
    );
    return nodes.filter((entry): entry is LaggingNode => entry !== undefined);
  } finally {
    connections.closeAll();
  }
}

/** Formats the lagging nodes, one entry each, for error messages and status output. */
export function describeLagging(lagging: readonly LaggingNode[]): string {
  return lagging.map((entry) => (entry.error !== undefined ? `${entry.node} (${entry.error})` : `${entry.node} (${entry.items.map((item) => `${item.name}: ${item.reasons[0] ?? 'differs'}`).join('; ')})`)).join(', ');
}

async function lockRotation(files: CaRotationFiles): Promise<() => Promise<void>> {
  try {
    return await acquirePidLock(path.join(files.dir, 'ca-rotation.lock'));
  } catch (error) {
    if (error instanceof LockedError) throw new CaRotationError(`another \`controller ca rotate\` (process ${error.holder}) is running on this state directory; wait for it to end`);
    throw error;
  }
}

/**
 * Overwrites a key file in place before it is replaced, so that the old key does not stay readable
 * in the old file's blocks. A copy-on-write file system or an SSD may still keep a copy; backups of
 * the state directory keep theirs.
 */
async function shred(file: string): Promise<void> {
  const handle = await fs.open(file, 'r+').catch(() => undefined);
  if (handle === undefined) return;
  try {
    const { size } = await handle.stat();
    await handle.write(Buffer.alloc(size), 0, size, 0);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

class Rotation {
  readonly steps: CaRotationStep[] = [];

  constructor(
    private readonly inventory: Inventory,
    private readonly stateDir: string,
    private readonly logger: Logger,
    private readonly ca: CaName,
    private readonly files: CaRotationFiles,
    private readonly options: CaRotationOptions,
  ) {}

  private now(): Date {
    return (this.options.now ?? (() => new Date()))();
  }

  lagging(): Promise<LaggingNode[]> {
    return laggingNodes(this.inventory, this.stateDir, this.logger, this.ca, this.options);
  }

  /** Refuses to leave `state` while a node does not hold its files. */
  async requireHeld(state: CaRotationState | undefined, phase: CaPhase): Promise<void> {
    const lagging = await this.lagging();
    if (lagging.length === 0) return;
    const before = state === undefined ? 'the current CA' : `phase ${PHASE_OF_STATE[state]}`;
    const resume = state === undefined ? 'run `controller distribute` until every node holds them' : `run --phase ${PHASE_OF_STATE[state]} again to resume it, or --phase rollback`;
    throw new CaRotationError(`${phase} needs every node to hold the ${this.ca} files of ${before}, and ${lagging.length} node(s) do not: ${describeLagging(lagging)}; ${resume}`);
  }

  async enter(record: CaRotationRecord, state: CaRotationState): Promise<CaRotationRecord> {
    const next = { ...record, state, updatedAt: this.now().toISOString() };
    await this.files.setRecord(next);
    this.logger.info('CA rotation state written', { ca: this.ca, state });
    return next;
  }

  /** Pushes the files of `state` with the rollout of distribute, then reads which nodes still lag. */
  async push(state: CaRotationState): Promise<CaRotationStep> {
    const report = await distribute(this.inventory, this.stateDir, this.logger, {
      ...this.options.rollout,
      ...(this.options.now !== undefined ? { now: this.options.now } : {}),
      scope: { only: caItemNames(this.inventory, this.ca) },
    });
    const lagging = await this.lagging();
    const step = { state, report, lagging };
    this.steps.push(step);
    this.logger.info('CA rotation phase pushed', { ca: this.ca, state, lagging: lagging.map((entry) => entry.node).join(',') });
    return step;
  }

  async createNext(record: CaRotationRecord | undefined): Promise<CaRotationRecord> {
    const state = new StateDir(this.stateDir);
    const current = await state.loadKeyMaterial(state.caFiles(this.ca), `${this.ca} CA`);
    const entry = CATALOGUE.find((candidate) => candidate.kind === 'ca' && candidate.name === this.ca);
    const commonName = entry?.kind === 'ca' ? entry.commonName : this.ca;
    const now = this.now();
    const pair = await generateKeyPair(this.inventory.pki.keyAlgorithm);
    // The same subject as the old CA, as `controller init` expects; the key identifiers tell verifiers which one signed a certificate.
    const certificatePem = selfSignedCa(commonName, pair, this.inventory.pki.caValidityMs, now);
    await state.writeKeyMaterial(this.files.nextFiles(this.ca), certificatePem, privateKeyToPem(pair.privateKey));
    const created: CaRotationRecord = {
      ca: this.ca,
      state: 'prepared',
      startedAt: record?.startedAt ?? now.toISOString(),
      updatedAt: now.toISOString(),
      oldSerial: inspectCertificate(current.certificatePem).serialNumber,
      newSerial: inspectCertificate(certificatePem).serialNumber,
    };
    await this.files.setRecord(created);
    this.logger.info('new CA generated', { ca: this.ca, serial: created.newSerial, notAfter: inspectCertificate(certificatePem).notAfter.toISOString() });
    return created;
  }

  /** Makes the new CA the CA of the state directory and destroys the old key. */
  async promote(record: CaRotationRecord): Promise<void> {
    const state = new StateDir(this.stateDir);
    const next = await state.loadKeyMaterial(this.files.nextFiles(this.ca), `new ${this.ca}`);
    await shred(state.caFiles(this.ca).privateKey);
    await state.writeKeyMaterial(state.caFiles(this.ca), next.certificatePem, next.privateKeyPem);
    await this.files.setRecord(undefined);
    await this.files.removeNext(this.ca);
    this.logger.info('CA rotation finished; old CA key destroyed', { ca: this.ca, oldSerial: record.oldSerial, newSerial: record.newSerial });
  }
}

function result(rotation: Rotation, ca: CaName, phase: CaPhase, record: CaRotationRecord | undefined): CaRotationResult {
  const last = rotation.steps.at(-1);
  const complete = last !== undefined && last.lagging.length === 0 && last.report.nodes.every((node) => node.status !== 'failed' && node.status !== 'rolled-back' && node.status !== 'skipped');
  let next: CaPhase | undefined;
  if (record !== undefined) next = complete ? NEXT_PHASE[record.state] : PHASE_OF_STATE[record.state];
  return { ca, phase, record, steps: rotation.steps, complete, next };
}

/** Returns why `phase` cannot run in the rotation state `current`, or undefined when it can. */
export function phaseProblem(ca: CaName, phase: CaPhase, current: CaRotationState | undefined): string | undefined {
  const needs: Record<CaPhase, readonly (CaRotationState | undefined)[]> = {
    prepare: [undefined, 'prepared'],
    'update-clients': ['prepared', 'clients-updated'],
    'update-servers': ['clients-updated', 'servers-updated'],
    finish: ['servers-updated', 'finishing'],
    rollback: ['prepared', 'clients-updated', 'servers-updated', 'rolling-back', 'rolled-back'],
  };
  if (needs[phase].includes(current)) return undefined;
  if (phase === 'rollback') {
    return current === 'finishing'
      ? `${ca} is finishing: trust files already contain the new CA alone, so the old one cannot come back; run --phase finish to complete it`
      : `no ${ca} rotation is in progress; there is nothing to roll back`;
  }
  const required = phase === 'prepare' ? 'no rotation in progress' : `state ${needs[phase][0] ?? ''}`;
  if (current === undefined) return `${phase} needs ${required}, and the ${ca} rotation is not started; run --phase prepare first`;
  const rollback = current !== 'finishing' && current !== 'rolling-back' && current !== 'rolled-back' ? ' or --phase rollback' : '';
  return `${phase} needs ${required}, and the ${ca} rotation is in state ${current}; run --phase ${NEXT_PHASE[current] ?? PHASE_OF_STATE[current]}${rollback}`;
}

/** Runs one phase of the rotation of `caName`, or resumes it when it was interrupted. */
export async function rotateCa(inventory: Inventory, stateDir: string, logger: Logger, caName: string, phase: CaPhase, options: CaRotationOptions = {}): Promise<CaRotationResult> {
  const ca = rotatableCa(inventory, caName);
  const state = new StateDir(path.resolve(stateDir));
  await state.requireCluster(inventory.name);
  const files = new CaRotationFiles(state);
  const unlock = await lockRotation(files);
  try {
    let record = await files.record();
    if (record !== undefined && record.ca !== ca) {
      throw new CaRotationError(`${record.ca} is rotating (state ${record.state}); finish or roll back that rotation before rotating ${ca}`);
    }
    const rotation = new Rotation(inventory, path.resolve(stateDir), logger, ca, files, options);
    const current = record?.state;
    const problem = phaseProblem(ca, phase, current);
    if (options.dryRun === true) return await dryRun(inventory, rotation, ca, phase, record, problem);
    if (problem !== undefined) throw new CaRotationError(problem);

    switch (phase) {
      case 'prepare':
        if (record === undefined) {
          await rotation.requireHeld(undefined, phase);
          record = await rotation.createNext(record);
        }
        await rotation.push('prepared');
        return result(rotation, ca, phase, record);
      case 'update-clients':
      case 'update-servers': {
        const [before, target] = phase === 'update-clients' ? (['prepared', 'clients-updated'] as const) : (['clients-updated', 'servers-updated'] as const);
        if (current === before) {
          await rotation.requireHeld(before, phase);
          record = await rotation.enter(record!, target);
        }
        await rotation.push(target);
        return result(rotation, ca, phase, record);
      }
      case 'finish': {
        if (current === 'servers-updated') {
          await rotation.requireHeld('servers-updated', phase);
          record = await rotation.enter(record!, 'finishing');
        }
        const step = await rotation.push('finishing');
        const finished = result(rotation, ca, phase, record);
        if (!finished.complete || step.lagging.length > 0) return finished;
        // Every agent confirmed it holds only files of the new CA: the old key has no use left.
        await rotation.promote(record!);
        return { ...finished, record: undefined, next: undefined };
      }
      case 'rollback': {
        if (record === undefined) throw new CaRotationError(`no ${ca} rotation is in progress; there is nothing to roll back`);
        if (current !== 'rolled-back') {
          if (current !== 'rolling-back') record = await rotation.enter(record, 'rolling-back');
          const back = await rotation.push('rolling-back');
          const partial = result(rotation, ca, phase, record);
          if (!partial.complete || back.lagging.length > 0) return partial;
          record = await rotation.enter(record, 'rolled-back');
        }
        await rotation.push('rolled-back');
        const done = result(rotation, ca, phase, record);
        if (!done.complete) return done;
        await files.setRecord(undefined);
        await files.removeNext(ca);
        logger.info('CA rotation rolled back; new CA deleted', { ca, newSerial: record.newSerial });
        return { ...done, record: undefined, next: undefined };
      }
    }
  } finally {
    await unlock();
  }
}

/** Reports what a phase would change on each node, in rollout order, and whether it could start now. */
async function dryRun(inventory: Inventory, rotation: Rotation, ca: CaName, phase: CaPhase, record: CaRotationRecord | undefined, problem: string | undefined): Promise<CaRotationResult> {
  const order = (node: NodeSpec): number => (node.roles.includes('etcd') ? 0 : node.roles.includes('master') ? 1 : 2);
  const nodes = [...inventory.nodes].sort((a, b) => order(a) - order(b));
  const changes = nodes
    .map((node) => ({ node: node.name, items: itemsChangedBy(phase, itemsForNode(inventory, node).filter((item) => belongsTo(item, ca))) }))
    .filter((entry) => entry.items.length > 0);
  const lagging = await rotation.lagging();
  return { ca, phase, record, steps: [], complete: lagging.length === 0, next: phase, dryRun: changes, lagging, ...(problem !== undefined ? { notNow: problem } : {}) };
}

/** Status of a CA rotation: the record and the nodes that lack the files of its state. */
export interface CaRotationStatus {
  readonly record: CaRotationRecord | undefined;
  readonly lagging: readonly LaggingNode[];
  /** The phase to run next: the current one again while nodes lag. */
  readonly next: CaPhase | undefined;
}

export async function caRotationStatus(inventory: Inventory, stateDir: string, logger: Logger, options: CaRotationOptions = {}): Promise<CaRotationStatus> {
  const state = new StateDir(path.resolve(stateDir));
  await state.requireCluster(inventory.name);
  const record = await new CaRotationFiles(state).record();
  if (record === undefined) return { record, lagging: [], next: undefined };
  const lagging = await laggingNodes(inventory, stateDir, logger, record.ca, options);
  return { record, lagging, next: lagging.length > 0 ? PHASE_OF_STATE[record.state] : NEXT_PHASE[record.state] ?? PHASE_OF_STATE[record.state] };
}
