/**
 * Enrolment of the agent on its node, so that the agent's management key never leaves the node.
 * `agent enroll-request` generates the key and prints a CSR, the controller signs it
 * (`controller enroll --csr`), and `agent enroll-install` checks the certificate and installs it.
 *
 * Files in the configuration directory (created with mode 0700):
 *   agent.key.pending   the key of a request that is not installed yet (0600)
 *   identity-<serial>-<random>/
 *                       agent.key (0600), agent.crt and management-ca.crt of one identity
 *   agent.yaml          the agent configuration (0600), which names the files of the identity in use
 *
 * Renaming the new agent.yaml over the old one is the one step that switches identities. After a
 * crash the agent therefore starts with the old identity or with the new one, never with a mix.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import { isIP } from 'node:net';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { commitStagedFile, readFileIfExists, stageFile, syncDirectory, writeFileAtomic } from '@kubetrust/shared/dist/files';
import { MANAGEMENT_KEY_ALGORITHM, agentIdentityNames, controllerIdentity, parseAgentIdentity } from '@kubetrust/shared/dist/identity';
import { isDnsLabel, isDnsName, isDnsSubdomain } from '@kubetrust/shared/dist/inventory/net';
import { createCsr, inspectCertificate, isSignedBy, keyAlgorithmOf, loadPrivateKey, publicKeySha256, generateKeyPair, privateKeyToPem, type CertificateInfo } from '@kubetrust/shared/dist/pki';
import { AgentConfigError, parseAgentConfig } from './config';

export const CONFIG_FILE = 'agent.yaml';
export const PENDING_KEY_FILE = 'agent.key.pending';
const IDENTITY_DIR_PREFIX = 'identity-';
const STAGING_DIR_PREFIX = '.identity-';

/** Invalid input to an enrolment command. The message names the option or file, the problem and the fix. */
export class EnrollError extends Error {
  constructor(field: string, problem: string, fix: string) {
    super(`${field}: ${problem}; ${fix}`);
    this.name = 'EnrollError';
  }
}

export interface EnrollRequestOptions {
  readonly configDir: string;
  readonly nodeName: string;
  readonly cluster: string;
  /** Host of the node's agent endpoint in the inventory: an IP address or a DNS name. */
  readonly host: string;
}

export interface EnrollRequest {
  readonly csrPem: string;
  readonly keyFile: string;
  /** False when an earlier request's pending key was reused. */
  readonly keyCreated: boolean;
}

function normalizedHost(host: string): string {
  const unbracketed = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (isIP(unbracketed) !== 0 || isDnsName(unbracketed)) return unbracketed;
  throw new EnrollError('--host', `"${host}" is neither an IP address nor a DNS name`, "pass the host of the node's agent endpoint in the inventory, without the port");
}

function readPendingKey(file: string, pem: Buffer): crypto.KeyObject {
  let key: crypto.KeyObject;
  try {
    key = loadPrivateKey(pem);
  } catch (error) {
    throw new EnrollError(file, `is not a private key (${(error as Error).message})`, 'remove it, run `agent enroll-request` again and have the new CSR signed');
  }
  const algorithm = keyAlgorithmOf(key);
  if (algorithm !== MANAGEMENT_KEY_ALGORITHM) {
    throw new EnrollError(file, `is a ${algorithm ?? 'unsupported'} key, but agent identities use ${MANAGEMENT_KEY_ALGORITHM}`, 'remove it, run `agent enroll-request` again and have the new CSR signed');
  }
  return key;
}

/** Returns the pending key, and creates it when there is none. Never replaces an existing file. */
async function pendingKey(file: string): Promise<{ privateKey: crypto.KeyObject; created: boolean }> {
  const existing = await readFileIfExists(file);
  if (existing !== undefined) return { privateKey: readPendingKey(file, existing), created: false };

  const keyPair = await generateKeyPair(MANAGEMENT_KEY_ALGORITHM);
  const temporary = await stageFile(file, privateKeyToPem(keyPair.privateKey), { mode: 0o600 });
  try {
    // link() fails when the target exists, unlike rename(), so a request that runs at the same
    // time keeps the key it created and this one uses that key too.
    await fs.link(temporary, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return { privateKey: readPendingKey(file, await fs.readFile(file)), created: false };
  } finally {
    await fs.rm(temporary, { force: true });
  }
  await syncDirectory(path.dirname(file));
  return { privateKey: keyPair.privateKey, created: true };
}

/**
 * Generates the agent's management key in the configuration directory, or reuses the pending key
 * of an earlier request, and returns a CSR for the agent identity of the node. The installed
 * identity, if any, stays untouched until `installEnrollment` replaces it.
 */
export async function createEnrollRequest(options: EnrollRequestOptions): Promise<EnrollRequest> {
  if (!isDnsSubdomain(options.nodeName)) {
    throw new EnrollError('--node', `"${options.nodeName}" is not a valid node name`, 'pass the node name from the inventory: lowercase letters, digits, "-" and "."');
  }
  if (!isDnsLabel(options.cluster)) {
    throw new EnrollError('--cluster', `"${options.cluster}" is not a valid cluster name`, "pass the inventory's metadata.name: lowercase letters, digits and \"-\"");
  }
  const host = normalizedHost(options.host);
  const configDir = path.resolve(options.configDir);
  await fs.mkdir(configDir, { recursive: true, mode: 0o700 });

  const keyFile = path.join(configDir, PENDING_KEY_FILE);
  const { privateKey, created } = await pendingKey(keyFile);
  const csrPem = createCsr(agentIdentityNames(options.cluster, options.nodeName, host), { privateKey, publicKey: crypto.createPublicKey(privateKey) });
  return { csrPem, keyFile, keyCreated: created };
}

export interface EnrollInstallOptions {
  readonly configDir: string;
  readonly certificateFile: string;
  readonly managementCaFile: string;
  readonly controllerIdentity: string;
  /** `host:port` or `[ipv6]:port` that the agent listens on. */
  readonly listen: string;
  readonly installRoot: string;
  readonly stateDir: string;
  readonly now?: Date;
}

export interface EnrollInstallResult {
  readonly configFile: string;
  readonly identityDir: string;
  readonly nodeName: string;
  readonly cluster: string;
  readonly notAfter: Date;
}

async function readInput(file: string, option: string, fix: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (error) {
    throw new EnrollError(option, `cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, fix);
  }
}

function inspect(pem: Buffer, option: string, fix: string): CertificateInfo {
  try {
    return inspectCertificate(pem);
  } catch (error) {
    throw new EnrollError(option, `is not a PEM certificate (${(error as Error).message})`, fix);
  }
}

/** Checks the signed certificate against the pending key and the management CA, and returns the identity it carries. */
function checkCertificate(options: EnrollInstallOptions, privateKey: crypto.KeyObject, certificatePem: Buffer, caPem: Buffer): { certificate: CertificateInfo; cluster: string; nodeName: string } {
  const signedFix = 'pass the agent.crt that `controller enroll --csr` wrote for the CSR of this node';
  const certificate = inspect(certificatePem, '--certificate', signedFix);
  const ca = inspect(caPem, '--management-ca', 'pass the management-ca.crt that `controller enroll --csr` wrote');
  if (certificate.isCA) throw new EnrollError('--certificate', 'is a CA certificate, not an agent certificate', signedFix);
  if (!ca.isCA) throw new EnrollError('--management-ca', `"${ca.subject.commonName}" is not a CA certificate`, 'pass the management-ca.crt that `controller enroll --csr` wrote');
  if (certificate.publicKeySha256 !== publicKeySha256(privateKey)) {
    throw new EnrollError('--certificate', `was not issued for the pending key in ${options.configDir}`, 'sign the CSR of the latest `agent enroll-request` on this node and pass that certificate');
  }
  if (!isSignedBy(certificate.pem, ca.pem)) {
    throw new EnrollError('--management-ca', `the certificate was not issued by "${ca.subject.commonName}"`, "pass the management CA of the controller that signed the certificate (its state directory's management/ca.crt)");
  }
  const now = options.now ?? new Date();
  if (now < certificate.notBefore || now > certificate.notAfter) {
    throw new EnrollError('--certificate', `is valid from ${certificate.notBefore.toISOString()} to ${certificate.notAfter.toISOString()}, not now (${now.toISOString()})`, "check the node's clock, or sign the CSR again");
  }
  if (!certificate.extKeyUsage.includes('serverAuth')) {
    throw new EnrollError('--certificate', 'has no serverAuth extended key usage, which the agent needs to serve TLS', signedFix);
  }
  const identities = certificate.uris.map(parseAgentIdentity).filter((identity) => identity !== undefined);
  const identity = identities[0];
  if (identities.length !== 1 || identity === undefined || identity.node !== certificate.subject.commonName) {
    throw new EnrollError('--certificate', `carries no agent identity URI for node "${certificate.subject.commonName}" (URIs: ${certificate.uris.join(', ') || 'none'})`, signedFix);
  }
  const expectedController = controllerIdentity(identity.cluster);
  if (options.controllerIdentity !== expectedController) {
    throw new EnrollError('--controller-identity', `"${options.controllerIdentity}" is not the controller of cluster "${identity.cluster}"`, `pass ${expectedController}`);
  }
  return { certificate, cluster: identity.cluster, nodeName: identity.node };
}

/** The configuration fields that an operator may have added to an existing agent.yaml and that a new enrolment keeps. */
interface ExistingSettings {
  readonly services?: unknown;
  readonly backupsKept?: unknown;
  /** The identity files the existing configuration names, to remove once the new identity is in use. */
  readonly oldFiles: readonly string[];
}

async function existingSettings(configFile: string): Promise<ExistingSettings> {
  const text = await readFileIfExists(configFile);
  if (text === undefined) return { oldFiles: [] };
  let document: unknown;
  try {
    document = YAML.parse(text.toString('utf8'));
  } catch (error) {
    throw new EnrollError(configFile, `is not valid YAML (${(error as Error).message})`, 'fix it or move it aside, then run `agent enroll-install` again');
  }
  if (typeof document !== 'object' || document === null) return { oldFiles: [] };
  const settings = document as { services?: unknown; backupsKept?: unknown; tls?: Record<string, unknown> };
  const oldFiles = Object.values(settings.tls ?? {})
    .filter((value): value is string => typeof value === 'string')
    .map((value) => path.resolve(path.dirname(configFile), value));
  return {
    ...(settings.services !== undefined ? { services: settings.services } : {}),
    ...(settings.backupsKept !== undefined ? { backupsKept: settings.backupsKept } : {}),
    oldFiles,
  };
}

/** Option of `agent enroll-install` that sets each configuration field. */
const OPTION_OF_FIELD: Readonly<Record<string, string>> = {
  listen: '--listen',
  installRoot: '--install-root',
  stateDir: '--state-dir',
  controllerIdentity: '--controller-identity',
};

function configText(document: Record<string, unknown>, configFile: string, nodeName: string): string {
  try {
    parseAgentConfig(document, configFile);
  } catch (error) {
    if (!(error instanceof AgentConfigError)) throw error;
    const option = OPTION_OF_FIELD[error.field];
    if (option !== undefined) throw new EnrollError(option, error.problem, error.fix);
    throw new EnrollError(`${configFile}: ${error.field}`, error.problem, `${error.fix} in the existing configuration, then run \`agent enroll-install\` again`);
  }
  const header =
    `# kubetrust agent configuration for node ${nodeName}, written by \`agent enroll-install\`.\n` +
    '# Services without an entry under `services` are restarted with `systemctl restart <name>`.\n';
  return header + YAML.stringify(document);
}

/** Removes the identity files and directories that the configuration no longer names. */
async function removeOldIdentities(configDir: string, current: string, oldFiles: readonly string[]): Promise<void> {
  for (const entry of await fs.readdir(configDir)) {
    if ((entry.startsWith(IDENTITY_DIR_PREFIX) || entry.startsWith(STAGING_DIR_PREFIX)) && entry !== current) {
      await fs.rm(path.join(configDir, entry), { recursive: true, force: true });
    }
  }
  for (const file of oldFiles) {
    if (path.dirname(file) === configDir) await fs.rm(file, { force: true });
  }
}

/**
 * Checks that the signed certificate matches the pending key and chains to the management CA,
 * then installs key, certificate and CA in a new identity directory and writes agent.yaml, which
 * keeps the `services` and `backupsKept` of an existing agent.yaml. Nothing is changed when a
 * check fails. The pending key, the identity that was in use before and its files are removed
 * once the new agent.yaml is in place.
 */
export async function installEnrollment(options: EnrollInstallOptions): Promise<EnrollInstallResult> {
  const configDir = path.resolve(options.configDir);
  const keyFile = path.join(configDir, PENDING_KEY_FILE);
  const keyPem = await readFileIfExists(keyFile);
  if (keyPem === undefined) {
    throw new EnrollError('--config-dir', `${keyFile} is missing, so there is no request to install`, 'run `agent enroll-request` with the same --config-dir first and have its CSR signed');
  }
  const privateKey = readPendingKey(keyFile, keyPem);
  const certificatePem = await readInput(options.certificateFile, '--certificate', 'pass the agent.crt that `controller enroll --csr` wrote');
  const caPem = await readInput(options.managementCaFile, '--management-ca', 'pass the management-ca.crt that `controller enroll --csr` wrote');
  const { certificate, cluster, nodeName } = checkCertificate(options, privateKey, certificatePem, caPem);

  const configFile = path.join(configDir, CONFIG_FILE);
  const existing = await existingSettings(configFile);
  const identityName = `${IDENTITY_DIR_PREFIX}${certificate.serialNumber.slice(0, 16)}-${crypto.randomBytes(4).toString('hex')}`;
  const document: Record<string, unknown> = {
    apiVersion: 'kubetrust/v1',
    kind: 'AgentConfig',
    nodeName,
    cluster,
    listen: options.listen,
    installRoot: path.resolve(options.installRoot),
    stateDir: path.resolve(options.stateDir),
    tls: { certFile: `${identityName}/agent.crt`, keyFile: `${identityName}/agent.key`, caFile: `${identityName}/management-ca.crt` },
    controllerIdentity: options.controllerIdentity,
    ...(existing.backupsKept !== undefined ? { backupsKept: existing.backupsKept } : {}),
    services: existing.services ?? {},
  };
  const text = configText(document, configFile, nodeName);

  // The new identity is complete on disk before agent.yaml names it.
  const identityDir = path.join(configDir, identityName);
  const staging = await fs.mkdtemp(path.join(configDir, STAGING_DIR_PREFIX));
  let stagedConfig: string | undefined;
  try {
    await writeFileAtomic(path.join(staging, 'agent.key'), keyPem, { mode: 0o600 });
    await writeFileAtomic(path.join(staging, 'agent.crt'), certificate.pem, { mode: 0o644 });
    await writeFileAtomic(path.join(staging, 'management-ca.crt'), inspectCertificate(caPem).pem, { mode: 0o644 });
    await fs.rename(staging, identityDir);
    stagedConfig = await stageFile(configFile, text, { mode: 0o600 });
    await syncDirectory(configDir);
  } catch (error) {
    await fs.rm(staging, { recursive: true, force: true });
    await fs.rm(identityDir, { recursive: true, force: true });
    if (stagedConfig !== undefined) await fs.rm(stagedConfig, { force: true });
    throw error;
  }
  await commitStagedFile(stagedConfig, configFile);

  await fs.rm(keyFile, { force: true });
  await removeOldIdentities(configDir, identityName, existing.oldFiles);
  await syncDirectory(configDir);
  return { configFile, identityDir, nodeName, cluster, notAfter: certificate.notAfter };
}
