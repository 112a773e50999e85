/**
 * Shapes of the certificate catalogue. The catalogue itself (`./catalogue.ts`) is the single place
 * where certificate facts live: subjects, usages, SANs, validity, parents, receiving roles, paths,
 * modes and consuming services.
 */
import type { ExtKeyUsage } from '../pki/certificate';
import type { Inventory, NodeSpec, PathLayout, PkiSpec, Role } from '../inventory/types';

/** Services kubetrust restarts after changing a file they read. */
export const SERVICES = [
  'etcd',
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kubelet',
  'kube-proxy',
] as const;
export type Service = (typeof SERVICES)[number];

export const CA_NAMES = ['cluster-ca', 'etcd-ca', 'front-proxy-ca'] as const;
export type CaName = (typeof CA_NAMES)[number];


/** Configuration file kinds whose fields name catalogue files. */
export const CONFIG_KINDS = ['KubeletConfiguration', 'KubeProxyConfiguration'] as const;
export type ConfigKind = (typeof CONFIG_KINDS)[number];

/**
 * A component setting whose value is the path of a catalogue file: a command-line flag such as
 * kube-apiserver's `--tls-cert-file`, or a field of a configuration file such as the
 * KubeletConfiguration field `tlsCertFile`.
 */
export type FileSetting =
  | { readonly service: Service; readonly flag: string }
  | { readonly service: Service; readonly configKind: ConfigKind; readonly field: string };

/**
 * A flag with a fixed value that a certificate relies on, such as kube-apiserver's
 * `--requestheader-allowed-names`, which must contain the front-proxy client's common name.
 */
export interface CompanionFlag {
  readonly service: Service;
  readonly flag: string;
  readonly value: (context: NodeContext) => string;
}

/** One file a node receives. */
export interface FileSpec {
  /** Node path in each path layout. */
  readonly path: Readonly<Record<PathLayout, string>>;
  readonly mode: number;
  /** Numeric owner; every file belongs to root today because the control-plane services run as root. */
  readonly owner: { readonly uid: number; readonly gid: number };
  /** Roles whose nodes receive the file. */
  readonly roles: readonly Role[];
  /** Settings of the services that read the file, which point those services at its path. */
  readonly settings: readonly FileSetting[];
  /** Fixed flags that the services reading the file need so that the file works as intended. */
  readonly companions: readonly CompanionFlag[];
  /**
   * Services that read the file, which are the services of `settings`. A node restarts those of
   * them it runs when the file changes.
   */
  readonly consumers: readonly Service[];
}

export interface SubjectSpec {
  readonly commonName: string;
  readonly organizations: readonly string[];
}

export interface SanSet {
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
}

/** Inputs a builder needs to compute per-node values. */
export interface NodeContext {
  readonly inventory: Inventory;
  readonly node: NodeSpec;
}

/** A ClusterRoleBinding the identity needs before the cluster accepts it. */
export interface RequiredBinding {
  readonly clusterRole: string;
  readonly subjectKind: 'User' | 'Group';
  readonly subjectName: string;
}

/** Computes the bindings an identity needs; empty when a built-in binding already covers it. */
export type BindingsBuilder = (inventory: Inventory) => readonly RequiredBinding[];

export interface CaEntry {
  readonly kind: 'ca';
  readonly name: CaName;
  readonly description: string;
  readonly commonName: string;
  /** When this returns true the CA has no key of its own and its files carry `ca`'s certificate. */
  readonly sharedWith?: { readonly when: (pki: Pick<PkiSpec, 'layout' | 'etcdCA'>) => boolean; readonly ca: CaName };
  /** The trust file: this CA alone, or the old and the new CA while the CA rotates. */
  readonly certificate: FileSpec;
  /** Present only when some role must hold the CA key (the controller-manager's CSR signer). */
  readonly privateKey?: FileSpec;
  /** The certificate that matches `privateKey`, alone even while the CA rotates; present with `privateKey`. */
  readonly signerCertificate?: FileSpec;
}

export interface KeyPairEntry {
  readonly kind: 'keypair';
  readonly name: 'service-account';
  readonly description: string;
  readonly privateKey: FileSpec;
  readonly publicKey: FileSpec;
}

export interface LeafEntry {
  readonly kind: 'leaf';
  readonly name: string;
  readonly description: string;
  readonly parent: CaName;
  readonly subject: (context: NodeContext) => SubjectSpec;
  readonly extKeyUsage: readonly ExtKeyUsage[];
  readonly sans: (context: NodeContext) => SanSet;
  readonly certificate: FileSpec;
  readonly privateKey: FileSpec;
  readonly requiredBindings?: BindingsBuilder;
  /** The node receives the entry only when this returns true; every node with a receiving role otherwise. */
  readonly when?: (context: NodeContext) => boolean;
}

export interface KubeconfigEntry {
  readonly kind: 'kubeconfig';
  readonly name: string;
  readonly description: string;
  readonly parent: CaName;
  readonly subject: (context: NodeContext) => SubjectSpec;
  /** The API server URL written into the kubeconfig. */
  readonly server: (context: NodeContext) => string;
  readonly file: FileSpec;
  readonly requiredBindings?: BindingsBuilder;
  /** The node receives the entry only when this returns true; every node with a receiving role otherwise. */
  readonly when?: (context: NodeContext) => boolean;
}

export type CatalogueEntry = CaEntry | KeyPairEntry | LeafEntry | KubeconfigEntry;
