/**
 * The controller's access to the Kubernetes API: writing its API kubeconfig into the state
 * directory, and opening a KubeClient from that file or from one named on the command line.
 *
 * Reads: the cluster CA in the state directory (`pki/cluster-ca.crt` and `.key`).
 * Writes: `kubernetes/controller.kubeconfig` (mode 0600) and `kubernetes/controller-rbac.yaml`.
 */
import * as fs from 'node:fs/promises';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import { readFileIfExists, writeFileAtomic } from '@kubetrust/shared/dist/files';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { CaRotationFiles, issuerOf, trustPem } from './ca-rotation-state';
import type { KubeClient } from './kubelet-bootstrap/client';
import { CONTROLLER_API_USER, controllerRbacManifest, issueControllerApiCredentials } from './kubelet-bootstrap/controller-identity';
import { StateDir } from './state-dir';

/** Invalid or missing input for a Kubernetes API command, such as a missing kubeconfig; the CLI exits with 2. */
export class KubeApiInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeApiInputError';
  }
}

export function controllerKubeconfigPath(stateDir: string): string {
  return new StateDir(stateDir).path('kubernetes', 'controller.kubeconfig');
}

export function controllerRbacManifestPath(stateDir: string): string {
  return new StateDir(stateDir).path('kubernetes', 'controller-rbac.yaml');
}

export interface KubeCredentialsResult {
  readonly kubeconfigPath: string;
  readonly rbacManifestPath: string;
  readonly user: string;
  readonly server: string;
  readonly notAfter: string;
}

/**
 * Issues a new client certificate for the controller's API user, signed by the cluster CA, and
 * writes its kubeconfig for the inventory's apiServer.endpoint and the RBAC manifest that the
 * user needs. Every run makes a new key and replaces both files.
 */
export async function writeKubeCredentials(inventory: Inventory, stateDir: string, now: Date): Promise<KubeCredentialsResult> {
  const state = new StateDir(stateDir);
  const unlock = await state.lock();
  try {
    // While the cluster CA rotates, the client certificate comes from the CA of the phase and the kubeconfig trusts both CAs.
    const rotation = new CaRotationFiles(state);
    const generations = await rotation.generations('cluster-ca', await rotation.record(), 'cluster CA');
    const credentials = await issueControllerApiCredentials({
      inventory,
      clusterCa: issuerOf(generations, 'client', 'cluster-ca'),
      certificateAuthorityPem: trustPem(generations, 'cluster-ca'),
      now,
    });
    await fs.mkdir(state.path('kubernetes'), { recursive: true, mode: 0o700 });
    const kubeconfigPath = controllerKubeconfigPath(stateDir);
    const rbacManifestPath = controllerRbacManifestPath(stateDir);
    await writeFileAtomic(kubeconfigPath, credentials.kubeconfig, { mode: 0o600 });
    await writeFileAtomic(rbacManifestPath, controllerRbacManifest(), { mode: 0o644 });
    return { kubeconfigPath, rbacManifestPath, user: CONTROLLER_API_USER, server: inventory.apiServer.endpoint, notAfter: credentials.notAfter.toISOString() };
  } finally {
    await unlock();
  }
}

export interface KubeApiSource {
  /** A kubeconfig file named on the command line; it takes precedence over the state directory. */
  readonly kubeconfig?: string;
  readonly stateDir?: string;
}

export interface KubeApi {
  readonly client: KubeClient;
  readonly kubeconfigPath: string;
  /** The cluster CA from the kubeconfig, which the bootstrap kubeconfigs embed as well. */
  readonly clusterCaPem: string;
}

/** Opens a KubeClient from `--kubeconfig` or from the state directory's controller kubeconfig. Loads client-node on first use. */
export async function openKubeApi(source: KubeApiSource): Promise<KubeApi> {
  let kubeconfigPath: string;
  if (source.kubeconfig !== undefined) kubeconfigPath = source.kubeconfig;
  else if (source.stateDir !== undefined) kubeconfigPath = controllerKubeconfigPath(source.stateDir);
  else throw new KubeApiInputError('no Kubernetes API credentials: pass --state-dir with a controller kubeconfig, or --kubeconfig FILE');

  const text = await readFileIfExists(kubeconfigPath);
  if (text === undefined) {
    const fix = source.kubeconfig !== undefined ? 'check the path' : 'run `controller kube-credentials` with this --state-dir first';
    throw new KubeApiInputError(`kubeconfig ${kubeconfigPath} is missing; ${fix}`);
  }
  let clusterCaPem: string;
  try {
    clusterCaPem = parseKubeconfig(text.toString('utf8')).certificateAuthorityPem;
  } catch (error) {
    throw new KubeApiInputError(`kubeconfig ${kubeconfigPath} is invalid: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (clusterCaPem === '') throw new KubeApiInputError(`kubeconfig ${kubeconfigPath} has no certificate-authority-data; embed the cluster CA in it`);

  const { createKubeClientFromText } = await import('./kubelet-bootstrap/client-node');
  return { client: await createKubeClientFromText(text.toString('utf8')), kubeconfigPath, clusterCaPem };
}
