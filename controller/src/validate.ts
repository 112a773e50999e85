/**
 * `controller validate`: checks that the inventory resolves into the catalogue for every node, and
 * that the files of an issued tree (--out) or of the running nodes (--live) satisfy the catalogue
 * today: files present with their modes, keys matching certificates, certificates chaining to
 * the CA files the nodes hold, kubeconfig servers covered by the apiserver certificates, SANs,
 * subjects, usages and expiry. With a state directory, CA files must equal the state's CAs.
 *
 * Reads: the inventory, the state directory (CA certificates and keys, controller identity) and
 * the --out tree with its manifest.json. Writes: nothing. RPCs: GetState (--live only).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { FileQuery, FileState__Output } from '@kubetrust/proto';
import { itemsForNode, type CaName, type NodeItem, type ResolvedFile, type SanSet } from '@kubetrust/shared/dist/catalogue';
import { sha256Hex } from '@kubetrust/shared/dist/files';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import { readFileState } from '@kubetrust/shared/dist/file-state';
import type { Logger } from '@kubetrust/shared/dist/log';
import { inspectCertificate, isSignedBy, normalizeIp, publicKeySha256, splitPem, type CertificateInfo } from '@kubetrust/shared/dist/pki';
import { renewalDue } from '@kubetrust/shared/dist/rotation';
import { AgentConnection } from './agent-client';
import { ClusterMaterial } from './distribute';
import { createLimiter, formatMode, listIssueLeftovers, pathBelow, readManifest, MANIFEST_FILE } from './offline-issue';
import { queriesFor } from './plan';
import { StateDir } from './state-dir';

export const PROBLEM_CHECKS = [
  'missing',
  'unreadable',
  'mode',
  'owner',
  'key-pair',
  'chain',
  'state',
  'trust-consistency',
  'server',
  'server-san',
  'server-trust',
  'sans',
  'subject',
  'usages',
  'expiry',
  'manifest',
  'agent',
] as const;
export type ProblemCheck = (typeof PROBLEM_CHECKS)[number];

export interface Problem {
  /** Node name; empty for a problem of the tree as a whole, such as its manifest. */
  readonly node: string;
  /** Node path of the file; empty for a problem of the whole node. */
  readonly path: string;
  readonly check: ProblemCheck;
  readonly message: string;
  readonly fix: string;
}

export interface ValidateOptions {
  readonly stateDir?: string;
  /** A tree written by `controller issue`. */
  readonly out?: string;
  /** Query the agents; requires `stateDir` for the controller identity. */
  readonly live?: boolean;
  readonly now?: Date;
  /** Agents queried at the same time with `live`. */
  readonly concurrency?: number;
}

export interface ValidateResult {
  readonly cluster: string;
  readonly source: 'inventory' | 'out' | 'live';
  readonly nodes: number;
  readonly ok: boolean;
  readonly problems: readonly Problem[];
}

/** Invalid input to `controller validate`: conflicting options, a catalogue that does not resolve, a missing --out. */
export class ValidateInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ValidateInputError';
  }
}

const DEFAULT_LIVE_CONCURRENCY = 16;
const APISERVER_ITEM = 'apiserver';

/** The files of one node as read from the tree or reported by its agent, keyed by node path. */
interface NodeSnapshot {
  readonly node: NodeSpec;
  readonly items: readonly NodeItem[];
  readonly files: ReadonlyMap<string, FileState__Output>;
}

/** How to tell the user to repair a problem, which depends on where the files live. */
interface Remedy {
  reissue(nodes: readonly string[]): string;
  setMode(node: string, nodePath: string, mode: number): string;
}

function outRemedy(outDir: string): Remedy {
  return {
    reissue: (nodes) => `reissue with \`controller issue --nodes ${nodes.join(',')} --force --out ${outDir}\` and the same --inventory and --state-dir`,
    setMode: (node, nodePath, mode) => `run \`chmod ${formatMode(mode)} ${path.join(outDir, node, nodePath)}\``,
  };
}

const LIVE_REMEDY: Remedy = {
  reissue: () => 'run `controller distribute`, which reissues or replaces it',
  setMode: () => 'run `controller distribute`, which resets the mode and owner',
};

interface ApiserverCertificate {
  readonly info: CertificateInfo;
  readonly required: SanSet;
}

interface CheckContext {
  readonly inventory: Inventory;
  readonly now: Date;
  /** The state's CAs; undefined without --state-dir. */
  readonly material: ClusterMaterial | undefined;
  readonly remedy: Remedy;
  /** Tree files belong to the user who ran `issue`, so only live files are checked for their owner. */
  readonly checkOwner: boolean;
  /** Apiserver certificate of each master that has a readable one, with the SANs the catalogue requires of it. */
  readonly apiservers: ReadonlyMap<string, ApiserverCertificate>;
}

/** Collects the problems of one node. */
class Findings {
  readonly problems: Problem[] = [];

  constructor(readonly node: string) {}

  add(nodePath: string, check: ProblemCheck, message: string, fix: string): void {
    this.problems.push({ node: this.node, path: nodePath, check, message, fix });
  }
}

// ---------------------------------------------------------------------------------------------
// Reading a tree written by `controller issue`

/** Reads one tree file into the shape GetState reports. */
function readTreeFile(nodeDir: string, query: FileQuery): Promise<FileState__Output> {
  const nodePath = query.path ?? '';
  return readFileState(pathBelow(nodeDir, nodePath), nodePath, query.kind ?? 'FILE_KIND_UNSPECIFIED');
}

async function isDirectory(dir: string): Promise<boolean> {
  return fs.stat(dir).then((stat) => stat.isDirectory(), () => false);
}

async function readTree(outDir: string, catalogue: ReadonlyMap<NodeSpec, NodeItem[]>, remedy: Remedy): Promise<{ snapshots: NodeSnapshot[]; problems: Problem[] }> {
  const snapshots: NodeSnapshot[] = [];
  const problems: Problem[] = [];
  for (const [node, items] of catalogue) {
    const nodeDir = path.join(outDir, node.name);
    if (!(await isDirectory(nodeDir))) {
      problems.push({ node: node.name, path: '', check: 'missing', message: `node directory ${nodeDir} is missing`, fix: remedy.reissue([node.name]) });
      continue;
    }
    const states = await Promise.all(queriesFor(items).map((query) => readTreeFile(nodeDir, query)));
    snapshots.push({ node, items, files: new Map(states.map((state) => [state.path, state])) });
  }
  return { snapshots, problems };
}

/** Compares every file listed in manifest.json with the tree's content. */
async function checkManifest(outDir: string, inventory: Inventory, snapshots: readonly NodeSnapshot[], remedy: Remedy): Promise<Problem[]> {
  const where = path.join(outDir, MANIFEST_FILE);
  const problem = (message: string, fix: string): Problem => ({ node: '', path: where, check: 'manifest', message, fix });
  let manifest;
  try {
    manifest = await readManifest(outDir);
  } catch (error) {
    return [problem((error as Error).message, `restore ${MANIFEST_FILE} or ${remedy.reissue(inventory.nodes.map((node) => node.name))}`)];
  }
  if (manifest === undefined) return [problem(`${MANIFEST_FILE} is missing`, remedy.reissue(inventory.nodes.map((node) => node.name)))];
  if (manifest.cluster !== inventory.name) {
    return [problem(`${MANIFEST_FILE} is for cluster "${manifest.cluster}", not "${inventory.name}"`, 'pass the --out tree of this cluster, or the inventory of that one')];
  }
  const byNode = new Map(snapshots.map((snapshot) => [snapshot.node.name, snapshot]));
  const problems: Problem[] = [];
  for (const entry of manifest.files) {
    const held = byNode.get(entry.node)?.files.get(entry.path);
    if (held === undefined || !held.exists || held.sha256 === entry.sha256) continue;
    problems.push({
      node: entry.node,
      path: entry.path,
      check: 'manifest',
      message: `content differs from ${MANIFEST_FILE} (sha256 ${held.sha256.slice(0, 12)}..., manifest ${entry.sha256.slice(0, 12)}...): the file changed after \`controller issue\``,
      fix: `restore the file as issued, or ${remedy.reissue([entry.node])}`,
    });
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Querying the agents

async function readLive(
  inventory: Inventory,
  catalogue: ReadonlyMap<NodeSpec, NodeItem[]>,
  material: ClusterMaterial,
  logger: Logger,
  concurrency: number,
): Promise<{ snapshots: NodeSnapshot[]; problems: Problem[] }> {
  const limit = createLimiter(concurrency);
  const results = await Promise.all(
    [...catalogue].map(([node, items]) =>
      limit(async (): Promise<NodeSnapshot | Problem> => {
        const connection = new AgentConnection(inventory.name, node, material.controller);
        try {
          const held = await connection.getState({ files: queriesFor(items) });
          if (held.node_name !== node.name) {
            const message = `agent at ${node.agent.endpoint} reports node name "${held.node_name}", expected "${node.name}"`;
            return { node: node.name, path: '', check: 'agent', message, fix: `point spec.nodes[].agent.endpoint of ${node.name} at its own agent` };
          }
          return { node, items, files: new Map(held.files.map((file) => [file.path, file])) };
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error);
          logger.warn('agent query failed', { node: node.name, endpoint: node.agent.endpoint, error: message });
          return { node: node.name, path: '', check: 'agent', message: `GetState failed: ${message}`, fix: 'start the agent or re-enrol the node as the message describes, then run validate again' };
        } finally {
          connection.close();
        }
      }),
    ),
  );
  const snapshots = results.filter((result): result is NodeSnapshot => 'items' in result);
  const problems = results.filter((result): result is Problem => 'check' in result);
  return { snapshots, problems };
}

// ---------------------------------------------------------------------------------------------
// Checks of one node

function parseCertificate(pem: Buffer): CertificateInfo | undefined {
  try {
    return pem.length === 0 ? undefined : inspectCertificate(pem);
  } catch {
    return undefined;
  }
}

/** Reports a missing, unreadable, wrongly owned or wrong-mode file; returns the file when its content can be checked. */
function presentFile(snapshot: NodeSnapshot, spec: ResolvedFile, context: CheckContext, findings: Findings): FileState__Output | undefined {
  const file = snapshot.files.get(spec.path);
  const node = snapshot.node.name;
  if (file === undefined || !file.exists) {
    findings.add(spec.path, 'missing', 'file is missing', context.remedy.reissue([node]));
    return undefined;
  }
  // A file that could not be read at all has no hash, and its mode and owner are unknown.
  if (file.error && file.sha256 === '') {
    findings.add(spec.path, 'unreadable', file.error, context.remedy.reissue([node]));
    return undefined;
  }
  if (file.mode !== spec.mode) {
    findings.add(spec.path, 'mode', `mode ${formatMode(file.mode)}, expected ${formatMode(spec.mode)}`, context.remedy.setMode(node, spec.path, spec.mode));
  }
  if (context.checkOwner && (file.uid !== spec.uid || file.gid !== spec.gid)) {
    findings.add(spec.path, 'owner', `owner ${file.uid}:${file.gid}, expected ${spec.uid}:${spec.gid}`, context.remedy.setMode(node, spec.path, spec.mode));
  }
  if (file.error) {
    findings.add(spec.path, 'unreadable', file.error, context.remedy.reissue([node]));
    return undefined;
  }
  return file;
}

/** A trust file on the node: one CA certificate, or the old and the new CA while the CA rotates. */
interface TrustFile {
  readonly path: string;
  readonly certificates: readonly CertificateInfo[];
}

/** CA certificates the node holds, by the CA whose certificates each file carries. */
function trustFilesOf(snapshot: NodeSnapshot): Map<CaName, TrustFile[]> {
  const trust = new Map<CaName, TrustFile[]>();
  for (const item of snapshot.items) {
    if (item.type !== 'static' || !('ca' in item.source) || item.source.part !== 'certificate') continue;
    const file = snapshot.files.get(item.file.path);
    if (file?.exists !== true || file.error) continue;
    const certificates = splitPem(file.content, 'CERTIFICATE').flatMap((pem) => parseCertificate(Buffer.from(pem)) ?? []);
    if (certificates.length === 0) continue;
    trust.set(item.source.ca, [...(trust.get(item.source.ca) ?? []), { path: item.file.path, certificates }]);
  }
  return trust;
}

/**
 * Checks that `info` verifies against every CA file of its parent CA on the node, that is against
 * one of the certificates each file holds. A certificate on a node without such a file is checked
 * against the state's CA when there is one.
 */
function checkChain(info: CertificateInfo, parent: CaName, nodePath: string, trust: ReadonlyMap<CaName, TrustFile[]>, context: CheckContext, findings: Findings): void {
  const anchors = trust.get(parent) ?? [];
  const fix = context.remedy.reissue([findings.node]);
  for (const anchor of anchors) {
    if (!anchor.certificates.some((certificate) => isSignedBy(info.pem, certificate.pem))) {
      findings.add(nodePath, 'chain', `not signed by the ${parent} certificate this node holds at ${anchor.path}, so its verifiers reject it`, fix);
    }
  }
  const side = info.extKeyUsage.includes('serverAuth') ? 'server' : 'client';
  if (anchors.length === 0 && context.material !== undefined && !isSignedBy(info.pem, context.material.issuerCertificate(parent, side))) {
    findings.add(nodePath, 'chain', `not signed by the ${parent} certificate in the state directory`, fix);
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const left = new Set(a);
  return left.size === new Set(b).size && b.every((value) => left.has(value));
}

function normalizeIps(ips: readonly string[]): string[] {
  return ips.map((ip) => {
    try {
      return normalizeIp(ip);
    } catch {
      return ip;
    }
  });
}

/** Checks subject, extended key usages and expiry against the catalogue, and the SANs of leaf items. */
function checkCertificateFacts(info: CertificateInfo, item: Exclude<NodeItem, { type: 'static' }>, nodePath: string, context: CheckContext, findings: Findings): void {
  const fix = context.remedy.reissue([findings.node]);
  const organizations = info.subject.organizations ?? [];
  if (info.subject.commonName !== item.subject.commonName || !sameSet(organizations, item.subject.organizations)) {
    const expected = `CN "${item.subject.commonName}" O [${item.subject.organizations.join(', ')}]`;
    findings.add(nodePath, 'subject', `subject is CN "${info.subject.commonName}" O [${organizations.join(', ')}], expected ${expected}`, fix);
  }
  const usages = item.type === 'leaf' ? item.extKeyUsage : ['clientAuth'];
  if (!sameSet(info.extKeyUsage, usages)) findings.add(nodePath, 'usages', `extended key usages are [${info.extKeyUsage.join(', ')}], expected [${usages.join(', ')}]`, fix);
  if (item.type === 'leaf') checkSans(info, item.sans, nodePath, fix, findings);
  if (info.notAfter.getTime() <= context.now.getTime()) findings.add(nodePath, 'expiry', `expired at ${info.notAfter.toISOString()}`, fix);
  else if (renewalDue(info, context.now)) findings.add(nodePath, 'expiry', `less than a third of its lifetime is left: expires at ${info.notAfter.toISOString()}`, fix);
}

function checkSans(info: CertificateInfo, expected: { dnsNames: readonly string[]; ipAddresses: readonly string[] }, nodePath: string, fix: string, findings: Findings): void {
  const actualDns = info.dnsNames.map((name) => name.toLowerCase());
  const requiredDns = expected.dnsNames.map((name) => name.toLowerCase());
  const actualIps = normalizeIps(info.ipAddresses);
  const requiredIps = normalizeIps(expected.ipAddresses);
  const missing = [...requiredDns.filter((name) => !actualDns.includes(name)), ...requiredIps.filter((ip) => !actualIps.includes(ip))];
  if (missing.length > 0) findings.add(nodePath, 'sans', `SANs missing that the inventory now requires: ${missing.join(', ')}`, fix);
  const extra = [...actualDns.filter((name) => !requiredDns.includes(name)), ...actualIps.filter((ip) => !requiredIps.includes(ip))];
  if (extra.length > 0) findings.add(nodePath, 'sans', `SANs that the inventory no longer requires: ${extra.join(', ')}`, fix);
}

/** Compares a static file with the state's copy, or a kubelet drop-in with its rendering from the inventory. */
function checkAgainstState(item: Extract<NodeItem, { type: 'static' }>, file: FileState__Output, context: CheckContext, findings: Findings): void {
  if ('kubeletConfig' in item.source) {
    if (file.sha256 !== sha256Hex(item.source.content)) {
      findings.add(item.file.path, 'state', `differs from the kubelet drop-in that the inventory sets (kubelet.credentials ${item.source.kubeletConfig})`, context.remedy.reissue([findings.node]));
    }
    return;
  }
  if (context.material === undefined) return;
  if (file.sha256 === sha256Hex(context.material.staticContent(item))) return;
  const parts = { certificate: 'certificate', signerCertificate: 'signer certificate', privateKey: 'key' } as const;
  const what = 'ca' in item.source ? `${item.source.ca} ${parts[item.source.part]}` : `service-account ${item.source.part === 'privateKey' ? 'private' : 'public'} key`;
  findings.add(item.file.path, 'state', `differs from the ${what} in the state directory`, context.remedy.reissue([findings.node]));
}

function firstTrusted(trust: ReturnType<typeof trustFilesOf>, ca: CaName): { path: string; info: CertificateInfo } | undefined {
  const file = trust.get(ca)?.[0];
  return file === undefined || file.certificates[0] === undefined ? undefined : { path: file.path, info: file.certificates[0] };
}

function checkStatic(snapshot: NodeSnapshot, item: Extract<NodeItem, { type: 'static' }>, trust: ReturnType<typeof trustFilesOf>, context: CheckContext, findings: Findings): void {
  const file = presentFile(snapshot, item.file, context, findings);
  if (file === undefined) return;
  checkAgainstState(item, file, context, findings);
  const source = item.source;
  const fix = context.remedy.reissue([findings.node]);
  if ('ca' in source && source.part !== 'privateKey') {
    const certificates = splitPem(file.content, 'CERTIFICATE').map((pem) => parseCertificate(Buffer.from(pem)));
    if (certificates.length === 0 || certificates.some((info) => info?.isCA !== true)) findings.add(item.file.path, 'unreadable', 'not a CA certificate', fix);
    for (const info of certificates) {
      if (info !== undefined && info.notAfter.getTime() <= context.now.getTime()) {
        findings.add(item.file.path, 'expiry', `CA expired at ${info.notAfter.toISOString()}`, 'rotate the CA with `controller ca rotate`, or create new CAs with `controller init --force` and reissue every node');
      }
    }
  } else if ('ca' in source) {
    // The key must match the certificate the controller-manager signs with: the signer file where the catalogue has one.
    const signer = snapshot.items.find((other) => other.type === 'static' && 'ca' in other.source && other.source.ca === source.ca && other.source.part === 'signerCertificate');
    const signerFile = signer?.type === 'static' ? snapshot.files.get(signer.file.path) : undefined;
    const signerInfo = signerFile?.exists === true && !signerFile.error ? parseCertificate(signerFile.content) : undefined;
    const certificate = signerInfo !== undefined && signer?.type === 'static' ? { path: signer.file.path, info: signerInfo } : firstTrusted(trust, source.ca);
    if (certificate !== undefined && certificate.info.publicKeySha256 !== file.public_key_sha256) {
      findings.add(item.file.path, 'key-pair', `does not match the ${source.ca} certificate at ${certificate.path}`, fix);
    }
  } else if ('keyPair' in source && source.part === 'privateKey') {
    const publicKey = snapshot.items.find((other) => other.type === 'static' && 'keyPair' in other.source && other.source.part === 'publicKey');
    const held = publicKey?.type === 'static' ? snapshot.files.get(publicKey.file.path) : undefined;
    // sa.pub may hold several keys while the service-account key rotates; the private key must match one.
    const heldHashes = held?.exists === true && !held.error ? splitPem(held.content, 'PUBLIC KEY').map((key) => publicKeyHash(Buffer.from(key))) : [];
    if (heldHashes.length > 0 && !heldHashes.includes(file.public_key_sha256)) {
      findings.add(item.file.path, 'key-pair', `does not match the service-account public key at ${held!.path}`, fix);
    }
  }
}

/** Hashes a PEM public key as publicKeySha256 does; undefined when it does not parse. */
function publicKeyHash(pem: Buffer): string | undefined {
  try {
    return publicKeySha256(crypto.createPublicKey(pem));
  } catch {
    return undefined;
  }
}

function checkLeaf(snapshot: NodeSnapshot, item: Extract<NodeItem, { type: 'leaf' }>, trust: ReturnType<typeof trustFilesOf>, context: CheckContext, findings: Findings): void {
  const certificate = presentFile(snapshot, item.certificate, context, findings);
  const key = presentFile(snapshot, item.privateKey, context, findings);
  if (certificate === undefined) return;
  const info = parseCertificate(certificate.content);
  if (info === undefined) {
    findings.add(item.certificate.path, 'unreadable', 'not a certificate', context.remedy.reissue([findings.node]));
    return;
  }
  if (key !== undefined && key.public_key_sha256 !== info.publicKeySha256) {
    findings.add(item.privateKey.path, 'key-pair', `does not match the certificate at ${item.certificate.path}`, context.remedy.reissue([findings.node]));
  }
  checkChain(info, item.parent, item.certificate.path, trust, context, findings);
  checkCertificateFacts(info, item, item.certificate.path, context, findings);
}

/** Returns the host of a URL without IPv6 brackets, or undefined when the URL does not parse. */
function hostOf(url: string): string | undefined {
  try {
    return new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
  } catch {
    return undefined;
  }
}

/** Matches a lowercase host against a DNS SAN; a wildcard such as `*.example.com` matches exactly one label. */
function dnsMatches(san: string, host: string): boolean {
  const pattern = san.toLowerCase();
  if (!pattern.startsWith('*.')) return pattern === host;
  const dot = host.indexOf('.');
  return dot > 0 && host.slice(dot) === pattern.slice(1);
}

/** True when `host` is one of the IP SANs (for an address) or matches one of the DNS SANs (for a name). */
export function coversHost(sans: SanSet, host: string): boolean {
  let ip: string | undefined;
  try {
    ip = normalizeIp(host);
  } catch {
    ip = undefined;
  }
  if (ip !== undefined) return normalizeIps(sans.ipAddresses).includes(ip);
  return sans.dnsNames.some((name) => dnsMatches(name, host.toLowerCase()));
}

/** Masters whose apiserver serves `host`: the master that has it as name or address, otherwise every master. */
function serversOf(host: string, context: CheckContext): string[] {
  const masters = context.inventory.nodes.filter((node) => node.roles.includes('master'));
  const names = (node: NodeSpec): string[] => [node.name, ...node.hostnames, ...normalizeIps(node.addresses)].map((name) => name.toLowerCase());
  let normalized = host.toLowerCase();
  try {
    normalized = normalizeIp(host);
  } catch {
    // A DNS name stays as it is.
  }
  const own = masters.filter((node) => names(node).includes(normalized));
  return (own.length > 0 ? own : masters).map((node) => node.name);
}

/** Checks that each server the kubeconfig names is a SAN of, and trusts the CA of, the apiserver certificates behind it. */
function checkServer(item: Extract<NodeItem, { type: 'kubeconfig' }>, server: string, caPem: Buffer, context: CheckContext, findings: Findings): void {
  const nodePath = item.file.path;
  if (server !== item.server) findings.add(nodePath, 'server', `server is ${server}, the inventory expects ${item.server}`, context.remedy.reissue([findings.node]));
  const servers = [...new Set([server, item.server])];
  for (const url of servers) {
    const host = hostOf(url);
    if (host === undefined) {
      findings.add(nodePath, 'server', `server "${url}" is not a URL`, context.remedy.reissue([findings.node]));
      continue;
    }
    for (const master of serversOf(host, context)) {
      const apiserver = context.apiservers.get(master);
      if (apiserver === undefined) continue;
      if (!coversHost(apiserver.info, host)) {
        // The catalogue already requires the endpoint host and the masters' own names, so only other hosts need an extra SAN.
        const reissue = context.remedy.reissue([master]);
        const fix = coversHost(apiserver.required, host) ? reissue : `add ${host} to spec.apiServer.extraSANs if clients dial it, then ${reissue}`;
        findings.add(nodePath, 'server-san', `server host ${host} (of ${url}) is not a SAN of the apiserver certificate of ${master}`, fix);
      }
      if (url === server && parseCertificate(caPem) !== undefined && !isSignedBy(apiserver.info.pem, caPem.toString('utf8'))) {
        findings.add(nodePath, 'server-trust', `the embedded CA did not sign the apiserver certificate of ${master}, so clients reject the server`, context.remedy.reissue([findings.node, master]));
      }
    }
  }
}

function checkKubeconfig(snapshot: NodeSnapshot, item: Extract<NodeItem, { type: 'kubeconfig' }>, trust: ReturnType<typeof trustFilesOf>, context: CheckContext, findings: Findings): void {
  const file = presentFile(snapshot, item.file, context, findings);
  const fix = context.remedy.reissue([findings.node]);
  if (file === undefined) return;
  const kubeconfig = file.kubeconfig;
  const info = kubeconfig === null ? undefined : parseCertificate(kubeconfig.client_certificate_pem);
  if (kubeconfig === null || info === undefined) {
    findings.add(item.file.path, 'unreadable', 'embeds no client certificate', fix);
    return;
  }
  if (parseCertificate(kubeconfig.certificate_authority_pem) === undefined) findings.add(item.file.path, 'unreadable', 'certificate-authority-data is not a certificate', fix);
  if (kubeconfig.client_key_public_sha256 === '') findings.add(item.file.path, 'key-pair', 'embeds no client key', fix);
  else if (kubeconfig.client_key_public_sha256 !== info.publicKeySha256) findings.add(item.file.path, 'key-pair', 'embedded client key does not match the embedded client certificate', fix);
  if (context.material !== undefined && kubeconfig.certificate_authority_pem.toString('utf8').trim() !== context.material.caCertificate(item.parent).trim()) {
    findings.add(item.file.path, 'state', `embedded CA differs from the ${item.parent} certificate in the state directory`, fix);
  }
  checkChain(info, item.parent, item.file.path, trust, context, findings);
  checkCertificateFacts(info, item, item.file.path, context, findings);
  checkServer(item, kubeconfig.server, kubeconfig.certificate_authority_pem, context, findings);
}

function checkNode(snapshot: NodeSnapshot, context: CheckContext): Problem[] {
  const findings = new Findings(snapshot.node.name);
  const trust = trustFilesOf(snapshot);
  for (const item of snapshot.items) {
    switch (item.type) {
      case 'static':
        checkStatic(snapshot, item, trust, context, findings);
        break;
      case 'leaf':
        checkLeaf(snapshot, item, trust, context, findings);
        break;
      case 'kubeconfig':
        checkKubeconfig(snapshot, item, trust, context, findings);
        break;
    }
  }
  return findings.problems;
}

// ---------------------------------------------------------------------------------------------
// Checks across nodes

function apiserverCertificates(snapshots: readonly NodeSnapshot[]): Map<string, ApiserverCertificate> {
  const certificates = new Map<string, ApiserverCertificate>();
  for (const snapshot of snapshots) {
    const item = snapshot.items.find((candidate) => candidate.type === 'leaf' && candidate.name === APISERVER_ITEM);
    if (item?.type !== 'leaf') continue;
    const file = snapshot.files.get(item.certificate.path);
    const info = file?.exists === true && !file.error ? parseCertificate(file.content) : undefined;
    if (info !== undefined) certificates.set(snapshot.node.name, { info, required: item.sans });
  }
  return certificates;
}

/**
 * Without a state directory, reports CA files whose content differs from the copy that most nodes
 * hold, because a certificate signed by one copy fails to verify against the other. On a tie the
 * copy of the first node in inventory order counts as the reference.
 */
function checkTrustConsistency(snapshots: readonly NodeSnapshot[], remedy: Remedy): Problem[] {
  const copies = new Map<CaName, { node: string; path: string; sha256: string }[]>();
  for (const snapshot of snapshots) {
    for (const item of snapshot.items) {
      if (item.type !== 'static' || !('ca' in item.source) || item.source.part !== 'certificate') continue;
      const file = snapshot.files.get(item.file.path);
      if (file?.exists !== true || file.error) continue;
      copies.set(item.source.ca, [...(copies.get(item.source.ca) ?? []), { node: snapshot.node.name, path: item.file.path, sha256: file.sha256 }]);
    }
  }
  const problems: Problem[] = [];
  for (const [ca, list] of copies) {
    const counts = new Map<string, number>();
    for (const copy of list) counts.set(copy.sha256, (counts.get(copy.sha256) ?? 0) + 1);
    const reference = list.reduce((best, copy) => ((counts.get(copy.sha256) ?? 0) > (counts.get(best.sha256) ?? 0) ? copy : best), list[0]!);
    for (const copy of list.filter((entry) => entry.sha256 !== reference.sha256)) {
      const message = `${ca} certificate differs from the copy on ${counts.get(reference.sha256)} other node(s), such as ${reference.node}; certificates signed by one copy fail to verify against the other`;
      problems.push({ node: copy.node, path: copy.path, check: 'trust-consistency', message, fix: remedy.reissue([copy.node]) });
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Entry point

/** Resolves the catalogue for every node; a node whose paths clash or do not resolve is invalid input. */
function resolveCatalogue(inventory: Inventory): Map<NodeSpec, NodeItem[]> {
  const catalogue = new Map<NodeSpec, NodeItem[]>();
  const errors: string[] = [];
  for (const node of inventory.nodes) {
    try {
      catalogue.set(node, itemsForNode(inventory, node));
    } catch (error) {
      errors.push(`  node ${node.name}: ${(error as Error).message}`);
    }
  }
  if (errors.length > 0) throw new ValidateInputError(`the catalogue does not resolve for inventory ${inventory.name}:\n${errors.join('\n')}`);
  return catalogue;
}

/** Loads the state's CAs; throws a StateError when the directory is not initialised for this cluster. */
function loadMaterial(stateDir: string, inventory: Inventory): Promise<ClusterMaterial> {
  return ClusterMaterial.load(new StateDir(path.resolve(stateDir)), inventory);
}

function checkOptions(options: ValidateOptions): void {
  if (options.live === true && options.out !== undefined) throw new ValidateInputError('--out and --live exclude each other; pass --out DIR to check an issued tree or --live to ask the agents');
  if (options.live === true && options.stateDir === undefined) {
    throw new ValidateInputError('--live needs --state-dir: the controller identity in the state directory authenticates it to the agents');
  }
}

async function readSnapshots(
  inventory: Inventory,
  catalogue: Map<NodeSpec, NodeItem[]>,
  material: ClusterMaterial | undefined,
  logger: Logger,
  options: ValidateOptions,
): Promise<{ snapshots: NodeSnapshot[]; problems: Problem[]; remedy: Remedy }> {
  if (options.out !== undefined) {
    const outDir = path.resolve(options.out);
    if (!(await isDirectory(outDir))) throw new ValidateInputError(`--out ${outDir} is not a directory; pass the --out directory of \`controller issue\``);
    const remedy = outRemedy(outDir);
    const tree = await readTree(outDir, catalogue, remedy);
    const problems = [...tree.problems, ...(await checkManifest(outDir, inventory, tree.snapshots, remedy)), ...(await findLeftovers(outDir))];
    return { ...tree, problems, remedy };
  }
  const live = await readLive(inventory, catalogue, material!, logger, options.concurrency ?? DEFAULT_LIVE_CONCURRENCY);
  return { ...live, remedy: LIVE_REMEDY };
}

/** Reports the staging directories and old trees that a stopped `controller issue` left in OUT. */
async function findLeftovers(outDir: string): Promise<Problem[]> {
  const leftovers = await listIssueLeftovers(outDir);
  return leftovers.map((entry) => ({
    node: '',
    path: path.join(outDir, entry),
    check: 'manifest',
    message: 'left behind by a `controller issue` that was stopped midway, and it may contain private keys',
    fix: 'run `controller issue` with the same --out again, which removes it, or delete it',
  }));
}

/** Orders problems by node in inventory order, tree-wide problems first, then by path. */
function sortProblems(inventory: Inventory, problems: readonly Problem[]): Problem[] {
  const order = new Map(inventory.nodes.map((node, index) => [node.name, index]));
  const rank = (problem: Problem): number => (problem.node === '' ? -1 : (order.get(problem.node) ?? inventory.nodes.length));
  return [...problems].sort((a, b) => rank(a) - rank(b) || a.path.localeCompare(b.path));
}

/** Validates the inventory and, with `out` or `live`, the files the nodes would hold or hold now. */
export async function validateCluster(inventory: Inventory, logger: Logger, options: ValidateOptions = {}): Promise<ValidateResult> {
  checkOptions(options);
  const catalogue = resolveCatalogue(inventory);
  const material = options.stateDir !== undefined ? await loadMaterial(options.stateDir, inventory) : undefined;
  let source: ValidateResult['source'] = 'inventory';
  if (options.out !== undefined) source = 'out';
  else if (options.live === true) source = 'live';
  if (source === 'inventory') return { cluster: inventory.name, source, nodes: catalogue.size, ok: true, problems: [] };

  const { snapshots, problems, remedy } = await readSnapshots(inventory, catalogue, material, logger, options);
  const context: CheckContext = {
    inventory,
    now: options.now ?? new Date(),
    material,
    remedy,
    checkOwner: source === 'live',
    apiservers: apiserverCertificates(snapshots),
  };
  const found = [...problems, ...snapshots.flatMap((snapshot) => checkNode(snapshot, context))];
  if (material === undefined) found.push(...checkTrustConsistency(snapshots, remedy));
  const sorted = sortProblems(inventory, found);
  return { cluster: inventory.name, source, nodes: catalogue.size, ok: sorted.length === 0, problems: sorted };
}
