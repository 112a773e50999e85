/**
 * `agent --config FILE`: runs the node agent until SIGINT or SIGTERM.
 */
import { Command, Option } from 'commander';
import { LOG_LEVELS, createLogger, type LogLevel } from '@kubetrust/shared/dist/log';
import { AgentConfigError, loadAgentConfig } from './config';
import { startAgent } from './server';
import { AGENT_VERSION } from './version';

const EXIT_USAGE = 2;

export async function runAgent(argv: readonly string[]): Promise<void> {
  const program = new Command('agent')
    .description('kubetrust node agent: installs the certificates, keys and kubeconfigs the controller pushes, and restarts the services that use them')
    .version(AGENT_VERSION)
    .requiredOption('-c, --config <file>', 'agent configuration written by `controller enroll` (agent.yaml)')
    .addOption(new Option('--log-level <level>', 'log verbosity').choices(LOG_LEVELS as LogLevel[]).default('info'))
    .addOption(new Option('--log-format <format>', 'log format on stderr').choices(['text', 'json']).default('text'))
    .showHelpAfterError();
  program.parse(argv as string[]);
  const options = program.opts<{ config: string; logLevel: LogLevel; logFormat: 'text' | 'json' }>();

  let config;
  try {
    config = loadAgentConfig(options.config);
  } catch (error) {
    if (error instanceof AgentConfigError) {
      process.stderr.write(`error: ${error.message}\n`);
      process.exit(EXIT_USAGE);
    }
    throw error;
  }
  const logger = createLogger({ level: options.logLevel, format: options.logFormat, fields: { component: 'agent', node: config.nodeName } });
  const agent = await startAgent(config, logger);
  const stop = (signal: string): void => {
    logger.info('agent stopping', { signal });
    void agent.stop().then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

if (require.main === module) {
  runAgent(process.argv).catch((error: unknown) => {
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
