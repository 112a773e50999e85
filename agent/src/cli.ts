/**
 * The `agent` command line.
 *
 *   agent --config FILE     runs the node agent until SIGINT or SIGTERM
 *   agent enroll-request    generates the agent's key on the node and prints a CSR
 *   agent enroll-install    installs the signed certificate and writes agent.yaml
 *
 * Exit codes: 2 for invalid arguments, configuration or enrolment input, 1 when the agent cannot
 * start or another error occurs.
 */
import { Command, CommanderError, Option } from 'commander';
import { checkRequiredOptionsLast } from '@kubetrust/shared/dist/cli-options';
import { createLineLogger } from '@kubetrust/shared/dist/line-logger';
import { LOG_LEVELS, type LogLevel } from '@kubetrust/shared/dist/logger';
import { AgentConfigError, loadAgentConfig, type AgentConfig } from './config';
import { EnrollError, createEnrollRequest, installEnrollment } from './enroll';
import { startAgent } from './server';
import { AGENT_VERSION } from './version';

const EXIT_FAILED = 1;
const EXIT_INVALID = 2;

interface ServeOptions {
  config?: string;
  logLevel: LogLevel;
  logFormat: 'text' | 'json';
}

interface EnrollRequestCliOptions {
  configDir: string;
  node: string;
  cluster: string;
  host: string;
}

interface EnrollInstallCliOptions {
  configDir: string;
  certificate: string;
  managementCa: string;
  controllerIdentity: string;
  listen: string;
  installRoot: string;
  stateDir: string;
}

/** The exit code of a command that has finished, or undefined while the agent serves. */
interface Outcome {
  code: number | undefined;
}

async function serve(options: ServeOptions, outcome: Outcome): Promise<void> {
  if (options.config === undefined) {
    process.stderr.write("error: required option '-c, --config <file>' not specified\n");
    outcome.code = EXIT_INVALID;
    return;
  }
  let config: AgentConfig;
  try {
    config = loadAgentConfig(options.config);
  } catch (error) {
    if (!(error instanceof AgentConfigError)) throw error;
    process.stderr.write(`error: ${error.message}\n`);
    outcome.code = EXIT_INVALID;
    return;
  }
  const logger = createLineLogger({ level: options.logLevel, format: options.logFormat, fields: { component: 'agent', node: config.nodeName } });
  let agent;
  try {
    agent = await startAgent(config, logger);
  } catch (error) {
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    outcome.code = EXIT_FAILED;
    return;
  }
  const stop = (signal: string): void => {
    logger.info('agent stopping', { signal });
    void agent.stop().then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  outcome.code = undefined;
}

async function enrollRequest(options: EnrollRequestCliOptions, outcome: Outcome): Promise<void> {
  const request = await createEnrollRequest({ configDir: options.configDir, nodeName: options.node, cluster: options.cluster, host: options.host });
  process.stderr.write(`${request.keyCreated ? 'generated' : 'reused'} the pending agent key ${request.keyFile}\n`);
  process.stdout.write(request.csrPem);
  outcome.code = 0;
}

async function enrollInstall(options: EnrollInstallCliOptions, outcome: Outcome): Promise<void> {
  const result = await installEnrollment({
    configDir: options.configDir,
    certificateFile: options.certificate,
    managementCaFile: options.managementCa,
    controllerIdentity: options.controllerIdentity,
    listen: options.listen,
    installRoot: options.installRoot,
    stateDir: options.stateDir,
  });
  process.stdout.write(
    `Installed the agent identity of node ${result.nodeName} (cluster ${result.cluster}, valid until ${result.notAfter.toISOString()}) in ${result.identityDir}.\n` +
      `Wrote ${result.configFile}. Start or restart the agent with: agent --config ${result.configFile}\n`,
  );
  outcome.code = 0;
}

function buildProgram(outcome: Outcome): Command {
  const program = new Command('agent')
    .description('kubetrust node agent: installs the certificates, keys and kubeconfigs the controller pushes, and restarts the services that use them')
    .version(AGENT_VERSION)
    .option('-c, --config <file>', 'agent configuration to serve with (agent.yaml from `controller enroll` or `agent enroll-install`)')
    .addOption(new Option('--log-level <level>', 'log verbosity').choices(LOG_LEVELS as LogLevel[]).default('info'))
    .addOption(new Option('--log-format <format>', 'log format on stderr').choices(['text', 'json']).default('text'))
    .showHelpAfterError()
    .exitOverride()
    .action((options: ServeOptions) => serve(options, outcome));

  program
    .command('enroll-request')
    .description("generate the agent's management key on this node (or reuse the pending one) and print a CSR for `controller enroll --csr`")
    .requiredOption('--config-dir <dir>', 'agent configuration directory; the key is written to agent.key.pending there with mode 0600')
    .requiredOption('--node <name>', 'node name from the inventory')
    .requiredOption('--cluster <name>', "cluster name, the inventory's metadata.name")
    .requiredOption('--host <host>', "host of the node's agent endpoint in the inventory: an IP address or a DNS name")
    .showHelpAfterError()
    .exitOverride()
    .action((options: EnrollRequestCliOptions) => enrollRequest(options, outcome));

  program
    .command('enroll-install')
    .description('check the signed agent certificate against the pending key and the management CA, install it and write agent.yaml')
    .requiredOption('--config-dir <dir>', 'agent configuration directory that holds the pending key of `agent enroll-request`')
    .requiredOption('--certificate <file>', 'agent certificate written by `controller enroll --csr`')
    .requiredOption('--management-ca <file>', 'management CA certificate written by `controller enroll --csr`')
    .requiredOption('--controller-identity <uri>', 'URI SAN of the controller, such as kubetrust://<cluster>/controller')
    .requiredOption('--listen <host:port>', 'address the agent listens on, such as 192.0.2.31:7443 or [2001:db8::31]:7443')
    .requiredOption('--install-root <dir>', 'directory the agent installs files below (/ on a real node)')
    .requiredOption('--state-dir <dir>', 'agent state directory for staged keys and backups, such as /var/lib/kubetrust/agent')
    .showHelpAfterError()
    .exitOverride()
    .action((options: EnrollInstallCliOptions) => enrollInstall(options, outcome));

  checkRequiredOptionsLast(program);
  return program;
}

/**
 * Runs the command in `argv`. Resolves once the agent listens, or with an exit code when a command
 * finished or the agent must not run (help, version, invalid input, start-up failure).
 */
export async function runAgent(argv: readonly string[]): Promise<number | undefined> {
  const outcome: Outcome = { code: EXIT_FAILED };
  const program = buildProgram(outcome);
  try {
    await program.parseAsync(argv as string[]);
  } catch (error) {
    if (error instanceof CommanderError) return error.code === 'commander.helpDisplayed' || error.code === 'commander.version' ? 0 : EXIT_INVALID;
    if (error instanceof EnrollError) {
      process.stderr.write(`error: ${error.message}\n`);
      return EXIT_INVALID;
    }
    throw error;
  }
  return outcome.code;
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
