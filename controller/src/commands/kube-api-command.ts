/**
 * Commands that call the Kubernetes API for kubelet TLS bootstrapping:
 *
 * - `kube-credentials` writes the controller's API kubeconfig and RBAC manifest into the state directory;
 * - `csr list` and `csr approve` show and approve pending kubelet serving CSRs, and
 *   `csr approve --watch` approves them as they arrive until SIGINT or SIGTERM;
 * - `tokens list` and `tokens prune` show and delete kubetrust's bootstrap tokens;
 * - `bootstrap-kubelet` pushes a node's bootstrap kubeconfig with a fresh token through its agent,
 *   or with `--out` writes it to a file for manual delivery.
 *
 * Exit codes: 0 success, 1 an API call failed, 2 invalid input. The API commands read the
 * kubeconfig from `--kubeconfig` or from `<state-dir>/kubernetes/controller.kubeconfig`.
 * `@kubernetes/client-node` is loaded only inside these actions. No output contains a token secret.
 */
import * as path from 'node:path';
import { Command } from 'commander';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import type { KubeApi } from '../kube-api';
import type { CsrObject, ServingCsrResult } from '../kubelet-bootstrap';
import type { CommandContext } from './context';

interface ApiCommandOptions {
  inventory: string;
  stateDir?: string;
  kubeconfig?: string;
  output: 'text' | 'json';
}

function print(options: { output: 'text' | 'json' }, json: unknown, text: string): void {
  process.stdout.write(options.output === 'json' ? JSON.stringify(json, null, 2) + '\n' : text);
}

function apiOptions(command: Command, context: CommandContext): Command {
  return command
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .option('-s, --state-dir <dir>', 'controller state directory with kubernetes/controller.kubeconfig (written by `controller kube-credentials`)')
    .option('--kubeconfig <file>', 'kubeconfig for the Kubernetes API, instead of the one in the state directory')
    .addOption(context.outputOption());
}

async function openApi(options: ApiCommandOptions, context: CommandContext, logger: Logger): Promise<{ inventory: Inventory; api: KubeApi }> {
  const inventory = context.readInventory(options.inventory, logger);
  const { KubeApiInputError, openKubeApi } = await import('../kube-api');
  try {
    const api = await openKubeApi({
      ...(options.kubeconfig !== undefined ? { kubeconfig: path.resolve(options.kubeconfig) } : {}),
      ...(options.stateDir !== undefined ? { stateDir: path.resolve(options.stateDir) } : {}),
    });
    return { inventory, api };
  } catch (error) {
    if (error instanceof KubeApiInputError) throw context.invalidInput(error.message);
    throw error;
  }
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

function registerKubeCredentials(program: Command, context: CommandContext): void {
  program
    .command('kube-credentials')
    .description('issue the controller a client certificate for the Kubernetes API (user kubetrust:controller) and write its kubeconfig and RBAC manifest into the state directory')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML); the kubeconfig points at its apiServer.endpoint')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory (made by `controller init`)')
    .addOption(context.outputOption())
    .action(async (options: { inventory: string; stateDir: string; output: 'text' | 'json' }, command: Command) => {
      const logger = context.loggerFor(command);
      const inventory = context.readInventory(options.inventory, logger);
      const { writeKubeCredentials } = await import('../kube-api');
      const result = await writeKubeCredentials(inventory, path.resolve(options.stateDir), new Date());
      logger.debug('wrote controller API kubeconfig', { path: result.kubeconfigPath, notAfter: result.notAfter });
      const text = [
        `Wrote ${result.kubeconfigPath} (user ${result.user}, server ${result.server}, certificate valid until ${result.notAfter}).`,
        `Wrote ${result.rbacManifestPath}. Apply it once with an admin kubeconfig:`,
        `  kubectl apply -f ${result.rbacManifestPath}`,
        '',
      ].join('\n');
      print(options, result, text);
    });
}

function pendingCsrRows(csrs: readonly CsrObject[], inventory: Inventory, decide: typeof import('../kubelet-bootstrap').decideServingCsr, phaseOf: typeof import('../kubelet-bootstrap').csrPhase): {
  name: string;
  requester: string;
  node: string | null;
  created: string | null;
  approvable: boolean;
  reasons: readonly string[];
}[] {
  return csrs
    .filter((csr) => phaseOf(csr) === 'pending')
    .map((csr) => {
      const decision = decide(csr, inventory);
      return {
        name: csr.metadata.name,
        requester: csr.spec.username ?? '',
        node: decision.node ?? null,
        created: csr.metadata.creationTimestamp ?? null,
        approvable: decision.approve,
        reasons: decision.approve ? [] : decision.reasons,
      };
    })
    .sort((a, b) => (a.node ?? '').localeCompare(b.node ?? '') || a.name.localeCompare(b.name));
}

function registerCsrCommands(program: Command, context: CommandContext): void {
  const csr = program.command('csr').description('kubelet serving CSRs (signer kubernetes.io/kubelet-serving)');

  apiOptions(csr.command('list').description('list pending kubelet serving CSRs and why kubetrust has not approved each'), context).action(
    async (options: ApiCommandOptions, command: Command) => {
      const logger = context.loggerFor(command);
      const { inventory, api } = await openApi(options, context, logger);
      const { KUBELET_SERVING_SIGNER, csrPhase, decideServingCsr } = await import('../kubelet-bootstrap');
      const rows = pendingCsrRows(await api.client.listCsrs(KUBELET_SERVING_SIGNER), inventory, decideServingCsr, csrPhase);
      const text =
        rows.length === 0
          ? 'No pending kubelet serving CSRs.\n'
          : table(
              ['NAME', 'NODE', 'REQUESTER', 'CHECK'],
              rows.map((row) => [row.name, row.node ?? '-', row.requester, row.approvable ? 'passes; `controller csr approve` approves it' : row.reasons.join('; ')]),
            );
      print(options, { csrs: rows }, text);
    },
  );

  apiOptions(
    csr
      .command('approve')
      .description('approve every pending kubelet serving CSR that passes the checks, once or with --watch as each arrives; the others stay pending'),
    context,
  )
    .option('--watch', 'keep running until SIGINT or SIGTERM, approving each serving CSR as it arrives; with --output json, print one JSON object per line', false)
    .action(async (options: ApiCommandOptions & { watch: boolean }, command: Command) => {
      const logger = context.loggerFor(command);
      const { inventory, api } = await openApi(options, context, logger);
      if (options.watch) {
        await approveAsCsrsArrive(options, inventory, api, logger);
        return;
      }
      const { approveServingCsrs } = await import('../kubelet-bootstrap');
      const results = (await approveServingCsrs(api.client, inventory, { logger })).filter((result) => result.outcome !== 'skipped');
      const lines = results.map(csrResultLine);
      const approved = results.filter((result) => result.outcome === 'approved').length;
      lines.push(`${approved} approved, ${results.length - approved} still pending.`);
      print(options, { results: results.map(csrResultJson) }, lines.join('\n') + '\n');
      if (results.some((result) => result.reasons.some((reason) => reason.startsWith('approval failed:')))) process.exitCode = context.exitFailed;
    });
}

function csrResultLine(result: ServingCsrResult): string {
  return result.outcome === 'approved' ? `approved  ${result.name} (node ${result.node ?? '-'})` : `pending   ${result.name} (node ${result.node ?? '-'}): ${result.reasons.join('; ')}`;
}

function csrResultJson(result: ServingCsrResult): { name: string; node: string | null; outcome: string; reasons: readonly string[] } {
  return { name: result.name, node: result.node ?? null, outcome: result.outcome, reasons: result.reasons };
}

/**
 * `csr approve --watch`: approves serving CSRs as they arrive until SIGINT or SIGTERM, printing one
 * line per decision as it is made. A failure of the first list exits with 1. Later failures are
 * logged, and the watch reconnects with backoff.
 */
async function approveAsCsrsArrive(options: ApiCommandOptions, inventory: Inventory, api: KubeApi, logger: Logger): Promise<void> {
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  const counts = { approved: 0, pending: 0 };
  const { watchServingCsrs } = await import('../kubelet-bootstrap');
  const watch = await watchServingCsrs(api.client, inventory, {
    logger,
    onResult(result) {
      if (result.outcome === 'approved') counts.approved += 1;
      else counts.pending += 1;
      const line = options.output === 'json' ? JSON.stringify({ time: new Date().toISOString(), ...csrResultJson(result) }) : csrResultLine(result);
      process.stdout.write(line + '\n');
    },
  });
  logger.info('approving kubelet serving CSRs as they arrive; stop with SIGINT or SIGTERM', { kubeconfig: api.kubeconfigPath });
  const signal = await stopped;
  logger.info('stopping the kubelet serving CSR approver', { signal });
  await watch.stop();
  logger.info('kubelet serving CSR approver stopped', { approved: counts.approved, leftPending: counts.pending });
}

function registerTokenCommands(program: Command, context: CommandContext): void {
  const tokens = program.command('tokens').description("kubetrust's bootstrap tokens of the cluster (Secrets bootstrap-token-<id> in kube-system)");

  apiOptions(tokens.command('list').description('list the bootstrap tokens with node, token id, expiration and state; never the secret half'), context).action(
    async (options: ApiCommandOptions, command: Command) => {
      const logger = context.loggerFor(command);
      const { inventory, api } = await openApi(options, context, logger);
      const { listTokens } = await import('../kubelet-bootstrap');
      const listings = await listTokens(api.client, inventory, new Date());
      const rows = listings.map((listing) => ({
        node: listing.node ?? null,
        tokenId: listing.tokenId,
        expiration: listing.expiration ?? null,
        state: listing.state,
        nodeBootstraps: listing.nodeBootstraps,
      }));
      const text =
        rows.length === 0
          ? 'No kubetrust bootstrap tokens.\n'
          : table(
              ['NODE', 'TOKEN ID', 'EXPIRATION', 'STATE'],
              rows.map((row) => [row.node ?? '-', row.tokenId, row.expiration ?? '-', row.nodeBootstraps ? row.state : `${row.state} (node does not bootstrap)`]),
            );
      print(options, { tokens: rows }, text);
    },
  );

  apiOptions(tokens.command('prune').description('delete tokens that expired, whose node has registered, or whose node no longer bootstraps'), context)
    .option('--dry-run', 'print what would be deleted and delete nothing', false)
    .action(async (options: ApiCommandOptions & { dryRun: boolean }, command: Command) => {
      const logger = context.loggerFor(command);
      const { inventory, api } = await openApi(options, context, logger);
      const { pruneTokens } = await import('../kubelet-bootstrap');
      const results = await pruneTokens(api.client, inventory, new Date(), { dryRun: options.dryRun, logger });
      const verb = options.dryRun ? 'would delete' : 'deleted';
      const lines = results.map((result) => (result.reason === undefined ? `kept          ${result.tokenId} (node ${result.node ?? '-'})` : `${verb.padEnd(12)}  ${result.tokenId} (node ${result.node ?? '-'}): ${result.reason}`));
      const removed = results.filter((result) => result.reason !== undefined).length;
      lines.push(`${removed} ${options.dryRun ? 'to delete' : 'deleted'}, ${results.length - removed} kept.${options.dryRun ? ' Dry run: nothing was deleted.' : ''}`);
      print(
        options,
        { dryRun: options.dryRun, tokens: results.map((result) => ({ node: result.node ?? null, tokenId: result.tokenId, reason: result.reason ?? null, deleted: result.deleted })) },
        lines.join('\n') + '\n',
      );
    });
}

function registerBootstrapKubelet(program: Command, context: CommandContext): void {
  apiOptions(
    program
      .command('bootstrap-kubelet')
      .description(
        "issue a new bootstrap token for a node and push its bootstrap kubeconfig through the node's agent, replacing any token that waits there; with --out, write the kubeconfig (mode 0600) to a file for manual delivery instead",
      ),
    context,
  )
    .requiredOption('-n, --node <name>', 'node name from the inventory, with kubelet.credentials: bootstrap')
    .option('--ttl <duration>', 'token lifetime, such as 1h or 30m', '1h')
    .option('--out <file>', 'write the bootstrap kubeconfig to this file instead of pushing it; it contains the token, so deliver it privately')
    .option('--wait-registration <seconds>', 'after the push, wait up to this many seconds for the kubelet to register, then delete its token', '0')
    .action(async (options: ApiCommandOptions & { node: string; ttl: string; out?: string; waitRegistration: string }, command: Command) => {
      const logger = context.loggerFor(command);
      const { parseDuration } = await import('@kubetrust/shared/dist/inventory/duration');
      const ttlMs = parseDuration(options.ttl);
      if (ttlMs === undefined || ttlMs <= 0) throw context.invalidInput(`--ttl: "${options.ttl}" is not a positive duration; pass a value such as 1h or 30m`);
      const inventory = context.readInventory(options.inventory, logger);
      const node = inventory.nodes.find((candidate) => candidate.name === options.node);
      if (node === undefined) throw context.invalidInput(`--node: node "${options.node}" is not in ${options.inventory}`);
      const bootstrap = await import('../kubelet-bootstrap');
      if (!bootstrap.bootstrapNodes(inventory).includes(node)) {
        throw context.invalidInput(`--node: node ${node.name} is not a worker with kubelet.credentials: bootstrap in ${options.inventory}; set it in the inventory first`);
      }
      let settings: ReturnType<typeof bootstrap.bootstrapSettings>;
      try {
        settings = bootstrap.bootstrapSettings(inventory, { ttlMs });
      } catch (error) {
        if (error instanceof bootstrap.BootstrapTokenError) throw context.invalidInput(error.message);
        throw error;
      }
      if (options.out === undefined) {
        await pushBootstrapKubeconfig(options, ttlMs, inventory, context, logger);
        return;
      }
      const { api } = await openApi(options, context, logger);

      const bindings = await bootstrap.ensureBindings(api.client, bootstrap.bootstrapBindings(inventory.name, settings.group));
      for (const binding of bindings) {
        if (binding.message !== undefined) logger.warn('bootstrap binding not as expected', { binding: binding.name, status: binding.status, message: binding.message });
      }
      const issued = await bootstrap.issueNodeToken(api.client, { inventory, node, clusterCaPem: api.clusterCaPem, settings, now: new Date(), logger });
      const out = path.resolve(options.out);
      const { writeFileAtomic } = await import('@kubetrust/shared/dist/files');
      await writeFileAtomic(out, issued.kubeconfig.reveal(), { mode: 0o600 });

      const result = {
        node: node.name,
        tokenId: issued.token.id,
        expiration: issued.expiration.toISOString(),
        server: issued.kubeconfig.server,
        file: out,
        bindings: bindings.map((binding) => ({ name: binding.name, status: binding.status, ...(binding.message !== undefined ? { message: binding.message } : {}) })),
      };
      const lines = bindings.map((binding) => `binding ${binding.name}: ${binding.status}${binding.message !== undefined ? ` (${binding.message})` : ''}`);
      lines.push(`Wrote ${out} (mode 0600) for node ${node.name}: token ${issued.token.id}, expires ${result.expiration}, server ${result.server}.`);
      lines.push("Copy it to the node's --bootstrap-kubeconfig path over a private channel and delete this copy.");
      print(options, result, lines.join('\n') + '\n');
    });
}

/** Pushes a fresh token to the node through its agent: a distribute limited to the node's cluster CA file and bootstrap kubeconfig. */
async function pushBootstrapKubeconfig(
  options: ApiCommandOptions & { node: string; waitRegistration: string },
  ttlMs: number,
  inventory: Inventory,
  context: CommandContext,
  logger: Logger,
): Promise<void> {
  if (options.stateDir === undefined) throw context.invalidInput('pushing through the agent needs --state-dir, the directory with the controller identity; pass --out FILE to write the kubeconfig instead');
  const waitSeconds = Number(options.waitRegistration);
  if (!Number.isInteger(waitSeconds) || waitSeconds < 0) throw context.invalidInput(`--wait-registration: "${options.waitRegistration}" is not a whole number of seconds; pass a number such as 300`);
  const { distribute } = await import('../distribute');
  const { distributeExitCode } = await import('../cli');
  const report = await distribute(inventory, path.resolve(options.stateDir), logger, {
    scope: { nodes: [options.node], only: ['cluster-ca.crt'] },
    replaceBootstrapTokens: [options.node],
    bootstrapTokenTtlMs: ttlMs,
    ...(options.kubeconfig !== undefined ? { kubeconfig: path.resolve(options.kubeconfig) } : {}),
    waitRegistrationMs: waitSeconds * 1000,
  });
  const node = report.nodes[0];
  const bootstrap = node?.kubeletBootstrap;
  const result = {
    node: options.node,
    status: node?.status ?? 'failed',
    state: bootstrap?.state ?? null,
    tokenId: bootstrap?.tokenId ?? null,
    expiration: bootstrap?.expiration ?? null,
    message: bootstrap?.message ?? null,
    changedFiles: node?.changedFiles ?? [],
    ...(node?.error !== undefined ? { error: node.error } : {}),
  };
  const lines = [`${options.node}: ${bootstrap !== undefined ? `${bootstrap.state}: ${bootstrap.message}` : (node?.status ?? 'failed')}`];
  if (node?.error !== undefined) lines.push(`error: ${node.error}`);
  print(options, result, lines.join('\n') + '\n');
  process.exitCode = distributeExitCode(report);
}

export function registerKubeApiCommands(program: Command, context: CommandContext): void {
  registerKubeCredentials(program, context);
  registerCsrCommands(program, context);
  registerTokenCommands(program, context);
  registerBootstrapKubelet(program, context);
}
