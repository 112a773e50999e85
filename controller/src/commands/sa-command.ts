/**
 * The `controller sa` commands: `sa rotate --phase PHASE` runs one phase of the service-account key
 * rotation (sa-rotation.ts) and prints the masters' rollout like distribute; `sa status` prints the
 * phase. Exit codes as distribute's, and the invalid-input code for a phase that cannot run now.
 */
import * as path from 'node:path';
import { Option, type Command } from 'commander';
import { parseDuration } from '@kubetrust/shared/dist/inventory/duration';
import type { CommandContext } from './context';

interface RotateOptions {
  inventory: string;
  stateDir: string;
  phase: 'prepare' | 'switch' | 'finish' | 'rollback';
  grace: string;
  dryRun: boolean;
  output: 'text' | 'json';
}

export function registerSaCommand(program: Command, context: CommandContext): void {
  const sa = program.command('sa').description('service-account key pair commands');
  sa.command('rotate')
    .description('rotate the service-account key pair with overlap, one phase at a time: prepare, switch, finish (or rollback)')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory')
    .addOption(new Option('--phase <phase>', 'prepare: verify old and new keys; switch: sign with the new key; finish: verify the new key only; rollback: one phase back').choices(['prepare', 'switch', 'finish', 'rollback']).makeOptionMandatory())
    .option('--grace <duration>', 'finish only this long after switch, so that tokens signed with the old key can expire', '24h')
    .option('--dry-run', 'print what the phase would push to the masters and change nothing', false)
    .addOption(context.outputOption())
    .action(async (options: RotateOptions, command: Command) => {
      const logger = context.loggerFor(command);
      const graceMs = parseDuration(options.grace);
      if (graceMs === undefined || graceMs < 0) throw context.invalidInput(`--grace: "${options.grace}" is not a duration; pass one such as 24h, or 0s to finish at once`);
      const inventory = context.readInventory(options.inventory, logger);
      const { SaRotationError, rotateServiceAccount } = await import('../sa-rotation');
      const { distributeJson, renderDistribute } = await import('../report');
      const { distributeExitCode } = await import('../cli');
      let result;
      try {
        result = await rotateServiceAccount(inventory, path.resolve(options.stateDir), logger, options.phase, { graceMs, dryRun: options.dryRun });
      } catch (error) {
        if (error instanceof SaRotationError) throw context.invalidInput(error.message);
        throw error;
      }
      const phase = result.state?.phase ?? 'none (one key)';
      if (options.output === 'json') {
        process.stdout.write(JSON.stringify({ phase: options.phase, rotation: result.state ?? null, rollout: result.report === undefined ? null : distributeJson(result.report) }, null, 2) + '\n');
      } else {
        process.stdout.write(`Service-account rotation: ${options.phase}${options.dryRun ? ' (dry run)' : ''} done; rotation phase now ${phase}.\n`);
        if (result.report !== undefined) process.stdout.write(renderDistribute(result.report));
      }
      if (result.report !== undefined) process.exitCode = distributeExitCode(result.report);
    });

  sa.command('status')
    .description('print the phase of the service-account key rotation')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory')
    .addOption(context.outputOption())
    .action(async (options: { stateDir: string; output: 'text' | 'json' }) => {
      const { serviceAccountRotation } = await import('../sa-rotation');
      const rotation = await serviceAccountRotation(options.stateDir);
      if (options.output === 'json') process.stdout.write(JSON.stringify({ rotation: rotation ?? null }, null, 2) + '\n');
      else process.stdout.write(rotation === undefined ? 'No service-account rotation in progress: one key signs and verifies.\n' : `Service-account rotation in phase ${rotation.phase}${rotation.switchedAt ? `, switched at ${rotation.switchedAt}` : ''}.\n`);
    });
}
