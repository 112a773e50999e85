/**
 * The `controller issue` command: parses its options, runs the offline issue and prints a summary
 * per node (text) or the manifest summary (JSON).
 *
 * Reads: the inventory and the state directory. Writes: the --out tree and the ledger, through
 * offline-issue.ts. RPCs: none.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import type { Command } from 'commander';
import type { OfflineIssueResult } from '../offline-issue';
import type { CommandContext } from './context';

/** Signals that stop an issue cleanly; see OfflineIssueOptions.signal. */
const INTERRUPT_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];

interface IssueOptions {
  inventory: string;
  stateDir: string;
  out: string;
  nodes?: string[];
  force: boolean;
  capToCa: boolean;
  output: 'text' | 'json';
}

/** Splits `a,b, c` into names, dropping empty entries. */
export function parseNodeList(value: string): string[] {
  return value
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
}

export function renderIssue(result: OfflineIssueResult): string {
  const written = new Set(result.written);
  const lines = [`Issued cluster ${result.manifest.cluster} into ${result.outDir}`];
  for (const node of result.manifest.nodes.filter((entry) => written.has(entry.name))) {
    lines.push(`  ${node.name}: ${node.files} files, ${node.certificatesIssued} certificates issued`);
  }
  const nodes = result.manifest.nodes.filter((entry) => written.has(entry.name));
  const files = nodes.reduce((sum, node) => sum + node.files, 0);
  const certificates = nodes.reduce((sum, node) => sum + node.certificatesIssued, 0);
  lines.push(`${nodes.length} node(s), ${files} files, ${certificates} certificates issued`);
  lines.push(`Manifest: ${result.manifestFile}`);
  lines.push(`Ledger: ${result.ledgerFile}`);
  lines.push('The tree contains private keys, including the cluster CA key on masters: copy each node directory only to its node.');
  return lines.join('\n') + '\n';
}

/** Builds the JSON document that `issue --output json` prints: the manifest without its file list. */
export function issueJson(result: OfflineIssueResult): unknown {
  const { files, ...summary } = result.manifest;
  return { outDir: result.outDir, manifestFile: result.manifestFile, ledgerFile: result.ledgerFile, written: result.written, files: files.length, ...summary };
}

export function registerIssueCommand(program: Command, context: CommandContext): void {
  program
    .command('issue')
    .description('write every node\'s certificates, keys and kubeconfigs into a directory tree for offline installation; node keys are generated on this host')
    .requiredOption('-i, --inventory <file>', 'cluster inventory (YAML)')
    .requiredOption('-s, --state-dir <dir>', 'controller state directory, initialised by `controller init`')
    .requiredOption('--out <dir>', 'output directory: one <node>/<node path> tree per node and manifest.json; must be empty or absent unless --force')
    .option('--nodes <names>', 'issue only for these nodes, separated by commas (default: every node)', parseNodeList)
    .option('--force', 'replace the node directories written by this run and manifest.json in a non-empty --out', false)
    .option('--cap-to-ca', 'end a certificate that would outlive its CA when the CA ends, instead of failing', false)
    .addOption(context.outputOption())
    .action(async (options: IssueOptions, command: Command) => {
      const logger = context.loggerFor(command);
      const inventory = context.readInventory(options.inventory, logger);
      // Loaded here, so that the other commands do not pay for loading the offline issue.
      const { IssueInputError, IssueInterruptedError, issueOffline } = await import('../offline-issue');
      // The first SIGINT or SIGTERM stops the issue and removes what it staged. A second one ends
      // the process at once, as without a handler, and the next issue removes what is left.
      const interrupt = new AbortController();
      const onSignal = (signal: NodeJS.Signals): void => {
        logger.warn('stopping: removing the staged files; a second signal stops at once', { signal });
        interrupt.abort(signal);
      };
      for (const signal of INTERRUPT_SIGNALS) process.once(signal, onSignal);
      let result: OfflineIssueResult;
      try {
        result = await issueOffline(inventory, path.resolve(options.stateDir), logger, {
          outDir: options.out,
          ...(options.nodes !== undefined ? { nodes: options.nodes } : {}),
          force: options.force,
          capToCa: options.capToCa,
          signal: interrupt.signal,
          onNodeStaged: (event) => logger.info('node written', { node: event.node, progress: `${event.done}/${event.total}` }),
        });
      } catch (error) {
        if (error instanceof IssueInputError) throw context.invalidInput(error.message);
        if (error instanceof IssueInterruptedError) {
          process.stderr.write(`error: ${error.message}\n`);
          process.exitCode = 128 + os.constants.signals[error.signal];
          return;
        }
        throw error;
      } finally {
        for (const signal of INTERRUPT_SIGNALS) process.removeListener(signal, onSignal);
      }
      if (interrupt.signal.aborted) logger.warn('the signal came after the commit had begun, so the issue finished', { signal: String(interrupt.signal.reason) });
      process.stdout.write(options.output === 'json' ? JSON.stringify(issueJson(result), null, 2) + '\n' : renderIssue(result));
    });
}
