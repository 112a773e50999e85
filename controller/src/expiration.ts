/**
 * `controller certs check-expiration`: the expiry of every certificate that the nodes actually
 * hold, read through the agents, beside the CAs in the state directory and the ledger.
 *
 * Reads: the inventory, the state directory (CAs, controller identity, ledger). Writes: nothing.
 * RPCs: GetState.
 */
import * as path from 'node:path';
import { casForPki, itemsForNode, type NodeItem } from '@kubetrust/shared/dist/catalogue';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';
import { inspectCertificate, isSignedBy, splitPem, type CertificateInfo } from '@kubetrust/shared/dist/pki';
import { renewalDue } from '@kubetrust/shared/dist/rotation';
import type { FileQuery, FileState__Output } from '@kubetrust/proto';
import { AgentConnection } from './agent-client';
import { queriesFor } from './plan';
import { CaRotationFiles, trustedCertificates } from './ca-rotation-state';
import { StateDir, type LedgerEntry } from './state-dir';

/** Certificates the kubelet renews itself when it runs with rotateCertificates and serverTLSBootstrap. */
export const KUBELET_ROTATED_FILES = ['/var/lib/kubelet/pki/kubelet-client-current.pem', '/var/lib/kubelet/pki/kubelet-server-current.pem'] as const;

export type ExpirationKind = 'ca' | 'trust' | 'certificate' | 'kubeconfig' | 'kubelet';

export interface ExpirationRow {
  /** Node name; empty for a CA in the state directory. */
  readonly node: string;
  /** Catalogue item, CA name, or the file name of a certificate the kubelet rotates. */
  readonly name: string;
  readonly path: string;
  readonly kind: ExpirationKind;
  readonly subject: string;
  readonly serialNumber: string;
  readonly notAfter: Date;
  /** Negative once expired. */
  readonly secondsLeft: number;
  /** The CA that signed it (cluster-ca, etcd-ca, front-proxy-ca, management), or its issuer's CN when no kubetrust CA did. */
  readonly signedBy: string;
  /** Renewer: `distribute`, `the kubelet`, or `nobody yet` for CAs. */
  readonly renewedBy: 'distribute' | 'the kubelet' | 'nobody yet';
  /** True when the renewal threshold has passed. */
  readonly due: boolean;
  /** Differences from the ledger or from the controller's CAs. */
  readonly warnings: readonly string[];
}

export interface ExpirationProblem {
  readonly node: string;
  readonly message: string;
  readonly fix: string;
}

export interface ExpirationReport {
  readonly cluster: string;
  readonly now: Date;
  /** `before` when an absolute window was given, else the fraction of lifetime. */
  readonly threshold: { readonly beforeMs: number } | { readonly fraction: number };
  readonly rows: readonly ExpirationRow[];
  readonly problems: readonly ExpirationProblem[];
}

export interface ExpirationOptions {
  readonly nodes?: readonly string[];
  readonly now?: Date;
  /** Renew when less than this much time is left, instead of the default fraction of the lifetime. */
  readonly beforeMs?: number;
  readonly concurrency?: number;
}

export class ExpirationInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExpirationInputError';
  }
}

const DEFAULT_FRACTION = 1 / 3;

function subjectOf(info: CertificateInfo): string {
  const organizations = info.subject.organizations ?? [];
  return [`CN=${info.subject.commonName}`, ...organizations.map((name) => `O=${name}`)].join(', ');
}

interface Context {
  readonly now: Date;
  readonly beforeMs: number | undefined;
  readonly cas: ReadonlyMap<string, string>;
  /** Serial numbers of the CA certificates each trust file should hold: two while the CA rotates. */
  readonly trusted: ReadonlyMap<string, readonly string[]>;
  readonly ledger: ReadonlyMap<string, LedgerEntry>;
}

function signerOf(pem: string, info: CertificateInfo, context: Context): string {
  for (const [name, caPem] of context.cas) {
    if (isSignedBy(pem, caPem)) return name;
  }
  return `CN=${info.issuer.commonName}`;
}

function row(context: Context, fields: { node: string; name: string; path: string; kind: ExpirationKind; pem: string; renewedBy: ExpirationRow['renewedBy']; warnings?: string[] }): ExpirationRow {
  const info = inspectCertificate(fields.pem);
  const due = context.beforeMs !== undefined ? info.notAfter.getTime() - context.now.getTime() < context.beforeMs : renewalDue({ notBefore: info.notBefore, notAfter: info.notAfter }, context.now, DEFAULT_FRACTION);
  let signedBy: string;
  if (fields.kind !== 'ca' && fields.kind !== 'trust') signedBy = signerOf(fields.pem, info, context);
  else if (info.subject.commonName === info.issuer.commonName) signedBy = 'self';
  else signedBy = `CN=${info.issuer.commonName}`;
  return {
    node: fields.node,
    name: fields.name,
    path: fields.path,
    kind: fields.kind,
    subject: subjectOf(info),
    serialNumber: info.serialNumber,
    notAfter: info.notAfter,
    secondsLeft: Math.floor((info.notAfter.getTime() - context.now.getTime()) / 1000),
    signedBy,
    renewedBy: fields.renewedBy,
    due,
    warnings: fields.warnings ?? [],
  };
}

/** Compares an installed certificate with the ledger's entry for the same node and item. */
function ledgerWarnings(node: string, name: string, serialNumber: string, context: Context): string[] {
  const entry = context.ledger.get(`${node}\u0000${name}`);
  if (entry === undefined) return ['not in the ledger: kubetrust did not issue this certificate, or its state directory was replaced'];
  if (entry.serialNumber !== serialNumber) return [`serial ${serialNumber} differs from the ledger's ${entry.serialNumber}`];
  return [];
}

function rowsForNode(node: NodeSpec, items: readonly NodeItem[], files: ReadonlyMap<string, FileState__Output>, context: Context, problems: ExpirationProblem[]): ExpirationRow[] {
  const rows: ExpirationRow[] = [];
  const missing = (file: string): void => void problems.push({ node: node.name, message: `${file} is missing`, fix: 'run controller distribute to install it' });
  for (const item of items) {
    try {
      if (item.type === 'static' && 'ca' in item.source && item.source.part === 'certificate') {
        const file = files.get(item.file.path);
        if (file === undefined || !file.exists) {
          missing(item.file.path);
          continue;
        }
        for (const pem of splitPem(file.content, 'CERTIFICATE')) {
          const expected = context.trusted.get(item.source.ca);
          const warnings = expected !== undefined && !expected.includes(inspectCertificate(pem).serialNumber) ? [`differs from the controller's ${item.source.ca}`] : [];
          rows.push(row(context, { node: node.name, name: item.name, path: item.file.path, kind: 'trust', pem, renewedBy: 'nobody yet', warnings }));
        }
      } else if (item.type === 'leaf') {
        const file = files.get(item.certificate.path);
        if (file === undefined || !file.exists) {
          missing(item.certificate.path);
          continue;
        }
        const pem = file.content.toString('utf8');
        rows.push(row(context, { node: node.name, name: item.name, path: item.certificate.path, kind: 'certificate', pem, renewedBy: 'distribute', warnings: ledgerWarnings(node.name, item.name, inspectCertificate(pem).serialNumber, context) }));
      } else if (item.type === 'kubeconfig') {
        const file = files.get(item.file.path);
        const pem = file?.kubeconfig?.client_certificate_pem;
        if (file === undefined || !file.exists || pem === undefined || pem.length === 0) {
          missing(item.file.path);
          continue;
        }
        const text = pem.toString('utf8');
        rows.push(row(context, { node: node.name, name: item.name, path: item.file.path, kind: 'kubeconfig', pem: text, renewedBy: 'distribute', warnings: ledgerWarnings(node.name, item.name, inspectCertificate(text).serialNumber, context) }));
      }
    } catch (error) {
      problems.push({ node: node.name, message: `cannot read ${item.name}: ${error instanceof Error ? error.message : String(error)}`, fix: 'run controller validate --live for details' });
    }
  }
  for (const file of KUBELET_ROTATED_FILES) {
    const state = files.get(file);
    if (state === undefined || !state.exists || state.content.length === 0) continue;
    const [pem] = splitPem(state.content, 'CERTIFICATE');
    if (pem !== undefined) rows.push(row(context, { node: node.name, name: path.posix.basename(file), path: file, kind: 'kubelet', pem, renewedBy: 'the kubelet' }));
  }
  return rows;
}

/** Reads the certificates on every selected node and returns one row per certificate, CAs first. */
export async function checkExpiration(inventory: Inventory, stateDir: string, logger: Logger, options: ExpirationOptions = {}): Promise<ExpirationReport> {
  const known = new Set(inventory.nodes.map((node) => node.name));
  const unknown = (options.nodes ?? []).filter((name) => !known.has(name));
  if (unknown.length > 0) throw new ExpirationInputError(`--nodes: ${unknown.map((name) => `"${name}"`).join(', ')} not in the inventory; use names from: ${[...known].join(', ')}`);
  if (options.beforeMs !== undefined && !(options.beforeMs > 0)) throw new ExpirationInputError('--before must be a positive duration such as 30d or 720h');
  const now = options.now ?? new Date();
  const state = new StateDir(path.resolve(stateDir));
  await state.requireCluster(inventory.name);
  const cas = new Map<string, string>();
  const caPaths = new Map<string, string>();
  const trusted = new Map<string, string[]>();
  const rotation = new CaRotationFiles(state);
  const record = await rotation.record();
  for (const name of casForPki(inventory.pki)) {
    const generations = await rotation.generations(name, record);
    cas.set(name, generations.current.certificatePem);
    caPaths.set(name, generations.state === 'finishing' ? rotation.nextFiles(name).certificate : state.caFiles(name).certificate);
    // The successor of a rotating CA is listed beside it, and trust files may hold both.
    if (generations.next !== undefined && generations.next !== generations.current) {
      cas.set(`${name} (new)`, generations.next.certificatePem);
      caPaths.set(`${name} (new)`, rotation.nextFiles(name).certificate);
    }
    trusted.set(name, trustedCertificates(generations, name).map((pem) => inspectCertificate(pem).serialNumber));
  }
  const management = await state.loadKeyMaterial(state.caFiles('management'), 'management CA');
  cas.set('management', management.certificatePem);
  caPaths.set('management', state.caFiles('management').certificate);
  const controller = await state.loadKeyMaterial(state.controllerFiles(), 'controller identity');
  const ledger = new Map<string, LedgerEntry>();
  for (const entry of await state.readLedger()) ledger.set(`${entry.node}\u0000${entry.name}`, entry);
  const context: Context = { now, beforeMs: options.beforeMs, cas, trusted, ledger };

  const rows: ExpirationRow[] = [];
  for (const [name, pem] of cas) {
    const file = caPaths.get(name) ?? '';
    rows.push(row(context, { node: '', name, path: file, kind: 'ca', pem, renewedBy: 'nobody yet' }));
  }
  rows.push(row(context, { node: '', name: 'controller identity', path: state.controllerFiles().certificate, kind: 'certificate', pem: controller.certificatePem, renewedBy: 'nobody yet' }));

  const problems: ExpirationProblem[] = [];
  const selected = inventory.nodes.filter((node) => options.nodes === undefined || options.nodes.includes(node.name));
  const credentials = { managementCaPem: management.certificatePem, certificatePem: controller.certificatePem, privateKeyPem: controller.privateKeyPem };
  const concurrency = Math.max(1, options.concurrency ?? 16);
  let next = 0;
  const perNode: ExpirationRow[][] = new Array(selected.length);
  const worker = async (): Promise<void> => {
    for (let index = next++; index < selected.length; index = next++) {
      const node = selected[index] as NodeSpec;
      const items = itemsForNode(inventory, node);
      const queries: FileQuery[] = [...queriesFor(items), ...KUBELET_ROTATED_FILES.map((file): FileQuery => ({ path: file, kind: 'FILE_KIND_CERTIFICATE' }))];
      const connection = new AgentConnection(inventory.name, node, credentials, { busyRetryDelaysMs: [] });
      try {
        const held = await connection.getState({ files: queries });
        perNode[index] = rowsForNode(node, items, new Map(held.files.map((file) => [file.path, file])), context, problems);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        logger.warn('agent query failed', { node: node.name, error: message });
        problems.push({ node: node.name, message: `GetState failed: ${message}`, fix: 'start the agent or enroll the node again, then run check-expiration again' });
        perNode[index] = [];
      } finally {
        connection.close();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, selected.length)) }, worker));
  for (const nodeRows of perNode) rows.push(...(nodeRows ?? []));
  return { cluster: inventory.name, now, threshold: options.beforeMs !== undefined ? { beforeMs: options.beforeMs } : { fraction: DEFAULT_FRACTION }, rows, problems };
}

function left(seconds: number): string {
  if (seconds <= 0) return 'expired';
  const days = Math.floor(seconds / 86_400);
  if (days >= 1) return `${days}d`;
  const hours = Math.floor(seconds / 3_600);
  return hours >= 1 ? `${hours}h` : `${Math.floor(seconds / 60)}m`;
}

/** Renders the report as a table, like kubeadm's, with one row per certificate. */
export function renderExpiration(report: ExpirationReport): string {
  const header = ['NODE', 'CERTIFICATE', 'EXPIRES', 'LEFT', 'SIGNED BY', 'RENEWED BY', 'DUE'];
  const body = report.rows.map((entry) => [entry.node || '(controller)', entry.name, entry.notAfter.toISOString().replace(/\.\d{3}Z$/, 'Z'), left(entry.secondsLeft), entry.signedBy, entry.renewedBy, entry.due ? 'yes' : 'no']);
  const widths = header.map((title, column) => Math.max(title.length, ...body.map((cells) => (cells[column] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd();
  const lines = [line(header), ...body.map(line)];
  const warnings = report.rows.flatMap((entry) => entry.warnings.map((warning) => `warning: ${entry.node || '(controller)'} ${entry.path}: ${warning}`));
  const problems = report.problems.map((problem) => `error: ${problem.node}: ${problem.message}; ${problem.fix}`);
  const due = report.rows.filter((entry) => entry.due).length;
  const threshold = 'beforeMs' in report.threshold ? `less than ${left(Math.floor(report.threshold.beforeMs / 1000))} left` : 'less than a third of the lifetime left';
  lines.push('', `${report.rows.length} certificates, ${due} due for renewal (${threshold})`, ...warnings, ...problems);
  return lines.join('\n') + '\n';
}

export function expirationJson(report: ExpirationReport): unknown {
  return {
    cluster: report.cluster,
    now: report.now.toISOString(),
    threshold: report.threshold,
    certificates: report.rows.map((entry) => ({ ...entry, notAfter: entry.notAfter.toISOString() })),
    problems: report.problems,
  };
}
