/**
 * The validated cluster inventory. Parsing and validation live in `./parse.ts`; everything else in
 * kubetrust reads only these readonly shapes, never raw YAML.
 */
import type { KeyAlgorithm } from '../pki/keys';

export const ROLES = ['etcd', 'master', 'worker'] as const;
export type Role = (typeof ROLES)[number];

export const PKI_LAYOUTS = ['kubeadm', 'single-ca'] as const;
/** kubeadm: separate cluster, etcd and front-proxy CAs. single-ca: one cluster CA, front-proxy CA kept separate. */
export type PkiLayout = (typeof PKI_LAYOUTS)[number];

export const KUBELET_CREDENTIALS = ['pre-provisioned', 'bootstrap'] as const;
/**
 * pre-provisioned: kubetrust issues the kubelet's client and serving certificates. bootstrap: the
 * kubelet obtains them through TLS bootstrapping with a bootstrap token.
 */
export type KubeletCredentials = (typeof KUBELET_CREDENTIALS)[number];

export const ETCD_CA_MODES = ['separate', 'shared'] as const;
/** separate: etcd has its own CA. shared: etcd trusts the cluster CA (single-ca layout only). */
export type EtcdCaMode = (typeof ETCD_CA_MODES)[number];

export const PATH_LAYOUTS = ['kubeadm', 'cfssl'] as const;
/** kubeadm: /etc/kubernetes/pki/*.crt and *.key. cfssl: /etc/kubernetes/ssl/*.pem as kubeasz-style clusters name them. */
export type PathLayout = (typeof PATH_LAYOUTS)[number];

export interface AgentEndpoint {
  /** As written or defaulted, for example `127.0.1.11:7443` or `[2001:db8::31]:7443`. */
  readonly endpoint: string;
  /** Host part without brackets: an IP address or a DNS name. */
  readonly host: string;
  readonly port: number;
}

/** The agent of one node: where it listens, and where its own files are installed. */
export interface NodeAgent extends AgentEndpoint {
  /**
   * Directory on the node below which the agent's own files (program, configuration, state) are
   * installed, such as `/` in production. Absolute, without a trailing slash unless it is `/`.
   */
  readonly prefix: string;
}

/** The SSH jump host through which a node is reached. */
export interface SshJumpHost {
  readonly host: string;
  readonly port: number;
  /** Defaults to the node's SSH user. */
  readonly user: string;
  /** Defaults to the node's private key file. */
  readonly privateKeyFile: string | undefined;
}

/**
 * How `controller bootstrap` logs in to a node over SSH: `spec.ssh` merged with the node's own
 * `ssh` mapping, with every default filled in. File paths are absolute.
 */
export interface SshSettings {
  /** IP address or DNS name, the node's first address by default. */
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly privateKeyFile: string | undefined;
  /** Name of the environment variable that holds the private key's passphrase, never the passphrase. */
  readonly passphraseEnv: string | undefined;
  /** Whether to offer the keys of the ssh-agent at `agentSocket`. */
  readonly agent: boolean;
  /** `SSH_AUTH_SOCK` when the inventory was read, or undefined when it was not set. */
  readonly agentSocket: string | undefined;
  readonly jumpHost: SshJumpHost | undefined;
  /** Whether commands that need root run through `sudo -n`; true by default for users other than root. */
  readonly sudo: boolean;
  readonly knownHostsFile: string;
  /** Pinned host key as `ssh-keygen -lf` prints it (`SHA256:` and unpadded base64); it takes precedence over the known hosts file. */
  readonly hostKeyFingerprint: string | undefined;
}

export interface NodeSpec {
  readonly name: string;
  readonly addresses: readonly string[];
  readonly hostnames: readonly string[];
  readonly roles: readonly Role[];
  readonly agent: NodeAgent;
  readonly ssh: SshSettings;
  /** The node's own setting, or the cluster-wide one. Used only where a kubelet runs. */
  readonly kubelet: { readonly credentials: KubeletCredentials };
}

export interface ApiServerSpec {
  /** The URL clients use, for example `https://192.0.2.100:6443`. */
  readonly endpoint: string;
  /** Host part of the endpoint without brackets. */
  readonly host: string;
  readonly hostIsIP: boolean;
  readonly port: number;
  readonly extraSANs: readonly string[];
}

export interface PkiSpec {
  readonly layout: PkiLayout;
  readonly keyAlgorithm: KeyAlgorithm;
  /** Validity of CA certificates, in milliseconds. */
  readonly caValidityMs: number;
  /** Validity of leaf certificates, in milliseconds. */
  readonly certValidityMs: number;
  readonly etcdCA: EtcdCaMode;
  readonly pathLayout: PathLayout;
  /** Node paths that replace the layout's path of one catalogue file, keyed like `apiserver.certificate`. */
  readonly pathOverrides: Readonly<Record<string, string>>;
}

export interface Inventory {
  readonly name: string;
  readonly clusterDomain: string;
  /** One or two CIDRs (an IPv4/IPv6 pair for dual-stack), as kube-apiserver's --service-cluster-ip-range takes them. */
  readonly serviceCIDRs: readonly string[];
  readonly apiServer: ApiServerSpec;
  readonly pki: PkiSpec;
  /** Group of the admin kubeconfig's certificate: system:masters, or a group bound to a role. */
  readonly admin: { readonly group: string };
  readonly kubelet: { readonly credentials: KubeletCredentials };
  readonly nodes: readonly NodeSpec[];
}

/** One problem found in an inventory: where, what was found, and how to fix it. */
export interface InventoryIssue {
  /** Field path such as `spec.nodes[2].addresses[0]`. */
  readonly path: string;
  readonly message: string;
  readonly fix: string;
}

export class InventoryError extends Error {
  constructor(
    readonly source: string,
    readonly issues: readonly InventoryIssue[],
  ) {
    super(
      `invalid inventory ${source}:\n` +
        issues.map((issue) => `  ${issue.path}: ${issue.message}; ${issue.fix}`).join('\n'),
    );
    this.name = 'InventoryError';
  }
}

export interface ParsedInventory {
  readonly inventory: Inventory;
  /** Accepted but questionable choices, such as an even number of etcd members. */
  readonly warnings: readonly InventoryIssue[];
}
