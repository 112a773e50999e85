/**
 * `controller enroll`: the manual install path for one node's agent. Writes a ready-to-run
 * `agent.yaml` with the agent's management identity (a certificate for the node name and the agent
 * endpoint, signed by the management CA), the management CA, and the controller identity the agent
 * accepts.
 *
 * Reads: the inventory, the management CA in the state directory.
 * Writes: OUT/agent.yaml, OUT/agent.crt, OUT/agent.key (0600), OUT/management-ca.crt.
 */
import * as path from 'node:path';
import { isIP } from 'node:net';
import * as YAML from 'yaml';
import { writeFileAtomic } from '@kubetrust/shared/dist/files';
import { agentIdentity, controllerIdentity } from '@kubetrust/shared/dist/identity';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { generateKeyPair, privateKeyToPem } from '@kubetrust/shared/dist/pki';
import { signLeaf } from './authority';
import { MANAGEMENT_KEY_ALGORITHM } from './init';
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

export function findNode(inventory: Inventory, name: string): NodeSpec {
  const node = inventory.nodes.find((candidate) => candidate.name === name);
  if (node === undefined) {
    throw new StateError(`node "${name}" is not in the inventory; use one of: ${inventory.nodes.map((candidate) => candidate.name).join(', ')}`);
  }
  return node;
}

/** Issues the agent's identity and writes its configuration directory. */
export async function enrollNode(inventory: Inventory, stateDir: string, nodeName: string, outDir: string, logger: Logger, options: EnrollOptions = {}): Promise<EnrollResult> {
  const node = findNode(inventory, nodeName);
  const state = new StateDir(stateDir);
  await state.requireCluster(inventory.name);
  const management = await state.loadKeyMaterial(state.caFiles('management'), 'management CA');
  const identity = agentIdentity(inventory.name, node.name);
  const host = node.agent.host;
  // TODO: the agent's key is generated here on the admin host and copied with the configuration.
  // Installing agents over SSH should let the agent generate it on the node and send only a CSR.
  const keyPair = await generateKeyPair(MANAGEMENT_KEY_ALGORITHM);
  const certificatePem = signLeaf(
    management,
    {
      commonName: node.name,
      extKeyUsage: ['serverAuth'],
      dnsNames: [...new Set([node.name, ...(isIP(host) === 0 ? [host] : [])])],
      ipAddresses: isIP(host) === 0 ? [] : [host],
      uris: [identity],
    },
    keyPair.publicKey,
    inventory.pki.certValidityMs,
    options.now ?? new Date(),
  );
  const out = path.resolve(outDir);
  await writeFileAtomic(path.join(out, 'agent.key'), privateKeyToPem(keyPair.privateKey), { mode: 0o600 });
  await writeFileAtomic(path.join(out, 'agent.crt'), certificatePem, { mode: 0o644 });
  await writeFileAtomic(path.join(out, 'management-ca.crt'), management.certificatePem, { mode: 0o644 });
  const config = {
    apiVersion: 'kubetrust/v1',
    kind: 'AgentConfig',
    nodeName: node.name,
    cluster: inventory.name,
    listen: node.agent.endpoint,
    installRoot: options.installRoot ?? '/',
    stateDir: options.stateDirOnNode ?? '/var/lib/kubetrust/agent',
    tls: { certFile: 'agent.crt', keyFile: 'agent.key', caFile: 'management-ca.crt' },
    controllerIdentity: controllerIdentity(inventory.name),
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
