/**
 * Approves pending kubelet serving CSRs that pass `decideServingCsr`, once over a list or
 * continuously from a watch. A CSR that fails stays pending and its reasons are reported; kubetrust
 * never denies, so a CSR left pending by mistake can still be approved by hand.
 */
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger, type Logger } from '@kubetrust/shared/dist/log';
import type { CsrWatch, KubeClient } from './client';
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

/** Decides on one CSR and approves it through the approval subresource when it passes. */
export async function handleServingCsr(client: KubeClient, inventory: Inventory, csr: CsrObject, options: ApproverOptions = {}): Promise<ServingCsrResult> {
  const logger = options.logger ?? silentLogger();
  const name = csr.metadata.name;
  const phase = csrPhase(csr);
  if (phase !== 'pending') return { name, node: undefined, outcome: 'skipped', phase, reasons: [] };

  const decision = decideServingCsr(csr, inventory);
  if (!decision.approve) {
    logger.warn('kubelet serving CSR left pending', { csr: name, node: decision.node, reasons: decision.reasons.join('; ') });
    return { name, node: decision.node, outcome: 'pending', phase, reasons: decision.reasons };
  }
  try {
    const updated = await client.updateCsrApproval(withApprovalCondition(csr, decision.message, (options.now ?? (() => new Date()))()));
    logger.info('approved kubelet serving CSR', { csr: name, node: decision.node });
    return { name, node: decision.node, outcome: 'approved', phase: csrPhase(updated), reasons: [] };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    logger.error('approving kubelet serving CSR failed', { csr: name, node: decision.node, error: message });
    return { name, node: decision.node, outcome: 'pending', phase, reasons: [`approval failed: ${message}`] };
  }
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
  /** Called once for each CSR result; a pending CSR is reported again only when its reasons change. */
  readonly onResult?: (result: ServingCsrResult) => void;
}

/**
 * Watches serving CSRs and handles each added or modified one until the returned watch is stopped.
 * CSRs are handled one at a time, in the order their events arrive.
 */
export function watchServingCsrs(client: KubeClient, inventory: Inventory, options: WatchApproverOptions = {}): Promise<CsrWatch> {
  const logger = options.logger ?? silentLogger();
  const reported = new Map<string, string>();
  let queue = Promise.resolve();
  return client.watchCsrs(KUBELET_SERVING_SIGNER, {
    onEvent(type, csr) {
      if (type === 'DELETED') {
        reported.delete(csr.metadata.name);
        return;
      }
      queue = queue.then(async () => {
        const result = await handleServingCsr(client, inventory, csr, options);
        const key = `${result.outcome}:${result.reasons.join('; ')}`;
        if (result.outcome === 'skipped' || reported.get(result.name) === key) return;
        reported.set(result.name, key);
        options.onResult?.(result);
      });
    },
    onError(error) {
      logger.warn('kubelet serving CSR watch failed; retrying', { error: error.message });
    },
  });
}
