/**
 * Credentials for tests against the fake API server: a cluster CA, an apiserver serving
 * certificate for a loopback address, client certificates, and client-node KubeConfigs and
 * kubeconfig files for certificate or bearer-token users.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import { selfSignedCa } from '@kubetrust/controller';
import { createCertificate, generateKeyPair, privateKeyToPem, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';
import * as YAML from 'yaml';

const DAY_MS = 24 * 60 * 60 * 1000;

export interface CertificateAndKey {
  readonly certificatePem: string;
  readonly keyPem: string;
}

export interface FakeClusterPki {
  readonly ca: CertificateAndKey;
  readonly apiserver: CertificateAndKey;
  /** Issues a client certificate with CN `commonName` and one O per group, signed by the cluster CA. */
  issueClientCertificate(commonName: string, groups: readonly string[], validityMs?: number): Promise<CertificateAndKey>;
}

/** Creates a cluster CA and an apiserver certificate whose SANs are `apiserverAddress` and `kubernetes`. */
export async function createFakeClusterPki(apiserverAddress: string, algorithm: KeyAlgorithm = 'ECDSA-P256'): Promise<FakeClusterPki> {
  const now = new Date();
  const caKeys = await generateKeyPair(algorithm);
  const caPem = selfSignedCa('kubernetes', caKeys, 3650 * DAY_MS, now);
  const issuer = { issuer: { certificatePem: caPem, privateKey: caKeys.privateKey }, privateKey: caKeys.privateKey };

  const issue = async (commonName: string, organizations: readonly string[], server: boolean, validityMs: number): Promise<CertificateAndKey> => {
    const keys = await generateKeyPair(algorithm);
    const certificatePem = createCertificate(
      {
        subject: { commonName, organizations },
        notBefore: new Date(now.getTime() - 5 * 60 * 1000),
        notAfter: new Date(now.getTime() + validityMs),
        isCA: false,
        keyUsage: algorithm.startsWith('RSA') ? ['digitalSignature', 'keyEncipherment'] : ['digitalSignature'],
        extKeyUsage: [server ? 'serverAuth' : 'clientAuth'],
        ...(server ? { dnsNames: ['kubernetes', 'kubernetes.default'], ipAddresses: [apiserverAddress] } : {}),
      },
      keys.publicKey,
      issuer,
    );
    return { certificatePem, keyPem: privateKeyToPem(keys.privateKey) };
  };

  return {
    ca: { certificatePem: caPem, keyPem: privateKeyToPem(caKeys.privateKey) },
    apiserver: await issue('kube-apiserver', [], true, 365 * DAY_MS),
    issueClientCertificate: (commonName, groups, validityMs = 365 * DAY_MS) => issue(commonName, groups, false, validityMs),
  };
}

/** Credentials of one kubeconfig user: a client certificate, a bearer token, or nothing. */
export type KubeconfigCredentials = CertificateAndKey | { readonly token: string } | Record<string, never>;

/** Renders a kubeconfig with embedded CA data, in the shape that kubectl writes. */
export function renderKubeconfigFile(server: string, caPem: string, userName: string, credentials: KubeconfigCredentials): string {
  const user: Record<string, string> = {};
  if ('token' in credentials) user.token = credentials.token;
  if ('certificatePem' in credentials) {
    user['client-certificate-data'] = Buffer.from(credentials.certificatePem).toString('base64');
    user['client-key-data'] = Buffer.from(credentials.keyPem).toString('base64');
  }
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'kubernetes', cluster: { server, 'certificate-authority-data': Buffer.from(caPem).toString('base64') } }],
    users: [{ name: userName, user }],
    contexts: [{ name: `${userName}@kubernetes`, context: { cluster: 'kubernetes', user: userName } }],
    'current-context': `${userName}@kubernetes`,
  });
}

/** Writes a kubeconfig file with mode 0600, because it may contain a key or a token. */
export function writeKubeconfigFile(path: string, server: string, caPem: string, userName: string, credentials: KubeconfigCredentials): void {
  fs.writeFileSync(path, renderKubeconfigFile(server, caPem, userName, credentials), { mode: 0o600 });
}

/** Builds a client-node KubeConfig for one user of the fake API server. */
export function kubeConfigFor(server: string, caPem: string, userName: string, credentials: KubeconfigCredentials): KubeConfig {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(renderKubeconfigFile(server, caPem, userName, credentials));
  return kubeConfig;
}

/** Returns a token of the bootstrap format `[a-z0-9]{6}.[a-z0-9]{16}` drawn from the crypto RNG. */
export function randomBootstrapToken(): { readonly id: string; readonly secret: string; readonly token: string } {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const draw = (length: number): string => {
    let text = '';
    while (text.length < length) {
      const byte = crypto.randomBytes(1)[0] as number;
      // 252 is the largest multiple of 36 below 256, so rejecting larger bytes keeps the draw uniform.
      if (byte < 252) text += alphabet[byte % 36];
    }
    return text;
  };
  const id = draw(6);
  const secret = draw(16);
  return { id, secret, token: `${id}.${secret}` };
}
