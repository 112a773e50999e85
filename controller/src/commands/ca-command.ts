/**
 * The `controller ca` commands. `ca rotate --ca NAME --phase PHASE` runs or resumes one phase of a
 * CA rotation (ca-rotation.ts) and prints each push like distribute. `ca status` prints the phase
 * and the nodes that lack its files. Exit codes are those of distribute. A phase that cannot start
 * now is invalid input (2), and a phase whose push left a node behind exits with 1 or 3.
 */
import * as path from 'node:path';
import { Option, type Command } from 'commander';
import type { CommandContext } from './context';

interface RotateOptions {
  inventory: string;
  stateDir: string;
  ca: string;
  phase: 'prepare' | 'update-clients' | 'update-servers' | 'finish' | 'rollback';
  dryRun: boolean;
  maxParallel?: number;
  maxClockSkew: number;
  output: 'text' | 'json';
}

function positiveInteger(option: string, context: CommandContext): (value: string) => number {
  return (value) => {
    const number = Number(value);
    if (!Number.isInteger(number) || number <= 0) throw context.invalidInput(`${option}: "${value}" is not a positive whole number`);
    return number;
  };
}

export function registerCaCommand(program: Command, context: CommandContext): void {
  const ca = program.command('ca').description('cluster CA commands: rotate a CA phase by phase, show the rotation in progress');
  ca.command('rotate')
    .description('rotate a cluster CA without downtime, one phase at a time: prepare, update-clients, update-servers, finish (or rollback before finish)')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory')
    .requiredOption('--ca <name>', 'the CA to rotate: cluster-ca, etcd-ca or front-proxy-ca')
    .addOption(
      new Option('--phase <phase>', 'prepare: trust old and new; update-clients: client certificates from the new CA; update-servers: serving certificates from the new CA; finish: trust the new CA only; rollback: back to the old CA')
        .choices(['prepare', 'update-clients', 'update-servers', 'finish', 'rollback'])
        .makeOptionMandatory(),
    )
    .option('--dry-run', 'print which files the phase would change on each node, in rollout order, and change nothing', false)
    .option('--max-parallel <n>', 'workers changed at the same time (default: 10% of the workers, at least 1)', positiveInteger('--max-parallel', context))
    .option('--max-clock-skew <seconds>', 'fail a node whose clock differs from this host by more than this many seconds', positiveInteger('--max-clock-skew', context), 120)
    .addOption(context.outputOption())
    .action(async (options: RotateOptions, command: Command) => {
      const logger = context.loggerFor(command);
      const inventory = context.readInventory(options.inventory, logger);
      const { CaRotationError, describeLagging, rotateCa } = await import('../ca-rotation');
      const { distributeJson, renderDistribute } = await import('../report');
      const { distributeExitCode } = await import('../cli');
      let result;
      try {
        result = await rotateCa(inventory, path.resolve(options.stateDir), logger, options.ca, options.phase, {
          dryRun: options.dryRun,
          rollout: {
            maxClockSkewMs: options.maxClockSkew * 1000,
            ...(options.maxParallel !== undefined ? { maxParallel: options.maxParallel } : {}),
            onProgress: (event) => {
              if (event.phase === 'done') logger.info('node finished', { node: event.node, status: event.status, progress: `${event.done ?? 0}/${event.total ?? 0}` });
            },
          },
        });
      } catch (error) {
        if (error instanceof CaRotationError) throw context.invalidInput(error.message);
        throw error;
      }
      const lagging = result.steps.at(-1)?.lagging ?? [];
      const state = result.record?.state ?? 'none';
      if (options.output === 'json') {
        const steps = result.steps.map((step) => ({ state: step.state, lagging: step.lagging, rollout: distributeJson(step.report) }));
        process.stdout.write(JSON.stringify({ ca: result.ca, phase: result.phase, dryRun: options.dryRun, complete: result.complete, state: result.record ?? null, next: result.next ?? null, steps, changes: result.dryRun ?? null, notNow: result.notNow ?? null, lagging: result.lagging ?? null }, null, 2) + '\n');
      } else if (result.dryRun !== undefined) {
        process.stdout.write(`CA rotation of ${result.ca}: ${result.phase} (dry run); state now ${state}.\n`);
        if (result.notNow !== undefined) process.stdout.write(`The phase cannot start now: ${result.notNow}.\n`);
        else if (!result.complete) process.stdout.write(`The phase would stop before pushing, because these nodes lack the ${result.ca} files of the current state or did not respond: ${describeLagging(result.lagging ?? [])}.\n`);
        for (const change of result.dryRun) process.stdout.write(`  ${change.node}: ${change.items.join(', ')}\n`);
      } else {
        for (const step of result.steps) {
          process.stdout.write(`Push of state ${step.state}:\n`);
          process.stdout.write(renderDistribute(step.report));
        }
        if (result.complete) {
          const next = result.next === undefined ? 'the rotation is over' : `next: controller ca rotate --ca ${result.ca} --phase ${result.next}`;
          process.stdout.write(`CA rotation of ${result.ca}: ${result.phase} done; every node holds its files; state now ${state}; ${next}.\n`);
        } else {
          process.stdout.write(
            `CA rotation of ${result.ca}: ${result.phase} is not complete; state ${state}. ${lagging.length} node(s) do not hold its files yet: ${describeLagging(lagging)}. ` +
              `Fix them and run --phase ${result.phase} again to resume${result.phase !== 'finish' && result.phase !== 'rollback' ? ', or --phase rollback' : ''}.\n`,
          );
        }
      }
      // A dry run that could not read a node fails like distribute --dry-run does.
      if (options.dryRun) {
        if ((result.lagging ?? []).some((entry) => entry.error !== undefined)) process.exitCode = context.exitFailed;
        return;
      }
      const last = result.steps.at(-1);
      if (!result.complete) process.exitCode = last !== undefined && distributeExitCode(last.report) !== 0 ? distributeExitCode(last.report) : context.exitFailed;
    });

  ca.command('status')
    .description('print the CA rotation in progress, its state and the nodes that do not hold its files yet')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory')
    .addOption(context.outputOption())
    .action(async (options: { inventory: string; stateDir: string; output: 'text' | 'json' }, command: Command) => {
      const logger = context.loggerFor(command);
      const inventory = context.readInventory(options.inventory, logger);
      const { caRotationStatus, describeLagging } = await import('../ca-rotation');
      const status = await caRotationStatus(inventory, path.resolve(options.stateDir), logger);
      if (options.output === 'json') {
        process.stdout.write(JSON.stringify({ rotation: status.record ?? null, lagging: status.lagging, next: status.next ?? null }, null, 2) + '\n');
        return;
      }
      if (status.record === undefined) {
        process.stdout.write('No CA rotation in progress.\n');
        return;
      }
      const record = status.record;
      process.stdout.write(`CA rotation of ${record.ca}: state ${record.state} since ${record.updatedAt} (started ${record.startedAt}); old CA serial ${record.oldSerial}, new CA serial ${record.newSerial}.\n`);
      process.stdout.write(status.lagging.length === 0 ? 'Every node holds the files of this state.\n' : `Nodes that do not hold the files of this state yet: ${describeLagging(status.lagging)}.\n`);
      if (status.next !== undefined) process.stdout.write(`Next: controller ca rotate --ca ${record.ca} --phase ${status.next}\n`);
    });
}
