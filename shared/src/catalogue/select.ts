/**
 * Resolves the catalogue for one node: which items it must hold, at which paths, and which of its
 * services read each file. An item is the unit installed together (a certificate with its key).
 */
import type { Inventory, InventoryIssue, KubeletCredentials, NodeSpec, PathLayout } from '../inventory/types';
import type { ExtKeyUsage } from '../pki/certificate';
import { CATALOGUE, SERVICES_BY_ROLE, signingCa } from './catalogue';
import { KUBELET_DROP_IN_NAME, KUBELET_DROP_IN_PATH, kubeletDropInPathProblem, renderKubeletDropIn, type KubeletDropInPaths } from './kubelet-config';
import type { CaName, FileSpec, NodeContext, SanSet, Service, SubjectSpec } from './types';
import { SERVICES } from './types';

export interface ResolvedFile {
  readonly path: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Services on this node that read the file. */
  readonly consumers: readonly Service[];
}

/** The kubelet drop-in of a worker, rendered from the inventory (`./kubelet-config.ts`). */
export interface KubeletConfigSource {
  readonly kubeletConfig: KubeletCredentials;
  readonly content: string;
  /** The drop-in as the node would have it with the other `kubelet.credentials`, so a plan can name a switch. */
  readonly alternatives: readonly { readonly credentials: KubeletCredentials; readonly content: string }[];
}

/**
 * Content the controller keeps or renders and sends as is: CA certificates, the CA key for masters,
 * the service-account pair and the kubelet drop-in of workers.
 */
export interface StaticItem {
  readonly type: 'static';
  readonly name: string;
  readonly source:
    | { readonly ca: CaName; readonly part: 'certificate' | 'privateKey' | 'signerCertificate' }
    | { readonly keyPair: 'service-account'; readonly part: 'privateKey' | 'publicKey' }
    | KubeletConfigSource;
  readonly file: ResolvedFile;
}

/** A certificate issued for this node, with a key generated on the node. */
export interface LeafItem {
  readonly type: 'leaf';
  readonly name: string;
  readonly parent: CaName;
  readonly subject: SubjectSpec;
  readonly sans: SanSet;
  readonly extKeyUsage: readonly ExtKeyUsage[];
  readonly certificate: ResolvedFile;
  readonly privateKey: ResolvedFile;
}

/** A kubeconfig whose client certificate is issued for this node, with a key generated on the node. */
export interface KubeconfigItem {
  readonly type: 'kubeconfig';
  readonly name: string;
  readonly parent: CaName;
  readonly subject: SubjectSpec;
  readonly server: string;
  readonly file: ResolvedFile;
}

export type NodeItem = StaticItem | LeafItem | KubeconfigItem;

/** Services the node runs, in restart order. */
export function servicesForNode(node: NodeSpec): Service[] {
  const running = new Set(node.roles.flatMap((role) => SERVICES_BY_ROLE[role]));
  return SERVICES.filter((service) => running.has(service));
}

function receives(context: NodeContext, spec: FileSpec, when: ((context: NodeContext) => boolean) | undefined): boolean {
  return spec.roles.some((role) => context.node.roles.includes(role)) && (when === undefined || when(context));
}

/** Key of one catalogue file in `pki.pathOverrides`, such as `apiserver.certificate`. */
export function overrideKey(entryName: string, part: 'certificate' | 'privateKey' | 'signerCertificate' | 'publicKey' | 'file'): string {
  return `${entryName}.${part}`;
}

function resolve(context: NodeContext, spec: FileSpec, key: string): ResolvedFile {
  const { inventory, node } = context;
  const layout: PathLayout = inventory.pki.pathLayout;
  const path = inventory.pki.pathOverrides[key] ?? spec.path[layout];
  if (path === undefined) throw new Error(`catalogue file ${key} has no path in the ${layout} path layout; set pki.pathOverrides.${key}`);
  const services = servicesForNode(node);
  return {
    path,
    mode: spec.mode,
    uid: spec.owner.uid,
    gid: spec.owner.gid,
    consumers: services.filter((service) => spec.consumers.includes(service)),
  };
}

/** Every item `node` must hold, in catalogue order, and last the kubelet drop-in of a worker. */
export function itemsForNode(inventory: Inventory, node: NodeSpec): NodeItem[] {
  const items = catalogueItems(inventory, node);
  const dropIn = kubeletDropInItem(inventory, node, items);
  // Checked again with the drop-in, so a path override that puts it on another file's path is rejected.
  return dropIn === undefined ? items : dropSharedTrustFiles([...items, dropIn]);
}

function dropInPaths(items: readonly NodeItem[]): KubeletDropInPaths {
  const clusterCa = items.find((item): item is StaticItem => item.type === 'static' && 'ca' in item.source && item.source.ca === 'cluster-ca' && item.source.part === 'certificate');
  if (clusterCa === undefined) throw new Error('a worker receives no cluster CA certificate');
  const serving = items.find((item): item is LeafItem => item.type === 'leaf' && item.name === 'kubelet-server');
  return {
    clientCaFile: clusterCa.file.path,
    ...(serving !== undefined ? { tlsCertFile: serving.certificate.path, tlsPrivateKeyFile: serving.privateKey.path } : {}),
  };
}

/** Builds the kubelet drop-in of a worker from the paths of its other items, or returns undefined for a node without a kubelet. */
function kubeletDropInItem(inventory: Inventory, node: NodeSpec, items: readonly NodeItem[]): StaticItem | undefined {
  if (!node.roles.includes('worker')) return undefined;
  const dropInPath = inventory.pki.pathOverrides[overrideKey(KUBELET_DROP_IN_NAME, 'file')] ?? KUBELET_DROP_IN_PATH;
  const credentials = node.kubelet.credentials;
  const other: KubeletCredentials = credentials === 'bootstrap' ? 'pre-provisioned' : 'bootstrap';
  const otherNode: NodeSpec = { ...node, kubelet: { credentials: other } };
  return {
    type: 'static',
    name: KUBELET_DROP_IN_NAME,
    source: {
      kubeletConfig: credentials,
      content: renderKubeletDropIn(inventory, node, credentials, dropInPaths(items), dropInPath),
      alternatives: [{ credentials: other, content: renderKubeletDropIn(inventory, otherNode, other, dropInPaths(catalogueItems(inventory, otherNode)), dropInPath) }],
    },
    file: { path: dropInPath, mode: 0o644, uid: 0, gid: 0, consumers: servicesForNode(node).filter((service) => service === 'kubelet') },
  };
}

/** Every catalogue item `node` must hold, in catalogue order. */
function catalogueItems(inventory: Inventory, node: NodeSpec): NodeItem[] {
  const context: NodeContext = { inventory, node };
  const pki = inventory.pki;
  const items: NodeItem[] = [];
  for (const entry of CATALOGUE) {
    switch (entry.kind) {
      case 'ca': {
        const ca = signingCa(entry.name, pki);
        if (receives(context, entry.certificate, undefined)) {
          items.push({ type: 'static', name: `${entry.name}.crt`, source: { ca, part: 'certificate' }, file: resolve(context, entry.certificate, overrideKey(entry.name, 'certificate')) });
        }
        if (entry.signerCertificate !== undefined && receives(context, entry.signerCertificate, undefined)) {
          items.push({
            type: 'static',
            name: `${entry.name}-signer.crt`,
            source: { ca, part: 'signerCertificate' },
            file: resolve(context, entry.signerCertificate, overrideKey(entry.name, 'signerCertificate')),
          });
        }
        if (entry.privateKey !== undefined && receives(context, entry.privateKey, undefined)) {
          items.push({ type: 'static', name: `${entry.name}.key`, source: { ca, part: 'privateKey' }, file: resolve(context, entry.privateKey, overrideKey(entry.name, 'privateKey')) });
        }
        break;
      }
      case 'keypair':
        if (receives(context, entry.privateKey, undefined)) {
          items.push({ type: 'static', name: 'sa.key', source: { keyPair: entry.name, part: 'privateKey' }, file: resolve(context, entry.privateKey, overrideKey(entry.name, 'privateKey')) });
        }
        if (receives(context, entry.publicKey, undefined)) {
          items.push({ type: 'static', name: 'sa.pub', source: { keyPair: entry.name, part: 'publicKey' }, file: resolve(context, entry.publicKey, overrideKey(entry.name, 'publicKey')) });
        }
        break;
      case 'leaf':
        if (receives(context, entry.certificate, entry.when)) {
          items.push({
            type: 'leaf',
            name: entry.name,
            parent: signingCa(entry.parent, pki),
            subject: entry.subject(context),
            sans: entry.sans(context),
            extKeyUsage: entry.extKeyUsage,
            certificate: resolve(context, entry.certificate, overrideKey(entry.name, 'certificate')),
            privateKey: resolve(context, entry.privateKey, overrideKey(entry.name, 'privateKey')),
          });
        }
        break;
      case 'kubeconfig':
        if (receives(context, entry.file, entry.when)) {
          items.push({
            type: 'kubeconfig',
            name: entry.name,
            parent: signingCa(entry.parent, pki),
            subject: entry.subject(context),
            server: entry.server(context),
            file: resolve(context, entry.file, overrideKey(entry.name, 'file')),
          });
        }
        break;
    }
  }
  return dropSharedTrustFiles(items);
}

/**
 * Removes a CA certificate item whose path another item already writes with the same content, as
 * when etcd shares the cluster CA and a path layout gives both trust files one name. Any other
 * clash of paths is a configuration error.
 */
function dropSharedTrustFiles(items: readonly NodeItem[]): NodeItem[] {
  const byPath = new Map<string, NodeItem>();
  const kept: NodeItem[] = [];
  for (const item of items) {
    const clash = itemPaths(item).map((path) => byPath.get(path)).find((other) => other !== undefined);
    if (clash === undefined) {
      for (const path of itemPaths(item)) byPath.set(path, item);
      kept.push(item);
      continue;
    }
    if (item.type !== 'static' || clash.type !== 'static' || !sameCaFile(item.source, clash.source)) {
      throw new Error(`catalogue items ${clash.name} and ${item.name} resolve to the same path ${itemPaths(item).join(', ')}; change one of them in pki.pathOverrides`);
    }
    // The kept file now stands for both trust files, so a change to it restarts the readers of both.
    const merged: StaticItem = { ...clash, file: { ...clash.file, consumers: SERVICES.filter((service) => clash.file.consumers.includes(service) || item.file.consumers.includes(service)) } };
    kept[kept.indexOf(clash)] = merged;
    for (const path of itemPaths(merged)) byPath.set(path, merged);
  }
  return kept;
}

function sameCaFile(a: StaticItem['source'], b: StaticItem['source']): boolean {
  return 'ca' in a && 'ca' in b && a.ca === b.ca && a.part === b.part;
}

/** Lists every path an item writes. */
export function itemPaths(item: NodeItem): string[] {
  switch (item.type) {
    case 'static':
    case 'kubeconfig':
      return [item.file.path];
    case 'leaf':
      return [item.certificate.path, item.privateKey.path];
  }
}

/** Lists every `pki.pathOverrides` key the catalogue defines, such as `apiserver.certificate`. */
export function overrideKeys(): string[] {
  const entryKeys = CATALOGUE.flatMap((entry) => {
    switch (entry.kind) {
      case 'ca':
        return [
          overrideKey(entry.name, 'certificate'),
          ...(entry.privateKey !== undefined ? [overrideKey(entry.name, 'privateKey')] : []),
          ...(entry.signerCertificate !== undefined ? [overrideKey(entry.name, 'signerCertificate')] : []),
        ];
      case 'keypair':
        return [overrideKey(entry.name, 'privateKey'), overrideKey(entry.name, 'publicKey')];
      case 'leaf':
        return [overrideKey(entry.name, 'certificate'), overrideKey(entry.name, 'privateKey')];
      case 'kubeconfig':
        return [overrideKey(entry.name, 'file')];
    }
  });
  // The bootstrap kubeconfig of a TLS-bootstrapping kubelet (kubelet-bootstrap.ts) and the kubelet
  // drop-in (kubelet-config.ts) are not catalogue entries, but they can be moved too.
  return [...entryKeys, overrideKey('bootstrap-kubelet.conf', 'file'), overrideKey(KUBELET_DROP_IN_NAME, 'file')];
}

/**
 * Finds the inventory problems that only the catalogue reveals. They are a path override for a
 * file that does not exist, two files on one path, and a node whose certificate would carry its
 * CA's subject, such as an etcd member named like its CA.
 */
export function catalogueIssues(inventory: Inventory): InventoryIssue[] {
  const issues: InventoryIssue[] = [];
  const known = overrideKeys();
  for (const key of Object.keys(inventory.pki.pathOverrides)) {
    if (!known.includes(key)) {
      issues.push({ path: `spec.pki.pathOverrides.${key}`, message: `"${key}" is not a catalogue file`, fix: `use one of: ${known.join(', ')}` });
    }
  }
  const dropInKey = overrideKey(KUBELET_DROP_IN_NAME, 'file');
  const dropInOverride = inventory.pki.pathOverrides[dropInKey];
  const dropInProblem = dropInOverride === undefined ? undefined : kubeletDropInPathProblem(dropInOverride);
  if (dropInProblem !== undefined) {
    issues.push({ path: `spec.pki.pathOverrides.${dropInKey}`, message: dropInProblem, fix: `choose a path that ends with .conf, such as ${KUBELET_DROP_IN_PATH}` });
  }
  const caNames = new Map(CATALOGUE.filter((entry) => entry.kind === 'ca').map((entry) => [entry.name, entry.commonName] as const));
  inventory.nodes.forEach((node, index) => {
    let items: NodeItem[];
    try {
      items = itemsForNode(inventory, node);
    } catch (error) {
      issues.push({ path: `spec.nodes[${index}]`, message: (error as Error).message, fix: 'give each file its own path in pki.pathOverrides' });
      return;
    }
    for (const item of items) {
      if (item.type === 'static' || item.subject.organizations.length > 0) continue;
      if (item.subject.commonName === caNames.get(item.parent)) {
        issues.push({ path: `spec.nodes[${index}].name`, message: `node "${node.name}" would get a ${item.name} certificate with the subject of its CA (CN "${item.subject.commonName}")`, fix: 'rename the node' });
      }
    }
  });
  return issues;
}
