/**
 * Resolves the catalogue for one node: which items it must hold, at which paths, and which of its
 * services read each file. An item is the unit installed together (a certificate with its key).
 */
import type { Inventory, NodeSpec } from '../inventory/types';
import type { ExtKeyUsage } from '../pki/certificate';
import { CATALOGUE, SERVICES_BY_ROLE, signingCa } from './catalogue';
import type { CaName, FileSpec, PathLayout, SanSet, Service, SubjectSpec } from './types';
import { SERVICES } from './types';

export interface ResolvedFile {
  readonly path: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Services on this node that read the file. */
  readonly consumers: readonly Service[];
}

/** Content the controller holds and sends as is: CA certificates, the CA key for masters, the service-account pair. */
export interface StaticItem {
  readonly type: 'static';
  readonly name: string;
  readonly source:
    | { readonly ca: CaName; readonly part: 'certificate' | 'privateKey' }
    | { readonly keyPair: 'service-account'; readonly part: 'privateKey' | 'publicKey' };
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

function receives(node: NodeSpec, spec: FileSpec): boolean {
  return spec.roles.some((role) => node.roles.includes(role));
}

function resolve(node: NodeSpec, spec: FileSpec, layout: PathLayout): ResolvedFile {
  const services = servicesForNode(node);
  return {
    path: spec.path[layout],
    mode: spec.mode,
    uid: spec.owner.uid,
    gid: spec.owner.gid,
    consumers: services.filter((service) => spec.consumers.includes(service)),
  };
}

/** Every item `node` must hold, in catalogue order. */
export function itemsForNode(inventory: Inventory, node: NodeSpec, layout: PathLayout = 'kubeadm'): NodeItem[] {
  const context = { inventory, node };
  const pkiLayout = inventory.pki.layout;
  const items: NodeItem[] = [];
  for (const entry of CATALOGUE) {
    switch (entry.kind) {
      case 'ca': {
        const ca = signingCa(entry.name, pkiLayout);
        if (receives(node, entry.certificate)) {
          items.push({ type: 'static', name: `${entry.name}.crt`, source: { ca, part: 'certificate' }, file: resolve(node, entry.certificate, layout) });
        }
        if (entry.privateKey !== undefined && receives(node, entry.privateKey)) {
          items.push({ type: 'static', name: `${entry.name}.key`, source: { ca, part: 'privateKey' }, file: resolve(node, entry.privateKey, layout) });
        }
        break;
      }
      case 'keypair':
        if (receives(node, entry.privateKey)) {
          items.push({ type: 'static', name: 'sa.key', source: { keyPair: entry.name, part: 'privateKey' }, file: resolve(node, entry.privateKey, layout) });
        }
        if (receives(node, entry.publicKey)) {
          items.push({ type: 'static', name: 'sa.pub', source: { keyPair: entry.name, part: 'publicKey' }, file: resolve(node, entry.publicKey, layout) });
        }
        break;
      case 'leaf':
        if (receives(node, entry.certificate)) {
          items.push({
            type: 'leaf',
            name: entry.name,
            parent: signingCa(entry.parent, pkiLayout),
            subject: entry.subject(context),
            sans: entry.sans(context),
            extKeyUsage: entry.extKeyUsage,
            certificate: resolve(node, entry.certificate, layout),
            privateKey: resolve(node, entry.privateKey, layout),
          });
        }
        break;
      case 'kubeconfig':
        if (receives(node, entry.file)) {
          items.push({
            type: 'kubeconfig',
            name: entry.name,
            parent: signingCa(entry.parent, pkiLayout),
            subject: entry.subject(context),
            server: entry.server(context),
            file: resolve(node, entry.file, layout),
          });
        }
        break;
    }
  }
  return items;
}

/** Every path an item writes. */
export function itemPaths(item: NodeItem): string[] {
  switch (item.type) {
    case 'static':
    case 'kubeconfig':
      return [item.file.path];
    case 'leaf':
      return [item.certificate.path, item.privateKey.path];
  }
}
