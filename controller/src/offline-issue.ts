/**
 * `controller issue`: writes every node's CA files, keys, certificates and kubeconfigs into a
 * directory tree, for sites the controller cannot reach and that install the files themselves.
 * Unlike distribute, this is the one mode in which node private keys are generated on the admin
 * host, so the tree must be moved to the nodes as carefully as the CA keys it contains.
 *
 * Reads: the inventory and the state directory (CAs, service-account key pair).
 * Writes: OUT/<node>/<node path> for each catalogue item, OUT/manifest.json and the state's ledger.
 * RPCs: none.
 */
import * as childProcess from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { itemsForNode, type CaName, type NodeItem, type ResolvedFile, type Service } from '@kubetrust/shared/dist/catalogue';
import { sha256Hex, writeFileAtomic } from '@kubetrust/shared/dist/files';
import type { Inventory, NodeSpec } from '@kubetrust/shared/dist/inventory';
import { renderKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import type { Logger } from '@kubetrust/shared/dist/log';
import { KeyPool, inspectCertificate, isEcAlgorithm, type KeyAlgorithm, type SubjectPublicKey } from '@kubetrust/shared/dist/pki';
import { issueLeaf, leafProfile } from './authority';
import { sideOf } from './ca-rotation-state';
import { ClusterMaterial } from './distribute';
import { markEventLoopPhase } from './event-loop-report';
import { StageWriter } from './stage-writer';
import { StateDir, type LedgerEntry } from './state-dir';

export const MANIFEST_FILE = 'manifest.json';

/** Nodes staged at the same time; it bounds open files, while key generation has its own limit. */
const NODE_CONCURRENCY = 16;
/** ECDSA keys per request to a key worker. */
const EC_KEY_BATCH = 32;
/** Upper bound for the one syncfs of OUT; a healthy disk needs well under a second. */
const SYNC_TIMEOUT_MS = 10 * 60_000;

/** Invalid input to `controller issue`: an unknown node, an unusable output directory. */
export class IssueInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IssueInputError';
  }
}

/**
 * A signal stopped the issue before its commit. Every staging directory is removed again, so OUT,
 * the manifest and the ledger are as they were before the run.
 */
export class IssueInterruptedError extends Error {
  constructor(
    readonly signal: NodeJS.Signals,
    message: string,
  ) {
    super(message);
    this.name = 'IssueInterruptedError';
  }
}

export interface OfflineIssueOptions {
  readonly outDir: string;
  /** Node names to issue for; every inventory node when absent. */
  readonly nodes?: readonly string[];
  /** Replace the node directories and the manifest in a non-empty output directory. */
  readonly force?: boolean;
  /** End a certificate that would outlive its CA when the CA ends, instead of failing. */
  readonly capToCa?: boolean;
  readonly now?: () => Date;
  /**
   * Worker threads that generate the node keys. Defaults to os.availableParallelism() for RSA and
   * one less (at least 1) for ECDSA, whose keys are quick enough that the signing thread needs the
   * remaining core.
   */
  readonly keyParallelism?: number;
  /**
   * Stops the issue when aborted with a signal name (such as 'SIGINT') as its reason: before the
   * commit, no further node is staged, what was staged is removed and IssueInterruptedError is
   * thrown. Once the commit has begun the issue finishes, since stopping would leave OUT and the
   * ledger out of step.
   */
  readonly signal?: AbortSignal;
  /** Called once per node when its files are staged, in completion order. */
  readonly onNodeStaged?: (event: { readonly node: string; readonly done: number; readonly total: number }) => void;
}

export type ManifestFileKind = 'certificate' | 'private-key' | 'public-key' | 'kubeconfig' | 'kubelet-config';

/** Certificate facts of a manifest entry: the file's certificate or a kubeconfig's client certificate. */
export interface ManifestCertificate {
  readonly serialNumber: string;
  readonly notAfter: string;
  /** The CA that signed it; a CA certificate names itself. */
  readonly issuer: CaName;
}

export interface ManifestFile {
  readonly node: string;
  /** Absolute path on the node. */
  readonly path: string;
  /** Path relative to the output directory. */
  readonly hostPath: string;
  /** Catalogue item name, such as `apiserver` or `kubelet.conf`. */
  readonly item: string;
  readonly kind: ManifestFileKind;
  readonly sha256: string;
  /** Octal file mode, such as `0600`. */
  readonly mode: string;
  /** Owner to set when installing on the node. */
  readonly uid: number;
  readonly gid: number;
  /** Services on the node that read the file. */
  readonly consumers: readonly Service[];
  readonly certificate?: ManifestCertificate;
}

export interface ManifestNode {
  readonly name: string;
  readonly files: number;
  /** Certificates signed for this node in that run; CA certificates are not counted. */
  readonly certificatesIssued: number;
  readonly issuedAt: string;
}

export interface Manifest {
  readonly cluster: string;
  readonly keyAlgorithm: KeyAlgorithm;
  /** Time of the run that wrote this manifest. */
  readonly writtenAt: string;
  readonly nodes: readonly ManifestNode[];
  readonly files: readonly ManifestFile[];
}

export interface OfflineIssueResult {
  readonly outDir: string;
  readonly manifestFile: string;
  readonly manifest: Manifest;
  /** Nodes written in this run, in inventory order. */
  readonly written: readonly string[];
  readonly ledgerFile: string;
}

/** Returns a function that runs tasks with at most `limit` of them in flight, in submission order. */
export function createLimiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit ${limit} is not a positive integer`);
  let active = 0;
  const waiting: (() => void)[] = [];
  const acquire = (): Promise<void> => {
    if (active < limit) {
      active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => waiting.push(resolve));
  };
  const release = (): void => {
    // A waiting task takes over the slot, so no task that arrives meanwhile can overtake it.
    const next = waiting.shift();
    if (next !== undefined) next();
    else active--;
  };
  return async <T>(task: () => Promise<T>): Promise<T> => {
    await acquire();
    try {
      return await task();
    } finally {
      release();
    }
  };
}

/** Resolves `--nodes` against the inventory; every node when `names` is absent. */
export function selectNodes(inventory: Inventory, names: readonly string[] | undefined): NodeSpec[] {
  if (names === undefined) return [...inventory.nodes];
  const known = new Set(inventory.nodes.map((node) => node.name));
  const unknown = names.filter((name) => !known.has(name));
  if (unknown.length > 0) {
    const valid = inventory.nodes.map((node) => node.name).join(', ');
    throw new IssueInputError(`--nodes: ${unknown.map((name) => `"${name}"`).join(', ')} not in inventory ${inventory.name}; valid node names: ${valid}`);
  }
  if (names.length === 0) throw new IssueInputError('--nodes: no node name given; pass names separated by commas, such as --nodes master-1,worker-1');
  const wanted = new Set(names);
  return inventory.nodes.filter((node) => wanted.has(node.name));
}

/** Maps a node path to its place below a node directory, rejecting paths that would leave it. */
export function pathBelow(root: string, nodePath: string): string {
  if (!path.posix.isAbsolute(nodePath) || nodePath.split('/').includes('..')) {
    throw new IssueInputError(`node path "${nodePath}" is not an absolute path without ".."; fix it in pki.pathOverrides`);
  }
  return path.join(root, nodePath);
}

/** Formats a file mode as four octal digits, such as `0600`. */
export function formatMode(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

function isWithin(child: string, parent: string): boolean {
  const relative = path.relative(parent, child);
  return relative === '' || (relative !== '..' && !relative.startsWith(`..${path.sep}`) && !path.isAbsolute(relative));
}

/** Resolves symbolic links in the longest existing prefix of `target`, so a path that does not exist yet compares correctly. */
async function canonicalPath(target: string): Promise<string> {
  const missing: string[] = [];
  let existing = path.resolve(target);
  for (;;) {
    try {
      return path.join(await fs.realpath(existing), ...missing.reverse());
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      const parent = path.dirname(existing);
      if (parent === existing) return path.resolve(target);
      missing.push(path.basename(existing));
      existing = parent;
    }
  }
}

/**
 * Entries that an issue leaves in OUT only when it is stopped midway: a node's staging directory
 * (`.<node>.staging-XXXXXX`) or the old tree it moved aside (`.<node>.replaced-<hex>`). Both can
 * contain private keys.
 */
const LEFTOVER_ENTRY = /^\..+\.(?:staging-[A-Za-z0-9]{6}|replaced-[0-9a-f]{8})$/;

/** Tells whether an entry of OUT is a staging directory or an old tree that a stopped issue left behind. */
function isIssueLeftover(entry: string): boolean {
  return LEFTOVER_ENTRY.test(entry);
}

/** Lists the entries of OUT that a stopped issue left behind, sorted by name. */
export async function listIssueLeftovers(outDir: string): Promise<string[]> {
  return (await fs.readdir(outDir)).filter(isIssueLeftover).sort();
}

/** Removes what a stopped issue left in OUT and returns the names removed. */
async function removeLeftovers(outDir: string): Promise<string[]> {
  const leftovers = await listIssueLeftovers(outDir);
  await Promise.all(leftovers.map((entry) => fs.rm(path.join(outDir, entry), { recursive: true, force: true })));
  return leftovers;
}

/** Rejects an output directory that overlaps the state directory, or that contains files unless `force` is set. */
async function checkOutDir(outDir: string, stateRoot: string, force: boolean): Promise<void> {
  const [out, state] = await Promise.all([canonicalPath(outDir), canonicalPath(stateRoot)]);
  if (isWithin(out, state)) {
    throw new IssueInputError(`--out ${outDir} is inside the state directory ${stateRoot}, which contains the CA keys; choose an output directory outside it`);
  }
  if (isWithin(state, out)) {
    throw new IssueInputError(`--out ${outDir} contains the state directory ${stateRoot}, so --force could replace it; choose an output directory that does not contain it`);
  }
  let entries: string[];
  try {
    entries = await fs.readdir(outDir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code === 'ENOTDIR') throw new IssueInputError(`--out ${outDir} is a file, not a directory; choose a directory path`);
    throw error;
  }
  // What a stopped issue left behind is removed once the state is locked, so it does not count.
  entries = entries.filter((entry) => !isIssueLeftover(entry));
  if (entries.length > 0 && !force) {
    const shown = entries.sort().slice(0, 5).join(', ');
    throw new IssueInputError(
      `--out ${outDir} is not empty (contains ${shown}${entries.length > 5 ? ', ...' : ''}); choose an empty directory, or pass --force to replace the node directories and ${MANIFEST_FILE}`,
    );
  }
}

/** One file to write for a node, with what the manifest records about it. */
interface OutputFile {
  readonly item: string;
  readonly file: ResolvedFile;
  readonly kind: ManifestFileKind;
  readonly data: string;
  readonly certificate?: ManifestCertificate;
}

interface StagedNode {
  readonly node: NodeSpec;
  readonly stagingDir: string;
  readonly files: readonly ManifestFile[];
  /** Every directory created below stagingDir, stagingDir included. */
  readonly directories: readonly string[];
  readonly ledger: readonly LedgerEntry[];
  readonly issuedAt: string;
}

const STATIC_KINDS: Record<'certificate' | 'signerCertificate' | 'privateKey' | 'publicKey', ManifestFileKind> = {
  certificate: 'certificate',
  signerCertificate: 'certificate',
  privateKey: 'private-key',
  publicKey: 'public-key',
};

/** Signs, renders and stages the files of one node below a fresh staging directory in OUT. */
class NodeIssuer {
  private readonly ledger: LedgerEntry[] = [];

  constructor(
    private readonly inventory: Inventory,
    private readonly node: NodeSpec,
    private readonly material: ClusterMaterial,
    private readonly keys: KeyPool,
    private readonly now: () => Date,
    private readonly logger: Logger,
    private readonly capToCa: boolean,
  ) {}

  async stage(items: readonly NodeItem[], outDir: string, writer: StageWriter): Promise<StagedNode> {
    const outputs = (await Promise.all(items.map((item) => this.outputsFor(item)))).flat();
    const files = outputs.map((output) => this.manifestEntry(output));
    const tree = await writer.stage(
      outDir,
      `.${this.node.name}.staging-`,
      outputs.map((output) => ({ path: output.file.path, data: output.data, mode: output.file.mode })),
    );
    return { node: this.node, stagingDir: tree.stagingDir, files, directories: tree.directories, ledger: this.ledger, issuedAt: this.now().toISOString() };
  }

  private async outputsFor(item: NodeItem): Promise<OutputFile[]> {
    if (item.type === 'static') return [this.staticOutput(item)];
    const keyPair = await this.keys.take();
    const { certificatePem, certificate } = this.sign(item, keyPair.publicKey);
    const keyPem = keyPair.privateKeyPem;
    if (item.type === 'leaf') {
      return [
        { item: item.name, file: item.privateKey, kind: 'private-key', data: keyPem },
        { item: item.name, file: item.certificate, kind: 'certificate', data: certificatePem, certificate },
      ];
    }
    const kubeconfig = renderKubeconfig({
      clusterName: this.inventory.name,
      server: item.server,
      certificateAuthorityPem: this.material.caCertificate(item.parent),
      user: item.subject.commonName,
      clientCertificatePem: certificatePem,
      clientKeyPem: keyPem,
    });
    return [{ item: item.name, file: item.file, kind: 'kubeconfig', data: kubeconfig, certificate }];
  }

  private staticOutput(item: Extract<NodeItem, { type: 'static' }>): OutputFile {
    const data = this.material.staticContent(item);
    const output: OutputFile = { item: item.name, file: item.file, kind: 'part' in item.source ? STATIC_KINDS[item.source.part] : 'kubelet-config', data };
    if (!('ca' in item.source) || item.source.part === 'privateKey') return output;
    const info = inspectCertificate(data);
    return { ...output, certificate: { serialNumber: info.serialNumber, notAfter: info.notAfter.toISOString(), issuer: item.source.ca } };
  }

  private sign(item: Exclude<NodeItem, { type: 'static' }>, publicKey: SubjectPublicKey): { certificatePem: string; certificate: ManifestCertificate } {
    const now = this.now();
    const usedSerials = this.material.usedSerials(item.parent);
    const info = issueLeaf(this.material.issuer(item.parent, item.type === 'leaf' ? sideOf(item.extKeyUsage) : 'client'), leafProfile(item, this.node.name), publicKey, this.inventory.pki.certValidityMs, now, { usedSerials, capToCa: this.capToCa });
    const { certificatePem } = info;
    usedSerials.add(info.serialNumber);
    const certificate: ManifestCertificate = { serialNumber: info.serialNumber, notAfter: info.notAfter.toISOString(), issuer: item.parent };
    this.ledger.push({ node: this.node.name, name: item.name, ca: item.parent, serialNumber: info.serialNumber, notAfter: certificate.notAfter, issuedAt: now.toISOString() });
    // A debug entry per certificate is built only when debug is enabled.
    if (this.logger.isDebugEnabled()) {
      this.logger.debug('issued certificate', { node: this.node.name, cert: item.name, serial: info.serialNumber, notAfter: certificate.notAfter });
    }
    return { certificatePem, certificate };
  }

  /** Describes one file for the manifest, rejecting a node path that would leave the node directory. */
  private manifestEntry(output: OutputFile): ManifestFile {
    pathBelow('/', output.file.path);
    return {
      node: this.node.name,
      path: output.file.path,
      hostPath: path.posix.join(this.node.name, output.file.path),
      item: output.item,
      kind: output.kind,
      sha256: sha256Hex(output.data),
      mode: formatMode(output.file.mode),
      uid: output.file.uid,
      gid: output.file.gid,
      consumers: output.file.consumers,
      ...(output.certificate !== undefined ? { certificate: output.certificate } : {}),
    };
  }
}

// Each node's tree is written by StageWriter on a worker thread: creating thousands of files blocks
// in the kernel whenever the file system is busy, and there it cannot stall the event loop.
//
// Durability comes from one syncfs(2) of OUT's file system after every node is staged and before
// any node directory is swapped in (`sync --file-system`, from coreutils). On ext4 each fsync
// commits the journal, and one per file and directory cost 1.5 s of 4 s for 5,072 files; syncfs
// commits once. The swaps come after it, so a crash leaves every node directory entirely old or
// entirely new, as a per-file fsync would.

const fsync = promisify(fsSync.fsync);
const execFile = promisify(childProcess.execFile);

/** Fsyncs a file or directory, so that its data or the entries created in it are on disk. */
async function fsyncPath(target: string): Promise<void> {
  const fd = fsSync.openSync(target, 'r');
  try {
    await fsync(fd);
  } finally {
    fsSync.closeSync(fd);
  }
}

/**
 * Puts every staged file and directory on disk before the swap. Runs syncfs on OUT's file system,
 * or fsyncs each file and directory where `sync --file-system` is missing or fails.
 */
async function syncStaged(outDir: string, staged: readonly StagedNode[], logger: Logger): Promise<void> {
  try {
    await execFile('sync', ['--file-system', outDir], { timeout: SYNC_TIMEOUT_MS });
    return;
  } catch (error) {
    // A missing `sync`, or one without --file-system (older coreutils, some busybox builds): the
    // fsyncs below give the same guarantee, and a real disk error fails them too.
    const failure = error as NodeJS.ErrnoException & { stderr?: string };
    const reason = failure.code === 'ENOENT' ? 'the sync command was not found' : `sync --file-system failed: ${(failure.stderr ?? '').trim() || failure.message}`;
    logger.info(`${reason}; syncing each staged file instead`, { outDir });
  }
  for (const entry of staged) {
    for (const file of entry.files) await fsyncPath(pathBelow(entry.stagingDir, file.path));
    for (const directory of entry.directories) await fsyncPath(directory);
  }
}

/**
 * Moves a staged node directory into place and returns where the node's old tree went, if it had
 * one. The old tree is renamed aside first, so OUT/<node> is always either the old tree or the new
 * one; the caller removes it once OUT is synced.
 * NOTE: a crash between the two renames leaves OUT/<node> missing and the old tree in
 * OUT/.<node>.replaced-*; a second run with --force writes the node again.
 */
async function swapNode(outDir: string, staged: StagedNode): Promise<string | undefined> {
  const target = path.join(outDir, staged.node.name);
  const aside = path.join(outDir, `.${staged.node.name}.replaced-${crypto.randomBytes(4).toString('hex')}`);
  let movedAside = true;
  try {
    await fs.rename(target, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    movedAside = false;
  }
  await fs.rename(staged.stagingDir, target);
  return movedAside ? aside : undefined;
}

/**
 * Commits every staged node, then syncs OUT once for all the renames and removes the old trees.
 * When a commit fails, the certificates of the nodes already committed still go to the ledger, the
 * remaining staging directories are removed and the error names both.
 */
async function commitAll(outDir: string, staged: readonly StagedNode[], state: StateDir): Promise<void> {
  const committed: StagedNode[] = [];
  const replaced: string[] = [];
  try {
    for (const entry of staged) {
      const oldTree = await swapNode(outDir, entry);
      committed.push(entry);
      if (oldTree !== undefined) replaced.push(oldTree);
    }
    await fsyncPath(outDir);
  } catch (error) {
    // The old trees of committed nodes go only when their renames are on disk.
    const synced = await fsyncPath(outDir).then(
      () => true,
      () => false,
    );
    if (synced) await Promise.all(replaced.map((tree) => fs.rm(tree, { recursive: true, force: true })));
    await state.appendLedger(committed.flatMap((entry) => entry.ledger));
    const remaining = staged.filter((entry) => !committed.includes(entry));
    await Promise.all(remaining.map((entry) => fs.rm(entry.stagingDir, { recursive: true, force: true })));
    const written = committed.map((entry) => entry.node.name).join(', ') || 'none';
    const step = remaining[0] !== undefined ? `moving node ${remaining[0].node.name} into ${outDir}` : `syncing ${outDir} after moving every node into it`;
    throw new Error(
      `${step} failed (nodes written: ${written}; ${MANIFEST_FILE} not updated): ${(error as Error).message}; fix the cause and run issue again with --force`,
      { cause: error },
    );
  }
  await Promise.all(replaced.map((tree) => fs.rm(tree, { recursive: true, force: true })));
}

function isManifest(value: unknown): value is Manifest {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Partial<Record<keyof Manifest, unknown>>;
  return typeof candidate.cluster === 'string' && Array.isArray(candidate.nodes) && Array.isArray(candidate.files);
}

/** Reads OUT/manifest.json; undefined when it does not exist. Throws when it is not a manifest. */
export async function readManifest(outDir: string): Promise<Manifest | undefined> {
  const file = path.join(outDir, MANIFEST_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (!isManifest(parsed)) throw new Error(`${file} is not a kubetrust manifest: cluster, nodes or files is missing`);
  return parsed;
}

/** Keeps the previous manifest's entries for nodes this run did not write and whose directories remain. */
async function previousEntries(outDir: string, cluster: string, written: ReadonlySet<string>, logger: Logger): Promise<Pick<Manifest, 'nodes' | 'files'>> {
  let previous: Manifest | undefined;
  try {
    previous = await readManifest(outDir);
  } catch (error) {
    logger.warn('previous manifest dropped', { path: path.join(outDir, MANIFEST_FILE), error: (error as Error).message });
    return { nodes: [], files: [] };
  }
  if (previous === undefined || previous.cluster !== cluster) return { nodes: [], files: [] };
  const kept = new Set<string>();
  for (const node of previous.nodes) {
    if (written.has(node.name)) continue;
    const present = await fs.stat(path.join(outDir, node.name)).then((stat) => stat.isDirectory(), () => false);
    if (present) kept.add(node.name);
  }
  return { nodes: previous.nodes.filter((node) => kept.has(node.name)), files: previous.files.filter((file) => kept.has(file.node)) };
}

async function buildManifest(inventory: Inventory, outDir: string, staged: readonly StagedNode[], writtenAt: Date, logger: Logger): Promise<Manifest> {
  const written = new Set(staged.map((entry) => entry.node.name));
  const kept = await previousEntries(outDir, inventory.name, written, logger);
  const order = new Map(inventory.nodes.map((node, index) => [node.name, index]));
  const rank = (name: string): number => order.get(name) ?? Number.MAX_SAFE_INTEGER;
  const nodes: ManifestNode[] = [
    ...kept.nodes,
    ...staged.map((entry) => ({ name: entry.node.name, files: entry.files.length, certificatesIssued: entry.ledger.length, issuedAt: entry.issuedAt })),
  ].sort((a, b) => rank(a.name) - rank(b.name));
  const files = [...kept.files, ...staged.flatMap((entry) => entry.files)].sort((a, b) => rank(a.node) - rank(b.node));
  return { cluster: inventory.name, keyAlgorithm: inventory.pki.keyAlgorithm, writtenAt: writtenAt.toISOString(), nodes, files };
}

/**
 * Worker threads and batch size for the node keys. An RSA key keeps a core busy for a tenth of a
 * second, so there is one worker per core and one key per request. The main thread signs while an
 * ECDSA worker generates, so ECDSA leaves it a core, and a batch of keys takes a few milliseconds.
 */
function keyPoolOptions(algorithm: KeyAlgorithm, threads: number | undefined): { threads: number; batchSize: number } {
  const cores = os.availableParallelism();
  if (isEcAlgorithm(algorithm)) return { threads: threads ?? Math.max(1, cores - 1), batchSize: EC_KEY_BATCH };
  return { threads: threads ?? cores, batchSize: 1 };
}

/** Stages every node, at most NODE_CONCURRENCY at a time; on any failure removes what was staged and throws. */
async function stageAll(
  inventory: Inventory,
  plans: readonly { node: NodeSpec; items: NodeItem[] }[],
  outDir: string,
  material: ClusterMaterial,
  logger: Logger,
  options: OfflineIssueOptions,
): Promise<StagedNode[]> {
  const limitNodes = createLimiter(NODE_CONCURRENCY);
  const keys = new KeyPool(inventory.pki.keyAlgorithm, plans.reduce((sum, plan) => sum + plan.items.filter((item) => item.type !== 'static').length, 0), keyPoolOptions(inventory.pki.keyAlgorithm, options.keyParallelism));
  const writer = new StageWriter();
  const now = options.now ?? (() => new Date());
  let done = 0;
  // Closing the pool rejects every node that waits for a key, so the nodes in progress end soon.
  const stop = (): void => void keys.close();
  options.signal?.addEventListener('abort', stop, { once: true });
  if (options.signal?.aborted === true) stop();
  const results = await Promise.allSettled(
    plans.map((plan) =>
      limitNodes(async () => {
        if (options.signal?.aborted === true) throw interruptedError(options.signal, outDir);
        const staged = await new NodeIssuer(inventory, plan.node, material, keys, now, logger, options.capToCa === true).stage(plan.items, outDir, writer);
        options.onNodeStaged?.({ node: plan.node.name, done: ++done, total: plans.length });
        return staged;
      }),
    ),
  );
  options.signal?.removeEventListener('abort', stop);
  await Promise.all([keys.close(), writer.close()]);
  const staged = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failed = results.findIndex((result) => result.status === 'rejected');
  if (failed === -1 && options.signal?.aborted !== true) return staged;
  await Promise.all(staged.map((entry) => fs.rm(entry.stagingDir, { recursive: true, force: true })));
  if (options.signal?.aborted === true) throw interruptedError(options.signal, outDir);
  const reason = (results[failed] as PromiseRejectedResult).reason as unknown;
  const message = reason instanceof Error ? reason.message : String(reason);
  throw new Error(`issue for node ${plans[failed]!.node.name} failed, so nothing was written to ${outDir}: ${message}`, { cause: reason });
}

/** Builds the error for an issue that a signal stopped before its commit. */
function interruptedError(signal: AbortSignal, outDir: string): IssueInterruptedError {
  const name = (typeof signal.reason === 'string' ? signal.reason : 'SIGINT') as NodeJS.Signals;
  return new IssueInterruptedError(name, `stopped by ${name} before any node was moved into ${outDir}: the staged files were removed, and ${outDir}, its ${MANIFEST_FILE} and the ledger are unchanged`);
}

/** Resolves the catalogue of every selected node before anything is written. */
function planNodes(inventory: Inventory, nodes: readonly NodeSpec[]): { node: NodeSpec; items: NodeItem[] }[] {
  return nodes.map((node) => {
    if (node.name === MANIFEST_FILE) throw new IssueInputError(`node name "${node.name}" is the manifest's file name in --out; rename the node in the inventory`);
    try {
      return { node, items: itemsForNode(inventory, node) };
    } catch (error) {
      throw new IssueInputError(`node ${node.name}: ${(error as Error).message}`);
    }
  });
}

/**
 * Issues the whole tree for the selected nodes into `options.outDir`. Nothing in OUT changes until
 * every node is staged; then each node directory is swapped in, the manifest is written and the
 * issued certificates are appended to the ledger.
 */
export async function issueOffline(inventory: Inventory, stateDir: string, logger: Logger, options: OfflineIssueOptions): Promise<OfflineIssueResult> {
  const nodes = selectNodes(inventory, options.nodes);
  const plans = planNodes(inventory, nodes);
  const state = new StateDir(path.resolve(stateDir));
  // Checked before locking, so that a mistyped --state-dir is reported without creating it.
  await state.requireCluster(inventory.name);
  const outDir = path.resolve(options.outDir);
  await checkOutDir(outDir, state.root, options.force === true);
  const unlock = await state.lock();
  try {
    const material = await ClusterMaterial.load(state, inventory);
    await fs.mkdir(outDir, { recursive: true, mode: 0o700 });
    for (const entry of await removeLeftovers(outDir)) {
      logger.info('removed what a stopped issue left behind', { path: path.join(outDir, entry) });
    }
    markEventLoopPhase('issue');
    const staged = await stageAll(inventory, plans, outDir, material, logger, options);
    try {
      await syncStaged(outDir, staged, logger);
      if (options.signal?.aborted === true) throw interruptedError(options.signal, outDir);
    } catch (error) {
      await Promise.all(staged.map((entry) => fs.rm(entry.stagingDir, { recursive: true, force: true })));
      throw error;
    }
    // From here on a signal no longer stops the issue: see OfflineIssueOptions.signal.
    await commitAll(outDir, staged, state);
    const manifest = await buildManifest(inventory, outDir, staged, (options.now ?? (() => new Date()))(), logger);
    const manifestFile = path.join(outDir, MANIFEST_FILE);
    await writeFileAtomic(manifestFile, JSON.stringify(manifest, null, 2) + '\n', { mode: 0o644 });
    await state.appendLedger(staged.flatMap((entry) => entry.ledger));
    const written = nodes.map((node) => node.name);
    return { outDir, manifestFile, manifest, written, ledgerFile: state.path('ledger.json') };
  } finally {
    await unlock();
  }
}
