/**
 * Crash safety of the agent's install. A harness child (harness/install-child.ts) installs three
 * change sets of private keys, certificates and kubeconfigs through the real Installer, one set
 * after another. It is killed with SIGKILL at a seeded random moment: a delay after it starts
 * installing, or a delay after the Installer's journal appears. The test process then runs the
 * Installer's start-up recovery itself, as the agent does when it starts. Every set must then hold
 * only old files or only new ones, and every key must match its certificate. No staged file may be
 * left beside the targets, nor an interrupted write in the state directory. A failure names the
 * seed and the kill, so the trial can be repeated.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { Installer } from '@kubetrust/agent/dist/install';
import { StagedKeys } from '@kubetrust/agent/dist/staged-keys';
import { renderKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { createCertificate, generateKeyPair, privateKeyToPem, type ExtKeyUsage, type Issuer, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';
import type { CrashFileChange, CrashFixture, CrashGeneration } from '../harness/install-child';
import { seededRandom } from '../harness/seeded-random';

const CHILD = path.join(__dirname, '..', 'harness', 'install-child.js');
const TRIALS = 100;
/** The Installer's journal in its state directory. It exists from just before a set's first rename until after its last one. */
const JOURNAL = 'journal.json';
/** Name that stageFile gives a file staged beside its target. */
const STAGED_NAME = /^\.(.+)\.tmp-[0-9a-f]+$/;

/** A key with its certificate, installed as two files or as one kubeconfig that embeds both. */
interface Credential {
  readonly set: string;
  readonly name: string;
  readonly commonName: string;
  readonly organizations?: readonly string[];
  readonly extKeyUsage: readonly ExtKeyUsage[];
  readonly algorithm: KeyAlgorithm;
  readonly files: { readonly key: string; readonly certificate: string } | { readonly kubeconfig: string };
}

const PKI = '/etc/kubernetes/pki';
const CREDENTIALS: readonly Credential[] = [
  { set: 'control-plane', name: 'apiserver', commonName: 'kube-apiserver', extKeyUsage: ['serverAuth'], algorithm: 'RSA-2048', files: { key: `${PKI}/apiserver.key`, certificate: `${PKI}/apiserver.crt` } },
  {
    set: 'control-plane',
    name: 'apiserver-kubelet-client',
    commonName: 'kube-apiserver-kubelet-client',
    organizations: ['system:masters'],
    extKeyUsage: ['clientAuth'],
    algorithm: 'RSA-2048',
    files: { key: `${PKI}/apiserver-kubelet-client.key`, certificate: `${PKI}/apiserver-kubelet-client.crt` },
  },
  { set: 'control-plane', name: 'front-proxy-client', commonName: 'front-proxy-client', extKeyUsage: ['clientAuth'], algorithm: 'RSA-2048', files: { key: `${PKI}/front-proxy-client.key`, certificate: `${PKI}/front-proxy-client.crt` } },
  { set: 'etcd', name: 'etcd-server', commonName: 'etcd-1', extKeyUsage: ['serverAuth', 'clientAuth'], algorithm: 'ECDSA-P256', files: { key: `${PKI}/etcd/server.key`, certificate: `${PKI}/etcd/server.crt` } },
  { set: 'etcd', name: 'etcd-peer', commonName: 'etcd-1', extKeyUsage: ['serverAuth', 'clientAuth'], algorithm: 'ECDSA-P256', files: { key: `${PKI}/etcd/peer.key`, certificate: `${PKI}/etcd/peer.crt` } },
  { set: 'etcd', name: 'etcd-healthcheck-client', commonName: 'kube-etcd-healthcheck-client', extKeyUsage: ['clientAuth'], algorithm: 'ECDSA-P256', files: { key: `${PKI}/etcd/healthcheck-client.key`, certificate: `${PKI}/etcd/healthcheck-client.crt` } },
  {
    set: 'clients',
    name: 'apiserver-etcd-client',
    commonName: 'kube-apiserver-etcd-client',
    extKeyUsage: ['clientAuth'],
    algorithm: 'ECDSA-P256',
    files: { key: `${PKI}/apiserver-etcd-client.key`, certificate: `${PKI}/apiserver-etcd-client.crt` },
  },
  { set: 'clients', name: 'admin', commonName: 'kubernetes-admin', organizations: ['system:masters'], extKeyUsage: ['clientAuth'], algorithm: 'ECDSA-P256', files: { kubeconfig: '/etc/kubernetes/admin.conf' } },
  { set: 'clients', name: 'controller-manager', commonName: 'system:kube-controller-manager', extKeyUsage: ['clientAuth'], algorithm: 'ECDSA-P256', files: { kubeconfig: '/etc/kubernetes/controller-manager.conf' } },
  { set: 'clients', name: 'scheduler', commonName: 'system:kube-scheduler', extKeyUsage: ['clientAuth'], algorithm: 'ECDSA-P256', files: { kubeconfig: '/etc/kubernetes/scheduler.conf' } },
];
const SET_NAMES = [...new Set(CREDENTIALS.map((credential) => credential.set))];

async function createCa(): Promise<Issuer> {
  const keyPair = await generateKeyPair('ECDSA-P256');
  const now = Date.now();
  const certificatePem = createCertificate(
    { subject: { commonName: 'kubetrust-crash-test-ca' }, notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000), isCA: true, keyUsage: ['digitalSignature', 'keyCertSign', 'cRLSign'], extKeyUsage: [] },
    keyPair.publicKey,
    { privateKey: keyPair.privateKey },
  );
  return { certificatePem, privateKey: keyPair.privateKey };
}

/** Issues a new key and certificate for every credential. The key ids start with `label`, so the two generations never share one. */
async function createGeneration(ca: Issuer, label: string): Promise<CrashGeneration> {
  const stagedKeys: Record<string, string> = {};
  const changes = new Map<string, CrashFileChange[]>(SET_NAMES.map((name) => [name, []]));
  const now = Date.now();
  for (const credential of CREDENTIALS) {
    const keyPair = await generateKeyPair(credential.algorithm);
    const certificatePem = createCertificate(
      {
        subject: { commonName: credential.commonName, organizations: credential.organizations ?? [] },
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 3_600_000),
        isCA: false,
        keyUsage: ['digitalSignature', 'keyEncipherment'],
        extKeyUsage: credential.extKeyUsage,
      },
      keyPair.publicKey,
      { issuer: ca, privateKey: ca.privateKey },
    );
    const keyId = `${label}-${credential.name}`;
    stagedKeys[keyId] = privateKeyToPem(keyPair.privateKey);
    const setChanges = changes.get(credential.set)!;
    if ('kubeconfig' in credential.files) {
      const kubeconfig = { clusterName: 'crash-test', server: 'https://127.0.0.1:6443', user: credential.commonName, certificateAuthorityPem: ca.certificatePem, clientCertificatePem: certificatePem, clientKeyId: keyId };
      setChanges.push({ path: credential.files.kubeconfig, mode: 0o600, kubeconfig });
    } else {
      // Key before certificate, in the order the controller sends a leaf.
      setChanges.push({ path: credential.files.key, mode: 0o600, stagedKeyId: keyId });
      setChanges.push({ path: credential.files.certificate, mode: 0o644, certificatePem });
    }
  }
  return { stagedKeys, sets: SET_NAMES.map((name) => ({ name, changes: changes.get(name)! })) };
}

/** Returns the bytes that the Installer writes for one change of a generation. */
function expectedContent(generation: CrashGeneration, change: CrashFileChange): string {
  if (change.certificatePem !== undefined) return change.certificatePem;
  if (change.stagedKeyId !== undefined) return generation.stagedKeys[change.stagedKeyId]!;
  const kubeconfig = change.kubeconfig!;
  return renderKubeconfig({ ...kubeconfig, clientKeyPem: generation.stagedKeys[kubeconfig.clientKeyId]! });
}

/** SubjectPublicKeyInfo DER of a private key or a certificate, for comparing the two. */
function publicKeyDer(input: crypto.KeyObject | crypto.X509Certificate): Buffer {
  const key = input instanceof crypto.X509Certificate ? input.publicKey : crypto.createPublicKey(input);
  return key.export({ type: 'spki', format: 'der' });
}

/**
 * When to kill the child: a delay after it reports `ready`, or a delay after the Installer's
 * journal appears for the nth time, which lands many kills among the renames of one set.
 */
type KillPlan = { readonly kind: 'delay'; readonly delayMs: number } | { readonly kind: 'journal'; readonly appearance: number; readonly delayMs: number };

interface ChildOutcome {
  readonly result: 'killed' | 'finished';
  /** Milliseconds from `ready` to exit. */
  readonly installMs: number;
}

class CrashRig {
  readonly root: string;
  readonly stateDir: string;
  readonly fixtureFile: string;

  constructor(
    dir: string,
    readonly fixture: CrashFixture,
  ) {
    this.root = path.join(dir, 'root');
    this.stateDir = path.join(dir, 'state');
    this.fixtureFile = path.join(dir, 'fixture.json');
    fs.writeFileSync(this.fixtureFile, JSON.stringify(fixture));
  }

  /** Runs the child to install `generation` and kills it at the moment that `kill` gives. Without a plan the child runs to the end. */
  runChild(generation: number, suffix: string, kill?: KillPlan): Promise<ChildOutcome> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CHILD, this.root, this.stateDir, this.fixtureFile, String(generation), suffix], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let readyAt: number | undefined;
      let killTimer: NodeJS.Timeout | undefined;
      const scheduleKill = (delayMs: number): void => {
        killTimer = setTimeout(() => child.kill('SIGKILL'), delayMs);
      };
      const hangTimer = setTimeout(() => child.kill('SIGKILL'), 60_000);

      let watcher: fs.FSWatcher | undefined;
      if (kill?.kind === 'journal') {
        fs.mkdirSync(this.stateDir, { recursive: true });
        let appearances = 0;
        watcher = fs.watch(this.stateDir, (_event, filename) => {
          if (filename !== JOURNAL || killTimer !== undefined || !this.journalExists()) return;
          appearances++;
          if (appearances === kill.appearance) scheduleKill(kill.delayMs);
        });
      }

      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        if (readyAt === undefined && stdout.includes('ready\n')) {
          readyAt = Date.now();
          if (kill?.kind === 'delay') scheduleKill(kill.delayMs);
        }
      });
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('exit', (code, signal) => {
        clearTimeout(killTimer);
        clearTimeout(hangTimer);
        watcher?.close();
        const installMs = readyAt === undefined ? 0 : Date.now() - readyAt;
        if (signal === 'SIGKILL' && killTimer !== undefined) resolve({ result: 'killed', installMs });
        else if (code === 0 && stdout.includes('installed\n')) resolve({ result: 'finished', installMs });
        else reject(new Error(`install child exited with ${signal ?? code}: ${stderr}`));
      });
    });
  }

  /** Runs the recovery that the agent runs when it starts. */
  async recover(): Promise<void> {
    await new Installer(this.root, this.stateDir, new StagedKeys(this.stateDir), silentLogger()).recoverInterruptedChange();
  }

  journalExists(): boolean {
    return fs.existsSync(path.join(this.stateDir, JOURNAL));
  }

  hostPath(nodePath: string): string {
    return path.join(this.root, nodePath);
  }

  /** Returns the generation of each file of a set by node path: -1 for a file that is missing or matches neither. */
  fileGenerations(setIndex: number): Map<string, number> {
    const found = new Map<string, number>();
    for (const [changeIndex, change] of this.fixture.generations[0]!.sets[setIndex]!.changes.entries()) {
      const file = this.hostPath(change.path);
      const content = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined;
      found.set(change.path, this.fixture.generations.findIndex((candidate) => expectedContent(candidate, candidate.sets[setIndex]!.changes[changeIndex]!) === content));
    }
    return found;
  }

  /** Counts the sets whose files are not all of one generation, as a crash among the renames leaves them. */
  countMixedSets(): number {
    return SET_NAMES.filter((_name, setIndex) => new Set(this.fileGenerations(setIndex).values()).size > 1).length;
  }

  /**
   * Returns the generation that each set holds, by set name. Every file of a set must exist with
   * its mode and match one generation, and all files of the set the same one.
   */
  generationsBySet(context: string): Map<string, number> {
    const found = new Map<string, number>();
    for (const [setIndex, setName] of SET_NAMES.entries()) {
      for (const change of this.fixture.generations[0]!.sets[setIndex]!.changes) {
        const file = this.hostPath(change.path);
        assert.ok(fs.existsSync(file), `${context}: ${change.path} is missing`);
        assert.equal(fs.statSync(file).mode & 0o7777, change.mode, `${context}: ${change.path} has the wrong mode`);
      }
      const generationsOfFiles = this.fileGenerations(setIndex);
      for (const [nodePath, generation] of generationsOfFiles) assert.notEqual(generation, -1, `${context}: ${nodePath} matches neither generation`);
      const distinct = new Set(generationsOfFiles.values());
      assert.equal(distinct.size, 1, `${context}: set ${setName} mixes generations: ${JSON.stringify(Object.fromEntries(generationsOfFiles))}`);
      found.set(setName, [...distinct][0]!);
    }
    return found;
  }

  /** Checks that every installed key matches the certificate installed with it, in separate files or in one kubeconfig. */
  assertKeysMatchCertificates(context: string): void {
    for (const credential of CREDENTIALS) {
      let keyPem: string;
      let certificatePem: string;
      if ('kubeconfig' in credential.files) {
        const kubeconfig = YAML.parse(fs.readFileSync(this.hostPath(credential.files.kubeconfig), 'utf8')) as { users: { user: Record<string, string> }[] };
        const user = kubeconfig.users[0]!.user;
        keyPem = Buffer.from(user['client-key-data']!, 'base64').toString('utf8');
        certificatePem = Buffer.from(user['client-certificate-data']!, 'base64').toString('utf8');
      } else {
        keyPem = fs.readFileSync(this.hostPath(credential.files.key), 'utf8');
        certificatePem = fs.readFileSync(this.hostPath(credential.files.certificate), 'utf8');
      }
      const keyPublic = publicKeyDer(crypto.createPrivateKey(keyPem));
      const certificatePublic = publicKeyDer(new crypto.X509Certificate(certificatePem));
      assert.ok(keyPublic.equals(certificatePublic), `${context}: the key of ${credential.name} does not match its certificate`);
    }
  }

  /** Returns the files beside the targets that are not targets, each with the set of the target it was staged for. */
  /** Lists temporary files in the state directory and backup folders without a manifest. */
  stateLeftovers(): string[] {
    const found: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(full);
        else if (/\.tmp-[0-9a-f]{12}$/.test(entry.name)) found.push(path.relative(this.stateDir, full));
      }
    };
    if (fs.existsSync(this.stateDir)) walk(this.stateDir);
    const backups = path.join(this.stateDir, 'backups');
    if (fs.existsSync(backups)) {
      for (const name of fs.readdirSync(backups)) if (!fs.existsSync(path.join(backups, name, 'manifest.json'))) found.push(`backups/${name} without manifest.json`);
    }
    return found.sort();
  }

  leftovers(): { file: string; set: string | undefined }[] {
    const targets = CREDENTIALS.flatMap((credential) => Object.values(credential.files).map((nodePath: string) => ({ nodePath, set: credential.set })));
    const directories = new Set(targets.map((target) => path.posix.dirname(target.nodePath)));
    const found: { file: string; set: string | undefined }[] = [];
    for (const directory of directories) {
      const expected = new Set([
        ...targets.filter((target) => path.posix.dirname(target.nodePath) === directory).map((target) => path.posix.basename(target.nodePath)),
        ...[...directories].filter((other) => path.posix.dirname(other) === directory).map((other) => path.posix.basename(other)),
      ]);
      for (const name of fs.readdirSync(this.hostPath(directory))) {
        if (expected.has(name)) continue;
        const stagedFor = STAGED_NAME.exec(name)?.[1];
        const set = targets.find((target) => path.posix.dirname(target.nodePath) === directory && path.posix.basename(target.nodePath) === stagedFor)?.set;
        found.push({ file: path.posix.join(directory, name), set });
      }
    }
    return found;
  }
}

describe('agent install under SIGKILL', function () {
  this.timeout(300_000);
  let dir: string;
  let fixture: CrashFixture;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-crash-'));
    const ca = await createCa();
    fixture = { generations: [await createGeneration(ca, 'gen-a'), await createGeneration(ca, 'gen-b')] };
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('leaves each set old or new with matching keys', async () => {
    const rig = new CrashRig(dir, fixture);
    const first = await rig.runChild(0, 'initial');
    assert.equal(first.result, 'finished');
    rig.assertKeysMatchCertificates('initial install');
    // Three uninterrupted replacements of every set measure the install on this machine, and kill
    // delays are drawn below 1.2 times their median, so they cover the whole install.
    const calibration: number[] = [];
    for (const generation of [1, 0, 1]) {
      const run = await rig.runChild(generation, `calibration-${calibration.length}`);
      assert.equal(run.result, 'finished');
      calibration.push(run.installMs);
    }
    const killWindowMs = Math.max(20, Math.round(calibration.sort((a, b) => a - b)[1]! * 1.2));
    let current = 1;

    const outcomes = { killed: 0, finished: 0, allOld: 0, allNew: 0, someNew: 0, journalRecovered: 0, mixedSetRecovered: 0 };
    const installTimes: number[] = [];
    for (let trial = 1; trial <= TRIALS; trial++) {
      // Odd trials kill at any moment of the install, even ones shortly after a journal appears. The
      // delay is squared so that more kills come before the first rename, while the first set is staged.
      const seed = 1000 + trial;
      const random = seededRandom(seed);
      const kill: KillPlan =
        trial % 2 === 1
          ? { kind: 'delay', delayMs: Math.floor(random() ** 2 * killWindowMs) }
          : { kind: 'journal', appearance: 1 + Math.floor(random() * SET_NAMES.length), delayMs: Math.floor(random() * 3) };
      const context = `seed ${seed} (kill ${JSON.stringify(kill)}, window ${killWindowMs} ms)`;
      const target = 1 - current;

      const run = await rig.runChild(target, `t${trial}`, kill);
      outcomes[run.result]++;
      if (run.result === 'finished') installTimes.push(run.installMs);
      const journalAtKill = rig.journalExists();
      if (journalAtKill) outcomes.journalRecovered++;
      if (rig.countMixedSets() > 0) outcomes.mixedSetRecovered++;
      await rig.recover();
      assert.equal(rig.journalExists(), false, `${context}: the journal is still there after recovery`);

      const generations = rig.generationsBySet(context);
      rig.assertKeysMatchCertificates(context);
      const newSets = SET_NAMES.filter((name) => generations.get(name) === target);
      if (newSets.length === 0) outcomes.allOld++;
      else if (newSets.length === SET_NAMES.length) outcomes.allNew++;
      else outcomes.someNew++;

      // Recovery also removes what a kill before the journal left: staged copies beside the
      // targets, backup folders without a manifest and temporary files in the state directory.
      assert.deepEqual(rig.leftovers(), [], `${context}: files left beside the targets after recovery`);
      assert.deepEqual(rig.stateLeftovers(), [], `${context}: interrupted writes left in the state directory after recovery`);

      if (newSets.length < SET_NAMES.length) {
        const finish = await rig.runChild(target, `t${trial}-finish`);
        assert.equal(finish.result, 'finished');
        const finished = rig.generationsBySet(`${context}, after finishing`);
        for (const name of SET_NAMES) assert.equal(finished.get(name), target, `${context}: set ${name} is not new after finishing the install`);
        rig.assertKeysMatchCertificates(`${context}, after finishing`);
        assert.deepEqual(rig.leftovers(), [], `${context}: files left beside the targets after finishing the install`);
      }
      current = target;
    }

    const summary = `${JSON.stringify(outcomes)}, uninterrupted installs took ${installTimes.join(', ') || 'no'} ms`;
    // Every kind of kill point must occur, or the delays did not cover the install.
    assert.ok(outcomes.killed > 0, summary);
    assert.ok(outcomes.allOld > 0, `no kill came before the first rename: ${summary}`);
    assert.ok(outcomes.someNew > 0, `no kill came between two sets: ${summary}`);
    assert.ok(outcomes.journalRecovered > 0, `no kill left a journal for the recovery to finish: ${summary}`);
    assert.ok(outcomes.mixedSetRecovered > 0, `no kill came among the renames of a set: ${summary}`);
    assert.ok(outcomes.allNew > 0, `no install finished all sets: ${summary}`);
  });
});
