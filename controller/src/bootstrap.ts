/**
 * `controller bootstrap`: turns bare hosts into enrolled, running agents over SSH.
 *
 * Per node, at most `maxParallel` at a time: connect (host key verified), detect the OS, the
 * architecture, the init system and what is already installed, then do only what is missing:
 * upload the agent, have the agent generate its key on the node and print a CSR, sign the CSR with
 * the management CA, install the identity, install the unit and start the agent, and finally call
 * the agent over mutual TLS to confirm that it answers with the node's own identity.
 *
 * Reads: the inventory, the management CA and the controller identity in the state directory, the
 * agent artefact. Writes on the controller: the ledger of issued certificates, known_hosts entries
 * with --accept-new. The agent's private key never leaves the node.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { AgentConnection, type ControllerCredentials } from './agent-client';
import { AgentArtifactError, findAgentArtifact, readAgentManifest, type AgentArtifact } from './agent-artifact';
import { agentInstallPaths, renderControlScript, renderSystemdUnit, SYSTEMD_UNIT_NAME, type AgentInstallPaths } from './agent-install';
import {
  dropCopiesCommand,
  keepCopyCommand,
  planRollback,
  previousCopy,
  restoreCommand,
  rollbackLeftover,
  rollbackNote,
  serviceFileCopyCommand,
  upgradedFiles,
  type RollbackPlan,
  type RollbackResult,
  type RollbackStage,
  failureMessage,
  UNREADABLE_VERSION,
} from './bootstrap-rollback';
import { signAgentCsr } from './enroll';
import { openSession, shellQuote, SshError, type SshSession } from './ssh/session';
import { StateDir } from './state-dir';

/** Action that bootstrap takes, or would take, on one node. */
export type BootstrapAction = 'install' | 'upgrade' | 'enroll' | 'start' | 'unchanged' | 'uninstall' | 'absent';

export type BootstrapStep = 'connect' | 'detect' | 'upload' | 'enroll' | 'start' | 'confirm' | 'rollback' | 'uninstall';

export interface NodeBootstrapResult {
  readonly node: string;
  /** The action chosen after detection; `undefined` when the node failed before detection finished. */
  readonly action: BootstrapAction | undefined;
  /** `rolled-back`: an upgrade failed, and the previous agent was put back and responds again. */
  readonly status: 'done' | 'planned' | 'failed' | 'rolled-back';
  /** Reasons for the action, one phrase each ("agent 0.0.9 installed, 0.1.0 available"). */
  readonly reasons: readonly string[];
  readonly os?: string;
  readonly arch?: string;
  readonly init?: 'systemd' | 'fallback';
  /** Milliseconds per step that ran. */
  readonly timings: Partial<Record<BootstrapStep, number>>;
  /** One line: what failed and what to do. */
  readonly error?: string;
  readonly failedStep?: BootstrapStep;
  /** Present when a failed upgrade was rolled back, or the rollback was tried and failed. */
  readonly rollback?: RollbackResult;
}

export interface BootstrapReport {
  readonly cluster: string;
  readonly dryRun: boolean;
  readonly uninstall: boolean;
  readonly agentVersion: string;
  readonly nodes: readonly NodeBootstrapResult[];
  readonly wallMs: number;
}

export interface BootstrapOptions {
  readonly nodes?: readonly string[];
  readonly dryRun: boolean;
  readonly acceptNew: boolean;
  readonly uninstall: boolean;
  readonly maxParallel: number;
  /** Re-enrol an identity with less than this share of its lifetime left. */
  readonly renewFraction?: number;
  /** Time to wait for a started agent to respond. */
  readonly confirmTimeoutMs?: number;
  readonly now?: () => Date;
  readonly passphrase?: (node: string) => Promise<string>;
  readonly onProgress?: (event: { node: string; phase: 'start' | 'done'; status?: NodeBootstrapResult['status']; done?: number; total?: number }) => void;
  /** Directory of the agent artefacts; the default is the one `npm run package:agent` builds. */
  readonly artifactDir?: string;
}

export const DEFAULT_BOOTSTRAP_PARALLEL = 10;
const DEFAULT_RENEW_FRACTION = 1 / 3;
const DEFAULT_CONFIRM_TIMEOUT_MS = 20_000;
const gzipAsync = promisify(gzip);

export class BootstrapInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BootstrapInputError';
  }
}

/** A failure of one step on one node, already phrased for the operator. */
class StepError extends Error {
  constructor(
    readonly step: BootstrapStep,
    message: string,
  ) {
    super(message);
    this.name = 'StepError';
  }
}

interface Detected {
  readonly os: string;
  readonly arch: string;
  readonly init: 'systemd' | 'fallback';
  /** Output of `kubetrust-agent --version`, or undefined when no agent binary is installed. */
  readonly installedVersion: string | undefined;
  /** Output of `--version` of the rollback copy `kubetrust-agent.previous`, or undefined when there is none. */
  readonly previousVersion: string | undefined;
  readonly identityPem: string | undefined;
  readonly configPresent: boolean;
}

const MARK = '--kubetrust--';

/** Returns one shell script that reports everything detection needs, in sections marked by MARK. */
export function detectScript(paths: AgentInstallPaths): string {
  const q = shellQuote;
  return [
    `echo ${MARK}os; uname -s`,
    `echo ${MARK}arch; uname -m`,
    `echo ${MARK}init; if [ -d /run/systemd/system ]; then echo systemd; else echo fallback; fi`,
    `echo ${MARK}version; if [ -x ${q(paths.binary)} ]; then ${q(paths.binary)} --version 2>/dev/null || echo ${UNREADABLE_VERSION}; else echo absent; fi`,
    `echo ${MARK}previous; if [ -x ${q(previousCopy(paths.binary))} ]; then ${q(previousCopy(paths.binary))} --version 2>/dev/null || echo ${UNREADABLE_VERSION}; else echo absent; fi`,
    `echo ${MARK}config; if [ -f ${q(paths.configFile)} ]; then echo present; else echo absent; fi`,
    // The identity's certificate is the file that agent.yaml names in tls.certFile, relative to its directory.
    `echo ${MARK}identity; if [ -f ${q(paths.configFile)} ]; then c=$(sed -n 's/^ *certFile: *//p' ${q(paths.configFile)} | head -n 1 | tr -d "\\"'"); ` +
      `case "$c" in /*) ;; *) c=${q(paths.configDir)}/$c ;; esac; if [ -f "$c" ]; then cat "$c"; fi; fi`,
  ].join('\n');
}

export function parseDetect(output: string): Detected {
  const sections = new Map<string, string>();
  for (const part of output.split(MARK).slice(1)) {
    const newline = part.indexOf('\n');
    const name = newline < 0 ? part.trim() : part.slice(0, newline).trim();
    sections.set(name, newline < 0 ? '' : part.slice(newline + 1).trim());
  }
  const version = sections.get('version') ?? 'absent';
  const previous = sections.get('previous') ?? 'absent';
  const identity = sections.get('identity') ?? '';
  return {
    os: sections.get('os') ?? '',
    arch: sections.get('arch') ?? '',
    init: sections.get('init') === 'systemd' ? 'systemd' : 'fallback',
    installedVersion: version === 'absent' ? undefined : version.split(/\s+/).pop(),
    previousVersion: previous === 'absent' ? undefined : previous.split(/\s+/).pop(),
    identityPem: identity.includes('BEGIN CERTIFICATE') ? identity : undefined,
    configPresent: sections.get('config') === 'present',
  };
}

/** Returns why the node's agent identity must be issued again, or undefined when it can stay. */
export function identityProblem(identityPem: string | undefined, managementCaPem: string, now: Date, renewFraction: number): string | undefined {
  if (identityPem === undefined) return 'no agent identity on the node';
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(identityPem);
  } catch {
    return 'the agent identity on the node is not a readable certificate';
  }
  const ca = new X509Certificate(managementCaPem);
  if (!certificate.checkIssued(ca) || !certificate.verify(ca.publicKey)) return 'the agent identity was signed by a different management CA';
  const notBefore = Date.parse(certificate.validFrom);
  const notAfter = Date.parse(certificate.validTo);
  const left = notAfter - now.getTime();
  if (left <= 0) return `the agent identity expired on ${certificate.validTo}`;
  if (left < (notAfter - notBefore) * renewFraction) return `the agent identity expires on ${certificate.validTo}, with less than ${Math.round(renewFraction * 100)}% of its lifetime left`;
  return undefined;
}

/**
 * Chooses what to do on a node from what detection found. A readable rollback copy means that an
 * earlier upgrade was not confirmed, so the upgrade runs again even when the installed version is
 * already the artefact's.
 */
export function chooseAction(detected: Detected, artifactVersion: string, identity: string | undefined): { action: BootstrapAction; reasons: string[] } {
  if (detected.installedVersion === undefined) return { action: 'install', reasons: ['no agent installed'] };
  const reasons: string[] = [];
  let action: BootstrapAction = 'start';
  if (detected.installedVersion !== artifactVersion) {
    action = 'upgrade';
    reasons.push(`agent ${detected.installedVersion} installed, ${artifactVersion} available`);
  } else if (detected.previousVersion !== undefined && detected.previousVersion !== UNREADABLE_VERSION) {
    action = 'upgrade';
    reasons.push(`the upgrade from agent ${detected.previousVersion} to ${artifactVersion} was not confirmed`);
  }
  if (identity !== undefined || !detected.configPresent) {
    if (action !== 'upgrade') action = 'enroll';
    reasons.push(identity ?? 'no agent configuration on the node');
  }
  return { action, reasons };
}

/** Runs a command and turns a non-zero exit into a StepError with the command's own last words. */
async function runStep(session: SshSession, step: BootstrapStep, command: string, what: string, fix: string, options: { sudo: boolean; stdin?: string }): Promise<string> {
  const result = await session.run(command, { sudo: options.sudo, ...(options.stdin !== undefined ? { stdin: options.stdin } : {}) });
  if (result.code !== 0) {
    const detail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-1)[0] ?? '';
    throw new StepError(step, `${what} failed (exit ${result.code}${detail ? `: ${detail}` : ''}); ${fix}`);
  }
  return result.stdout;
}

interface NodeContext {
  readonly inventory: Inventory;
  readonly node: NodeSpec;
  readonly state: StateDir;
  readonly stateDir: string;
  readonly managementCaPem: string;
  readonly controller: ControllerCredentials;
  readonly options: BootstrapOptions;
  readonly logger: Logger;
  readonly artifacts: Map<string, Promise<LoadedArtifact>>;
}

/**
 * The artefact for a node's `uname -m`, found once per machine type. Its gzip-compressed bytes are
 * made on the first upload only, so a run in which no node needs the executable skips that work.
 */
class LoadedArtifact {
  private packing: Promise<Buffer> | undefined;

  constructor(readonly artifact: AgentArtifact) {}

  compressed(): Promise<Buffer> {
    // Level 1 packs the executable to less than half its size in about a second; every node then
    // receives the smaller file.
    this.packing ??= readFile(this.artifact.path).then((bytes) => gzipAsync(bytes, { level: 1 }));
    return this.packing;
  }
}

async function artifactFor(context: NodeContext, machine: string): Promise<LoadedArtifact> {
  let loading = context.artifacts.get(machine);
  if (loading === undefined) {
    const dir = context.options.artifactDir;
    loading = findAgentArtifact(machine, dir === undefined ? {} : { dir }).then((artifact) => new LoadedArtifact(artifact));
    context.artifacts.set(machine, loading);
  }
  try {
    return await loading;
  } catch (error) {
    throw new StepError('detect', error instanceof Error ? error.message : String(error));
  }
}

/**
 * Uploads the agent executable: compressed, unpacked on the node, checked against the artefact's
 * sha256, then moved into place. With a rollback plan, the installed executable is kept as its
 * rollback copy in the same command, before the new one replaces it.
 */
async function uploadAgent(session: SshSession, loaded: LoadedArtifact, paths: AgentInstallPaths, sudo: boolean, rollback: RollbackPlan | undefined): Promise<void> {
  const q = shellQuote;
  const packed = `${paths.binary}.upload.gz`;
  const unpacked = `${paths.binary}.upload`;
  await session.upload(await loaded.compressed(), packed, 0o600);
  const output = await runStep(
    session,
    'upload',
    `gzip -dc ${q(packed)} > ${q(unpacked)} && rm -f ${q(packed)} && sha256sum ${q(unpacked)} || { rm -f ${q(packed)} ${q(unpacked)}; exit 1; }`,
    'unpacking the agent on the node',
    'check that gzip and sha256sum are installed and that the disk has room for the agent (about 90 MB)',
    { sudo },
  );
  if (output.split(/\s+/)[0] !== loaded.artifact.sha256) {
    await session.run(`rm -f ${q(unpacked)}`, { sudo });
    throw new StepError('upload', `the agent executable unpacked on the node does not have the sha256 of the artefact (${loaded.artifact.sha256}); check the node's disk and run bootstrap again`);
  }
  const move = `chmod 0755 ${q(unpacked)} && mv -f ${q(unpacked)} ${q(paths.binary)}`;
  if (rollback === undefined) {
    await runStep(session, 'upload', move, 'moving the agent into place', `check that ${path.posix.dirname(paths.binary)} is writable`, { sudo });
    return;
  }
  await runStep(
    session,
    'upload',
    `${keepCopyCommand(paths.binary, rollback.keepExisting)} && ${move} || { rm -f ${q(unpacked)}; exit 1; }`,
    `keeping the installed agent as ${previousCopy(paths.binary)} and moving the new one into place`,
    `check that ${path.posix.dirname(paths.binary)} is writable and has room for a copy of the agent`,
    { sudo },
  );
}

async function confirmAgent(context: NodeContext, expectedVersion: string): Promise<void> {
  const deadline = Date.now() + (context.options.confirmTimeoutMs ?? DEFAULT_CONFIRM_TIMEOUT_MS);
  let last = '';
  /** The version in the last response, when the agent responded with another version than expected. */
  let reported: string | undefined;
  for (;;) {
    const connection = new AgentConnection(context.inventory.name, context.node, context.controller, { busyRetryDelaysMs: [] });
    try {
      const state = await connection.getState({});
      if (state.node_name !== context.node.name) {
        throw new StepError('confirm', `the agent at ${context.node.agent.endpoint} responds as node "${state.node_name}", not "${context.node.name}"; check the agent endpoint in the inventory`);
      }
      if (state.agent_version === expectedVersion) return;
      reported = state.agent_version;
    } catch (error) {
      if (error instanceof StepError) throw error;
      last = error instanceof Error ? error.message : String(error);
      reported = undefined;
    } finally {
      connection.close();
    }
    if (Date.now() >= deadline) {
      if (reported !== undefined) {
        throw new StepError(
          'confirm',
          `the agent at ${context.node.agent.endpoint} responds over mutual TLS with version ${reported}, not ${expectedVersion}; check which executable runs on the node and that the manifest.json of the agent directory gives the version that this executable reports`,
        );
      }
      throw new StepError('confirm', `the agent did not respond over mutual TLS at ${context.node.agent.endpoint}: ${last}; check that the port is open between this host and the node and read the agent log on the node`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** Keeps a rollback copy of the unit or control script when an upgrade is about to write it with other content. */
async function keepServiceFile(session: SshSession, file: string, content: string, rollback: RollbackPlan, sudo: boolean): Promise<void> {
  const q = shellQuote;
  const current = await runStep(session, 'start', `if [ -f ${q(file)} ]; then sha256sum < ${q(file)}; fi`, `reading the digest of ${file}`, `check that ${file} is readable`, { sudo });
  const currentSha256 = current.trim() === '' ? undefined : current.split(/\s+/)[0];
  const newSha256 = createHash('sha256').update(content).digest('hex');
  const command = serviceFileCopyCommand(file, currentSha256, newSha256, rollback.keepExisting);
  if (command === undefined) return;
  await runStep(session, 'start', command, `keeping ${file} as ${previousCopy(file)}`, `check that ${path.posix.dirname(file)} is writable`, { sudo });
}

/** Writes the unit or control script and starts or restarts the agent. During an upgrade, a file that changes keeps a rollback copy first. */
async function startAgent(session: SshSession, paths: AgentInstallPaths, init: 'systemd' | 'fallback', sudo: boolean, restart: boolean, rollback: RollbackPlan | undefined): Promise<void> {
  const q = shellQuote;
  if (init === 'systemd') {
    const unit = renderSystemdUnit(paths);
    if (rollback !== undefined) await keepServiceFile(session, paths.systemdUnit, unit, rollback, sudo);
    await session.upload(Buffer.from(unit), paths.systemdUnit, 0o644);
    const verb = restart ? 'restart' : 'start';
    await runStep(session, 'start', `systemctl daemon-reload && systemctl enable ${SYSTEMD_UNIT_NAME} && systemctl ${verb} ${SYSTEMD_UNIT_NAME}`, `starting ${SYSTEMD_UNIT_NAME}`, `run \`journalctl -u ${SYSTEMD_UNIT_NAME}\` on the node`, { sudo });
    return;
  }
  const script = renderControlScript(paths);
  if (rollback !== undefined) await keepServiceFile(session, paths.controlScript, script, rollback, sudo);
  await session.upload(Buffer.from(script), paths.controlScript, 0o755);
  await runStep(session, 'start', `${q(paths.controlScript)} ${restart ? 'restart' : 'start'}`, 'starting the agent', `read ${paths.logFile} on the node`, { sudo });
}

/** Returns the shell command that stops the agent and removes every file it installed. */
function removalCommand(paths: AgentInstallPaths, init: 'systemd' | 'fallback'): string {
  const q = shellQuote;
  const stop =
    init === 'systemd'
      ? `systemctl disable --now ${SYSTEMD_UNIT_NAME} 2>/dev/null; rm -f ${q(paths.systemdUnit)}; ${dropCopiesCommand([paths.systemdUnit])}; systemctl daemon-reload 2>/dev/null; `
      : `if [ -x ${q(paths.controlScript)} ]; then ${q(paths.controlScript)} stop; fi; `;
  const files = [paths.binary, `${paths.binary}.upload`, `${paths.binary}.upload.gz`, paths.controlScript, paths.configDir, paths.stateDir, paths.logFile, paths.pidFile];
  return `${stop}${dropCopiesCommand([paths.binary, paths.controlScript])}; rm -rf ${files.map(q).join(' ')}`;
}

/** Removes what a failed first install left on the node; errors are logged, not thrown. */
async function removeInstall(session: SshSession, paths: AgentInstallPaths, init: 'systemd' | 'fallback', sudo: boolean, logger: Logger, node: string): Promise<void> {
  try {
    const result = await session.run(removalCommand(paths, init), { sudo });
    if (result.code !== 0) logger.warn('could not remove a partial agent install', { node, stderr: result.stderr.trim() });
  } catch (error) {
    logger.warn('could not remove a partial agent install', { node, error: error instanceof Error ? error.message : String(error) });
  }
}

async function enrollOnNode(session: SshSession, context: NodeContext, paths: AgentInstallPaths, sudo: boolean): Promise<void> {
  const q = shellQuote;
  const { node } = context;
  const csr = await runStep(
    session,
    'enroll',
    `${q(paths.binary)} enroll-request --config-dir ${q(paths.configDir)} --node ${q(node.name)} --cluster ${q(context.inventory.name)} --host ${q(node.agent.host)}`,
    'generating the agent key on the node',
    `check that ${paths.configDir} is writable on the node`,
    { sudo },
  );
  let signed: Awaited<ReturnType<typeof signAgentCsr>>;
  try {
    signed = await signAgentCsr(context.inventory, context.stateDir, node.name, csr, context.options.now === undefined ? {} : { now: context.options.now() });
  } catch (error) {
    throw new StepError('enroll', `the controller rejected the agent's certificate request: ${error instanceof Error ? error.message : String(error)}`);
  }
  const incoming = `${paths.configDir}/incoming`;
  await session.upload(Buffer.from(signed.certificatePem), `${incoming}/agent.crt`, 0o644);
  await session.upload(Buffer.from(signed.managementCaPem), `${incoming}/management-ca.crt`, 0o644);
  await runStep(
    session,
    'enroll',
    [
      `${q(paths.binary)} enroll-install --config-dir ${q(paths.configDir)}`,
      `--certificate ${q(`${incoming}/agent.crt`)} --management-ca ${q(`${incoming}/management-ca.crt`)}`,
      `--controller-identity ${q(signed.controllerIdentity)}`,
      `--listen ${q(node.agent.endpoint)} --install-root ${q(node.agent.prefix)} --state-dir ${q(paths.stateDir)}`,
      `&& rm -rf ${q(incoming)}`,
    ].join(' '),
    'installing the agent identity',
    `read the message above and run \`controller bootstrap --nodes ${node.name}\` again`,
    { sudo },
  );
}

/** Restarts the agent with the unit or control script that is on the node, without writing them. */
async function restartAgent(session: SshSession, paths: AgentInstallPaths, init: 'systemd' | 'fallback', sudo: boolean): Promise<void> {
  if (init === 'systemd') {
    await runStep(session, 'rollback', `systemctl daemon-reload && systemctl restart ${SYSTEMD_UNIT_NAME}`, `restarting ${SYSTEMD_UNIT_NAME}`, `run \`journalctl -u ${SYSTEMD_UNIT_NAME}\` on the node`, { sudo });
    return;
  }
  await runStep(session, 'rollback', `${shellQuote(paths.controlScript)} restart`, 'restarting the agent', `read ${paths.logFile} on the node`, { sudo });
}

/**
 * Puts the previous agent back after a failed upgrade: moves the rollback copies into place,
 * restarts the agent and requires that it responds as the node with the previous version. Errors
 * are returned in the result, not thrown.
 */
async function rollBackUpgrade(session: SshSession, context: NodeContext, paths: AgentInstallPaths, init: 'systemd' | 'fallback', sudo: boolean, plan: RollbackPlan, newVersion: string): Promise<RollbackResult> {
  const { node, logger } = context;
  let stage: RollbackStage = 'restore';
  let restored: string[] = [];
  try {
    const output = await runStep(session, 'rollback', restoreCommand(upgradedFiles(paths, init)), 'moving the rollback copies back into place', `check the disk of the node`, { sudo });
    restored = output.split('\n').map((line) => line.trim()).filter((line) => line !== '');
    stage = 'start';
    await restartAgent(session, paths, init, sudo);
    stage = 'confirm';
    await confirmAgent(context, plan.version);
    logger.warn('agent upgrade rolled back', { node: node.name, from: newVersion, to: plan.version, restored: restored.join(' ') });
    return { status: 'done', version: plan.version, restored };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const leftover = rollbackLeftover(stage, { node: node.name, paths, init, unitName: SYSTEMD_UNIT_NAME, previousVersion: plan.version, newVersion });
    logger.error('agent rollback failed', { node: node.name, stage, from: newVersion, to: plan.version, error: message });
    return { status: 'failed', version: plan.version, restored, error: `${message}. ${leftover}` };
  }
}

/**
 * Removes the rollback copies after a confirmed upgrade. Returns a reason for the report when that
 * fails, and never throws, because the upgrade itself succeeded.
 */
async function dropRollbackCopies(session: SshSession, paths: AgentInstallPaths, init: 'systemd' | 'fallback', sudo: boolean, logger: Logger, node: string): Promise<string | undefined> {
  const files = upgradedFiles(paths, init);
  let problem: string;
  try {
    const result = await session.run(dropCopiesCommand(files), { sudo });
    if (result.code === 0) return undefined;
    problem = result.stderr.trim() || `exit ${result.code}`;
  } catch (error) {
    problem = error instanceof Error ? error.message : String(error);
  }
  logger.warn('could not remove the rollback copies', { node, error: problem });
  return `could not remove the rollback copies (${problem}); the next bootstrap upgrades again, or remove ${files.map(previousCopy).join(' and ')} by hand`;
}

async function bootstrapNode(context: NodeContext): Promise<NodeBootstrapResult> {
  const { node, options, logger } = context;
  const timings: Partial<Record<BootstrapStep, number>> = {};
  let step: BootstrapStep = 'connect';
  let started = Date.now();
  const mark = (next: BootstrapStep): void => {
    timings[step] = (timings[step] ?? 0) + (Date.now() - started);
    step = next;
    started = Date.now();
  };
  let session: SshSession | undefined;
  let action: BootstrapAction | undefined;
  let reasons: string[] = [];
  let detected: Detected | undefined;
  let freshInstall = false;
  /** The rollback target once an upgrade replaced the executable, so that a failure puts it back. */
  let switchedFrom: RollbackPlan | undefined;
  let newVersion = '';
  const settings = node.ssh;
  const paths = agentInstallPaths(node.agent.prefix);
  const sudo = settings.sudo;
  try {
    session = await openSession(node.name, settings, {
      acceptNew: options.acceptNew,
      logger,
      ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}),
    });
    mark('detect');
    detected = parseDetect(await runStep(session, 'detect', detectScript(paths), 'detecting the node', 'check that the login shell is a POSIX shell', { sudo }));
    if (detected.os !== 'Linux') throw new StepError('detect', `the node runs ${detected.os || 'an unknown OS'}; the agent runs on Linux only`);
    if (options.uninstall) {
      action = detected.installedVersion === undefined && detected.previousVersion === undefined && !detected.configPresent ? 'absent' : 'uninstall';
      reasons = action === 'absent' ? ['no agent installed'] : [`agent ${detected.installedVersion ?? '(binary missing)'} installed`];
      if (!options.dryRun && action === 'uninstall') {
        mark('uninstall');
        await runStep(session, 'uninstall', removalCommand(paths, detected.init), 'removing the agent', `remove the files below ${paths.configDir} and ${paths.binary} by hand`, { sudo });
      }
      mark('uninstall');
      return { node: node.name, action, status: options.dryRun ? 'planned' : 'done', reasons, os: detected.os, arch: detected.arch, init: detected.init, timings };
    }
    const loaded = await artifactFor(context, detected.arch);
    const artifact = loaded.artifact;
    newVersion = artifact.version;
    const problem = identityProblem(detected.identityPem, context.managementCaPem, (options.now ?? (() => new Date()))(), options.renewFraction ?? DEFAULT_RENEW_FRACTION);
    ({ action, reasons } = chooseAction(detected, artifact.version, problem));
    if (action === 'start') {
      // Installed and enrolled: leave it alone when it responds, and start it otherwise.
      mark('confirm');
      try {
        await confirmAgent({ ...context, options: { ...options, confirmTimeoutMs: 2_000 } }, artifact.version);
        action = 'unchanged';
        reasons = [`agent ${artifact.version} enrolled and answering`];
        mark('confirm');
        return { node: node.name, action, status: 'done', reasons, os: detected.os, arch: detected.arch, init: detected.init, timings };
      } catch (error) {
        reasons = [`agent installed but not answering: ${error instanceof Error ? error.message : String(error)}`];
      }
    }
    const rollbackPlan = action === 'upgrade' ? planRollback(detected.installedVersion, detected.previousVersion) : undefined;
    if (action === 'upgrade' && (options.dryRun || rollbackPlan === undefined)) reasons.push(rollbackNote(rollbackPlan, paths.binary, artifact.version));
    if (options.dryRun) {
      mark('detect');
      return { node: node.name, action, status: 'planned', reasons, os: detected.os, arch: detected.arch, init: detected.init, timings };
    }
    freshInstall = action === 'install';
    if (action === 'install' || action === 'upgrade') {
      mark('upload');
      await uploadAgent(session, loaded, paths, sudo, rollbackPlan);
      switchedFrom = rollbackPlan;
    }
    const needsIdentity = problem !== undefined || !detected.configPresent;
    if (action === 'install' || action === 'enroll' || (action === 'upgrade' && needsIdentity)) {
      mark('enroll');
      await enrollOnNode(session, context, paths, sudo);
    }
    mark('start');
    await startAgent(session, paths, detected.init, sudo, !freshInstall, rollbackPlan);
    mark('confirm');
    await confirmAgent(context, artifact.version);
    switchedFrom = undefined;
    if (action === 'upgrade') {
      const leftover = await dropRollbackCopies(session, paths, detected.init, sudo, logger, node.name);
      if (leftover !== undefined) reasons.push(leftover);
    }
    mark('confirm');
    logger.info('agent bootstrapped', { node: node.name, action, version: artifact.version });
    return { node: node.name, action, status: 'done', reasons, os: detected.os, arch: detected.arch, init: detected.init, timings };
  } catch (error) {
    mark(step);
    const failedStep = error instanceof StepError ? error.step : error instanceof SshError ? toStep(error.step, step) : step;
    const raw = error instanceof StepError || error instanceof SshError ? error.message : `${step} failed: ${error instanceof Error ? error.message : String(error)}`;
    const message = raw.startsWith(`${node.name}:`) ? raw.slice(node.name.length + 1).trimStart() : raw;
    if (freshInstall && session !== undefined && detected !== undefined) await removeInstall(session, paths, detected.init, sudo, logger, node.name);
    logger.error('bootstrap failed', { node: node.name, step: failedStep, error: message });
    let rollback: RollbackResult | undefined;
    if (switchedFrom !== undefined && session !== undefined && detected !== undefined) {
      mark('rollback');
      rollback = await rollBackUpgrade(session, context, paths, detected.init, sudo, switchedFrom, newVersion);
      mark('rollback');
    }
    return {
      node: node.name,
      action,
      status: rollback?.status === 'done' ? 'rolled-back' : 'failed',
      reasons,
      ...(detected !== undefined ? { os: detected.os, arch: detected.arch, init: detected.init } : {}),
      timings,
      error: `${node.name}: ${failureMessage(message, newVersion, rollback)}`,
      failedStep,
      ...(rollback !== undefined ? { rollback } : {}),
    };
  } finally {
    session?.close();
  }
}

function toStep(sshStep: string, current: BootstrapStep): BootstrapStep {
  if (sshStep === 'connect' || sshStep === 'host-key' || sshStep === 'auth') return 'connect';
  if (sshStep === 'upload') return 'upload';
  return current;
}

/** Runs bootstrap on the selected nodes, at most `maxParallel` at a time. */
export async function bootstrap(inventory: Inventory, stateDir: string, logger: Logger, options: BootstrapOptions): Promise<BootstrapReport> {
  const begun = Date.now();
  const known = new Set(inventory.nodes.map((node) => node.name));
  if (options.nodes !== undefined && options.nodes.length === 0) throw new BootstrapInputError('--nodes: no node names given; pass names separated by commas, or leave the option out for every node');
  const unknown = (options.nodes ?? []).filter((name) => !known.has(name));
  if (unknown.length > 0) {
    throw new BootstrapInputError(`--nodes: ${unknown.map((name) => `"${name}"`).join(', ')} not in the inventory; use names from: ${[...known].join(', ')}`);
  }
  const selected = options.nodes === undefined ? inventory.nodes : inventory.nodes.filter((node) => options.nodes?.includes(node.name));
  // A wrong agent directory fails before any node is contacted; uninstalling needs no executable.
  let manifestVersion = '';
  if (!options.uninstall) {
    try {
      manifestVersion = readAgentManifest(options.artifactDir).version;
    } catch (error) {
      if (error instanceof AgentArtifactError) throw new BootstrapInputError(error.message);
      throw error;
    }
  }
  const state = new StateDir(stateDir);
  await state.requireCluster(inventory.name);
  const management = await state.loadKeyMaterial(state.caFiles('management'), 'management CA');
  const controller = await state.loadKeyMaterial(state.controllerFiles(), 'controller identity');
  const credentials: ControllerCredentials = { managementCaPem: management.certificatePem, certificatePem: controller.certificatePem, privateKeyPem: controller.privateKeyPem };
  const artifacts = new Map<string, Promise<LoadedArtifact>>();
  const results: NodeBootstrapResult[] = new Array(selected.length);
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    for (let index = next++; index < selected.length; index = next++) {
      const node = selected[index] as NodeSpec;
      options.onProgress?.({ node: node.name, phase: 'start', done, total: selected.length });
      const result = await bootstrapNode({ inventory, node, state, stateDir, managementCaPem: management.certificatePem, controller: credentials, options, logger, artifacts });
      results[index] = result;
      done++;
      options.onProgress?.({ node: node.name, phase: 'done', status: result.status, done, total: selected.length });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.maxParallel, selected.length)) }, worker));
  return { cluster: inventory.name, dryRun: options.dryRun, uninstall: options.uninstall, agentVersion: manifestVersion, nodes: results, wallMs: Date.now() - begun };
}
