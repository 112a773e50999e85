/**
 * Approves pending kubelet serving CSRs that pass `decideServingCsr`, once over a list or
 * continuously from a watch. A CSR that fails stays pending and its reasons are reported; kubetrust
 * never denies, so a CSR left pending by mistake can still be approved by hand.
 */
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger, type Logger } from '@kubetrust/shared/dist/log';
import { watchRetryDelay, type CsrWatchOptions, type KubeClient } from './client';
import { decideServingCsr } from './serving-approval';
import { KUBELET_SERVING_SIGNER, type CsrCondition, type CsrObject } from './types';

/** Reason of the Approved condition that kubetrust writes. */
export const APPROVAL_REASON = 'KubetrustApproved';

export type CsrPhase = 'pending' | 'approved' | 'issued' | 'denied' | 'failed';

/** Returns the CSR's phase from its conditions: Denied and Failed win over Approved, and issued means approved with a certificate. */
export function csrPhase(csr: CsrObject): CsrPhase {
  const conditions = (csr.status?.conditions ?? []).filter((condition) => condition.status === 'True');
  const has = (type: string): boolean => conditions.some((condition) => condition.type === type);
  if (has('Denied')) return 'denied';
  if (has('Failed')) return 'failed';
  if (has('Approved')) return (csr.status?.certificate ?? '') === '' ? 'approved' : 'issued';
  return 'pending';
}

/** Returns a copy of the CSR with kubetrust's Approved condition appended. */
export function withApprovalCondition(csr: CsrObject, message: string, now: Date): CsrObject {
  const condition: CsrCondition = {
    type: 'Approved',
    status: 'True',
    reason: APPROVAL_REASON,
    message,
    lastUpdateTime: now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
  return { ...csr, status: { ...csr.status, conditions: [...(csr.status?.conditions ?? []), condition] } };
}

/**
 * What happened to one serving CSR:
 * - approved: kubetrust approved it now;
 * - pending: it failed a check, or the approval call failed, and it stays pending (see `reasons`);
 * - skipped: it was not pending (already approved, issued, denied or failed).
 */
export interface ServingCsrResult {
  readonly name: string;
  readonly node: string | undefined;
  readonly outcome: 'approved' | 'pending' | 'skipped';
  readonly phase: CsrPhase;
  readonly reasons: readonly string[];
}

export interface ApproverOptions {
  readonly logger?: Logger;
  readonly now?: () => Date;
}

/** Decides on one pending CSR and approves it through the approval subresource when it passes. It logs nothing. */
async function decideAndApprove(client: KubeClient, inventory: Inventory, csr: CsrObject, options: ApproverOptions): Promise<ServingCsrResult & { readonly approvalError?: string }> {
  const name = csr.metadata.name;
  const phase = csrPhase(csr);
  if (phase !== 'pending') return { name, node: undefined, outcome: 'skipped', phase, reasons: [] };

  const decision = decideServingCsr(csr, inventory);
  if (!decision.approve) return { name, node: decision.node, outcome: 'pending', phase, reasons: decision.reasons };
  try {
    const updated = await client.updateCsrApproval(withApprovalCondition(csr, decision.message, (options.now ?? (() => new Date()))()));
    return { name, node: decision.node, outcome: 'approved', phase: csrPhase(updated), reasons: [] };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { name, node: decision.node, outcome: 'pending', phase, reasons: [`approval failed: ${message}`], approvalError: message };
  }
}

/** Decides on one CSR and approves it through the approval subresource when it passes. */
export async function handleServingCsr(client: KubeClient, inventory: Inventory, csr: CsrObject, options: ApproverOptions = {}): Promise<ServingCsrResult> {
  const logger = options.logger ?? silentLogger();
  const { approvalError, ...result } = await decideAndApprove(client, inventory, csr, options);
  if (approvalError !== undefined) logger.error('approving kubelet serving CSR failed', { csr: result.name, node: result.node, error: approvalError });
  else if (result.outcome === 'pending') logger.warn('kubelet serving CSR left pending', { csr: result.name, node: result.node, reasons: result.reasons.join('; ') });
  else if (result.outcome === 'approved') logger.info('approved kubelet serving CSR', { csr: result.name, node: result.node });
  return result;
}

/** Lists the serving CSRs once and handles each, in the order the API returns them. */
export async function approveServingCsrs(client: KubeClient, inventory: Inventory, options: ApproverOptions = {}): Promise<ServingCsrResult[]> {
  const results: ServingCsrResult[] = [];
  for (const csr of await client.listCsrs(KUBELET_SERVING_SIGNER)) {
    results.push(await handleServingCsr(client, inventory, csr, options));
  }
  return results;
}

export interface WatchApproverOptions extends ApproverOptions {
  /**
   * Called once for each CSR that kubetrust approves and once for each that it leaves pending
   * because a check failed. A failed approval call is logged and retried, not reported here.
   */
  readonly onResult?: (result: ServingCsrResult) => void;
  /** Called when the watch has connected (`connected` true) and each time it fails (false). */
  readonly onConnection?: (connected: boolean) => void;
  /** Backoff of the watch and of failed approval calls, and whether a failed first round is retried. */
  readonly watch?: CsrWatchOptions;
}

export interface ServingCsrWatch {
  /** Stops the watch and the retries, and resolves once the CSRs already received have been handled. */
  stop(): Promise<void>;
}

/**
 * Watches serving CSRs and handles each added or modified one until the returned watch is stopped.
 * CSRs are handled one at a time, in the order their events arrive. A CSR is decided once: one that
 * was approved or left pending is not handled again when the watch reconnects and lists it anew,
 * because its request cannot change. An approval call that fails is retried with the watch's backoff.
 */
export async function watchServingCsrs(client: KubeClient, inventory: Inventory, options: WatchApproverOptions = {}): Promise<ServingCsrWatch> {
  const logger = options.logger ?? silentLogger();
  const decided = new Set<string>();
  const approvalFailures = new Map<string, number>();
  const retries = new Set<NodeJS.Timeout>();
  let stopped = false;
  let queue = Promise.resolve();
  let failuresInARow = 0;

  const handle = async (csr: CsrObject): Promise<void> => {
    const name = csr.metadata.name;
    if (decided.has(name)) return;
    const { approvalError, ...result } = await decideAndApprove(client, inventory, csr, options);
    if (result.outcome === 'skipped') return;
    if (approvalError !== undefined) {
      scheduleRetry(name, result.node, approvalError);
      return;
    }
    decided.add(name);
    approvalFailures.delete(name);
    if (result.outcome === 'approved') logger.info('approved kubelet serving CSR', { csr: name, node: result.node });
    else logger.warn('kubelet serving CSR left pending', { csr: name, node: result.node, reasons: result.reasons.join('; ') });
    options.onResult?.(result);
  };
  const enqueue = (csr: CsrObject): void => {
    queue = queue
      .then(() => handle(csr))
      .catch((error: unknown) => {
        logger.error('handling kubelet serving CSR failed', { csr: csr.metadata.name, error: error instanceof Error ? error.message : String(error) });
      });
  };
  // Lists the CSRs again after the backoff and handles this one if it is still there and pending.
  const scheduleRetry = (name: string, node: string | undefined, error: string): void => {
    const failures = (approvalFailures.get(name) ?? 0) + 1;
    approvalFailures.set(name, failures);
    const delayMs = watchRetryDelay(failures, options.watch?.retryBaseMs, options.watch?.retryMaxMs);
    logger.error('approving kubelet serving CSR failed; retrying', { csr: name, node, error, failures, retryInSeconds: delayMs / 1000 });
    const timer = setTimeout(() => {
      retries.delete(timer);
      client
        .listCsrs(KUBELET_SERVING_SIGNER)
        .then((csrs) => {
          if (stopped) return;
          const current = csrs.find((candidate) => candidate.metadata.name === name);
          if (current !== undefined) enqueue(current);
        })
        .catch((listError: unknown) => {
          if (!stopped) scheduleRetry(name, node, listError instanceof Error ? listError.message : String(listError));
        });
    }, delayMs);
    retries.add(timer);
  };

  const watch = await client.watchCsrs(
    KUBELET_SERVING_SIGNER,
    {
      onEvent(type, csr) {
        if (type === 'DELETED') {
          decided.delete(csr.metadata.name);
          approvalFailures.delete(csr.metadata.name);
          return;
        }
        enqueue(csr);
      },
      onConnected() {
        logger.info('kubelet serving CSR watch connected', failuresInARow > 0 ? { failedAttempts: failuresInARow } : {});
        failuresInARow = 0;
        options.onConnection?.(true);
      },
      onError(error, retryInMs) {
        failuresInARow += 1;
        logger.warn('kubelet serving CSR watch failed; retrying', { error: error.message, failures: failuresInARow, retryInSeconds: retryInMs / 1000 });
        options.onConnection?.(false);
      },
    },
    options.watch,
  );
  return {
    async stop(): Promise<void> {
      stopped = true;
      watch.stop();
      for (const timer of retries) clearTimeout(timer);
      retries.clear();
      await queue;
    },
  };
}
