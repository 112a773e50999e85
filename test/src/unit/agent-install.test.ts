import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InvalidRequestError } from '@kubetrust/agent/dist/errors';
import { Installer, stageConcurrently } from '@kubetrust/agent/dist/install';
import { StagedKeys } from '@kubetrust/agent/dist/staged-keys';
import { AgentConfigError, parseAgentConfig } from '@kubetrust/agent';
import type { FileChange__Output } from '@kubetrust/proto';
import { stageFile } from '@kubetrust/shared/dist/files';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { loadPrivateKey, parseCsr, publicKeySha256 } from '@kubetrust/shared/dist/pki';

function data(file: string, content: string, mode = 0o644): FileChange__Output {
  return { path: file, mode, uid: 0, gid: 0, data: Buffer.from(content), content: 'data' };
}

describe('agent installer', () => {
  let dir: string;
  let root: string;
  let state: string;
  let keys: StagedKeys;
  let installer: Installer;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-install-'));
    root = path.join(dir, 'root');
    state = path.join(dir, 'state');
    keys = new StagedKeys(state);
    installer = new Installer(root, state, keys, silentLogger());
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('writes files with their modes and leaves no temporary files', async () => {
    const result = await installer.install('c1', [data('/etc/kubernetes/pki/ca.crt', 'CA'), data('/etc/kubernetes/admin.conf', 'secret', 0o600)]);
    assert.deepEqual(result.changedPaths, ['/etc/kubernetes/pki/ca.crt', '/etc/kubernetes/admin.conf']);
    assert.equal(fs.readFileSync(path.join(root, 'etc/kubernetes/pki/ca.crt'), 'utf8'), 'CA');
    assert.equal(fs.statSync(path.join(root, 'etc/kubernetes/admin.conf')).mode & 0o777, 0o600);
    assert.deepEqual(fs.readdirSync(path.join(root, 'etc/kubernetes/pki')), ['ca.crt']);
    assert.ok(!fs.existsSync(path.join(state, 'journal.json')));
  });

  it('skips identical files and backs up replaced ones', async () => {
    await installer.install('c1', [data('/etc/a.crt', 'one'), data('/etc/b.crt', 'two')]);
    const second = await installer.install('c2', [data('/etc/a.crt', 'one'), data('/etc/b.crt', 'three')]);
    assert.deepEqual(second.changedPaths, ['/etc/b.crt']);
    assert.equal(fs.readFileSync(path.join(state, 'backups/c2/files/etc/b.crt'), 'utf8'), 'two');
    const third = await installer.install('c3', [data('/etc/a.crt', 'one'), data('/etc/b.crt', 'three')]);
    assert.deepEqual(third.changedPaths, []);
  });

  it('rewrites a file whose mode drifted', async () => {
    await installer.install('c1', [data('/etc/key.pem', 'k', 0o600)]);
    fs.chmodSync(path.join(root, 'etc/key.pem'), 0o644);
    const result = await installer.install('c2', [data('/etc/key.pem', 'k', 0o600)]);
    assert.deepEqual(result.changedPaths, ['/etc/key.pem']);
    assert.equal(fs.statSync(path.join(root, 'etc/key.pem')).mode & 0o777, 0o600);
  });

  it('rejects paths outside the install root and writes nothing', async () => {
    for (const bad of ['/etc/../../escape', 'relative/path']) {
      await assert.rejects(installer.install('c1', [data('/etc/ok.crt', 'ok'), data(bad, 'x')]), InvalidRequestError);
    }
    assert.ok(!fs.existsSync(path.join(root, 'etc/ok.crt')), 'a valid file of a rejected change was written');
    assert.ok(!fs.existsSync(path.join(dir, 'escape')));
  });

  it('failed staging removes the other staged files', async () => {
    const etc = path.join(root, 'etc');
    fs.mkdirSync(etc, { recursive: true });
    // A regular file where the second file's directory should be makes its staging fail.
    fs.writeFileSync(path.join(etc, 'blocker'), 'not a directory');
    const items = ['a.crt', 'blocker/b.crt', 'c.crt'].map((name) => ({ target: path.join(etc, name), data: Buffer.from(name), options: { mode: 0o644 } }));
    await assert.rejects(stageConcurrently(items), (error: NodeJS.ErrnoException) => error.code === 'ENOTDIR' || error.code === 'EEXIST');
    assert.deepEqual(fs.readdirSync(etc), ['blocker']);
    const staged = await stageConcurrently([items[0]!, items[2]!]);
    assert.equal(staged.length, 2);
    assert.deepEqual(fs.readdirSync(etc).filter((name) => name.includes('.tmp-')).length, 2);
  });

  it('rejects a path named twice in one change', async () => {
    await assert.rejects(installer.install('c1', [data('/etc/a', '1'), data('/etc/a', '2')]), /appears twice/);
  });

  it('installs a staged key and a kubeconfig that embeds it', async () => {
    const csrPem = await keys.prepare({ key_id: 'proxy-1', algorithm: 'ECDSA-P256', common_name: 'system:kube-proxy', organizations: [], dns_names: [], ip_addresses: [] });
    const csr = parseCsr(csrPem);
    assert.equal(csr.commonName, 'system:kube-proxy');
    const kubeconfig: FileChange__Output = {
      path: '/etc/kubernetes/kube-proxy.conf',
      mode: 0o600,
      uid: 0,
      gid: 0,
      content: 'kubeconfig',
      kubeconfig: {
        cluster_name: 'unit',
        server: 'https://192.0.2.100:6443',
        certificate_authority_pem: Buffer.from('CA PEM'),
        user: 'system:kube-proxy',
        client_certificate_pem: Buffer.from('CERT PEM'),
        client_key_id: 'proxy-1',
      },
    };
    await installer.install('c1', [kubeconfig]);
    const summary = parseKubeconfig(fs.readFileSync(path.join(root, 'etc/kubernetes/kube-proxy.conf'), 'utf8'));
    assert.equal(summary.server, 'https://192.0.2.100:6443');
    assert.equal(summary.certificateAuthorityPem, 'CA PEM');
    assert.equal(publicKeySha256(loadPrivateKey(summary.clientKeyPem!)), publicKeySha256(csr.publicKey));
    assert.ok(!fs.existsSync(path.join(state, 'staged-keys/proxy-1.key')), 'the staged key was not removed after install');
  });

  it('fails on an unknown staged key without touching the installed key', async () => {
    await installer.install('c1', [data('/etc/server.key', 'old key', 0o600)]);
    const change: FileChange__Output = { path: '/etc/server.key', mode: 0o600, uid: 0, gid: 0, content: 'staged_key_id', staged_key_id: 'never-prepared' };
    await assert.rejects(installer.install('c2', [change]), /staged key "never-prepared" not found/);
    assert.equal(fs.readFileSync(path.join(root, 'etc/server.key'), 'utf8'), 'old key');
  });

  it('deletes staged keys of abandoned changes', async () => {
    await keys.prepare({ key_id: 'old-1', algorithm: 'ECDSA-P256', common_name: 'old', organizations: [], dns_names: [], ip_addresses: [] });
    await keys.prepare({ key_id: 'fresh-1', algorithm: 'ECDSA-P256', common_name: 'fresh', organizations: [], dns_names: [], ip_addresses: [] });
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    fs.utimesSync(path.join(state, 'staged-keys/old-1.key'), twoHoursAgo, twoHoursAgo);
    assert.equal(await keys.purgeAbandoned(), 1);
    assert.deepEqual(fs.readdirSync(path.join(state, 'staged-keys')), ['fresh-1.key']);
  });

  it('rolls back replaced and created files', async () => {
    await installer.install('c1', [data('/etc/a.crt', 'old a', 0o600)]);
    await installer.install('c2', [data('/etc/a.crt', 'new a', 0o644), data('/etc/b.crt', 'created b')], async () => {}, ['kube-apiserver']);
    const result = await installer.rollback('');
    assert.equal(result.changeId, 'c2');
    assert.deepEqual(result.restartServices, ['kube-apiserver']);
    assert.deepEqual(result.restoredPaths, ['/etc/a.crt']);
    assert.deepEqual(result.removedPaths, ['/etc/b.crt']);
    assert.equal(fs.readFileSync(path.join(root, 'etc/a.crt'), 'utf8'), 'old a');
    assert.equal(fs.statSync(path.join(root, 'etc/a.crt')).mode & 0o777, 0o600);
    assert.ok(!fs.existsSync(path.join(root, 'etc/b.crt')), 'a file the change created is still there');
    assert.equal(fs.statSync(path.join(state, 'backups/c2/files/etc/a.crt')).mode & 0o777, 0o600);
  });

  it('rolls back each change once, newest first', async () => {
    await installer.install('c1', [data('/etc/a.crt', 'one')]);
    await installer.install('c2', [data('/etc/a.crt', 'two')]);
    assert.equal((await installer.rollback('')).changeId, 'c2');
    assert.equal(fs.readFileSync(path.join(root, 'etc/a.crt'), 'utf8'), 'one');
    await assert.rejects(installer.rollback('c2'), /change "c2" was already rolled back/);
    // c1 created every file it installed: undoing it deletes them, so it needs explicit permission.
    await assert.rejects(installer.rollback(''), /change "c1" created every file it installed \(1\), so undoing it would delete them all/);
    assert.equal(fs.readFileSync(path.join(root, 'etc/a.crt'), 'utf8'), 'one');
    assert.equal((await installer.rollback('c1', true)).changeId, 'c1');
    assert.ok(!fs.existsSync(path.join(root, 'etc/a.crt')));
    await assert.rejects(installer.rollback(''), /there is no change to roll back/);
    await assert.rejects(installer.rollback('c9'), /no backup of change "c9"; backups kept: c1, c2/);
  });

  it('keeps only the configured number of backups', async () => {
    const keepTwo = new Installer(root, state, keys, silentLogger(), 2);
    for (const id of ['c1', 'c2', 'c3', 'c4']) {
      await keepTwo.install(id, [data('/etc/a.crt', id)]);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.deepEqual(fs.readdirSync(path.join(state, 'backups')).sort(), ['c3', 'c4']);
  });

  it('finishes a change interrupted after its journal was written', async () => {
    // Simulate a crash between the journal and the renames: staged files exist, targets are old.
    fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(root, 'etc/a.crt'), 'old cert');
    fs.writeFileSync(path.join(root, 'etc/a.key'), 'old key');
    fs.writeFileSync(path.join(root, 'etc/.a.crt.tmp-1'), 'new cert');
    fs.writeFileSync(path.join(root, 'etc/.a.key.tmp-1'), 'new key');
    fs.mkdirSync(state, { recursive: true });
    fs.writeFileSync(
      path.join(state, 'journal.json'),
      JSON.stringify({
        changeId: 'crashed',
        entries: [
          { target: path.join(root, 'etc/a.key'), staged: path.join(root, 'etc/.a.key.tmp-1') },
          { target: path.join(root, 'etc/a.crt'), staged: path.join(root, 'etc/.a.crt.tmp-1') },
        ],
      }),
    );
    // The key was already renamed before the crash.
    fs.renameSync(path.join(root, 'etc/.a.key.tmp-1'), path.join(root, 'etc/a.key'));
    await installer.recoverInterruptedChange();
    assert.equal(fs.readFileSync(path.join(root, 'etc/a.crt'), 'utf8'), 'new cert');
    assert.equal(fs.readFileSync(path.join(root, 'etc/a.key'), 'utf8'), 'new key');
    assert.ok(!fs.existsSync(path.join(state, 'journal.json')));
  });
  it('removes files it installed and rolls the removal back', async () => {
    await installer.install('c1', [data('/etc/kubernetes/pki/ca.key', 'CA key', 0o600), data('/etc/kubernetes/pki/ca.crt', 'CA')]);
    assert.deepEqual([...(await installer.installedPaths())].sort(), ['/etc/kubernetes/pki/ca.crt', '/etc/kubernetes/pki/ca.key']);
    const removed = await installer.install('c2', [data('/etc/kubernetes/pki/ca.crt', 'CA')], undefined, [], ['/etc/kubernetes/pki/ca.key']);
    assert.deepEqual([removed.changedPaths, removed.removedPaths], [[], ['/etc/kubernetes/pki/ca.key']]);
    assert.ok(!fs.existsSync(path.join(root, 'etc/kubernetes/pki/ca.key')), 'the removed key is still there');
    assert.deepEqual([...(await installer.installedPaths())], ['/etc/kubernetes/pki/ca.crt']);
    const rolledBack = await installer.rollback('c2');
    assert.deepEqual(rolledBack.restoredPaths, ['/etc/kubernetes/pki/ca.key']);
    assert.equal(fs.readFileSync(path.join(root, 'etc/kubernetes/pki/ca.key'), 'utf8'), 'CA key');
    assert.equal(fs.statSync(path.join(root, 'etc/kubernetes/pki/ca.key')).mode & 0o777, 0o600);
    assert.deepEqual([...(await installer.installedPaths())].sort(), ['/etc/kubernetes/pki/ca.crt', '/etc/kubernetes/pki/ca.key']);
  });

  it('removes only files it installed', async () => {
    await installer.install('c1', [data('/etc/kubernetes/pki/ca.crt', 'CA')]);
    fs.writeFileSync(path.join(root, 'etc/kubernetes/pki/other.key'), 'not ours');
    await assert.rejects(
      installer.install('c2', [], undefined, [], ['/etc/kubernetes/pki/other.key']),
      (error: Error) => error instanceof InvalidRequestError && /"\/etc\/kubernetes\/pki\/other\.key" was not installed by this agent, so it is not removed/.test(error.message),
    );
    await assert.rejects(
      installer.install('c3', [data('/etc/kubernetes/pki/ca.crt', 'CA 2')], undefined, [], ['/etc/kubernetes/pki/ca.crt']),
      (error: Error) => error instanceof InvalidRequestError && /both written and removed/.test(error.message),
    );
    assert.equal(fs.readFileSync(path.join(root, 'etc/kubernetes/pki/other.key'), 'utf8'), 'not ours');
    assert.equal(fs.readFileSync(path.join(root, 'etc/kubernetes/pki/ca.crt'), 'utf8'), 'CA');
  });

  it('forgets an installed file that is already gone', async () => {
    await installer.install('c1', [data('/etc/kubernetes/pki/ca.crt', 'CA'), data('/etc/kubernetes/bootstrap.conf', 'token', 0o600)]);
    fs.rmSync(path.join(root, 'etc/kubernetes/bootstrap.conf'));
    const result = await installer.install('c2', [], undefined, [], ['/etc/kubernetes/bootstrap.conf']);
    assert.deepEqual(result.removedPaths, []);
    assert.deepEqual([...(await installer.installedPaths())], ['/etc/kubernetes/pki/ca.crt']);
  });

  it('starts its installed list from its backups', async () => {
    await installer.install('c1', [data('/etc/kubernetes/pki/ca.crt', 'CA'), data('/etc/kubernetes/admin.conf', 'admin', 0o600)]);
    // An agent from before the list existed: only backups name what it installed.
    fs.rmSync(path.join(state, 'installed.json'));
    fs.rmSync(path.join(root, 'etc/kubernetes/admin.conf'));
    assert.deepEqual([...(await installer.installedPaths())], ['/etc/kubernetes/pki/ca.crt']);
  });

  it('removes its staged files when stopped before renaming', async () => {
    await installer.install('c1', [data('/etc/kubernetes/pki/a.key', 'old key', 0o600)]);
    await assert.rejects(
      installer.install('c2', [data('/etc/kubernetes/pki/a.key', 'new key', 0o600)], async () => {
        throw new Error('pending-restarts.json: disk full');
      }),
      /disk full/,
    );
    assert.deepEqual(fs.readdirSync(path.join(root, 'etc/kubernetes/pki')), ['a.key']);
    assert.equal(fs.readFileSync(path.join(root, 'etc/kubernetes/pki/a.key'), 'utf8'), 'old key');
  });

  it('removes staged files a crash left before its journal', async () => {
    await installer.install('c1', [data('/etc/kubernetes/pki/a.key', 'old key', 0o600), data('/etc/kubernetes/pki/a.crt', 'old cert')]);
    // A crash after staging and before the journal: staged copies beside the targets, no journal.
    const pki = path.join(root, 'etc/kubernetes/pki');
    const stagedKey = await stageFile(path.join(pki, 'a.key'), 'new key', { mode: 0o600 });
    const stagedCert = await stageFile(path.join(pki, 'a.crt'), 'new cert', { mode: 0o644 });
    // Files that are not staged copies of a kubetrust target stay.
    fs.writeFileSync(path.join(pki, '.other.key.tmp-0123456789ab'), 'not ours');
    fs.writeFileSync(path.join(pki, '.a.key.tmp-notstaged'), 'not a staged name');
    await new Installer(root, state, keys, silentLogger()).recoverInterruptedChange();
    assert.ok(!fs.existsSync(stagedKey), 'the staged key is still there');
    assert.ok(!fs.existsSync(stagedCert), 'the staged certificate is still there');
    assert.deepEqual(fs.readdirSync(pki).sort(), ['.a.key.tmp-notstaged', '.other.key.tmp-0123456789ab', 'a.crt', 'a.key']);
    assert.equal(fs.readFileSync(path.join(pki, 'a.key'), 'utf8'), 'old key');
  });
});

describe('agent configuration', () => {
  const base = {
    apiVersion: 'kubetrust/v1',
    kind: 'AgentConfig',
    nodeName: 'wk-1',
    cluster: 'unit',
    listen: '127.0.0.1:7443',
    tls: { certFile: 'agent.crt', keyFile: 'agent.key', caFile: 'ca.crt' },
    controllerIdentity: 'kubetrust://unit/controller',
  };

  it('resolves relative files against the configuration directory', () => {
    const config = parseAgentConfig({ ...base, services: { etcd: { restart: { systemd: 'etcd.service' }, health: { tcp: { address: '127.0.0.1:2379' } } } } }, '/etc/kubetrust/agent.yaml');
    assert.equal(config.tls.certFile, '/etc/kubetrust/agent.crt');
    assert.equal(config.installRoot, '/');
    assert.equal(config.services.etcd?.timeoutSeconds, 60);
  });

  it('reads health none as no check', () => {
    const config = parseAgentConfig({ ...base, services: { 'kube-apiserver': { restart: { systemd: 'kube-apiserver' }, health: 'none' } } }, '/etc/kubetrust/agent.yaml');
    assert.deepEqual(config.services['kube-apiserver']?.health, { none: true });
  });

  const invalid: [string, Record<string, unknown>, RegExp][] = [
    ['unknown field', { ...base, colour: 'blue' }, /colour: unknown field/],
    ['bad listen address', { ...base, listen: 'localhost' }, /listen: "localhost" is not host:port/],
    ['missing identity', { ...base, controllerIdentity: undefined }, /controllerIdentity: expected a non-empty string/],
    ['two health checks', { ...base, services: { etcd: { restart: { systemd: 'etcd' }, health: { tcp: { address: 'a:1' }, command: ['true'] } } } }, /exactly one of https, tcp or command/],
    ['plain http health check', { ...base, services: { etcd: { restart: { systemd: 'etcd' }, health: { https: { url: 'http://x/health', caFile: 'ca' } } } } }, /is not an https URL/],
    ['misspelt service name', { ...base, services: { 'kube-apiserve': { restart: { systemd: 'kube-apiserver' } } } }, /services\.kube-apiserve: unknown field; remove it or use one of: etcd, kube-apiserver/],
    ['a health check word other than none', { ...base, services: { etcd: { restart: { systemd: 'etcd' }, health: 'sometimes' } } }, /services\.etcd\.health: "sometimes" is not a health check; write none, or a mapping/],
    ['empty restart command', { ...base, services: { etcd: { restart: { command: [] } } } }, /restart\.command: expected a non-empty list/],
  ];
  for (const [name, document, message] of invalid) {
    it(`rejects ${name}`, () => {
      assert.throws(() => parseAgentConfig(document, '/tmp/agent.yaml'), (error: Error) => error instanceof AgentConfigError && message.test(error.message));
    });
  }
});
