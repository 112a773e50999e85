/**
 * The controller's state directory: CA keys and certificates of both trust planes, the
 * service-account key pair, the cluster record and the issuance ledger. Every write is atomic
 * (temporary file, fsync, rename) and nothing is overwritten silently.
 *
 *   cluster.json               cluster name and the time init created the state
 *   pki/<ca>.crt, pki/<ca>.key cluster-plane CAs (cluster-ca, etcd-ca, front-proxy-ca)
 *   pki/sa.key, pki/sa.pub     service-account signing key pair
 *   management/ca.{crt,key}    management CA: signs the controller and agent identities
 *   management/controller.{crt,key}
 *   ledger.json                every certificate issued: node, name, serial, expiry
 *   rollout.json               the rollout in progress: when it started and each finished node
 *   lock                       PID of the controller process using the directory
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { CaName } from '@kubetrust/shared/dist/catalogue';
import { LockedError, acquirePidLock, readFileIfExists, writeFileAtomic } from '@kubetrust/shared/dist/files';
import { loadPrivateKey } from '@kubetrust/shared/dist/pki';

export class StateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateError';
  }
}

export interface ClusterRecord {
  readonly name: string;
  readonly createdAt: string;
}

export interface KeyMaterial {
  readonly certificatePem: string;
  readonly privateKey: crypto.KeyObject;
  readonly privateKeyPem: string;
}

export interface LedgerEntry {
  readonly node: string;
  readonly name: string;
  readonly ca: string;
  readonly serialNumber: string;
  readonly notAfter: string;
  readonly issuedAt: string;
}

/**
 * One step of a kubelet's TLS bootstrap, kept in the ledger beside the certificates. Token ids are
 * public; the token secret is never recorded.
 */
/**
 * The rollout of a distribute that is changing nodes, kept in `rollout.json` until the rollout
 * ends. A file left behind means that the controller stopped midway.
 */
export interface RolloutRecord {
  readonly startedAt: string;
  /** Nodes the rollout was to change. */
  readonly total: number;
  /** Each node that finished, with its status (changed, failed, rolled-back, skipped...). */
  readonly finished: Readonly<Record<string, string>>;
}

export interface KubeletBootstrapRecord {
  readonly node: string;
  /** token-issued: pushed to the node. registered: the kubelet has its client certificate and the Node exists. token-deleted: its Secret was deleted. */
  readonly event: 'token-issued' | 'registered' | 'token-deleted';
  readonly at: string;
  readonly tokenId?: string;
  readonly expiration?: string;
  /** SHA-256 of the bootstrap kubeconfig pushed with the token, to recognise the file on the node later. */
  readonly bootstrapKubeconfigSha256?: string;
  readonly clientCertificateSerial?: string;
  /** Set on `registered`: the agent deleted the bootstrap kubeconfig. */
  readonly bootstrapKubeconfigRemoved?: boolean;
  readonly reason?: string;
}

const PRIVATE = { mode: 0o600 };
const PUBLIC = { mode: 0o644 };

/**
 * Formats one ledger entry as JSON.stringify({ issued }, null, 1) formats an element of `issued`:
 * indented by one space per level, two levels deep. JSON text has no raw line breaks inside
 * strings, so indenting every line is safe.
 */
export function formatLedgerEntry(entry: LedgerEntry | KubeletBootstrapRecord): string {
  return JSON.stringify(entry, null, 1)
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}

/**
 * Builds ledger.json from formatted entries: the same text as JSON.stringify({ issued }, null, 1)
 * plus a line break, or JSON.stringify({ issued, kubeletBootstrap }, null, 1) once a kubelet
 * bootstrap has been recorded.
 */
export function renderLedger(entryTexts: readonly string[], bootstrapTexts: readonly string[] = []): string {
  const list = (texts: readonly string[]): string => (texts.length === 0 ? '[]' : `[\n${texts.join(',\n')}\n ]`);
  if (bootstrapTexts.length === 0) return `{\n "issued": ${list(entryTexts)}\n}\n`;
  return `{\n "issued": ${list(entryTexts)},\n "kubeletBootstrap": ${list(bootstrapTexts)}\n}\n`;
}

/** The ledger as this process last wrote it, and the identity of the file it wrote. */
interface WrittenLedger {
  readonly entryTexts: string[];
  readonly bootstrapTexts: string[];
  readonly ino: bigint;
  readonly size: bigint;
  readonly mtimeNs: bigint;
}

export class StateDir {
  constructor(readonly root: string) {}

  path(...parts: string[]): string {
    return path.join(this.root, ...parts);
  }

  caFiles(name: CaName | 'management'): { certificate: string; privateKey: string } {
    return name === 'management'
      ? { certificate: this.path('management', 'ca.crt'), privateKey: this.path('management', 'ca.key') }
      : { certificate: this.path('pki', `${name}.crt`), privateKey: this.path('pki', `${name}.key`) };
  }

  controllerFiles(): { certificate: string; privateKey: string } {
    return { certificate: this.path('management', 'controller.crt'), privateKey: this.path('management', 'controller.key') };
  }

  serviceAccountFiles(): { privateKey: string; publicKey: string } {
    return { privateKey: this.path('pki', 'sa.key'), publicKey: this.path('pki', 'sa.pub') };
  }

  async readCluster(): Promise<ClusterRecord | undefined> {
    const data = await readFileIfExists(this.path('cluster.json'));
    return data === undefined ? undefined : (JSON.parse(data.toString('utf8')) as ClusterRecord);
  }

  /** Returns the cluster record, or throws when the directory is not initialised or belongs to another cluster. */
  async requireCluster(cluster: string): Promise<ClusterRecord> {
    const record = await this.readCluster();
    if (record === undefined) {
      throw new StateError(`state directory ${this.root} is not initialised; run \`controller init --inventory FILE --state-dir ${this.root}\` first`);
    }
    if (record.name !== cluster) {
      throw new StateError(`state directory ${this.root} belongs to cluster "${record.name}", not "${cluster}"; pass the inventory of cluster "${record.name}" or the --state-dir of cluster "${cluster}"`);
    }
    return record;
  }

  async writeCluster(record: ClusterRecord): Promise<void> {
    await writeFileAtomic(this.path('cluster.json'), JSON.stringify(record, null, 2) + '\n', PUBLIC);
  }

  /** Loads a certificate and its key, checking that they belong together. */
  async loadKeyMaterial(files: { certificate: string; privateKey: string }, what: string): Promise<KeyMaterial> {
    const [certificate, key] = await Promise.all([readFileIfExists(files.certificate), readFileIfExists(files.privateKey)]);
    if (certificate === undefined || key === undefined) {
      const missing = certificate === undefined ? files.certificate : files.privateKey;
      throw new StateError(`${what}: ${missing} is missing; run \`controller init\` with this --state-dir, or restore the file from a backup`);
    }
    const privateKey = loadPrivateKey(key);
    if (!new crypto.X509Certificate(certificate).checkPrivateKey(privateKey)) {
      throw new StateError(`${what}: ${files.privateKey} does not match ${files.certificate}; restore the matching pair from a backup`);
    }
    return { certificatePem: certificate.toString('utf8'), privateKey, privateKeyPem: key.toString('utf8') };
  }

  async writeKeyMaterial(files: { certificate: string; privateKey: string }, certificatePem: string, privateKeyPem: string): Promise<void> {
    // The key goes first: a certificate on disk always has its key beside it.
    await writeFileAtomic(files.privateKey, privateKeyPem, PRIVATE);
    await writeFileAtomic(files.certificate, certificatePem, PUBLIC);
  }

  async writeServiceAccount(privateKeyPem: string, publicKeyPem: string): Promise<void> {
    const files = this.serviceAccountFiles();
    await writeFileAtomic(files.privateKey, privateKeyPem, PRIVATE);
    await writeFileAtomic(files.publicKey, publicKeyPem, PUBLIC);
  }

  async readServiceAccount(): Promise<{ privateKeyPem: string; publicKeyPem: string }> {
    const files = this.serviceAccountFiles();
    const [privateKey, publicKey] = await Promise.all([readFileIfExists(files.privateKey), readFileIfExists(files.publicKey)]);
    if (privateKey === undefined || publicKey === undefined) {
      throw new StateError(`service-account key pair: ${privateKey === undefined ? files.privateKey : files.publicKey} is missing; run \`controller init\``);
    }
    return { privateKeyPem: privateKey.toString('utf8'), publicKeyPem: publicKey.toString('utf8') };
  }

  async readLedger(): Promise<LedgerEntry[]> {
    return (await this.readLedgerFile()).issued;
  }

  /** Returns the kubelet bootstrap records of the ledger, oldest first. */
  async readKubeletBootstrapRecords(): Promise<KubeletBootstrapRecord[]> {
    return (await this.readLedgerFile()).kubeletBootstrap ?? [];
  }

  private async readLedgerFile(): Promise<{ issued: LedgerEntry[]; kubeletBootstrap?: KubeletBootstrapRecord[] }> {
    const data = await readFileIfExists(this.path('ledger.json'));
    return data === undefined ? { issued: [] } : (JSON.parse(data.toString('utf8')) as { issued: LedgerEntry[]; kubeletBootstrap?: KubeletBootstrapRecord[] });
  }

  private ledgerWrites: Promise<void> = Promise.resolve();
  private rolloutWrites: Promise<void> = Promise.resolve();
  private nextRolloutWrite: { readonly done: Promise<void>; record: RolloutRecord | undefined; durable: boolean } | undefined;

  /** Reads `rollout.json`: the record of a rollout that has not ended, or undefined. */
  async readRollout(): Promise<RolloutRecord | undefined> {
    const data = await readFileIfExists(this.path('rollout.json'));
    return data === undefined ? undefined : (JSON.parse(data.toString('utf8')) as RolloutRecord);
  }

  /**
   * Writes the rollout record, or removes it when `record` is undefined. Writes run one after
   * another, and calls made while one runs are merged into the next, which writes the latest
   * record. So a rollout of many nodes costs one write per burst of finished nodes, not per node.
   * The record is serialized when its write starts, so a caller may keep changing the object it
   * passed, and the write takes the changes made until then.
   *
   * `progress` writes skip fsync: they survive a crash of the controller, and a power loss can only
   * leave fewer finished nodes in the record, which a rerun does not rely on because it plans from
   * the nodes' files. The first record of a rollout is written with fsync.
   */
  writeRollout(record: RolloutRecord | undefined, progress = false): Promise<void> {
    if (this.nextRolloutWrite === undefined) {
      const next: { done: Promise<void>; record: RolloutRecord | undefined; durable: boolean } = { done: Promise.resolve(), record, durable: false };
      const write = async (): Promise<void> => {
        this.nextRolloutWrite = undefined;
        const file = this.path('rollout.json');
        if (next.record === undefined) await fs.rm(file, { force: true });
        else await writeFileAtomic(file, JSON.stringify(next.record, null, 1) + '\n', { ...PUBLIC, durable: next.durable });
      };
      next.done = this.rolloutWrites.then(write, write);
      this.nextRolloutWrite = next;
      this.rolloutWrites = next.done;
    }
    this.nextRolloutWrite.record = record;
    if (!progress) this.nextRolloutWrite.durable = true;
    return this.nextRolloutWrite.done;
  }
  /** The write that has not started yet and the entries it will append; later calls join it. */
  private nextLedgerWrite: { readonly done: Promise<void>; readonly entries: LedgerEntry[] } | undefined;
  private writtenLedger: WrittenLedger | undefined;

  /**
   * Appends entries to the ledger. Writes run one after another, and calls made while a write is
   * running are merged into the next one. Each call resolves once its entries are on disk. A
   * distribute appends once per node, and parsing and rewriting the whole file per call cost about
   * 2 ms of CPU per certificate at 1,000 nodes. So a write reuses the entries this object wrote last
   * unless the file changed.
   */
  appendLedger(entries: readonly LedgerEntry[]): Promise<void> {
    if (this.nextLedgerWrite === undefined) {
      const batch: LedgerEntry[] = [];
      const write = async (): Promise<void> => {
        // Calls from now on go into the write after this one.
        this.nextLedgerWrite = undefined;
        await this.writeLedger(batch);
      };
      const done = this.ledgerWrites.then(write, write);
      this.nextLedgerWrite = { done, entries: batch };
      this.ledgerWrites = done;
    }
    this.nextLedgerWrite.entries.push(...entries);
    return this.nextLedgerWrite.done;
  }

  /** Appends kubelet bootstrap records to ledger.json, after any ledger write already queued, in one atomic replace. */
  appendKubeletBootstrapRecords(records: readonly KubeletBootstrapRecord[]): Promise<void> {
    const write = (): Promise<void> => this.writeLedger([], records);
    const done = this.ledgerWrites.then(write, write);
    this.ledgerWrites = done;
    return done;
  }

  private async writeLedger(entries: readonly LedgerEntry[], records: readonly KubeletBootstrapRecord[] = []): Promise<void> {
    const file = this.path('ledger.json');
    const current = await this.currentLedgerTexts(file);
    const entryTexts = [...current.entryTexts, ...entries.map(formatLedgerEntry)];
    const bootstrapTexts = [...current.bootstrapTexts, ...records.map(formatLedgerEntry)];
    const text = renderLedger(entryTexts, bootstrapTexts);
    this.writtenLedger = undefined;
    await writeFileAtomic(file, text, PRIVATE);
    const stat = await fs.stat(file, { bigint: true });
    // Another size means another writer replaced the file meanwhile, and then nothing is reused.
    if (stat.size === BigInt(Buffer.byteLength(text))) {
      this.writtenLedger = { entryTexts, bootstrapTexts, ino: stat.ino, size: stat.size, mtimeNs: stat.mtimeNs };
    }
  }

  /** Returns the formatted entries of ledger.json: those this object wrote last when the file is still that one, otherwise read from disk. */
  private async currentLedgerTexts(file: string): Promise<{ entryTexts: readonly string[]; bootstrapTexts: readonly string[] }> {
    const written = this.writtenLedger;
    if (written !== undefined) {
      // writeFileAtomic replaces the file by rename, so any other write gives it a new inode.
      const stat = await fs.stat(file, { bigint: true }).catch(() => undefined);
      if (stat !== undefined && stat.ino === written.ino && stat.size === written.size && stat.mtimeNs === written.mtimeNs) return written;
    }
    const ledger = await this.readLedgerFile();
    return { entryTexts: ledger.issued.map(formatLedgerEntry), bootstrapTexts: (ledger.kubeletBootstrap ?? []).map(formatLedgerEntry) };
  }

  /**
   * Takes the directory's lock for this process. A lock left by a process that no longer runs is
   * taken over; one held by a live process is an error naming its PID.
   */
  async lock(): Promise<() => Promise<void>> {
    try {
      return await acquirePidLock(this.path('lock'));
    } catch (error) {
      if (error instanceof LockedError) {
        throw new StateError(`state directory ${this.root} is in use by controller process ${error.holder}; wait for it to finish`);
      }
      throw error;
    }
  }
}
