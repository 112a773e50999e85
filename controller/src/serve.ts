/**
 * `controller serve`: the rotation daemon. Each round runs the same rollout as `controller rotate`
 * (plan, order, health gates, rollback; keys made on the nodes), then reads what every node holds
 * for the expiry metrics. Rounds follow each other on a jittered interval; after a round in which a
 * node failed, the next comes sooner, with a backoff that doubles up to the interval.
 *
 * Two rollouts never run at once: a round takes the state directory's lock like every other
 * command, and a round that finds the lock taken (an operator's `distribute`, another daemon) is
 * skipped and retried with the backoff.
 *
 * With `approveServingCsrs`, the daemon also watches kubelet serving CSRs and approves those that
 * pass the checks of `controller csr approve`, between and during rounds. An API server that cannot
 * be reached only stops the approval: rounds go on, and the watch retries with backoff.
 *
 * Reads and writes: as distribute. Serves: /metrics (Prometheus text format) and /healthz.
 */
import * as http from 'node:http';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { Counter, Gauge, Registry } from 'prom-client';
import { distribute, type DistributeReport } from './distribute';
import { checkExpiration } from './expiration';
import type { KubeClient } from './kubelet-bootstrap/client';
import { watchServingCsrs, type ServingCsrWatch } from './kubelet-bootstrap/serving-approver';
import type { RenewalPolicy } from './plan';
import { StateDir, StateError } from './state-dir';

export interface ServeOptions {
  readonly intervalMs: number;
  /** Each wait is the interval times a random factor in [1 - jitter, 1 + jitter]. */
  readonly jitter?: number;
  /** First wait after a round with a failed node; doubles after each such round, up to the interval. */
  readonly retryBaseMs?: number;
  readonly renewal?: RenewalPolicy;
  readonly metrics?: { readonly host: string; readonly port: number };
  /** Kubernetes API kubeconfig for the bootstrap tokens of each round. Defaults to `<state dir>/kubernetes/controller.kubeconfig`. */
  readonly kubeconfig?: string;
  /** Approves kubelet serving CSRs through this client while the daemon runs. */
  readonly approveServingCsrs?: { readonly client: KubeClient };
  /** Ends the daemon after the round in progress. */
  readonly signal: AbortSignal;
  readonly random?: () => number;
  /**
   * Clock for renewal decisions, issued certificates, the ledger and the expiry metrics, by default
   * the system clock. Round scheduling, /healthz and the round timestamp metric always use the
   * system clock.
   */
  readonly now?: () => Date;
  /** Maximum difference between a node's clock and `now` before the node is failed, as in distribute (default two minutes). */
  readonly maxClockSkewMs?: number;
}

export type RoundResult = 'success' | 'failure' | 'skipped';

export const DEFAULT_RETRY_BASE_MS = 30_000;
export const DEFAULT_JITTER = 0.1;

/** Returns the wait before the next round: the jittered interval, or the backoff after failures. */
export function nextDelay(intervalMs: number, failuresInARow: number, options: { jitter: number; retryBaseMs: number; random: () => number }): number {
  if (failuresInARow > 0) return Math.min(intervalMs, options.retryBaseMs * 2 ** (failuresInARow - 1));
  const factor = 1 - options.jitter + 2 * options.jitter * options.random();
  return Math.max(1, Math.round(intervalMs * factor));
}

class Metrics {
  readonly registry = new Registry();
  readonly expiry = new Gauge({ name: 'kubetrust_certificate_expiry_seconds', help: 'Seconds until the certificate on the node expires; negative once expired.', labelNames: ['node', 'certificate', 'path'], registers: [this.registry] });
  readonly lastRound = new Gauge({ name: 'kubetrust_last_rotation_timestamp_seconds', help: 'Unix time at which the last rotation round ended.', registers: [this.registry] });
  readonly lastSuccess = new Gauge({ name: 'kubetrust_last_rotation_success', help: '1 when every node of the last round succeeded, 0 when one failed or the round was skipped.', registers: [this.registry] });
  readonly renewed = new Gauge({ name: 'kubetrust_last_rotation_renewed_certificates', help: 'Certificates renewed in the last rotation round.', registers: [this.registry] });
  readonly reachable = new Gauge({ name: 'kubetrust_agents_reachable', help: 'Agents that responded in the last round.', registers: [this.registry] });
  readonly agents = new Gauge({ name: 'kubetrust_agents', help: 'Agents in the inventory.', registers: [this.registry] });
  readonly inProgress = new Gauge({ name: 'kubetrust_rollout_in_progress', help: '1 while a rotation round runs.', registers: [this.registry] });

  /** Registers the metrics of serving CSR approval, which exist only when the daemon approves. */
  approvalMetrics(): { connected: Gauge; approved: Counter; leftPending: Counter } {
    return {
      connected: new Gauge({ name: 'kubetrust_csr_watch_connected', help: '1 while the watch of kubelet serving CSRs is connected, 0 while it retries.', registers: [this.registry] }),
      approved: new Counter({ name: 'kubetrust_serving_csrs_approved_total', help: 'Kubelet serving CSRs approved since the daemon started.', registers: [this.registry] }),
      leftPending: new Counter({ name: 'kubetrust_serving_csrs_left_pending_total', help: 'Kubelet serving CSRs left pending because a check failed, each counted once.', registers: [this.registry] }),
    };
  }
}

/** Starts approving serving CSRs. The watch retries from the start, so an unreachable API server delays only the approval. */
async function startApproval(inventory: Inventory, client: KubeClient, metrics: Metrics, logger: Logger): Promise<ServingCsrWatch> {
  const approval = metrics.approvalMetrics();
  approval.connected.set(0);
  const watch = await watchServingCsrs(client, inventory, {
    logger,
    watch: { retryFirstRound: true },
    onConnection: (connected) => approval.connected.set(connected ? 1 : 0),
    onResult: (result) => (result.outcome === 'approved' ? approval.approved.inc() : approval.leftPending.inc()),
  });
  logger.info('approving kubelet serving CSRs as they arrive');
  return watch;
}

/** One certificate renewed in a round: node, item, old serial (empty for a new one) and new serial. */
interface Renewal {
  readonly node: string;
  readonly certificate: string;
  readonly oldSerial: string;
  readonly newSerial: string;
}

async function renewalsOf(report: DistributeReport, state: StateDir, since: Date): Promise<Renewal[]> {
  const issued = (await state.readLedger()).filter((entry) => Date.parse(entry.issuedAt) >= since.getTime());
  return issued.map((entry) => {
    const node = report.nodes.find((candidate) => candidate.name === entry.node);
    const planned = node?.plan.find((item) => item.name === entry.name);
    return { node: entry.node, certificate: entry.name, oldSerial: planned?.current?.serialNumber ?? '', newSerial: entry.serialNumber };
  });
}

/** Runs rounds until the signal aborts; resolves after the round in progress has ended. */
export async function serve(inventory: Inventory, stateDir: string, logger: Logger, options: ServeOptions): Promise<void> {
  const metrics = new Metrics();
  metrics.agents.set(inventory.nodes.length);
  metrics.inProgress.set(0);
  let lastRoundAt = 0;
  let server: http.Server | undefined;
  if (options.metrics !== undefined) {
    server = http.createServer((request, response) => {
      if (request.url === '/metrics') {
        metrics.registry
          .metrics()
          .then((text) => {
            response.writeHead(200, { 'content-type': metrics.registry.contentType });
            response.end(text);
          })
          .catch((error: Error) => {
            response.writeHead(500).end(error.message);
          });
      } else if (request.url === '/healthz') {
        // Healthy while rounds keep ending, so a stuck daemon returns 503 after three intervals.
        const fresh = lastRoundAt === 0 || Date.now() - lastRoundAt < 3 * options.intervalMs + 60_000;
        response.writeHead(fresh ? 200 : 503, { 'content-type': 'text/plain' }).end(fresh ? 'ok\n' : 'no rotation round ended recently\n');
      } else {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('not found; use /metrics or /healthz\n');
      }
    });
    const { host, port } = options.metrics;
    await new Promise<void>((resolve, reject) => {
      server?.once('error', (error: Error) => reject(new Error(`cannot listen on ${host}:${port} for metrics (${error.message}); choose another --metrics-address`)));
      server?.listen(port, host, () => resolve());
    });
    logger.info('metrics listening', { address: `${host}:${port}` });
  }

  const state = new StateDir(stateDir);
  const random = options.random ?? Math.random;
  const now = options.now ?? (() => new Date());
  let failuresInARow = 0;
  let approval: ServingCsrWatch | undefined;
  try {
    if (options.approveServingCsrs !== undefined) approval = await startApproval(inventory, options.approveServingCsrs.client, metrics, logger);
    while (!options.signal.aborted) {
      const started = now();
      metrics.inProgress.set(1);
      let result: RoundResult;
      try {
        const report = await distribute(inventory, stateDir, logger, {
          renewal: options.renewal ?? {},
          now,
          ...(options.maxClockSkewMs !== undefined ? { maxClockSkewMs: options.maxClockSkewMs } : {}),
          ...(options.kubeconfig !== undefined ? { kubeconfig: options.kubeconfig } : {}),
        });
        const failed = report.nodes.filter((node) => node.status === 'failed' || node.status === 'rolled-back' || node.status === 'skipped');
        const renewals = await renewalsOf(report, state, started);
        for (const renewal of renewals) logger.info('certificate renewed', { ...renewal });
        metrics.renewed.set(renewals.length);
        result = failed.length === 0 ? 'success' : 'failure';
        for (const node of failed) logger.warn('node not rotated; retrying with backoff', { node: node.name, status: node.status, error: node.error ?? '' });
      } catch (error) {
        if (error instanceof StateError && /is in use by controller process/.test(error.message)) {
          logger.warn('state directory locked by another controller; skipping this round', { error: error.message });
          result = 'skipped';
        } else {
          logger.error('rotation round failed', { error: error instanceof Error ? error.message : String(error) });
          result = 'failure';
        }
      } finally {
        metrics.inProgress.set(0);
      }
      try {
        const expiry = await checkExpiration(inventory, stateDir, logger, { now: now() });
        metrics.expiry.reset();
        for (const row of expiry.rows) if (row.node !== '') metrics.expiry.set({ node: row.node, certificate: row.name, path: row.path }, row.secondsLeft);
        const unreachable = new Set(expiry.problems.filter((problem) => problem.message.startsWith('GetState failed')).map((problem) => problem.node));
        metrics.reachable.set(inventory.nodes.length - unreachable.size);
        if (unreachable.size > 0 && result === 'success') result = 'failure';
      } catch (error) {
        logger.warn('expiry check failed', { error: error instanceof Error ? error.message : String(error) });
      }
      metrics.lastSuccess.set(result === 'success' ? 1 : 0);
      lastRoundAt = Date.now();
      metrics.lastRound.set(lastRoundAt / 1000);
      failuresInARow = result === 'success' ? 0 : failuresInARow + 1;
      const delay = nextDelay(options.intervalMs, failuresInARow, { jitter: options.jitter ?? DEFAULT_JITTER, retryBaseMs: options.retryBaseMs ?? DEFAULT_RETRY_BASE_MS, random });
      logger.info('rotation round ended', { result, nextInSeconds: Math.round(delay / 1000) });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        options.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve();
        }, { once: true });
      });
    }
  } finally {
    await approval?.stop();
    await new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve())));
  }
}
