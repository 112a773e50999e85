/**
 * Reads a node file into the shape the agent's GetState reports. The agent uses it for the files on
 * its node and `controller validate` for trees written by `controller issue`, so both judge
 * files the same way. Certificates and public keys are public, so they are reported as they are,
 * but without a private key stored in the same file. A private key is reported only as the hash of
 * its public key.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import type { FileKind, FileState__Output } from '@kubetrust/proto';
import { sha256Hex } from './files';
import { parseKubeconfig } from './kubeconfig';
import { inspectCertificate, loadPrivateKey, publicKeySha256 } from './pki';

const ABSENT: Omit<FileState__Output, 'path'> = {
  exists: false,
  sha256: '',
  mode: 0,
  uid: 0,
  gid: 0,
  content: Buffer.alloc(0),
  public_key_sha256: '',
  kubeconfig: null,
  error: '',
};

function describe(kind: FileKind, data: Buffer): Partial<FileState__Output> {
  switch (kind) {
    case 'FILE_KIND_CERTIFICATE': {
      inspectCertificate(data);
      // A file such as kubelet-client-current.pem contains the key beside the certificate, and only the certificates are sent.
      if (!data.includes('PRIVATE KEY')) return { content: data };
      const blocks = data.toString('utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
      return { content: Buffer.from(blocks.join('')) };
    }
    case 'FILE_KIND_PUBLIC_KEY':
      crypto.createPublicKey(data);
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

/**
 * Descriptions of recently read contents, by kind and SHA-256. An agent serves GetState for the
 * same unchanged files on every plan and rotation round, and parsing each private key and
 * kubeconfig again was most of that work. Failed descriptions are not kept.
 */
const MAX_DESCRIBED = 1024;
const described = new Map<string, Partial<FileState__Output>>();

function describeOnce(kind: FileKind, data: Buffer, sha256: string): Partial<FileState__Output> {
  const key = `${kind}:${sha256}`;
  const cached = described.get(key);
  if (cached !== undefined) return cached;
  const description = describe(kind, data);
  if (described.size >= MAX_DESCRIBED) described.delete(described.keys().next().value as string);
  described.set(key, description);
  return description;
}

/** Reads `hostPath` as `kind` and reports it under the node path `nodePath`. */
export async function readFileState(hostPath: string, nodePath: string, kind: FileKind): Promise<FileState__Output> {
  let data: Buffer;
  let stat: import('node:fs').Stats;
  try {
    [data, stat] = await Promise.all([fs.readFile(hostPath), fs.stat(hostPath)]);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { ...ABSENT, path: nodePath };
    return { ...ABSENT, path: nodePath, exists: true, error: `cannot read: ${(error as Error).message}` };
  }
  const base: FileState__Output = { ...ABSENT, path: nodePath, exists: true, sha256: sha256Hex(data), mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid };
  try {
    const description = describeOnce(kind, data, base.sha256);
    // A copy, so that a caller changing its result cannot change what later reads return.
    return { ...base, ...description, ...(description.kubeconfig ? { kubeconfig: { ...description.kubeconfig } } : {}) };
  } catch (error) {
    const kindName = String(kind).replace('FILE_KIND_', '').toLowerCase().replace('_', ' ');
    return { ...base, error: `not a valid ${kindName}: ${(error as Error).message}` };
  }
}
