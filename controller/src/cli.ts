/**
 * The `controller` command line. Exit codes: 0 success, 1 a node or an operation failed,
 * 2 invalid input (inventory, arguments, state directory).
 */
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { catalogueIssues } from '@kubetrust/shared/dist/catalogue';
import { checkRequiredOptionsLast } from '@kubetrust/shared/dist/cli-options';
import { InventoryError, loadInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { parseDuration } from '@kubetrust/shared/dist/inventory/duration';
import { LOG_LEVELS, createLogger, type LogLevel, type Logger } from '@kubetrust/shared/dist/log';
import { registerBootstrapCommand } from './commands/bootstrap-command';
import { registerCaCommand } from './commands/ca-command';
import { registerCertsCommand } from './commands/certs-command';
import { registerServeCommand } from './commands/serve-command';
import { registerSaCommand } from './commands/sa-command';
import { registerIssueCommand } from './commands/issue-command';
import { registerKubeApiCommands } from './commands/kube-api-command';
import { registerPlanCommand } from './commands/plan-command';
import { registerRollbackCommand } from './commands/rollback-command';
import { registerValidateCommand } from './commands/validate-command';
import { ScopeError, distribute, type DistributeReport } from './distribute';
import type { RenewalPolicy } from './plan';
import { KubeletBootstrapInputError } from './kubelet-push';
import { startEventLoopReport } from './event-loop-report';
import { LiveProgress } from './progress';
import { distributeJson, renderDistribute } from './report';
import { StateError } from './state-dir';

export const EXIT_FAILED = 1;
export const EXIT_INVALID = 2;
export const EXIT_PARTIAL = 3;

interface GlobalOptions {
  logLevel: LogLevel;
  logFormat: 'text' | 'json';
}

class UsageError extends Error {}

function loggerFor(command: Command): Logger {
  const options = command.optsWithGlobals<GlobalOptions>();
  return createLogger({ level: options.logLevel, format: options.logFormat, fields: { component: 'controller' } });
}

function readInventory(file: string, logger: Logger): Inventory {
  const parsed = loadInventory(file);
  const issues = catalogueIssues(parsed.inventory);
  if (issues.length > 0) throw new InventoryError(file, issues);
  for (const warning of parsed.warnings) logger.warn('inventory warning', { field: warning.path, message: warning.message, fix: warning.fix });
  return parsed.inventory;
}

function outputOption(): Option {
  return new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text');
}

function buildProgram(): Command {
  const program = new Command('controller')
    .description('kubetrust controller: issues the certificates of a Kubernetes cluster and pushes them to the agent on each node')
    .version('0.1.0')
    .addOption(new Option('--log-level <level>', 'log verbosity on stderr').choices(LOG_LEVELS as LogLevel[]).default('info'))
    .addOption(new Option('--log-format <format>', 'log format on stderr').choices(['text', 'json']).default('text'))
    .showHelpAfterError()
    .exitOverride();

  program
    .command('init')
    .description('create the cluster CAs, the service-account key pair, the management CA and the controller identity')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory (CA keys live here; keep it private and backed up)')
    .option('--force', 'move existing CAs aside to replaced-<time>/ and create new ones (every node then needs a distribute)', false)
    .addOption(outputOption())
    .action(async (options: { inventory: string; stateDir: string; force: boolean; output: string }, command: Command) => {
      const logger = loggerFor(command);
      const inventory = readInventory(options.inventory, logger);
      const { initState } = await import('./init');
      const { renderInit } = await import('./report');
      const result = await initState(inventory, path.resolve(options.stateDir), logger, { force: options.force });
      process.stdout.write(options.output === 'json' ? JSON.stringify(result, null, 2) + '\n' : renderInit(result));
    });

  program
    .command('enroll')
    .description('write a ready-to-run agent configuration and identity for one node (manual agent install), or with --csr sign a CSR made on the node')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory')
    .requiredOption('-n, --node <name>', 'node name from the inventory')
    .requiredOption('--out <dir>', 'directory to write agent.yaml, agent.crt, agent.key and management-ca.crt to (with --csr only agent.crt and management-ca.crt)')
    .option('--csr <file>', 'CSR printed by `agent enroll-request` on the node: sign it instead of generating the agent key here')
    .option('--install-root <path>', 'directory the agent installs files below (default /; tests and demos use a temporary root)')
    .option('--agent-state-dir <path>', 'agent state directory on the node for staged keys and backups', '/var/lib/kubetrust/agent')
    .action(async (options: { inventory: string; stateDir: string; node: string; out: string; csr?: string; installRoot?: string; agentStateDir: string }, command: Command) => {
      const logger = loggerFor(command);
      const inventory = readInventory(options.inventory, logger);
      const { AgentCsrError, enrollNode, enrollNodeFromCsr } = await import('./enroll');
      if (options.csr !== undefined) {
        let signed;
        try {
          signed = await enrollNodeFromCsr(inventory, path.resolve(options.stateDir), options.node, options.csr, options.out, logger);
        } catch (error) {
          if (error instanceof AgentCsrError) throw new UsageError(error.message);
          throw error;
        }
        const install = [
          'agent enroll-install --config-dir /etc/kubetrust/agent',
          `--certificate ${path.basename(signed.certificateFile)} --management-ca ${path.basename(signed.managementCaFile)}`,
          `--controller-identity ${signed.controllerIdentity} --listen ${signed.listen}`,
          `--install-root ${options.installRoot ?? '/'} --state-dir ${options.agentStateDir}`,
        ].join(' \\\n    ');
        process.stdout.write(
          `Signed the agent CSR of node ${signed.node}: wrote ${signed.certificateFile} and ${signed.managementCaFile}.\n` +
            `Copy both files to the node and run there, in the directory that holds them:\n  ${install}\n`,
        );
        return;
      }
      const result = await enrollNode(inventory, path.resolve(options.stateDir), options.node, options.out, logger, {
        ...(options.installRoot !== undefined ? { installRoot: path.resolve(options.installRoot) } : {}),
        stateDirOnNode: options.agentStateDir,
      });
      process.stdout.write(`Wrote ${result.configFile} for node ${result.node} (identity ${result.identity}).\nStart the agent with: agent --config ${result.configFile}\n`);
    });

  /** The options that distribute and rotate share: the rollout, its scope and its output. */
  const rolloutOptions = (command: Command): Command =>
    command
      .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
      .requiredOption('-s, --state-dir <dir>', 'controller state directory')
      .option('--dry-run', 'print the plan and change nothing: no certificate is issued, no file written, no service restarted', false)
      .option('--cap-to-ca', 'end a certificate that would outlive its CA when the CA ends, instead of failing that node', false)
      .option('--concurrency <n>', 'nodes planned at the same time', positiveInteger('--concurrency'), 16)
      .option('--nodes <names>', 'only these nodes, separated by commas', commaList)
      .option('--roles <roles>', 'only nodes with one of these roles (etcd, master, worker), separated by commas', commaList)
      .option('--only <items>', 'only these catalogue items as the plan names them (apiserver, admin.conf, ...), separated by commas', commaList)
      .option('--max-parallel <n>', 'workers changed at the same time (default: 10% of the workers, at least 1)', positiveInteger('--max-parallel'))
      .option('--max-clock-skew <seconds>', 'fail a node whose clock differs from this host by more than this many seconds', positiveInteger('--max-clock-skew'), 120)
      .option('--continue-on-error', 'let later worker batches run after a worker failed; etcd members and masters always stop the rollout', false)
      .option('--bootstrap-token-ttl <duration>', 'lifetime of the bootstrap tokens pushed to workers whose kubelet bootstraps, such as 1h or 30m', '1h')
      .option('--kubeconfig <file>', 'Kubernetes API kubeconfig for the bootstrap tokens (default: kubernetes/controller.kubeconfig in the state directory)')
      .option('--wait-registration <seconds>', 'after the rollout, wait up to this many seconds for each bootstrapping kubelet to register, then delete its token', nonNegativeInteger('--wait-registration'), 0)
      .addOption(outputOption());

  const runRollout = async (options: DistributeCliOptions, command: Command, label: string, renewal: RenewalPolicy): Promise<void> => {
    const logger = loggerFor(command);
    const bootstrapTokenTtlMs = tokenTtl('--bootstrap-token-ttl', options.bootstrapTokenTtl);
    const inventory = readInventory(options.inventory, logger);
    // On a terminal a live line shows progress; elsewhere (pipes, CI, JSON output) each node logs a line.
    const live = process.stderr.isTTY && options.output === 'text' ? new LiveProgress(process.stderr, options.dryRun ? 'plan' : label) : undefined;
    // Info lines would tear the live line apart; warnings and errors still print, on their own line.
    if (live !== undefined && logger.level === 'info') logger.level = 'warn';
    const report = await distribute(inventory, path.resolve(options.stateDir), logger, {
      dryRun: options.dryRun,
      capToCa: options.capToCa,
      concurrency: options.concurrency,
      scope: {
        ...(options.nodes !== undefined ? { nodes: options.nodes } : {}),
        ...(options.roles !== undefined ? { roles: options.roles } : {}),
        ...(options.only !== undefined ? { only: options.only } : {}),
      },
      ...(options.maxParallel !== undefined ? { maxParallel: options.maxParallel } : {}),
      continueOnError: options.continueOnError,
      maxClockSkewMs: options.maxClockSkew * 1000,
      renewal,
      bootstrapTokenTtlMs,
      ...(options.kubeconfig !== undefined ? { kubeconfig: path.resolve(options.kubeconfig) } : {}),
      waitRegistrationMs: options.waitRegistration * 1000,
      onProgress: (event) => {
        if (live !== undefined) live.update(event);
        else if (event.phase === 'done') {
          const step = event.position === undefined ? {} : { step: `${event.position.step}/${event.steps ?? 0}`, rolloutPhase: event.position.phase };
          logger.info('node finished', { node: event.node, status: event.status, progress: `${event.done ?? 0}/${event.total ?? 0}`, ...step });
        }
      },
    });
    live?.finish();
    process.stdout.write(options.output === 'json' ? JSON.stringify(distributeJson(report), null, 2) + '\n' : renderDistribute(report));
    process.exitCode = distributeExitCode(report);
  };

  rolloutOptions(program.command('distribute'))
    .description('issue what each node is missing and push it to the node agents; unchanged nodes are left alone')
    .action((options: DistributeCliOptions, command: Command) => runRollout(options, command, 'distribute', {}));

  rolloutOptions(program.command('rotate'))
    .description('renew certificates before they expire, with new keys generated on the nodes, through the same rollout as distribute')
    .option('--before <duration>', 'renew every certificate with less than this left, such as 30d (default: less than a third of its lifetime)')
    .option('--all', 'renew every certificate in scope, whatever its expiry; with --only, the items named are always renewed', false)
    .action((options: DistributeCliOptions & { before?: string; all: boolean }, command: Command) => {
      let beforeMs: number | undefined;
      if (options.before !== undefined) {
        beforeMs = parseDuration(options.before);
        if (beforeMs === undefined || beforeMs <= 0) throw new UsageError(`--before: "${options.before}" is not a positive duration; pass one such as 30d or 720h`);
      }
      const force: RenewalPolicy['force'] = options.all ? 'all' : options.only !== undefined ? new Set(options.only) : undefined;
      return runRollout(options, command, 'rotate', { ...(beforeMs !== undefined ? { beforeMs } : {}), ...(force !== undefined ? { force } : {}) });
    });

  const commandContext = { loggerFor, readInventory, outputOption, invalidInput: (message: string) => new UsageError(message), exitFailed: EXIT_FAILED };
  registerPlanCommand(program, commandContext);
  registerIssueCommand(program, commandContext);
  registerValidateCommand(program, commandContext);
  registerRollbackCommand(program, commandContext);
  registerBootstrapCommand(program, commandContext);
  registerCertsCommand(program, commandContext);
  registerServeCommand(program, commandContext);
  registerSaCommand(program, commandContext);
  registerCaCommand(program, commandContext);
  registerKubeApiCommands(program, commandContext);

  checkRequiredOptionsLast(program);
  return program;
}

interface DistributeCliOptions {
  inventory: string;
  stateDir: string;
  dryRun: boolean;
  capToCa: boolean;
  concurrency: number;
  nodes?: string[];
  roles?: string[];
  only?: string[];
  maxParallel?: number;
  continueOnError: boolean;
  maxClockSkew: number;
  bootstrapTokenTtl: string;
  kubeconfig?: string;
  waitRegistration: number;
  output: string;
}

/** Parses a token lifetime such as 1h or 30m; raises a UsageError for anything else. */
export function tokenTtl(option: string, value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) throw new UsageError(`${option}: "${value}" is not a positive duration; pass a value such as 1h or 30m`);
  return ms;
}

function nonNegativeInteger(option: string): (value: string) => number {
  return (value) => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < 0) throw new UsageError(`${option}: "${value}" is not a whole number of seconds; pass a number such as 300`);
    return parsed;
  };
}

function positiveInteger(option: string): (value: string) => number {
  return (value) => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < 1) throw new UsageError(`${option}: "${value}" is not a positive integer; pass a number such as 4`);
    return parsed;
  };
}

function commaList(value: string): string[] {
  return value.split(',').map((part) => part.trim()).filter((part) => part !== '');
}

/** 0: every node succeeded. A kubelet that did not register during --wait-registration counts as a failure. 3: some nodes changed and others failed, rolled back or were skipped. 1: nothing changed and something failed. */
export function distributeExitCode(report: DistributeReport): number {
  const bad = report.nodes.some(
    (node) => node.status === 'failed' || node.status === 'rolled-back' || node.status === 'skipped' || node.kubeletBootstrap?.state === 'not-registered' || node.kubeletBootstrap?.state === 'failed',
  );
  if (!bad) return 0;
  return report.nodes.some((node) => node.status === 'changed') ? EXIT_PARTIAL : EXIT_FAILED;
}

export async function runController(argv: readonly string[]): Promise<number> {
  startEventLoopReport();
  const program = buildProgram();
  try {
    await program.parseAsync(argv as string[]);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    const commanderCode = typeof code === 'string' ? code : undefined;
    if (commanderCode === 'commander.helpDisplayed' || commanderCode === 'commander.version' || commanderCode === 'commander.help') return 0;
    if (commanderCode?.startsWith('commander.')) return EXIT_INVALID;
    if (error instanceof InventoryError || error instanceof StateError || error instanceof UsageError || error instanceof ScopeError || error instanceof KubeletBootstrapInputError) {
      process.stderr.write(`error: ${error.message}\n`);
      return EXIT_INVALID;
    }
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    return EXIT_FAILED;
  }
}

if (require.main === module) {
  void runController(process.argv).then((code) => {
    process.exitCode = code;
  });
}
