/**
 * Rollback of a failed agent upgrade in `controller bootstrap`: the decisions and the shell
 * commands, which bootstrap.ts runs on the node over SSH.
 *
 * Before an upgrade replaces the executable, the installed one is kept beside it as
 * `<binary>.previous`. The unit (systemd) or control script (other hosts) is kept the same way when
 * the upgrade writes it with other content. The copies are removed once the new agent responds
 * over mutual TLS with the new version. When it does not, they are moved back and the previous
 * agent is started again. So a copy found on the node belongs to an upgrade that was not
 * confirmed, for example because the controller stopped in the middle, or whose copies could not
 * be removed. The next upgrade keeps such a copy as its rollback target instead of replacing it.
 */
import type { AgentInstallPaths } from './agent-install';
import { shellQuote } from './ssh/session';

/** Suffix of the rollback copy of a file, beside the file. */
export const PREVIOUS_SUFFIX = '.previous';

/** Version that detection reports for an executable that exists but fails `--version`. */
export const UNREADABLE_VERSION = 'unreadable';

/** Part of a rollback that can fail. */
export type RollbackStage = 'restore' | 'start' | 'confirm';

/** The agent that an upgrade rolls back to on failure. */
export interface RollbackPlan {
  /** Version that the kept executable printed with `--version`. */
  readonly version: string;
  /**
   * True when the node already has a usable `<binary>.previous` from an upgrade that was not
   * confirmed. The upgrade keeps that copy and any other copies beside it, instead of copying the
   * installed files.
   */
  readonly keepExisting: boolean;
}

/** The rollback of one node, as the report shows it. */
export interface RollbackResult {
  readonly status: 'done' | 'failed';
  /** Version of the agent that the rollback put back. */
  readonly version: string;
  /** Files moved back from their rollback copies. */
  readonly restored: readonly string[];
  /** Present when the rollback failed: what failed, what is left on the node and how to fix it. */
  readonly error?: string;
}

export function previousCopy(file: string): string {
  return `${file}${PREVIOUS_SUFFIX}`;
}

/** Returns the files that an upgrade replaces on a node: the executable, then the unit or the control script. */
export function upgradedFiles(paths: AgentInstallPaths, init: 'systemd' | 'fallback'): string[] {
  return [paths.binary, init === 'systemd' ? paths.systemdUnit : paths.controlScript];
}

/**
 * Chooses the rollback target of an upgrade from the versions that detection read. Returns
 * undefined when neither a rollback copy nor the installed executable reports a version, because
 * an executable that cannot print its version cannot be confirmed after a rollback either.
 */
export function planRollback(installedVersion: string | undefined, previousVersion: string | undefined): RollbackPlan | undefined {
  if (previousVersion !== undefined && previousVersion !== UNREADABLE_VERSION) return { version: previousVersion, keepExisting: true };
  if (installedVersion === undefined || installedVersion === UNREADABLE_VERSION) return undefined;
  return { version: installedVersion, keepExisting: false };
}

/** Describes what an upgrade keeps for a rollback, as one reason of a planned or started upgrade. */
export function rollbackNote(plan: RollbackPlan | undefined, binary: string, newVersion: string): string {
  if (plan === undefined) return 'no rollback copy: the installed executable does not report its version, so a failed upgrade cannot be rolled back';
  const copy = previousCopy(binary);
  if (plan.keepExisting) return `keeps agent ${plan.version} in ${copy}, left by an upgrade that was not confirmed, and rolls back to it unless agent ${newVersion} responds`;
  return `keeps agent ${plan.version} as ${copy} and rolls back to it unless agent ${newVersion} responds`;
}

/**
 * Returns the shell command that makes `<file>.previous` a copy of `file`, atomically through a
 * temporary name. With `keepExisting`, an existing copy stays as it is. A hard link costs no disk
 * space and stays valid when the upgrade renames a new file over `file`. `cp -p` is the fallback
 * for file systems without hard links. The command fails, and leaves no temporary file, when the
 * copy cannot be made.
 */
export function keepCopyCommand(file: string, keepExisting: boolean): string {
  const q = shellQuote;
  const copy = previousCopy(file);
  const temporary = `${copy}.tmp`;
  const make = `{ { ln -f ${q(file)} ${q(temporary)} 2>/dev/null || cp -p ${q(file)} ${q(temporary)}; } && mv -f ${q(temporary)} ${q(copy)}; } || { rm -f ${q(temporary)}; false; }`;
  return keepExisting ? `if [ ! -e ${q(copy)} ]; then ${make}; fi` : make;
}

/**
 * Returns the shell command that prepares the rollback copy of a unit or control script before the
 * upgrade writes it again, or undefined when nothing needs to be done. `currentSha256` is the
 * digest of the file on the node, undefined when it does not exist. Only a file that the upgrade
 * changes gets a copy. Without `keepExisting`, a copy of an unchanged file is stale and is
 * removed, so that a rollback does not put it back.
 */
export function serviceFileCopyCommand(file: string, currentSha256: string | undefined, newSha256: string, keepExisting: boolean): string | undefined {
  if (currentSha256 !== undefined && currentSha256 !== newSha256) return keepCopyCommand(file, keepExisting);
  if (keepExisting) return undefined;
  return `rm -f ${shellQuote(previousCopy(file))}`;
}

/** Returns the shell command that moves each existing rollback copy of `files` back into place and prints the path of each file it restored. */
export function restoreCommand(files: readonly string[]): string {
  const q = shellQuote;
  return files.map((file) => `if [ -e ${q(previousCopy(file))} ]; then mv -f ${q(previousCopy(file))} ${q(file)} || exit 1; echo ${q(file)}; fi`).join('\n');
}

/** Returns the shell command that removes the rollback copies of `files` and their temporary files. */
export function dropCopiesCommand(files: readonly string[]): string {
  return `rm -f ${files.flatMap((file) => [previousCopy(file), `${previousCopy(file)}.tmp`]).map(shellQuote).join(' ')}`;
}

/** Builds the one-line error of a failed node, which names the outcome of a rollback when one ran. */
export function failureMessage(message: string, newVersion: string, rollback: RollbackResult | undefined): string {
  if (rollback === undefined) return message;
  const failed = `the upgrade to agent ${newVersion} failed: ${message}`;
  if (rollback.status === 'done') return `${failed}. Rolled back to agent ${rollback.version}, which responds over mutual TLS again`;
  return `${failed}. The rollback to agent ${rollback.version} failed too: ${rollback.error ?? 'no reason given'}`;
}

/** Returns the command an operator runs on the node to start the agent. */
function startCommand(paths: AgentInstallPaths, init: 'systemd' | 'fallback', unitName: string): string {
  return init === 'systemd' ? `systemctl start ${unitName}` : `${paths.controlScript} start`;
}

function logHint(paths: AgentInstallPaths, init: 'systemd' | 'fallback', unitName: string): string {
  return init === 'systemd' ? `\`journalctl -u ${unitName}\`` : paths.logFile;
}

/**
 * Describes what a rollback that failed at `stage` left on the node and how to fix it, as
 * sentences that follow the rollback's own error.
 */
export function rollbackLeftover(
  stage: RollbackStage,
  context: { readonly node: string; readonly paths: AgentInstallPaths; readonly init: 'systemd' | 'fallback'; readonly unitName: string; readonly previousVersion: string; readonly newVersion: string },
): string {
  const { node, paths, init, unitName, previousVersion, newVersion } = context;
  const copy = previousCopy(paths.binary);
  const rerun = `\`controller bootstrap --nodes ${node}\``;
  if (stage === 'restore') {
    return (
      `Left on the node: agent ${newVersion} at ${paths.binary} and agent ${previousVersion} at ${copy}. ` +
      `Once SSH to the node works, run ${rerun} again: it keeps ${copy} and rolls back to it if the upgrade fails again. ` +
      `To roll back by hand, run \`mv -f ${copy} ${paths.binary}\` on the node (likewise for any other *${PREVIOUS_SUFFIX} file of the agent) and then \`${startCommand(paths, init, unitName)}\`.`
    );
  }
  if (stage === 'start') {
    return (
      `Left on the node: agent ${previousVersion} is back at ${paths.binary} but does not run. ` +
      `Read ${logHint(paths, init, unitName)} on the node, start it with \`${startCommand(paths, init, unitName)}\`, then run ${rerun} again.`
    );
  }
  return (
    `Left on the node: agent ${previousVersion} is back at ${paths.binary} and was started, but it did not respond as ${node} with version ${previousVersion}. ` +
    `Read ${logHint(paths, init, unitName)} on the node, and once the agent responds, run ${rerun} again.`
  );
}
