/**
 * The settings that point each service of a node at the files kubetrust installs there: the
 * catalogue's `settings` and `companions`, with the paths resolved for the node, so that path
 * overrides and the path layout show in the values.
 */
import { posix } from 'node:path';
import type { Inventory, NodeSpec } from '../inventory/types';
import { CATALOGUE } from './catalogue';
import { KUBELET_DROP_IN_NAME } from './kubelet-config';
import { itemPaths, itemsForNode, overrideKey, servicesForNode, type NodeItem } from './select';
import type { CatalogueEntry, ConfigKind, FileSetting, FileSpec, NodeContext, Service } from './types';
import { SERVICES } from './types';

/** One setting of one service on a node. */
export interface ComponentFlag {
  readonly service: Service;
  /** `flag` for a command-line flag, `config` for a field of the service's configuration file. */
  readonly kind: 'flag' | 'config';
  /** Kind of the configuration file; present only when `kind` is `config`. */
  readonly configKind?: ConfigKind;
  /** Flag such as `--tls-cert-file`, or dotted field path such as `authentication.x509.clientCAFile`. */
  readonly flag: string;
  readonly value: string;
  /** Name of the node item that writes the file, as the distribute plan names it. A companion flag names the item of its file. */
  readonly source: string;
}

/** One file of a catalogue entry, with its `pki.pathOverrides` key. */
interface CatalogueFile {
  readonly key: string;
  readonly spec: FileSpec;
  readonly when: ((context: NodeContext) => boolean) | undefined;
}

function catalogueFiles(entry: CatalogueEntry): CatalogueFile[] {
  const of = (part: Parameters<typeof overrideKey>[1], spec: FileSpec, when?: (context: NodeContext) => boolean): CatalogueFile => ({
    key: overrideKey(entry.name, part),
    spec,
    when,
  });
  switch (entry.kind) {
    case 'ca':
      return [
        of('certificate', entry.certificate),
        ...(entry.signerCertificate !== undefined ? [of('signerCertificate', entry.signerCertificate)] : []),
        ...(entry.privateKey !== undefined ? [of('privateKey', entry.privateKey)] : []),
      ];
    case 'keypair':
      return [of('privateKey', entry.privateKey), of('publicKey', entry.publicKey)];
    case 'leaf':
      return [of('certificate', entry.certificate, entry.when), of('privateKey', entry.privateKey, entry.when)];
    case 'kubeconfig':
      return [of('file', entry.file, entry.when)];
  }
}

/** Checks the receiving rule of `itemsForNode`: a role of the node receives the file and the entry's condition is true. */
function nodeReceives(context: NodeContext, file: CatalogueFile): boolean {
  return file.spec.roles.some((role) => context.node.roles.includes(role)) && (file.when === undefined || file.when(context));
}

function itemNamesByPath(items: readonly NodeItem[]): Map<string, string> {
  const names = new Map<string, string>();
  for (const item of items) {
    for (const path of itemPaths(item)) names.set(path, item.name);
  }
  return names;
}

function fromSetting(setting: FileSetting, value: string, source: string): ComponentFlag {
  if ('flag' in setting) return { service: setting.service, kind: 'flag', flag: setting.flag, value, source };
  return { service: setting.service, kind: 'config', configKind: setting.configKind, flag: setting.field, value, source };
}

/**
 * Lists the flag that makes a worker's kubelet read the drop-in kubetrust writes: `--config-dir`
 * with the drop-in's directory. Empty for a node without a kubelet.
 */
export function kubeletDropInFlags(inventory: Inventory, node: NodeSpec): ComponentFlag[] {
  const dropIn = itemsForNode(inventory, node).find((item) => item.name === KUBELET_DROP_IN_NAME);
  if (dropIn === undefined || dropIn.type !== 'static') return [];
  return [{ service: 'kubelet', kind: 'flag', flag: '--config-dir', value: posix.dirname(dropIn.file.path), source: KUBELET_DROP_IN_NAME }];
}

/**
 * Lists, for every service `node` runs, the flags and configuration fields that name a file the
 * node holds, then the fixed companion flags of those files. Services come in restart order, and
 * the settings of one service in catalogue order.
 */
export function flagsForNode(inventory: Inventory, node: NodeSpec): ComponentFlag[] {
  const context: NodeContext = { inventory, node };
  const services = servicesForNode(node);
  const sources = itemNamesByPath(itemsForNode(inventory, node));
  const flags: ComponentFlag[] = [];
  const companions: ComponentFlag[] = [];
  for (const file of CATALOGUE.flatMap(catalogueFiles)) {
    if (!nodeReceives(context, file)) continue;
    const path = inventory.pki.pathOverrides[file.key] ?? file.spec.path[inventory.pki.pathLayout];
    const source = sources.get(path);
    // itemsForNode drops only a CA file whose path another item of the same CA writes, so every received path has an item.
    if (source === undefined) throw new Error(`catalogue file ${file.key} resolves to ${path} on node ${node.name}, but no item of the node writes that path`);
    for (const setting of file.spec.settings) {
      if (services.includes(setting.service)) flags.push(fromSetting(setting, path, source));
    }
    for (const companion of file.spec.companions) {
      if (services.includes(companion.service)) companions.push({ service: companion.service, kind: 'flag', flag: companion.flag, value: companion.value(context), source });
    }
  }
  // Array.prototype.sort is stable, so the catalogue order survives within each service.
  return [...flags, ...companions].sort((a, b) => SERVICES.indexOf(a.service) - SERVICES.indexOf(b.service));
}
