/**
 * Reads what the node holds at the paths the controller asks about. Certificates and public keys
 * are reported as they are (public); a private key only as the hash of its public key.
 */
import * as fs from 'node:fs/promises';
import type { FileKind, FileQuery__Output, FileState } from '@kubetrust/proto';
import { sha256Hex } from '@kubetrust/shared/dist/files';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { loadPrivateKey, publicKeySha256 } from '@kubetrust/shared/dist/pki';
import { hostPath } from './paths';

function describeKind(kind: FileKind, data: Buffer): Partial<FileState> {
  switch (kind) {
    case 'FILE_KIND_CERTIFICATE':
    case 'FILE_KIND_PUBLIC_KEY':
      return { content: data };
    case 'FILE_KIND_PRIVATE_KEY':
      return { public_key_sha256: publicKeySha256(loadPrivateKey(data)) };
    case 'FILE_KIND_KUBECONFIG': {
      const summary = parseKubeconfig(data.toString('utf8'));
      return {
        kubeconfig: {
          server: summary.server,
          user: summary.user,
          certificate_authority_pem: Buffer.from(summary.certificateAuthorityPem),
          client_certificate_pem: Buffer.from(summary.clientCertificatePem),
          client_key_public_sha256: summary.clientKeyPem === undefined ? '' : publicKeySha256(loadPrivateKey(summary.clientKeyPem)),
        },
      };
    }
    default:
      return {};
  }
}

export async function readFileState(installRoot: string, query: FileQuery__Output): Promise<FileState> {
  const file = hostPath(installRoot, query.path);
  let data: Buffer;
  let stat: import('node:fs').Stats;
  try {
    [data, stat] = await Promise.all([fs.readFile(file), fs.stat(file)]);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { path: query.path, exists: false };
    return { path: query.path, exists: true, error: `cannot read: ${(error as Error).message}` };
  }
  const base: FileState = { path: query.path, exists: true, sha256: sha256Hex(data), mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid };
  try {
    return { ...base, ...describeKind(query.kind, data) };
  } catch (error) {
    return { ...base, error: `not a valid ${query.kind.replace('FILE_KIND_', '').toLowerCase().replace('_', ' ')}: ${(error as Error).message}` };
  }
}
