/**
 * `agent --config FILE`: runs the node agent until SIGINT or SIGTERM. Exit codes: 2 for invalid
 * arguments or configuration, 1 when the agent cannot start.
 */
import { Command, CommanderError, Option } from 'commander';
import { LOG_LEVELS, createLogger, type LogLevel } from '@kubetrust/shared/dist/log';
import { AgentConfigError, loadAgentConfig, type AgentConfig } from './config';
import { startAgent } from './server';
import { AGENT_VERSION } from './version';

const EXIT_FAILED = 1;
const EXIT_INVALID = 2;

interface AgentOptions {
  config: string;
  logLevel: LogLevel;
  logFormat: 'text' | 'json';
}

function buildProgram(): Command {
  return new Command('agent')
    .description('kubetrust node agent: installs the certificates, keys and kubeconfigs the controller pushes, and restarts the services that use them')
    .version(AGENT_VERSION)
    .requiredOption('-c, --config <file>', 'agent configuration written by `controller enroll` (agent.yaml)')
    .addOption(new Option('--log-level <level>', 'log verbosity').choices(LOG_LEVELS as LogLevel[]).default('info'))
    .addOption(new Option('--log-format <format>', 'log format on stderr').choices(['text', 'json']).default('text'))
    .showHelpAfterError()
    .exitOverride();
}

/**
 * Starts the agent and resolves once it listens; resolves with an exit code instead when it must
 * not run (help, version, invalid input, start-up failure).
 */
export async function runAgent(argv: readonly string[]): Promise<number | undefined> {
  const program = buildProgram();
  try {
    program.parse(argv as string[]);
  } catch (error) {
    if (error instanceof CommanderError) return error.code === 'commander.helpDisplayed' || error.code === 'commander.version' ? 0 : EXIT_INVALID;
    throw error;
  }
  const options = program.opts<AgentOptions>();

  let config: AgentConfig;
  try {
    config = loadAgentConfig(options.config);
  } catch (error) {
    if (!(error instanceof AgentConfigError)) throw error;
    process.stderr.write(`error: ${error.message}\n`);
    return EXIT_INVALID;
  }
  const logger = createLogger({ level: options.logLevel, format: options.logFormat, fields: { component: 'agent', node: config.nodeName } });
  let agent;
  try {
    agent = await startAgent(config, logger);
  } catch (error) {
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    return EXIT_FAILED;
  }
  const stop = (signal: string): void => {
    logger.info('agent stopping', { signal });
    void agent.stop().then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  return undefined;
}

if (require.main === module) {
  runAgent(process.argv).then(
    (code) => {
      if (code !== undefined) process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = EXIT_FAILED;
    },
  );
}
