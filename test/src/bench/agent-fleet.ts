#!/usr/bin/env node
/**
 * Many node agents in one process, for benchmarks with more nodes than one agent process per node
 * allows on a small machine. Each agent is the real `startAgent` server with its own configuration
 * file, listening on its own address; only the process is shared.
 *
 *   node test/dist/bench/agent-fleet.js [--log-level LEVEL] AGENT_YAML...
 *
 * Protocol on stdio, one JSON document per line on stdout:
 *   - after every agent listens: {"ready": true, "agents": <count>}
 *   - for each line `usage` read on stdin: {"usage": {"userCpuUs", "systemCpuUs", "maxRssKb"}}
 * The fleet stops its agents and exits when stdin closes or on SIGTERM or SIGINT, so it does not
 * outlive a parent that dies without stopping it. Logs go to stderr.
 */
import * as readline from 'node:readline';
import { parseArgs } from 'node:util';
import { loadAgentConfig, startAgent, type RunningAgent } from '@kubetrust/agent';
import { LOG_LEVELS, createLogger, type LogLevel } from '@kubetrust/shared/dist/log';

/** How long the agents may take to finish open calls at shutdown before their servers are closed hard. */
const SHUTDOWN_GRACE_MS = 5_000;

export interface FleetUsage {
  readonly userCpuUs: number;
  readonly systemCpuUs: number;
  readonly maxRssKb: number;
}

export function fleetUsage(): FleetUsage {
  const usage = process.resourceUsage();
  return { userCpuUs: usage.userCPUTime, systemCpuUs: usage.systemCPUTime, maxRssKb: usage.maxRSS };
}

/**
 * Starts one agent per configuration file, each logging at `level` with its node name; on a failure,
 * stops the agents already started and throws.
 */
export async function startFleet(configFiles: readonly string[], level: LogLevel): Promise<RunningAgent[]> {
  const agents: RunningAgent[] = [];
  try {
    for (const file of configFiles) {
      const config = loadAgentConfig(file);
      agents.push(await startAgent(config, createLogger({ level, fields: { component: 'agent-fleet', node: config.nodeName } })));
    }
  } catch (error) {
    await stopFleet(agents);
    throw error;
  }
  return agents;
}

/** Stops every agent, closing servers hard when calls are still open after the grace period. */
export async function stopFleet(agents: readonly RunningAgent[]): Promise<void> {
  await Promise.all(
    agents.map(async (agent) => {
      const timer = setTimeout(() => agent.server.forceShutdown(), SHUTDOWN_GRACE_MS);
      await agent.stop();
      clearTimeout(timer);
    }),
  );
}

function writeLine(document: unknown): void {
  process.stdout.write(JSON.stringify(document) + '\n');
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { 'log-level': { type: 'string', default: 'info' }, help: { type: 'boolean', default: false } },
  });
  if (values.help || positionals.length === 0) {
    process.stderr.write('usage: agent-fleet [--log-level error|warn|info|debug] AGENT_YAML...\n');
    return values.help ? 0 : 2;
  }
  const level = values['log-level'];
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    process.stderr.write(`error: --log-level "${level}" is invalid; use one of ${LOG_LEVELS.join(', ')}\n`);
    return 2;
  }
  const logger = createLogger({ level: level as LogLevel, fields: { component: 'agent-fleet' } });

  let agents: RunningAgent[];
  try {
    agents = await startFleet(positionals, level as LogLevel);
  } catch (error) {
    logger.error('fleet failed to start', { error: error instanceof Error ? error.message : String(error) });
    return 1;
  }
  logger.info('fleet started', { agents: agents.length, pid: process.pid });

  const stopped = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
    const input = readline.createInterface({ input: process.stdin });
    input.on('line', (line) => {
      if (line.trim() === 'usage') writeLine({ usage: fleetUsage() });
      else logger.warn('ignored unknown command on stdin', { command: line.trim() });
    });
    input.once('close', () => resolve('stdin closed'));
  });
  writeLine({ ready: true, agents: agents.length });

  const reason = await stopped;
  logger.info('stopping fleet', { reason, agents: agents.length });
  await stopFleet(agents);
  logger.info('fleet stopped', { agents: agents.length });
  return 0;
}

if (require.main === module) {
  void main().then((code) => {
    // Exit explicitly: the stdin reader keeps the event loop alive after the agents have stopped.
    process.exit(code);
  });
}
