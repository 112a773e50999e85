/**
 * Helpers for the certificate failure cases: run openssl and other programs, read what openssl
 * prints about a certificate, open kubeconfigs and forge certificates that a node might have by
 * mistake. Every check goes through the openssl CLI, not through kubetrust's own PKI code, so a bug
 * there cannot hide itself.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as YAML from 'yaml';

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program and collects its output; never rejects on a non-zero exit. */
export function exec(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(command, args, { env, timeout: 60_000 }, (error, stdout, stderr) => {
      let code = 0;
      if (error !== null) code = typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs openssl and returns its stdout; fails the test with openssl's output when it exits non-zero. */
export async function openssl(args: readonly string[]): Promise<string> {
  const result = await exec('openssl', args);
  assert.equal(result.code, 0, `openssl ${args.join(' ')} failed: ${result.stdout}${result.stderr}`);
  return result.stdout;
}

/** The X.509 facts a case asserts, as openssl prints them. */
export interface CertificateFacts {
  /**
   * Attributes of the subject in RFC 2253 escaping, sorted, such as
   * `['CN=system:node:wk-a', 'O=system:nodes']`. A comma inside a value stays escaped as `\,`.
   */
  readonly subject: readonly string[];
  readonly issuer: readonly string[];
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  /** `serverAuth` and `clientAuth`, mapped from openssl's long names; other usages keep openssl's wording. */
  readonly extKeyUsage: readonly string[];
  /** openssl's wording, such as `Digital Signature` and `Key Encipherment`. */
  readonly keyUsage: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

const EXT_KEY_USAGE_NAMES: Readonly<Record<string, string>> = {
  'TLS Web Server Authentication': 'serverAuth',
  'TLS Web Client Authentication': 'clientAuth',
};

/** Returns the comma-separated values on the line after an extension header in `openssl x509 -text`. */
function extensionValues(text: string, header: string): string[] {
  const lines = text.split('\n');
  const index = lines.findIndex((line) => line.trim().startsWith(`${header}:`));
  if (index < 0) return [];
  return (lines[index + 1] ?? '')
    .split(',')
    .map((value) => value.trim())
    .filter((value) => value !== '');
}

/** Splits an RFC 2253 name into its attributes at the commas that are not escaped, sorted. */
function nameAttributes(name: string): string[] {
  return name.split(/(?<!\\),/).sort();
}

function field(output: string, name: string): string {
  const line = output.split('\n').find((candidate) => candidate.startsWith(`${name}=`));
  assert.ok(line !== undefined, `openssl printed no ${name}: ${output}`);
  return line.slice(name.length + 1).trim();
}

/** Reads the subject, issuer, SANs, usages and validity of a PEM certificate file with openssl. */
export async function certificateFacts(file: string): Promise<CertificateFacts> {
  const text = await openssl(['x509', '-noout', '-text', '-in', file]);
  const names = await openssl(['x509', '-noout', '-subject', '-issuer', '-startdate', '-enddate', '-nameopt', 'RFC2253', '-in', file]);
  const sans = extensionValues(text, 'X509v3 Subject Alternative Name');
  return {
    subject: nameAttributes(field(names, 'subject')),
    issuer: nameAttributes(field(names, 'issuer')),
    dnsNames: sans.filter((san) => san.startsWith('DNS:')).map((san) => san.slice('DNS:'.length)),
    ipAddresses: sans.filter((san) => san.startsWith('IP Address:')).map((san) => san.slice('IP Address:'.length)),
    extKeyUsage: extensionValues(text, 'X509v3 Extended Key Usage').map((usage) => EXT_KEY_USAGE_NAMES[usage] ?? usage),
    keyUsage: extensionValues(text, 'X509v3 Key Usage'),
    notBefore: new Date(field(names, 'notBefore')),
    notAfter: new Date(field(names, 'notAfter')),
  };
}

/** Runs `openssl verify` of `certificateFile` against `caFile` alone; returns whether it verified and openssl's output. */
export async function verifyChain(caFile: string, certificateFile: string): Promise<{ ok: boolean; output: string }> {
  const result = await exec('openssl', ['verify', '-CAfile', caFile, certificateFile]);
  return { ok: result.code === 0, output: result.stdout + result.stderr };
}

/** SHA-256 of the DER SubjectPublicKeyInfo in a PEM `PUBLIC KEY` block. */
function spkiSha256(publicKeyPem: string): string {
  const body = /-----BEGIN PUBLIC KEY-----([\s\S]*?)-----END PUBLIC KEY-----/.exec(publicKeyPem)?.[1];
  assert.ok(body !== undefined, `openssl printed no public key: ${publicKeyPem}`);
  return crypto.createHash('sha256').update(Buffer.from(body.replace(/\s+/g, ''), 'base64')).digest('hex');
}

/** SPKI SHA-256 of the public key inside a certificate (`openssl x509 -pubkey -noout`). */
export async function certificateKeySha256(certificateFile: string): Promise<string> {
  return spkiSha256(await openssl(['x509', '-pubkey', '-noout', '-in', certificateFile]));
}

/** SPKI SHA-256 of the public half of a private key (`openssl pkey -pubout`). */
export async function privateKeySha256(keyFile: string): Promise<string> {
  return spkiSha256(await openssl(['pkey', '-pubout', '-in', keyFile]));
}

/** SPKI SHA-256 of a PEM public key file (`openssl pkey -pubin -pubout`). */
export async function publicKeySha256(publicKeyFile: string): Promise<string> {
  return spkiSha256(await openssl(['pkey', '-pubin', '-pubout', '-in', publicKeyFile]));
}

/** The parts of a kubeconfig with embedded credentials, as a client reads them. */
export interface KubeconfigParts {
  readonly server: string;
  readonly certificateAuthorityPem: string;
  readonly clientCertificatePem: string;
  readonly clientKeyPem: string;
}

interface KubeconfigDocument {
  readonly 'current-context'?: string;
  readonly contexts?: readonly { name: string; context: { cluster: string; user: string } }[];
  readonly clusters?: readonly { name: string; cluster: { server?: string; 'certificate-authority-data'?: string } }[];
  readonly users?: readonly { name: string; user: { 'client-certificate-data'?: string; 'client-key-data'?: string } }[];
}

/** Reads the current context's server and embedded credentials; fails the test when a part is missing. */
export function readKubeconfig(file: string): KubeconfigParts {
  const document = YAML.parse(fs.readFileSync(file, 'utf8')) as KubeconfigDocument;
  const context = document.contexts?.find((candidate) => candidate.name === document['current-context'])?.context;
  assert.ok(context !== undefined, `${file}: current context "${document['current-context'] ?? ''}" not found`);
  const cluster = document.clusters?.find((candidate) => candidate.name === context.cluster)?.cluster;
  const user = document.users?.find((candidate) => candidate.name === context.user)?.user;
  assert.ok(cluster !== undefined, `${file}: cluster "${context.cluster}" not found`);
  assert.ok(user !== undefined, `${file}: user "${context.user}" not found`);
  const decode = (value: string | undefined, what: string): string => {
    assert.ok(value !== undefined, `${file}: ${what} is missing`);
    assert.notEqual(value, '', `${file}: ${what} is empty`);
    return Buffer.from(value, 'base64').toString('utf8');
  };
  assert.ok(cluster.server !== undefined, `${file}: server is missing`);
  return {
    server: cluster.server,
    certificateAuthorityPem: decode(cluster['certificate-authority-data'], 'certificate-authority-data'),
    clientCertificatePem: decode(user['client-certificate-data'], 'client-certificate-data'),
    clientKeyPem: decode(user['client-key-data'], 'client-key-data'),
  };
}

/** Replaces the embedded client key of a kubeconfig, keeping everything else. */
export function replaceKubeconfigKey(file: string, keyPem: string): void {
  const document = YAML.parse(fs.readFileSync(file, 'utf8')) as { users: { user: Record<string, string> }[] };
  for (const entry of document.users) entry.user['client-key-data'] = Buffer.from(keyPem).toString('base64');
  fs.writeFileSync(file, YAML.stringify(document));
}

/**
 * Writes the embedded certificate and key of a kubeconfig to files in `dir`, so that openssl can
 * read them. Returns their paths.
 */
export function extractKubeconfigPair(kubeconfig: KubeconfigParts, dir: string, name: string): { certificate: string; privateKey: string } {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const certificate = path.join(dir, `${name}.crt`);
  const privateKey = path.join(dir, `${name}.key`);
  fs.writeFileSync(certificate, kubeconfig.clientCertificatePem);
  fs.writeFileSync(privateKey, kubeconfig.clientKeyPem, { mode: 0o600 });
  return { certificate, privateKey };
}

export interface ForgedCertificate {
  /** The existing private key the certificate is issued for. */
  readonly keyFile: string;
  readonly caCertificateFile: string;
  readonly caKeyFile: string;
  readonly commonName: string;
  readonly organizations?: readonly string[];
  readonly extKeyUsage: readonly ('serverAuth' | 'clientAuth')[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  /** Where the certificate is written. */
  readonly out: string;
  /** Scratch directory for the CSR and extension file. */
  readonly scratchDir: string;
}

/**
 * Issues a certificate with openssl for an existing key, the way a hand-made certificate is made,
 * so that a test can put a wrong but well-formed certificate on a node.
 */
export async function forgeCertificate(spec: ForgedCertificate): Promise<void> {
  fs.mkdirSync(spec.scratchDir, { recursive: true, mode: 0o700 });
  const base = path.join(spec.scratchDir, `forged-${crypto.randomBytes(4).toString('hex')}`);
  const subject = `/CN=${spec.commonName}${(spec.organizations ?? []).map((organization) => `/O=${organization}`).join('')}`;
  await openssl(['req', '-new', '-key', spec.keyFile, '-subj', subject, '-out', `${base}.csr`]);
  const sans = [...(spec.dnsNames ?? []).map((name) => `DNS:${name}`), ...(spec.ipAddresses ?? []).map((ip) => `IP:${ip}`)];
  const extensions = [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature, keyEncipherment',
    `extendedKeyUsage = ${spec.extKeyUsage.join(', ')}`,
    ...(sans.length > 0 ? [`subjectAltName = ${sans.join(', ')}`] : []),
  ];
  fs.writeFileSync(`${base}.ext`, extensions.join('\n') + '\n');
  await openssl([
    'x509', '-req', '-in', `${base}.csr`, '-CA', spec.caCertificateFile, '-CAkey', spec.caKeyFile,
    '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`, '-days', '30', '-extfile', `${base}.ext`, '-out', spec.out,
  ]);
}

/** Generates a fresh RSA key with openssl and returns it as PEM. */
export async function freshPrivateKey(): Promise<string> {
  return openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']);
}

/** SHA-256 of a file's bytes. */
export function fileSha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Returns whether something accepts TCP connections on `host`:`port` within one second. */
export function isListening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: 1000 });
    const finish = (listening: boolean): void => {
      socket.destroy();
      resolve(listening);
    };
    socket.once('connect', () => finish(true));
    socket.once('timeout', () => finish(false));
    socket.once('error', () => finish(false));
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
