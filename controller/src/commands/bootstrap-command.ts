/**
 * The `controller bootstrap` command: installs, upgrades, enrols, starts or removes the agent on
 * each node over SSH and prints one line per node (text) or the report as data (JSON). Exit code 0
 * when every node succeeded, the CLI's failure code when any node failed or was rolled back, and
 * the invalid-input code for invalid options or inventory.
 *
 * Reads and writes: see bootstrap.ts. RPCs: GetState, to confirm that each agent responds.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import type { BootstrapReport, BootstrapStep, NodeBootstrapResult } from '../bootstrap';
import { LiveProgress } from '../progress';
import type { CommandContext } from './context';

interface BootstrapCommandOptions {
  inventory: string;
  stateDir: string;
  nodes?: string;
  dryRun: boolean;
  acceptNew: boolean;
  uninstall: boolean;
  maxParallel: string;
  agentDir?: string;
  output: 'text' | 'json';
}

const STEPS: readonly BootstrapStep[] = ['connect', 'detect', 'upload', 'enroll', 'start', 'confirm', 'rollback', 'uninstall'];
/** Width of the status column, which fits `rolled-back`. */
const STATUS_WIDTH = 11;

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

function renderNode(result: NodeBootstrapResult): string {
  const timing = STEPS.filter((step) => result.timings[step] !== undefined)
    .map((step) => `${step} ${seconds(result.timings[step] ?? 0)}`)
    .join(', ');
  const head = `  ${result.node.padEnd(16)} ${(result.action ?? '-').padEnd(10)} ${result.status.padEnd(STATUS_WIDTH)}`;
  const detail = result.status === 'failed' || result.status === 'rolled-back' ? (result.error ?? '') : result.reasons.join('; ');
  return `${head} ${detail}${timing ? `\n  ${''.padEnd(16)} ${timing}` : ''}`;
}

export function renderBootstrap(report: BootstrapReport): string {
  let verb = 'Bootstrap';
  if (report.dryRun) verb = 'Bootstrap plan';
  else if (report.uninstall) verb = 'Uninstall';
  const lines = [`${verb} of cluster ${report.cluster}${report.agentVersion ? ` (agent ${report.agentVersion})` : ''}:`];
  lines.push(`  ${'node'.padEnd(16)} ${'action'.padEnd(10)} ${'status'.padEnd(STATUS_WIDTH)} details`);
  for (const node of report.nodes) lines.push(renderNode(node));
  const failed = report.nodes.filter((node) => node.status === 'failed').length;
  const rolledBack = report.nodes.filter((node) => node.status === 'rolled-back').length;
  const summary = `${report.nodes.length - failed - rolledBack} of ${report.nodes.length} nodes ${report.dryRun ? 'planned' : 'done'}, ${failed} failed, ${rolledBack} rolled back, in ${seconds(report.wallMs)}`;
  lines.push(summary);
  if (report.dryRun) lines.push('Dry run: nothing was uploaded, enrolled or started.');
  return lines.join('\n') + '\n';
}

export function bootstrapJson(report: BootstrapReport): unknown {
  return {
    cluster: report.cluster,
    dryRun: report.dryRun,
    uninstall: report.uninstall,
    agentVersion: report.agentVersion,
    wallMs: report.wallMs,
    nodes: report.nodes.map((node) => ({
      name: node.node,
      action: node.action ?? null,
      status: node.status,
      reasons: node.reasons,
      os: node.os ?? null,
      arch: node.arch ?? null,
      init: node.init ?? null,
      timingsMs: node.timings,
      error: node.error ?? null,
      failedStep: node.failedStep ?? null,
      rollback: node.rollback ?? null,
    })),
  };
}

export function registerBootstrapCommand(program: Command, context: CommandContext): void {
  program
    .command('bootstrap')
    .description('install the agent on each node over SSH: the key is generated on the node, the host key is verified, the agent is started and checked')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML) with the nodes and their SSH settings')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory (made by `controller init`)')
    .option('--nodes <names>', 'only these nodes, separated by commas')
    .option('--dry-run', 'connect and detect, print what would be done, change nothing', false)
    .option('--accept-new', 'trust and record the host key of a node not yet in known_hosts (a changed key still fails)', false)
    .option('--uninstall', 'stop the agent and remove it and its identity', false)
    .option('--max-parallel <n>', 'nodes handled at the same time', '10')
    .option('--agent-dir <dir>', 'directory with the agent executables and manifest.json that `npm run package:agent` builds (default: agent/artifact of this checkout)')
    .addOption(context.outputOption())
    .action(async (options: BootstrapCommandOptions, command: Command) => {
      const logger = context.loggerFor(command);
      const maxParallel = Number(options.maxParallel);
      if (!Number.isInteger(maxParallel) || maxParallel < 1) throw context.invalidInput(`--max-parallel: "${options.maxParallel}" is not a positive integer; pass a number such as 10`);
      const inventory = context.readInventory(options.inventory, logger);
      const { BootstrapInputError, bootstrap } = await import('../bootstrap');
      const { passphrasePrompt } = await import('../ssh/passphrase');
      const live = process.stderr.isTTY && options.output === 'text' ? new LiveProgress(process.stderr, options.dryRun ? 'bootstrap plan' : 'bootstrap') : undefined;
      if (live !== undefined && logger.level === 'info') logger.level = 'warn';
      let report: BootstrapReport;
      try {
        report = await bootstrap(inventory, path.resolve(options.stateDir), logger, {
          ...(options.nodes !== undefined ? { nodes: options.nodes.split(',').map((name) => name.trim()).filter((name) => name !== '') } : {}),
          dryRun: options.dryRun,
          acceptNew: options.acceptNew,
          uninstall: options.uninstall,
          maxParallel,
          passphrase: passphrasePrompt,
          ...(options.agentDir !== undefined ? { artifactDir: path.resolve(options.agentDir) } : {}),
          onProgress: (event) => {
            if (live !== undefined) live.update(event);
            else if (event.phase === 'done') logger.info('node finished', { node: event.node, status: event.status ?? '', progress: `${event.done ?? 0}/${event.total ?? 0}` });
          },
        });
      } catch (error) {
        live?.finish();
        if (error instanceof BootstrapInputError) throw context.invalidInput(error.message);
        throw error;
      }
      live?.finish();
      process.stdout.write(options.output === 'json' ? JSON.stringify(bootstrapJson(report), null, 2) + '\n' : renderBootstrap(report));
      if (report.nodes.some((node) => node.status === 'failed' || node.status === 'rolled-back')) process.exitCode = context.exitFailed;
    });
}
