/**
 * Installs a change set. Every changed file is first staged beside its target and fsynced; then a
 * journal listing the staged files is written; then all are renamed into place. If the agent dies
 * after the journal is written, the next start finishes the renames (`recoverInterruptedChange`),
 * so a node ends with the whole old set or the whole new set, and a key always matches its certificate.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { FileChange__Output } from '@kubetrust/proto';
import { readFileIfExists, syncDirectory, writeFileAtomic, type WriteOptions } from '@kubetrust/shared/dist/files';
import { renderKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import type { Logger } from '@kubetrust/shared/dist/logger';
import { stageFile } from '@kubetrust/shared/dist/files';
import { InvalidRequestError } from './errors';
import { hostPath } from './paths';
import type { StagedKeys } from './staged-keys';

const CHANGE_ID = /^[a-z0-9][a-z0-9.-]{0,127}$/;
const JOURNAL = 'journal.json';
/** Sorted node paths that an install put on the node and no later change removed. */
const INSTALLED = 'installed.json';


interface PlannedWrite {
  readonly nodePath: string;
  readonly target: string;
  readonly data: Buffer;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

/** One step of a change: rename a staged file over its target, or remove the target. */
interface JournalEntry {
  readonly target: string;
  readonly staged?: string;
  readonly remove?: true;
}

/** Record in a backup directory of the change that replaced its files. */
interface BackupManifest {
  readonly changeId: string;
  readonly createdAt: string;
  readonly restartServices: readonly string[];
  readonly entries: readonly { readonly nodePath: string; readonly existed: boolean; readonly mode: number; readonly uid: number; readonly gid: number }[];
  readonly rolledBack?: boolean;
}

const BACKUP_MANIFEST = 'manifest.json';
const BACKUP_FILES = 'files';

/** Backups kept per node unless the agent configuration sets backupsKept. */
const DEFAULT_BACKUPS_KEPT = 5;

export interface RollbackResult {
  readonly changeId: string;
  /** Files put back to their content before the change. */
  readonly restoredPaths: string[];
  /** Files the change had created, now deleted. */
  readonly removedPaths: string[];
  readonly restartServices: readonly string[];
}

export interface InstallResult {
  readonly changedPaths: string[];
  /** Files of the removal list that existed and were deleted. */
  readonly removedPaths: string[];
  readonly backupDir: string;
  readonly usedKeyIds: string[];
}

async function contentOf(change: FileChange__Output, keys: StagedKeys): Promise<{ data: Buffer; keyIds: string[] }> {
  switch (change.content) {
    case 'data':
      return { data: change.data ?? Buffer.alloc(0), keyIds: [] };
    case 'staged_key_id': {
      const keyId = change.staged_key_id ?? '';
      return { data: Buffer.from(await keys.read(keyId)), keyIds: [keyId] };
    }
    case 'kubeconfig': {
      const kubeconfig = change.kubeconfig;
      if (kubeconfig === null || kubeconfig === undefined) throw new InvalidRequestError(`${change.path}: kubeconfig content is empty`);
      const rendered = renderKubeconfig({
        clusterName: kubeconfig.cluster_name,
        server: kubeconfig.server,
        user: kubeconfig.user,
        certificateAuthorityPem: kubeconfig.certificate_authority_pem.toString('utf8'),
        clientCertificatePem: kubeconfig.client_certificate_pem.toString('utf8'),
        clientKeyPem: await keys.read(kubeconfig.client_key_id),
      });
      return { data: Buffer.from(rendered), keyIds: [kubeconfig.client_key_id] };
    }
    default:
      throw new InvalidRequestError(`${change.path}: no content given`);
  }
}

/**
 * Carries out journal steps in their order, then fsyncs each directory they touched once. Removing
 * a file that is already gone is not an error. The caller removes the journal only after this
 * returns, so a crash before the directories are synced leaves the journal to finish the steps.
 */
async function applyJournalEntries(entries: readonly JournalEntry[]): Promise<void> {
  const renamedIn = new Set<string>();
  const removedIn = new Set<string>();
  for (const entry of entries) {
    if (entry.remove === true) {
      await fs.rm(entry.target, { force: true });
      removedIn.add(path.dirname(entry.target));
    } else if (entry.staged !== undefined) {
      await fs.rename(entry.staged, entry.target);
      renamedIn.add(path.dirname(entry.target));
    }
  }
  await Promise.all([
    ...[...renamedIn].map((dir) => syncDirectory(dir)),
    // A directory whose files were all removed may be gone too.
    ...[...removedIn].filter((dir) => !renamedIn.has(dir)).map((dir) => syncDirectory(dir).catch(() => undefined)),
  ]);
}

/**
 * Stages files concurrently, so that their fsyncs overlap. When one fails, the files staged by the
 * others are removed and the first error is thrown.
 */
export async function stageConcurrently(items: readonly { readonly target: string; readonly data: Buffer; readonly options: WriteOptions }[]): Promise<JournalEntry[]> {
  const results = await Promise.allSettled(items.map((item) => stageFile(item.target, item.data, item.options)));
  const failure = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failure !== undefined) {
    await Promise.all(results.map((result) => (result.status === 'fulfilled' ? fs.rm(result.value, { force: true }) : undefined)));
    throw failure.reason;
  }
  return items.map((item, index) => ({ target: item.target, staged: (results[index] as PromiseFulfilledResult<string>).value }));
}

async function isUnchanged(write: PlannedWrite, manageOwner: boolean): Promise<boolean> {
  const current = await readFileIfExists(write.target);
  if (current === undefined || !current.equals(write.data)) return false;
  const stat = await fs.stat(write.target);
  if ((stat.mode & 0o7777) !== write.mode) return false;
  return !manageOwner || (stat.uid === write.uid && stat.gid === write.gid);
}

/** Lists the names in a directory, or none when the directory does not exist. */
async function readDirectoryIfExists(directory: string): Promise<string[]> {
  try {
    return await fs.readdir(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/** The name stageFile gives a staged copy of `<name>`: `.<name>.tmp-` and 12 hex digits. */
const STAGED_NAME = /^\.(.+)\.tmp-[0-9a-f]{12}$/;

export class Installer {
  private readonly manageOwner = process.getuid?.() === 0;

  constructor(
    private readonly installRoot: string,
    private readonly stateDir: string,
    private readonly keys: StagedKeys,
    private readonly logger: Logger,
    private readonly backupsKept: number = DEFAULT_BACKUPS_KEPT,
  ) {}

  private async plan(changes: readonly FileChange__Output[]): Promise<{ writes: PlannedWrite[]; keyIds: string[] }> {
    const seen = new Set<string>();
    const writes: PlannedWrite[] = [];
    const keyIds: string[] = [];
    for (const change of changes) {
      let target: string;
      try {
        target = hostPath(this.installRoot, change.path);
      } catch (error) {
        throw new InvalidRequestError((error as Error).message);
      }
      if (seen.has(change.path)) throw new InvalidRequestError(`path "${change.path}" appears twice in one change`);
      if (change.mode > 0o7777) throw new InvalidRequestError(`${change.path}: mode ${change.mode.toString(8)} is invalid`);
      seen.add(change.path);
      const content = await contentOf(change, this.keys);
      keyIds.push(...content.keyIds);
      writes.push({ nodePath: change.path, target, data: content.data, mode: change.mode, uid: change.uid, gid: change.gid });
    }
    return { writes, keyIds };
  }

  /**
   * Installs the files of one change; unchanged files are left alone. `beforeRename` runs after every
   * file is staged and before the first rename, so that the caller can record what must follow.
   */
  async install(
    changeId: string,
    changes: readonly FileChange__Output[],
    beforeRename: () => Promise<void> = async () => {},
    restartServices: readonly string[] = [],
    removePaths: readonly string[] = [],
  ): Promise<InstallResult> {
    if (!CHANGE_ID.test(changeId)) throw new InvalidRequestError(`change id "${changeId}" is invalid`);
    const { writes, keyIds } = await this.plan(changes);
    const installed = await this.installedPaths();
    const removals = await this.planRemovals(removePaths, writes, installed);
    const changed: PlannedWrite[] = [];
    for (const write of writes) {
      if (!(await isUnchanged(write, this.manageOwner))) changed.push(write);
    }
    const backupDir = path.join(this.stateDir, 'backups', changeId);
    const record = async (): Promise<void> => {
      for (const write of writes) installed.add(write.nodePath);
      for (const nodePath of removePaths) installed.delete(nodePath);
      await this.writeInstalledPaths(installed);
    };
    if (changed.length === 0 && removals.length === 0) {
      await this.keys.discard(keyIds);
      await record();
      return { changedPaths: [], removedPaths: [], backupDir: '', usedKeyIds: keyIds };
    }
    // A removed file is backed up like a replaced one, so that a rollback puts it back.
    await this.backup(changeId, [...changed, ...removals], backupDir, restartServices);
    const journal = [...(await this.stageAll(changed)), ...removals.map((removal): JournalEntry => ({ target: removal.target, remove: true }))];
    try {
      await beforeRename();
    } catch (error) {
      await Promise.all(journal.map((entry) => (entry.staged === undefined ? undefined : fs.rm(entry.staged, { force: true }))));
      throw error;
    }
    await this.runJournal(changeId, journal);
    await record();
    await this.keys.discard(keyIds);
    await this.pruneBackups();
    this.logger.info('change installed', { change: changeId, files: changed.length, removed: removals.length });
    return { changedPaths: changed.map((write) => write.nodePath), removedPaths: removals.map((removal) => removal.nodePath), backupDir, usedKeyIds: keyIds };
  }

  /**
   * Checks a removal list and returns the files of it that exist now. Only a path that an earlier
   * install put there may be removed; a listed file that is already gone is only forgotten.
   */
  private async planRemovals(removePaths: readonly string[], writes: readonly PlannedWrite[], installed: ReadonlySet<string>): Promise<PlannedWrite[]> {
    const written = new Set(writes.map((write) => write.nodePath));
    const seen = new Set<string>();
    const removals: PlannedWrite[] = [];
    for (const nodePath of removePaths) {
      let target: string;
      try {
        target = hostPath(this.installRoot, nodePath);
      } catch (error) {
        throw new InvalidRequestError((error as Error).message);
      }
      if (seen.has(nodePath)) throw new InvalidRequestError(`path "${nodePath}" appears twice in the removal list`);
      seen.add(nodePath);
      if (written.has(nodePath)) throw new InvalidRequestError(`path "${nodePath}" is both written and removed in one change`);
      if (!installed.has(nodePath)) throw new InvalidRequestError(`path "${nodePath}" was not installed by this agent, so it is not removed; remove it by hand if it must go`);
      if ((await readFileIfExists(target)) === undefined) continue;
      removals.push({ nodePath, target, data: Buffer.alloc(0), mode: 0, uid: 0, gid: 0 });
    }
    return removals;
  }

  /**
   * Returns the node paths that installs put on the node and no later change removed. An agent
   * that kept no list yet starts from the files named in its backups that exist now.
   */
  async installedPaths(): Promise<Set<string>> {
    const data = await readFileIfExists(path.join(this.stateDir, INSTALLED));
    if (data !== undefined) return new Set(JSON.parse(data.toString('utf8')) as string[]);
    const paths = new Set<string>();
    for (const backup of await this.readBackups()) {
      for (const entry of backup.entries) {
        if ((await readFileIfExists(hostPath(this.installRoot, entry.nodePath))) !== undefined) paths.add(entry.nodePath);
      }
    }
    return paths;
  }

  private async writeInstalledPaths(paths: ReadonlySet<string>): Promise<void> {
    await writeFileAtomic(path.join(this.stateDir, INSTALLED), JSON.stringify([...paths].sort()), { mode: 0o600 });
  }

  /** Writes the journal, carries out every step and removes the journal. */
  private async runJournal(changeId: string, journal: readonly JournalEntry[]): Promise<void> {
    await writeFileAtomic(path.join(this.stateDir, JOURNAL), JSON.stringify({ changeId, entries: journal }), { mode: 0o600 });
    await applyJournalEntries(journal);
    await fs.rm(path.join(this.stateDir, JOURNAL), { force: true });
  }

  private async backup(changeId: string, writes: readonly PlannedWrite[], backupDir: string, restartServices: readonly string[]): Promise<void> {
    // The files are backed up concurrently, so that their fsyncs overlap. The manifest comes last.
    const entries = await Promise.all(
      writes.map(async (write): Promise<BackupManifest['entries'][number]> => {
        const current = await readFileIfExists(write.target);
        if (current === undefined) return { nodePath: write.nodePath, existed: false, mode: 0, uid: 0, gid: 0 };
        const stat = await fs.stat(write.target);
        const mode = stat.mode & 0o7777;
        // Backups may contain private keys, so every backup file is private whatever its original mode.
        await writeFileAtomic(path.join(backupDir, BACKUP_FILES, write.nodePath), current, { mode: 0o600 });
        return { nodePath: write.nodePath, existed: true, mode, uid: stat.uid, gid: stat.gid };
      }),
    );
    const manifest: BackupManifest = { changeId, createdAt: new Date().toISOString(), restartServices: [...restartServices], entries };
    await writeFileAtomic(path.join(backupDir, BACKUP_MANIFEST), JSON.stringify(manifest, null, 1), { mode: 0o600 });
  }

  private async readBackups(): Promise<BackupManifest[]> {
    const root = path.join(this.stateDir, 'backups');
    let names: string[];
    try {
      names = await fs.readdir(root);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const manifests: BackupManifest[] = [];
    for (const name of names) {
      const data = await readFileIfExists(path.join(root, name, BACKUP_MANIFEST));
      if (data !== undefined) manifests.push(JSON.parse(data.toString('utf8')) as BackupManifest);
    }
    return manifests.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Deletes the oldest backups beyond the number kept. */
  private async pruneBackups(): Promise<void> {
    const backups = await this.readBackups();
    for (const old of backups.slice(0, Math.max(0, backups.length - this.backupsKept))) {
      await fs.rm(path.join(this.stateDir, 'backups', old.changeId), { recursive: true, force: true });
    }
  }

  /**
   * Puts back the files of one change (the latest not rolled back when `changeId` is empty): a file
   * the change replaced gets its previous content, mode and owner; a file it created is removed.
   * The steps go through the journal like an install, so a crash leaves all or nothing undone.
   */
  async rollback(changeId: string, allowRemovingAll = false): Promise<RollbackResult> {
    const backups = await this.readBackups();
    const target = changeId === '' ? backups.filter((backup) => backup.rolledBack !== true).at(-1) : backups.find((backup) => backup.changeId === changeId);
    if (target === undefined) {
      const known = backups.map((backup) => backup.changeId).join(', ') || 'none';
      throw new InvalidRequestError(changeId === '' ? 'there is no change to roll back' : `no backup of change "${changeId}"; backups kept: ${known}`);
    }
    if (target.rolledBack === true) throw new InvalidRequestError(`change "${target.changeId}" was already rolled back`);
    if (!allowRemovingAll && target.entries.every((entry) => !entry.existed)) {
      throw new InvalidRequestError(
        `change "${target.changeId}" created every file it installed (${target.entries.length}), so undoing it would delete them all and leave the node without them; ` +
          'pass the change id explicitly and allow the removal if that is what you want',
      );
    }
    const backupDir = path.join(this.stateDir, 'backups', target.changeId);
    const journal: JournalEntry[] = [];
    try {
      for (const entry of target.entries) {
        const hostFile = hostPath(this.installRoot, entry.nodePath);
        if (!entry.existed) {
          journal.push({ target: hostFile, remove: true });
          continue;
        }
        const data = await fs.readFile(path.join(backupDir, BACKUP_FILES, entry.nodePath));
        const owner = this.manageOwner ? { uid: entry.uid, gid: entry.gid } : {};
        journal.push({ target: hostFile, staged: await stageFile(hostFile, data, { mode: entry.mode, ...owner }) });
      }
    } catch (error) {
      await Promise.all(journal.filter((entry) => entry.staged !== undefined).map((entry) => fs.rm(entry.staged!, { force: true })));
      throw error;
    }
    await this.runJournal(`rollback-${target.changeId}`, journal);
    const installed = await this.installedPaths();
    for (const entry of target.entries) {
      if (entry.existed) installed.add(entry.nodePath);
      else installed.delete(entry.nodePath);
    }
    await this.writeInstalledPaths(installed);
    await writeFileAtomic(path.join(backupDir, BACKUP_MANIFEST), JSON.stringify({ ...target, rolledBack: true }, null, 1), { mode: 0o600 });
    this.logger.warn('change rolled back', { change: target.changeId, files: journal.length });
    return {
      changeId: target.changeId,
      restoredPaths: target.entries.filter((entry) => entry.existed).map((entry) => entry.nodePath),
      removedPaths: target.entries.filter((entry) => !entry.existed).map((entry) => entry.nodePath),
      restartServices: target.restartServices,
    };
  }

  private async stageAll(writes: readonly PlannedWrite[]): Promise<JournalEntry[]> {
    return stageConcurrently(
      writes.map((write) => ({
        target: write.target,
        data: write.data,
        options: { mode: write.mode, ...(this.manageOwner ? { uid: write.uid, gid: write.gid } : {}) },
      })),
    );
  }

  /**
   * Completes a change interrupted between its journal and its last rename, then removes what a
   * change interrupted earlier left: files staged beside the targets, a backup folder without its
   * manifest, and temporary files in the state directory. Runs at start-up, before any call is
   * served, so no write of this agent is in progress.
   */
  async recoverInterruptedChange(): Promise<void> {
    await this.completeJournal();
    await this.removeStrayStagedFiles();
    await this.removeIncompleteBackups();
    await this.removeStateTemporaries(this.stateDir);
  }

  /**
   * Removes backup folders without a manifest. A change writes its manifest after every backup
   * copy and before it stages anything, so such a folder belongs to a change that never touched a
   * target. Its copies can include private keys.
   */
  private async removeIncompleteBackups(): Promise<void> {
    const root = path.join(this.stateDir, 'backups');
    for (const name of await readDirectoryIfExists(root)) {
      if ((await readFileIfExists(path.join(root, name, BACKUP_MANIFEST))) !== undefined) continue;
      await fs.rm(path.join(root, name), { recursive: true, force: true });
      this.logger.warn('removed the backup of an interrupted change', { change: name });
    }
  }

  /** Removes the temporary files (`.<name>.tmp-<hex>`) that an interrupted write left below `dir`. */
  private async removeStateTemporaries(dir: string): Promise<void> {
    let entries: import('node:fs').Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const entry of entries) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) await this.removeStateTemporaries(full);
      else if (STAGED_NAME.test(entry.name)) await fs.rm(full, { force: true });
    }
  }

  private async completeJournal(): Promise<void> {
    const journalFile = path.join(this.stateDir, JOURNAL);
    const data = await readFileIfExists(journalFile);
    if (data === undefined) return;
    const journal = JSON.parse(data.toString('utf8')) as { changeId: string; entries: JournalEntry[] };
    const remaining: JournalEntry[] = [];
    for (const entry of journal.entries) {
      if (entry.remove === true || (entry.staged !== undefined && (await readFileIfExists(entry.staged)) !== undefined)) remaining.push(entry);
    }
    await applyJournalEntries(remaining);
    await fs.rm(journalFile, { force: true });
    await syncDirectory(this.stateDir);
    this.logger.warn('completed an interrupted change', { change: journal.changeId, files: journal.entries.length });
  }

  /**
   * Removes the staged copies (`.<name>.tmp-<hex>`, as stageFile names them) that a change stopped
   * between staging and its journal left beside its targets. Some of them hold private keys. Every
   * change writes its backup manifest before it stages, so the manifests kept name every possible
   * target. Only the names that stageFile gives to those targets are removed.
   */
  private async removeStrayStagedFiles(): Promise<void> {
    const byDirectory = new Map<string, Set<string>>();
    for (const backup of await this.readBackups()) {
      for (const entry of backup.entries) {
        const target = hostPath(this.installRoot, entry.nodePath);
        const names = byDirectory.get(path.dirname(target)) ?? new Set<string>();
        names.add(path.basename(target));
        byDirectory.set(path.dirname(target), names);
      }
    }
    const removed: string[] = [];
    for (const [directory, names] of byDirectory) {
      for (const entry of await readDirectoryIfExists(directory)) {
        const match = STAGED_NAME.exec(entry);
        if (match === null || !names.has(match[1]!)) continue;
        await fs.rm(path.join(directory, entry), { force: true });
        removed.push(path.join(directory, entry));
      }
    }
    if (removed.length > 0) this.logger.warn('removed files staged by an interrupted change', { files: removed.length });
  }
}
