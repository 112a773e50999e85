/**
 * `controller init`: creates the cluster-plane CAs of the inventory's layout, the service-account
 * key pair, the management CA and the controller's own identity.
 *
 * Reads: the inventory and whatever the state directory already holds.
 * Writes: the state directory only. Each CA and key pair is reported on stdout; the log repeats it at debug level. Existing material is checked and reused; with `force` it is
 * moved aside to `replaced-<time>/` before new material is made, never deleted.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import { caEntry, casForPki, type CaName } from '@kubetrust/shared/dist/catalogue';
import { readFileIfExists } from '@kubetrust/shared/dist/files';
import { MANAGEMENT_KEY_ALGORITHM, controllerIdentity } from '@kubetrust/shared/dist/identity';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { generateKeyPair, inspectCertificate, privateKeyToPem, publicKeyToPem, splitPem, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';
import { selfSignedCa, signLeaf } from './authority';
import { StateDir, StateError } from './state-dir';

export { MANAGEMENT_KEY_ALGORITHM };
export const CONTROLLER_COMMON_NAME = 'kubetrust-controller';

export interface InitOptions {
  readonly force?: boolean;
  readonly now?: Date;
}

export type MaterialStatus = 'created' | 'reused';

export interface InitResult {
  readonly stateDir: string;
  readonly items: readonly { readonly name: string; readonly status: MaterialStatus; readonly path: string; readonly notAfter?: string }[];
}

async function exists(file: string): Promise<boolean> {
  return (await readFileIfExists(file)) !== undefined;
}

/** Checks an existing CA before it is reused: a matching key, CA:TRUE, the expected name, not expired. */
async function checkExistingCa(state: StateDir, name: CaName | 'management', commonName: string, now: Date): Promise<string> {
  const files = state.caFiles(name);
  const material = await state.loadKeyMaterial(files, `${name} CA`);
  const info = inspectCertificate(material.certificatePem);
  if (!info.isCA) throw new StateError(`${name} CA: ${files.certificate} is not a CA certificate; restore the CA from a backup or run init with --force`);
  if (info.subject.commonName !== commonName) {
    throw new StateError(`${name} CA: ${files.certificate} has CN "${info.subject.commonName}", expected "${commonName}"; point --state-dir at this cluster's state or run init with --force`);
  }
  if (info.notAfter.getTime() <= now.getTime()) {
    throw new StateError(`${name} CA: ${files.certificate} expired at ${info.notAfter.toISOString()}; run init with --force to create a new CA (every node then needs a distribute)`);
  }
  return info.notAfter.toISOString();
}

async function ensureCa(
  state: StateDir,
  name: CaName | 'management',
  commonName: string,
  algorithm: KeyAlgorithm,
  validityMs: number,
  now: Date,
  logger: Logger,
): Promise<InitResult['items'][number]> {
  const files = state.caFiles(name);
  if ((await exists(files.certificate)) || (await exists(files.privateKey))) {
    const notAfter = await checkExistingCa(state, name, commonName, now);
    logger.debug('using existing CA', { ca: name, path: files.certificate });
    return { name: `${name} CA`, status: 'reused', path: files.certificate, notAfter };
  }
  const keyPair = await generateKeyPair(algorithm);
  const certificatePem = selfSignedCa(commonName, keyPair, validityMs, now);
  await state.writeKeyMaterial(files, certificatePem, privateKeyToPem(keyPair.privateKey));
  const notAfter = inspectCertificate(certificatePem).notAfter.toISOString();
  logger.debug('created CA', { ca: name, path: files.certificate, notAfter });
  return { name: `${name} CA`, status: 'created', path: files.certificate, notAfter };
}

async function ensureServiceAccount(state: StateDir, algorithm: KeyAlgorithm, logger: Logger): Promise<InitResult['items'][number]> {
  const files = state.serviceAccountFiles();
  if ((await exists(files.privateKey)) || (await exists(files.publicKey))) {
    const pair = await state.readServiceAccount();
    const derived = publicKeyToPem(crypto.createPublicKey(pair.privateKeyPem));
    // During a service-account rotation sa.pub contains more than one key, and the signing key must be one of them.
    if (!splitPem(pair.publicKeyPem, 'PUBLIC KEY').some((key) => key.trim() === derived.trim())) {
      throw new StateError(`service-account key pair: ${files.publicKey} does not match ${files.privateKey}; restore the matching pair from a backup`);
    }
    logger.debug('using existing service-account key pair', { path: files.privateKey });
    return { name: 'service-account key pair', status: 'reused', path: files.privateKey };
  }
  const keyPair = await generateKeyPair(algorithm);
  await state.writeServiceAccount(privateKeyToPem(keyPair.privateKey), publicKeyToPem(keyPair.publicKey));
  logger.debug('created service-account key pair', { path: files.privateKey });
  return { name: 'service-account key pair', status: 'created', path: files.privateKey };
}

async function ensureControllerIdentity(state: StateDir, inventory: Inventory, now: Date, logger: Logger): Promise<InitResult['items'][number]> {
  const files = state.controllerFiles();
  const identity = controllerIdentity(inventory.name);
  if ((await exists(files.certificate)) || (await exists(files.privateKey))) {
    const material = await state.loadKeyMaterial(files, 'controller identity');
    const info = inspectCertificate(material.certificatePem);
    const management = await state.loadKeyMaterial(state.caFiles('management'), 'management CA');
    const signedByManagement = new crypto.X509Certificate(material.certificatePem).verify(new crypto.X509Certificate(management.certificatePem).publicKey);
    if (info.uris.includes(identity) && signedByManagement && info.notAfter.getTime() > now.getTime()) {
      logger.debug('using existing controller identity', { path: files.certificate });
      return { name: 'controller identity', status: 'reused', path: files.certificate, notAfter: info.notAfter.toISOString() };
    }
    // The identity is only the controller's own credential; a stale one is replaced, not kept.
    logger.warn('replacing controller identity', { path: files.certificate, reason: 'not valid for this management CA or cluster' });
  }
  const management = await state.loadKeyMaterial(state.caFiles('management'), 'management CA');
  const keyPair = await generateKeyPair(MANAGEMENT_KEY_ALGORITHM);
  const certificatePem = signLeaf(
    management,
    { commonName: CONTROLLER_COMMON_NAME, extKeyUsage: ['clientAuth'], uris: [identity] },
    keyPair.publicKey,
    inventory.pki.certValidityMs,
    now,
  );
  await state.writeKeyMaterial(files, certificatePem, privateKeyToPem(keyPair.privateKey));
  logger.debug('created controller identity', { path: files.certificate, identity });
  return { name: 'controller identity', status: 'created', path: files.certificate, notAfter: inspectCertificate(certificatePem).notAfter.toISOString() };
}

/** Moves everything init manages into `replaced-<time>/` so that --force loses nothing. */
async function moveAside(state: StateDir, now: Date): Promise<string> {
  const target = state.path(`replaced-${now.toISOString().replace(/[:.]/g, '-')}`);
  await fs.mkdir(target, { recursive: true, mode: 0o700 });
  // `kubernetes/` holds the controller's API kubeconfig, which the replaced cluster CA signed.
  for (const part of ['pki', 'management', 'kubernetes', 'cluster.json', 'ledger.json']) {
    await fs.rename(state.path(part), `${target}/${part}`).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }
  return target;
}

export function managementCaName(cluster: string): string {
  return `kubetrust-management-ca-${cluster}`;
}

export async function initState(inventory: Inventory, stateDir: string, logger: Logger, options: InitOptions = {}): Promise<InitResult> {
  const now = options.now ?? new Date();
  const state = new StateDir(stateDir);
  const unlock = await state.lock();
  try {
    const record = await state.readCluster();
    if (record !== undefined && record.name !== inventory.name && options.force !== true) {
      throw new StateError(`state directory ${stateDir} belongs to cluster "${record.name}", not "${inventory.name}"; use another --state-dir or run init with --force`);
    }
    if (options.force === true) {
      const aside = await moveAside(state, now);
      logger.warn('moved existing state aside', { path: aside });
    }
    const items: InitResult['items'][number][] = [];
    for (const name of casForPki(inventory.pki)) {
      const entry = caEntry(name);
      items.push(await ensureCa(state, name, entry.commonName, inventory.pki.keyAlgorithm, inventory.pki.caValidityMs, now, logger));
    }
    items.push(await ensureServiceAccount(state, inventory.pki.keyAlgorithm, logger));
    items.push(await ensureCa(state, 'management', managementCaName(inventory.name), MANAGEMENT_KEY_ALGORITHM, inventory.pki.caValidityMs, now, logger));
    items.push(await ensureControllerIdentity(state, inventory, now, logger));
    if (record === undefined || options.force === true) await state.writeCluster({ name: inventory.name, createdAt: now.toISOString() });
    return { stateDir, items };
  } finally {
    await unlock();
  }
}
