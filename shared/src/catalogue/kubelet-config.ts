/**
 * The kubelet configuration drop-in that kubetrust owns on each worker. It is a partial
 * KubeletConfiguration (kubelet.config.k8s.io/v1beta1) with the fields that tie the kubelet to the
 * credentials kubetrust manages, so those fields reach the node with the files.
 *
 * The kubelet reads it only when it runs with `--config-dir` naming the file's directory. The
 * Kubernetes page "Set Kubelet Parameters Via A Configuration File" gives the rules: the kubelet
 * reads only files whose names end in `.conf`, in the order of their whole file names, and a later
 * file overrides an earlier one field by field. Command-line flags override every file. Each file
 * needs its own apiVersion and kind, because the kubelet does not start with a file that lacks
 * them. Kubernetes 1.30 and later read the directory as is, while 1.28 and 1.29 also need the
 * environment variable KUBELET_CONFIG_DROPIN_DIR_ALPHA set for the kubelet.
 */
import * as path from 'node:path';
import type { Inventory, KubeletCredentials, NodeSpec } from '../inventory/types';

/** Name of the drop-in in plans and reports, and the prefix of its `pki.pathOverrides` key. */
export const KUBELET_DROP_IN_NAME = 'kubelet-drop-in';

/** Path of the drop-in in both path layouts: `50-` leaves room for files that must come before or after it. */
export const KUBELET_DROP_IN_PATH = '/etc/kubernetes/kubelet.conf.d/50-kubetrust.conf';

/** The kubelet skips every file in its `--config-dir` whose name does not end with this. */
export const KUBELET_DROP_IN_SUFFIX = '.conf';

export const KUBELET_CONFIG_API_VERSION = 'kubelet.config.k8s.io/v1beta1';

/** Paths on the node that the drop-in's fields name. */
export interface KubeletDropInPaths {
  /** The cluster CA certificate, which signs the client certificates that the kubelet accepts. */
  readonly clientCaFile: string;
  /** The serving certificate and key that kubetrust issues. They are present for a pre-provisioned kubelet only. */
  readonly tlsCertFile?: string;
  readonly tlsPrivateKeyFile?: string;
}

/** One field of the drop-in, as a dotted path such as `authentication.x509.clientCAFile`. */
export interface KubeletDropInField {
  readonly field: string;
  readonly value: string | boolean;
}

/**
 * Lists the fields kubetrust sets for a kubelet with `credentials`.
 *
 * A bootstrapping kubelet rotates its client certificate (`rotateCertificates`) and requests its
 * serving certificate from the cluster (`serverTLSBootstrap`), which `controller csr approve`
 * approves.
 *
 * A pre-provisioned kubelet gets a drop-in too, with both switched off and its serving certificate
 * named, for three reasons. Its kubeconfig and serving certificate come from kubetrust, so a kubelet
 * that rotated them itself would replace what the next distribute checks and renews. With
 * `serverTLSBootstrap: true` left over in any file, the kubelet ignores `tlsCertFile` and requests
 * its own serving certificate, so the one kubetrust issues goes unused. And distribute never
 * removes a file, so a node that switched from bootstrap to pre-provisioned would otherwise keep
 * its old drop-in unchanged.
 */
export function kubeletDropInFields(credentials: KubeletCredentials, paths: KubeletDropInPaths): KubeletDropInField[] {
  const fields: KubeletDropInField[] = [{ field: 'authentication.x509.clientCAFile', value: paths.clientCaFile }];
  if (credentials === 'bootstrap') {
    fields.push({ field: 'rotateCertificates', value: true }, { field: 'serverTLSBootstrap', value: true });
    return fields;
  }
  if (paths.tlsCertFile === undefined || paths.tlsPrivateKeyFile === undefined) throw new Error('a pre-provisioned kubelet needs the paths of its serving certificate and key');
  fields.push(
    { field: 'rotateCertificates', value: false },
    { field: 'serverTLSBootstrap', value: false },
    { field: 'tlsCertFile', value: paths.tlsCertFile },
    { field: 'tlsPrivateKeyFile', value: paths.tlsPrivateKeyFile },
  );
  return fields;
}

/** Renders a scalar as YAML: booleans bare, strings double-quoted, which is also JSON string syntax. */
function yamlScalar(value: string | boolean): string {
  return typeof value === 'boolean' ? String(value) : JSON.stringify(value);
}

/**
 * Renders the drop-in file for `node`. The output depends only on its arguments, so the controller
 * compares the SHA-256 of the node's file with it to plan a change.
 */
export function renderKubeletDropIn(inventory: Inventory, node: NodeSpec, credentials: KubeletCredentials, paths: KubeletDropInPaths, dropInPath: string): string {
  const fields = kubeletDropInFields(credentials, paths);
  const lines = [
    `# Written by kubetrust for node ${node.name} of cluster ${inventory.name} (kubelet.credentials: ${credentials}).`,
    '# The next `controller distribute` replaces any edit. The kubelet reads this file only when it runs',
    `# with --config-dir=${path.posix.dirname(dropInPath)}, and command-line flags override its fields.`,
    `apiVersion: ${KUBELET_CONFIG_API_VERSION}`,
    'kind: KubeletConfiguration',
  ];
  // Fields are written in the order of kubeletDropInFields, each nested under its dotted parents.
  let open: string[] = [];
  for (const { field, value } of fields) {
    const parts = field.split('.');
    const parents = parts.slice(0, -1);
    let shared = 0;
    while (shared < parents.length && shared < open.length && parents[shared] === open[shared]) shared += 1;
    for (let depth = shared; depth < parents.length; depth += 1) lines.push(`${'  '.repeat(depth)}${parents[depth]}:`);
    open = parents;
    lines.push(`${'  '.repeat(parents.length)}${parts[parts.length - 1]}: ${yamlScalar(value)}`);
  }
  return lines.join('\n') + '\n';
}

/** Checks a `pki.pathOverrides` value for the drop-in. Returns the problem, or undefined when the kubelet reads that path. */
export function kubeletDropInPathProblem(dropInPath: string): string | undefined {
  if (!path.posix.basename(dropInPath).endsWith(KUBELET_DROP_IN_SUFFIX)) {
    return `the kubelet reads only files whose names end with ${KUBELET_DROP_IN_SUFFIX} from its --config-dir, so it would ignore ${dropInPath}`;
  }
  return undefined;
}
