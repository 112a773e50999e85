/**
 * The `controller validate` command: parses its options, runs the checks and prints one line per
 * problem (text) or `{ok, problems}` (JSON). Exit code 0 when nothing is wrong, the CLI's failure
 * code when problems were found, and the invalid-input code for invalid options or inventory.
 *
 * Reads: the inventory, the state directory and the --out tree, through validate.ts.
 * Writes: nothing. RPCs: GetState (--live only).
 */
import { Option, type Command } from 'commander';
import type { Problem, ValidateResult } from '../validate';
import type { CommandContext } from './context';

interface ValidateCommandOptions {
  inventory: string;
  stateDir?: string;
  out?: string;
  live: boolean;
  output: 'text' | 'json';
}

function renderProblem(problem: Problem): string {
  const where = [problem.node, problem.path].filter((part) => part !== '').join(': ');
  return `${where}: ${problem.message}; ${problem.fix}`;
}

export function renderValidate(result: ValidateResult): string {
  const scope = { inventory: 'the inventory and its catalogue', out: 'the issued tree', live: 'the files the agents report' }[result.source];
  if (result.ok) return `OK: ${scope} of cluster ${result.cluster} (${result.nodes} nodes) passed every check\n`;
  const lines = result.problems.map(renderProblem);
  lines.push(`${result.problems.length} problem(s) found in ${scope} of cluster ${result.cluster}`);
  return lines.join('\n') + '\n';
}

/** Builds the JSON document that `validate --output json` prints. */
export function validateJson(result: ValidateResult): unknown {
  return {
    ok: result.ok,
    cluster: result.cluster,
    source: result.source,
    problems: result.problems.map((problem) => ({ node: problem.node, path: problem.path, check: problem.check, message: problem.message, fix: problem.fix })),
  };
}

export function registerValidateCommand(program: Command, context: CommandContext): void {
  program
    .command('validate')
    .description('check the inventory and catalogue and, with --out or --live, the certificates, keys and kubeconfigs of every node')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .option('-s, --state-dir <dir>', 'controller state directory: CA files must equal its CAs (required with --live)')
    .addOption(new Option('--out <dir>', 'check a tree written by `controller issue`').conflicts('live'))
    .addOption(new Option('--live', 'check what the agents report through GetState').default(false))
    .addOption(context.outputOption())
    .action(async (options: ValidateCommandOptions, command: Command) => {
      const logger = context.loggerFor(command);
      const inventory = context.readInventory(options.inventory, logger);
      // Loaded here, so that the other commands do not pay for loading the checks.
      const { ValidateInputError, validateCluster } = await import('../validate');
      let result: ValidateResult;
      try {
        result = await validateCluster(inventory, logger, {
          ...(options.stateDir !== undefined ? { stateDir: options.stateDir } : {}),
          ...(options.out !== undefined ? { out: options.out } : {}),
          live: options.live,
        });
      } catch (error) {
        if (error instanceof ValidateInputError) throw context.invalidInput(error.message);
        throw error;
      }
      process.stdout.write(options.output === 'json' ? JSON.stringify(validateJson(result), null, 2) + '\n' : renderValidate(result));
      if (!result.ok) process.exitCode = context.exitFailed;
    });
}
