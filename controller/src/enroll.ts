/**
 * `controller enroll`: the manual install path for one node's agent, and the signing of the CSR
 * that an agent makes on its node.
 *
 * Without a CSR, `enrollNode` generates the agent's key on the admin host and writes a ready-to-run
 * `agent.yaml` with the agent's management identity (a certificate for the node name and the agent
 * endpoint, signed by the management CA), the management CA, and the controller identity the agent
 * accepts. With a CSR from `agent enroll-request`, `enrollNodeFromCsr` only signs it, so the key
 * never leaves the node, and `agent enroll-install` on the node writes `agent.yaml`.
 *
 * Reads: the inventory, the management CA in the state directory, the CSR file.
 * Writes: OUT/agent.yaml, OUT/agent.crt, OUT/agent.key (0600), OUT/management-ca.crt; with a CSR
 * only OUT/agent.crt and OUT/management-ca.crt.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { writeFileAtomic } from '@kubetrust/shared/dist/files';
import { MANAGEMENT_KEY_ALGORITHM, agentIdentity, agentIdentityNames, controllerIdentity } from '@kubetrust/shared/dist/identity';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { createCsr, generateKeyPair, keyAlgorithmOf, parseCsr, privateKeyToPem, type ParsedCsr } from '@kubetrust/shared/dist/pki';
import { signLeaf } from './authority';
import { StateDir, StateError } from './state-dir';

export interface EnrollOptions {
  readonly installRoot?: string;
  readonly stateDirOnNode?: string;
  readonly now?: Date;
}

export interface EnrollResult {
  readonly node: string;
  readonly configFile: string;
  readonly identity: string;
}

/** Raised when an agent CSR does not ask for the identity that the inventory gives its node. */
export class AgentCsrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AgentCsrError';
  }
}

export interface SignAgentCsrOptions {
  readonly now?: Date;
}

export interface SignedAgentCsr {
  readonly node: string;
  readonly certificatePem: string;
  readonly managementCaPem: string;
  /** URI SAN of the controller, for the agent's `controllerIdentity`. */
  readonly controllerIdentity: string;
  /** The node's agent endpoint from the inventory, for the agent's `listen`. */
  readonly listen: string;
}

export function findNode(inventory: Inventory, name: string): NodeSpec {
  const node = inventory.nodes.find((candidate) => candidate.name === name);
  if (node === undefined) {
    throw new StateError(`node "${name}" is not in the inventory; use one of: ${inventory.nodes.map((candidate) => candidate.name).join(', ')}`);
  }
  return node;
}

function sameSet(found: readonly string[], expected: readonly string[]): boolean {
  return found.length === expected.length && expected.every((value) => found.includes(value));
}

function listOf(values: readonly string[]): string {
  return values.length === 0 ? 'none' : values.join(', ');
}

/** Checks that a CSR requests exactly the agent identity of `node` and a management-plane key. */
function checkAgentCsr(csr: ParsedCsr, inventory: Inventory, node: NodeSpec): void {
  const expected = agentIdentityNames(inventory.name, node.name, node.agent.host);
  const problems: string[] = [];
  if (csr.commonName !== expected.commonName) problems.push(`common name "${csr.commonName}" instead of "${expected.commonName}"`);
  if (csr.organizations.length > 0) problems.push(`organizations ${listOf(csr.organizations)}, expected none`);
  if (!sameSet(csr.dnsNames, expected.dnsNames)) problems.push(`DNS names ${listOf(csr.dnsNames)} instead of ${listOf(expected.dnsNames)}`);
  if (!sameSet(csr.ipAddresses, expected.ipAddresses)) problems.push(`IP addresses ${listOf(csr.ipAddresses)} instead of ${listOf(expected.ipAddresses)}`);
  if (!sameSet(csr.uris, expected.uris)) problems.push(`URIs ${listOf(csr.uris)} instead of ${listOf(expected.uris)}`);
  const algorithm = keyAlgorithmOf(csr.publicKey);
  if (algorithm !== MANAGEMENT_KEY_ALGORITHM) problems.push(`a ${algorithm ?? 'unsupported'} key instead of ${MANAGEMENT_KEY_ALGORITHM}`);
  if (problems.length > 0) {
    throw new AgentCsrError(
      `agent CSR for node "${node.name}" does not match the inventory (agent endpoint ${node.agent.endpoint}): ${problems.join('; ')}; ` +
        `run \`agent enroll-request --node ${node.name} --cluster ${inventory.name} --host ${node.agent.host}\` on the node again, or fix the node in the inventory`,
    );
  }
}

/**
 * Verifies an agent CSR (its signature, and that it requests exactly the names and identity URI
 * that the inventory gives the node and its agent endpoint) and signs it with the management CA.
 * Throws AgentCsrError for a CSR that fails a check and StateError for an unknown node or a
 * state directory that is not initialised.
 */
export async function signAgentCsr(inventory: Inventory, stateDir: string, nodeName: string, csrPem: string | Buffer, options: SignAgentCsrOptions = {}): Promise<SignedAgentCsr> {
  const node = findNode(inventory, nodeName);
  let csr: ParsedCsr;
  try {
    csr = parseCsr(csrPem);
  } catch (error) {
    throw new AgentCsrError(`agent CSR for node "${node.name}" is rejected: ${(error as Error).message}; pass the CSR that \`agent enroll-request\` printed on the node, unchanged`);
  }
  checkAgentCsr(csr, inventory, node);

  const state = new StateDir(stateDir);
  await state.requireCluster(inventory.name);
  const management = await state.loadKeyMaterial(state.caFiles('management'), 'management CA');
  const names = agentIdentityNames(inventory.name, node.name, node.agent.host);
  // The names come from the inventory; checkAgentCsr has made sure the CSR requested exactly these.
  const certificatePem = signLeaf(
    management,
    { commonName: names.commonName, extKeyUsage: ['serverAuth'], dnsNames: names.dnsNames, ipAddresses: names.ipAddresses, uris: names.uris },
    csr.publicKey,
    inventory.pki.certValidityMs,
    options.now ?? new Date(),
  );
  return {
    node: node.name,
    certificatePem,
    managementCaPem: management.certificatePem,
    controllerIdentity: controllerIdentity(inventory.name),
    listen: node.agent.endpoint,
  };
}

/** Issues the agent's identity, with a key generated here, and writes its configuration directory. */
export async function enrollNode(inventory: Inventory, stateDir: string, nodeName: string, outDir: string, logger: Logger, options: EnrollOptions = {}): Promise<EnrollResult> {
  const node = findNode(inventory, nodeName);
  const identity = agentIdentity(inventory.name, node.name);
  // The manual path: the key is generated on the admin host and copied with the configuration.
  // `agent enroll-request` and `enrollNodeFromCsr` keep it on the node instead.
  const keyPair = await generateKeyPair(MANAGEMENT_KEY_ALGORITHM);
  const csrPem = createCsr(agentIdentityNames(inventory.name, node.name, node.agent.host), keyPair);
  const signed = await signAgentCsr(inventory, stateDir, node.name, csrPem, options.now !== undefined ? { now: options.now } : {});

  const out = path.resolve(outDir);
  await writeFileAtomic(path.join(out, 'agent.key'), privateKeyToPem(keyPair.privateKey), { mode: 0o600 });
  await writeFileAtomic(path.join(out, 'agent.crt'), signed.certificatePem, { mode: 0o644 });
  await writeFileAtomic(path.join(out, 'management-ca.crt'), signed.managementCaPem, { mode: 0o644 });
  const config = {
    apiVersion: 'kubetrust/v1',
    kind: 'AgentConfig',
    nodeName: node.name,
    cluster: inventory.name,
    listen: signed.listen,
    installRoot: options.installRoot ?? '/',
    stateDir: options.stateDirOnNode ?? '/var/lib/kubetrust/agent',
    tls: { certFile: 'agent.crt', keyFile: 'agent.key', caFile: 'management-ca.crt' },
    controllerIdentity: signed.controllerIdentity,
    services: {},
  };
  const header =
    `# kubetrust agent configuration for node ${node.name}, written by \`controller enroll\`.\n` +
    '# Services without an entry under `services` are restarted with `systemctl restart <name>`.\n';
  const configFile = path.join(out, 'agent.yaml');
  await writeFileAtomic(configFile, header + YAML.stringify(config), { mode: 0o600 });
  logger.info('enrolled agent', { node: node.name, identity, path: configFile });
  return { node: node.name, configFile, identity };
}

export interface CsrEnrollResult extends SignedAgentCsr {
  readonly certificateFile: string;
  readonly managementCaFile: string;
}

/** Signs an agent CSR made on the node and writes OUT/agent.crt and OUT/management-ca.crt. */
export async function enrollNodeFromCsr(inventory: Inventory, stateDir: string, nodeName: string, csrFile: string, outDir: string, logger: Logger, options: SignAgentCsrOptions = {}): Promise<CsrEnrollResult> {
  let csrPem: Buffer;
  try {
    csrPem = await fs.readFile(csrFile);
  } catch (error) {
    throw new AgentCsrError(`cannot read the CSR file ${csrFile}: ${(error as Error).message}; save the output of \`agent enroll-request\` to a file and pass it with --csr`);
  }
  const signed = await signAgentCsr(inventory, stateDir, nodeName, csrPem, options);
  const out = path.resolve(outDir);
  const certificateFile = path.join(out, 'agent.crt');
  const managementCaFile = path.join(out, 'management-ca.crt');
  await writeFileAtomic(certificateFile, signed.certificatePem, { mode: 0o644 });
  await writeFileAtomic(managementCaFile, signed.managementCaPem, { mode: 0o644 });
  logger.info('signed agent CSR', { node: signed.node, identity: agentIdentity(inventory.name, signed.node), path: certificateFile });
  return { ...signed, certificateFile, managementCaFile };
}
