/**
 * A test stand-in for the kubelet's TLS bootstrap: with a bootstrap kubeconfig it requests a client
 * certificate (`kubernetes.io/kube-apiserver-client-kubelet`), stores it the way the kubelet's
 * certificate store does, writes its own kubeconfig, registers its Node with the new identity and
 * then requests a serving certificate (`kubernetes.io/kubelet-serving`). It runs in the test
 * process and talks to the API through @kubernetes/client-node.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ApiException, CertificatesV1Api, CoreV1Api, KubeConfig, Watch, type V1CertificateSigningRequest } from '@kubernetes/client-node';
import {
  createCsr,
  generateKeyPair,
  inspectCertificate,
  isRsaKey,
  loadPrivateKey,
  privateKeyToPem,
  publicKeyToDer,
  splitPem,
  type KeyAlgorithm,
  type KeyPair,
} from '@kubetrust/shared/dist/pki';
import * as YAML from 'yaml';

export const KUBELET_CLIENT_SIGNER_NAME = 'kubernetes.io/kube-apiserver-client-kubelet';
export const KUBELET_SERVING_SIGNER_NAME = 'kubernetes.io/kubelet-serving';

export type FakeKubeletStepName =
  | 'client-certificate-still-valid'
  | 'bootstrap-kubeconfig-loaded'
  | 'client-key-ready'
  | 'client-csr-created'
  | 'client-certificate-issued'
  | 'client-certificate-written'
  | 'kubeconfig-written'
  | 'node-registered'
  | 'serving-csr-created'
  | 'serving-certificate-issued'
  | 'serving-certificate-written'
  | 'serving-certificate-pending';

export interface FakeKubeletStep {
  readonly name: FakeKubeletStepName;
  readonly at: Date;
  /** What the step produced: a CSR name, a file path or a node name. Never key material or tokens. */
  readonly detail: string;
}

export interface FakeKubeletOptions {
  /** The node name; the kubelet's identity becomes `system:node:<nodeName>`. */
  readonly nodeName: string;
  /** `--bootstrap-kubeconfig`: the kubeconfig with the bootstrap token. */
  readonly bootstrapKubeconfigPath: string;
  /** `--kubeconfig`: written by the bootstrap; when it holds a valid client certificate, the bootstrap is skipped. */
  readonly kubeconfigPath: string;
  /** `--cert-dir`, such as /var/lib/kubelet/pki. Created with mode 0700 when missing. */
  readonly certDir: string;
  /** IP addresses for the serving certificate and the Node's InternalIP addresses. */
  readonly addresses?: readonly string[];
  /** DNS names for the serving certificate. Defaults to the node name. */
  readonly hostnames?: readonly string[];
  /** Key algorithm of both key pairs. Defaults to ECDSA-P256, as the kubelet generates. */
  readonly keyAlgorithm?: KeyAlgorithm;
  /** Requests a serving certificate after registration (`serverTLSBootstrap: true`). Defaults to true. */
  readonly serverTlsBootstrap?: boolean;
  /** How long to wait for the client certificate before failing. Defaults to 60 s. */
  readonly clientCertificateTimeoutMs?: number;
  /** How long to wait for the serving certificate before reporting it pending. Defaults to 60 s. */
  readonly servingCertificateTimeoutMs?: number;
  /** Called after each step, in order. */
  readonly onStep?: (step: FakeKubeletStep) => void;
}

export interface FakeKubeletResult {
  readonly steps: readonly FakeKubeletStep[];
  /** False when a still-valid kubeconfig made the client bootstrap unnecessary. */
  readonly bootstrapped: boolean;
  readonly clientCsrName?: string;
  /** The `kubelet-client-current.pem` symlink. */
  readonly clientCertificatePath: string;
  readonly servingCsrName?: string;
  /** The `kubelet-server-current.pem` symlink, when the serving certificate was issued in time. */
  readonly servingCertificatePath?: string;
}

/** A CSR that was denied, failed, or not issued in time. */
export class CsrNotIssuedError extends Error {
  constructor(
    readonly csrName: string,
    readonly outcome: 'denied' | 'failed' | 'timed out',
    detail: string,
  ) {
    super(`certificate signing request ${csrName} ${outcome}: ${detail}`);
  }
}

const DEFAULT_TIMEOUT_MS = 60_000;
const CSR_PATH = '/apis/certificates.k8s.io/v1/certificatesigningrequests';

/** Runs the kubelet's TLS bootstrap and serving certificate request, and returns the steps and files. */
export async function runFakeKubelet(options: FakeKubeletOptions): Promise<FakeKubeletResult> {
  const steps: FakeKubeletStep[] = [];
  const report = (name: FakeKubeletStepName, detail: string): void => {
    const step = { name, at: new Date(), detail };
    steps.push(step);
    options.onStep?.(step);
  };
  fs.mkdirSync(options.certDir, { recursive: true, mode: 0o700 });
  const clientCurrent = path.join(options.certDir, 'kubelet-client-current.pem');

  let clientCsrName: string | undefined;
  let bootstrapped = false;
  if (clientConfigStillValid(options.kubeconfigPath)) {
    report('client-certificate-still-valid', options.kubeconfigPath);
  } else {
    clientCsrName = await bootstrapClientCertificate(options, clientCurrent, report);
    bootstrapped = true;
  }

  const nodeConfig = new KubeConfig();
  nodeConfig.loadFromFile(options.kubeconfigPath);
  await registerNode(nodeConfig, options);
  report('node-registered', options.nodeName);

  const result: FakeKubeletResult = { steps, bootstrapped, clientCertificatePath: clientCurrent, ...(clientCsrName === undefined ? {} : { clientCsrName }) };
  if (options.serverTlsBootstrap === false) return result;

  const serving = await requestServingCertificate(nodeConfig, options, report);
  return { ...result, servingCsrName: serving.csrName, ...(serving.path === undefined ? {} : { servingCertificatePath: serving.path }) };
}

/**
 * Returns whether the kubeconfig exists and its client certificate parses and has not expired,
 * the kubelet's test for skipping the bootstrap.
 */
function clientConfigStillValid(kubeconfigPath: string): boolean {
  if (!fs.existsSync(kubeconfigPath)) return false;
  try {
    const config = new KubeConfig();
    config.loadFromFile(kubeconfigPath);
    const user = config.getCurrentUser();
    const pem = user?.certData !== undefined ? Buffer.from(user.certData, 'base64').toString('utf8') : user?.certFile !== undefined ? fs.readFileSync(user.certFile, 'utf8') : undefined;
    if (pem === undefined) return false;
    const now = Date.now();
    return splitPem(pem, 'CERTIFICATE').every((certificate) => inspectCertificate(certificate).notAfter.getTime() > now);
  } catch {
    return false;
  }
}

async function bootstrapClientCertificate(options: FakeKubeletOptions, clientCurrent: string, report: (name: FakeKubeletStepName, detail: string) => void): Promise<string> {
  const bootstrapConfig = new KubeConfig();
  bootstrapConfig.loadFromFile(options.bootstrapKubeconfigPath);
  report('bootstrap-kubeconfig-loaded', options.bootstrapKubeconfigPath);

  // The kubelet keeps the key of an unfinished bootstrap in kubelet-client.key.tmp, so a restart reuses it and its CSR.
  const temporaryKeyPath = path.join(options.certDir, 'kubelet-client.key.tmp');
  const keyPair = await loadOrCreateKey(temporaryKeyPath, options.keyAlgorithm ?? 'ECDSA-P256');
  report('client-key-ready', temporaryKeyPath);

  const commonName = `system:node:${options.nodeName}`;
  const usages = isRsaKey(keyPair.publicKey) ? ['digital signature', 'key encipherment', 'client auth'] : ['digital signature', 'client auth'];
  const csrName = digestedCsrName(keyPair, commonName, ['system:nodes'], usages);
  const request = createCsr({ commonName, organizations: ['system:nodes'] }, keyPair);
  const certificates = bootstrapConfig.makeApiClient(CertificatesV1Api);
  await createOrReuseCsr(certificates, {
    apiVersion: 'certificates.k8s.io/v1',
    kind: 'CertificateSigningRequest',
    metadata: { name: csrName },
    spec: { request: Buffer.from(request).toString('base64'), signerName: KUBELET_CLIENT_SIGNER_NAME, usages },
  });
  report('client-csr-created', csrName);

  const certificatePem = await waitForCertificate(bootstrapConfig, csrName, options.clientCertificateTimeoutMs ?? DEFAULT_TIMEOUT_MS);
  report('client-certificate-issued', csrName);

  const pairPath = writeCertificatePair(options.certDir, 'kubelet-client', certificatePem, keyPair);
  report('client-certificate-written', pairPath);
  fs.rmSync(temporaryKeyPath, { force: true });

  writeNodeKubeconfig(options.kubeconfigPath, bootstrapConfig, clientCurrent);
  report('kubeconfig-written', options.kubeconfigPath);
  return csrName;
}

async function loadOrCreateKey(keyPath: string, algorithm: KeyAlgorithm): Promise<KeyPair> {
  if (fs.existsSync(keyPath)) {
    const privateKey = loadPrivateKey(fs.readFileSync(keyPath));
    return { privateKey, publicKey: crypto.createPublicKey(privateKey) };
  }
  const keyPair = await generateKeyPair(algorithm);
  fs.writeFileSync(keyPath, privateKeyToPem(keyPair.privateKey), { mode: 0o600 });
  return keyPair;
}

/**
 * Names the client CSR as the kubelet does: `node-csr-` and the unpadded base64url SHA-512/256 of
 * the public key, CN, each O and each usage, every field base64url-encoded and followed by `|`,
 * so the same key always yields the same name.
 */
export function digestedCsrName(keyPair: KeyPair, commonName: string, organizations: readonly string[], usages: readonly string[]): string {
  const hash = crypto.createHash('sha512-256');
  const write = (data: Buffer): void => {
    hash.update(data.toString('base64url'));
    hash.update('|');
  };
  write(publicKeyToDer(keyPair.publicKey));
  write(Buffer.from(commonName));
  for (const organization of organizations) write(Buffer.from(organization));
  for (const usage of usages) write(Buffer.from(usage));
  return `node-csr-${hash.digest('base64url')}`;
}

/** Creates the CSR; when one of the same name exists already (a restarted bootstrap with the same key), it is reused. */
async function createOrReuseCsr(api: CertificatesV1Api, body: V1CertificateSigningRequest): Promise<V1CertificateSigningRequest> {
  try {
    return await api.createCertificateSigningRequest({ body });
  } catch (err) {
    if (err instanceof ApiException && err.code === 409 && body.metadata?.name !== undefined) {
      const existing = await api.readCertificateSigningRequest({ name: body.metadata.name });
      if (existing.spec.request !== body.spec.request) throw new Error(`certificate signing request ${body.metadata.name} exists with another key`);
      return existing;
    }
    throw err;
  }
}

/** Lists the CSR, then watches it from that resourceVersion until it carries a certificate, is denied or fails. */
function waitForCertificate(config: KubeConfig, csrName: string, timeoutMs: number): Promise<string> {
  const fieldSelector = `metadata.name=${csrName}`;
  return new Promise<string>((resolve, reject) => {
    let settled = false;
    let abort: AbortController | undefined;
    const finish = (error: Error | undefined, pem?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      abort?.abort();
      if (error !== undefined) reject(error);
      else resolve(pem as string);
    };
    const timer = setTimeout(() => finish(new CsrNotIssuedError(csrName, 'timed out', `no certificate after ${timeoutMs} ms`)), timeoutMs);
    const inspect = (csr: V1CertificateSigningRequest): void => {
      const conditions = csr.status?.conditions ?? [];
      const denied = conditions.find((condition) => condition.type === 'Denied' && condition.status === 'True');
      const failed = conditions.find((condition) => condition.type === 'Failed' && condition.status === 'True');
      if (denied !== undefined) finish(new CsrNotIssuedError(csrName, 'denied', denied.message ?? denied.reason ?? ''));
      else if (failed !== undefined) finish(new CsrNotIssuedError(csrName, 'failed', failed.message ?? failed.reason ?? ''));
      else if ((csr.status?.certificate ?? '') !== '') finish(undefined, Buffer.from(csr.status?.certificate as string, 'base64').toString('utf8'));
    };

    const api = config.makeApiClient(CertificatesV1Api);
    api
      .listCertificateSigningRequest({ fieldSelector })
      .then(async (list) => {
        for (const item of list.items) inspect(item);
        if (settled) return;
        const watch = new Watch(config);
        abort = await watch.watch(
          CSR_PATH,
          { fieldSelector, resourceVersion: list.metadata?.resourceVersion },
          (phase, object: V1CertificateSigningRequest) => {
            if (phase === 'ADDED' || phase === 'MODIFIED') inspect(object);
          },
          (err: unknown) => {
            if (!settled) finish(err instanceof Error ? err : new Error(`watch of ${csrName} ended before the certificate was issued`));
          },
        );
        if (settled) abort.abort();
      })
      .catch((err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));
  });
}

function fileTimestamp(date: Date): string {
  // The kubelet's certificate store names files with Go's layout 2006-01-02-15-04-05.
  return date.toISOString().slice(0, 19).replace('T', '-').replace(/:/g, '-');
}

/**
 * Writes `<prefix>-<timestamp>.pem` (certificate then key, mode 0600) and swaps the
 * `<prefix>-current.pem` symlink to it through `<prefix>-updated.pem`, so the current link
 * always names a complete pair.
 */
function writeCertificatePair(certDir: string, prefix: string, certificatePem: string, keyPair: KeyPair): string {
  const pairPath = path.join(certDir, `${prefix}-${fileTimestamp(new Date())}.pem`);
  fs.writeFileSync(pairPath, certificatePem + privateKeyToPem(keyPair.privateKey), { mode: 0o600 });
  const updated = path.join(certDir, `${prefix}-updated.pem`);
  fs.rmSync(updated, { force: true });
  fs.symlinkSync(pairPath, updated);
  fs.renameSync(updated, path.join(certDir, `${prefix}-current.pem`));
  return pairPath;
}

/** Writes the kubelet's own kubeconfig: the bootstrap kubeconfig's cluster, and the current pair file as certificate and key. */
function writeNodeKubeconfig(kubeconfigPath: string, bootstrapConfig: KubeConfig, pairPath: string): void {
  const cluster = bootstrapConfig.getCurrentCluster();
  if (cluster === null) throw new Error('invalid bootstrap kubeconfig: no current cluster');
  const clusterEntry: Record<string, unknown> = { server: cluster.server };
  if (cluster.caData !== undefined) clusterEntry['certificate-authority-data'] = cluster.caData;
  if (cluster.caFile !== undefined) clusterEntry['certificate-authority'] = cluster.caFile;
  if (cluster.skipTLSVerify) clusterEntry['insecure-skip-tls-verify'] = true;
  const document = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'default-cluster', cluster: clusterEntry }],
    users: [{ name: 'default-auth', user: { 'client-certificate': pairPath, 'client-key': pairPath } }],
    contexts: [{ name: 'default-context', context: { cluster: 'default-cluster', user: 'default-auth', namespace: 'default' } }],
    'current-context': 'default-context',
  };
  fs.mkdirSync(path.dirname(kubeconfigPath), { recursive: true });
  fs.writeFileSync(kubeconfigPath, YAML.stringify(document), { mode: 0o600 });
}

/** Creates the Node object; a Node that exists already (a restarted kubelet) counts as registered. */
async function registerNode(config: KubeConfig, options: FakeKubeletOptions): Promise<void> {
  const core = config.makeApiClient(CoreV1Api);
  const addresses = [
    ...(options.addresses ?? []).map((address) => ({ type: 'InternalIP', address })),
    { type: 'Hostname', address: options.nodeName },
  ];
  try {
    await core.createNode({
      body: {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: options.nodeName, labels: { 'kubernetes.io/hostname': options.nodeName, 'kubernetes.io/os': 'linux' } },
        status: { addresses },
      },
    });
  } catch (err) {
    if (err instanceof ApiException && err.code === 409) return;
    throw err;
  }
}

async function requestServingCertificate(
  config: KubeConfig,
  options: FakeKubeletOptions,
  report: (name: FakeKubeletStepName, detail: string) => void,
): Promise<{ csrName: string; path?: string }> {
  const keyPair = await generateKeyPair(options.keyAlgorithm ?? 'ECDSA-P256');
  const usages = isRsaKey(keyPair.publicKey) ? ['digital signature', 'key encipherment', 'server auth'] : ['digital signature', 'server auth'];
  const request = createCsr(
    { commonName: `system:node:${options.nodeName}`, organizations: ['system:nodes'], dnsNames: options.hostnames ?? [options.nodeName], ipAddresses: options.addresses ?? [] },
    keyPair,
  );
  const certificates = config.makeApiClient(CertificatesV1Api);
  const created = await certificates.createCertificateSigningRequest({
    body: {
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { generateName: 'csr-' },
      spec: { request: Buffer.from(request).toString('base64'), signerName: KUBELET_SERVING_SIGNER_NAME, usages },
    },
  });
  const csrName = created.metadata?.name as string;
  report('serving-csr-created', csrName);

  let certificatePem: string;
  try {
    certificatePem = await waitForCertificate(config, csrName, options.servingCertificateTimeoutMs ?? DEFAULT_TIMEOUT_MS);
  } catch (err) {
    // The real kubelet keeps serving with a self-signed certificate and retries; the stand-in reports the CSR as pending.
    if (err instanceof CsrNotIssuedError && err.outcome === 'timed out') {
      report('serving-certificate-pending', csrName);
      return { csrName };
    }
    throw err;
  }
  report('serving-certificate-issued', csrName);
  const pairPath = writeCertificatePair(options.certDir, 'kubelet-server', certificatePem, keyPair);
  report('serving-certificate-written', pairPath);
  return { csrName, path: path.join(options.certDir, 'kubelet-server-current.pem') };
}
