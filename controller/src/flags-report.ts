/**
 * `controller plan --flags`: the flags and configuration fields that wire each service of one node
 * to the files kubetrust installs there, printed ready to paste into unit files and configuration
 * files, or as one JSON document.
 */
import { KUBELET_DROP_IN_NAME, itemsForNode, servicesForNode, type Service } from '@kubetrust/shared/dist/catalogue';
import { flagsForNode, kubeletDropInFlags, type ComponentFlag } from '@kubetrust/shared/dist/catalogue/flags';
import { kubeletBootstrapFlags } from '@kubetrust/shared/dist/catalogue/kubelet-bootstrap';
import type { Inventory, PathLayout } from '@kubetrust/shared/dist/inventory';
import { findNode } from './enroll';

export interface FlagsReport {
  readonly cluster: string;
  readonly node: string;
  readonly pathLayout: PathLayout;
  /** Services the node runs, in restart order. */
  readonly services: readonly Service[];
  readonly flags: readonly ComponentFlag[];
  /** Path of the kubelet drop-in that kubetrust writes with the KubeletConfiguration fields. It is absent on a node without a kubelet. */
  readonly kubeletDropIn?: string;
}

/** Computes the flags report of `nodeName`. An unknown node raises a StateError that lists the valid nodes. */
export function buildFlagsReport(inventory: Inventory, nodeName: string): FlagsReport {
  const node = findNode(inventory, nodeName);
  const services = servicesForNode(node);
  const dropIn = itemsForNode(inventory, node).find((item) => item.name === KUBELET_DROP_IN_NAME);
  return {
    cluster: inventory.name,
    node: node.name,
    pathLayout: inventory.pki.pathLayout,
    services,
    // Services come in restart order, and a bootstrapping kubelet's own settings follow its file settings.
    flags: [...flagsForNode(inventory, node), ...kubeletDropInFlags(inventory, node), ...kubeletBootstrapFlags(inventory, node)].sort((a, b) => services.indexOf(a.service) - services.indexOf(b.service)),
    ...(dropIn?.type === 'static' ? { kubeletDropIn: dropIn.file.path } : {}),
  };
}

/** Quotes a value for a systemd ExecStart line or a shell when it contains a space, a quote or a backslash. */
function quoted(value: string): string {
  return /[\s"'\\]/.test(value) ? JSON.stringify(value) : value;
}

/** Renders the blocks of one service: its command-line flags, then one block per configuration file kind. */
function renderService(service: Service, flags: readonly ComponentFlag[], kubeletDropIn: string | undefined): string[][] {
  const own = flags.filter((flag) => flag.service === service);
  if (own.length === 0) return [[`${service}: no setting names a file that kubetrust installs on this node`]];
  const blocks: string[][] = [];
  const commandLine = own.filter((flag) => flag.kind === 'flag');
  if (commandLine.length > 0) {
    // Every line ends with a backslash so that it can be pasted anywhere inside a multi-line ExecStart.
    blocks.push([`${service} flags:`, ...commandLine.map((flag) => `  ${flag.flag}=${quoted(flag.value)} \\`)]);
  }
  const configKinds = [...new Set(own.flatMap((flag) => (flag.configKind === undefined ? [] : [flag.configKind])))];
  for (const configKind of configKinds) {
    const fields = own.filter((flag) => flag.configKind === configKind).map((flag) => `  ${flag.flag}: ${flag.value}`);
    const written = configKind === 'KubeletConfiguration' && kubeletDropIn !== undefined ? [`  (distribute writes these fields into ${kubeletDropIn}, which the kubelet reads through --config-dir)`] : [];
    blocks.push([`${service} ${configKind} fields:`, ...fields, ...written]);
  }
  return blocks;
}

export function renderFlags(report: FlagsReport): string {
  const lines = [`Settings that point the services of node ${report.node} (cluster ${report.cluster}, path layout ${report.pathLayout}) at their files`];
  for (const block of report.services.flatMap((service) => renderService(service, report.flags, report.kubeletDropIn))) {
    lines.push('', ...block);
  }
  return lines.join('\n') + '\n';
}

/** Builds the JSON document that `plan --flags --output json` prints. */
export function flagsJson(report: FlagsReport): unknown {
  return {
    cluster: report.cluster,
    node: report.node,
    pathLayout: report.pathLayout,
    services: report.services,
    flags: report.flags,
    ...(report.kubeletDropIn !== undefined ? { kubeletDropIn: report.kubeletDropIn } : {}),
  };
}
