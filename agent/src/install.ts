/**
 * Installs a change set. Every changed file is first staged beside its target and fsynced; then a
 * journal listing the staged files is written; then all are renamed into place. If the agent dies
 * after the journal is written, the next start finishes the renames (`recoverInterruptedChange`),
 * so a node ends with the whole old set or the whole new set, and a key always matches its certificate.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { FileChange__Output } from '@kubetrust/proto';
import { commitStagedFile, readFileIfExists, syncDirectory, writeFileAtomic } from '@kubetrust/shared/dist/files';
import { renderKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import type { Logger } from '@kubetrust/shared/dist/log';
import { stageFile } from '@kubetrust/shared/dist/files';
import { InvalidRequestError } from './errors';
import { hostPath } from './paths';
import type { StagedKeys } from './staged-keys';

const CHANGE_ID = /^[a-z0-9][a-z0-9.-]{0,127}$/;
const JOURNAL = 'journal.json';


interface PlannedWrite {
  readonly nodePath: string;
  readonly target: string;
  readonly data: Buffer;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

interface JournalEntry {
  readonly target: string;
  readonly staged: string;
}

export interface InstallResult {
  readonly changedPaths: string[];
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

async function isUnchanged(write: PlannedWrite, manageOwner: boolean): Promise<boolean> {
  const current = await readFileIfExists(write.target);
  if (current === undefined || !current.equals(write.data)) return false;
  const stat = await fs.stat(write.target);
  if ((stat.mode & 0o7777) !== write.mode) return false;
  return !manageOwner || (stat.uid === write.uid && stat.gid === write.gid);
}

export class Installer {
  private readonly manageOwner = process.getuid?.() === 0;

  constructor(
    private readonly installRoot: string,
    private readonly stateDir: string,
    private readonly keys: StagedKeys,
    private readonly logger: Logger,
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
  async install(changeId: string, changes: readonly FileChange__Output[], beforeRename: () => Promise<void> = async () => {}): Promise<InstallResult> {
    if (!CHANGE_ID.test(changeId)) throw new InvalidRequestError(`change id "${changeId}" is invalid`);
    const { writes, keyIds } = await this.plan(changes);
    const changed: PlannedWrite[] = [];
    for (const write of writes) {
      if (!(await isUnchanged(write, this.manageOwner))) changed.push(write);
    }
    const backupDir = path.join(this.stateDir, 'backups', changeId);
    if (changed.length === 0) {
      await this.keys.discard(keyIds);
      return { changedPaths: [], backupDir: '', usedKeyIds: keyIds };
    }
    await this.backup(changed, backupDir);
    const journal = await this.stageAll(changed);
    await beforeRename();
    await writeFileAtomic(path.join(this.stateDir, JOURNAL), JSON.stringify({ changeId, entries: journal }), { mode: 0o600 });
    for (const entry of journal) await commitStagedFile(entry.staged, entry.target);
    await fs.rm(path.join(this.stateDir, JOURNAL), { force: true });
    await this.keys.discard(keyIds);
    this.logger.info('change installed', { change: changeId, files: changed.length });
    return { changedPaths: changed.map((write) => write.nodePath), backupDir, usedKeyIds: keyIds };
  }

  private async backup(writes: readonly PlannedWrite[], backupDir: string): Promise<void> {
    for (const write of writes) {
      const current = await readFileIfExists(write.target);
      if (current === undefined) continue;
      const stat = await fs.stat(write.target);
      await writeFileAtomic(path.join(backupDir, write.nodePath), current, { mode: stat.mode & 0o7777 });
    }
    await fs.mkdir(backupDir, { recursive: true });
  }

  private async stageAll(writes: readonly PlannedWrite[]): Promise<JournalEntry[]> {
    const staged: JournalEntry[] = [];
    try {
      for (const write of writes) {
        const owner = this.manageOwner ? { uid: write.uid, gid: write.gid } : {};
        staged.push({ target: write.target, staged: await stageFile(write.target, write.data, { mode: write.mode, ...owner }) });
      }
      return staged;
    } catch (error) {
      await Promise.all(staged.map((entry) => fs.rm(entry.staged, { force: true })));
      throw error;
    }
  }

  /** Completes a change interrupted between its journal and its last rename. */
  async recoverInterruptedChange(): Promise<void> {
    const journalFile = path.join(this.stateDir, JOURNAL);
    const data = await readFileIfExists(journalFile);
    if (data === undefined) return;
    const journal = JSON.parse(data.toString('utf8')) as { changeId: string; entries: JournalEntry[] };
    for (const entry of journal.entries) {
      if ((await readFileIfExists(entry.staged)) !== undefined) await commitStagedFile(entry.staged, entry.target);
    }
    await fs.rm(journalFile, { force: true });
    await syncDirectory(this.stateDir);
    this.logger.warn('completed an interrupted change', { change: journal.changeId, files: journal.entries.length });
  }
}
