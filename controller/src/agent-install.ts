/**
 * Install paths of the agent on a node, and the files that run it there: a systemd unit, and for
 * hosts without systemd as PID 1 a control script that starts and stops the agent with a PID
 * file. The templates are in agent/packaging/.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Production paths on a node whose prefix is `/`. */
export const AGENT_INSTALL_PATHS = {
  /** The single-file agent executable. */
  binary: '/usr/local/bin/kubetrust-agent',
  /** agent.yaml, the pending key of `agent enroll-request` and the installed identity. */
  configDir: '/etc/kubetrust/agent',
  /** Staged keys, backups, the journal and agent.lock. */
  stateDir: '/var/lib/kubetrust/agent',
  systemdUnit: '/etc/systemd/system/kubetrust-agent.service',
  /** The control script, used only on hosts without systemd as PID 1. */
  controlScript: '/usr/local/sbin/kubetrust-agent-ctl',
  /** PID file and log of an agent that the control script started. */
  pidFile: '/run/kubetrust-agent.pid',
  logFile: '/var/log/kubetrust-agent.log',
} as const;

export type AgentInstallPaths = { readonly [K in keyof typeof AGENT_INSTALL_PATHS]: string } & {
  /** The agent's configuration file in configDir. */
  readonly configFile: string;
};

export const SYSTEMD_UNIT_NAME = 'kubetrust-agent.service';

const PACKAGING_DIR = path.resolve(__dirname, '..', '..', 'agent', 'packaging');
const UNIT_TEMPLATE = path.join(PACKAGING_DIR, 'kubetrust-agent.service');
const CONTROL_SCRIPT_TEMPLATE = path.join(PACKAGING_DIR, 'kubetrust-agent-ctl.sh');

/**
 * Characters allowed in a rendered path. The unit file and the shell script take the paths
 * without quoting or escaping, so whitespace, quotes, `$`, `%` (a systemd specifier) and `\` are
 * rejected instead.
 */
const SAFE_PATH = /^\/[A-Za-z0-9._/+@-]*$/;

function checkPath(value: string, field: string): void {
  if (!SAFE_PATH.test(value) || value.split('/').includes('..')) {
    throw new Error(`${field}: "${value}" is not an absolute path of letters, digits and . _ / + @ -; choose a prefix without spaces, quotes or ..`);
  }
}

/** Returns AGENT_INSTALL_PATHS below a node's prefix (`agent.prefix`, default `/`), except the systemd unit. */
export function agentInstallPaths(prefix = '/'): AgentInstallPaths {
  checkPath(prefix, 'prefix');
  const entries = Object.entries(AGENT_INSTALL_PATHS).map(([name, file]) => [name, path.posix.join(prefix, file)] as const);
  const paths = Object.fromEntries(entries) as { [K in keyof typeof AGENT_INSTALL_PATHS]: string };
  // systemd reads units from its own directory only, so the unit stays there whatever the prefix;
  // the paths inside it point below the prefix.
  return { ...paths, systemdUnit: AGENT_INSTALL_PATHS.systemdUnit, configFile: path.posix.join(paths.configDir, 'agent.yaml') };
}

function render(template: string, values: Readonly<Record<string, string>>): string {
  let text = fs.readFileSync(template, 'utf8');
  for (const [placeholder, value] of Object.entries(values)) {
    checkPath(value, placeholder);
    text = text.split(`@${placeholder}@`).join(value);
  }
  return text;
}

/** Renders kubetrust-agent.service, which runs `binary --config configFile` and restarts it on failure. */
export function renderSystemdUnit(paths: Pick<AgentInstallPaths, 'binary' | 'configFile'>): string {
  return render(UNIT_TEMPLATE, { BINARY: paths.binary, CONFIG: paths.configFile });
}

/**
 * Renders the control script for hosts without systemd as PID 1. `script start` starts the agent
 * in a session of its own with setsid (nohup where setsid is missing), writes its PID to pidFile
 * and appends its output to logFile. `stop` sends SIGTERM to that PID, then SIGKILL after 30 s.
 * `status` exits with 0 when the agent runs and with 3 when it does not.
 */
export function renderControlScript(paths: Pick<AgentInstallPaths, 'binary' | 'configFile' | 'pidFile' | 'logFile'>): string {
  return render(CONTROL_SCRIPT_TEMPLATE, { BINARY: paths.binary, CONFIG: paths.configFile, PIDFILE: paths.pidFile, LOGFILE: paths.logFile });
}
