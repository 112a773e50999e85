/**
 * `controller rollback --node NAME [--change ID]`: has one node's agent put back the files of
 * its most recent change (or the named one) and restart the services that read them.
 *
 * Reads: the inventory and the controller identity in the state directory. RPCs: Rollback.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { AgentConnection, defaultHealthCheckMessages } from '../agent-client';
import { ClusterMaterial } from '../distribute';
import { StateDir } from '../state-dir';
import type { CommandContext } from './context';

interface RollbackOptions {
  inventory: string;
  stateDir: string;
  node: string;
  change?: string;
  allowRemoval: boolean;
  output: 'text' | 'json';
}

export function registerRollbackCommand(program: Command, context: CommandContext): void {
  program
    .command('rollback')
    .description("restore the files one node had before its last change (or --change ID) and restart the services that read them")
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory')
    .requiredOption('-n, --node <name>', 'node name from the inventory')
    .option('--change <id>', 'change to undo, as the agent reported its backup (default: the most recent change not rolled back)')
    .option('--allow-removal', 'also undo a change that only created files, such as a first install, which deletes every file it installed', false)
    .addOption(context.outputOption())
    .action(async (options: RollbackOptions, command: Command) => {
      const logger = context.loggerFor(command);
      const inventory = context.readInventory(options.inventory, logger);
      const { findNode } = await import('../enroll');
      const node = findNode(inventory, options.node);
      const state = new StateDir(path.resolve(options.stateDir));
      await state.requireCluster(inventory.name);
      const material = await ClusterMaterial.load(state, inventory);
      const connection = new AgentConnection(inventory.name, node, material.controller);
      try {
        const response = await connection.rollback({ change_id: options.change ?? '', allow_removing_all: options.allowRemoval, default_health_checks: defaultHealthCheckMessages(inventory, node) });
        const unhealthy = response.services.filter((service) => !service.healthy);
        const report = {
          node: node.name,
          change: response.change_id,
          restoredFiles: response.changed_paths,
          removedFiles: response.removed_paths,
          restartedServices: response.services.filter((service) => service.restarted).map((service) => service.name),
          services: response.services.map((service) => ({ name: service.name, healthy: service.healthy, check: service.check, output: service.output })),
        };
        if (options.output === 'json') {
          process.stdout.write(JSON.stringify(report, null, 2) + '\n');
        } else {
          process.stdout.write(
            `Rolled back change ${report.change} on node ${node.name}\n` +
              `  files restored to their earlier content: ${report.restoredFiles.join(', ') || 'none'}\n` +
              `  files removed because the change had created them: ${report.removedFiles.join(', ') || 'none'}\n` +
              `  restarted: ${report.restartedServices.join(', ') || 'none'}\n`,
          );
          for (const service of unhealthy) process.stdout.write(`  unhealthy: ${service.name} (${service.check}): ${service.output}\n`);
        }
        logger.warn('node rolled back', { node: node.name, change: report.change, restored: report.restoredFiles.length, removed: report.removedFiles.length });
        if (unhealthy.length > 0) process.exitCode = context.exitFailed;
      } finally {
        connection.close();
      }
    });
}
