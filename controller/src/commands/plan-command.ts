/**
 * `controller plan`: without `--flags`, the same run as `controller distribute --dry-run`. With
 * `--flags --node NAME`, the flags and configuration fields that point each service of that node
 * at its files, which need no state directory. With `--bindings`, the ClusterRoleBindings that the
 * certificates need, as manifests for `kubectl apply -f -`.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { DEFAULT_CONCURRENCY, distribute } from '../distribute';
import { distributeJson, renderDistribute } from '../report';
import type { CommandContext } from './context';

/** Helpers of cli.ts that `plan` uses. cli.ts passes the same object to every command it registers from this directory. */

interface PlanOptions {
  readonly inventory: string;
  readonly stateDir?: string;
  readonly node?: string;
  readonly flags: boolean;
  readonly bindings: boolean;
  readonly concurrency: number;
  readonly nodes?: string[];
  readonly roles?: string[];
  readonly only?: string[];
  readonly maxClockSkew: number;
  readonly output: 'text' | 'json';
}

function commaList(value: string): string[] {
  return value.split(',').map((part) => part.trim()).filter((part) => part !== '');
}

function positiveInteger(context: CommandContext, option: string): (value: string) => number {
  return (value) => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < 1) throw context.invalidInput(`${option}: "${value}" is not a positive integer; pass a number such as 16`);
    return parsed;
  };
}

async function printFlags(inventory: Inventory, nodeName: string, output: PlanOptions['output']): Promise<void> {
  const { buildFlagsReport, flagsJson, renderFlags } = await import('../flags-report');
  const report = buildFlagsReport(inventory, nodeName);
  process.stdout.write(output === 'json' ? JSON.stringify(flagsJson(report), null, 2) + '\n' : renderFlags(report));
}

async function printBindings(inventory: Inventory, output: PlanOptions['output']): Promise<void> {
  const { catalogueBindings } = await import('../kubelet-bootstrap/bindings');
  const bindings = catalogueBindings(inventory);
  if (output === 'json') {
    process.stdout.write(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: bindings }, null, 2) + '\n');
    return;
  }
  const YAML = await import('yaml');
  const header = `# ClusterRoleBindings that the certificates of cluster ${inventory.name} need; apply with: kubectl apply -f -\n`;
  process.stdout.write(header + bindings.map((binding) => `---\n${YAML.stringify(binding)}`).join(''));
}

async function printDryRun(inventory: Inventory, stateDir: string, options: PlanOptions, logger: Logger, context: CommandContext): Promise<void> {
  const total = inventory.nodes.length;
  let done = 0;
  const report = await distribute(inventory, path.resolve(stateDir), logger, {
    dryRun: true,
    concurrency: options.concurrency,
    scope: {
      ...(options.nodes !== undefined ? { nodes: options.nodes } : {}),
      ...(options.roles !== undefined ? { roles: options.roles } : {}),
      ...(options.only !== undefined ? { only: options.only } : {}),
    },
    maxClockSkewMs: options.maxClockSkew * 1000,
    onProgress: (event) => {
      if (event.phase === 'done') logger.info('node finished', { node: event.node, status: event.status, progress: `${++done}/${total}` });
    },
  });
  process.stdout.write(options.output === 'json' ? JSON.stringify(distributeJson(report), null, 2) + '\n' : renderDistribute(report));
  if (report.nodes.some((node) => node.status === 'failed')) process.exitCode = context.exitFailed;
}

async function runPlan(options: PlanOptions, command: Command, context: CommandContext): Promise<void> {
  const logger = context.loggerFor(command);
  const inventory = context.readInventory(options.inventory, logger);
  const nodes = inventory.nodes.map((node) => node.name).join(', ');
  if (options.bindings) {
    if (options.flags) throw context.invalidInput('--bindings and --flags print different reports; pass one of them');
    await printBindings(inventory, options.output);
    return;
  }
  if (options.flags) {
    if (options.node === undefined) throw context.invalidInput(`--flags needs --node NAME; nodes in the inventory: ${nodes}`);
    await printFlags(inventory, options.node, options.output);
    return;
  }
  if (options.node !== undefined) throw context.invalidInput('--node selects the node of --flags; plan without --flags covers every node, so leave --node out or add --flags');
  if (options.stateDir === undefined) throw context.invalidInput('plan without --flags or --bindings needs --state-dir DIR, the directory that `controller init` created');
  await printDryRun(inventory, options.stateDir, options, logger, context);
}

/** Adds `plan` to `program`. */
export function registerPlanCommand(program: Command, context: CommandContext): void {
  program
    .command('plan')
    .description('print what distribute would change without changing anything (the same as distribute --dry-run); with --flags, the flags that point the services of one node at their files; with --bindings, the ClusterRoleBindings that the certificates need')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .option('-s, --state-dir <dir>', 'controller state directory; required unless --flags or --bindings is given')
    .option('-n, --node <name>', 'node name from the inventory; required with --flags')
    .option('--flags', 'print the flags and configuration fields that point each service of --node at the files kubetrust installs there; reads no state directory and contacts no agent', false)
    .option('--bindings', 'print the ClusterRoleBindings that the certificates need (kubelet API access, a non-default admin group) as manifests for kubectl apply; reads no state directory and contacts no agent', false)
    .option('--concurrency <n>', 'nodes handled at the same time (without --flags)', positiveInteger(context, '--concurrency'), DEFAULT_CONCURRENCY)
    .option('--nodes <names>', 'only these nodes, separated by commas (without --flags)', commaList)
    .option('--roles <roles>', 'only nodes with one of these roles, separated by commas (without --flags)', commaList)
    .option('--only <items>', 'only these catalogue items as the plan names them, separated by commas (without --flags)', commaList)
    .option('--max-clock-skew <seconds>', 'fail a node whose clock differs from this host by more than this many seconds', positiveInteger(context, '--max-clock-skew'), 120)
    .addOption(context.outputOption())
    .action((options: PlanOptions, command: Command) => runPlan(options, command, context));
}
