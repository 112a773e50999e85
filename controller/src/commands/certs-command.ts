/**
 * The `controller certs` commands. `check-expiration` prints the expiry of every certificate that
 * the agents report, with the CAs of the state directory, as a table (text) or as data (JSON).
 * Exit code 0 when every agent answered, the CLI's failure code when one did not, and the
 * invalid-input code for invalid options or inventory.
 *
 * Reads: see expiration.ts. RPCs: GetState.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { parseDuration } from '@kubetrust/shared/dist/inventory/duration';
import type { CommandContext } from './context';

interface CheckExpirationOptions {
  inventory: string;
  stateDir: string;
  nodes?: string;
  before?: string;
  output: 'text' | 'json';
}

export function registerCertsCommand(program: Command, context: CommandContext): void {
  const certs = program.command('certs').description('certificate commands');
  certs
    .command('check-expiration')
    .description('print the expiry of every certificate the nodes hold, read through their agents, and of the CAs')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory')
    .option('--nodes <names>', 'only these nodes, separated by commas')
    .option('--before <duration>', 'count a certificate as due when less than this is left, such as 30d (default: a third of its lifetime)')
    .addOption(context.outputOption())
    .action(async (options: CheckExpirationOptions, command: Command) => {
      const logger = context.loggerFor(command);
      let beforeMs: number | undefined;
      if (options.before !== undefined) {
        beforeMs = parseDuration(options.before);
        if (beforeMs === undefined || beforeMs <= 0) throw context.invalidInput(`--before: "${options.before}" is not a positive duration; pass one such as 30d or 720h`);
      }
      const nodes = options.nodes?.split(',').map((name) => name.trim()).filter((name) => name !== '');
      if (nodes !== undefined && nodes.length === 0) throw context.invalidInput('--nodes: no node names given; pass names separated by commas, or leave the option out for every node');
      const inventory = context.readInventory(options.inventory, logger);
      const { ExpirationInputError, checkExpiration, expirationJson, renderExpiration } = await import('../expiration');
      let report;
      try {
        report = await checkExpiration(inventory, path.resolve(options.stateDir), logger, { ...(nodes !== undefined ? { nodes } : {}), ...(beforeMs !== undefined ? { beforeMs } : {}) });
      } catch (error) {
        if (error instanceof ExpirationInputError) throw context.invalidInput(error.message);
        throw error;
      }
      process.stdout.write(options.output === 'json' ? JSON.stringify(expirationJson(report), null, 2) + '\n' : renderExpiration(report));
      if (report.problems.some((problem) => problem.message.startsWith('GetState failed'))) process.exitCode = context.exitFailed;
    });
}
