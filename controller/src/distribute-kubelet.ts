/**
 * The kubelet bootstrap steps of `distribute` around the rollout: the decision added to each
 * bootstrapping node's plan, and after the rollout the recorded registrations and the optional
 * wait for kubelets to register. kubelet-push.ts does the API and ledger work.
 */
import type { Logger } from '@kubetrust/shared/dist/log';
import type { AgentConnections } from './agent-client';
import type { DistributeOptions, NodePlan, NodeReport } from './distribute';
import { bootstrapPlanEntry, kubeletQueries, observeKubelet, type KubeletBootstrapDecision, type KubeletBootstrapReport, type KubeletObservation, type KubeletPush } from './kubelet-push';

/** Reports a decision that no Apply carried out: a dry run, a waiting node or a registered one. */
export function decisionReport(decision: KubeletBootstrapDecision, observation: KubeletObservation, planned: boolean): KubeletBootstrapReport | undefined {
  const common = {
    message: decision.reason,
    observed: observation.observed,
    ...(decision.tokenId !== undefined ? { tokenId: decision.tokenId } : {}),
    ...(decision.expiration !== undefined ? { expiration: decision.expiration } : {}),
    ...(observation.clientCertificateSerial !== undefined ? { clientCertificateSerial: observation.clientCertificateSerial } : {}),
  };
  switch (decision.action) {
    case 'issue-token':
      return planned ? { ...common, state: 'would-issue-token' } : undefined;
    case 'waiting':
      return { ...common, state: 'waiting' };
    case 'registered':
      return { ...common, state: 'registered', bootstrapKubeconfigRemoved: observation.bootstrapKubeconfigRemoved || !observation.bootstrapKubeconfigPresent };
  }
}

/** Adds the kubelet bootstrap decision to a node's plan; a node that needs a token needs a change. */
export async function decideKubelet(plan: NodePlan, push: KubeletPush, now: Date): Promise<NodePlan> {
  if (plan.kubelet === undefined) return plan;
  const decision = await push.decide(plan.node, plan.kubelet.observation, now);
  return {
    ...plan,
    plan: [...plan.plan, bootstrapPlanEntry(plan.kubelet.files, decision)],
    needsChange: plan.needsChange || decision.action === 'issue-token',
    kubelet: { ...plan.kubelet, decision },
  };
}

/** Milliseconds between two GetState polls while waiting for registrations. */
export const DEFAULT_REGISTRATION_POLL_MS = 1_000;

/**
 * Finishes the registrations that the plan found, then, with `waitRegistrationMs`, polls the nodes
 * that got or hold a token until their kubelet registered, the wait ended or the token expired.
 * A token is never renewed here: a node that did not register is reported with what its agent
 * observed, and its token expires as issued.
 */
export async function finishKubeletBootstraps(
  plans: readonly NodePlan[],
  reports: Map<string, NodeReport>,
  push: KubeletPush,
  connections: AgentConnections,
  logger: Logger,
  now: () => Date,
  options: DistributeOptions,
): Promise<void> {
  const finish = async (plan: NodePlan, observation: KubeletObservation): Promise<boolean> => {
    const report = reports.get(plan.node.name);
    if (report === undefined) return false;
    const deleted = await push.finishRegistration(plan.node.name, observation, now());
    if (deleted === undefined) return false;
    const tokens = deleted.length > 0 ? `; deleted bootstrap tokens ${deleted.join(', ')}` : '';
    const serial = observation.clientCertificateSerial !== undefined ? `, client certificate serial ${observation.clientCertificateSerial}` : '';
    reports.set(plan.node.name, {
      ...report,
      kubeletBootstrap: {
        state: 'registered',
        message: `kubelet registered${serial}; the Node object exists and the bootstrap kubeconfig is gone${tokens}`,
        observed: observation.observed,
        ...(observation.clientCertificateSerial !== undefined ? { clientCertificateSerial: observation.clientCertificateSerial } : {}),
        bootstrapKubeconfigRemoved: true,
        tokensDeleted: deleted,
      },
    });
    return true;
  };

  for (const plan of plans) {
    const decision = plan.kubelet?.decision;
    if (decision?.action !== 'registered' || decision.cleanupPending !== true) continue;
    try {
      if (!(await finish(plan, plan.kubelet!.observation))) logger.warn('kubelet registered but its Node object is not found yet; its tokens are kept', { node: plan.node.name });
    } catch (error) {
      logger.error('recording the kubelet registration failed', { node: plan.node.name, error: error instanceof Error ? error.message : String(error) });
    }
  }

  const waitMs = options.waitRegistrationMs ?? 0;
  if (waitMs <= 0) return;
  const started = now().getTime();
  const waiting = plans.filter((plan) => {
    const state = reports.get(plan.node.name)?.kubeletBootstrap?.state;
    return plan.kubelet !== undefined && (state === 'token-issued' || state === 'waiting');
  });
  const pollMs = options.registrationPollMs ?? DEFAULT_REGISTRATION_POLL_MS;
  const open = new Set(waiting.map((plan) => plan.node.name));
  while (open.size > 0) {
    for (const plan of waiting) {
      if (!open.has(plan.node.name)) continue;
      const report = reports.get(plan.node.name)!;
      const expiration = Date.parse(report.kubeletBootstrap?.expiration ?? '');
      const files = plan.kubelet!.files;
      let observation: KubeletObservation | undefined;
      let problem: string | undefined;
      const connection = connections.open(plan.node);
      try {
        const held = await connection.getState({ files: kubeletQueries(files) });
        observation = observeKubelet(plan.node.name, files, held, push.clusterCaPem(), now());
        if (observation.registered && (observation.bootstrapKubeconfigRemoved || !observation.bootstrapKubeconfigPresent) && (await finish(plan, observation))) {
          open.delete(plan.node.name);
          continue;
        }
      } catch (error) {
        problem = error instanceof Error ? error.message : String(error);
      } finally {
        connection.close();
      }
      const at = now().getTime();
      const expired = Number.isFinite(expiration) && at >= expiration;
      if (!expired && at - started < waitMs) continue;
      open.delete(plan.node.name);
      const seen = observation?.observed ?? (problem !== undefined ? `GetState failed: ${problem}` : 'nothing');
      const why = expired ? `its bootstrap token ${report.kubeletBootstrap?.tokenId ?? ''} expired at ${report.kubeletBootstrap?.expiration ?? '-'}` : `the wait of ${Math.round(waitMs / 1000)} s ended`;
      logger.warn('kubelet did not register', { node: plan.node.name, observed: seen });
      reports.set(plan.node.name, {
        ...report,
        kubeletBootstrap: {
          ...report.kubeletBootstrap!,
          state: 'not-registered',
          observed: seen,
          message: `kubelet of ${plan.node.name} did not register before ${why}; the agent observed: ${seen}. The token is not renewed; run \`controller bootstrap-kubelet --node ${plan.node.name}\` to push a new one`,
        },
      });
    }
    if (open.size > 0) await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
