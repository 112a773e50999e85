/**
 * `controller issue` and `controller validate --out` on real files: a state directory from
 * `initState`, a tree written by `issueOffline`, openssl to verify the chains, and the CLI run as
 * a child process for exit codes and JSON output. Nothing is contacted; the inventories use the
 * documentation addresses 192.0.2.0/24.
 */
import { strict as assert } from 'node:assert';
import { execFile, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StateError, initState } from '@kubetrust/controller';
import { IssueInputError, IssueInterruptedError, createLimiter, issueOffline, type Manifest } from '@kubetrust/controller/dist/offline-issue';
import { ValidateInputError, validateCluster, type Problem, type ValidateResult } from '@kubetrust/controller/dist/validate';
import { itemPaths, itemsForNode, type NodeItem } from '@kubetrust/shared/dist/catalogue';
import { parseInventory, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { inspectCertificate } from '@kubetrust/shared/dist/pki';
import { CONTROLLER_CLI, runController, type CommandResult } from '../harness/local-cluster';

interface InventoryChoices {
  readonly name?: string;
  readonly endpoint?: string;
  readonly extraSANs?: readonly string[];
  readonly keyAlgorithm?: string;
  readonly pathOverrides?: Readonly<Record<string, string>>;
}

function inventoryYaml(choices: InventoryChoices = {}): string {
  const overrides = Object.entries(choices.pathOverrides ?? {}).map(([key, value]) => `${key}: ${value}`);
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: ${choices.name ?? 'offline'}}
spec:
  apiServer: {endpoint: "${choices.endpoint ?? 'https://192.0.2.100:6443'}", extraSANs: [${(choices.extraSANs ?? []).join(', ')}]}
  pki: {keyAlgorithm: ${choices.keyAlgorithm ?? 'ECDSA-P256'}, pathOverrides: {${overrides.join(', ')}}}
  nodes:
    - {name: etcd-1, addresses: [192.0.2.11], roles: [etcd]}
    - {name: cp-1, addresses: [192.0.2.21], hostnames: [cp-1.offline.example], roles: [master]}
    - {name: wk-1, addresses: [192.0.2.31], roles: [worker]}
`;
}

function inventoryOf(choices: InventoryChoices = {}): Inventory {
  return parseInventory(inventoryYaml(choices), 'offline.yaml').inventory;
}

function nodeOf(inventory: Inventory, name: string): NodeSpec {
  const node = inventory.nodes.find((candidate) => candidate.name === name);
  assert.ok(node, `inventory has no node ${name}`);
  return node;
}

/** Relative paths of every file below `root`, sorted. */
function listFiles(root: string): string[] {
  const files: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else files.push(path.relative(root, full));
    }
  };
  walk(root);
  return files.sort();
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function digestTree(root: string): Map<string, string> {
  return new Map(listFiles(root).map((file) => [file, sha256(path.join(root, file))]));
}

function readManifest(outDir: string): Manifest {
  return JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Manifest;
}

function exec(command: string, args: readonly string[]): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: 60_000 }, (error, stdout, stderr) => {
      let code = 0;
      if (error !== null) code = typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Returns the node path of the file that contains the certificate of `ca` on `node`. */
function caFileOn(inventory: Inventory, node: string, ca: string): string {
  const item = itemsForNode(inventory, nodeOf(inventory, node)).find(
    (candidate): candidate is Extract<NodeItem, { type: 'static' }> =>
      candidate.type === 'static' && 'ca' in candidate.source && candidate.source.ca === ca && candidate.source.part === 'certificate',
  );
  assert.ok(item, `${node} holds no ${ca} certificate`);
  return item.file.path;
}

function problemsOf(result: ValidateResult, check: string): Problem[] {
  return result.problems.filter((problem) => problem.check === check);
}

function describeProblems(result: ValidateResult): string {
  return result.problems.map((problem) => `${problem.node}: ${problem.path}: [${problem.check}] ${problem.message}`).join('\n');
}

describe('controller issue offline', function () {
  this.timeout(300_000);
  const inventory = inventoryOf();
  let workdir: string;
  let stateDir: string;
  let outDir: string;
  let manifest: Manifest;
  let startedAt: Date;
  let finishedAt: Date;

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-offline-'));
    stateDir = path.join(workdir, 'state');
    outDir = path.join(workdir, 'out');
    await initState(inventory, stateDir, silentLogger());
    startedAt = new Date();
    await issueOffline(inventory, stateDir, silentLogger(), { outDir });
    finishedAt = new Date();
    manifest = readManifest(outDir);
  });

  after(() => {
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('writes each node exactly its catalogue paths', () => {
    assert.deepEqual(fs.readdirSync(outDir).sort(), ['cp-1', 'etcd-1', 'manifest.json', 'wk-1']);
    for (const node of inventory.nodes) {
      const expected = itemsForNode(inventory, node).flatMap(itemPaths).map((file) => file.slice(1)).sort();
      assert.deepEqual(listFiles(path.join(outDir, node.name)), expected, `${node.name} files`);
    }
  });

  it('writes every file with its catalogue mode', () => {
    for (const node of inventory.nodes) {
      for (const item of itemsForNode(inventory, node)) {
        const files = item.type === 'leaf' ? [item.certificate, item.privateKey] : [item.file];
        for (const file of files) {
          const mode = fs.statSync(path.join(outDir, node.name, file.path)).mode & 0o7777;
          assert.equal(mode.toString(8), file.mode.toString(8), `${node.name}:${file.path}`);
        }
      }
    }
    assert.equal(fs.statSync(path.join(outDir, 'cp-1')).mode & 0o777, 0o700, 'node directory is readable by others');
  });

  it('gives workers no CA key, service-account key or etcd material', () => {
    const worker = listFiles(path.join(outDir, 'wk-1'));
    for (const forbidden of ['etc/kubernetes/pki/ca.key', 'etc/kubernetes/pki/sa.key', 'etc/kubernetes/pki/sa.pub', 'etc/kubernetes/admin.conf']) {
      assert.ok(!worker.includes(forbidden), `worker received ${forbidden}`);
    }
    assert.deepEqual(worker.filter((file) => file.includes('etcd')), [], 'worker received etcd material');
    assert.ok(!listFiles(path.join(outDir, 'etcd-1')).includes('etc/kubernetes/pki/ca.key'), 'etcd node received the cluster CA key');
    assert.ok(listFiles(path.join(outDir, 'cp-1')).includes('etc/kubernetes/pki/ca.key'), 'master lacks the CA key for the controller-manager');
  });

  it('records every file in the manifest with its sha256', () => {
    const onDisk = inventory.nodes.flatMap((node) => listFiles(path.join(outDir, node.name)).map((file) => `${node.name}/${file}`)).sort();
    assert.deepEqual(manifest.files.map((file) => file.hostPath).sort(), onDisk);
    for (const file of manifest.files) {
      assert.equal(file.sha256, sha256(path.join(outDir, file.hostPath)), file.hostPath);
      assert.equal(file.hostPath, `${file.node}${file.path}`);
      assert.equal(file.mode, (fs.statSync(path.join(outDir, file.hostPath)).mode & 0o7777).toString(8).padStart(4, '0'), file.hostPath);
    }
    assert.equal(manifest.cluster, 'offline');
    assert.deepEqual(manifest.nodes.map((node) => node.name), ['etcd-1', 'cp-1', 'wk-1']);
  });

  it('records certificates with unique serials and bounded notAfter', () => {
    const issued = manifest.files.filter((file) => file.certificate !== undefined && !file.item.endsWith('.crt'));
    assert.equal(issued.length, manifest.nodes.reduce((sum, node) => sum + node.certificatesIssued, 0));
    const serials = issued.map((file) => file.certificate!.serialNumber);
    assert.equal(new Set(serials).size, serials.length, 'serial numbers repeat');
    const validity = inventory.pki.certValidityMs;
    for (const file of issued) {
      const notAfter = Date.parse(file.certificate!.notAfter);
      // X.509 times have whole seconds, so notAfter may fall up to a second before start + validity.
      assert.ok(notAfter >= startedAt.getTime() + validity - 1000, `${file.hostPath} notAfter ${file.certificate!.notAfter} is too early`);
      assert.ok(notAfter <= finishedAt.getTime() + validity, `${file.hostPath} notAfter ${file.certificate!.notAfter} is too late`);
    }
    const kubelet = manifest.files.find((file) => file.node === 'wk-1' && file.item === 'kubelet.conf');
    assert.equal(kubelet?.kind, 'kubeconfig');
    assert.equal(kubelet?.certificate?.issuer, 'cluster-ca');
    assert.deepEqual(kubelet?.consumers, ['kubelet']);
    const etcdServer = manifest.files.find((file) => file.node === 'etcd-1' && file.path === '/etc/kubernetes/pki/etcd/server.crt');
    assert.equal(etcdServer?.certificate?.issuer, 'etcd-ca');
  });

  it('signs leaves that openssl verifies against the node CA file', async () => {
    const leaves = manifest.files.filter((file) => file.kind === 'certificate' && file.certificate !== undefined && !file.item.endsWith('.crt'));
    assert.ok(leaves.length >= 8, `only ${leaves.length} leaf certificates in the manifest`);
    for (const leaf of leaves) {
      const caFile = path.join(outDir, leaf.node, caFileOn(inventory, leaf.node, leaf.certificate!.issuer));
      const verify = await exec('openssl', ['verify', '-CAfile', caFile, path.join(outDir, leaf.hostPath)]);
      assert.equal(verify.code, 0, `${leaf.hostPath} against ${caFile}: ${verify.stdout}${verify.stderr}`);
    }
  });

  it('embeds a matching key and the cluster CA in kubeconfigs', async () => {
    const summary = parseKubeconfig(fs.readFileSync(path.join(outDir, 'wk-1/etc/kubernetes/kubelet.conf'), 'utf8'));
    assert.equal(summary.server, 'https://192.0.2.100:6443');
    assert.equal(summary.certificateAuthorityPem.trim(), fs.readFileSync(path.join(stateDir, 'pki/cluster-ca.crt'), 'utf8').trim());
    const certificate = new crypto.X509Certificate(summary.clientCertificatePem);
    assert.ok(certificate.checkPrivateKey(crypto.createPrivateKey(summary.clientKeyPem ?? '')), 'client key does not match');
    assert.match(certificate.subject, /CN=system:node:wk-1/);
    const clientFile = path.join(workdir, 'kubelet-client.crt');
    fs.writeFileSync(clientFile, summary.clientCertificatePem);
    const verify = await exec('openssl', ['verify', '-CAfile', path.join(outDir, 'wk-1/etc/kubernetes/pki/ca.crt'), clientFile]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  });

  it('uses the catalogue subject and SANs for the apiserver', () => {
    const info = inspectCertificate(fs.readFileSync(path.join(outDir, 'cp-1/etc/kubernetes/pki/apiserver.crt')));
    assert.equal(info.subject.commonName, 'kube-apiserver');
    assert.deepEqual(info.extKeyUsage, ['serverAuth']);
    for (const name of ['cp-1', 'cp-1.offline.example', 'kubernetes.default.svc.cluster.local']) assert.ok(info.dnsNames.includes(name), `DNS SAN ${name}`);
    for (const ip of ['192.0.2.21', '192.0.2.100', '10.96.0.1']) assert.ok(info.ipAddresses.includes(ip), `IP SAN ${ip}`);
  });

  it('appends every issued certificate to the ledger', () => {
    const ledger = (JSON.parse(fs.readFileSync(path.join(stateDir, 'ledger.json'), 'utf8')) as { issued: { node: string; name: string; ca: string; serialNumber: string; notAfter: string }[] }).issued;
    const issued = manifest.files.filter((file) => file.certificate !== undefined && !file.item.endsWith('.crt'));
    const fromManifest = issued.map((file) => `${file.node} ${file.item} ${file.certificate!.issuer} ${file.certificate!.serialNumber} ${file.certificate!.notAfter}`).sort();
    const fromLedger = ledger.map((entry) => `${entry.node} ${entry.name} ${entry.ca} ${entry.serialNumber} ${entry.notAfter}`).sort();
    assert.deepEqual(fromLedger, fromManifest);
  });

  it('issues only the --nodes subset', async () => {
    const subset = path.join(workdir, 'subset');
    await issueOffline(inventory, stateDir, silentLogger(), { outDir: subset, nodes: ['wk-1'] });
    assert.deepEqual(fs.readdirSync(subset).sort(), ['manifest.json', 'wk-1']);
    const subsetManifest = readManifest(subset);
    assert.deepEqual(subsetManifest.nodes.map((node) => node.name), ['wk-1']);
    assert.ok(subsetManifest.files.every((file) => file.node === 'wk-1'));
  });

  it('rejects an unknown --nodes name and lists the valid ones', async () => {
    await assert.rejects(
      issueOffline(inventory, stateDir, silentLogger(), { outDir: path.join(workdir, 'unknown'), nodes: ['wk-1', 'wk-9'] }),
      (error: Error) => error instanceof IssueInputError && /"wk-9"/.test(error.message) && /etcd-1, cp-1, wk-1/.test(error.message),
    );
    assert.ok(!fs.existsSync(path.join(workdir, 'unknown')), 'an output directory was created');
  });

  it('rejects a non-empty --out without --force', async () => {
    const before = digestTree(outDir);
    const ledgerBefore = fs.readFileSync(path.join(stateDir, 'ledger.json'), 'utf8');
    await assert.rejects(issueOffline(inventory, stateDir, silentLogger(), { outDir }), (error: Error) => error instanceof IssueInputError && /not empty/.test(error.message) && /--force/.test(error.message));
    assert.deepEqual(digestTree(outDir), before);
    assert.equal(fs.readFileSync(path.join(stateDir, 'ledger.json'), 'utf8'), ledgerBefore);
  });

  it('replaces only the written nodes with --force', async () => {
    const forced = path.join(workdir, 'forced');
    fs.cpSync(outDir, forced, { recursive: true });
    fs.writeFileSync(path.join(forced, 'README.txt'), 'kept\n');
    const before = digestTree(forced);
    await issueOffline(inventory, stateDir, silentLogger(), { outDir: forced, nodes: ['wk-1'], force: true });
    const after = digestTree(forced);
    for (const [file, digest] of before) {
      // The CA and the kubelet drop-in carry the same content in every run, and everything else is issued anew.
      if (file.startsWith('wk-1/') && (file.endsWith('ca.crt') || file.endsWith('50-kubetrust.conf'))) assert.equal(after.get(file), digest, `${file} changed`);
      else if (file.startsWith('wk-1/')) assert.notEqual(after.get(file), digest, `${file} was not reissued`);
      else if (file !== 'manifest.json') assert.equal(after.get(file), digest, `${file} changed`);
    }
    assert.deepEqual(fs.readdirSync(forced).filter((entry) => entry.startsWith('.')), [], 'staging directories were left behind');
    const merged = readManifest(forced);
    assert.deepEqual(merged.nodes.map((node) => node.name), ['etcd-1', 'cp-1', 'wk-1']);
    for (const file of merged.files) assert.equal(file.sha256, after.get(file.hostPath), file.hostPath);
  });

  it('removes what a stopped issue left', async () => {
    const stopped = path.join(workdir, 'stopped');
    fs.cpSync(outDir, stopped, { recursive: true });
    // A stopped run leaves a staging directory with a key in it, and an old tree moved aside.
    const staging = path.join(stopped, '.cp-1.staging-Ab12Cd');
    fs.mkdirSync(path.join(staging, 'etc/kubernetes/pki'), { recursive: true });
    fs.writeFileSync(path.join(staging, 'etc/kubernetes/pki/ca.key'), 'stale key\n');
    fs.mkdirSync(path.join(stopped, '.wk-1.replaced-0a1b2c3d'));
    const rejected = path.join(workdir, 'only-leftovers');
    fs.mkdirSync(path.join(rejected, '.etcd-1.staging-Zz99Yy'), { recursive: true });

    await issueOffline(inventory, stateDir, silentLogger(), { outDir: stopped, nodes: ['wk-1'], force: true });
    assert.deepEqual(fs.readdirSync(stopped).filter((entry) => entry.startsWith('.')), []);
    // A directory that contains only leftovers counts as empty, so no --force is needed.
    await issueOffline(inventory, stateDir, silentLogger(), { outDir: rejected, nodes: ['etcd-1'] });
    assert.deepEqual(fs.readdirSync(rejected).sort(), ['etcd-1', 'manifest.json']);
  });

  it('stops cleanly when aborted', async () => {
    const replaced = path.join(workdir, 'aborted');
    fs.cpSync(outDir, replaced, { recursive: true });
    const treeBefore = digestTree(replaced);
    const ledgerBefore = fs.readFileSync(path.join(stateDir, 'ledger.json'), 'utf8');
    const interrupt = new AbortController();
    const staged: string[] = [];
    await assert.rejects(
      issueOffline(inventory, stateDir, silentLogger(), {
        outDir: replaced,
        force: true,
        signal: interrupt.signal,
        onNodeStaged: (event) => {
          staged.push(event.node);
          interrupt.abort('SIGINT');
        },
      }),
      (error: Error) => error instanceof IssueInterruptedError && error.signal === 'SIGINT' && /stopped by SIGINT before any node was moved/.test(error.message),
    );
    assert.ok(staged.length > 0, 'no node was staged before the abort');
    assert.deepEqual(digestTree(replaced), treeBefore);
    assert.deepEqual(fs.readdirSync(replaced).filter((entry) => entry.startsWith('.')), []);
    assert.equal(fs.readFileSync(path.join(stateDir, 'ledger.json'), 'utf8'), ledgerBefore);
  });

  it('rejects --out inside the state directory', async () => {
    await assert.rejects(
      issueOffline(inventory, stateDir, silentLogger(), { outDir: path.join(stateDir, 'tree') }),
      (error: Error) => error instanceof IssueInputError && /inside the state directory/.test(error.message),
    );
    assert.ok(!fs.existsSync(path.join(stateDir, 'tree')));
  });

  it('rejects a state directory without init', async () => {
    const empty = path.join(workdir, 'no-state');
    await assert.rejects(
      issueOffline(inventory, empty, silentLogger(), { outDir: path.join(workdir, 'never') }),
      (error: Error) => error instanceof StateError && /not initialised/.test(error.message),
    );
    assert.ok(!fs.existsSync(path.join(workdir, 'never')));
  });
});

describe('controller issue stopped by a signal', function () {
  this.timeout(300_000);
  let workdir: string;

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-offline-signal-'));
  });

  after(() => {
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  /** Returns the ledger's text, or '' before the first certificate is recorded. */
  function ledgerText(stateDir: string): string {
    const file = path.join(stateDir, 'ledger.json');
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  }

  /**
   * Runs `controller issue` for 3 nodes and 30 workers with RSA-2048 keys, which take seconds to
   * generate on this host, and sends `signal` once the first node is written to its staging
   * directory.
   */
  async function issueStoppedBy(signal: NodeJS.Signals): Promise<{ code: number | null; stderr: string; outDir: string; stateDir: string; ledgerBefore: string }> {
    const dir = fs.mkdtempSync(path.join(workdir, `${signal}-`));
    const workers = Array.from({ length: 30 }, (_, index) => `    - {name: wk-${index + 2}, addresses: [192.0.2.${index + 100}], roles: [worker]}`);
    const inventoryFile = path.join(dir, 'cluster.yaml');
    fs.writeFileSync(inventoryFile, inventoryYaml({ keyAlgorithm: 'RSA-2048' }) + workers.join('\n') + '\n');
    const stateDir = path.join(dir, 'state');
    const outDir = path.join(dir, 'out');
    const init = await runController(['init', '--inventory', inventoryFile, '--state-dir', stateDir]);
    assert.equal(init.code, 0, init.stderr);
    const ledgerBefore = ledgerText(stateDir);
    const child = spawn(process.execPath, [CONTROLLER_CLI, 'issue', '--inventory', inventoryFile, '--state-dir', stateDir, '--out', outDir], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let sent = false;
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk;
      if (!sent && stderr.includes('node written')) {
        sent = true;
        child.kill(signal);
      }
    });
    const code = await new Promise<number | null>((resolve) => child.once('close', (exitCode) => resolve(exitCode)));
    assert.ok(sent, `the issue ended before its first node was written:\n${stderr}`);
    return { code, stderr, outDir, stateDir, ledgerBefore };
  }

  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    it(`removes its staging on ${signal}`, async () => {
      const result = await issueStoppedBy(signal);
      assert.equal(result.code, code, result.stderr);
      assert.match(result.stderr, new RegExp(`error: stopped by ${signal} before any node was moved into`));
      assert.deepEqual(fs.readdirSync(result.outDir), [], 'the output directory is not empty');
      assert.equal(ledgerText(result.stateDir), result.ledgerBefore);
      const rerun = await runController(['validate', '--inventory', path.join(path.dirname(result.outDir), 'cluster.yaml'), '--out', result.outDir]);
      assert.doesNotMatch(rerun.stdout + rerun.stderr, /staging/);
    });
  }
});

describe('controller issue key generation', function () {
  this.timeout(300_000);

  it('limits the tasks in flight', async () => {
    const limit = createLimiter(3);
    let active = 0;
    let peak = 0;
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 12 }, (_, index) =>
        limit(async () => {
          active++;
          peak = Math.max(peak, active);
          await new Promise((resolve) => setTimeout(resolve, 5));
          order.push(index);
          active--;
        }),
      ),
    );
    assert.equal(peak, 3);
    assert.equal(order.length, 12);
  });

  for (const keyAlgorithm of ['ECDSA-P256', 'RSA-2048']) {
    it(`generates ${keyAlgorithm} node keys off the main thread`, async () => {
      const inventory = inventoryOf({ keyAlgorithm });
      const workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-offline-keys-'));
      // The module object itself: the namespace object of an import has read-only bindings.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mutableCrypto = require('node:crypto') as Record<'generateKeyPair' | 'generateKeyPairSync', (...args: unknown[]) => unknown>;
      const original = { generateKeyPair: mutableCrypto.generateKeyPair, generateKeyPairSync: mutableCrypto.generateKeyPairSync };
      const calls: string[] = [];
      try {
        await initState(inventory, path.join(workdir, 'state'), silentLogger());
        for (const name of ['generateKeyPair', 'generateKeyPairSync'] as const) {
          mutableCrypto[name] = (...args: unknown[]) => {
            calls.push(name);
            return original[name](...args);
          };
        }
        const result = await issueOffline(inventory, path.join(workdir, 'state'), silentLogger(), { outDir: path.join(workdir, 'out') });
        Object.assign(mutableCrypto, original);
        assert.deepEqual(calls, [], 'the main thread generated keys');
        const keyFiles = result.manifest.files.filter((file) => file.kind === 'private-key');
        assert.ok(keyFiles.length > 0, "no private key files issued");
        let checked = 0;
        for (const file of keyFiles) {
          const certificateFile = result.manifest.files.find((entry) => entry.node === file.node && entry.item === file.item && entry.kind === 'certificate');
          // The service-account key pair has no certificate.
          if (certificateFile === undefined) continue;
          checked++;
          const key = crypto.createPrivateKey(fs.readFileSync(path.join(result.outDir, file.hostPath)));
          const certificate = new crypto.X509Certificate(fs.readFileSync(path.join(result.outDir, certificateFile.hostPath)));
          assert.ok(certificate.checkPrivateKey(key), `${file.hostPath} does not match ${certificateFile.hostPath}`);
          assert.equal(key.asymmetricKeyType, keyAlgorithm.startsWith('RSA') ? 'rsa' : 'ec');
        }
        assert.ok(checked >= 5, `only ${checked} key and certificate pairs checked`);
      } finally {
        Object.assign(mutableCrypto, original);
        fs.rmSync(workdir, { recursive: true, force: true });
      }
    });
  }

  const syncCommands: [string, string | undefined, RegExp][] = [
    ['is missing', undefined, /the sync command was not found/],
    ['fails', '#!/bin/sh\necho "sync: unrecognized option --file-system" >&2\nexit 1\n', /sync --file-system failed: sync: unrecognized option/],
  ];
  for (const [what, script, logged] of syncCommands) {
    it(`syncs each staged file when sync ${what}`, async () => {
      const inventory = inventoryOf();
      const workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-offline-nosync-'));
      const savedPath = process.env.PATH;
      const messages: string[] = [];
      const logger = silentLogger();
      logger.info = ((message: string) => {
        messages.push(message);
        return logger;
      }) as typeof logger.info;
      try {
        await initState(inventory, path.join(workdir, 'state'), silentLogger());
        const bin = path.join(workdir, 'bin');
        fs.mkdirSync(bin);
        if (script !== undefined) fs.writeFileSync(path.join(bin, 'sync'), script, { mode: 0o755 });
        process.env.PATH = bin;
        const result = await issueOffline(inventory, path.join(workdir, 'state'), logger, { outDir: path.join(workdir, 'out') });
        process.env.PATH = savedPath;
        assert.ok(messages.some((message) => logged.test(message)), `log: ${messages.join('; ')}`);
        for (const file of result.manifest.files) assert.equal(sha256(path.join(result.outDir, file.hostPath)), file.sha256, file.hostPath);
        assert.deepEqual(fs.readdirSync(result.outDir).filter((name) => name.startsWith('.')), [], 'a staging directory was left behind');
      } finally {
        process.env.PATH = savedPath;
        fs.rmSync(workdir, { recursive: true, force: true });
      }
    });
  }
});

describe('controller validate --out', function () {
  this.timeout(300_000);
  const inventory = inventoryOf();
  let workdir: string;
  let stateDir: string;
  let pristine: string;
  let copies = 0;

  /** Copies the issued tree, so that one test can change the copy. */
  function copyTree(): string {
    const target = path.join(workdir, `copy-${++copies}`);
    fs.cpSync(pristine, target, { recursive: true });
    return target;
  }

  function validate(outDir: string, choices: InventoryChoices = {}, withState = true): Promise<ValidateResult> {
    return validateCluster(inventoryOf(choices), silentLogger(), { out: outDir, ...(withState ? { stateDir } : {}) });
  }

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-validate-'));
    stateDir = path.join(workdir, 'state');
    pristine = path.join(workdir, 'out');
    await initState(inventory, stateDir, silentLogger());
    await issueOffline(inventory, stateDir, silentLogger(), { outDir: pristine });
  });

  after(() => {
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('passes on a fresh tree with and without the state', async () => {
    const withState = await validate(pristine);
    assert.equal(withState.ok, true, describeProblems(withState));
    const withoutState = await validate(pristine, {}, false);
    assert.equal(withoutState.ok, true, describeProblems(withoutState));
  });

  it('passes on the inventory alone', async () => {
    const result = await validateCluster(inventory, silentLogger());
    assert.equal(result.ok, true);
    assert.equal(result.source, 'inventory');
  });

  it('reports two swapped keys', async () => {
    const tree = copyTree();
    const pki = path.join(tree, 'cp-1/etc/kubernetes/pki');
    const apiserverKey = fs.readFileSync(path.join(pki, 'apiserver.key'));
    fs.copyFileSync(path.join(pki, 'front-proxy-client.key'), path.join(pki, 'apiserver.key'));
    fs.writeFileSync(path.join(pki, 'front-proxy-client.key'), apiserverKey);
    const result = await validate(tree);
    const keyProblems = problemsOf(result, 'key-pair').map((problem) => `${problem.node}:${problem.path}`).sort();
    assert.deepEqual(keyProblems, ['cp-1:/etc/kubernetes/pki/apiserver.key', 'cp-1:/etc/kubernetes/pki/front-proxy-client.key'], describeProblems(result));
    assert.equal(problemsOf(result, 'manifest').length, 2, describeProblems(result));
  });

  it('reports a swapped kubeconfig key', async () => {
    const tree = copyTree();
    const file = path.join(tree, 'wk-1/etc/kubernetes/kube-proxy.conf');
    const other = parseKubeconfig(fs.readFileSync(path.join(tree, 'wk-1/etc/kubernetes/kubelet.conf'), 'utf8'));
    const YAML = await import('yaml');
    const document = YAML.parse(fs.readFileSync(file, 'utf8')) as { users: { user: Record<string, string> }[] };
    document.users[0]!.user['client-key-data'] = Buffer.from(other.clientKeyPem ?? '').toString('base64');
    fs.writeFileSync(file, YAML.stringify(document), { mode: 0o600 });
    const result = await validate(tree);
    assert.deepEqual(problemsOf(result, 'key-pair').map((problem) => problem.path), ['/etc/kubernetes/kube-proxy.conf'], describeProblems(result));
  });

  it('reports a mismatched service-account key', async () => {
    const tree = copyTree();
    const pki = path.join(tree, 'cp-1/etc/kubernetes/pki');
    fs.copyFileSync(path.join(pki, 'apiserver.key'), path.join(pki, 'sa.key'));
    const result = await validate(tree, {}, false);
    assert.deepEqual(problemsOf(result, 'key-pair').map((problem) => problem.path), ['/etc/kubernetes/pki/sa.key'], describeProblems(result));
  });

  it('reports a kubeconfig embedding another CA', async () => {
    const tree = copyTree();
    const file = path.join(tree, 'wk-1/etc/kubernetes/kube-proxy.conf');
    const YAML = await import('yaml');
    const document = YAML.parse(fs.readFileSync(file, 'utf8')) as { clusters: { cluster: Record<string, string> }[] };
    document.clusters[0]!.cluster['certificate-authority-data'] = fs.readFileSync(path.join(stateDir, 'pki/front-proxy-ca.crt')).toString('base64');
    fs.writeFileSync(file, YAML.stringify(document), { mode: 0o600 });
    const result = await validate(tree);
    const trust = problemsOf(result, 'server-trust');
    assert.deepEqual(trust.map((problem) => `${problem.node}:${problem.path}`), ['wk-1:/etc/kubernetes/kube-proxy.conf'], describeProblems(result));
    assert.match(trust[0]!.message, /apiserver certificate of cp-1/);
    assert.deepEqual(problemsOf(result, 'state').map((problem) => problem.path), ['/etc/kubernetes/kube-proxy.conf'], describeProblems(result));
  });

  it('reports a missing file', async () => {
    const tree = copyTree();
    fs.rmSync(path.join(tree, 'etcd-1/etc/kubernetes/pki/etcd/peer.key'));
    const result = await validate(tree);
    const missing = problemsOf(result, 'missing');
    assert.deepEqual(missing.map((problem) => `${problem.node}:${problem.path}`), ['etcd-1:/etc/kubernetes/pki/etcd/peer.key'], describeProblems(result));
    assert.match(missing[0]!.fix, /controller issue --nodes etcd-1 --force/);
  });

  it('reports what a stopped issue left', async () => {
    const tree = copyTree();
    fs.mkdirSync(path.join(tree, '.cp-1.staging-Ab12Cd'));
    fs.mkdirSync(path.join(tree, '.wk-1.replaced-0a1b2c3d'));
    const result = await validate(tree);
    assert.equal(result.ok, false);
    assert.deepEqual(
      result.problems.map((problem) => path.basename(problem.path)),
      ['.cp-1.staging-Ab12Cd', '.wk-1.replaced-0a1b2c3d'],
      describeProblems(result),
    );
    assert.match(result.problems[0]!.message, /stopped midway, and it may contain private keys/);
    assert.match(result.problems[0]!.fix, /run `controller issue` with the same --out again/);
  });

  it('reports a missing node directory once', async () => {
    const tree = copyTree();
    fs.rmSync(path.join(tree, 'wk-1'), { recursive: true });
    const result = await validate(tree);
    assert.deepEqual(result.problems.map((problem) => `${problem.node}:${problem.check}`), ['wk-1:missing'], describeProblems(result));
  });

  it('reports a wrong mode', async () => {
    const tree = copyTree();
    fs.chmodSync(path.join(tree, 'cp-1/etc/kubernetes/pki/sa.key'), 0o644);
    const result = await validate(tree);
    const mode = problemsOf(result, 'mode');
    assert.deepEqual(mode.map((problem) => problem.path), ['/etc/kubernetes/pki/sa.key'], describeProblems(result));
    assert.match(mode[0]!.message, /0644, expected 0600/);
    assert.match(mode[0]!.fix, /chmod 0600 /);
    assert.equal(result.problems.length, 1, describeProblems(result));
  });

  it('reports an extraSAN added after issuing', async () => {
    const result = await validate(pristine, { extraSANs: ['api.offline.example', '198.51.100.7'] });
    const sans = problemsOf(result, 'sans');
    assert.deepEqual(sans.map((problem) => `${problem.node}:${problem.path}`), ['cp-1:/etc/kubernetes/pki/apiserver.crt'], describeProblems(result));
    assert.match(sans[0]!.message, /api\.offline\.example, 198\.51\.100\.7/);
  });

  it('reports a kubeconfig server outside the apiserver SANs', async () => {
    const result = await validate(pristine, { endpoint: 'https://192.0.2.200:6443' });
    const notCovered = problemsOf(result, 'server-san').map((problem) => `${problem.node}:${problem.path}`).sort();
    assert.deepEqual(notCovered, ['cp-1:/etc/kubernetes/admin.conf', 'wk-1:/etc/kubernetes/kube-proxy.conf', 'wk-1:/etc/kubernetes/kubelet.conf'], describeProblems(result));
    assert.ok(problemsOf(result, 'server').some((problem) => problem.node === 'wk-1' && /192\.0\.2\.200/.test(problem.message)), describeProblems(result));
    // The node's own kubeconfigs point at its own address, which its apiserver certificate still covers.
    assert.ok(!result.problems.some((problem) => problem.path === '/etc/kubernetes/controller-manager.conf'), describeProblems(result));
  });

  it('reports a CA file that differs from the state', async () => {
    const tree = copyTree();
    fs.copyFileSync(path.join(stateDir, 'pki/front-proxy-ca.crt'), path.join(tree, 'wk-1/etc/kubernetes/pki/ca.crt'));
    const result = await validate(tree);
    assert.deepEqual(problemsOf(result, 'state').map((problem) => `${problem.node}:${problem.path}`), ['wk-1:/etc/kubernetes/pki/ca.crt'], describeProblems(result));
    const chain = problemsOf(result, 'chain').map((problem) => problem.path).sort();
    assert.deepEqual(chain, ['/etc/kubernetes/kube-proxy.conf', '/etc/kubernetes/kubelet.conf', '/var/lib/kubelet/pki/kubelet.crt'], describeProblems(result));
    const withoutState = await validate(tree, {}, false);
    assert.deepEqual(problemsOf(withoutState, 'trust-consistency').map((problem) => `${problem.node}:${problem.path}`), ['wk-1:/etc/kubernetes/pki/ca.crt'], describeProblems(withoutState));
  });

  it('rejects an inventory whose catalogue paths clash', async () => {
    const clash = inventoryOf({ pathOverrides: { 'apiserver.certificate': '/etc/kubernetes/pki/ca.crt' } });
    await assert.rejects(validateCluster(clash, silentLogger(), { out: pristine }), (error: Error) => error instanceof ValidateInputError && /node cp-1: .*same path/.test(error.message));
  });

  it('rejects --live without a state directory', async () => {
    await assert.rejects(validateCluster(inventory, silentLogger(), { live: true }), (error: Error) => error instanceof ValidateInputError && /--live needs --state-dir/.test(error.message));
  });
});

describe('controller issue and validate CLI', function () {
  this.timeout(300_000);
  let workdir: string;
  let inventoryFile: string;
  let stateDir: string;
  let outDir: string;

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-offline-cli-'));
    inventoryFile = path.join(workdir, 'cluster.yaml');
    fs.writeFileSync(inventoryFile, inventoryYaml());
    stateDir = path.join(workdir, 'state');
    outDir = path.join(workdir, 'out');
    await initState(inventoryOf(), stateDir, silentLogger());
  });

  after(() => {
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('issues with JSON output and exit code 0', async () => {
    const result = await runController(['issue', '--inventory', inventoryFile, '--state-dir', stateDir, '--out', outDir, '--output', 'json']);
    assert.equal(result.code, 0, result.stderr);
    const summary = JSON.parse(result.stdout) as { cluster: string; written: string[]; nodes: { name: string; files: number }[]; files: number };
    assert.equal(summary.cluster, 'offline');
    assert.deepEqual(summary.written, ['etcd-1', 'cp-1', 'wk-1']);
    assert.equal(summary.files, readManifest(outDir).files.length);
    assert.equal(result.stderr.match(/progress=\d\/3/g)?.length, 3, result.stderr);
  });

  it('prints a text summary per node', async () => {
    const result = await runController(['issue', '--inventory', inventoryFile, '--state-dir', stateDir, '--out', path.join(workdir, 'text'), '--nodes', 'wk-1']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /wk-1: 6 files, 3 certificates issued/);
  });

  it('exits 2 for an unknown node and a non-empty --out', async () => {
    const unknown = await runController(['issue', '--inventory', inventoryFile, '--state-dir', stateDir, '--out', path.join(workdir, 'x'), '--nodes', 'nope']);
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.match(unknown.stderr, /"nope" not in inventory offline; valid node names: etcd-1, cp-1, wk-1/);
    const nonEmpty = await runController(['issue', '--inventory', inventoryFile, '--state-dir', stateDir, '--out', outDir]);
    assert.equal(nonEmpty.code, 2, nonEmpty.stderr);
    assert.match(nonEmpty.stderr, /is not empty/);
  });

  it('exits 2 without init', async () => {
    const result = await runController(['issue', '--inventory', inventoryFile, '--state-dir', path.join(workdir, 'missing-state'), '--out', path.join(workdir, 'y')]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /not initialised; run `controller init/);
  });

  it('validates with exit 0 and then 1 after a change', async () => {
    const clean = await runController(['validate', '--inventory', inventoryFile, '--state-dir', stateDir, '--out', outDir, '--output', 'json']);
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);
    assert.deepEqual(JSON.parse(clean.stdout), { ok: true, cluster: 'offline', source: 'out', problems: [] });
    fs.rmSync(path.join(outDir, 'wk-1/etc/kubernetes/kube-proxy.conf'));
    const broken = await runController(['validate', '--inventory', inventoryFile, '--out', outDir, '--output', 'json']);
    assert.equal(broken.code, 1, broken.stderr);
    const report = JSON.parse(broken.stdout) as { ok: boolean; problems: { node: string; path: string; check: string; message: string }[] };
    assert.equal(report.ok, false);
    assert.deepEqual(report.problems.map((problem) => [problem.node, problem.path, problem.check]), [['wk-1', '/etc/kubernetes/kube-proxy.conf', 'missing']]);
    const text = await runController(['validate', '--inventory', inventoryFile, '--out', outDir]);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /^wk-1: \/etc\/kubernetes\/kube-proxy\.conf: file is missing; reissue with `controller issue --nodes wk-1 --force/m);
  });

  it('exits 2 for invalid input', async () => {
    const badInventory = path.join(workdir, 'bad.yaml');
    fs.writeFileSync(badInventory, inventoryYaml().replace('192.0.2.31', '192.0.2.999'));
    const invalid = await runController(['validate', '--inventory', badInventory]);
    assert.equal(invalid.code, 2, invalid.stderr);
    assert.match(invalid.stderr, /invalid inventory/);
    const both = await runController(['validate', '--inventory', inventoryFile, '--state-dir', stateDir, '--out', outDir, '--live']);
    assert.equal(both.code, 2, both.stderr);
    const live = await runController(['validate', '--inventory', inventoryFile, '--live']);
    assert.equal(live.code, 2, live.stderr);
    assert.match(live.stderr, /--live needs --state-dir/);
  });
});
