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
 *   lock                       PID of the controller process using the directory
 */
import * as crypto from 'node:crypto';
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

const PRIVATE = { mode: 0o600 };
const PUBLIC = { mode: 0o644 };

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
    const data = await readFileIfExists(this.path('ledger.json'));
    return data === undefined ? [] : (JSON.parse(data.toString('utf8')) as { issued: LedgerEntry[] }).issued;
  }

  private ledgerWrites: Promise<void> = Promise.resolve();

  /** Appends entries to the ledger; concurrent calls are applied one after another. */
  appendLedger(entries: readonly LedgerEntry[]): Promise<void> {
    const write = async (): Promise<void> => {
      const issued = await this.readLedger();
      issued.push(...entries);
      await writeFileAtomic(this.path('ledger.json'), JSON.stringify({ issued }, null, 1) + '\n', PRIVATE);
    };
    this.ledgerWrites = this.ledgerWrites.then(write, write);
    return this.ledgerWrites;
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
