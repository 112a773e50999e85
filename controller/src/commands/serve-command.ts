/**
 * The `controller serve` command: the rotation daemon (serve.ts). Runs until SIGTERM or SIGINT,
 * then finishes the round in progress and exits with 0. Invalid options or inventory exit with the
 * invalid-input code before anything runs, and so does `--approve-serving-csrs` without a readable
 * API kubeconfig.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { parseDuration } from '@kubetrust/shared/dist/inventory/duration';
import type { KubeClient } from '../kubelet-bootstrap/client';
import type { CommandContext } from './context';

interface ServeCommandOptions {
  inventory: string;
  stateDir: string;
  interval: string;
  before?: string;
  retryBase: string;
  metricsAddress: string;
  kubeconfig?: string;
  approveServingCsrs: boolean;
}

function duration(context: CommandContext, option: string, text: string): number {
  const value = parseDuration(text);
  if (value === undefined || value <= 0) throw context.invalidInput(`${option}: "${text}" is not a positive duration; pass one such as 1h, 30m or 30d`);
  return value;
}

/** Parses `host:port` or `[ipv6]:port`; `off` turns the metrics listener off. */
function metricsAddress(context: CommandContext, text: string): { host: string; port: number } | undefined {
  if (text === 'off') return undefined;
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || !(port >= 1 && port <= 65535)) throw context.invalidInput(`--metrics-address: "${text}" is not host:port; pass one such as 127.0.0.1:9464, or off`);
  return { host: match[1] ?? match[2] ?? '', port };
}

/**
 * Opens the API client for `--approve-serving-csrs`. A missing or invalid kubeconfig is invalid
 * input, while an API server that does not respond is not: the daemon then retries in the background.
 */
async function approvalClient(context: CommandContext, stateDir: string, kubeconfig: string | undefined): Promise<KubeClient> {
  const { KubeApiInputError, openKubeApi } = await import('../kube-api');
  try {
    return (await openKubeApi({ stateDir, ...(kubeconfig !== undefined ? { kubeconfig } : {}) })).client;
  } catch (error) {
    if (error instanceof KubeApiInputError) throw context.invalidInput(`--approve-serving-csrs: ${error.message}${kubeconfig === undefined ? ', or pass --kubeconfig FILE' : ''}`);
    throw error;
  }
}

export function registerServeCommand(program: Command, context: CommandContext): void {
  program
    .command('serve')
    .description('run the rotation daemon: renew and push what is due on a jittered schedule, and serve Prometheus metrics')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory')
    .option('--interval <duration>', 'time between rotation rounds, with 10% jitter', '1h')
    .option('--before <duration>', 'also renew every certificate with less than this left, such as 30d (default: less than a third of its lifetime)')
    .option('--retry-base <duration>', 'first wait after a round in which a node failed; doubles up to --interval', '30s')
    .option('--metrics-address <host:port>', 'where /metrics and /healthz listen, or off', '127.0.0.1:9464')
    .option('--approve-serving-csrs', 'also approve kubelet serving CSRs that pass the checks of `controller csr approve`, as they arrive', false)
    .option('--kubeconfig <file>', 'Kubernetes API kubeconfig for the CSR approval and the bootstrap tokens (default: kubernetes/controller.kubeconfig in the state directory)')
    .action(async (options: ServeCommandOptions, command: Command) => {
      const logger = context.loggerFor(command);
      const intervalMs = duration(context, '--interval', options.interval);
      const beforeMs = options.before === undefined ? undefined : duration(context, '--before', options.before);
      const retryBaseMs = duration(context, '--retry-base', options.retryBase);
      const metrics = metricsAddress(context, options.metricsAddress);
      const inventory = context.readInventory(options.inventory, logger);
      const stateDir = path.resolve(options.stateDir);
      const kubeconfig = options.kubeconfig === undefined ? undefined : path.resolve(options.kubeconfig);
      const client = options.approveServingCsrs ? await approvalClient(context, stateDir, kubeconfig) : undefined;
      const { serve } = await import('../serve');
      const stop = new AbortController();
      const onSignal = (signal: NodeJS.Signals): void => {
        logger.info('stopping after the round in progress', { signal });
        stop.abort();
      };
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
      await serve(inventory, stateDir, logger, {
        intervalMs,
        retryBaseMs,
        ...(beforeMs !== undefined ? { renewal: { beforeMs } } : {}),
        ...(metrics !== undefined ? { metrics } : {}),
        ...(kubeconfig !== undefined ? { kubeconfig } : {}),
        ...(client !== undefined ? { approveServingCsrs: { client } } : {}),
        signal: stop.signal,
      });
    });
}
