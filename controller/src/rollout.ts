/**
 * The order in which distribute changes nodes. Every selected node is planned first, before any
 * node changes. Then:
 *
 * 1. etcd members one at a time, each passing its health gate before the next starts, so that
 *    quorum never depends on two restarting members. A cluster being created (no member has its
 *    etcd certificates yet) is started all at once, because its first member cannot become healthy
 *    alone. If a member cannot be reached, no other member is changed.
 * 2. Masters one at a time.
 * 3. Workers in batches of `maxParallel`.
 *
 * A node whose change fails, or is rolled back after a failed health gate, stops the rollout: the
 * nodes after it are reported `skipped`. With `continueOnError`, later worker batches still run;
 * the option never applies to etcd members or masters.
 */
import type { Role } from '@kubetrust/shared/dist/inventory';
import type { NodePlan, NodeReport } from './distribute';

export type RolloutPhase = 'etcd' | 'master' | 'worker';

export interface RolloutOptions {
  /** Workers changed at the same time; default 10% of the workers, at least 1. */
  readonly maxParallel?: number;
  readonly continueOnError?: boolean;
}

/** Per-node steps the rollout calls, behind an interface so that tests can drive it without agents. */
export interface RolloutSteps {
  /**
   * Starts the slow part of a node's change that changes nothing on the node (its agent generating
   * keys) while earlier nodes are still being changed. Called for the nodes of the next batch.
   */
  prefetch?(plan: NodePlan): void;
  apply(plan: NodePlan): Promise<NodeReport>;
  skipped(plan: NodePlan, reason: string): NodeReport;
  onNodeDone?(report: NodeReport): void;
}

/** Returns the phase a node belongs to, which is its most quorum-sensitive role. */
export function phaseOf(roles: readonly Role[]): RolloutPhase {
  if (roles.includes('etcd')) return 'etcd';
  if (roles.includes('master')) return 'master';
  return 'worker';
}

export function defaultMaxParallel(workers: number): number {
  return Math.max(1, Math.ceil(workers * 0.1));
}

function failed(report: NodeReport): boolean {
  return report.status === 'failed' || report.status === 'rolled-back';
}

/** Returns true when no etcd member has its server certificate yet, so the cluster is being created. */
function etcdBeingCreated(plans: readonly NodePlan[]): boolean {
  return plans.every((plan) => plan.plan.some((entry) => entry.name === 'etcd-server' && entry.action === 'add'));
}

/**
 * Applies `plans` in batches of `size`. While a batch runs, the next batch is prefetched, and
 * `following` (the first batch of the next phase) while the last one runs.
 */
/** A node's place in the rollout: nodes with the same step change together, after every lower step. */
export interface RolloutPosition {
  readonly step: number;
  readonly phase: RolloutPhase;
}

/**
 * Returns where each node that needs a change goes in the rollout that rollOut would run, so that
 * a plan can list nodes in that order. etcd members take one step each, or one step together in a
 * new cluster. Masters take one step each, and workers one step per batch of `maxParallel`.
 */
export function rolloutPositions(plans: readonly NodePlan[], maxParallel?: number): Map<string, RolloutPosition> {
  const pending = plans.filter((plan) => plan.needsChange);
  const byPhase = (phase: RolloutPhase): NodePlan[] => pending.filter((plan) => phaseOf(plan.node.roles) === phase);
  const etcd = byPhase('etcd');
  const size = maxParallel ?? defaultMaxParallel(plans.filter((plan) => phaseOf(plan.node.roles) === 'worker').length);
  const positions = new Map<string, RolloutPosition>();
  let step = 0;
  const place = (phase: RolloutPhase, nodes: readonly NodePlan[], batchSize: number): void => {
    nodes.forEach((plan, index) => {
      if (index % batchSize === 0) step++;
      positions.set(plan.node.name, { step, phase });
    });
  };
  place('etcd', etcd, etcdBeingCreated(etcd) ? Math.max(1, etcd.length) : 1);
  place('master', byPhase('master'), 1);
  place('worker', byPhase('worker'), size);
  return positions;
}

async function runInBatches(
  plans: readonly NodePlan[],
  size: number,
  steps: RolloutSteps,
  stopAfterFailure: boolean,
  label: string,
  following: readonly NodePlan[] = [],
): Promise<{ reports: NodeReport[]; stoppedBy?: string }> {
  const reports: NodeReport[] = [];
  for (let start = 0; start < plans.length; start += size) {
    const batch = plans.slice(start, start + size);
    if (start === 0) for (const plan of batch) steps.prefetch?.(plan);
    const next = start + size < plans.length ? plans.slice(start + size, start + 2 * size) : following;
    for (const plan of next) steps.prefetch?.(plan);
    const results = await Promise.all(
      batch.map(async (plan) => {
        const report = await steps.apply(plan);
        steps.onNodeDone?.(report);
        return report;
      }),
    );
    reports.push(...results);
    const failure = results.find(failed);
    if (failure !== undefined && stopAfterFailure) {
      const rest = plans.slice(start + size).map((plan) => steps.skipped(plan, `not changed: the rollout stopped after ${label} ${failure.name} failed`));
      return { reports: [...reports, ...rest], stoppedBy: failure.name };
    }
  }
  return { reports };
}

/**
 * Changes the nodes of `plans` that need a change, in rollout order. `unreachable` names the
 * selected etcd members that could not be planned. Returns one report per changed or skipped node.
 */
export async function rollOut(plans: readonly NodePlan[], unreachableEtcd: readonly string[], steps: RolloutSteps, options: RolloutOptions = {}): Promise<NodeReport[]> {
  const pending = plans.filter((plan) => plan.needsChange);
  const byPhase = (phase: RolloutPhase): NodePlan[] => pending.filter((plan) => phaseOf(plan.node.roles) === phase);
  const etcd = byPhase('etcd');
  const masters = byPhase('master');
  const workers = byPhase('worker');
  const workerCount = plans.filter((plan) => phaseOf(plan.node.roles) === 'worker').length;
  const skipAll = (rest: readonly NodePlan[], reason: string): NodeReport[] => rest.map((plan) => steps.skipped(plan, reason));

  if (etcd.length > 0 && unreachableEtcd.length > 0) {
    const reason = `not changed: etcd member ${unreachableEtcd.join(', ')} cannot be reached, and changing another member could lose quorum; bring it back first`;
    return skipAll([...etcd, ...masters, ...workers], reason);
  }

  const size = options.maxParallel ?? defaultMaxParallel(workerCount);
  const reports: NodeReport[] = [];
  const firstOf = (phase: readonly NodePlan[], batchSize: number): readonly NodePlan[] => phase.slice(0, batchSize);
  const etcdRun = await runInBatches(etcd, etcdBeingCreated(etcd) ? etcd.length : 1, steps, true, 'etcd member', masters.length > 0 ? firstOf(masters, 1) : firstOf(workers, size));
  reports.push(...etcdRun.reports);
  if (etcdRun.stoppedBy !== undefined) return [...reports, ...skipAll([...masters, ...workers], `not changed: the rollout stopped after etcd member ${etcdRun.stoppedBy} failed`)];

  const masterRun = await runInBatches(masters, 1, steps, true, 'master', firstOf(workers, size));
  reports.push(...masterRun.reports);
  if (masterRun.stoppedBy !== undefined) return [...reports, ...skipAll(workers, `not changed: the rollout stopped after master ${masterRun.stoppedBy} failed`)];

  const workerRun = await runInBatches(workers, size, steps, options.continueOnError !== true, 'worker');
  reports.push(...workerRun.reports);
  return reports;
}
