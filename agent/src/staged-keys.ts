/**
 * Keys generated on the node for certificates the controller has not issued yet. They stay in the
 * agent's state directory, never at an installed path, until an Apply names them, so an
 * abandoned request never replaces a working key.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { KeyRequest__Output } from '@kubetrust/proto';
import { readFileIfExists, writeFileAtomic } from '@kubetrust/shared/dist/files';
import { InvalidRequestError } from './errors';
import { KEY_ALGORITHMS, createCsr, generateKeyPair, privateKeyToPem, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';

const KEY_ID = /^[a-z0-9][a-z0-9.-]{0,127}$/;

/**
 * A staged key older than this belongs to a change that never arrived (the controller failed or
 * the Apply was rejected), so it is deleted rather than kept on disk. A distribute hands the key to
 * Apply within seconds; the margin covers slow health checks on other nodes of the same run.
 */
export const STAGED_KEY_MAX_AGE_MS = 60 * 60 * 1000;

export class StagedKeys {
  constructor(private readonly stateDir: string) {}

  private file(keyId: string): string {
    if (!KEY_ID.test(keyId)) throw new InvalidRequestError(`key id "${keyId}" is invalid: use 1-128 lowercase letters, digits, dots and dashes`);
    return path.join(this.stateDir, 'staged-keys', `${keyId}.key`);
  }

  /** Deletes staged keys older than the maximum age; returns how many were deleted. */
  async purgeAbandoned(now: number = Date.now()): Promise<number> {
    const dir = path.join(this.stateDir, 'staged-keys');
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw error;
    }
    let deleted = 0;
    for (const name of names) {
      const file = path.join(dir, name);
      const stat = await fs.stat(file);
      if (now - stat.mtimeMs > STAGED_KEY_MAX_AGE_MS) {
        await fs.rm(file, { force: true });
        deleted++;
      }
    }
    return deleted;
  }

  /** Generates the key, stores it staged and returns a CSR for it. */
  async prepare(request: KeyRequest__Output): Promise<string> {
    if (!(KEY_ALGORITHMS as readonly string[]).includes(request.algorithm)) {
      throw new InvalidRequestError(`key algorithm "${request.algorithm}" is not supported: use one of ${KEY_ALGORITHMS.join(', ')}`);
    }
    const target = this.file(request.key_id);
    const keyPair = await generateKeyPair(request.algorithm as KeyAlgorithm);
    await writeFileAtomic(target, privateKeyToPem(keyPair.privateKey), { mode: 0o600 });
    return createCsr(
      {
        commonName: request.common_name,
        organizations: request.organizations,
        dnsNames: request.dns_names,
        ipAddresses: request.ip_addresses,
      },
      keyPair,
    );
  }

  /** Reads the staged key's PEM; throws when the id is unknown. */
  async read(keyId: string): Promise<string> {
    const data = await readFileIfExists(this.file(keyId));
    if (data === undefined) throw new InvalidRequestError(`staged key "${keyId}" not found: request it with PrepareKeys first`);
    return data.toString('utf8');
  }

  async discard(keyIds: Iterable<string>): Promise<void> {
    for (const keyId of keyIds) await fs.rm(this.file(keyId), { force: true });
  }
}
