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

export interface AgentEndpoint {
  /** As written or defaulted, for example `127.0.1.11:7443` or `[2001:db8::31]:7443`. */
  readonly endpoint: string;
  /** Host part without brackets: an IP address or a DNS name. */
  readonly host: string;
  readonly port: number;
}

export interface NodeSpec {
  readonly name: string;
  readonly addresses: readonly string[];
  readonly hostnames: readonly string[];
  readonly roles: readonly Role[];
  readonly agent: AgentEndpoint;
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
}

export interface Inventory {
  readonly name: string;
  readonly clusterDomain: string;
  /** One or two CIDRs (an IPv4/IPv6 pair for dual-stack), as kube-apiserver's --service-cluster-ip-range takes them. */
  readonly serviceCIDRs: readonly string[];
  readonly apiServer: ApiServerSpec;
  readonly pki: PkiSpec;
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
