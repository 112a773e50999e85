/**
 * `controller sa rotate`: rotates the service-account key pair with overlap, so that tokens signed
 * before the switch keep working until the old key is retired.
 *
 *   prepare  a new pair is generated; every master's verification set (sa.pub) holds old and new
 *   switch   every master signs with the new key (sa.key); sa.pub still holds both
 *   finish   after the grace period, sa.pub holds the new key only
 *   rollback from switch back to prepare (old signing key, both keys verified), and from prepare
 *            back to the old key alone
 *
 * Each phase writes the state directory first, then pushes sa.key and sa.pub to the masters with
 * the same rollout as distribute. A phase starts only when every master holds the files of the
 * phase before it, so no master ever signs with a key that another master cannot verify.
 *
 * Reads and writes: `pki/sa.key`, `pki/sa.pub`, `pki/sa-rotation.json`, `pki/sa-next.key`,
 * `pki/sa-previous.key` in the state directory. RPCs: GetState, then as distribute.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { readFileIfExists, readJsonIfExists, sha256Hex, writeFileAtomic, writeJsonOrRemove } from '@kubetrust/shared/dist/files';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { generateKeyPair, privateKeyToPem, publicKeyToPem, splitPem } from '@kubetrust/shared/dist/pki';
import { AgentConnection } from './agent-client';
import { distribute, type DistributeReport } from './distribute';
import { StateDir } from './state-dir';

export const SA_PHASES = ['prepare', 'switch', 'finish', 'rollback'] as const;
export type SaPhase = (typeof SA_PHASES)[number];

/** The rotation in progress, as kept in `pki/sa-rotation.json`. */
export interface SaRotationState {
  readonly phase: 'prepared' | 'switched';
  /** When signing switched to the new key, ISO 8601; set in `switched`. */
  readonly switchedAt?: string;
}

export const DEFAULT_SA_GRACE_MS = 24 * 60 * 60 * 1000;

export class SaRotationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SaRotationError';
  }
}

export interface SaRotationResult {
  readonly phase: SaPhase;
  /** The rotation state after the phase; undefined when no rotation is in progress. */
  readonly state: SaRotationState | undefined;
  readonly report: DistributeReport | undefined;
}

function publicOf(privateKeyPem: string): string {
  return publicKeyToPem(crypto.createPublicKey(privateKeyPem));
}

class SaFiles {
  constructor(private readonly state: StateDir) {}

  private get dir(): string {
    return path.dirname(this.state.serviceAccountFiles().privateKey);
  }

  get rotationFile(): string {
    return path.join(this.dir, 'sa-rotation.json');
  }

  get nextKeyFile(): string {
    return path.join(this.dir, 'sa-next.key');
  }

  get previousKeyFile(): string {
    return path.join(this.dir, 'sa-previous.key');
  }

  rotation(): Promise<SaRotationState | undefined> {
    return readJsonIfExists<SaRotationState>(this.rotationFile);
  }

  setRotation(value: SaRotationState | undefined): Promise<void> {
    return writeJsonOrRemove(this.rotationFile, value);
  }

  async read(file: string, what: string): Promise<string> {
    const data = await readFileIfExists(file);
    if (data === undefined) throw new SaRotationError(`${what}: ${file} is missing; restore it from a backup of the state directory`);
    return data.toString('utf8');
  }
}

/** Checks that every master has the given sa.key and sa.pub contents, and throws naming the first that does not. */
async function requireMastersHold(inventory: Inventory, state: StateDir, expected: { key: string; pub: string }, before: string): Promise<void> {
  const management = await state.loadKeyMaterial(state.caFiles('management'), 'management CA');
  const controller = await state.loadKeyMaterial(state.controllerFiles(), 'controller identity');
  const credentials = { managementCaPem: management.certificatePem, certificatePem: controller.certificatePem, privateKeyPem: controller.privateKeyPem };
  for (const node of inventory.nodes.filter((candidate) => candidate.roles.includes('master'))) {
    const items = itemsForNode(inventory, node).filter((item) => item.type === 'static' && 'keyPair' in item.source && 'part' in item.source);
    const connection = new AgentConnection(inventory.name, node, credentials, { busyRetryDelaysMs: [] });
    try {
      const held = await connection.getState({
        files: items.map((item) => ({ path: item.type === 'static' ? item.file.path : '', kind: item.type === 'static' && 'keyPair' in item.source && item.source.part === 'privateKey' ? 'FILE_KIND_PRIVATE_KEY' : 'FILE_KIND_PUBLIC_KEY' })),
      });
      for (const item of items) {
        if (item.type !== 'static' || !('keyPair' in item.source)) continue;
        const file = held.files.find((candidate) => candidate.path === item.file.path);
        const want = item.source.part === 'privateKey' ? expected.key : expected.pub;
        if (file === undefined || !file.exists || file.sha256 !== sha256Hex(want)) {
          throw new SaRotationError(`master ${node.name} does not hold the ${item.name} of the current phase yet; run \`controller distribute --roles master --only sa.key,sa.pub\` until every master is changed, then ${before}`);
        }
      }
    } catch (error) {
      if (error instanceof SaRotationError) throw error;
      throw new SaRotationError(`cannot read the service-account files of master ${node.name}: ${error instanceof Error ? error.message : String(error)}; start its agent, then ${before}`);
    } finally {
      connection.close();
    }
  }
}

/** Runs one phase: checks the masters, writes the state directory, then pushes to the masters. */
export async function rotateServiceAccount(inventory: Inventory, stateDir: string, logger: Logger, phase: SaPhase, options: { graceMs?: number; now?: Date; dryRun?: boolean } = {}): Promise<SaRotationResult> {
  const state = new StateDir(path.resolve(stateDir));
  await state.requireCluster(inventory.name);
  const files = new SaFiles(state);
  const current = await state.readServiceAccount();
  const rotation = await files.rotation();
  const now = options.now ?? new Date();
  const verifySet = (...keys: string[]): string => keys.map((key) => key.trim()).join('\n') + '\n';
  let next: { key: string; pub: string; rotation: SaRotationState | undefined; cleanup: () => Promise<void> };

  switch (phase) {
    case 'prepare': {
      if (rotation !== undefined) throw new SaRotationError(`a rotation is already in phase ${rotation.phase}; run --phase ${rotation.phase === 'prepared' ? 'switch' : 'finish'} or --phase rollback`);
      await requireMastersHold(inventory, state, { key: current.privateKeyPem, pub: current.publicKeyPem }, 'run --phase prepare again');
      const pair = await generateKeyPair(inventory.pki.keyAlgorithm);
      const nextKey = privateKeyToPem(pair.privateKey);
      if (!options.dryRun) await writeFileAtomic(files.nextKeyFile, nextKey, { mode: 0o600 });
      next = { key: current.privateKeyPem, pub: verifySet(publicOf(current.privateKeyPem), publicOf(nextKey)), rotation: { phase: 'prepared' }, cleanup: async () => undefined };
      break;
    }
    case 'switch': {
      if (rotation?.phase !== 'prepared') throw new SaRotationError(`switch needs a prepared rotation, and the rotation is ${rotation === undefined ? 'not started' : `in phase ${rotation.phase}`}; run --phase prepare first`);
      await requireMastersHold(inventory, state, { key: current.privateKeyPem, pub: current.publicKeyPem }, 'run --phase switch again');
      const nextKey = await files.read(files.nextKeyFile, 'the prepared service-account key');
      if (!options.dryRun) await writeFileAtomic(files.previousKeyFile, current.privateKeyPem, { mode: 0o600 });
      next = { key: nextKey, pub: current.publicKeyPem, rotation: { phase: 'switched', switchedAt: now.toISOString() }, cleanup: () => fs.rm(files.nextKeyFile, { force: true }) };
      break;
    }
    case 'finish': {
      if (rotation?.phase !== 'switched') throw new SaRotationError(`finish needs a switched rotation, and the rotation is ${rotation === undefined ? 'not started' : `in phase ${rotation.phase}`}; run --phase switch first`);
      const grace = options.graceMs ?? DEFAULT_SA_GRACE_MS;
      const waited = now.getTime() - Date.parse(rotation.switchedAt ?? '');
      if (!(waited >= grace)) {
        const left = Math.ceil((grace - waited) / 60_000);
        throw new SaRotationError(`the grace period has ${left} minute(s) left: tokens signed with the old key before ${rotation.switchedAt} may still be in use; run --phase finish after it, or pass a shorter --grace`);
      }
      await requireMastersHold(inventory, state, { key: current.privateKeyPem, pub: current.publicKeyPem }, 'run --phase finish again');
      next = { key: current.privateKeyPem, pub: verifySet(publicOf(current.privateKeyPem)), rotation: undefined, cleanup: () => fs.rm(files.previousKeyFile, { force: true }) };
      break;
    }
    case 'rollback': {
      if (rotation === undefined) throw new SaRotationError('no rotation is in progress; there is nothing to roll back');
      if (rotation.phase === 'switched') {
        // One step back: sign with the old key again and keep verifying both, because tokens
        // signed with the new key exist. A second rollback then drops the new key.
        const previousKey = await files.read(files.previousKeyFile, 'the previous service-account key');
        if (!options.dryRun) await writeFileAtomic(files.nextKeyFile, current.privateKeyPem, { mode: 0o600 });
        next = { key: previousKey, pub: current.publicKeyPem, rotation: { phase: 'prepared' }, cleanup: () => fs.rm(files.previousKeyFile, { force: true }) };
      } else {
        next = { key: current.privateKeyPem, pub: verifySet(publicOf(current.privateKeyPem)), rotation: undefined, cleanup: () => fs.rm(files.nextKeyFile, { force: true }) };
      }
      break;
    }
  }

  if (options.dryRun) {
    logger.info('service-account rotation dry run', { phase });
    return { phase, state: next.rotation, report: await distribute(inventory, stateDir, logger, { dryRun: true, scope: { roles: ['master'], only: ['sa.key', 'sa.pub'] } }) };
  }
  // The files that the masters must hold first, then the record of the phase.
  await state.writeServiceAccount(next.key, next.pub);
  await files.setRotation(next.rotation);
  await next.cleanup();
  logger.info('service-account rotation phase written', { phase, state: next.rotation?.phase ?? 'none' });
  const report = await distribute(inventory, stateDir, logger, { scope: { roles: ['master'], only: ['sa.key', 'sa.pub'] } });
  return { phase, state: next.rotation, report };
}

/** Returns the rotation in progress, or undefined. */
export async function serviceAccountRotation(stateDir: string): Promise<SaRotationState | undefined> {
  return new SaFiles(new StateDir(path.resolve(stateDir))).rotation();
}

/** Number of public keys in a verification set. */
export function verificationKeys(pem: string): string[] {
  return splitPem(pem, 'PUBLIC KEY');
}
