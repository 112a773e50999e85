/**
 * Files and settings of a TLS-bootstrapping kubelet (a worker with `kubelet.credentials:
 * bootstrap`). kubetrust installs only the bootstrap kubeconfig there. The kubelet writes its own
 * client certificate into `--cert-dir` and its own kubeconfig at `--kubeconfig`, so those paths
 * are not catalogue items, but the controller and the agent read them to see whether the kubelet
 * has registered.
 *
 * Flag and field names are those of the kubelet command-line reference and KubeletConfiguration
 * (kubelet.config.k8s.io/v1beta1); the file names follow kubeadm (`bootstrap-kubelet.conf`,
 * `kubelet-client-current.pem`).
 */
import * as path from 'node:path';
import type { Inventory, NodeSpec, PathLayout } from '../inventory/types';
import { CATALOGUE } from './catalogue';
import type { ComponentFlag } from './flags';
import { itemsForNode, overrideKey, type ResolvedFile } from './select';
import type { CaEntry, KubeconfigEntry } from './types';

/** Name of the bootstrap kubeconfig in plans and reports, and the prefix of its `pki.pathOverrides` key. */
export const BOOTSTRAP_KUBECONFIG_NAME = 'bootstrap-kubelet.conf';

/** Paths of the bootstrap kubeconfig in each path layout. */
export const BOOTSTRAP_KUBECONFIG_PATHS: Readonly<Record<PathLayout, string>> = {
  kubeadm: '/etc/kubernetes/bootstrap-kubelet.conf',
  cfssl: '/etc/kubernetes/bootstrap-kubelet.kubeconfig',
};

/** The kubelet's default `--cert-dir`, in both path layouts. */
export const KUBELET_CERT_DIR = '/var/lib/kubelet/pki';

/** The symlink to the kubelet's current client certificate and key, inside `--cert-dir`. */
export const KUBELET_CLIENT_CERTIFICATE_FILE = 'kubelet-client-current.pem';

export interface KubeletBootstrapFiles {
  /** The bootstrap kubeconfig: mode 0600, owned by root, read by the kubelet. */
  readonly bootstrapKubeconfig: ResolvedFile;
  /** `--kubeconfig`: the kubeconfig the kubelet writes after it has its client certificate. */
  readonly kubeconfigPath: string;
  readonly certDir: string;
  /** The client certificate file whose appearance means the kubelet has registered. */
  readonly clientCertificatePath: string;
  /** The cluster CA file on the node, which signs the kubelet's client certificate. */
  readonly caPath: string;
}

/** Returns true when the node's kubelet joins by TLS bootstrapping. */
export function bootstrapsKubelet(node: NodeSpec): boolean {
  return node.roles.includes('worker') && node.kubelet.credentials === 'bootstrap';
}

function layoutPath(inventory: Inventory, key: string, paths: Readonly<Record<PathLayout, string>>): string {
  return inventory.pki.pathOverrides[key] ?? paths[inventory.pki.pathLayout];
}

/**
 * Resolves the bootstrap files of `node`, with the path layout and `pki.pathOverrides` applied.
 * Returns undefined for a node whose kubelet does not bootstrap.
 */
export function kubeletBootstrapFiles(inventory: Inventory, node: NodeSpec): KubeletBootstrapFiles | undefined {
  if (!bootstrapsKubelet(node)) return undefined;
  const kubeletConf = CATALOGUE.find((entry): entry is KubeconfigEntry => entry.kind === 'kubeconfig' && entry.name === 'kubelet.conf');
  const clusterCa = CATALOGUE.find((entry): entry is CaEntry => entry.kind === 'ca' && entry.name === 'cluster-ca');
  if (kubeletConf === undefined || clusterCa === undefined) throw new Error('catalogue has no kubelet.conf or cluster-ca entry');
  const caItem = itemsForNode(inventory, node).find((item) => item.type === 'static' && 'ca' in item.source && item.source.ca === 'cluster-ca' && item.source.part === 'certificate');
  const caPath = caItem?.type === 'static' ? caItem.file.path : layoutPath(inventory, overrideKey('cluster-ca', 'certificate'), clusterCa.certificate.path);
  return {
    bootstrapKubeconfig: {
      path: layoutPath(inventory, overrideKey(BOOTSTRAP_KUBECONFIG_NAME, 'file'), BOOTSTRAP_KUBECONFIG_PATHS),
      mode: 0o600,
      uid: 0,
      gid: 0,
      consumers: ['kubelet'],
    },
    kubeconfigPath: layoutPath(inventory, overrideKey('kubelet.conf', 'file'), kubeletConf.file.path),
    certDir: KUBELET_CERT_DIR,
    clientCertificatePath: path.posix.join(KUBELET_CERT_DIR, KUBELET_CLIENT_CERTIFICATE_FILE),
    caPath,
  };
}

/**
 * Lists the kubelet settings that TLS bootstrapping needs on `node`, besides the cluster CA file
 * that `flagsForNode` already names: the three paths, client certificate rotation, and serving
 * certificates requested from the cluster (`serverTLSBootstrap`), which `controller csr approve`
 * approves. Empty for a node whose kubelet does not bootstrap.
 */
export function kubeletBootstrapFlags(inventory: Inventory, node: NodeSpec): ComponentFlag[] {
  const files = kubeletBootstrapFiles(inventory, node);
  if (files === undefined) return [];
  const source = BOOTSTRAP_KUBECONFIG_NAME;
  return [
    { service: 'kubelet', kind: 'flag', flag: '--bootstrap-kubeconfig', value: files.bootstrapKubeconfig.path, source },
    { service: 'kubelet', kind: 'flag', flag: '--kubeconfig', value: files.kubeconfigPath, source },
    { service: 'kubelet', kind: 'flag', flag: '--cert-dir', value: files.certDir, source },
    { service: 'kubelet', kind: 'config', configKind: 'KubeletConfiguration', flag: 'rotateCertificates', value: 'true', source },
    { service: 'kubelet', kind: 'config', configKind: 'KubeletConfiguration', flag: 'serverTLSBootstrap', value: 'true', source },
  ];
}
