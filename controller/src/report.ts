/**
 * Human-readable and JSON renderings of command results. JSON goes to stdout as one document so
 * automation can parse it; logs stay on stderr.
 */
import { SERVICES } from '@kubetrust/shared/dist/catalogue';
import type { DistributeReport, NodeReport, PlanEntry } from './distribute';
import type { InitResult } from './init';

export function renderInit(result: InitResult): string {
  const lines = [`State directory: ${result.stateDir}`];
  for (const item of result.items) {
    lines.push(`  ${item.status === 'created' ? 'created' : 'reused '}  ${item.name.padEnd(26)} ${item.path}${item.notAfter ? `  (expires ${item.notAfter})` : ''}`);
  }
  return lines.join('\n') + '\n';
}

/** Describes the names of a new certificate: every name, or what changes against the one installed. */
function sanChange(entry: PlanEntry): string {
  const next = [...(entry.next?.dnsNames ?? []), ...(entry.next?.ipAddresses ?? [])];
  if (entry.current === undefined) return next.length > 0 ? `, SANs ${next.join(', ')}` : '';
  const current = [...entry.current.dnsNames, ...entry.current.ipAddresses];
  const added = next.filter((name) => !current.includes(name));
  const removed = current.filter((name) => !next.includes(name));
  return (added.length > 0 ? `, SANs added: ${added.join(', ')}` : '') + (removed.length > 0 ? `, SANs removed: ${removed.join(', ')}` : '');
}

function renderPlan(node: NodeReport, dryRun: boolean): string[] {
  const lines: string[] = [];
  for (const entry of node.plan) {
    if (entry.action === 'unchanged') continue;
    lines.push(`    ${entry.action.padEnd(6)} ${entry.name} (${entry.reasons.join('; ')})`);
    if (entry.current !== undefined) {
      const label = dryRun ? 'installed now' : 'replaced';
      lines.push(`           ${label}: serial ${entry.current.serialNumber}, expires ${entry.current.notAfter}`);
    }
    if (entry.next !== undefined && dryRun) lines.push(`           new: expires ${entry.next.notAfter}${sanChange(entry)}`);
  }
  return lines;
}

/**
 * Renders one row per node: status, rollout step, and the files written and services restarted (or,
 * in a dry run, the items to change and the services to restart).
 */
function summaryTable(report: DistributeReport): string[] {
  const restarts = (node: NodeReport): string[] =>
    report.dryRun ? SERVICES.filter((service) => node.plan.some((entry) => entry.restarts.includes(service)) || node.pendingRestarts.includes(service)) : [...node.restartedServices];
  const rows = (report.dryRun ? inRolloutOrder(report.nodes) : [...report.nodes].sort((a, b) => (a.rollout?.step ?? Infinity) - (b.rollout?.step ?? Infinity))).map((node) => [
    node.name,
    node.status,
    node.rollout === undefined ? '-' : `${node.rollout.step} ${node.rollout.phase}`,
    String(report.dryRun ? node.plan.filter((entry) => entry.action !== 'unchanged').length : node.changedFiles.length),
    restarts(node).join(', ') || '-',
  ]);
  const header = ['NODE', 'STATUS', 'STEP', report.dryRun ? 'ITEMS' : 'FILES', report.dryRun ? 'WOULD RESTART' : 'RESTARTED'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const format = (row: readonly string[]): string => `  ${row.map((cell, column) => (column === 3 ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!))).join('  ')}`.trimEnd();
  return ['', format(header), ...rows.map(format)];
}

/** Orders a dry run's nodes as the rollout would change them; nodes without a change follow in inventory order. */
function inRolloutOrder(nodes: readonly NodeReport[]): NodeReport[] {
  const step = (node: NodeReport): number => node.rollout?.step ?? Number.MAX_SAFE_INTEGER;
  return nodes.map((node, index) => ({ node, index })).sort((a, b) => step(a.node) - step(b.node) || a.index - b.index).map(({ node }) => node);
}

export function renderDistribute(report: DistributeReport): string {
  const lines: string[] = [];
  lines.push(report.dryRun ? `Plan for cluster ${report.cluster} (dry run: nothing is issued, written or restarted)` : `Distribute to cluster ${report.cluster}`);
  if (report.interrupted !== undefined) {
    const { startedAt, finished, total } = report.interrupted;
    lines.push(`  The rollout started at ${startedAt} stopped after ${finished} of ${total} nodes; this ${report.dryRun ? 'plan' : 'run'} starts again from what the nodes hold.`);
  }
  for (const node of report.dryRun ? inRolloutOrder(report.nodes) : report.nodes) {
    const unchanged = node.plan.filter((entry) => entry.action === 'unchanged').length;
    const position = node.rollout === undefined ? '' : `, step ${node.rollout.step} (${node.rollout.phase})`;
    lines.push(`  ${node.name}: ${node.status}${position}${node.plan.length > 0 ? ` (${unchanged} of ${node.plan.length} items unchanged)` : ''}`);
    lines.push(...renderPlan(node, report.dryRun));
    if (node.pendingRestarts.length > 0) lines.push(`    restart pending after an earlier failure: ${node.pendingRestarts.join(', ')}`);
    if (report.dryRun) {
      const restarts = SERVICES.filter((service) => node.plan.some((entry) => entry.restarts.includes(service)) || node.pendingRestarts.includes(service));
      if (restarts.length > 0) lines.push(`    would restart: ${restarts.join(', ')}`);
    } else {
      if (node.changedFiles.length > 0) lines.push(`    files written: ${node.changedFiles.join(', ')}`);
      if (node.removedFiles !== undefined) lines.push(`    files removed: ${node.removedFiles.join(', ')}`);
      if (node.rolledBackFiles !== undefined) lines.push(`    rolled back: ${node.rolledBackFiles.join(', ')}`);
      if (node.restartedServices.length > 0) lines.push(`    restarted: ${node.restartedServices.join(', ')}`);
    }
    // The error already quotes every failed check; list them separately only when there is none.
    if (node.error === undefined) {
      for (const service of node.services.filter((result) => !result.healthy)) lines.push(`    unhealthy: ${service.name} (${service.check}): ${service.output}`);
    }
    if (node.kubeletBootstrap !== undefined && !(node.kubeletBootstrap.state === 'would-issue-token' && report.dryRun)) {
      // A dry run already shows the planned token in the plan entry above.
      lines.push(`    kubelet bootstrap: ${node.kubeletBootstrap.state}: ${node.kubeletBootstrap.message}`);
    }
    if (node.error !== undefined) lines.push(`    error: ${node.error}`);
  }
  lines.push(...summaryTable(report));
  const count = (status: string): number => report.nodes.filter((node) => node.status === status).length;
  lines.push(
    report.dryRun
      ? `${count('planned')} node(s) would change, ${count('unchanged')} unchanged, ${count('failed')} failed`
      : `${count('changed')} node(s) changed, ${count('unchanged')} unchanged, ${count('failed')} failed, ${count('rolled-back')} rolled back, ${count('skipped')} skipped`,
  );
  return lines.join('\n') + '\n';
}

/** Builds the JSON document that `distribute --output json` prints. */
export function distributeJson(report: DistributeReport): unknown {
  return {
    cluster: report.cluster,
    dryRun: report.dryRun,
    ...(report.interrupted !== undefined ? { interrupted: report.interrupted } : {}),
    nodes: report.nodes.map((node) => ({
      name: node.name,
      status: node.status,
      changedFiles: node.changedFiles,
      ...(node.removedFiles !== undefined ? { removedFiles: node.removedFiles } : {}),
      restartedServices: node.restartedServices,
      pendingRestarts: node.pendingRestarts,
      ...(node.rolledBackFiles !== undefined ? { rolledBackFiles: node.rolledBackFiles } : {}),
      ...(node.error !== undefined ? { error: node.error } : {}),
      ...(node.kubeletBootstrap !== undefined ? { kubeletBootstrap: node.kubeletBootstrap } : {}),
      ...(node.rollout !== undefined ? { rollout: node.rollout } : {}),
      services: node.services,
      plan: node.plan,
    })),
  };
}
